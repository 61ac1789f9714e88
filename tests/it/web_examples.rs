//! The two adapter examples (`examples/axum_tower_sessions.rs`, `examples/actix_session.rs`)
//! end to end on a real cluster: their own routes and session setup, included from the example
//! files, so an example that stops working fails here rather than in a reader's terminal.

use std::net::SocketAddr;

use actix_web::cookie::{Cookie, Key};
use actix_web::{test, App as ActixApp};
use steadfast::adapters::actix::SteadfastActixStore;
use steadfast::adapters::tower_sessions::{session_id, SteadfastStore};
use steadfast::SessionId;
use tower_sessions::session::Id;

use crate::support::{serial, Cluster};
use crate::web_http::{App, Jar};

#[path = "../../examples/axum_tower_sessions.rs"]
#[allow(
    dead_code,
    reason = "the example's main and flag parsing are not used here"
)]
mod axum_tower_sessions;

#[path = "../../examples/actix_session.rs"]
#[allow(
    dead_code,
    reason = "the example's main and flag parsing are not used here"
)]
mod actix_session;

/// One request with the jar's cookies; its body, after checking it succeeded.
async fn call(jar: &mut Jar, addr: SocketAddr, method: &str, path: &str) -> String {
    let r = jar.send(addr, method, path).await.expect(path);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    r.body
}

/// The steadfast id in tower-sessions' cookie.
fn tower_session(jar: &Jar) -> SessionId {
    session_id(
        &jar.get("id")
            .expect("cookie")
            .parse::<Id>()
            .expect("tower id"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_sessions_example_counts_logs_in_and_out() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let store = SteadfastStore::new(cluster.client().await);
    let app = App::serve(axum_tower_sessions::app(store)).await;
    let a = app.addr;
    let mut jar = Jar::default();

    tracing::info!("--- visits count in the store");
    assert_eq!(call(&mut jar, a, "GET", "/").await, "visit 1\n");
    assert_eq!(call(&mut jar, a, "GET", "/").await, "visit 2\n");
    let anonymous = tower_session(&jar);
    assert!(client.get(anonymous).await.expect("get").is_some());

    tracing::info!("--- login: a new id, the old one dead, the data along");
    let body = call(&mut jar, a, "POST", "/login?user=ann").await;
    assert_eq!(body, "logged in as ann\n");
    let logged_in = tower_session(&jar);
    assert_ne!(logged_in, anonymous);
    assert!(client.get(anonymous).await.expect("get").is_none());
    assert_eq!(call(&mut jar, a, "GET", "/").await, "visit 3\n");

    tracing::info!("--- the basket, saved in the handler");
    let body = call(&mut jar, a, "POST", "/basket/add?item=book").await;
    assert_eq!(body, "added book (1 in basket)\n");
    call(&mut jar, a, "POST", "/basket/add?item=pen").await;
    let body = call(&mut jar, a, "GET", "/basket").await;
    assert_eq!(body, "user=ann basket=[book,pen]\n");

    tracing::info!("--- logout: gone from the cluster; the next request starts afresh");
    assert_eq!(call(&mut jar, a, "POST", "/logout").await, "logged out\n");
    assert!(client.get(logged_in).await.expect("get").is_none());
    assert_eq!(
        call(&mut jar, a, "GET", "/basket").await,
        "user=- basket=[]\n"
    );
}

/// One request to the actix app with `cookie`; its body and the session cookie it set (or
/// `cookie` again), after checking it succeeded. (A macro: actix's request type is not
/// re-exported, so a function could not name its service's bounds.)
macro_rules! actix_call {
    ($app:expr, $cookie:expr, $method:expr, $path:expr) => {{
        let cookie: &Option<Cookie<'static>> = $cookie;
        let (method, path): (&str, &str) = ($method, $path);
        let mut req = match method {
            "POST" => test::TestRequest::post(),
            _ => test::TestRequest::get(),
        }
        .uri(path);
        if let Some(c) = cookie {
            req = req.cookie(c.clone());
        }
        let r = test::call_service($app, req.to_request()).await;
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        let set = r
            .response()
            .cookies()
            .find(|c| c.name() == "id")
            .map(Cookie::into_owned);
        let body = test::read_body(r).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        (body, set.or_else(|| cookie.clone()))
    }};
}

#[actix_web::test]
async fn the_actix_session_example_counts_logs_in_and_out() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let store = SteadfastActixStore::new(client);
    let app = test::init_service(
        ActixApp::new()
            .wrap(actix_session::sessions(store, Key::generate()))
            .configure(actix_session::routes),
    )
    .await;
    // The example's cookies are private (encrypted): the test sees the sessions only as a
    // browser does, through what the app answers.
    let none = None;

    tracing::info!("--- visits count in the store");
    let (body, c) = actix_call!(&app, &none, "GET", "/");
    assert_eq!(body, "visit 1\n");
    let (body, anonymous) = actix_call!(&app, &c, "GET", "/");
    assert_eq!(body, "visit 2\n");

    tracing::info!("--- login: a new key, the old one dead, the data along");
    let (body, c) = actix_call!(&app, &anonymous, "POST", "/login?user=ann");
    assert_eq!(body, "logged in as ann\n");
    assert_ne!(c, anonymous, "a new cookie");
    let (body, _) = actix_call!(&app, &anonymous, "GET", "/");
    assert_eq!(
        body, "visit 1\n",
        "the pre-login key starts a fresh session"
    );
    let (body, c) = actix_call!(&app, &c, "GET", "/");
    assert_eq!(body, "visit 3\n");

    tracing::info!("--- the basket");
    actix_call!(&app, &c, "POST", "/basket/add?item=book");
    let (body, c) = actix_call!(&app, &c, "POST", "/basket/add?item=pen");
    assert_eq!(body, "added pen (2 in basket)\n");
    let (body, logged_in) = actix_call!(&app, &c, "GET", "/basket");
    assert_eq!(body, "user=ann basket=[book,pen]\n");

    tracing::info!("--- logout: the session is gone, also for its old cookie");
    let (body, _) = actix_call!(&app, &logged_in, "POST", "/logout");
    assert_eq!(body, "logged out\n");
    let (body, _) = actix_call!(&app, &logged_in, "GET", "/basket");
    assert_eq!(body, "user=- basket=[]\n");
}
