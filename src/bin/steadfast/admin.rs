//! The admin HTTP listener of `steadfast serve`: liveness, readiness, status and metrics.
//!
//! - `GET /livez`: 200 while the process answers (no dependency checks: no crash loops).
//! - `GET /readyz`: 200 when every group this node votes in has a known leader (itself only
//!   while a quorum acknowledges it) and shutdown has not begun; otherwise 503. The body lists
//!   each check.
//! - `GET /status`: every hosted group's status as JSON (what `ctl status` shows).
//! - `GET /metrics`: Prometheus text: request counters and latency histograms, plus per-group
//!   gauges (term, leadership, log and applied index, sessions) read at scrape time.
//! - `GET /` and `GET /dashboard`: the HTML dashboard ([`steadfast::dashboard`]), which polls
//!   `GET /dashboard.json` (the monitor's [`Report`](steadfast::dashboard::Report)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use steadfast::dashboard::Monitor;
use steadfast::node::NodeObserver;

/// What the routes read.
#[derive(Clone)]
pub struct Admin {
    /// The node.
    pub node: NodeObserver,
    /// Renders the recorded metrics.
    pub prometheus: PrometheusHandle,
    /// Flipped when shutdown begins, so load balancers drain this node first.
    pub stopping: Arc<AtomicBool>,
    /// Probes the peers and samples the counters for the dashboard.
    pub monitor: Monitor,
}

/// The admin routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/dashboard.json", get(dashboard_json))
        .with_state(admin)
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let mut ready = !admin.stopping.load(Ordering::Acquire);
    let mut body = String::new();
    if !ready {
        body.push_str("shutting down\n");
    }
    let checks = admin.node.readiness();
    if checks.is_empty() {
        body.push_str("votes in no group (yet)\n");
    }
    for (group, check) in checks {
        match check {
            Ok(leader) => body.push_str(&format!("group {}: leader {leader}\n", group.0)),
            Err(why) => {
                ready = false;
                body.push_str(&format!("group {}: {why}\n", group.0));
            }
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn dashboard() -> impl IntoResponse {
    (
        [("cache-control", "no-store")],
        Html(steadfast::dashboard::PAGE),
    )
}

async fn dashboard_json(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [("cache-control", "no-store")],
        Json(admin.monitor.report()),
    )
}

async fn status(State(admin): State<Admin>) -> impl IntoResponse {
    Json(admin.node.status())
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let me = admin.node.id();
    for g in admin.node.status() {
        let group = g.group.0.to_string();
        let gauge = |name: &'static str, value: f64| {
            metrics::gauge!(name, "group" => group.clone()).set(value);
        };
        gauge("steadfast_group_term", g.term as f64);
        gauge(
            "steadfast_group_is_leader",
            f64::from(u8::from(g.leader == Some(me))),
        );
        gauge(
            "steadfast_group_is_voter",
            f64::from(u8::from(g.members.contains(&me))),
        );
        gauge(
            "steadfast_group_last_log_index",
            g.last_log_index.unwrap_or(0) as f64,
        );
        gauge(
            "steadfast_group_applied_index",
            g.applied_index.unwrap_or(0) as f64,
        );
        gauge("steadfast_group_sessions", g.sessions as f64);
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        admin.prometheus.render(),
    )
}
