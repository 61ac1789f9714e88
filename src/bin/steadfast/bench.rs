//! `steadfast bench`: a closed-loop load generator (the library's `bench` module) and its report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use steadfast::bench::{self, LocalNodes, Report, Workload};
use steadfast::client::ClientConfig;
use steadfast::Client;

use crate::output::out;
use crate::progress::Progress;

/// Load-test settings.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    endpoints: crate::Endpoints,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run (each point, with --standard), in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Bytes per written attribute value (and per preloaded session with --preload).
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Fraction of operations that are reads (0.0..=1.0).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Sessions the load is spread over (created empty), unless --preload is given.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Create this many sessions of --value-bytes first (concurrently) and spread the load
    /// over them: a large population.
    #[arg(long)]
    preload: Option<usize>,
    /// Concurrent creators (and deleters) for the preload and the cleanup.
    #[arg(long, default_value_t = 64)]
    preload_concurrency: usize,
    /// Run the four standard points of ../shared/peers/run.sh (1 and 64 clients, writes and
    /// reads) instead of one point.
    #[arg(long)]
    standard: bool,
    /// Print one line per second of each point (throughput, p50, p99, max), so stalls show.
    #[arg(long)]
    timeline: bool,
    /// Keep the bench's sessions afterwards (by default they are deleted).
    #[arg(long)]
    keep: bool,
    /// After the preload, wait (up to 120 s) until the local nodes use under a quarter of a
    /// core, so the measured run starts after the compaction a bulk load leaves behind.
    #[arg(long)]
    settle: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio must be within 0..=1"
    );
    anyhow::ensure!(
        args.clients > 0 && args.sessions > 0 && args.preload != Some(0),
        "--clients, --sessions and --preload must be positive"
    );
    let mut config: ClientConfig = args.endpoints.client_config()?;
    // A namespace of its own: the cluster's application namespaces' limits do not apply.
    config.namespace = "bench".into();
    let endpoints = config.endpoints.clone();
    let client = Client::connect(config).await.context("connecting")?;
    let (count, bytes) = match args.preload {
        Some(n) => (n, args.value_bytes),
        None => (args.sessions, 0),
    };
    let started = tokio::time::Instant::now();
    let progress = Progress::bar(count as u64, "sessions");
    progress.set_message("preloading");
    let ids = bench::preload(
        &client,
        count,
        bytes,
        args.preload_concurrency,
        progress.position_setter(),
    )
    .await
    .context("preloading sessions")?;
    drop(progress);
    if args.preload.is_some() {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "preload: {count} sessions of {bytes} B in {secs:.1} s ({:.0}/s)",
            count as f64 / secs
        );
    }
    let ids = Arc::new(ids);
    let nodes = LocalNodes::find(&endpoints);
    if args.settle {
        let (waited, quiet) = nodes.settle(0.25, Duration::from_secs(120)).await;
        let secs = waited.as_secs_f64();
        if quiet {
            eprintln!("settle: the local nodes went quiet after {secs:.1} s");
        } else {
            eprintln!(
                "settle: the local nodes were still busy after {secs:.1} s; measuring anyway"
            );
        }
    }
    let points = if args.standard {
        vec![(1, 0.0), (1, 1.0), (64, 0.0), (64, 1.0)]
    } else {
        vec![(args.clients, args.read_ratio)]
    };
    for (clients, read_ratio) in points {
        let workload = Workload {
            clients,
            duration: Duration::from_secs(args.duration_secs),
            value_bytes: args.value_bytes,
            read_ratio,
        };
        let before = nodes.sample();
        let report = bench::run(&client, ids.clone(), &workload).await;
        let after = nodes.sample();
        print_report(&workload, &report, args.timeline)?;
        print_cpu(&before, &after, &report)?;
    }
    if args.keep {
        eprintln!(
            "kept {} bench sessions (namespace \"bench\"); they idle out like any session",
            ids.len()
        );
    } else {
        let deleted = bench::cleanup(&client, &ids, args.preload_concurrency).await;
        eprintln!("cleanup: deleted {deleted} of {} bench sessions", ids.len());
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print_report(w: &Workload, r: &Report, timeline: bool) -> anyhow::Result<()> {
    let secs = r.elapsed.as_secs_f64();
    out!(
        "clients={} duration={secs:.1}s value_bytes={} read_ratio={} errors={}",
        w.clients,
        w.value_bytes,
        w.read_ratio,
        r.errors
    );
    for (name, h) in [("write", &r.writes), ("read", &r.reads)] {
        if h.is_empty() {
            continue;
        }
        out!(
            "{name:<5} ops={:<8} throughput={:>9.0}/s p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            h.len(),
            h.len() as f64 / secs,
            ms(h, 0.50),
            ms(h, 0.99),
            ms(h, 0.999),
            h.max() as f64 / 1000.0,
        );
    }
    if let Some(ratio) = r.worst_second_ratio() {
        out!("slowest second: {:.0} % of the mean rate", ratio * 100.0);
    }
    if timeline {
        for (s, h) in r.timeline.iter().enumerate() {
            out!(
                "  second {s:>3}: {:>7} ops  p50={:.3}ms p99={:.3}ms max={:.3}ms",
                h.len(),
                ms(h, 0.5),
                ms(h, 0.99),
                h.max() as f64 / 1000.0
            );
        }
    }
    Ok(())
}

fn print_cpu(
    before: &[bench::NodeCpu],
    after: &[bench::NodeCpu],
    r: &Report,
) -> anyhow::Result<()> {
    let ops = (r.writes.len() + r.reads.len()).max(1) as f64;
    let mut total = 0.0;
    let mut parts = Vec::new();
    for a in after {
        let Some(b) = before.iter().find(|b| b.pid == a.pid) else {
            continue;
        };
        let used = a.seconds - b.seconds;
        total += used;
        parts.push(format!("{} {used:.2}s", a.endpoint));
    }
    if !parts.is_empty() {
        out!(
            "server cpu: {} = {total:.2}s, {:.0} us per op",
            parts.join(", "),
            total / ops * 1e6
        );
    }
    Ok(())
}
