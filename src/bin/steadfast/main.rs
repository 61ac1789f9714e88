//! The `steadfast` command: run a node, start a local cluster, administer it, load-test it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::config::{NodeConfig, Peer};
use steadfast::identity::{ClusterId, StartIdentity};
use steadfast::node::{Node, NodeOptions};
use steadfast::raft::backend::SledBackend;
use steadfast::tls::{DevPki, Tls, TlsFiles};
use steadfast::{Client, SessionId};

#[cfg(feature = "axum")]
mod admin;
mod bench;

#[derive(Parser)]
#[command(
    name = "steadfast",
    version,
    about = "A strongly consistent, Raft-replicated web-session store"
)]
struct Cli {
    /// Threads running the node's (or tool's) tasks. 0, the default, runs everything on one
    /// thread: on a machine with few cores this halves the CPU per request (no wakeups between
    /// worker threads). Give a number (e.g. the core count) for a node leading many busy groups
    /// on a big machine. Disk syncs always run on their own threads.
    #[arg(
        long,
        global = true,
        env = "STEADFAST_WORKER_THREADS",
        default_value_t = 0
    )]
    worker_threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Serve(ServeArgs),
    /// Start a local 3-node cluster on loopback (data kept under --data-dir across restarts).
    Up(UpArgs),
    /// Talk to a running cluster.
    Ctl(CtlArgs),
    /// Closed-loop load generator: throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Install a backup into this node's (empty) data directory; then `serve` as usual.
    Restore(RestoreArgs),
    /// Make a development CA plus node and client certificates for mutual TLS.
    Certs(CertsArgs),
    /// Disaster recovery when a majority is lost for good: make this (stopped) survivor a
    /// one-node cluster under a new cluster id, with everything its log holds.
    Recover(RecoverArgs),
}

#[derive(Args, Debug)]
struct RecoverArgs {
    /// Required: you know the other members are gone for good (if part of the old cluster
    /// still runs, both would accept writes).
    #[arg(long, required = true)]
    force_new_cluster: bool,
    /// The survivor, configured as it was served (its peers and groups); `--cluster-id` names
    /// the new cluster (random if absent).
    #[command(flatten)]
    node: ServeArgs,
}

#[derive(Args, Debug)]
struct CertsArgs {
    /// Directory for ca.pem, ca-key.pem, node.pem, node-key.pem, client.pem, client-key.pem.
    #[arg(long)]
    out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for, comma separated: every
    /// address peers and clients dial.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    hosts: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// A name for the cluster, written into the certificates' common names.
    #[arg(long, default_value = "dev")]
    cluster: String,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// The backup file (`steadfast ctl backup --out FILE`).
    #[arg(long)]
    from: PathBuf,
    /// Only read and validate the backup; print what it holds.
    #[arg(long)]
    check: bool,
    /// The node to restore, configured exactly as it will be served.
    #[command(flatten)]
    node: ServeArgs,
}

/// Every key of the TOML file can also be given as a flag or an environment variable
/// (flag > environment > file > built-in default).
#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "STEADFAST_CONFIG")]
    config: Option<PathBuf>,
    /// Join an existing cluster: never initialize groups, even on an empty data directory
    /// (for nodes added or replacing one; groups come through `ctl voters`/`ctl replace-node`).
    #[arg(long, env = "STEADFAST_JOIN")]
    join: bool,
    /// Address for the admin HTTP listener (/livez, /readyz, /status, /metrics); off if absent.
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
    cluster_id: Option<ClusterId>,
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

#[derive(Args, Debug)]
struct UpArgs {
    /// Where the three nodes keep their data.
    #[arg(long, default_value = "./steadfast-data")]
    data_dir: PathBuf,
    /// Port of node 1; nodes 2 and 3 use the next two.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Number of Raft groups.
    #[arg(long, default_value_t = 8)]
    groups: u32,
    /// Stop the cluster when a node dies instead of restarting it after 3 s.
    #[arg(long)]
    no_restart: bool,
    /// Restore this backup into the (empty) data directory before starting.
    #[arg(long)]
    restore: Option<PathBuf>,
    /// Run with mutual TLS: a development CA and certificates are made under <data-dir>/tls
    /// (kept and reused on later runs).
    #[arg(long)]
    tls: bool,
    /// Redis (RESP) port of node 1; nodes 2 and 3 use the next two.
    #[arg(long, default_value_t = 6380)]
    redis_base_port: u16,
}

