//! Failover under load: shoppers add to their baskets through two shop instances, alternating;
//! a store node is killed with SIGKILL, later an app instance is dropped. Every item a shopper
//! was told was added (HTTP 200) must be in the basket at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::SessionId;

use crate::support::{serial, Cluster};
use crate::web_axum::shop;
use crate::web_http::{App, Jar};

const SHOPPERS: usize = 4;

fn basket_items(body: &str) -> Vec<String> {
    let start = body.find("basket=[").map(|i| i + "basket=[".len());
    let Some(start) = start else {
        return Vec::new();
    };
    let end = body[start..].find(']').map_or(body.len(), |e| start + e);
    body[start..end]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_basket_item_is_lost_when_a_store_node_or_an_app_instance_dies() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let a = App::serve(shop::app(shop::layer(cluster.client().await), "a")).await;
    let b = App::serve(shop::app(shop::layer(cluster.client().await), "b")).await;
    let addrs = [a.addr, b.addr];

    let stop = Arc::new(AtomicBool::new(false));
    let sessions: Arc<Mutex<Vec<SessionId>>> = Arc::default();
    let mut shoppers = Vec::new();
    for s in 0..SHOPPERS {
        let (stop, sessions) = (stop.clone(), sessions.clone());
        shoppers.push(tokio::spawn(async move {
            let mut jar = Jar::default();
            let mut acked: Vec<(String, tokio::time::Instant)> = Vec::new();
            let mut failed = 0u32;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let item = format!("s{s}-{n}");
                let target = addrs[(n + s) % 2];
                n += 1;
                let path = format!("/basket/add?item={item}");
                match jar.send(target, "POST", &path).await {
                    Ok(r) if r.status == 200 => {
                        if acked.is_empty() {
                            let id = jar.get("shop_sid").expect("cookie").parse().expect("id");
                            sessions.lock().expect("lock").push(id);
                        }
                        acked.push((item, tokio::time::Instant::now()));
                    }
                    Ok(r) => {
                        tracing::info!(status = r.status, body = %r.body.trim(), "add refused");
                        failed += 1;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "add failed (instance down?)");
                        failed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (jar, acked, failed)
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill the node leading the group of the first shopper's session, so failover is certain
    // to be on the path of acknowledged writes.
    let first = sessions.lock().expect("lock").first().copied();
    let group = first.expect("a shopper got a session").group(4);
    let leader = cluster.wait_leaders(&client).await[group.0 as usize];
    eprintln!("--- kill -9 store node {leader}, leader of {group}");
    let killed_at = tokio::time::Instant::now();
    cluster.kill(leader as usize - 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    tracing::info!("--- drop app instance a");
    let dropped_at = tokio::time::Instant::now();
    a.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for shopper in shoppers {
        let (mut jar, acked, failed) = shopper.await.expect("shopper");
        let after_kill = acked.iter().filter(|(_, t)| *t > killed_at).count();
        let after_drop = acked.iter().filter(|(_, t)| *t > dropped_at).count();
        eprintln!(
            "shopper: acked {} ({after_kill} after the node kill, {after_drop} after the \
             instance drop), {failed} refused or failed",
            acked.len()
        );
        assert!(after_kill > 0, "no progress after the store node died");
        assert!(after_drop > 0, "no progress after the app instance died");
        let r = jar.send(b.addr, "GET", "/basket").await.expect("basket");
        assert_eq!(r.status, 200, "{r:?}");
        let stored = basket_items(&r.body);
        for (item, _) in &acked {
            assert!(
                stored.contains(item),
                "acknowledged {item} is missing from {stored:?}"
            );
        }
        total += acked.len();
    }
    assert!(total >= 40, "too little load to mean anything: {total}");
}
