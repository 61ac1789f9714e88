//! The `steadfast` command: run a node, start a local cluster, administer it, load-test it.
//!
//! Thin by design: each subcommand lives in its own file and turns its flags into calls to the
//! library; this file parses the command line, dispatches, and turns an error into one line on
//! stderr and an exit code.

use clap::{Parser, Subcommand};

#[cfg(feature = "axum")]
mod admin;
mod backup;
mod bench;
mod certs;
mod ctl;
mod endpoints;
mod output;
mod progress;
mod recover;
mod restore;
mod serve;
mod up;

pub use endpoints::Endpoints;

/// A node allocates and frees a buffer per request, entry and message on one thread; glibc's
/// malloc spent a quarter of a loaded node's CPU in its free lists (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// `--worker-threads`, for `up` to hand to its nodes.
pub(crate) static WORKER_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Serve(serve::ServeCmd),
    /// Start a local 3-node cluster on loopback (data kept under --data-dir across restarts).
    Up(up::UpArgs),
    /// Talk to a running cluster.
    Ctl(ctl::CtlArgs),
    /// Closed-loop load generator: throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Install a backup into this node's (empty) data directory; then `serve` as usual.
    Restore(restore::RestoreArgs),
    /// Make a development CA plus node and client certificates for mutual TLS.
    Certs(certs::CertsArgs),
    /// Disaster recovery when a majority is lost for good: make this (stopped) survivor a
    /// one-node cluster under a new cluster id, with everything its log holds.
    Recover(recover::RecoverArgs),
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
        // The reader of our output went away (`| head`): what it wanted, it has.
        Err(e) if e.chain().any(|c| c.is::<output::StdoutClosed>()) => {
            std::process::ExitCode::SUCCESS
        }
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
pub struct NotFound(pub String);

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person; a log file (`up`'s node.log) or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    WORKER_THREADS.get_or_init(|| cli.worker_threads);
    let runtime = steadfast::runtime::build(cli.worker_threads)?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Serve(args) => serve::run(args).await,
            Cmd::Up(args) => up::run(args).await,
            Cmd::Ctl(args) => ctl::run(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Restore(args) => restore::run(args).await,
            Cmd::Certs(args) => certs::run(args),
            Cmd::Recover(args) => recover::run(args).await,
        }
    })
}