/// Where a running cluster is: shared by `ctl` and `bench`.
#[derive(Args, Debug)]
pub struct Endpoints {
    /// Cluster endpoints, comma separated.
    #[arg(
        long = "endpoints",
        env = "STEADFAST_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub list: Vec<String>,
    /// Refuse nodes of any other cluster (default: the first node's cluster).
    #[arg(long, env = "STEADFAST_CLUSTER_ID")]
    pub cluster_id: Option<ClusterId>,
    /// Mutual TLS: this client's certificate (PEM).
    #[arg(long, env = "STEADFAST_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "STEADFAST_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM).
    #[arg(long, env = "STEADFAST_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl Endpoints {
    /// Client settings for these endpoints, with TLS when configured.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new(self.list.clone());
        config.cluster_id = self.cluster_id.clone();
        config.fail_fast = true;
        Ok(match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => config.with_tls(Tls::load(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })?),
            _ => config,
        })
    }
}

#[derive(Args, Debug)]
struct CtlArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Overall deadline per command, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Per group and node: role, leader, term, log and applied index, members.
    Status,
    /// Session operations.
    #[command(subcommand)]
    Session(SessionCmd),
    /// A user's sessions.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Set a group's voters (membership change through joint consensus).
    Voters {
        /// The group.
        group: u32,
        /// The new voters: id (address as configured) or id=addr, e.g. 1 2 4=10.0.0.4:7000.
        #[arg(required = true)]
        voters: Vec<String>,
    },
    /// Move every group replica of node OLD to node NEW (a node started with `serve --join`),
    /// e.g. to replace a node whose disk was lost. Safe to rerun until it reports no work.
    ReplaceNode {
        /// The node leaving.
        old: u64,
        /// The node taking its place.
        new: u64,
        /// NEW's address, unless the cluster's nodes are configured with it.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Write a point-in-time backup of every group (linearizable per group) to a file.
    Backup {
        /// Where to write it (written to FILE.tmp, synced, then renamed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Stream a group's events (created, updated, touched, expired, deleted, rotated).
    Watch {
        /// The group.
        #[arg(long, default_value_t = 0)]
        group: u32,
        /// The first log index to show (0 = everything retained).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
enum PrincipalCmd {
    /// List the live sessions of a user.
    List {
        /// The user name.
        principal: String,
    },
    /// End every session of a user ("log out everywhere").
    Invalidate {
        /// The user name.
        principal: String,
    },
}

#[derive(Subcommand, Debug)]
enum SessionCmd {
    /// Create a session; prints its id and version.
    Create {
        /// Attributes as name=value.
        attrs: Vec<String>,
        /// Use this id instead of a random one.
        #[arg(long)]
        id: Option<SessionId>,
        /// Idle timeout in milliseconds (cluster default if absent).
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Absolute lifetime in milliseconds.
        #[arg(long)]
        lifetime_ms: Option<u64>,
        /// The user this session belongs to.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Move a session to a fresh id; the old id dies (session-fixation defence).
    Rotate {
        /// The session id.
        id: SessionId,
    },
    /// Log a principal in on a session: rotate it and tag it with the principal.
    Login {
        /// The session id.
        id: SessionId,
        /// The user name.
        principal: String,
    },
    /// Print a session as JSON.
    Get {
        /// The session id.
        id: SessionId,
    },
    /// Set (name=value) and remove (--remove name) attributes.
    Put {
        /// The session id.
        id: SessionId,
        /// Attributes as name=value.
        attrs: Vec<String>,
        /// Attributes to remove.
        #[arg(long)]
        remove: Vec<String>,
        /// Only if the session is at this version (compare-and-set).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Extend a session's idle deadline.
    Touch {
        /// The session id.
        id: SessionId,
    },
    /// Delete a session.
    Delete {
        /// The session id.
        id: SessionId,
        /// Only if the session is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
}

/// Exit codes (README "Exit codes"): 0 done; 1 failed (nothing happened, or a definite answer
/// such as a version conflict); 2 bad usage; 3 the outcome is unknown (a write that may have
/// been applied); 4 not found.
const EXIT_FAILED: u8 = 1;
const EXIT_UNKNOWN: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "steadfast: {}", one_line(&e));
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes on one line, each cause once (a cause whose text its parent already
/// carries is left out).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        match cause.downcast_ref::<steadfast::Error>() {
            Some(steadfast::Error::Timeout) => return EXIT_UNKNOWN,
            Some(steadfast::Error::NotFound) => return EXIT_NOT_FOUND,
            _ => {}
        }
        if cause.downcast_ref::<NotFound>().is_some() {
            return EXIT_NOT_FOUND;
        }
    }
    EXIT_FAILED
}

/// A thing asked for does not exist (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

/// `--worker-threads`, for `up` to hand to its nodes.
static WORKER_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    WORKER_THREADS.get_or_init(|| cli.worker_threads);
    let runtime = steadfast::runtime::build(cli.worker_threads)?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Serve(args) => serve(args).await,
            Cmd::Up(args) => up(args).await,
            Cmd::Ctl(args) => ctl(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Restore(args) => restore(args).await,
            Cmd::Certs(args) => certs(args),
            Cmd::Recover(args) => recover(args).await,
        }
    })
}

