//! A real 3-node cluster: the session API, compare-and-set, crashes and restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast::client::{CreateOptions, Update};
use steadfast::command::{Attributes, Command, Origin};
use steadfast::{ClientId, Error, SessionId};

use crate::support::{serial, Cluster};

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_have_versions_and_compare_and_set() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;

    tracing::info!("--- create and read back");
    let (id, created) = client
        .create(attrs(&[("user", "ann")]), CreateOptions::default())
        .await
        .expect("create");
    let view = client.get(id).await.expect("get").expect("present");
    assert_eq!(view.version, created.version);
    assert_eq!(view.attributes["user"], b"ann");

    tracing::info!("--- a conditional update moves the version; a stale one conflicts");
    let updated = client
        .update(
            id,
            Update::default()
                .set("cart", "book")
                .if_version(created.version),
        )
        .await
        .expect("cas");
    assert!(updated.version > created.version);
    match client
        .update(
            id,
            Update::default()
                .set("cart", "pen")
                .if_version(created.version),
        )
        .await
    {
        Err(Error::Conflict { current_version }) => assert_eq!(current_version, updated.version),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let view = client.get(id).await.expect("get").expect("present");
    assert_eq!(
        (view.version, view.attributes["cart"].as_slice()),
        (updated.version, &b"book"[..])
    );

    tracing::info!("--- touch keeps the version; attribute-level updates merge");
    assert_eq!(
        client.touch(id).await.expect("touch").version,
        updated.version
    );
    client
        .update(id, Update::default().set("coupon", "x").remove("cart"))
        .await
        .expect("update");
    let view = client.get(id).await.expect("get").expect("present");
    assert_eq!(
        view.attributes.keys().collect::<Vec<_>>(),
        vec!["coupon", "user"]
    );

    tracing::info!("--- delete wins: the id never comes back");
    assert!(matches!(
        client.delete(id, Some(created.version)).await,
        Err(Error::Conflict { .. })
    ));
    client.delete(id, None).await.expect("delete");
    assert!(client.get(id).await.expect("get").is_none());
    assert!(matches!(
        client.update(id, Update::default().set("a", "b")).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        client
            .create_with_id(id, Attributes::new(), CreateOptions::default())
            .await,
        Err(Error::Exists)
    ));

    tracing::info!("--- an idle session expires by replicated time");
    let options = CreateOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..CreateOptions::default()
    };
    let (short, _) = client
        .create(Attributes::new(), options)
        .await
        .expect("create");
    assert!(client.get(short).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        client.get(short).await.expect("get").is_none(),
        "expired sessions are never returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_under_load_loses_no_acknowledged_write() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    let leaders = cluster.wait_leaders(&client).await;
    let mut ids = Vec::new();
    for _ in 0..24 {
        ids.push(
            client
                .create(Attributes::new(), CreateOptions::default())
                .await
                .expect("create")
                .0,
        );
    }
    let acked: Arc<Mutex<Vec<(SessionId, String, u64)>>> = Arc::default();
    let stop = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut writers = Vec::new();
    for (w, chunk) in ids.chunks(3).enumerate() {
        let (client, acked, chunk) = (client.clone(), acked.clone(), chunk.to_vec());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < stop {
                let id = chunk[n as usize % chunk.len()];
                let name = format!("w{w}-{n}");
                if let Ok(written) = client
                    .update(id, Update::default().set(name.clone(), "x"))
                    .await
                {
                    acked
                        .lock()
                        .expect("lock")
                        .push((id, name, written.version));
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    tracing::info!("--- kill -9 the leader of group 0");
    let victim = leaders[0];
    let before = tokio::time::Instant::now();
    cluster.kill(victim as usize - 1);
    let mut new_leader = None;
    while before.elapsed() < Duration::from_secs(10) {
        for (_, status) in client.status().await {
            for g in status.into_iter().flatten() {
                if g.group.0 == 0 && g.role == "Leader" && g.node != victim {
                    new_leader = Some(g.node);
                }
            }
        }
        if new_leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failover = before.elapsed();
    assert!(
        new_leader.is_some() && failover < Duration::from_secs(5),
        "no new leader within 5 s ({failover:?})"
    );
    for w in writers {
        w.await.expect("writer");
    }
    cluster.restart(victim as usize - 1);

    tracing::info!("--- every acknowledged write is there");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "the load made progress ({} writes)",
        acked.len()
    );
    let mut finals = BTreeMap::new();
    for id in &ids {
        finals.insert(*id, client.get(*id).await.expect("get").expect("present"));
    }
    for (id, name, version) in &acked {
        let s = &finals[id];
        assert!(
            s.attributes.contains_key(name),
            "acknowledged write {name} on {id} was lost"
        );
        assert!(s.version >= *version);
    }
}

/// Regression story: openraft 0.9 restores a restarted leader in its old term, knowing only the
/// lazily persisted commit index. Its ReadIndex then missed the last acknowledged write (a read
/// returned "not found" for a session created just before the crash). Leaders now commit a
/// barrier entry in their term before serving reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_keeps_every_acknowledged_session_and_version() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let mut expected = BTreeMap::new();
    for i in 0..60 {
        let (id, w) = client
            .create(attrs(&[("n", &i.to_string())]), CreateOptions::default())
            .await
            .expect("create");
        let w = if i % 2 == 0 {
            client
                .update(id, Update::default().set("even", "yes"))
                .await
                .expect("update")
        } else {
            w
        };
        expected.insert(id, w.version);
    }

    tracing::info!("--- kill -9 all three nodes, then restart them on the same data");
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    for (id, version) in &expected {
        let s = client
            .get(*id)
            .await
            .expect("get")
            .expect("session survived the crash");
        assert_eq!(s.version, *version, "version of {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_after_a_leader_change_applies_once() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    let leaders = cluster.wait_leaders(&client).await;
    let (id, created) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create");
    let origin = Origin {
        client: ClientId(0x5eed),
        seq: 1,
    };
    let command = Command::Update {
        id,
        set: attrs(&[("paid", "yes")]),
        remove: Default::default(),
        expected_version: Some(created.version),
        idle_timeout_ms: None,
    };
    let first = client
        .write_as(id, origin, command.clone())
        .await
        .expect("first attempt");

    tracing::info!("--- the leader dies; the client retries the same request elsewhere");
    let group = id.group(client.topology().groups).0 as usize;
    cluster.kill(leaders[group] as usize - 1);
    let retry = client.write_as(id, origin, command).await.expect("retry");
    assert_eq!(
        retry.version, first.version,
        "the retry returns the original result, not a second apply"
    );
    let s = client.get(id).await.expect("get").expect("present");
    assert_eq!(s.version, first.version);
    let fresh = Update::default()
        .set("paid", "twice")
        .if_version(created.version);
    assert!(matches!(
        client.update(id, fresh).await,
        Err(Error::Conflict { .. })
    ));
}
