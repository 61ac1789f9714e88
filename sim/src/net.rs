//! turmoil sockets behind steadfast's transport traits, and a skewable simulated clock.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use steadfast::clock::Clock;
use steadfast::future::BoxFuture;
use steadfast::transport::{BoxStream, Connector, Listener};

/// Connects through turmoil's simulated TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct SimConnector;

impl Connector for SimConnector {
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// Accepts turmoil TCP connections.
pub struct SimListener(pub turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let (s, _) = self.0.accept().await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// Simulated wall time plus a per-node offset (the clock-jump fault moves the offset).
#[derive(Clone)]
pub struct SimClock {
    /// Milliseconds since the Unix epoch at simulated time zero.
    pub epoch_ms: u64,
    /// Added to this node's reading; shared with the fault injector.
    pub offset_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        let now = self.epoch_ms as i64 + elapsed + self.offset_ms.load(Ordering::Relaxed);
        now.max(0) as u64
    }
}