fn load_config(args: ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut table: toml::Table = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.parse()
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut set = |key: &str, value: toml::Value| {
        table.insert(key.to_string(), value);
    };
    if let Some(v) = args.id {
        set("id", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.listen {
        set("listen", toml::Value::String(v));
    }
    if let Some(v) = &args.data_dir {
        set("data_dir", toml::Value::String(v.display().to_string()));
    }
    if let Some(v) = args.peers {
        let peers = parse_peers(&v)?;
        set("peers", toml::Value::try_from(peers)?);
    }
    if let Some(v) = args.groups {
        set("groups", toml::Value::Integer(v.into()));
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        let files = steadfast::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        set("tls", toml::Value::try_from(files)?);
    }
    if let Some(v) = args.replicas {
        set("replicas", toml::Value::Integer(v.into()));
    }
    let sub = |table: &mut toml::Table, section: &str, key: &str, v: Option<u64>| {
        if let Some(v) = v {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                t.insert(key.to_string(), toml::Value::Integer(v as i64));
            }
        }
    };
    sub(&mut table, "raft", "heartbeat_ms", args.heartbeat_ms);
    sub(
        &mut table,
        "raft",
        "election_timeout_min_ms",
        args.election_timeout_min_ms,
    );
    sub(
        &mut table,
        "raft",
        "election_timeout_max_ms",
        args.election_timeout_max_ms,
    );
    sub(
        &mut table,
        "raft",
        "snapshot_every_logs",
        args.snapshot_every_logs,
    );
    sub(&mut table, "raft", "pipeline_depth", args.pipeline_depth);
    sub(
        &mut table,
        "sessions",
        "idle_timeout_ms",
        args.idle_timeout_ms,
    );
    sub(
        &mut table,
        "sessions",
        "expire_tick_ms",
        args.expire_tick_ms,
    );
    let mut default_ns = toml::Table::new();
    if let Some(v) = args.max_sessions_per_group {
        default_ns.insert(
            "max_sessions_per_group".into(),
            toml::Value::Integer(v as i64),
        );
    }
    if let Some(v) = args.max_sessions_per_principal {
        default_ns.insert(
            "max_sessions_per_principal".into(),
            toml::Value::Integer(v as i64),
        );
    }
    if let Some(v) = args.when_full {
        default_ns.insert("when_full".into(), toml::Value::String(v));
    }
    if let Some(v) = args.when_principal_full {
        default_ns.insert("when_principal_full".into(), toml::Value::String(v));
    }
    if let Some(v) = args.redis_delete_grace_ms {
        default_ns.insert(
            "redis_delete_grace_ms".into(),
            toml::Value::Integer(v as i64),
        );
    }
    for (key, value) in [
        ("listen", args.redis_listen),
        ("password", args.redis_password),
    ] {
        if let (Some(v), Some(toml::Value::Table(redis))) = (
            value,
            Some(
                table
                    .entry("redis")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            ),
        ) {
            redis.insert(key.into(), toml::Value::String(v));
        }
    }
    if !default_ns.is_empty() {
        let namespaces = table
            .entry("namespaces")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = namespaces {
            let entry = t
                .entry("default")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(d) = entry {
                d.extend(default_ns);
            }
        }
    }
    for (key, flag) in [
        ("id", "--id"),
        ("listen", "--listen"),
        ("data_dir", "--data-dir"),
        ("peers", "--peers"),
    ] {
        if !table.contains_key(key) {
            bail!("{flag} is missing (or `{key}` in the --config file)");
        }
    }
    Ok(NodeConfig::from_toml(&toml::to_string(&table)?)?)
}

fn parse_peers(items: &[String]) -> anyhow::Result<Vec<Peer>> {
    items
        .iter()
        .map(|item| {
            let (id, addr) = item
                .split_once('=')
                .with_context(|| format!("peer {item:?} is not id=addr"))?;
            Ok(Peer {
                id: id
                    .trim()
                    .parse()
                    .with_context(|| format!("peer id {id:?}"))?,
                addr: addr.trim().to_string(),
            })
        })
        .collect()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let join = args.join;
    let insecure = args.insecure;
    let cluster_id = args.cluster_id.clone();
    let admin_listen = args.admin_listen.clone();
    let config = load_config(args)?;
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
    // Bind before creating the storage: a first start that fails after creating it would make
    // the next start look like a restart and never initialize the groups.
    let (connector, listener) = steadfast::tls::bind(&config.listen, tls.as_ref())
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let identity = steadfast::identity::establish(StartIdentity {
        config: &config,
        cluster_id,
        join,
        connector: connector.clone(),
    })
    .await?;
    let data_dir = config.data_dir.clone();
    if let Some(addr) = &config.redis.listen {
        if tls.is_none() && !insecure && !is_loopback(addr) {
            bail!("refusing to serve Redis clients over plain TCP on {addr}; configure TLS or pass --insecure");
        }
    }
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
    let node = Node::start(NodeOptions {
        config,
        backend: Arc::new(backend),
        clock: Arc::new(steadfast::clock::SystemClock),
        connector,
        listener,
        bootstrap: fresh && !join,
        cluster_id: identity.cluster_id,
    })
    .await?;
    let resp = match resp {
        Some(bound) => Some(bound.start().await.context("starting the Redis listener")?),
        None => None,
    };
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = match admin_listen {
        Some(addr) => Some(serve_admin(&addr, &node, stopping.clone()).await?),
        None => None,
    };
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        failed = node.failed() => Some(failed),
    };
    stopping.store(true, std::sync::atomic::Ordering::Release);
    if let Some((group, why)) = failure {
        // Fail-stop: a node with a dead group is useless to its cluster; exit for a supervisor.
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
    if let Some(admin) = admin {
        admin.abort();
    }
    if let Some(resp) = resp {
        resp.abort();
    }
    node.shutdown().await;
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
    stopping: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener {addr}"))?;
    tracing::info!(%addr, "admin HTTP listening");
    let router = admin::router(admin::Admin {
        node: node.observer(),
        prometheus,
        stopping,
    });
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "admin HTTP stopped");
        }
    }))
}

