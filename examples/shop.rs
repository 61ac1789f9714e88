//! A tiny shop on steadfast sessions: log in, add to basket, view basket, log out.
//!
//! Run two instances against a local cluster (`cargo run --release -- up` in another terminal):
//!
//! ```sh
//! cargo run --release --example shop -- --port 8081 &
//! cargo run --release --example shop -- --port 8082 &
//! curl -c jar -b jar -X POST 'localhost:8081/login?user=ann'
//! curl -c jar -b jar -X POST 'localhost:8082/basket/add?item=book'
//! curl -c jar -b jar localhost:8081/basket
//! curl -c jar -b jar -X POST localhost:8082/logout              # or /logout/everywhere
//! ```
//!
//! Flags: `--port P` (default 8081), `--endpoints a:p,b:p` (default `STEADFAST_ENDPOINTS` or
//! 127.0.0.1:7001-7003), `--embedded DIR` (run a one-node store inside the app instead, data in
//! DIR, listening on `--store-port`, default 7101).

#[allow(
    clippy::duplicate_mod,
    reason = "tests/it includes several examples, each with this module"
)]
mod common;
use common::{flag, init_tracing};

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Extension, Query};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use steadfast::adapters::axum_layer::{Session, SessionError, SteadfastSessionLayer};
use steadfast::adapters::{Backend, Steadfast};
use steadfast::config::{NodeConfig, Peer, RaftTuning, SessionDefaults};

/// This instance's name, shown in answers so a demo can see which instance served a request.
#[derive(Clone, Debug)]
pub struct Instance(pub String);

#[derive(Deserialize)]
pub struct Login {
    pub user: String,
}

#[derive(Deserialize)]
pub struct Item {
    pub item: String,
}

/// The shop's routes, without the session layer (the caller adds it, plus `Extension(Instance)`).
pub fn routes() -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/basket", get(basket))
        .route("/basket/add", post(add))
        .route("/logout", post(logout))
        .route("/logout/everywhere", post(logout_everywhere))
}

/// The whole app: routes, session layer, instance name.
pub fn app(layer: SteadfastSessionLayer, instance: &str) -> Router {
    routes()
        .layer(layer.clone())
        .layer(Extension(layer))
        .layer(Extension(Instance(instance.to_string())))
}

/// The session layer the shop uses: plain-HTTP demo cookies (`Secure` off), 30-minute idle
/// timeout, 8-hour absolute deadline.
pub fn layer(client: steadfast::Client) -> SteadfastSessionLayer {
    SteadfastSessionLayer::new(client)
        .cookie_name("shop_sid")
        .secure(false)
        .idle_timeout(Duration::from_secs(30 * 60))
        .absolute_timeout(Some(Duration::from_secs(8 * 3600)))
}

async fn login(
    session: Session,
    Extension(Instance(me)): Extension<Instance>,
    Query(Login { user }): Query<Login>,
) -> Result<String, SessionError> {
    // A new id at login (session fixation), tagged with the user for "log out everywhere";
    // the anonymous basket comes along.
    session.login(&user).await?;
    session.insert("user", &user).await?;
    Ok(format!("{me}: logged in as {user}\n"))
}

pub async fn add(
    session: Session,
    Extension(Instance(me)): Extension<Instance>,
    Query(Item { item }): Query<Item>,
) -> Result<String, SessionError> {
    // Compare-and-set read-modify-write: two tabs adding at once both land.
    let count = session
        .update_with_retry(|data| {
            let mut basket: Vec<String> = data.get("basket")?.unwrap_or_default();
            basket.push(item.clone());
            data.insert("basket", &basket)?;
            Ok(basket.len())
        })
        .await?;
    Ok(format!("{me}: added {item} ({count} in basket)\n"))
}

async fn basket(
    session: Session,
    Extension(Instance(me)): Extension<Instance>,
) -> Result<String, SessionError> {
    let user: Option<String> = session.get("user").await?;
    let basket: Vec<String> = session.get("basket").await?.unwrap_or_default();
    Ok(format!(
        "{me}: user={} basket=[{}]\n",
        user.as_deref().unwrap_or("-"),
        basket.join(",")
    ))
}

async fn logout(
    session: Session,
    Extension(Instance(me)): Extension<Instance>,
) -> Result<String, SessionError> {
    session.delete().await?;
    Ok(format!("{me}: logged out\n"))
}

/// Ends every session of the logged-in user, on every device.
async fn logout_everywhere(
    session: Session,
    Extension(layer): Extension<SteadfastSessionLayer>,
    Extension(Instance(me)): Extension<Instance>,
) -> Result<String, SessionError> {
    let Some(user) = session.get::<String>("user").await? else {
        return Ok(format!("{me}: not logged in\n"));
    };
    let ended = layer.invalidate_principal(&user).await?;
    session.delete().await?;
    Ok(format!(
        "{me}: logged {user} out everywhere ({ended} sessions)\n"
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = flag(&args, "--port").map_or(Ok(8081), |p| p.parse())?;
    let backend = if let Some(dir) = flag(&args, "--embedded") {
        let store_port: u16 = flag(&args, "--store-port").map_or(Ok(7101), |p| p.parse())?;
        let addr = format!("127.0.0.1:{store_port}");
        Backend::Embedded {
            node: NodeConfig {
                id: 1,
                listen: addr.clone(),
                data_dir: dir.into(),
                peers: vec![Peer { id: 1, addr }],
                groups: 8,
                replicas: 1,
                raft: RaftTuning::default(),
                sessions: SessionDefaults::default(),
                namespaces: Default::default(),
                tls: None,
                redis: Default::default(),
            },
        }
    } else {
        let endpoints = flag(&args, "--endpoints")
            .or_else(|| std::env::var("STEADFAST_ENDPOINTS").ok())
            .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
        Backend::connect(endpoints.split(',').map(str::to_string).collect())
    };
    let store = Steadfast::start(backend).await?;
    let name = format!("shop-{port}");
    let app = app(layer(store.client().clone()), &name);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tracing::info!("{name} listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    store.shutdown().await;
    Ok(())
}
