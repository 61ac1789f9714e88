//! The boxed future that trait objects across the crate return (storage backends, transport
//! handlers and connectors), in one place every layer can look down to.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
