//! Membership changes on a real cluster: replacing a node whose disk was lost, and moving one
//! group's voters while clients write to it.

use std::collections::BTreeMap;
use std::time::Duration;

use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::{Client, Error, GroupId, SessionId};

use crate::support::{serial, Cluster};

fn one(name: &str, value: &str) -> Attributes {
    Attributes::from([(name.to_string(), value.as_bytes().to_vec())])
}

/// Each group's voters as the leader of the highest term reports them.
async fn voters(client: &Client, groups: u32) -> Vec<Vec<u64>> {
    let mut best: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); groups as usize];
    for (_, status) in client.status().await {
        for s in status.into_iter().flatten() {
            let slot = &mut best[s.group.0 as usize];
            if s.role == "Leader" && s.term >= slot.0 {
                *slot = (s.term, s.members);
            }
        }
    }
    best.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_disk_is_replaced_without_losing_a_session() {
    let _serial = serial().await;
    let groups = 4;
    let mut cluster = Cluster::start(3, groups);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;

    let mut written = BTreeMap::new();
    for i in 0..40 {
        let (id, w) = client
            .create(one("n", &i.to_string()), CreateOptions::default())
            .await
            .expect("create");
        written.insert(id, w.version);
    }

    tracing::info!("--- node 3 dies and its disk is gone; node 4 joins empty");
    cluster.kill(2);
    cluster.wipe(2);
    let new = cluster.add_node();
    let new_addr = cluster.addrs[new].clone();
    let out = cluster.ctl_output(&["replace-node", "3", "4", "--addr", &new_addr], b"");
    assert!(out.status.success(), "{out:?}");
    // Piped, catching node 4 up draws no progress bar.
    crate::progress::assert_plain("ctl replace-node", &out);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains(&format!("in {groups} groups")),
        "every group had node 3: {out}"
    );
    // Rerunning finds nothing left to do.
    let again = cluster.ctl(&["replace-node", "3", "4", "--addr", &new_addr]);
    assert!(again.contains("in 0 groups"), "{again}");

    let client = cluster.client().await;
    for (g, v) in voters(&client, groups).await.iter().enumerate() {
        assert!(v.contains(&4) && !v.contains(&3), "group {g} voters {v:?}");
        assert_eq!(v.len(), 3, "group {g} voters {v:?}");
    }

    tracing::info!("--- with node 1 down too, groups live on nodes 2 and 4");
    cluster.kill(0);
    for (id, version) in &written {
        let view = client.get(*id).await.expect("read").expect("session kept");
        assert_eq!(view.version, *version, "{id}");
    }
    let (id, _) = client
        .create(one("after", "replace"), CreateOptions::default())
        .await
        .expect("writes commit on nodes 2 and 4");
    assert!(client.get(id).await.expect("read").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_move_while_clients_write_and_no_acknowledged_write_is_lost() {
    let _serial = serial().await;
    let groups = 2;
    let mut cluster = Cluster::start(3, groups);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let new = cluster.add_node();
    let new_addr = cluster.addrs[new].clone();

    // One session per group, updated in a loop while the membership changes.
    let mut ids = Vec::new();
    for g in 0..groups {
        let id = loop {
            let id = SessionId::generate();
            if id.group(groups) == GroupId(g) {
                break id;
            }
        };
        client
            .create_with_id(id, one("count", "0"), CreateOptions::default())
            .await
            .expect("create");
        ids.push(id);
    }
    let writer = {
        let client = client.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut acknowledged = vec![0u64; ids.len()];
            for round in 1..=60u64 {
                for (k, id) in ids.iter().enumerate() {
                    let update = Update::default().set("count", round.to_string());
                    match client.update(*id, update).await {
                        Ok(_) => acknowledged[k] = round,
                        Err(Error::Timeout) => {}
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };

    tracing::info!("--- group 0: {{1,2,3}} -> {{2,3,4}} -> {{1,2,4}}; group 1 shrinks to two");
    let g0 = GroupId(0);
    let m = client
        .change_membership(g0, &[(2, String::new()), (3, String::new()), (4, new_addr)])
        .await
        .expect("swap 1 for 4");
    assert_eq!(m.voters, vec![2, 3, 4]);
    let m = client
        .change_membership(
            g0,
            &[(1, String::new()), (2, String::new()), (4, String::new())],
        )
        .await
        .expect("swap 3 for 1");
    assert_eq!(m.voters, vec![1, 2, 4]);
    let before = voters(&client, groups).await[1].clone();
    let two: Vec<(u64, String)> = before[..2].iter().map(|v| (*v, String::new())).collect();
    let m = client
        .change_membership(GroupId(1), &two)
        .await
        .expect("shrink");
    assert_eq!(m.voters, before[..2].to_vec());

    // The removed voter learned it was removed (it got the configuration as a learner before
    // leaving), so it does not campaign: its term stays put.
    let gone = before[2];
    let view = |status: Vec<(
        String,
        steadfast::error::Result<Vec<steadfast::wire::GroupStatus>>,
    )>| {
        status
            .into_iter()
            .flat_map(|(_, s)| s.unwrap_or_default())
            .find(|s| s.node == gone && s.group == GroupId(1))
    };
    let mut settled = None;
    for _ in 0..50 {
        let s = view(client.status().await).expect("the removed node answers");
        if !s.members.contains(&gone) {
            settled = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = settled.expect("the removed voter learns the new configuration");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let later = view(client.status().await).expect("the removed node answers");
    assert_eq!(
        later.term, settled.term,
        "a removed voter must not campaign"
    );
    assert_ne!(later.role, "Candidate");

    let acknowledged = writer.await.expect("writer");
    for (k, id) in ids.iter().enumerate() {
        let view = client.get(*id).await.expect("read").expect("present");
        let count: u64 = String::from_utf8_lossy(&view.attributes["count"])
            .parse()
            .expect("number");
        assert!(
            count >= acknowledged[k],
            "group {k}: read {count}, but {} was acknowledged",
            acknowledged[k]
        );
    }

    tracing::info!("--- bad requests are refused with a clear error");
    match client.change_membership(g0, &[]).await {
        Err(Error::Protocol(steadfast::wire::WireError::Invalid(_))) => {}
        other => panic!("empty voter set must be invalid, got {other:?}"),
    }
    match client
        .change_membership(g0, &[(9, String::new()), (1, String::new())])
        .await
    {
        Err(Error::Protocol(steadfast::wire::WireError::Invalid(m))) => {
            assert!(m.contains("node 9"), "{m}")
        }
        other => panic!("an unknown node without address must be invalid, got {other:?}"),
    }
    drop(cluster);
}
