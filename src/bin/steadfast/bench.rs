//! `steadfast bench`: a closed-loop load generator with HDR latency histograms.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::{Client, SessionId};

/// Load-test settings.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    endpoints: crate::Endpoints,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Bytes per written attribute value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Fraction of operations that are reads (0.0..=1.0).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Sessions the load is spread over.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
}

struct Tally {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio must be within 0..=1"
    );
    anyhow::ensure!(
        args.clients > 0 && args.sessions > 0,
        "--clients and --sessions must be positive"
    );
    let client = Client::connect(args.endpoints.client_config()?)
        .await
        .context("connecting")?;
    let mut ids = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        let (id, _) = client
            .create(Attributes::new(), CreateOptions::default())
            .await?;
        ids.push(id);
    }
    let ids: Arc<Vec<SessionId>> = Arc::new(ids);
    let stop = tokio::time::Instant::now() + Duration::from_secs(args.duration_secs);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.clients {
        let (client, ids) = (client.clone(), ids.clone());
        let (value_bytes, read_ratio) = (args.value_bytes, args.read_ratio);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker as u64);
            let mut tally = Tally {
                reads: histogram(),
                writes: histogram(),
                errors: 0,
            };
            while tokio::time::Instant::now() < stop {
                let id = ids[rng.gen_range(0..ids.len())];
                let read = rng.gen_bool(read_ratio);
                let t0 = tokio::time::Instant::now();
                let ok = if read {
                    client.get(id).await.is_ok()
                } else {
                    let value: Vec<u8> = (0..value_bytes).map(|_| rng.gen()).collect();
                    client
                        .update(id, Update::default().set("v", value))
                        .await
                        .is_ok()
                };
                let micros = t0.elapsed().as_micros() as u64;
                let h = if read {
                    &mut tally.reads
                } else {
                    &mut tally.writes
                };
                if ok {
                    h.saturating_record(micros.max(1));
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }));
    }
    let mut total = Tally {
        reads: histogram(),
        writes: histogram(),
        errors: 0,
    };
    for t in tasks {
        let t = t.await?;
        total.reads.add(&t.reads)?;
        total.writes.add(&t.writes)?;
        total.errors += t.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "clients={} duration={:.1}s value_bytes={} read_ratio={} errors={}",
        args.clients, secs, args.value_bytes, args.read_ratio, total.errors
    );
    for (name, h) in [("write", &total.writes), ("read", &total.reads)] {
        if h.is_empty() {
            continue;
        }
        println!(
            "{name:<5} ops={:<8} throughput={:>9.0}/s p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            h.len(),
            h.len() as f64 / secs,
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        );
    }
    Ok(())
}
