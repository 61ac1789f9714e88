//! The actix-session store in an actix-web app on a real cluster, and its contract called
//! directly: an update after a delete never brings the session back.

#![expect(
    clippy::disallowed_types,
    reason = "actix-session's session state is a std HashMap"
)]

use std::collections::HashMap;

use actix_session::config::CookieContentSecurity;
use actix_session::storage::{SessionKey, SessionStore};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, Key};
use actix_web::{test, web, App};
use steadfast::adapters::actix::SteadfastActixStore;
use steadfast::SessionId;

use crate::support::{serial, Cluster};

async fn incr(session: Session) -> actix_web::Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(format!("{}", n + 1))
}

async fn count(session: Session) -> actix_web::Result<String> {
    Ok(format!("{}", session.get::<u64>("n")?.unwrap_or(0)))
}

async fn login(session: Session) -> actix_web::Result<String> {
    session.renew();
    session.insert("user", "ann")?;
    Ok("hi".into())
}

async fn logout(session: Session) -> String {
    session.purge();
    "bye".into()
}

/// The steadfast id inside a signed actix cookie (the value follows a 44-character MAC).
fn steadfast_id(cookie: &Cookie<'_>) -> SessionId {
    cookie.value()[44..].parse().expect("a steadfast id")
}

#[actix_web::test]
async fn actix_session_store_in_an_actix_app() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 4);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let store = SteadfastActixStore::new(cluster.client().await);
    let key = Key::generate();
    let app = test::init_service(
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .cookie_content_security(CookieContentSecurity::Signed)
                    .build(),
            )
            .route("/incr", web::post().to(incr))
            .route("/count", web::get().to(count))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout)),
    )
    .await;

    tracing::info!("--- save on the first change, update afterwards");
    let r = test::call_service(&app, test::TestRequest::post().uri("/incr").to_request()).await;
    assert!(r.status().is_success());
    let mut cookie = r
        .response()
        .cookies()
        .find(|c| c.name() == "id")
        .expect("session cookie")
        .into_owned();
    let first = steadfast_id(&cookie);
    let req = test::TestRequest::post()
        .uri("/incr")
        .cookie(cookie.clone())
        .to_request();
    let body = test::call_and_read_body(&app, req).await;
    assert_eq!(body, "2");
    let view = client.get(first).await.expect("get").expect("live");
    assert_eq!(
        view.attributes["n"], b"2",
        "actix's JSON text, one attribute per key"
    );

    tracing::info!("--- renew at login: a new key, the old one dead");
    let req = test::TestRequest::post()
        .uri("/login")
        .cookie(cookie.clone())
        .to_request();
    let r = test::call_service(&app, req).await;
    assert!(r.status().is_success());
    cookie = r
        .response()
        .cookies()
        .find(|c| c.name() == "id")
        .expect("renewed cookie")
        .into_owned();
    let renewed = steadfast_id(&cookie);
    assert_ne!(renewed, first);
    assert!(client.get(first).await.expect("get").is_none());
    let req = test::TestRequest::get()
        .uri("/count")
        .cookie(cookie.clone())
        .to_request();
    assert_eq!(test::call_and_read_body(&app, req).await, "2");

    tracing::info!("--- purge at logout: gone, and the old cookie gets a fresh session");
    let req = test::TestRequest::post()
        .uri("/logout")
        .cookie(cookie.clone())
        .to_request();
    let r = test::call_service(&app, req).await;
    assert!(r.status().is_success());
    assert!(client.get(renewed).await.expect("get").is_none());
    let req = test::TestRequest::get()
        .uri("/count")
        .cookie(cookie.clone())
        .to_request();
    assert_eq!(test::call_and_read_body(&app, req).await, "0");

    tracing::info!("--- the store contract: update after delete does not resurrect");
    let ttl = CookieDuration::minutes(5);
    let state: HashMap<String, String> = [("cart".to_string(), "\"book\"".to_string())].into();
    let k = store.save(state.clone(), &ttl).await.expect("save");
    let id: SessionId = k.as_ref().parse().expect("hex id");
    assert_eq!(store.load(&k).await.expect("load"), Some(state.clone()));
    let mut more = state.clone();
    more.insert("coupon".into(), "\"x\"".into());
    let k = store.update(k, more.clone(), &ttl).await.expect("update");
    assert_eq!(store.load(&k).await.expect("load"), Some(more.clone()));
    store.delete(&k).await.expect("delete");
    store.delete(&k).await.expect("delete is idempotent");
    let key_text = k.as_ref().to_string();
    assert!(
        store.update(k, more.clone(), &ttl).await.is_err(),
        "an update after delete must fail, not re-save"
    );
    let k = SessionKey::try_from(key_text).expect("key");
    store
        .update_ttl(&k, &ttl)
        .await
        .expect("update_ttl of a gone session is a no-op");
    assert_eq!(store.load(&k).await.expect("load"), None);
    assert!(client.get(id).await.expect("get").is_none());
    let junk = SessionKey::try_from("not-a-steadfast-key".to_string()).expect("key");
    assert_eq!(store.load(&junk).await.expect("load"), None);

    tracing::info!("--- two requests updating different keys of one session both land");
    let k = store.save(state.clone(), &ttl).await.expect("save");
    let text = k.as_ref().to_string();
    let barrier = std::rc::Rc::new(tokio::sync::Barrier::new(2));
    let request = |key: &'static str, delay_ms: u64| {
        let (store, barrier, text) = (store.clone(), barrier.clone(), text.clone());
        // One task per request, as actix-web runs them.
        actix_web::rt::spawn(async move {
            let k = SessionKey::try_from(text).expect("key");
            let mut state = store.load(&k).await.expect("load").expect("live");
            barrier.wait().await;
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            state.insert(key.to_string(), "1".to_string());
            store.update(k, state, &ttl).await.expect("update");
        })
    };
    let (first, second) = (request("x", 0), request("y", 500));
    first.await.expect("first");
    second.await.expect("second");
    let k = SessionKey::try_from(text).expect("key");
    let merged = store.load(&k).await.expect("load").expect("live");
    assert_eq!(
        merged
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        ["cart", "x", "y"].into(),
        "the later update must not drop the earlier one's key"
    );
}
