//! The JSON the dashboard page polls (`GET /dashboard.json`): this node's view of its groups,
//! of every node it knows, and of the requests it served.

use serde::{Deserialize, Serialize};

use super::rates::OpRate;
use crate::id::{GroupId, NodeId};

/// The report's format version; the page checks it, so a page cached from another build says
/// so instead of showing blanks.
pub const REPORT_VERSION: u32 = 1;

/// Everything the page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The node reporting.
    pub node: NodeId,
    /// How many probe rounds the monitor has finished (the page shows the report is fresh).
    pub ticks: u64,
    /// Every group hosted here, as this node sees it.
    pub groups: Vec<GroupRow>,
    /// Every node this node knows, itself included, with its health.
    pub nodes: Vec<NodeRow>,
    /// Requests this node served, per operation.
    pub requests: Vec<OpRate>,
    /// The interval the rates were measured over, in milliseconds (0 before two samples).
    pub rate_window_ms: u64,
}

/// One group as the reporting node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    /// The group.
    pub group: GroupId,
    /// The reporting node's role in it (Leader, Follower, Candidate, Learner).
    pub role: String,
    /// The leader the reporting node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The highest index known committed here.
    pub committed_index: Option<u64>,
    /// The highest index applied to the state machine here.
    pub applied_index: Option<u64>,
    /// The last log index here.
    pub last_log_index: Option<u64>,
    /// The voters.
    pub members: Vec<NodeId>,
    /// Non-voting replicas being caught up.
    pub learners: Vec<NodeId>,
    /// Sessions stored (at the applied index).
    pub sessions: u64,
}

/// One node of the cluster and its health as the reporting node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    /// The node.
    pub node: NodeId,
    /// Its data-port address.
    pub addr: String,
    /// It is the reporting node (its health is its own readiness, not a probe).
    pub local: bool,
    /// Reachable, and every group it votes in has a leader.
    pub healthy: bool,
    /// Why it is not healthy (empty when it is).
    pub problems: Vec<String>,
    /// How long ago it last answered a probe, in milliseconds (0 for the reporting node).
    pub last_answer_ms_ago: Option<u64>,
    /// The groups it leads, as far as the reporting node knows (none while it is unreachable).
    pub leads: Vec<GroupId>,
}
