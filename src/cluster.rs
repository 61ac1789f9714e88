//! Whole-cluster operations built on [`Client`]: waiting until every group has a leader,
//! reading each group's voters, and moving every replica of one node to another; and, before
//! starting a local cluster, finding a port that is already taken.
//!
//! They only read status and change membership through the client, so they are safe to rerun:
//! a step that already happened is found done and skipped.

use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::id::{GroupId, NodeId};
use crate::wire::MembershipReply;

/// How often the loops below ask the cluster again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The first of `addrs` that cannot be bound on this machine now (in use by another process,
/// or not an address of this machine), with why; `None` when all are free. The test binds and
/// releases each in turn, so it is only a hint: another process may take a port right after.
pub fn first_unbindable(addrs: &[String]) -> Option<(String, std::io::Error)> {
    addrs.iter().find_map(|addr| {
        std::net::TcpListener::bind(addr.as_str())
            .err()
            .map(|e| (addr.clone(), e))
    })
}

/// Waits up to `patience` until every group has a leader; `Error::Unavailable` naming the
/// groups still without one otherwise.
pub async fn wait_for_leaders(client: &Client, patience: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let leaderless = leaderless_groups(client).await;
        if leaderless.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = leaderless.iter().map(|g| g.0.to_string()).collect();
            return Err(Error::Unavailable(format!(
                "no leader within {} s in group {}",
                patience.as_secs(),
                names.join(", ")
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn leaderless_groups(client: &Client) -> Vec<GroupId> {
    let mut led = vec![false; client.topology().groups as usize];
    for (_, status) in client.status().await {
        for g in status.into_iter().flatten() {
            if g.role == "Leader" {
                if let Some(slot) = led.get_mut(g.group.0 as usize) {
                    *slot = true;
                }
            }
        }
    }
    (0..led.len() as u32)
        .filter(|g| !led[*g as usize])
        .map(GroupId)
        .collect()
}

/// Each group's voters as its leader reports them (the leader of the highest term seen),
/// waiting up to `patience` for groups that are electing one.
pub async fn current_voters(client: &Client, patience: Duration) -> Result<Vec<Vec<NodeId>>> {
    let groups = client.topology().groups;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut best: Vec<Option<(u64, Vec<NodeId>)>> = vec![None; groups as usize];
        for (_, status) in client.status().await {
            for s in status.into_iter().flatten() {
                let Some(slot) = best.get_mut(s.group.0 as usize) else {
                    continue;
                };
                if s.role == "Leader" && slot.as_ref().is_none_or(|(term, _)| *term < s.term) {
                    *slot = Some((s.term, s.members));
                }
            }
        }
        match best.iter().position(Option::is_none) {
            None => return Ok(best.into_iter().flatten().map(|(_, v)| v).collect()),
            Some(g) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Unavailable(format!(
                    "group {g} has no reachable leader; retry later"
                )))
            }
            Some(_) => tokio::time::sleep(POLL_INTERVAL * 2).await,
        }
    }
}

/// What [`replace_node`] is doing, for a progress display.
#[derive(Debug)]
pub enum ReplaceStep<'a> {
    /// `group` (the `index`th of `of` groups to move, from 0) is catching the new node up and
    /// then changing its voters; this is the long part.
    Moving {
        group: GroupId,
        index: usize,
        of: usize,
    },
    /// `group` now has these voters.
    Moved {
        group: GroupId,
        reply: &'a MembershipReply,
    },
}

/// Moves every group replica of node `old` to node `new` (at `addr`, or the address the
/// cluster knows when empty), one group at a time; `on_step` hears of each group before and
/// after its change. Returns how many groups changed (0 when there is nothing left to do).
pub async fn replace_node(
    client: &Client,
    (old, new): (NodeId, NodeId),
    addr: &str,
    patience: Duration,
    mut on_step: impl FnMut(ReplaceStep<'_>),
) -> Result<usize> {
    if old == new {
        return Err(Error::Invalid("old and new node are the same".into()));
    }
    let moves: Vec<(GroupId, Vec<NodeId>)> = current_voters(client, patience)
        .await?
        .into_iter()
        .enumerate()
        .filter(|(_, voters)| voters.contains(&old))
        .map(|(g, voters)| (GroupId(g as u32), voters))
        .collect();
    let of = moves.len();
    for (index, (group, voters)) in moves.into_iter().enumerate() {
        let mut next: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|v| **v != old && **v != new)
            .map(|v| (*v, String::new()))
            .collect();
        next.push((new, addr.to_string()));
        on_step(ReplaceStep::Moving { group, index, of });
        let reply = client.change_membership(group, &next).await?;
        on_step(ReplaceStep::Moved {
            group,
            reply: &reply,
        });
    }
    Ok(of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_and_free_ones_pass() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = held.local_addr().expect("addr").to_string();
        let free = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert!(first_unbindable(std::slice::from_ref(&free)).is_none());
        let (addr, e) = first_unbindable(&[free, taken.clone()]).expect("the held port");
        assert_eq!(addr, taken);
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
}
