//! Whether a node is healthy, as this node sees it: it answered a probe within
//! [`UNREACHABLE_AFTER_MS`], and in its last answer every group it votes in had a leader.
//!
//! One missed probe does not turn a node red (a busy machine can miss a deadline); a node that
//! stays silent for the whole window does, with the last error as the reason. A node's own
//! health comes from its readiness checks instead ([`crate::node::NodeObserver::readiness`]),
//! which also catch a leader cut off from its quorum.

use crate::id::{GroupId, NodeId};
use crate::wire::GroupStatus;

/// A node that has not answered for this long is unreachable (about two missed probes).
pub const UNREACHABLE_AFTER_MS: u64 = 2_500;

/// What this node heard from one peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerRecord {
    /// When (monitor time) the peer last answered.
    pub last_answer_ms: Option<u64>,
    /// Why the latest probe failed; `None` when it answered.
    pub last_error: Option<String>,
    /// What was wrong in the peer's last answer (empty: nothing).
    pub problems: Vec<String>,
    /// The groups the peer led in its last answer.
    pub leads: Vec<GroupId>,
}

/// A node's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// Reachable, and no problem reported.
    pub healthy: bool,
    /// It answered within the window (what it last said, its leaderships, still stands).
    pub reachable: bool,
    /// Why not (empty when healthy).
    pub problems: Vec<String>,
}

impl PeerRecord {
    /// The peer `node` answered at `now_ms` with the status of its groups.
    pub fn answered(&mut self, now_ms: u64, node: NodeId, groups: &[GroupStatus]) {
        self.last_answer_ms = Some(now_ms);
        self.last_error = None;
        self.problems = group_problems(node, groups);
        self.leads = groups
            .iter()
            .filter(|g| g.leader == Some(node))
            .map(|g| g.group)
            .collect();
    }

    /// The latest probe failed, for `why` (the last answer stands until the window closes).
    pub fn failed(&mut self, why: String) {
        self.last_error = Some(why);
    }

    /// The verdict at `now_ms`.
    pub fn health(&self, now_ms: u64) -> Health {
        let silent_ms = self.last_answer_ms.map(|t| now_ms.saturating_sub(t));
        let why = self
            .last_error
            .as_deref()
            .unwrap_or("no probe finished yet");
        let unreachable = match silent_ms {
            None => Some(format!("never answered: {why}")),
            Some(ms) if ms > UNREACHABLE_AFTER_MS => Some(format!("no answer for {ms} ms: {why}")),
            Some(_) => None,
        };
        let reachable = unreachable.is_none();
        let problems = match unreachable {
            Some(reason) => vec![reason],
            None => self.problems.clone(),
        };
        Health {
            healthy: problems.is_empty(),
            reachable,
            problems,
        }
    }
}

/// What is wrong in a node's own report of its groups: each group it votes in that has no
/// leader as far as it knows.
pub fn group_problems(node: NodeId, groups: &[GroupStatus]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| g.members.contains(&node) && g.leader.is_none())
        .map(|g| format!("group {}: no leader", g.group.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(g: u32, leader: Option<NodeId>, members: &[NodeId]) -> GroupStatus {
        GroupStatus {
            group: GroupId(g),
            node: 2,
            role: "Follower".into(),
            leader,
            term: 1,
            last_log_index: Some(3),
            applied_index: Some(3),
            members: members.to_vec(),
            learners: vec![],
            sessions: 0,
            digest: 0,
        }
    }

    #[test]
    fn a_peer_is_healthy_while_it_answers_with_leaders_everywhere() {
        let mut p = PeerRecord::default();
        let never = p.health(0);
        assert!(!never.healthy);
        assert!(never.problems[0].starts_with("never answered"), "{never:?}");
        p.answered(
            1_000,
            2,
            &[group(0, Some(2), &[1, 2, 3]), group(1, Some(1), &[1, 2])],
        );
        assert!(p.health(1_000).healthy);
        assert_eq!(p.leads, vec![GroupId(0)]);
        // One failed probe is within the window; silence past it is not.
        p.failed("connection refused".into());
        assert!(p.health(1_000 + UNREACHABLE_AFTER_MS).healthy);
        let silent = p.health(1_001 + UNREACHABLE_AFTER_MS);
        assert!(!silent.healthy && !silent.reachable);
        assert_eq!(
            silent.problems,
            vec!["no answer for 2501 ms: connection refused".to_string()]
        );
        // It answers again: healthy at once.
        p.answered(5_000, 2, &[group(0, Some(1), &[1, 2, 3])]);
        assert!(p.health(5_000).healthy);
        assert!(p.leads.is_empty());
    }

    #[test]
    fn a_leaderless_group_it_votes_in_makes_a_node_unhealthy() {
        let groups = [group(0, None, &[1, 2, 3]), group(1, None, &[1, 3])];
        // Group 1 has no leader either, but node 2 does not vote in it.
        assert_eq!(group_problems(2, &groups), vec!["group 0: no leader"]);
        let mut p = PeerRecord::default();
        p.answered(10, 2, &groups);
        let h = p.health(10);
        assert!(!h.healthy && h.reachable);
        assert_eq!(h.problems, vec!["group 0: no leader"]);
    }
}
