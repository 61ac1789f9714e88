//! Where time comes from. The state machine never reads a clock: the leader stamps each command
//! with [`Clock::now_ms`] and replicas only ever see that stamp (DESIGN §1.5).

use std::sync::Arc;

/// Milliseconds since the Unix epoch, as this node believes.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock: the one place in the library that reads it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the production clock is the one owner of real time"
    )]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