#[cfg(not(feature = "axum"))]
async fn serve_admin(
    _addr: &str,
    _node: &Node,
    _stopping: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    bail!("--admin-listen needs the `axum` feature (on by default)")
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    if args.out.join("ca.pem").exists() {
        bail!(
            "{} already holds a CA; pick another directory (a new CA would not trust the \
             certificates it signed)",
            args.out.display()
        );
    }
    let pki = dev_pki(&args.cluster, &args.hosts, args.days)?;
    let (node, client) = pki.write_to(&args.out)?;
    println!(
        "wrote a development CA and certificates to {}",
        args.out.display()
    );
    println!(
        "nodes:   --tls-cert {} --tls-key {} --tls-ca {}",
        node.cert.display(),
        node.key.display(),
        node.ca.display()
    );
    println!(
        "clients: --tls-cert {} --tls-key {} --tls-ca {}",
        client.cert.display(),
        client.key.display(),
        client.ca.display()
    );
    println!(
        "keep ca-key.pem offline; node.pem is valid for {}",
        args.hosts.join(", ")
    );
    Ok(())
}

fn dev_pki(cluster: &str, hosts: &[String], days: u32) -> anyhow::Result<DevPki> {
    anyhow::ensure!(
        (1..=36_500).contains(&days),
        "--days must be 1..=36500, not {days}"
    );
    let now = time::OffsetDateTime::now_utc();
    let until = now
        .checked_add(time::Duration::days(days.into()))
        .context("--days reaches past what a certificate can say")?;
    Ok(DevPki::generate(
        cluster,
        hosts,
        now - time::Duration::hours(1),
        until,
    )?)
}

