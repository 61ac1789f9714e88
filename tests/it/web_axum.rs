//! The native axum layer on a real cluster, driven over real HTTP with cookies: the shop example
//! (included from `examples/shop.rs`) plus test routes that hold a request open at a chosen point.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use steadfast::adapters::axum_layer::{
    SameSite, Session, SessionError, SteadfastSessionLayer, WriteMode,
};
use steadfast::adapters::{Backend, Steadfast};
use steadfast::config::{NodeConfig, Peer, RaftTuning, SessionDefaults};
use steadfast::SessionId;
use tokio::sync::Barrier;

use crate::support::{serial, Cluster};
use crate::web_http::{send, App, Jar};

#[path = "../../examples/shop.rs"]
#[allow(dead_code, reason = "the example's main is not used here")]
pub mod shop;

type Params = Query<BTreeMap<String, String>>;

fn param(q: &BTreeMap<String, String>, k: &str) -> String {
    q.get(k).cloned().unwrap_or_default()
}

/// Reads `key`, waits for a partner at the barrier, then sets it (deferred write).
async fn set_slow(
    session: Session,
    Extension(barrier): Extension<Arc<Barrier>>,
    Query(q): Params,
) -> Result<&'static str, SessionError> {
    let key = param(&q, "key");
    let _: Option<String> = session.get(&key).await?;
    barrier.wait().await;
    session.insert(&key, &param(&q, "value")).await?;
    Ok("ok")
}

/// Loads the basket, waits for a partner, then adds under compare-and-set.
async fn add_slow(
    session: Session,
    Extension(barrier): Extension<Arc<Barrier>>,
    Query(q): Params,
) -> Result<String, SessionError> {
    let _: Option<Vec<String>> = session.get("basket").await?;
    barrier.wait().await;
    let item = param(&q, "item");
    let n = session
        .update_with_retry(|data| {
            let mut basket: Vec<String> = data.get("basket")?.unwrap_or_default();
            basket.push(item.clone());
            data.insert("basket", &basket)?;
            Ok(basket.len())
        })
        .await?;
    Ok(format!("{n}"))
}

/// Loads, tells the test it has loaded (barrier), waits for the go (barrier), then writes:
/// `mode=retry` through update_with_retry, otherwise a deferred insert.
async fn write_after(
    session: Session,
    Extension(barrier): Extension<Arc<Barrier>>,
    Query(q): Params,
) -> Result<&'static str, SessionError> {
    let _: Option<Vec<String>> = session.get("basket").await?;
    barrier.wait().await;
    barrier.wait().await;
    if param(&q, "mode") == "retry" {
        session
            .update_with_retry(|data| {
                data.insert("late", "yes")?;
                Ok(())
            })
            .await?;
    } else {
        session.insert("late", "yes").await?;
    }
    Ok("ok")
}

async fn get_value(session: Session, Query(q): Params) -> Result<String, SessionError> {
    let v: Option<String> = session.get(&param(&q, "key")).await?;
    Ok(v.unwrap_or_else(|| "-".into()))
}

async fn set_value(session: Session, Query(q): Params) -> Result<&'static str, SessionError> {
    session
        .insert(&param(&q, "key"), &param(&q, "value"))
        .await?;
    Ok("ok")
}

/// Sets a value, then fails: deferred changes are dropped, immediate ones are already stored.
async fn set_then_fail(session: Session, Query(q): Params) -> (StatusCode, &'static str) {
    match session.insert(&param(&q, "key"), &param(&q, "value")).await {
        Ok(()) => (StatusCode::INTERNAL_SERVER_ERROR, "failed after insert"),
        Err(_) => (StatusCode::BAD_GATEWAY, "insert failed"),
    }
}

async fn noop(_session: Session) -> &'static str {
    "nothing"
}

pub fn test_app(layer: SteadfastSessionLayer, name: &str, barrier: Arc<Barrier>) -> Router {
    shop::routes()
        .route("/set_slow", post(set_slow))
        .route("/add_slow", post(add_slow))
        .route("/write_after", post(write_after))
        .route("/get", get(get_value))
        .route("/set", post(set_value))
        .route("/fail", post(set_then_fail))
        .route("/noop", get(noop))
        .layer(layer.clone())
        .layer(Extension(layer))
        .layer(Extension(shop::Instance(name.to_string())))
        .layer(Extension(barrier))
}

