//! Group commit for writes: the writes that queue while earlier log entries are in flight share
//! the next entry.
//!
//! Each group has one [`Proposer`] task. A write arriving when fewer than `depth` entries are in
//! flight is proposed at once, alone (an idle group adds no latency); writes arriving while
//! `depth` entries are in flight wait, and the next free slot takes all of them (up to
//! [`BATCH_REQUESTS_MAX`] requests or
//! [`limits::BATCH_BYTES_MAX`] bytes) as one [`Batch`]. So the batch size follows the load: one
//! append, one replication round and one durability barrier serve every write of a batch, and
//! up to `depth` entries are pipelined.

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::command::{Batch, Request, Response, BATCH_REQUESTS_MAX};
use crate::id::NodeId;
use crate::limits;
use crate::raft::typ::Raft;
use crate::GroupId;

/// Why a write was not applied (or may not have been: the caller's deadline decides).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProposeError {
    /// Raft refused or failed the write (`ForwardToLeader`: not proposed here).
    #[error(transparent)]
    Raft(Box<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>),
    /// This node's vote moved on while the write was in flight: it may or may not commit.
    #[error("leadership changed while the write was in flight; its outcome is unknown")]
    LeadershipChanged,
}

type ServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, BasicNode>;

type Reply = oneshot::Sender<Result<Response, ProposeError>>;

struct Pending {
    request: Request,
    bytes: usize,
    reply: Reply,
}

/// A group's write batcher (cheap to clone).
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the group's proposer task on the current runtime; it ends when every handle is
    /// dropped (after finishing the entries in flight).
    pub fn spawn(raft: Raft, group: GroupId, depth: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, group, rx, depth.max(1)));
        Proposer { tx }
    }

    /// Proposes `request` and waits until it is committed and applied; its response.
    pub async fn write(&self, request: Request) -> Result<Response, ProposeError> {
        let (reply, rx) = oneshot::channel();
        let bytes = request.approx_bytes();
        self.tx
            .send(Pending {
                request,
                bytes,
                reply,
            })
            .map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> ProposeError {
    ProposeError::Raft(Box::new(RaftError::Fatal(openraft::error::Fatal::Stopped)))
}

async fn run(raft: Raft, group: GroupId, mut rx: mpsc::UnboundedReceiver<Pending>, depth: usize) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            first = rx.recv(), if in_flight.len() < depth => {
                let Some(first) = first else { break };
                let batch = gather(first, &mut rx);
                in_flight.spawn(propose(raft.clone(), group, batch));
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// `first` and every write queued behind it, within the batch bounds.
fn gather(first: Pending, rx: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < BATCH_REQUESTS_MAX && bytes < limits::BATCH_BYTES_MAX {
        match rx.try_recv() {
            Ok(next) => {
                bytes += next.bytes;
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

async fn propose(raft: Raft, group: GroupId, pending: Vec<Pending>) {
    let mut replies = Vec::with_capacity(pending.len());
    let mut requests = Vec::with_capacity(pending.len());
    for p in pending {
        replies.push(p.reply);
        requests.push(p.request);
    }
    metrics::histogram!(METRIC_BATCH_REQUESTS).record(requests.len() as f64);
    let mut server = raft.server_metrics();
    let vote = server.borrow_and_update().vote;
    let result = tokio::select! {
        biased;
        r = raft.client_write(Batch { requests }) => r.map_err(|e| ProposeError::Raft(Box::new(e))),
        () = leadership_changed(&mut server, vote) => {
            tracing::debug!(group = group.0, "leadership changed with a write in flight");
            Err(ProposeError::LeadershipChanged)
        }
    };
    match result {
        Ok(written) => {
            let mut responses = written.data.responses.into_iter();
            for reply in replies {
                let r = responses.next().ok_or_else(|| {
                    ProposeError::Raft(Box::new(RaftError::Fatal(openraft::error::Fatal::Panicked)))
                });
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Resolves once this node's vote moves on from `vote` (a new term, or another candidate):
/// the leader that took the write is gone, and openraft may never answer for it. (openraft
/// 0.9 keeps a write's responder until the entry is applied or truncated here; a snapshot
/// installed over the entry does neither, and the responder would wait forever.)
async fn leadership_changed(
    server: &mut tokio::sync::watch::Receiver<ServerMetrics>,
    vote: openraft::Vote<NodeId>,
) {
    loop {
        if server.changed().await.is_err() {
            // Raft stopped: client_write answers for itself.
            std::future::pending::<()>().await;
        }
        if server.borrow_and_update().vote != vote {
            return;
        }
    }
}

/// Requests per proposed log entry.
pub const METRIC_BATCH_REQUESTS: &str = "steadfast_batch_requests";
