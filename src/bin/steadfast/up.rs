//! `steadfast up`: a local 3-node cluster on loopback for trying steadfast out. It starts three
//! `steadfast serve` processes of this same binary, supervises them (restarting one that dies),
//! and stops them when it stops: on Ctrl-C or SIGTERM, on its own error, and (on Linux) when it
//! is killed outright, through the nodes' `--exit-with-parent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use steadfast::client::{ClientConfig, CreateOptions};
use steadfast::command::Attributes;
use steadfast::identity::ClusterId;
use steadfast::tls::{DevPki, Tls, TlsFiles};
use steadfast::Client;
use tokio::task::JoinSet;

use crate::output::{group_line, out};

mod supervise;

/// The namespace of the session `up` creates to show the cluster working.
const DEMO_NAMESPACE: &str = "up-demo";

#[derive(Args, Debug)]
pub struct UpArgs {
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

/// How to run this binary again, as a user would type it: its own path (a fresh clone has no
/// `steadfast` on the PATH; `./target/release/steadfast` when under the current directory), or
/// `steadfast` if the path cannot be known.
pub fn own_path() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "steadfast".into();
    };
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}

/// `up --tls`: the development certificates under `dir/tls`, made on first use.
fn up_tls(dir: &Path) -> anyhow::Result<(TlsFiles, TlsFiles)> {
    let tls_dir = dir.join("tls");
    if steadfast::tls::DEV_PKI_FILES
        .iter()
        .all(|f| tls_dir.join(f).exists())
    {
        return Ok(DevPki::files(&tls_dir));
    }
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    Ok(crate::certs::dev_pki("local", &hosts, 365)?.write_to(&tls_dir)?)
}

/// What `up` starts: the same for every run on one data directory.
struct Plan {
    /// The data directory (absolute), holding `node1`..`node3` (and `tls` with `--tls`).
    dir: PathBuf,
    /// Each node's data-port address.
    addrs: Vec<String>,
    /// Each node's Redis-protocol address.
    redis: Vec<String>,
    /// `--peers` for every node.
    peers: String,
    cluster_id: ClusterId,
    /// The nodes' and the clients' certificates with `--tls`.
    tls: Option<(TlsFiles, TlsFiles)>,
    /// This binary, which the nodes run as `serve`.
    exe: PathBuf,
}