/// `up --tls`: the development certificates under `dir/tls`, made on first use.
fn up_tls(dir: &std::path::Path) -> anyhow::Result<(TlsFiles, TlsFiles)> {
    let tls_dir = dir.join("tls");
    if steadfast::tls::DEV_PKI_FILES
        .iter()
        .all(|f| tls_dir.join(f).exists())
    {
        return Ok(DevPki::files(&tls_dir));
    }
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    Ok(dev_pki("local", &hosts, 365)?.write_to(&tls_dir)?)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let tls = if args.tls { Some(up_tls(&dir)?) } else { None };
    let addrs: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", args.base_port + i))
        .collect();
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let exe = std::env::current_exe()?;
    // Every node of this local cluster records the same cluster id; a new cluster draws one.
    let cluster_id = match steadfast::identity::load(&dir.join("node1"))? {
        Some(identity) if args.restore.is_none() => identity.cluster_id,
        _ => ClusterId::random("local"),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut supervisors = Vec::new();
    if let Some(backup) = &args.restore {
        for (i, addr) in addrs.iter().enumerate() {
            let status = std::process::Command::new(&exe)
                .arg("restore")
                .arg("--from")
                .arg(backup)
                .args(["--id", &(i + 1).to_string(), "--listen", addr])
                .arg("--data-dir")
                .arg(dir.join(format!("node{}", i + 1)))
                .args(["--peers", &peers.join(","), "--groups"])
                .arg(args.groups.to_string())
                .args(["--cluster-id", cluster_id.as_str()])
                .status()?;
            if !status.success() {
                bail!("restoring node {} failed", i + 1);
            }
        }
    }
    for (i, addr) in addrs.iter().enumerate() {
        let node_dir = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&node_dir)?;
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("serve")
            .args(["--id", &(i + 1).to_string(), "--listen", addr])
            .arg("--data-dir")
            .arg(&node_dir)
            .args([
                "--peers",
                &peers.join(","),
                "--groups",
                &args.groups.to_string(),
                "--cluster-id",
                cluster_id.as_str(),
                "--redis-listen",
                &format!("127.0.0.1:{}", args.redis_base_port + i as u16),
                "--worker-threads",
                &WORKER_THREADS.get().copied().unwrap_or(0).to_string(),
            ])
            .kill_on_drop(true);
        for var in [
            "STEADFAST_NODE_TLS_CERT",
            "STEADFAST_NODE_TLS_KEY",
            "STEADFAST_NODE_TLS_CA",
        ] {
            // Only `--tls` decides whether these nodes use TLS, not the caller's shell.
            command.env_remove(var);
        }
        if let Some((node, _)) = &tls {
            command
                .arg("--tls-cert")
                .arg(&node.cert)
                .arg("--tls-key")
                .arg(&node.key)
                .arg("--tls-ca")
                .arg(&node.ca);
        }
        let spec = NodeProcess {
            number: i + 1,
            command,
            log: node_dir.join("node.log"),
            restart: !args.no_restart,
        };
        supervisors.push(tokio::spawn(supervise(spec, stop_rx.clone())));
    }
    let client_tls = match &tls {
        Some((_, client)) => Some(Tls::load(client)?),
        None => None,
    };
    let client = wait_ready(&addrs, client_tls).await?;
    println!(
        "steadfast: local 3-node cluster is up ({} groups), data under {}",
        args.groups,
        dir.display()
    );
    println!("endpoints: {}", addrs.join(","));
    if let Some((_, client)) = &tls {
        println!("mutual TLS is on; clients need, in every terminal:");
        println!(
            "  export STEADFAST_TLS_CERT={} STEADFAST_TLS_KEY={} STEADFAST_TLS_CA={}",
            client.cert.display(),
            client.key.display(),
            client.ca.display()
        );
    }
    let (id, w) = client
        .create(
            Attributes::from([("demo".into(), b"hello".to_vec())]),
            CreateOptions::default(),
        )
        .await?;
    println!("demo session created: {id} (version {})", w.version);
    println!("try, in another terminal:");
    println!("  steadfast ctl status");
    println!("  steadfast ctl session create user=ann cart=book");
    println!("  steadfast ctl session get {id}");
    println!(
        "  steadfast ctl session put {id} cart=book,pen --if-version {}",
        w.version
    );
    println!("  steadfast bench --clients 64 --duration-secs 10");
    if tls.is_none() {
        println!(
            "  redis-cli -p {} set greeting hello   # Redis clients: ports {}-{}",
            args.redis_base_port,
            args.redis_base_port,
            args.redis_base_port + 2
        );
    } else {
        println!(
            "  redis-cli -p {} --tls --cert $STEADFAST_TLS_CERT --key $STEADFAST_TLS_KEY --cacert $STEADFAST_TLS_CA ping",
            args.redis_base_port
        );
    }
    println!(
        "node logs: {}/node*/node.log; Ctrl-C stops the cluster (sessions are kept on disk)",
        dir.display()
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for s in supervisors {
        s.await??;
    }
    Ok(())
}

/// One node of `up`, and how to (re)start it.
struct NodeProcess {
    number: usize,
    command: tokio::process::Command,
    log: std::path::PathBuf,
    restart: bool,
}

/// Runs a node; if it dies (say, `kill -9` in a demo), reports it and restarts it on the same
/// data after a pause, until `stop` flips.
async fn supervise(
    mut node: NodeProcess,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        node.command.stdout(log.try_clone()?).stderr(log);
        let mut child = node.command.spawn().context("starting a node")?;
        tokio::select! {
            _ = stop.changed() => {
                child.start_kill()?;
                child.wait().await?;
                return Ok(());
            }
            status = child.wait() => {
                let status = status?;
                if !node.restart {
                    bail!("node {} exited ({status}); see {}", node.number, node.log.display());
                }
                eprintln!("steadfast up: node {} exited ({status}); restarting it in 3 s", node.number);
            }
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}

async fn wait_ready(addrs: &[String], tls: Option<Tls>) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(addrs.to_vec());
    config.tls = tls;
    let client = Client::connect(config)
        .await
        .context("connecting to the local cluster")?;
    for _ in 0..200 {
        let statuses = client.status().await;
        let led: BTreeSet<u32> = statuses
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .flatten()
            .filter(|g| g.role == "Leader")
            .map(|g| g.group.0)
            .collect();
        if led.len() as u32 == client.topology().groups {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the cluster did not elect leaders for every group within 20 s")
}

fn parse_attrs(items: &[String]) -> anyhow::Result<Attributes> {
    items
        .iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .with_context(|| format!("attribute {a:?} is not name=value"))?;
            Ok((k.to_string(), v.as_bytes().to_vec()))
        })
        .collect()
}

async fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    let mut config = args.endpoints.client_config()?;
    config.request_timeout = Duration::from_millis(args.timeout_ms);
    if matches!(
        args.command,
        CtlCmd::Voters { .. } | CtlCmd::ReplaceNode { .. } | CtlCmd::Backup { .. }
    ) {
        // One attempt may take long (catching a new voter up, encoding a large image); a
        // retry would start the same work over on the node, which keeps running the first.
        config.attempt_timeout = config.request_timeout;
    }
    let client = Client::connect(config).await.context("connecting")?;
    match args.command {
        CtlCmd::Status => {
            if let Some(cluster) = client.cluster_id() {
                println!("cluster {cluster}");
            }
            println!(
                "{:<6} {:<5} {:<10} {:<7} {:<6} {:<9} {:<9} {:<9} members",
                "group", "node", "role", "leader", "term", "last_log", "applied", "sessions"
            );
            for (addr, result) in client.status().await {
                match result {
                    Ok(groups) => {
                        for g in groups {
                            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                            println!(
                                "{:<6} {:<5} {:<10} {:<7} {:<6} {:<9} {:<9} {:<9} {:?}",
                                g.group.to_string(),
                                g.node,
                                g.role,
                                opt(g.leader),
                                g.term,
                                opt(g.last_log_index),
                                opt(g.applied_index),
                                g.sessions,
                                g.members
                            );
                        }
                    }
                    Err(e) => println!("{addr}: unreachable ({e})"),
                }
            }
        }
        CtlCmd::Session(cmd) => session_cmd(&client, cmd).await?,
        CtlCmd::Principal(PrincipalCmd::List { principal }) => {
            for id in client.sessions_of(&principal).await? {
                println!("{id}");
            }
        }
        CtlCmd::Principal(PrincipalCmd::Invalidate { principal }) => {
            let n = client.invalidate_principal(&principal).await?;
            println!("ended {n} sessions of {principal}");
        }
        CtlCmd::Backup { out } => backup(&client, &out).await?,
        CtlCmd::Voters { group, voters } => {
            let voters = parse_voters(&voters)?;
            let m = client
                .change_membership(steadfast::GroupId(group), &voters)
                .await?;
            println!(
                "group {group}: voters {:?} learners {:?} (log index {})",
                m.voters,
                m.learners,
                m.log_index.map_or("-".into(), |i| i.to_string())
            );
        }
        CtlCmd::ReplaceNode { old, new, addr } => {
            let patience = Duration::from_millis(args.timeout_ms);
            replace_node(&client, (old, new), addr.unwrap_or_default(), patience).await?
        }
        CtlCmd::Watch { group, from, limit } => {
            use futures_util::StreamExt;
            let stream = client.watch(steadfast::GroupId(group), from);
            let mut stream = std::pin::pin!(stream);
            let mut seen = 0;
            while let Some(event) = stream.next().await {
                let e = event?;
                println!("{} {} {:?}", e.index, e.at_ms, e.kind);
                seen += 1;
                if limit.is_some_and(|l| seen >= l) {
                    break;
                }
            }
        }
    }
    Ok(())
}

