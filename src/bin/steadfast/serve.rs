//! `steadfast serve`: run one node until SIGTERM/Ctrl-C, or until its storage fails
//! (fail-stop: exit non-zero for a supervisor).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use steadfast::config::{NodeConfig, Overrides, Peer};
use steadfast::identity::{ClusterId, StartIdentity};
use steadfast::node::{Node, NodeOptions};
use steadfast::raft::backend::SledBackend;
use steadfast::tls::{Tls, TlsFiles};

/// Every key of the TOML file can also be given as a flag or an environment variable
/// (flag > environment > file > built-in default).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "STEADFAST_CONFIG")]
    config: Option<PathBuf>,
    /// Join an existing cluster: never initialize groups, even on an empty data directory
    /// (for nodes added or replacing one; groups come through `ctl voters`/`ctl replace-node`).
    #[arg(long, env = "STEADFAST_JOIN")]
    join: bool,
    /// Address for the admin HTTP listener (/livez, /readyz, /status, /metrics, the dashboard at
    /// /); off if absent.
    #[arg(long, env = "STEADFAST_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Address for Redis clients (RESP2/RESP3; `[redis] listen`); off if absent.
    #[arg(long, env = "STEADFAST_REDIS_LISTEN")]
    redis_listen: Option<String>,
    /// The password Redis clients must `AUTH` with (`[redis] password`).
    #[arg(long, env = "STEADFAST_REDIS_PASSWORD")]
    redis_password: Option<String>,
    /// Default namespace: refuse re-creating a Redis key deleted less than this long ago.
    #[arg(long, env = "STEADFAST_REDIS_DELETE_GRACE_MS")]
    redis_delete_grace_ms: Option<u64>,
    /// This node's id (must appear in peers).
    #[arg(long, env = "STEADFAST_ID")]
    id: Option<u64>,
    /// The cluster this node belongs to. Recorded in a new data directory (default: derived
    /// from the peers, groups and replicas; a `--join` node asks its peers) and checked on
    /// every later start.
    #[arg(long, env = "STEADFAST_CLUSTER_ID")]
    pub cluster_id: Option<ClusterId>,
    /// Address to listen on for peers and clients.
    #[arg(long, env = "STEADFAST_LISTEN")]
    listen: Option<String>,
    /// Data directory.
    #[arg(long, env = "STEADFAST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Every member as id=addr, comma separated (e.g. 1=127.0.0.1:7001,2=127.0.0.1:7002).
    #[arg(long, env = "STEADFAST_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Number of Raft groups (fixed at cluster creation).
    #[arg(long, env = "STEADFAST_GROUPS")]
    groups: Option<u32>,
    /// Replicas per group.
    #[arg(long, env = "STEADFAST_REPLICAS")]
    replicas: Option<u32>,
    /// Raft heartbeat interval.
    #[arg(long, env = "STEADFAST_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Raft election timeout, lower bound.
    #[arg(long, env = "STEADFAST_ELECTION_TIMEOUT_MIN_MS")]
    election_timeout_min_ms: Option<u64>,
    /// Raft election timeout, upper bound.
    #[arg(long, env = "STEADFAST_ELECTION_TIMEOUT_MAX_MS")]
    election_timeout_max_ms: Option<u64>,
    /// Snapshot after this many log entries.
    #[arg(long, env = "STEADFAST_SNAPSHOT_EVERY_LOGS")]
    snapshot_every_logs: Option<u64>,
    /// Log entries a group leader keeps in flight; writes arriving meanwhile share the next one.
    #[arg(long, env = "STEADFAST_PIPELINE_DEPTH")]
    pipeline_depth: Option<u64>,
    /// Default session idle timeout.
    #[arg(long, env = "STEADFAST_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// How often leaders advance the replicated clock (expiry precision).
    #[arg(long, env = "STEADFAST_EXPIRE_TICK_MS")]
    expire_tick_ms: Option<u64>,
    /// Default namespace: most sessions per group.
    #[arg(long, env = "STEADFAST_MAX_SESSIONS_PER_GROUP")]
    max_sessions_per_group: Option<u64>,
    /// Default namespace: refuse | evict_oldest when a group is full.
    #[arg(long, env = "STEADFAST_WHEN_FULL")]
    when_full: Option<String>,
    /// Default namespace: most sessions per principal.
    #[arg(long, env = "STEADFAST_MAX_SESSIONS_PER_PRINCIPAL")]
    max_sessions_per_principal: Option<u64>,
    /// Default namespace: refuse | evict_oldest when a principal has too many sessions.
    #[arg(long, env = "STEADFAST_WHEN_PRINCIPAL_FULL")]
    when_principal_full: Option<String>,
    /// Mutual TLS on the data port: this node's certificate (PEM; `[tls] cert`).
    #[arg(long, env = "STEADFAST_NODE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM; `[tls] key`).
    #[arg(long, env = "STEADFAST_NODE_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster CA every peer and client must chain to (PEM; `[tls] ca`).
    #[arg(long, env = "STEADFAST_NODE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Serve plain TCP on a non-loopback address (without TLS anyone who reaches the port can
    /// read and write every session).
    #[arg(long, env = "STEADFAST_INSECURE")]
    insecure: bool,
}

