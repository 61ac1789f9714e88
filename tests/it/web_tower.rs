//! The tower-sessions store in an axum app on a real cluster (two app instances, real HTTP with
//! cookies), and the store's contract called directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Query};
use axum::routing::{get, post};
use axum::Router;
use steadfast::adapters::tower_sessions::{
    save_failure, session_id, SaveFailureKind, SteadfastStore,
};
use steadfast::client::CreateOptions;
use steadfast::command::Attributes;
use steadfast::SessionId;
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{ExpiredDeletion, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::support::{serial, Cluster};
use crate::web_http::{send, App, Jar};

type Params = Query<BTreeMap<String, String>>;
type Fail = (axum::http::StatusCode, String);

fn fail(e: impl std::fmt::Display) -> Fail {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn param(q: &BTreeMap<String, String>, k: &str) -> String {
    q.get(k).cloned().unwrap_or_default()
}

async fn incr(session: Session) -> Result<String, Fail> {
    let n: u64 = session.get("n").await.map_err(fail)?.unwrap_or(0);
    session.insert("n", n + 1).await.map_err(fail)?;
    Ok(format!("{}", n + 1))
}

async fn get_value(session: Session, Query(q): Params) -> Result<String, Fail> {
    let v: Option<serde_json::Value> = session.get(&param(&q, "key")).await.map_err(fail)?;
    Ok(v.map_or_else(|| "-".into(), |v| v.to_string()))
}

/// Loads, meets a partner (or the test) at the barrier `waits` times, waits `delay_ms`, then
/// sets `key`.
async fn set_slow(
    session: Session,
    Extension(barrier): Extension<Arc<Barrier>>,
    Query(q): Params,
) -> Result<&'static str, Fail> {
    let key = param(&q, "key");
    let _: Option<serde_json::Value> = session.get(&key).await.map_err(fail)?;
    let waits: usize = param(&q, "waits").parse().unwrap_or(1);
    for _ in 0..waits {
        barrier.wait().await;
    }
    // Lets a partner save first, so this save starts after the partner's write landed.
    let delay: u64 = param(&q, "delay_ms").parse().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    session
        .insert(&key, param(&q, "value"))
        .await
        .map_err(fail)?;
    Ok("ok")
}

async fn logout(session: Session) -> Result<&'static str, Fail> {
    session.flush().await.map_err(fail)?;
    Ok("bye")
}

async fn login(session: Session) -> Result<&'static str, Fail> {
    session.cycle_id().await.map_err(fail)?;
    session.insert("user", "ann").await.map_err(fail)?;
    Ok("hi")
}

fn app(store: SteadfastStore, barrier: Arc<Barrier>) -> Router {
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)));
    Router::new()
        .route("/incr", post(incr))
        .route("/get", get(get_value))
        .route("/set_slow", post(set_slow))
        .route("/logout", post(logout))
        .route("/login", post(login))
        .layer(sessions)
        .layer(Extension(barrier))
}

