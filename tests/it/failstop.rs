//! Fail-stop on real processes: a node whose disk fills up under load exits non-zero with one
//! clear log line, instead of staying up with its Raft groups stopped.
//!
//! The story (issue 12): when a data directory's file system vanished under load, openraft
//! logged `LogFlush error … quit RaftCore::main on error` and the process stayed up, silently
//! useless, so no supervisor replaced it. A tmpfs filled to the last byte makes sled's writes
//! really fail (chmod would not stop root).

use std::io::Write;
use std::time::Duration;

use steadfast::client::CreateOptions;
use steadfast::command::Attributes;

use crate::support::{serial, Cluster};

/// Writes zeros into `path` until the file system is full.
fn fill(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).expect("ballast file");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_exits_non_zero() {
    let _serial = serial().await;
    let mut cluster = Cluster::start_prepared(3, 2, &[], &|c| c.mount_tmpfs(0, 64));
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let value = vec![b'x'; 8 * 1024];
    for _ in 0..10 {
        client
            .create(
                Attributes::from([("v".into(), value.clone())]),
                CreateOptions::default(),
            )
            .await
            .expect("create before the disk fills");
    }

    tracing::info!("--- node 1's file system fills up; writes go on");
    fill(&cluster.data_dir(0).join("ballast"));
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let attrs = Attributes::from([("v".into(), value.clone())]);
                let _ = client.create(attrs, CreateOptions::default()).await;
            }
        })
    };
    let status = tokio::task::block_in_place(|| cluster.wait_exit(0, Duration::from_secs(90)));
    writer.abort();
    let status = status.unwrap_or_else(|| {
        panic!(
            "node 1 kept running with a full disk:\n{}",
            cluster
                .log(0)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(!status.success(), "node 1 exited successfully: {status}");
    let log = cluster.log(0);
    assert!(
        log.contains("this node stops too"),
        "no fail-stop line in node 1's log:\n{log}"
    );

    tracing::info!("--- the other two nodes go on serving");
    cluster.wait_leaders(&client).await;
    let (id, _) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create on two nodes");
    assert!(client.get(id).await.expect("read").is_some());
}
