//! An axum app on tower-sessions 0.15 with steadfast's `SteadfastStore`: a visit counter, log
//! in, a basket, log out. What an app on `tower-sessions-redis-store` looks like after the
//! switch (README "Switching from tower-sessions-redis-store / actix RedisSessionStore").
//!
//! Run it against a local cluster (`cargo run --release -- up` in another terminal):
//!
//! ```sh
//! cargo run --release --example axum_tower_sessions -- --port 8091 &
//! curl -c jar -b jar localhost:8091/                                  # visit 1
//! curl -c jar -b jar -X POST 'localhost:8091/login?user=ann'          # a new session id
//! curl -c jar -b jar -X POST 'localhost:8091/basket/add?item=book'
//! curl -c jar -b jar localhost:8091/basket                            # user=ann basket=[book]
//! curl -c jar -b jar -X POST localhost:8091/logout
//! ```
//!
//! Flags: `--port P` (default 8091), `--endpoints a:p,b:p` (default `STEADFAST_ENDPOINTS` or
//! 127.0.0.1:7001-7003). With `up --tls`, export the three `STEADFAST_TLS_*` variables `up`
//! prints and the app connects with mutual TLS.

#[allow(
    clippy::duplicate_mod,
    reason = "tests/it includes several examples, each with this module"
)]
mod common;
use common::{client_config, flag, init_tracing};

use std::net::SocketAddr;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use steadfast::adapters::tower_sessions::{save_failure, SaveFailureKind, SteadfastStore};
use steadfast::client::Client;
use tower_sessions::{session, Expiry, Session, SessionManagerLayer};

#[derive(Deserialize)]
pub struct Login {
    pub user: String,
}

#[derive(Deserialize)]
pub struct Item {
    pub item: String,
}

/// A handler's failure as an HTTP answer: a session that ended while the request ran (a logout
/// in another tab won) is `409` with a sentence, not a bare `500`.
#[derive(Debug)]
pub struct AppError(session::Error);

impl From<session::Error> for AppError {
    fn from(e: session::Error) -> Self {
        AppError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let kind = match &self.0 {
            session::Error::Store(e) => save_failure(e),
            session::Error::SerdeJson(_) => None,
        };
        match kind {
            Some(SaveFailureKind::Gone) => (
                StatusCode::CONFLICT,
                "your session ended meanwhile; log in again\n",
            )
                .into_response(),
            Some(SaveFailureKind::Conflict) => {
                (StatusCode::CONFLICT, "changed by another request; retry\n").into_response()
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", self.0)).into_response(),
        }
    }
}

/// The app: routes and the session layer on `store`.
pub fn app(store: SteadfastStore) -> Router {
    // Plain-HTTP demo cookies (`Secure` off); a session ends after 30 idle minutes.
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)));
    Router::new()
        .route("/", get(visit))
        .route("/login", post(login))
        .route("/basket", get(basket))
        .route("/basket/add", post(add))
        .route("/logout", post(logout))
        .layer(sessions)
}

async fn visit(session: Session) -> Result<String, AppError> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(format!("visit {visits}\n"))
}

async fn login(session: Session, Query(Login { user }): Query<Login>) -> Result<String, AppError> {
    // A new id at login (session fixation); the old id dies, the data comes along.
    session.cycle_id().await?;
    session.insert("user", &user).await?;
    Ok(format!("logged in as {user}\n"))
}

async fn add(session: Session, Query(Item { item }): Query<Item>) -> Result<String, AppError> {
    let mut basket: Vec<String> = session.get("basket").await?.unwrap_or_default();
    basket.push(item.clone());
    session.insert("basket", &basket).await?;
    // Saved here rather than after the response, so a logout that won the race is answered
    // with `AppError`'s 409 (steadfast refuses to re-create the session) instead of a 500.
    session.save().await?;
    Ok(format!("added {item} ({} in basket)\n", basket.len()))
}

async fn basket(session: Session) -> Result<String, AppError> {
    let user: Option<String> = session.get("user").await?;
    let basket: Vec<String> = session.get("basket").await?.unwrap_or_default();
    Ok(format!(
        "user={} basket=[{}]\n",
        user.as_deref().unwrap_or("-"),
        basket.join(",")
    ))
}

async fn logout(session: Session) -> Result<String, AppError> {
    session.flush().await?;
    Ok("logged out\n".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = flag(&args, "--port").map_or(Ok(8091), |p| p.parse())?;
    let client = Client::connect(client_config(&args)?).await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(SteadfastStore::new(client)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
