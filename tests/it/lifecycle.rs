//! Session lifecycle against a real 3-node cluster: rotation, principals, touch-on-read,
//! events, capacity.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::state::EventKind;
use steadfast::{Error, SessionId};

use crate::support::{serial, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrent_use_of_the_old_id_leaves_one_live_copy() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    for round in 0..6 {
        let (old, _) = client
            .create(
                Attributes::from([("cart".into(), b"book".to_vec())]),
                CreateOptions::default(),
            )
            .await
            .expect("create");
        tracing::info!("--- round {round}: writers hammer the old id while it rotates");
        let mut writers = Vec::new();
        for w in 0..4 {
            let c = client.clone();
            writers.push(tokio::spawn(async move {
                let mut landed = 0;
                for n in 0..10 {
                    if c.update(old, Update::default().set(format!("w{w}-{n}"), "x"))
                        .await
                        .is_ok()
                    {
                        landed += 1;
                    }
                }
                landed
            }));
        }
        tokio::time::sleep(Duration::from_millis(5 * round)).await;
        let (new, _) = client.rotate(old).await.expect("rotate");
        let mut before = 0;
        for w in writers {
            before += w.await.expect("writer");
        }
        assert!(
            client.get(old).await.expect("get").is_none(),
            "the old id is dead after rotation"
        );
        assert!(matches!(
            client.update(old, Update::default().set("late", "x")).await,
            Err(Error::NotFound)
        ));
        let moved = client
            .get(new)
            .await
            .expect("get")
            .expect("the new id is live");
        assert_eq!(moved.attributes["cart"], b"book");
        let carried = moved
            .attributes
            .keys()
            .filter(|k| k.starts_with('w'))
            .count();
        assert!(
            carried <= before,
            "no write to the old id appears that was not acknowledged before rotation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_never_exceed_the_principal_limit() {
    let _serial = serial().await;
    let cluster = Cluster::start_with_args(3, 4, &["--max-sessions-per-principal", "3"]);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let mut logins = Vec::new();
    for _ in 0..12 {
        let c = client.clone();
        logins.push(tokio::spawn(async move {
            let (anon, _) = c
                .create(Attributes::new(), CreateOptions::default())
                .await
                .expect("create");
            c.login(anon, "carol").await
        }));
    }
    let mut ok = 0;
    for l in logins {
        match l.await.expect("task") {
            Ok(_) => ok += 1,
            Err(Error::LimitReached(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let live = client.sessions_of("carol").await.expect("sessions_of");
    assert_eq!(
        ok, 3,
        "exactly the limit's worth of logins succeed under `refuse`"
    );
    assert_eq!(live.len(), 3);

    tracing::info!("--- log out everywhere racing a new login");
    let (anon, _) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create");
    let c = client.clone();
    let late = tokio::spawn(async move { c.login(anon, "carol").await });
    let ended = client
        .invalidate_principal("carol")
        .await
        .expect("invalidate");
    let late = late.await.expect("task");
    let after = client.sessions_of("carol").await.expect("sessions_of");
    for id in &live {
        assert!(
            client.get(*id).await.expect("get").is_none(),
            "invalidated sessions stay gone"
        );
    }
    match late {
        // The login landed after the invalidation: it is the only survivor.
        Ok((new, _)) if after.contains(&new) => assert_eq!(after, vec![new]),
        // It landed before (and was ended) or was refused at the limit.
        _ => assert!(after.is_empty(), "{after:?} (ended {ended})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reconnects_sees_every_event_once_in_order() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 1);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            client
                .create(Attributes::new(), CreateOptions::default())
                .await
                .expect("create")
                .0,
        );
    }
    let group = ids[0].group(1);
    let mut seen = Vec::new();
    {
        let stream = client.watch(group, 0);
        let mut stream = std::pin::pin!(stream);
        while seen.len() < 3 {
            seen.push(stream.next().await.expect("event").expect("ok"));
        }
    }
    tracing::info!("--- disconnected; more happens; resume from the last index + 1");
    for id in &ids {
        client
            .update(*id, Update::default().set("a", "b"))
            .await
            .expect("update");
    }
    client.delete(ids[0], None).await.expect("delete");
    let resume = seen.last().expect("some").index + 1;
    let stream = client.watch(group, resume);
    let mut stream = std::pin::pin!(stream);
    loop {
        let e = stream.next().await.expect("event").expect("ok");
        let done = e.kind == EventKind::Deleted(ids[0]);
        seen.push(e);
        if done {
            break;
        }
    }
    let indexes: Vec<u64> = seen.iter().map(|e| e.index).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {indexes:?}"
    );
    let created: BTreeSet<SessionId> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Created(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(created, ids.iter().copied().collect());
    let updated = seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Updated(_)))
        .count();
    assert_eq!(updated, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_while_one_read_often_survives() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let options = CreateOptions {
        idle_timeout: Some(Duration::from_millis(1500)),
        ..CreateOptions::default()
    };
    let (idle, _) = client
        .create(Attributes::new(), options.clone())
        .await
        .expect("create");
    let (busy, _) = client
        .create(Attributes::new(), options)
        .await
        .expect("create");
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            client.get(busy).await.expect("get").is_some(),
            "a session being read never expires"
        );
    }
    assert!(
        client.get(idle).await.expect("get").is_none(),
        "4 s idle > 1.5 s timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_evicts_the_least_recently_used_session() {
    let _serial = serial().await;
    let cluster = Cluster::start_with_args(
        3,
        1,
        &[
            "--max-sessions-per-group",
            "3",
            "--when-full",
            "evict_oldest",
        ],
    );
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    // Recency is the replicated clock's millisecond (stamped by the leader), and sessions
    // accessed in the same millisecond are told apart by id: a pause of a few milliseconds
    // after each access gives every one its own stamp, however fast the writes are (a slower
    // machine only widens the gaps).
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .create(Attributes::new(), CreateOptions::default())
                .await
                .expect("create")
                .0,
        );
        tick().await;
    }
    client.touch(ids[0]).await.expect("touch");
    tick().await;
    let (fourth, _) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create");
    assert!(
        client.get(ids[1]).await.expect("get").is_none(),
        "the least recently used was evicted"
    );
    for id in [ids[0], ids[2], fourth] {
        assert!(client.get(id).await.expect("get").is_some());
    }
}