fn steadfast_id(jar: &Jar) -> SessionId {
    let id: Id = jar.get("id").expect("cookie").parse().expect("tower id");
    session_id(&id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_sessions_store_in_an_axum_app() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let barrier = Arc::new(Barrier::new(2));
    let a = App::serve(app(
        SteadfastStore::new(cluster.client().await),
        barrier.clone(),
    ))
    .await;
    let b = App::serve(app(
        SteadfastStore::new(cluster.client().await),
        barrier.clone(),
    ))
    .await;
    let mut jar = Jar::default();

    tracing::info!("--- a counter across two instances");
    for (i, addr) in [a.addr, b.addr, a.addr].into_iter().enumerate() {
        let r = jar.send(addr, "POST", "/incr").await.expect("incr");
        assert_eq!((r.status, r.body.as_str()), (200, &*format!("{}", i + 1)));
    }
    let id = steadfast_id(&jar);
    let view = client.get(id).await.expect("get").expect("live");
    assert_eq!(
        rmp_serde::from_slice::<serde_json::Value>(&view.attributes["n"]).expect("msgpack"),
        serde_json::json!(3),
        "one attribute per key, MessagePack-encoded"
    );

    tracing::info!("--- concurrent saves of different keys merge (attribute deltas)");
    let h = jar.header();
    let (ra, rb) = tokio::join!(
        send(a.addr, "POST", "/set_slow?key=color&value=red", Some(&h)),
        send(
            b.addr,
            "POST",
            "/set_slow?key=size&value=L&delay_ms=500",
            Some(&h)
        ),
    );
    assert_eq!((ra.expect("a").status, rb.expect("b").status), (200, 200));
    let r = jar
        .send(a.addr, "GET", "/get?key=color")
        .await
        .expect("get");
    assert_eq!(r.body, "\"red\"");
    let r = jar.send(b.addr, "GET", "/get?key=size").await.expect("get");
    assert_eq!(r.body, "\"L\"");
    let r = jar.send(b.addr, "GET", "/get?key=n").await.expect("get");
    assert_eq!(r.body, "3");

    tracing::info!("--- cycle_id at login: the old id is dead");
    let before = steadfast_id(&jar);
    let r = jar.send(b.addr, "POST", "/login").await.expect("login");
    assert_eq!(r.status, 200);
    let after = steadfast_id(&jar);
    assert_ne!(before, after);
    assert!(client.get(before).await.expect("get").is_none());
    let r = jar.send(a.addr, "GET", "/get?key=n").await.expect("get");
    assert_eq!(r.body, "3", "the data moved to the new id");

    tracing::info!("--- a logout racing a slow request: the session stays gone");
    let id = steadfast_id(&jar);
    let h = jar.header();
    let slow = tokio::spawn(async move {
        send(
            a.addr,
            "POST",
            "/set_slow?key=late&value=x&waits=2",
            Some(&h),
        )
        .await
    });
    barrier.wait().await;
    let r = jar.send(b.addr, "POST", "/logout").await.expect("logout");
    assert_eq!(r.status, 200);
    barrier.wait().await;
    let r = slow.await.expect("join").expect("slow");
    assert_eq!(
        r.status, 500,
        "tower-sessions answers a failed save with 500"
    );
    assert!(
        client.get(id).await.expect("get").is_none(),
        "not resurrected"
    );

    tracing::info!("--- the store contract, called directly");
    let store = SteadfastStore::new(cluster.client().await);
    let taken = Id::default();
    client
        .create_with_id(
            session_id(&taken),
            Attributes::new(),
            CreateOptions::default(),
        )
        .await
        .expect("pre-create");
    let mut record = Record {
        id: taken,
        data: [("k".to_string(), serde_json::json!("v"))].into(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    store.create(&mut record).await.expect("create");
    assert_ne!(record.id, taken, "a colliding id is replaced");
    let loaded = store.load(&record.id).await.expect("load").expect("live");
    assert_eq!(loaded.data, record.data);

    record.data.insert("k2".into(), serde_json::json!([1, 2]));
    store.save(&record).await.expect("save without a snapshot");
    let loaded = store.load(&record.id).await.expect("load").expect("live");
    assert_eq!(loaded.data, record.data);

    store.delete(&record.id).await.expect("delete");
    store
        .delete(&record.id)
        .await
        .expect("delete is idempotent");
    assert!(store.load(&record.id).await.expect("load").is_none());
    let refused = store.save(&record).await.expect_err("a save after delete");
    assert_eq!(
        save_failure(&refused),
        Some(SaveFailureKind::Gone),
        "a save after delete fails as `Gone` instead of resurrecting: {refused}"
    );
    assert!(store.load(&record.id).await.expect("load").is_none());

    let mut short = Record {
        id: Id::default(),
        data: [("k".to_string(), serde_json::json!(1))].into(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::milliseconds(400),
    };
    store.create(&mut short).await.expect("create");
    assert!(store.load(&short.id).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        store.load(&short.id).await.expect("load").is_none(),
        "load never returns an expired session"
    );
    store
        .delete_expired()
        .await
        .expect("delete_expired is a no-op");
}

/// Waits (bounded) until the cluster itself no longer returns `id`, reading it through the
/// store every 200 ms meanwhile (each read would have extended an idle timeout); how long past
/// `date` that took (negative: before it).
async fn read_until_gone(
    store: &SteadfastStore,
    id: &Id,
    date: time::OffsetDateTime,
) -> time::Duration {
    let client = store.client().clone();
    for _ in 0..100 {
        let _ = store.load(id).await.expect("load");
        if client.get(session_id(id)).await.expect("get").is_none() {
            return time::OffsetDateTime::now_utc() - date;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the session outlived its date by far, read every 200 ms");
}

/// `Expiry::AtDateTime` used to be stored as an idle timeout, so a session read regularly never
/// reached its date (a 4 s session read every 2 s lived past 10 s). The record's date is now the
/// session's absolute deadline: reads do not move it, a save that keeps the date keeps it, and a
/// save with a new date (`OnInactivity` saving) moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_its_date_however_often_it_is_read() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 1);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let store = SteadfastStore::new(client);

    tracing::info!("--- a 2.5 s date, saved once and read every 200 ms");
    let date = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(2500);
    let mut record = Record {
        id: Id::default(),
        data: [("cart".to_string(), serde_json::json!(["book"]))].into(),
        expiry_date: date,
    };
    store.create(&mut record).await.expect("create");
    let loaded = store.load(&record.id).await.expect("load").expect("live");
    let reported = (loaded.expiry_date - date).abs();
    assert!(
        reported < time::Duration::milliseconds(500),
        "load reports the date: {reported}"
    );
    record.data.insert("note".into(), serde_json::json!("hi"));
    store.save(&record).await.expect("a save keeping the date");
    let past = read_until_gone(&store, &record.id, date).await;
    assert!(
        past > time::Duration::milliseconds(-300) && past < time::Duration::seconds(2),
        "gone at its date, not extended by the reads: {past} after it"
    );
    assert!(store.load(&record.id).await.expect("load").is_none());

    tracing::info!("--- a save with a later date moves the deadline");
    let first = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let mut record = Record {
        id: Id::default(),
        data: [("n".to_string(), serde_json::json!(1))].into(),
        expiry_date: first,
    };
    store.create(&mut record).await.expect("create");
    let later = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(3500);
    record.expiry_date = later;
    store.save(&record).await.expect("a save with a new date");
    let loaded = store.load(&record.id).await.expect("load").expect("live");
    let reported = (loaded.expiry_date - later).abs();
    assert!(
        reported < time::Duration::milliseconds(50),
        "the new date: {reported}"
    );
    let past = read_until_gone(&store, &record.id, later).await;
    assert!(
        past > time::Duration::milliseconds(-300) && past < time::Duration::seconds(2),
        "gone at the new date: {past} after it"
    );
}
