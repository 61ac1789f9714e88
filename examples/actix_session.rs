//! An actix-web app on actix-session 0.11 with steadfast's `SteadfastActixStore`: a visit
//! counter, log in, a basket, log out. What an app on actix's `RedisSessionStore` looks like
//! after the switch (README "Switching from tower-sessions-redis-store / actix
//! RedisSessionStore").
//!
//! Run it against a local cluster (`cargo run --release -- up` in another terminal):
//!
//! ```sh
//! cargo run --release --example actix_session -- --port 8092 &
//! curl -c jar -b jar localhost:8092/                                  # visit 1
//! curl -c jar -b jar -X POST 'localhost:8092/login?user=ann'          # a new session key
//! curl -c jar -b jar -X POST 'localhost:8092/basket/add?item=book'
//! curl -c jar -b jar localhost:8092/basket                            # user=ann basket=[book]
//! curl -c jar -b jar -X POST localhost:8092/logout
//! ```
//!
//! Flags: `--port P` (default 8092), `--endpoints a:p,b:p` (default `STEADFAST_ENDPOINTS` or
//! 127.0.0.1:7001-7003). With `up --tls`, export the three `STEADFAST_TLS_*` variables `up`
//! prints and the app connects with mutual TLS. The cookie key is made at start, so cookies
//! do not survive a restart of the app (load it from configuration in production).

#[allow(
    clippy::duplicate_mod,
    reason = "tests/it includes several examples, each with this module"
)]
mod common;
use common::{client_config, flag, init_tracing};

use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{web, App, HttpServer};
use serde::Deserialize;
use steadfast::adapters::actix::SteadfastActixStore;
use steadfast::client::Client;

#[derive(Deserialize)]
pub struct Login {
    pub user: String,
}

#[derive(Deserialize)]
pub struct Item {
    pub item: String,
}

/// The session middleware on `store`: plain-HTTP demo cookies (`Secure` off).
pub fn sessions(store: SteadfastActixStore, key: Key) -> SessionMiddleware<SteadfastActixStore> {
    SessionMiddleware::builder(store, key)
        .cookie_secure(false)
        .build()
}

/// The app's routes (the caller wraps them in [`sessions`]).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(visit))
        .route("/login", web::post().to(login))
        .route("/basket", web::get().to(basket))
        .route("/basket/add", web::post().to(add))
        .route("/logout", web::post().to(logout));
}

async fn visit(session: Session) -> actix_web::Result<String> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    Ok(format!("visit {visits}\n"))
}

async fn login(session: Session, query: web::Query<Login>) -> actix_web::Result<String> {
    // A new key at login (session fixation); the old one dies, the data comes along.
    session.renew();
    session.insert("user", &query.user)?;
    Ok(format!("logged in as {}\n", query.user))
}

async fn add(session: Session, query: web::Query<Item>) -> actix_web::Result<String> {
    // Written after the response is built. If a logout won the race meanwhile, steadfast
    // refuses the write (it never re-creates a deleted session) and actix answers 500.
    let mut basket: Vec<String> = session.get("basket")?.unwrap_or_default();
    basket.push(query.item.clone());
    session.insert("basket", &basket)?;
    Ok(format!(
        "added {} ({} in basket)\n",
        query.item,
        basket.len()
    ))
}

async fn basket(session: Session) -> actix_web::Result<String> {
    let user: Option<String> = session.get("user")?;
    let basket: Vec<String> = session.get("basket")?.unwrap_or_default();
    Ok(format!(
        "user={} basket=[{}]\n",
        user.as_deref().unwrap_or("-"),
        basket.join(",")
    ))
}

async fn logout(session: Session) -> String {
    session.purge();
    "logged out\n".into()
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = flag(&args, "--port").map_or(Ok(8092), |p| p.parse())?;
    let client = Client::connect(client_config(&args)?).await?;
    let store = SteadfastActixStore::new(client);
    let key = Key::generate();
    tracing::info!("listening on http://127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions(store.clone(), key.clone()))
            .configure(routes)
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}
