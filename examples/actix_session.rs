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

use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{web, App, HttpServer};
use serde::Deserialize;
use steadfast::adapters::actix::SteadfastActixStore;
use steadfast::client::{Client, ClientConfig};
use steadfast::tls::{Tls, TlsFiles};

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

/// `--endpoints` (or `STEADFAST_ENDPOINTS`, or the local `up` cluster), with mutual TLS when
/// the `STEADFAST_TLS_*` variables are set.
pub fn client_config(args: &[String]) -> anyhow::Result<ClientConfig> {
    let endpoints = flag(args, "--endpoints")
        .or_else(|| std::env::var("STEADFAST_ENDPOINTS").ok())
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let config = ClientConfig::new(endpoints.split(',').map(str::to_string).collect());
    let var = |name| std::env::var_os(name).map(std::path::PathBuf::from);
    Ok(
        match (
            var("STEADFAST_TLS_CERT"),
            var("STEADFAST_TLS_KEY"),
            var("STEADFAST_TLS_CA"),
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                config.with_tls(Tls::load(&TlsFiles { cert, key, ca })?)
            }
            _ => config,
        },
    )
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
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
