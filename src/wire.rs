//! The wire format: the only module that knows how messages look as bytes.
//!
//! A frame is a 4-byte big-endian length (added by `tokio_util`'s `LengthDelimitedCodec`, capped
//! at [`FRAME_BYTES_MAX`](crate::limits::FRAME_BYTES_MAX)) followed by a 14-byte header and a postcard body:
//!
//! ```text
//! version u8 | kind u8 (1 request, 2 response) | request_id u64 BE | group u32 BE | body
//! ```
//!
//! One connection per node pair carries every group's Raft traffic and client traffic, matched
//! by request id. Its first request is a [`Hello`] naming the caller's cluster. A frame with another protocol version is answered with
//! [`WireError::ProtocolVersion`]; a body that does not parse with [`WireError::Malformed`].

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Origin, Response};
use crate::id::{GroupId, NodeId, SessionId};
use crate::identity::ClusterId;
use crate::raft::TypeConfig;
use crate::state::SessionView;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Header bytes after the length prefix.
pub const HEADER_BYTES: usize = 14;

/// Whether a frame asks or answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request.
    Request = 1,
    /// A response.
    Response = 2,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's protocol version.
    pub version: u8,
    /// Request or response.
    pub kind: Kind,
    /// Matches a response to its request.
    pub request_id: u64,
    /// The Raft group addressed (0 for node-level requests).
    pub group: GroupId,
}

/// Raft traffic between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// AppendEntries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// RequestVote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// What clients ask of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A write. A `Create` with `idle_timeout_ms == 0` gets the cluster's default idle timeout.
    Write {
        /// `(client, seq)`; a retry must reuse it.
        origin: Origin,
        /// The change.
        command: Command,
        /// The application namespace whose defaults and limits apply ("" = cluster defaults).
        namespace: String,
    },
    /// Live sessions of a principal (linearizable; send to the principal's home group).
    Principal {
        /// The principal.
        principal: String,
    },
    /// Events with index `>= from_index`; when there are none yet, waits up to `wait_ms`
    /// (capped by the node) for some.
    Watch {
        /// The first log index wanted.
        from_index: u64,
        /// How long the node may hold the request open; the client keeps it below its own
        /// per-attempt deadline.
        wait_ms: u64,
    },
    /// A linearizable read of one session.
    Read {
        /// The session.
        id: SessionId,
    },
    /// Per-group status of this node.
    Status,
    /// The cluster's groups, nodes and placement.
    Topology,
    /// Makes `voters` the group's voters (send to the group's leader). New voters are added as
    /// learners first and caught up; then one joint-consensus change replaces the voter set.
    /// Idempotent: asking for the current voters changes nothing.
    ChangeMembership {
        /// The new voters with their addresses (an empty address means "as configured").
        voters: Vec<(NodeId, String)>,
    },
    /// A chunk of a point-in-time image of the group, for backups. `token == 0` takes a new
    /// image (after a ReadIndex round, so it is linearizable) and answers its first chunk;
    /// later chunks name the token the first answer gave.
    Backup {
        /// 0 to start, else the image's token.
        token: u64,
        /// Byte offset into the image.
        offset: u64,
    },
    /// A linearizable batch of the group's Redis keys with ids `>= from`, visiting about
    /// `count` sessions (capped by the node); answered with [`ResponseBody::RedisKeys`].
    RedisScan {
        /// The first id wanted.
        from: SessionId,
        /// How many sessions to visit.
        count: u32,
    },
}

/// Every request body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RequestBody {
    /// Between nodes.
    Raft(RaftRequest),
    /// From clients.
    Client(ClientRequest),
    /// The first request on every connection: who is calling, of which cluster. Answered by
    /// [`ResponseBody::Welcome`], or by [`WireError::WrongCluster`] and a closed connection.
    Hello(Hello),
}

/// A connection's opening: the caller's cluster and, for a node, its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The caller's cluster; `None` for a client that learns it from the answer. Raft traffic
    /// is refused on a connection whose hello did not name the node's own cluster.
    pub cluster_id: Option<ClusterId>,
    /// The calling node, `None` for a client.
    pub node: Option<NodeId>,
}

/// A linearizable read's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The session, unless it does not exist (or expired).
    pub session: Option<SessionView>,
    /// The replicated clock at the read.
    pub server_time_ms: u64,
    /// The log index the read was linearized at.
    pub read_index: u64,
}

/// One group's status on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// The node reporting.
    pub node: NodeId,
    /// Leader, Follower, Candidate or Learner.
    pub role: String,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last log index.
    pub last_log_index: Option<u64>,
    /// The last applied index.
    pub applied_index: Option<u64>,
    /// The voters.
    pub members: Vec<NodeId>,
    /// Non-voting replicas (being caught up).
    pub learners: Vec<NodeId>,
    /// Stored sessions.
    pub sessions: u64,
    /// State digest at `applied_index` (replicas at the same index must agree).
    pub digest: u64,
}

/// The cluster's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Number of groups.
    pub groups: u32,
    /// Every node and its address.
    pub nodes: Vec<(NodeId, String)>,
    /// For each group, its replicas (the first is the bootstrap node).
    pub placement: Vec<Vec<NodeId>>,
}