fn cookie_id(jar: &Jar) -> SessionId {
    jar.get("shop_sid")
        .expect("session cookie")
        .parse()
        .expect("a session id")
}

async fn two_instances(
    cluster: &Cluster,
    barrier: &Arc<Barrier>,
) -> (App, SteadfastSessionLayer, App, SteadfastSessionLayer) {
    let la = shop::layer(cluster.client().await);
    let lb = shop::layer(cluster.client().await);
    let a = App::serve(test_app(la.clone(), "a", barrier.clone())).await;
    let b = App::serve(test_app(lb.clone(), "b", barrier.clone())).await;
    (a, la, b, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_layer_merges_attributes_and_surfaces_same_attribute_conflicts() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let barrier = Arc::new(Barrier::new(2));
    let (a, la, b, lb) = two_instances(&cluster, &barrier).await;
    let mut jar = Jar::default();

    tracing::info!("--- the first write creates the session and sets the cookie");
    let r = jar
        .send(a.addr, "POST", "/basket/add?item=book")
        .await
        .expect("add");
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = r.set_cookies()[0].to_string();
    for attr in ["shop_sid=", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "the demo turns Secure off: {cookie}"
    );
    let id = cookie_id(&jar);

    tracing::info!("--- two concurrent adds on one session through two instances: both land");
    let h = jar.header();
    let (ra, rb) = tokio::join!(
        send(a.addr, "POST", "/add_slow?item=pen", Some(&h)),
        send(b.addr, "POST", "/add_slow?item=cup", Some(&h)),
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!((ra.status, rb.status), (200, 200), "{ra:?} {rb:?}");
    let view = client.get(id).await.expect("get").expect("live");
    let basket: Vec<String> = rmp_serde::from_slice(&view.attributes["basket"]).expect("decode");
    let mut sorted = basket.clone();
    sorted.sort();
    assert_eq!(sorted, ["book", "cup", "pen"], "{basket:?}");
    assert!(
        la.stats().conflicts_retried + lb.stats().conflicts_retried >= 1,
        "the second compare-and-set must have retried"
    );
    let r = jar.send(b.addr, "GET", "/basket").await.expect("basket");
    assert!(
        r.body.contains("pen") && r.body.contains("cup"),
        "{}",
        r.body
    );

    tracing::info!("--- concurrent deferred writes to different attributes merge");
    let (ra, rb) = tokio::join!(
        send(a.addr, "POST", "/set_slow?key=color&value=red", Some(&h)),
        send(b.addr, "POST", "/set_slow?key=size&value=L", Some(&h)),
    );
    assert_eq!((ra.expect("a").status, rb.expect("b").status), (200, 200));
    let r = jar
        .send(a.addr, "GET", "/get?key=color")
        .await
        .expect("get");
    assert_eq!(r.body, "red");
    let r = jar.send(b.addr, "GET", "/get?key=size").await.expect("get");
    assert_eq!(r.body, "L");

    tracing::info!("--- concurrent writes to the same attribute: one wins, the other gets 409");
    let surfaced_before = la.stats().conflicts_surfaced + lb.stats().conflicts_surfaced;
    let (ra, rb) = tokio::join!(
        send(a.addr, "POST", "/set_slow?key=color&value=blue", Some(&h)),
        send(b.addr, "POST", "/set_slow?key=color&value=green", Some(&h)),
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let winner = if ra.status == 200 { "blue" } else { "green" };
    let r = jar
        .send(a.addr, "GET", "/get?key=color")
        .await
        .expect("get");
    assert_eq!(r.body, winner, "the acknowledged write is the stored one");
    assert_eq!(
        la.stats().conflicts_surfaced + lb.stats().conflicts_surfaced,
        surfaced_before + 1
    );

    tracing::info!("--- lazy: a handler that does not use the session reads nothing");
    let loads = la.stats().loads;
    let r = jar.send(a.addr, "GET", "/noop").await.expect("noop");
    assert_eq!(r.status, 200);
    assert!(r.set_cookies().is_empty(), "no cookie churn: {r:?}");
    assert_eq!(la.stats().loads, loads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_layer_login_rotates_the_id_and_logout_beats_a_slow_request() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let barrier = Arc::new(Barrier::new(2));
    let (a, la, b, _lb) = two_instances(&cluster, &barrier).await;
    let mut jar = Jar::default();

    tracing::info!("--- an anonymous basket, then login: new id, basket kept, old id dead");
    jar.send(a.addr, "POST", "/basket/add?item=book")
        .await
        .expect("add");
    let anonymous = cookie_id(&jar);
    let r = jar
        .send(b.addr, "POST", "/login?user=ann")
        .await
        .expect("login");
    assert_eq!(r.status, 200, "{r:?}");
    let logged_in = cookie_id(&jar);
    assert_ne!(anonymous, logged_in, "login must rotate the id");
    assert!(
        client.get(anonymous).await.expect("get").is_none(),
        "the pre-login id is dead"
    );
    let r = jar.send(a.addr, "GET", "/basket").await.expect("basket");
    assert_eq!(r.body, "a: user=ann basket=[book]\n");
    let stale = format!("shop_sid={anonymous}");
    let r = send(a.addr, "GET", "/basket", Some(&stale))
        .await
        .expect("old cookie");
    assert_eq!(
        r.body, "a: user=- basket=[]\n",
        "the old id carries nothing"
    );
    assert!(
        r.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "a dead session's cookie is cleared: {r:?}"
    );
    let view = client.get(logged_in).await.expect("get").expect("live");
    assert_eq!(view.principal.as_deref(), Some("ann"));

    tracing::info!("--- log out everywhere: every device of ann is logged out");
    let mut phone = Jar::default();
    phone
        .send(b.addr, "POST", "/login?user=ann")
        .await
        .expect("login");
    let second = cookie_id(&phone);
    let mut devices = la.sessions_of("ann").await.expect("sessions_of");
    devices.sort();
    let mut expected = vec![logged_in, second];
    expected.sort();
    assert_eq!(devices, expected);
    let r = phone
        .send(a.addr, "POST", "/logout/everywhere")
        .await
        .expect("everywhere");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("(2 sessions)"), "{}", r.body);
    for id in [logged_in, second] {
        assert!(client.get(id).await.expect("get").is_none());
    }
    let r = jar.send(a.addr, "GET", "/basket").await.expect("basket");
    assert_eq!(
        r.body, "a: user=- basket=[]\n",
        "the laptop is logged out too"
    );

    for mode in ["retry", "deferred"] {
        tracing::info!(
            mode,
            "--- a slow request loaded the session; logout; it writes: 409"
        );
        if jar.get("shop_sid").is_none() {
            jar.send(a.addr, "POST", "/login?user=bob")
                .await
                .expect("login");
        }
        let id = cookie_id(&jar);
        let h = jar.header();
        let path = format!("/write_after?mode={mode}");
        let slow = tokio::spawn(async move { send(a.addr, "POST", &path, Some(&h)).await });
        barrier.wait().await; // the slow request has loaded the session
        let r = jar.send(b.addr, "POST", "/logout").await.expect("logout");
        assert_eq!(r.status, 200);
        assert!(jar.get("shop_sid").is_none(), "logout clears the cookie");
        barrier.wait().await; // let it write
        let r = slow.await.expect("join").expect("slow");
        assert_eq!(r.status, 409, "{r:?}");
        assert!(r.body.contains("ended"), "{}", r.body);
        assert!(
            r.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
            "{r:?}"
        );
        assert!(
            client.get(id).await.expect("get").is_none(),
            "the session stays gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_layer_timeouts_write_modes_cookie_settings_and_near_cache() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let barrier = Arc::new(Barrier::new(2));

    tracing::info!("--- idle timeout: reads keep it alive (touch on read), idleness ends it");
    let idle = shop::layer(cluster.client().await).idle_timeout(Duration::from_secs(2));
    let app = App::serve(test_app(idle.clone(), "idle", barrier.clone())).await;
    let mut jar = Jar::default();
    jar.send(app.addr, "POST", "/set?key=k&value=v")
        .await
        .expect("set");
    let id = cookie_id(&jar);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let r = jar.send(app.addr, "GET", "/get?key=k").await.expect("get");
        assert_eq!(r.body, "v", "reads count as activity");
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(client.get(id).await.expect("get").is_none(), "idle expiry");
    let r = jar.send(app.addr, "GET", "/get?key=k").await.expect("get");
    assert_eq!(r.body, "-");

    tracing::info!("--- absolute deadline: ends the session however active");
    let absolute = shop::layer(cluster.client().await)
        .idle_timeout(Duration::from_secs(60))
        .absolute_timeout(Some(Duration::from_millis(1500)));
    let app = App::serve(test_app(absolute, "abs", barrier.clone())).await;
    let mut jar = Jar::default();
    jar.send(app.addr, "POST", "/set?key=k&value=v")
        .await
        .expect("set");
    let id = cookie_id(&jar);
    let start = tokio::time::Instant::now();
    loop {
        let r = jar
            .send(app.addr, "POST", "/set?key=n&value=x")
            .await
            .expect("set");
        if client.get(id).await.expect("get").is_none() {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no absolute expiry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(1300));

    tracing::info!("--- deferred: a 5xx answer discards the changes; immediate: already written");
    for (mode, stored) in [(WriteMode::Deferred, false), (WriteMode::Immediate, true)] {
        let layer = shop::layer(cluster.client().await).write_mode(mode);
        let app = App::serve(test_app(layer, "m", barrier.clone())).await;
        let mut jar = Jar::default();
        jar.send(app.addr, "POST", "/set?key=a&value=1")
            .await
            .expect("set");
        let id = cookie_id(&jar);
        let r = jar
            .send(app.addr, "POST", "/fail?key=b&value=2")
            .await
            .expect("fail");
        assert_eq!(r.status, 500);
        let view = client.get(id).await.expect("get").expect("live");
        assert_eq!(view.attributes.contains_key("b"), stored, "{mode:?}");
    }

    tracing::info!("--- cookie settings and a sliding persistent cookie");
    let custom = SteadfastSessionLayer::new(cluster.client().await)
        .cookie_name("shop_sid")
        .domain("shop.test")
        .path("/")
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(Some(Duration::from_secs(600)))
        .near_cache(64);
    let app = App::serve(test_app(custom.clone(), "c", barrier.clone())).await;
    let mut jar = Jar::default();
    let r = jar
        .send(app.addr, "POST", "/set?key=k&value=v")
        .await
        .expect("set");
    let cookie = r.set_cookies()[0].to_string();
    for attr in [
        "Domain=shop.test",
        "Max-Age=600",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    for _ in 0..3 {
        let r = jar.send(app.addr, "GET", "/get?key=k").await.expect("get");
        assert_eq!(r.body, "v");
        assert_eq!(r.set_cookies().len(), 1, "a persistent cookie slides");
    }
    let stats = custom.stats();
    assert!(
        stats.cache_hits >= 2,
        "reads of an unchanged version hit the near cache: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_serves_the_shop_and_restarts_from_disk() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let backend = Backend::Embedded {
        node: NodeConfig {
            id: 1,
            listen: addr.clone(),
            data_dir: dir.path().join("store"),
            peers: vec![Peer { id: 1, addr }],
            groups: 2,
            replicas: 1,
            raft: RaftTuning {
                heartbeat_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                ..RaftTuning::default()
            },
            sessions: SessionDefaults::default(),
            namespaces: Default::default(),
            tls: None,
            redis: Default::default(),
        },
    };
    let store = Steadfast::start(backend.clone()).await.expect("embedded");
    assert!(store.node().is_some());
    let app = App::serve(shop::app(shop::layer(store.client().clone()), "emb")).await;
    let mut jar = Jar::default();
    let r = jar
        .send(app.addr, "POST", "/basket/add?item=book")
        .await
        .expect("add");
    assert_eq!(r.status, 200, "{r:?}");
    app.stop();
    store.shutdown().await;

    tracing::info!("--- the same switch, restarted on the same data");
    let store = restart(backend).await;
    let app = App::serve(shop::app(shop::layer(store.client().clone()), "emb")).await;
    let r = jar.send(app.addr, "GET", "/basket").await.expect("basket");
    assert_eq!(r.body, "emb: user=- basket=[book]\n");
    store.shutdown().await;
}

/// Reopening sled right after a shutdown can briefly find the old instance's lock.
async fn restart(backend: Backend) -> Steadfast {
    for _ in 0..50 {
        match Steadfast::start(backend.clone()).await {
            Ok(s) => return s,
            Err(e) => {
                tracing::info!(error = %e, "embedded restart: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("the embedded node did not restart");
}
