//! `steadfast up`: a local 3-node cluster on loopback for trying steadfast out. It starts three
//! `steadfast serve` processes of this same binary, supervises them, and stops them on Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use steadfast::client::{ClientConfig, CreateOptions};
use steadfast::command::Attributes;
use steadfast::identity::ClusterId;
use steadfast::tls::{DevPki, Tls, TlsFiles};
use steadfast::Client;

use crate::output::out;

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
/// `steadfast` on the PATH), or `steadfast` if the path cannot be known.
pub fn own_path() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "steadfast".into())
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

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
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
                &crate::WORKER_THREADS
                    .get()
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
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
    out!(
        "steadfast: local 3-node cluster is up ({} groups), data under {}",
        args.groups,
        dir.display()
    );
    out!("endpoints: {}", addrs.join(","));
    if let Some((_, client)) = &tls {
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
    out!("demo session created: {id} (version {})", w.version);
    out!("try, in another terminal:");
    out!("  steadfast ctl status");
    out!("  steadfast ctl session create user=ann cart=book");
    out!("  steadfast ctl session get {id}");
    out!(
        "  steadfast ctl session put {id} cart=book,pen --if-version {}",
        w.version
    );
    out!("  steadfast bench --clients 64 --duration-secs 10");
    if tls.is_none() {
        out!(
            "  redis-cli -p {} set greeting hello   # Redis clients: ports {}-{}",
            args.redis_base_port,
            args.redis_base_port,
            args.redis_base_port + 2
        );
    } else {
        out!(
            "  redis-cli -p {} --tls --cert $STEADFAST_TLS_CERT --key $STEADFAST_TLS_KEY \
             --cacert $STEADFAST_TLS_CA ping",
            args.redis_base_port
        );
    }
    out!(
        "node logs: {}/node*/node.log; Ctrl-C stops the cluster (sessions are kept on disk)",
        dir.display()
    );
    crate::serve::shutdown_signal().await;
    let _ = stop_tx.send(true);
    for s in supervisors {
        s.await??;
    }
    Ok(())
}

async fn wait_ready(addrs: &[String], tls: Option<Tls>) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(addrs.to_vec());
    config.tls = tls;
    let client = Client::connect(config)
        .await
        .context("connecting to the local cluster")?;
    steadfast::cluster::wait_for_leaders(&client, Duration::from_secs(20))
        .await
        .context("waiting for the local cluster")?;
    Ok(client)
}

/// One node of `up`, and how to (re)start it.
struct NodeProcess {
    number: usize,
    command: tokio::process::Command,
    log: PathBuf,
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
                eprintln!(
                    "steadfast up: node {} exited ({status}); restarting it in 3 s",
                    node.number
                );
            }
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}
