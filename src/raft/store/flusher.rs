//! Group commit for durability: one barrier serves every group's appends and votes queued
//! while the previous barrier ran.

use std::io;

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use super::SharedBackend;
use crate::raft::TypeConfig;

enum FlushWaiter {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

/// Coalesces durability barriers: every waiter queued while a sync runs shares the next one.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<FlushWaiter>,
}

impl Flusher {
    /// Starts the node's flush task on the current runtime.
    pub fn spawn(backend: SharedBackend) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<FlushWaiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = backend.sync().await;
                for waiter in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    match waiter {
                        FlushWaiter::Log(cb) => cb.log_io_completed(r),
                        FlushWaiter::Notify(tx) => {
                            let _ = tx.send(r);
                        }
                    }
                }
            }
        });
        Flusher { tx }
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(FlushWaiter::Notify(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub(super) fn flush_then(&self, callback: LogFlushed<TypeConfig>) -> io::Result<()> {
        self.tx
            .send(FlushWaiter::Log(callback))
            .map_err(|_| stopped())
    }
}

fn stopped() -> io::Error {
    io::Error::other("flusher stopped")
}
