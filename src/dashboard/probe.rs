//! Asking another node for its groups' status, over this node's own peer connections (the ones
//! its Raft traffic uses): a peer this fails to reach is one this node cannot reach.

use std::time::Duration;

use crate::node::NodeObserver;
use crate::transport::TransportError;
use crate::wire::{ClientRequest, GroupStatus, ResponseBody, WireError};

/// Why a peer's status could not be had. Every variant is transient from the dashboard's point
/// of view: it shows the peer as unhealthy with this reason and asks again next tick.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No connection, no answer before the deadline, or the connection broke: the peer is
    /// down, partitioned away, or too busy to answer.
    #[error(transparent)]
    Unreachable(#[from] TransportError),
    /// The peer answered with an error instead of its status (a node of another cluster, say).
    #[error("answered with an error: {0}")]
    Refused(WireError),
    /// The peer answered something that is not a status (a build speaking another protocol).
    #[error("answered something other than its status")]
    Unexpected,
}

/// The status of every group hosted on the node at `addr`, asked through `node`'s connections
/// and waited for up to `timeout`.
pub async fn peer_status(
    node: &NodeObserver,
    addr: &str,
    timeout: Duration,
) -> Result<Vec<GroupStatus>, ProbeError> {
    match node.ask(addr, ClientRequest::Status, timeout).await? {
        ResponseBody::Status(groups) => Ok(groups),
        ResponseBody::Error(e) => Err(ProbeError::Refused(e)),
        _ => Err(ProbeError::Unexpected),
    }
}
