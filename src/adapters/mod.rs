//! Web-framework adapters: plug steadfast into an axum or actix app.
//!
//! - [`tower_sessions`] (feature `tower-sessions`): a `tower_sessions_core::SessionStore` for apps
//!   already using tower-sessions 0.15.
//! - [`actix`] (feature `actix`): an `actix_session::storage::SessionStore` for actix-web apps.
//! - [`axum_layer`] (feature `axum`): a native tower layer and `Session` extractor that exposes
//!   what the generic stores cannot: attribute-level deltas, conflicts surfaced to the handler
//!   (or as `409`), a compare-and-set retry closure, lazy loading, rotation at login.
//! - [`embedded`]: one switch between connecting to a cluster and running a node in-process.
//!
//! All adapters store one steadfast attribute per session key, so two requests that change
//! different keys of one session both land (the state machine merges attribute-level updates).
//! None of them ever re-creates a deleted or expired id: steadfast tombstones it, and every
//! adapter maps the resulting `NotFound` to an error instead of writing the data somewhere else.

pub mod embedded;

#[cfg(any(feature = "tower-sessions", feature = "actix"))]
mod delta;

#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;

#[cfg(feature = "actix")]
pub mod actix;

#[cfg(feature = "axum")]
pub mod axum_layer;

pub use embedded::{Backend, Steadfast};

/// What a store write does when another request changed the session since this one loaded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Write only the changed attributes, unconditionally: changes to different attributes
    /// merge, and on the same attribute the last write wins (what tower-sessions and
    /// actix-session users expect from their other stores).
    #[default]
    MergeAttributes,
    /// Write the changed attributes conditionally on the loaded version; if another request
    /// changed one of the *same* attributes in between, fail the save (the framework turns that
    /// into a 500) instead of overwriting it. Changes to other attributes still merge.
    DetectSameAttribute,
}

/// Milliseconds of a duration, at least 1 (steadfast refuses a zero timeout).
#[cfg(any(feature = "tower-sessions", feature = "actix", feature = "axum"))]
pub(crate) fn millis_at_least_one(d: std::time::Duration) -> std::time::Duration {
    d.max(std::time::Duration::from_millis(1))
}

/// Create options with `idle_timeout` and `lifetime`, everything else default (written so that
/// fields the client gains later keep their defaults here).
#[cfg(any(feature = "tower-sessions", feature = "actix", feature = "axum"))]
pub(crate) fn create_options(
    idle_timeout: Option<std::time::Duration>,
    lifetime: Option<std::time::Duration>,
) -> crate::client::CreateOptions {
    crate::client::CreateOptions {
        idle_timeout,
        lifetime,
        ..Default::default()
    }
}