impl Plan {
    fn new(args: &UpArgs) -> anyhow::Result<Plan> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        let dir = std::fs::canonicalize(&args.data_dir)?;
        let addrs: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", u32::from(args.base_port) + i))
            .collect();
        let redis = (0..3)
            .map(|i| format!("127.0.0.1:{}", u32::from(args.redis_base_port) + i))
            .collect();
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        // Every node of this local cluster records the same cluster id; a new cluster draws one.
        let cluster_id = match steadfast::identity::load(&dir.join("node1"))? {
            Some(identity) if args.restore.is_none() => identity.cluster_id,
            _ => ClusterId::random("local"),
        };
        let tls = if args.tls { Some(up_tls(&dir)?) } else { None };
        Ok(Plan {
            addrs,
            redis,
            peers: peers.join(","),
            cluster_id,
            tls,
            exe: std::env::current_exe()?,
            dir,
        })
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}", i + 1))
    }

    /// Refuses to start when a port is taken (by an earlier `up` still running, say): the
    /// node would only fail to bind, again and again.
    fn check_ports(&self) -> anyhow::Result<()> {
        let all: Vec<String> = self.addrs.iter().chain(&self.redis).cloned().collect();
        if let Some((addr, e)) = steadfast::cluster::first_unbindable(&all) {
            bail!(
                "{addr} is not free ({e}): another program (or another `steadfast up`) listens \
                 there; stop it, or choose other ports with --base-port / --redis-base-port"
            );
        }
        Ok(())
    }

    /// `steadfast serve …` for node `i` (0-based).
    fn serve_command(&self, i: usize, groups: u32) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("serve")
            .args(["--id", &(i + 1).to_string(), "--listen", &self.addrs[i]])
            .arg("--data-dir")
            .arg(self.node_dir(i))
            .args(["--peers", &self.peers, "--groups", &groups.to_string()])
            .args(["--cluster-id", self.cluster_id.as_str()])
            .args(["--redis-listen", &self.redis[i]])
            .args(["--exit-with-parent", &std::process::id().to_string()])
            .arg("--worker-threads")
            .arg(
                crate::WORKER_THREADS
                    .get()
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            )
            // Its own process group: Ctrl-C in the terminal reaches `up`, which stops the nodes
            // in order, instead of every node at once behind its back.
            .process_group(0)
            .kill_on_drop(true);
        for var in [
            "STEADFAST_NODE_TLS_CERT",
            "STEADFAST_NODE_TLS_KEY",
            "STEADFAST_NODE_TLS_CA",
        ] {
            // Only `--tls` decides whether these nodes use TLS, not the caller's shell.
            command.env_remove(var);
        }
        if let Some((node, _)) = &self.tls {
            command.arg("--tls-cert").arg(&node.cert);
            command.arg("--tls-key").arg(&node.key);
            command.arg("--tls-ca").arg(&node.ca);
        }
        command
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Caught from here on, so a Ctrl-C or SIGTERM while starting still stops the nodes.
    let stop_signal = crate::serve::shutdown_signal()?;
    tokio::pin!(stop_signal);
    let plan = Plan::new(&args)?;
    plan.check_ports()?;
    if let Some(backup) = &args.restore {
        tokio::select! {
            restored = restore_all(&plan, backup, args.groups) => restored?,
            _ = &mut stop_signal => return Ok(()),
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = JoinSet::new();
    for i in 0..3 {
        std::fs::create_dir_all(plan.node_dir(i))?;
        let node = supervise::NodeProcess {
            number: i + 1,
            command: plan.serve_command(i, args.groups),
            log: plan.node_dir(i).join("node.log"),
            pid_file: plan.node_dir(i).join("node.pid"),
            restart: !args.no_restart,
        };
        nodes.spawn(supervise::supervise(node, stop_rx.clone()));
    }
    let outcome = tokio::select! {
        started = greet(&plan, &args) => match started {
            Ok(()) => tokio::select! {
                _ = &mut stop_signal => Ok(()),
                failed = nodes.join_next() => Err(node_failure(failed)),
            },
            Err(e) => Err(e),
        },
        failed = nodes.join_next() => Err(node_failure(failed)),
        _ = &mut stop_signal => Ok(()),
    };
    let _ = stop_tx.send(true);
    while let Some(stopped) = nodes.join_next().await {
        if let Ok(Err(e)) = stopped {
            tracing::debug!(error = %e, "a node supervisor ended with an error");
        }
    }
    outcome
}

/// Why a node supervisor ended while the cluster was meant to run.
fn node_failure(
    ended: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>,
) -> anyhow::Error {
    match ended {
        Some(Ok(Err(e))) => e,
        Some(Err(e)) => anyhow!(e).context("a node supervisor failed"),
        Some(Ok(Ok(()))) | None => anyhow!("a node stopped"),
    }
}

/// `up --restore`: installs the backup into each node's empty data directory (through
/// `steadfast restore`, quietly), then lists what it held once.
async fn restore_all(plan: &Plan, backup: &Path, groups: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(backup).with_context(|| format!("reading {}", backup.display()))?;
    let decoded = steadfast::backup::decode(&bytes)
        .with_context(|| format!("reading {}", backup.display()))?;
    drop(bytes);
    for (i, addr) in plan.addrs.iter().enumerate() {
        let status = tokio::process::Command::new(&plan.exe)
            .args(["restore", "--quiet", "--from"])
            .arg(backup)
            .args(["--id", &(i + 1).to_string(), "--listen", addr])
            .arg("--data-dir")
            .arg(plan.node_dir(i))
            .args(["--peers", &plan.peers, "--groups", &groups.to_string()])
            .args(["--cluster-id", plan.cluster_id.as_str()])
            .kill_on_drop(true)
            .status()
            .await?;
        if !status.success() {
            bail!("restoring node {} failed", i + 1);
        }
    }
    for g in &decoded.groups {
        out!("{}", group_line(g.group, g.state.sessions.len(), g.index));
    }
    out!(
        "restored {} into the 3 nodes as cluster {}",
        backup.display(),
        plan.cluster_id
    );
    Ok(())
}

/// Waits until the cluster serves, then makes the demo session and prints what to try.
async fn greet(plan: &Plan, args: &UpArgs) -> anyhow::Result<()> {
    let client_tls = match &plan.tls {
        Some((_, client)) => Some(Tls::load(client)?),
        None => None,
    };
    let client = wait_ready(&plan.addrs, client_tls).await?;
    out!(
        "steadfast: local 3-node cluster is up ({} groups), data under {}",
        args.groups,
        plan.dir.display()
    );
    out!("endpoints: {}", plan.addrs.join(","));
    if let Some((_, client)) = &plan.tls {
        out!("mutual TLS is on; clients need, in every terminal:");
        out!(
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
    out!(
        "demo session created: {id} (version {}; namespace {DEMO_NAMESPACE:?}, left in place: \
         it idles out like any session, or `ctl session delete {id}`)",
        w.version
    );
    print_try(plan, args, &id.to_string(), w.version)
}

/// The commands to try, each runnable as printed (this binary's own path).
fn print_try(plan: &Plan, args: &UpArgs, id: &str, version: u64) -> anyhow::Result<()> {
    let sf = own_path();
    out!("try, in another terminal:");
    if args.base_port != 7001 {
        // `ctl` and `bench` look for 7001-7003 unless told.
        out!("  export STEADFAST_ENDPOINTS={}", plan.addrs.join(","));
    }
    out!("  {sf} ctl status");
    out!("  {sf} ctl session create user=ann cart=book");
    out!("  {sf} ctl session get {id}");
    out!("  {sf} ctl session put {id} cart=book,pen --if-version {version}");
    out!("  {sf} bench --clients 64 --duration-secs 10");
    let redis = args.redis_base_port;
    if plan.tls.is_none() {
        out!(
            "  redis-cli -p {redis} set greeting hello   # Redis clients: ports {redis}-{}",
            u32::from(redis) + 2
        );
    } else {
        out!(
            "  redis-cli -p {redis} --tls --cert $STEADFAST_TLS_CERT --key $STEADFAST_TLS_KEY \
             --cacert $STEADFAST_TLS_CA ping"
        );
    }
    let dir = plan.dir.display();
    out!("  kill -9 $(cat {dir}/node1/node.pid)   # up restarts the node on its data after 3 s");
    out!("node logs: {dir}/node*/node.log; Ctrl-C stops the cluster (sessions are kept on disk)");
    Ok(())
}

/// How long `up` waits for its nodes to listen.
const NODES_LOAD_WITHIN: Duration = Duration::from_secs(300);

async fn wait_ready(addrs: &[String], tls: Option<Tls>) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(addrs.to_vec());
    config.tls = tls;
    // The demo session lives in a namespace of its own (the limits of the apps' do not apply).
    config.namespace = DEMO_NAMESPACE.into();
    // A node listens once it has loaded every group: seconds for a large data directory.
    let started = tokio::time::Instant::now();
    let mut told = false;
    let client = loop {
        match Client::connect(config.clone()).await {
            Ok(client) => break client,
            Err(e) if started.elapsed() < NODES_LOAD_WITHIN => {
                if !told && started.elapsed() > Duration::from_secs(3) {
                    out!("steadfast: waiting for the nodes to load their data ({e})");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("connecting to the local cluster"),
        }
    };
    steadfast::cluster::wait_for_leaders(&client, Duration::from_secs(20))
        .await
        .context("waiting for the local cluster")?;
    Ok(client)
}