async fn backup(client: &Client, out: &std::path::Path) -> anyhow::Result<()> {
    use steadfast::clock::Clock;
    let groups = client.topology().groups;
    let mut records = Vec::new();
    let mut sessions = 0;
    for g in 0..groups {
        let record = client
            .backup_group(steadfast::GroupId(g))
            .await
            .with_context(|| format!("backing up group {g}"))?;
        let image: steadfast::backup::GroupImage =
            steadfast::codec::decode(&record, record.len()).context("checking the image")?;
        println!(
            "group {g}: {} sessions at log index {} ({} bytes)",
            image.state.sessions.len(),
            image.index,
            record.len()
        );
        sessions += image.state.sessions.len();
        records.push(record);
    }
    let header = steadfast::backup::BackupHeader {
        format: steadfast::backup::BACKUP_FORMAT,
        groups,
        taken_at_ms: steadfast::clock::SystemClock.now_ms(),
    };
    let bytes = steadfast::backup::encode(&header, &records);
    steadfast::backup::decode(&bytes).context("re-reading the backup")?;
    let tmp = out.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, out)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    println!(
        "backup of {groups} groups, {sessions} sessions, {} bytes written to {}",
        bytes.len(),
        out.display()
    );
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let backup = steadfast::backup::decode(&bytes)
        .with_context(|| format!("reading {}", args.from.display()))?;
    for g in &backup.groups {
        println!(
            "group {}: {} sessions at log index {}",
            g.group,
            g.state.sessions.len(),
            g.index
        );
    }
    if args.check {
        println!("backup is valid ({} groups)", backup.header.groups);
        return Ok(());
    }
    let wanted = args.node.cluster_id.clone();
    let config = load_config(args.node)?;
    let cluster_id =
        wanted.unwrap_or_else(|| steadfast::restore::restored_cluster_id(&backup, &config));
    let restored = steadfast::restore::restore_node(&backup, &config, cluster_id.clone()).await?;
    println!(
        "node {}: restored {restored} group replicas into {} as cluster {cluster_id}; start it \
         with `steadfast serve` (same settings)",
        config.id,
        config.data_dir.display()
    );
    Ok(())
}