/// Errors a node sends instead of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// The frame's protocol version is not spoken here.
    #[error("protocol version {got} not supported (this node speaks {supported})")]
    ProtocolVersion {
        /// What the frame said.
        got: u8,
        /// What this node speaks.
        supported: u8,
    },
    /// The frame did not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// This node does not host the group.
    #[error("unknown group {0}")]
    UnknownGroup(u32),
    /// This node is not the group's leader; retry at the hint.
    #[error("not leader (hint: {leader:?})")]
    NotLeader {
        /// The leader's id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The group cannot serve now (no quorum, shutting down); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is not allowed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The events asked for were compacted away; resume from `first_available` (and re-read
    /// the state, since events in between are lost).
    #[error("events compacted; the oldest retained index is {first_available}")]
    Compacted {
        /// The oldest retained event index.
        first_available: u64,
    },
    /// The caller belongs to another cluster (or sent Raft traffic without saying which):
    /// definite, retrying cannot help. Point it at its own cluster.
    #[error("refused: this node serves cluster {ours}, the caller is of cluster {theirs}")]
    WrongCluster {
        /// The answering node's cluster.
        ours: String,
        /// What the caller said ("none" when it did not say).
        theirs: String,
    },
}

impl WireError {
    /// A short stable name of the error's kind (metrics labels, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            WireError::ProtocolVersion { .. } => "protocol_version",
            WireError::Malformed(_) => "malformed",
            WireError::UnknownGroup(_) => "unknown_group",
            WireError::NotLeader { .. } => "not_leader",
            WireError::Unavailable(_) => "unavailable",
            WireError::Invalid(_) => "invalid",
            WireError::Compacted { .. } => "compacted",
            WireError::WrongCluster { .. } => "wrong_cluster",
        }
    }
}

/// Every response body.
#[derive(Debug, Serialize, Deserialize)]
pub enum ResponseBody {
    /// AppendEntries result.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Vote result.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// InstallSnapshot result.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// A write's result.
    Written(Response),
    /// A read's result.
    Read(ReadReply),
    /// Status of every group on the node.
    Status(Vec<GroupStatus>),
    /// The cluster's shape.
    Topology(Topology),
    /// Session ids (of a principal).
    Sessions(Vec<SessionId>),
    /// A batch of events and the index to ask for next.
    Events {
        /// Events in log order.
        events: Vec<crate::state::Event>,
        /// Resume from here.
        next_index: u64,
    },
    /// Failure.
    Error(WireError),
    /// A group's membership after a change.
    Membership(MembershipReply),
    /// Part of a group image (a checked record of [`crate::backup::GroupImage`]).
    BackupChunk {
        /// Names the image for the following chunks.
        token: u64,
        /// The image's length in bytes.
        total: u64,
        /// The bytes from the requested offset on (at most [`crate::limits::BACKUP_CHUNK_BYTES`]).
        bytes: Vec<u8>,
    },
    /// The answer to a [`Hello`]: the node's cluster and id.
    Welcome {
        /// The node's cluster.
        cluster_id: ClusterId,
        /// The node's id.
        node: NodeId,
    },
    /// Redis key names and types of one scan batch, and where the next batch starts (`None`:
    /// the group is done).
    RedisKeys {
        /// `(name, type)` of each key.
        keys: Vec<(Vec<u8>, crate::command::redis::KeyType)>,
        /// The next batch's `from`.
        next: Option<SessionId>,
    },
}

/// A group's committed membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipReply {
    /// The voters.
    pub voters: Vec<NodeId>,
    /// Non-voting replicas.
    pub learners: Vec<NodeId>,
    /// The log index of the membership entry.
    pub log_index: Option<u64>,
}

/// Encodes a frame (without the length prefix, which the codec adds).
pub fn encode<T: Serialize>(kind: Kind, request_id: u64, group: GroupId, body: &T) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + 64);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u8(kind as u8);
    out.put_u64(request_id);
    out.put_u32(group.0);
    let body = postcard::to_allocvec(body).expect("in-memory messages always encode");
    out.extend_from_slice(&body);
    out.freeze()
}

/// Decodes a header; the body follows at [`HEADER_BYTES`].
pub fn decode_header(frame: &[u8]) -> Result<Header, WireError> {
    if frame.len() < HEADER_BYTES {
        return Err(WireError::Malformed(format!(
            "frame of {} bytes has no header",
            frame.len()
        )));
    }
    let kind = match frame[1] {
        1 => Kind::Request,
        2 => Kind::Response,
        k => return Err(WireError::Malformed(format!("unknown frame kind {k}"))),
    };
    let request_id = u64::from_be_bytes(frame[2..10].try_into().expect("8 bytes"));
    let group = GroupId(u32::from_be_bytes(
        frame[10..14].try_into().expect("4 bytes"),
    ));
    Ok(Header {
        version: frame[0],
        kind,
        request_id,
        group,
    })
}

/// Decodes a body of type `T` from a whole frame.
pub fn decode_body<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(&frame[HEADER_BYTES.min(frame.len())..])
        .map_err(|e| WireError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let body = RequestBody::Client(ClientRequest::Read {
            id: SessionId::from_bytes([3; 16]),
        });
        let frame = encode(Kind::Request, 42, GroupId(5), &body);
        let header = decode_header(&frame).expect("header");
        assert_eq!(
            header,
            Header {
                version: PROTOCOL_VERSION,
                kind: Kind::Request,
                request_id: 42,
                group: GroupId(5)
            }
        );
        let back: RequestBody = decode_body(&frame).expect("body");
        assert!(matches!(
            back,
            RequestBody::Client(ClientRequest::Read { .. })
        ));
        for n in 0..frame.len() {
            let cut = &frame[..n];
            let r = decode_header(cut).and_then(|_| decode_body::<RequestBody>(cut));
            assert!(r.is_err(), "truncated at {n} must fail");
        }
    }
}