impl ServeArgs {
    /// The flags as configuration overrides (`None`: keep the file's value).
    fn overrides(&self) -> anyhow::Result<Overrides> {
        let peers = match &self.peers {
            Some(items) => Some(
                items
                    .iter()
                    .map(|p| p.parse::<Peer>())
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        };
        Ok(Overrides {
            id: self.id,
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            peers,
            groups: self.groups,
            replicas: self.replicas,
            tls,
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every_logs: self.snapshot_every_logs,
            pipeline_depth: self.pipeline_depth,
            idle_timeout_ms: self.idle_timeout_ms,
            expire_tick_ms: self.expire_tick_ms,
            max_sessions_per_group: self.max_sessions_per_group,
            when_full: self.when_full.clone(),
            max_sessions_per_principal: self.max_sessions_per_principal,
            when_principal_full: self.when_principal_full.clone(),
            redis_delete_grace_ms: self.redis_delete_grace_ms,
            redis_listen: self.redis_listen.clone(),
            redis_password: self.redis_password.clone(),
        })
    }

    /// The node's configuration: the `--config` file (if any) with the flags on top.
    pub fn load_config(&self) -> anyhow::Result<NodeConfig> {
        let text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        let config = NodeConfig::layered(text.as_deref(), &self.overrides()?);
        match (&self.config, config) {
            (Some(path), Err(e)) => Err(e).with_context(|| format!("{}", path.display())),
            (_, config) => Ok(config?),
        }
    }
}

/// `steadfast serve`: the node's settings, plus what `up` needs to tie its nodes to itself.
#[derive(Args, Debug)]
pub struct ServeCmd {
    #[command(flatten)]
    pub node: ServeArgs,
    /// Stop (SIGTERM) when the process with this pid, which started this node, dies, even by
    /// SIGKILL (`up` passes its own pid).
    #[arg(long, hide = true)]
    pub exit_with_parent: Option<u32>,
}

pub async fn run(cmd: ServeCmd) -> anyhow::Result<()> {
    // Registered before anything starts: a SIGTERM during startup still shuts down cleanly.
    let shutdown = shutdown_signal()?;
    if let Some(parent) = cmd.exit_with_parent {
        exit_with_parent(parent)?;
    }
    let args = cmd.node;
    let config = args.load_config()?;
    let tls = transport_tls(&config, args.insecure)?;
    // Bind before creating the storage: a first start that fails after creating it would make
    // the next start look like a restart and never initialize the groups.
    let (connector, listener) = steadfast::tls::bind(&config.listen, tls.as_ref())
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let identity = steadfast::identity::establish(StartIdentity {
        config: &config,
        cluster_id: args.cluster_id.clone(),
        join: args.join,
        connector: connector.clone(),
    })
    .await?;
    let resp = steadfast::resp::bind(&config, tls.as_ref())
        .await
        .context("binding the Redis listener")?;
    let fresh = !config.data_dir.join("sled").exists();
    let backend = SledBackend::open(&config.data_dir)
        .with_context(|| format!("opening storage under {}", config.data_dir.display()))?;
    tracing::info!(
        id = config.id,
        cluster = %identity.cluster_id,
        listen = %config.listen,
        fresh,
        tls = tls.is_some(),
        "starting node"
    );
    let data_dir = config.data_dir.clone();
    let node = Node::start(NodeOptions {
        config,
        backend: Arc::new(backend),
        clock: Arc::new(steadfast::clock::SystemClock),
        connector,
        listener,
        bootstrap: fresh && !args.join,
        cluster_id: identity.cluster_id,
    })
    .await?;
    let resp = match resp {
        Some(bound) => Some(bound.start().await.context("starting the Redis listener")?),
        None => None,
    };
    let listeners = Listeners::start(&args, &node, resp).await?;
    serve_until_stopped(node, listeners, shutdown, &data_dir).await
}

/// The TLS the data port serves with; plain TCP only on loopback or with `--insecure`.
fn transport_tls(config: &NodeConfig, insecure: bool) -> anyhow::Result<Option<Tls>> {
    let tls = match &config.tls {
        Some(files) => Some(Tls::load(files)?),
        None if insecure || is_loopback(&config.listen) => None,
        None => bail!(
            "refusing to serve plain TCP on {}: anyone who reaches it could read and write every \
             session. Configure mutual TLS (--tls-cert, --tls-key, --tls-ca; `steadfast certs` \
             makes a development CA) or pass --insecure",
            config.listen
        ),
    };
    if let Some(addr) = &config.redis.listen {
        if tls.is_none() && !insecure && !is_loopback(addr) {
            bail!(
                "refusing to serve Redis clients over plain TCP on {addr}; configure TLS or pass \
                 --insecure"
            );
        }
    }
    Ok(tls)
}

/// The listeners beside the data port, stopped before the node shuts down.
struct Listeners {
    admin: Option<tokio::task::JoinHandle<()>>,
    resp: Option<tokio::task::JoinHandle<()>>,
    /// Set when shutdown begins, so `/readyz` turns red first.
    stopping: Arc<AtomicBool>,
}

impl Listeners {
    async fn start(
        args: &ServeArgs,
        node: &Node,
        resp: Option<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<Listeners> {
        let stopping = Arc::new(AtomicBool::new(false));
        let admin = match &args.admin_listen {
            Some(addr) => Some(serve_admin(addr, node, stopping.clone()).await?),
            None => None,
        };
        Ok(Listeners {
            admin,
            resp,
            stopping,
        })
    }
}

/// Serves until a signal (a clean shutdown) or a group's storage failure (fail-stop: exit
/// non-zero for a supervisor).
async fn serve_until_stopped(
    node: Node,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let failure = tokio::select! {
        _ = shutdown => None,
        failed = node.failed() => Some(failed),
    };
    listeners.stopping.store(true, Ordering::Release);
    if let Some((group, why)) = failure {
        let line = format!(
            "group {group} stopped ({why}); this node stops too: check its disk and data \
             directory {}, then restart it (or replace the node)",
            data_dir.display()
        );
        tracing::error!("{line}");
        let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
        bail!(line);
    }
    tracing::info!("shutting down");
    for task in [listeners.admin, listeners.resp].into_iter().flatten() {
        task.abort();
    }
    node.shutdown().await;
    Ok(())
}

/// `--exit-with-parent`: the kernel sends this node SIGTERM when its parent dies (a clean
/// shutdown through [`shutdown_signal`]), so `up` killed with SIGKILL leaves no node behind.
#[cfg(target_os = "linux")]
fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};
    set_parent_process_death_signal(Some(Signal::TERM))
        .context("asking to stop with the parent process")?;
    // The parent may have died before the request above: then nobody would send the signal.
    let expected = i32::try_from(parent).ok().and_then(Pid::from_raw);
    if getppid() != expected {
        bail!("the process that started this node (pid {parent}) is gone");
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn exit_with_parent(_parent: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Whether `listen` only accepts connections from this machine.
fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    }
}

#[cfg(feature = "axum")]
async fn serve_admin(
    addr: &str,
    node: &Node,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener {addr}"))?;
    tracing::info!(%addr, "admin HTTP listening");
    let render = prometheus.clone();
    let monitor =
        steadfast::dashboard::Monitor::new(node.observer(), Arc::new(move || render.render()));
    let router = crate::admin::router(crate::admin::Admin {
        node: node.observer(),
        prometheus,
        stopping,
        monitor: monitor.clone(),
    });
    // One task for the listener and the dashboard's monitor: aborting it stops both.
    Ok(tokio::spawn(async move {
        tokio::select! {
            served = axum::serve(listener, router) => {
                if let Err(e) = served {
                    tracing::warn!(error = %e, "admin HTTP stopped");
                }
            }
            () = monitor.run() => {}
        }
    }))
}

#[cfg(not(feature = "axum"))]
async fn serve_admin(
    _addr: &str,
    _node: &Node,
    _stopping: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    bail!("--admin-listen needs the `axum` feature (on by default)")
}

/// A future that resolves on Ctrl-C (SIGINT) or SIGTERM. Both are caught from this call on
/// (not from the first poll), so a signal that arrives while the caller is still starting up
/// is not lost to the default action.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
