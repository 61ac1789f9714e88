//! Node identity on real processes: a data directory remembers its cluster, node id and group
//! count, a node started against it under other settings refuses with one clear line, and a
//! node or client of another cluster is refused by the cluster's nodes.
//!
//! The story (issue 12): a node started with `--groups 8` on a 2-group directory started
//! silently and left 6 groups without a leader; a node started as `--id 2` on node 1's directory
//! started too (voting under two identities breaks Raft); and a cluster restored beside a live
//! one under the same CA could have joined it.

use std::sync::Arc;
use std::time::Duration;

use steadfast::client::{ClientConfig, CreateOptions};
use steadfast::command::Attributes;
use steadfast::identity::ClusterId;
use steadfast::raft::typ::{LogId, Vote};
use steadfast::transport::{Pool, TcpConnector, TransportError};
use steadfast::wire::{RaftRequest, RequestBody, ResponseBody, WireError};
use steadfast::{Client, Error, GroupId};

use crate::support::{serial, Cluster};

/// The one line `steadfast` printed as its error (it starts with "steadfast: ").
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("steadfast: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line in:\n{stderr}");
    lines[0].to_string()
}

fn refused_with(cluster: &Cluster, i: usize, overrides: &[(&str, &str)], wanted: &[&str]) {
    let (status, stderr) = cluster.serve_expecting_exit(i, overrides);
    assert!(!status.success(), "serve {overrides:?} started: {stderr}");
    let line = error_line(&stderr);
    for w in wanted {
        assert!(
            line.contains(w),
            "{overrides:?}: {line:?} does not say {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_data_directory_of_another_identity() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let (id, written) = client
        .create(
            Attributes::from([("k".into(), b"v".to_vec())]),
            CreateOptions::default(),
        )
        .await
        .expect("create");
    let recorded = std::fs::read_to_string(cluster.data_dir(0).join("identity.toml"))
        .expect("node 1's directory has an identity");
    assert!(recorded.contains("node_id = 1") && recorded.contains("groups = 2"));

    tracing::info!("--- node 1 stopped, then started under other settings: each refused");
    cluster.kill(0);
    refused_with(
        &cluster,
        0,
        &[("--groups", "8")],
        &[
            "created with 2 groups",
            "--groups 8",
            "start it with --groups 2",
        ],
    );
    refused_with(
        &cluster,
        0,
        &[("--id", "2")],
        &["belongs to node 1", "--id 2", "start it with --id 1"],
    );
    refused_with(
        &cluster,
        0,
        &[("--cluster-id", "another-cluster")],
        &["belongs to cluster c-", "--cluster-id another-cluster"],
    );
    let fresh = cluster.data_dir(0).with_extension("fresh");
    let lonely = format!("1={}", cluster.addrs[0]);
    refused_with(
        &cluster,
        0,
        &[
            ("--data-dir", fresh.to_str().expect("utf-8 path")),
            ("--peers", &lonely),
            ("--replicas", "3"),
        ],
        &["replicas = 3", "names 1 node(s)"],
    );

    tracing::info!("--- started as itself, node 1 serves its data again");
    cluster.restart(0);
    let leaders = cluster.wait_leaders(&client).await;
    assert_eq!(leaders.len(), 2);
    let session = client.get(id).await.expect("read").expect("kept");
    assert_eq!(session.version, written.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_or_client_of_another_cluster_is_refused() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let ours = client.cluster_id().expect("learned at connect");
    let intruder = ClusterId::new("intruder").expect("valid");

    tracing::info!("--- a client that insists on another cluster is refused at once");
    let mut config = ClientConfig::new(cluster.addrs.clone());
    config.cluster_id = Some(intruder.clone());
    let started = tokio::time::Instant::now();
    match Client::connect(config).await {
        Err(Error::WrongCluster(m)) => assert!(m.contains("intruder"), "{m}"),
        Err(e) => panic!("unexpected error for a client of another cluster: {e}"),
        Ok(_) => panic!("a client of another cluster was served"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not refused at once"
    );
    let mut config = ClientConfig::new(cluster.addrs.clone());
    config.cluster_id = Some(ours.clone());
    Client::connect(config)
        .await
        .expect("the right cluster id is served");

    tracing::info!("--- Raft traffic: refused under another cluster id and without a hello");
    let vote = RequestBody::Raft(RaftRequest::Vote(openraft::raft::VoteRequest::new(
        Vote::new(99, 9),
        Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 1)),
    )));
    let foreign = Pool::with_hello(Arc::new(TcpConnector), Some(intruder.clone()), Some(9));
    let answer = foreign
        .call(&cluster.addrs[0], GroupId(0), &vote, Duration::from_secs(5))
        .await;
    assert!(
        matches!(
            answer,
            Err(TransportError::Refused {
                reason: WireError::WrongCluster { .. },
                ..
            })
        ),
        "{answer:?}"
    );
    let anonymous = Pool::new(Arc::new(TcpConnector));
    let answer = anonymous
        .call(&cluster.addrs[0], GroupId(0), &vote, Duration::from_secs(5))
        .await;
    assert!(
        matches!(
            answer,
            Ok(ResponseBody::Error(WireError::WrongCluster { .. }))
        ),
        "Raft traffic from a client connection was not refused: {answer:?}"
    );

    tracing::info!("--- a node of another cluster at node 3's address is never replicated to");
    cluster.kill(2);
    cluster.wipe(2);
    cluster.set_node_flags(2, &["--cluster-id", "intruder"]);
    cluster.restart(2);
    // The cluster's leaders keep trying to replicate to node 3's address; the intruder refuses
    // their hellos (and they would refuse its).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cluster.log(2).contains(&format!("of cluster {ours}")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intruder never refused the cluster's nodes:\n{}",
            cluster.log(2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut config = ClientConfig::new(vec![cluster.addrs[2].clone()]);
    config.cluster_id = Some(intruder);
    let lone = Client::connect(config)
        .await
        .expect("the intruder serves itself");
    for (_, status) in lone.status().await {
        let Ok(groups) = status else { continue };
        for g in groups.into_iter().filter(|g| g.node == 3) {
            assert_eq!(g.sessions, 0, "the intruder got data: {g:?}");
            assert_eq!(g.applied_index, None, "the intruder applied entries: {g:?}");
        }
    }
    let (id, _) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("the cluster still serves on two nodes");
    assert!(client.get(id).await.expect("read").is_some());
}
