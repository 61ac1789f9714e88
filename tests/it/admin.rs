//! The admin HTTP listener of a real node: liveness, readiness as groups lose and regain
//! their leaders, status JSON and Prometheus metrics.

use std::net::SocketAddr;
use std::time::Duration;

use steadfast::client::CreateOptions;
use steadfast::command::Attributes;

use crate::support::{serial, Cluster};
use crate::web_http::{send, Reply};

async fn get(addr: &str, path: &str) -> Reply {
    let addr: SocketAddr = addr.parse().expect("admin address");
    send(addr, "GET", path, None).await.expect("admin answers")
}

/// Polls `path` until it answers `status` (or panics after 30 s).
async fn until(addr: &str, path: &str, status: u16) -> Reply {
    until_body(addr, path, status, "").await
}

/// Polls `path` until it answers `status` with a body containing `needle` (or panics after
/// 30 s). A node answers `/readyz` before it has heard of its groups' memberships (it votes in
/// none yet), so a test waits for the body it expects rather than the first 200 (the first
/// version raced this on a busy machine: an empty 200 body).
async fn until_body(addr: &str, path: &str, status: u16, needle: &str) -> Reply {
    let mut last = None;
    for _ in 0..300 {
        if let Ok(addr_parsed) = addr.parse::<SocketAddr>() {
            if let Ok(r) = send(addr_parsed, "GET", path, None).await {
                if r.status == status && r.body.contains(needle) {
                    return r;
                }
                last = Some((r.status, r.body));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr}{path} never answered {status} with {needle:?}; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_status_and_metrics() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    for addr in &cluster.admin {
        assert_eq!(until(addr, "/livez", 200).await.body, "ok\n");
        let ready = until_body(addr, "/readyz", 200, "group 0: leader").await;
        assert!(ready.body.contains("group 0: leader"), "{}", ready.body);
    }
    client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create");

    let status = get(&cluster.admin[0], "/status").await;
    let groups: serde_json::Value = serde_json::from_str(&status.body).expect("status is JSON");
    assert_eq!(groups.as_array().map(Vec::len), Some(2), "{}", status.body);

    let metrics = get(&cluster.admin[0], "/metrics").await;
    assert_eq!(metrics.status, 200);
    for needle in [
        "steadfast_group_applied_index{group=\"0\"}",
        "steadfast_group_is_voter{group=\"1\"} 1",
        "steadfast_group_sessions",
    ] {
        assert!(
            metrics.body.contains(needle),
            "{needle} in {}",
            metrics.body
        );
    }
    // Requests are counted on the node that served them: the leaders of the two groups.
    let mut counted = String::new();
    for addr in &cluster.admin {
        counted.push_str(&get(addr, "/metrics").await.body);
    }
    assert!(
        counted.contains("steadfast_requests_total{op=\"write\",result=\"ok\"}"),
        "{counted}"
    );

    // Two of three nodes gone: none of the survivor's groups can be served, including one it
    // still leads (a leader cut off from its quorum does not step down by itself).
    cluster.kill(1);
    cluster.kill(2);
    let mut not_ready = until(&cluster.admin[0], "/readyz", 503).await;
    for _ in 0..300 {
        if !not_ready.body.contains(": leader ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        not_ready = get(&cluster.admin[0], "/readyz").await;
    }
    assert_eq!(not_ready.status, 503);
    assert!(!not_ready.body.contains(": leader "), "{}", not_ready.body);
    assert_eq!(get(&cluster.admin[0], "/livez").await.status, 200);
    cluster.restart(1);
    until(&cluster.admin[0], "/readyz", 200).await;
}
