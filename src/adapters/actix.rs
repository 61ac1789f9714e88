//! An [`actix_session::storage::SessionStore`] (actix-session 0.11) backed by steadfast.
//!
//! ```no_run
//! # async fn demo(client: steadfast::Client) {
//! use actix_session::SessionMiddleware;
//! use actix_web::cookie::Key;
//! use steadfast::adapters::actix::SteadfastActixStore;
//!
//! let store = SteadfastActixStore::new(client);
//! let key = Key::generate(); // load it from configuration in production
//! // App::new().wrap(SessionMiddleware::new(store.clone(), key.clone())) ...
//! # let _ = SessionMiddleware::new(store, key);
//! # }
//! ```
//!
//! Mapping:
//! - The session key is the steadfast [`SessionId`] in hex (32 characters). A key that is not
//!   one loads as "no session".
//! - Each entry of actix's `HashMap<String, String>` (already JSON-encoded by actix) is one
//!   attribute holding the string's bytes.
//! - `save` creates a session under a fresh random id; `update` writes the attribute delta to
//!   the *existing* id. Unlike the Redis store, an `update` whose session was deleted or expired
//!   meanwhile does **not** fall back to `save`: that would bring a logged-out session back
//!   under a new key. It fails instead (actix answers that request 500) and the session stays
//!   gone; the next request starts a fresh one through `load` → `None` → `save`.
//! - `update_ttl` sets the idle timeout of a live session and does nothing for a gone one.
//! - `delete` is idempotent.

#![expect(
    clippy::disallowed_types,
    reason = "actix-session's SessionState is a std HashMap; the trait dictates it"
)]

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as TtlDuration;

use crate::adapters::delta::{store_type, SaveFailure, Snapshot};
use crate::adapters::{create_options, millis_at_least_one};
use crate::client::Update;
use crate::command::Attributes;
use crate::error::Error;
use crate::id::SessionId;

type State = HashMap<String, String>;

store_type!(
    /// An actix-session store on a steadfast cluster. Cheap to clone.
    SteadfastActixStore
);

fn ttl(ttl: &TtlDuration) -> std::time::Duration {
    let ms = ttl.whole_milliseconds().clamp(1, i128::from(u64::MAX)) as u64;
    millis_at_least_one(std::time::Duration::from_millis(ms))
}

fn attributes(state: State) -> Attributes {
    state
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

fn key_of(id: SessionId) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(id.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn parse(key: &SessionKey) -> Option<SessionId> {
    key.as_ref().parse().ok()
}

impl SessionStore for SteadfastActixStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some(id) = parse(session_key) else {
            return Ok(None);
        };
        let view = self
            .core
            .client
            .get(id)
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        let Some(view) = view else {
            return Ok(None);
        };
        let mut state = State::with_capacity(view.attributes.len());
        let mut visible = Attributes::new();
        for (k, v) in view.attributes {
            match String::from_utf8(v) {
                Ok(s) => {
                    visible.insert(k.clone(), s.clone().into_bytes());
                    state.insert(k, s);
                }
                // Written by another adapter: not actix's to see, and never removed by a delta.
                Err(_) => tracing::debug!(attribute = %k, "skipping a non-UTF-8 attribute"),
            }
        }
        self.core.loaded.remember(
            id,
            Snapshot {
                version: view.version,
                attributes: visible,
                deadline_ms: None,
            },
        );
        Ok(Some(state))
    }

    async fn save(&self, state: State, ttl_: &TtlDuration) -> Result<SessionKey, SaveError> {
        let attributes = attributes(state);
        let options = create_options(Some(ttl(ttl_)), None);
        let (id, written) = self
            .core
            .client
            .create(attributes.clone(), options)
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        self.core.loaded.remember(
            id,
            Snapshot {
                version: written.version,
                attributes,
                deadline_ms: None,
            },
        );
        key_of(id).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: State,
        ttl_: &TtlDuration,
    ) -> Result<SessionKey, UpdateError> {
        let Some(id) = parse(&session_key) else {
            return Err(UpdateError::Other(anyhow::anyhow!(
                "not a steadfast session key"
            )));
        };
        match self.core.save(id, attributes(state), Some(ttl(ttl_))).await {
            Ok(_) => Ok(session_key),
            Err(SaveFailure::Store(e)) => Err(UpdateError::Other(e.into())),
            Err(e) => Err(UpdateError::Other(e.into())),
        }
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl_: &TtlDuration,
    ) -> Result<(), anyhow::Error> {
        let Some(id) = parse(session_key) else {
            return Ok(());
        };
        let update = Update {
            idle_timeout: Some(ttl(ttl_)),
            ..Update::default()
        };
        match self.core.client.update(id, update).await {
            // Gone: nothing to extend, and nothing to bring back.
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let Some(id) = parse(session_key) else {
            return Ok(());
        };
        match self.core.client.delete(id, None).await {
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
