//! Fail-stop: a node whose storage fails must not stay up with its Raft groups stopped.
//!
//! openraft stops a group's Raft core on a storage error (for example a failed log flush when
//! the disk is full or gone) and reports it in the group's metrics (`running_state`); the
//! process would otherwise keep answering, silently useless to the cluster. [`first_failure`]
//! resolves when any group's core has stopped for any reason but a requested shutdown, so the
//! serving layer can log one line and exit non-zero for a supervisor to replace the node, and
//! readiness can name the dead groups meanwhile.

use futures_util::future::select_all;
use openraft::error::Fatal;

use crate::id::{GroupId, NodeId};
use crate::raft::typ::Raft;

/// Why a group's Raft core is not running, if it is not (a requested shutdown included).
pub fn stopped(raft: &Raft) -> Option<String> {
    match &raft.metrics().borrow().running_state {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Waits until one of `groups` stops on its own (not by a requested shutdown); returns the
/// group and why. Never resolves while every group runs.
pub async fn first_failure(groups: Vec<(GroupId, Raft)>) -> (GroupId, String) {
    if groups.is_empty() {
        return std::future::pending().await;
    }
    let watchers = groups
        .into_iter()
        .map(|(group, raft)| Box::pin(watch(group, raft)));
    select_all(watchers).await.0
}

async fn watch(group: GroupId, raft: Raft) -> (GroupId, String) {
    let mut metrics = raft.metrics();
    loop {
        let state = metrics.borrow().running_state.clone();
        match state {
            Ok(()) => {}
            // A shutdown we asked for is not a failure.
            Err(Fatal::Stopped) => return std::future::pending().await,
            Err(e) => return (group, describe(&e)),
        }
        if metrics.changed().await.is_err() {
            return (group, "its Raft core ended".into());
        }
    }
}

fn describe(e: &Fatal<NodeId>) -> String {
    match e {
        Fatal::StorageError(s) => format!("storage error: {s}"),
        other => other.to_string(),
    }
}