async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.force_new_cluster, "recover needs --force-new-cluster");
    let cluster_id = args
        .node
        .cluster_id
        .clone()
        .unwrap_or_else(|| ClusterId::random("recovered"));
    let config = load_config(args.node)?;
    let done = steadfast::recover::force_new_cluster(&config, cluster_id).await?;
    for g in &done.groups {
        let last = g.last_log.map_or("empty log".to_string(), |(t, i)| {
            format!("last log term {t} index {i}")
        });
        println!(
            "group {}: {last}; {} {} kept",
            g.group.0,
            g.sessions,
            if g.sessions == 1 {
                "session"
            } else {
                "sessions"
            }
        );
    }
    let c = &done.config;
    println!(
        "node {} is now the one-node cluster {}; its old directory is kept at {}",
        c.id,
        done.cluster_id,
        done.kept.display()
    );
    println!(
        "start it with: steadfast serve --id {id} --listen {listen} --data-dir {dir} --peers \
         {id}={addr} --groups {groups} --replicas 1",
        id = c.id,
        listen = c.listen,
        dir = c.data_dir.display(),
        addr = c.peers[0].addr,
        groups = c.groups
    );
    println!(
        "then add nodes with `serve --join` and `ctl voters` / `ctl replace-node`; the old members \
         are refused by cluster id"
    );
    Ok(())
}

