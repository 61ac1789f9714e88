//! Disaster recovery when a majority is lost for good, on real processes: two of three nodes
//! gone, `steadfast recover --force-new-cluster` on the third makes it a one-node cluster with
//! every session it held at its version; the old nodes, when they come back, are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::{Client, Error, SessionId};

use crate::support::{serial, Cluster};

/// Waits until node `node` has every group's log as far as its leader (so every acknowledged
/// write is on its disk).
async fn caught_up(client: &Client, node: u64) {
    for _ in 0..300 {
        let mut leader_log = BTreeMap::new();
        let mut node_log = BTreeMap::new();
        for (_, status) in client.status().await {
            for g in status.into_iter().flatten() {
                if g.role == "Leader" {
                    leader_log.insert(g.group, g.last_log_index);
                }
                if g.node == node {
                    node_log.insert(g.group, g.last_log_index);
                }
            }
        }
        if !leader_log.is_empty() && leader_log.iter().all(|(g, i)| node_log.get(g) >= Some(i)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {node} never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_recovers_as_a_new_cluster_and_fences_the_old_one() {
    let _serial = serial().await;
    let groups = 3;
    let mut cluster = Cluster::start(3, groups);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let old_cluster = client.cluster_id().expect("learned");
    let mut expected: BTreeMap<SessionId, (u64, String)> = BTreeMap::new();
    for i in 0..24 {
        let value = format!("item{i}");
        let attrs = Attributes::from([("cart".into(), value.clone().into_bytes())]);
        let (id, w) = client
            .create(attrs, CreateOptions::default())
            .await
            .expect("create");
        expected.insert(id, (w.version, value));
    }
    for (id, (version, value)) in expected.iter_mut().take(8) {
        *value = format!("{value}+");
        let w = client
            .update(*id, Update::default().set("cart", value.clone()))
            .await
            .expect("update");
        *version = w.version;
    }
    caught_up(&client, 1).await;

    tracing::info!("--- nodes 2 and 3 are lost; node 1 is stopped and recovered");
    cluster.kill(1);
    cluster.kill(2);
    cluster.kill(0);
    let alone = format!("1={}", cluster.addrs[0]);
    let out = cluster.run_for_node(
        "recover",
        0,
        &[],
        &["--force-new-cluster", "--cluster-id", "phoenix"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "recover failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for g in 0..groups {
        assert!(
            stdout.contains(&format!("group {g}: last log term ")),
            "no report for group {g}: {stdout}"
        );
    }
    assert!(stdout.contains("kept at"), "{stdout}");
    let no_force = cluster.run_for_node("recover", 0, &[], &[]);
    assert!(
        !no_force.status.success(),
        "recover without --force-new-cluster ran"
    );

    tracing::info!("--- node 1 serves alone as cluster phoenix, every session at its version");
    cluster.set_node_overrides(0, &[("--peers", &alone), ("--replicas", "1")]);
    cluster.restart(0);
    let mut config = ClientConfig::new(vec![cluster.addrs[0].clone()]);
    config.request_timeout = Duration::from_secs(30);
    let phoenix = Client::connect(config)
        .await
        .expect("connect to the survivor");
    assert_eq!(
        phoenix.cluster_id().map(|c| c.to_string()),
        Some("phoenix".into())
    );
    for (id, (version, value)) in &expected {
        let s = phoenix.get(*id).await.expect("read").expect("session kept");
        assert_eq!(s.version, *version, "version of {id}");
        assert_eq!(s.attributes.get("cart"), Some(&value.clone().into_bytes()));
    }
    let (&first, &(version, _)) = expected.iter().next().expect("sessions");
    let w = phoenix
        .update(
            first,
            Update::default().set("cart", "after").if_version(version),
        )
        .await
        .expect("a compare-and-set on the recovered cluster");
    assert!(w.version > version);

    tracing::info!("--- the old nodes come back: refused by cluster id");
    cluster.restart(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cluster
        .log(0)
        .contains(&format!("of cluster {old_cluster}"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never refused an old node:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut old = ClientConfig::new(vec![cluster.addrs[0].clone()]);
    old.cluster_id = Some(old_cluster);
    assert!(matches!(
        Client::connect(old).await,
        Err(Error::WrongCluster(_))
    ));
    let s = phoenix.get(first).await.expect("read").expect("present");
    assert_eq!(s.version, w.version);
}
