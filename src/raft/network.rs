//! openraft's network traits over the shared [`Pool`]: every group's replication stream to a
//! peer travels on the one connection the node keeps to that peer.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload};

use super::typ::Entry;
use super::TypeConfig;
use crate::id::{GroupId, NodeId};
use crate::limits;
use crate::transport::{Pool, TransportError};
use crate::wire::{RaftRequest, RequestBody, ResponseBody};

/// Makes per-peer network handles for one group.
#[derive(Clone)]
pub struct NetworkFactory {
    /// The node's shared connection pool.
    pub pool: Pool,
    /// The group whose Raft instance uses this factory.
    pub group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            pool: self.pool.clone(),
            group: self.group,
            target,
            addr: node.addr.clone(),
        }
    }
}

/// One group's view of one peer.
pub struct PeerNetwork {
    pool: Pool,
    group: GroupId,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn transport_error<E: std::error::Error>(
    e: TransportError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn unexpected<E: std::error::Error>(
    body: &ResponseBody,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let e = std::io::Error::other(format!("unexpected response: {body:?}"));
    RPCError::Network(NetworkError::new(&e))
}

/// `Some(n)` when `entries` would make an AppendEntries request larger than
/// [`limits::APPEND_BYTES_MAX`]: only the first `n` (at least one) fit.
fn entries_that_fit(entries: &[Entry]) -> Option<u64> {
    let size = |e: &Entry| match &e.payload {
        EntryPayload::Normal(batch) => batch.approx_bytes(),
        EntryPayload::Blank => 64,
        EntryPayload::Membership(_) => 4096,
    };
    let mut total = 0;
    for (n, entry) in entries.iter().enumerate() {
        total += size(entry);
        if total > limits::APPEND_BYTES_MAX && entries.len() > 1 {
            return Some(n.max(1) as u64);
        }
    }
    None
}

impl PeerNetwork {
    async fn send(
        &self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<ResponseBody, TransportError> {
        let body = RequestBody::Raft(request);
        self.pool
            .call(&self.addr, self.group, &body, option.hard_ttl())
            .await
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        if let Some(fit) = entries_that_fit(&rpc.entries) {
            // openraft resends with at most `fit` entries.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        match self
            .send(RaftRequest::Append(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            ResponseBody::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self
            .send(RaftRequest::InstallSnapshot(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            ResponseBody::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .send(RaftRequest::Vote(rpc), &option)
            .await
            .map_err(transport_error)?
        {
            ResponseBody::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }
}