fn parse_voters(items: &[String]) -> anyhow::Result<Vec<(u64, String)>> {
    items
        .iter()
        .map(|item| {
            let (id, addr) = item.split_once('=').unwrap_or((item, ""));
            let id = id
                .trim()
                .parse()
                .with_context(|| format!("voter {item:?} is not id or id=addr"))?;
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}

/// Each group's voters as its leader reports them (the leader of the highest term seen),
/// waiting up to `patience` for groups that are electing one.
async fn current_voters(client: &Client, patience: Duration) -> anyhow::Result<Vec<Vec<u64>>> {
    let groups = client.topology().groups;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let mut best: Vec<Option<(u64, Vec<u64>)>> = vec![None; groups as usize];
        for (_, status) in client.status().await {
            for s in status.into_iter().flatten() {
                let slot = &mut best[s.group.0 as usize];
                if s.role == "Leader" && slot.as_ref().is_none_or(|(term, _)| *term < s.term) {
                    *slot = Some((s.term, s.members));
                }
            }
        }
        match best.iter().position(Option::is_none) {
            None => return Ok(best.into_iter().flatten().map(|(_, v)| v).collect()),
            Some(g) if tokio::time::Instant::now() >= deadline => {
                bail!("group {g} has no reachable leader; retry later")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn replace_node(
    client: &Client,
    (old, new): (u64, u64),
    addr: String,
    patience: Duration,
) -> anyhow::Result<()> {
    if old == new {
        bail!("old and new node are the same");
    }
    let mut changed = 0;
    for (g, voters) in current_voters(client, patience)
        .await?
        .into_iter()
        .enumerate()
    {
        if !voters.contains(&old) {
            continue;
        }
        let mut next: Vec<(u64, String)> = voters
            .iter()
            .filter(|v| **v != old && **v != new)
            .map(|v| (*v, String::new()))
            .collect();
        next.push((new, addr.clone()));
        let m = client
            .change_membership(steadfast::GroupId(g as u32), &next)
            .await
            .with_context(|| format!("group {g}"))?;
        println!("group {g}: voters {:?}", m.voters);
        changed += 1;
    }
    println!("node {old} replaced by node {new} in {changed} groups");
    Ok(())
}

async fn session_cmd(client: &Client, cmd: SessionCmd) -> anyhow::Result<()> {
    match cmd {
        SessionCmd::Create {
            attrs,
            id,
            idle_timeout_ms,
            lifetime_ms,
            principal,
        } => {
            let options = CreateOptions {
                principal,
                idle_timeout: idle_timeout_ms.map(Duration::from_millis),
                lifetime: lifetime_ms.map(Duration::from_millis),
            };
            let attrs = parse_attrs(&attrs)?;
            let (id, w) = match id {
                Some(id) => (id, client.create_with_id(id, attrs, options).await?),
                None => client.create(attrs, options).await?,
            };
            println!("{id} version={}", w.version);
        }
        SessionCmd::Get { id } => match client.get(id).await? {
            Some(s) => {
                let attrs: serde_json::Map<String, serde_json::Value> = s
                    .attributes
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect();
                let out = serde_json::json!({
                    "id": id.to_string(), "version": s.version, "attributes": attrs,
                    "created_ms": s.created_ms, "accessed_ms": s.accessed_ms,
                    "idle_timeout_ms": s.idle_timeout_ms, "deadline_ms": s.deadline_ms,
                    "expires_at_ms": s.expires_at_ms, "server_time_ms": s.server_time_ms,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            None => return Err(NotFound(format!("session {id} not found")).into()),
        },
        SessionCmd::Put {
            id,
            attrs,
            remove,
            if_version,
        } => {
            let update = Update {
                set: parse_attrs(&attrs)?,
                remove: remove.into_iter().collect(),
                expected_version: if_version,
                idle_timeout: None,
            };
            let w = client.update(id, update).await?;
            println!("{id} version={}", w.version);
        }
        SessionCmd::Rotate { id } => {
            let (new, w) = client.rotate(id).await?;
            println!("{id} -> {new} version={}", w.version);
        }
        SessionCmd::Login { id, principal } => {
            let (new, w) = client.login(id, &principal).await?;
            println!("{id} -> {new} principal={principal} version={}", w.version);
        }
        SessionCmd::Touch { id } => {
            let w = client.touch(id).await?;
            println!("{id} version={}", w.version);
        }
        SessionCmd::Delete { id, if_version } => {
            let w = client.delete(id, if_version).await?;
            println!("{id} deleted at version={}", w.version);
        }
    }
    Ok(())
}
