//! The load generator behind `steadfast bench`: a concurrent preload, closed-loop clients with
//! HDR latency histograms, a per-second timeline (so stalls show), and the CPU the local node
//! processes spent per operation.

mod cpu;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::client::{CreateOptions, Update};
use crate::command::Attributes;
use crate::error::Result;
use crate::{Client, SessionId};

pub use cpu::{LocalNodes, NodeCpu};

/// One measured point.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Bytes per written attribute value.
    pub value_bytes: usize,
    /// Fraction of operations that are reads.
    pub read_ratio: f64,
}

/// What one point measured.
pub struct Report {
    /// Latencies of successful writes, in microseconds.
    pub writes: Histogram<u64>,
    /// Latencies of successful reads, in microseconds.
    pub reads: Histogram<u64>,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the point.
    pub elapsed: Duration,
    /// Per second of the run: every operation's latency, in microseconds.
    pub timeline: Vec<Histogram<u64>>,
}

impl Report {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        (self.writes.len() + self.reads.len()) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The slowest one-second window's throughput relative to the mean (1.0 = even); the last,
    /// partial second is left out.
    pub fn worst_second_ratio(&self) -> Option<f64> {
        let full = self.timeline.len().saturating_sub(1);
        if full == 0 {
            return None;
        }
        let counts: Vec<u64> = self.timeline[..full].iter().map(|h| h.len()).collect();
        let mean = counts.iter().sum::<u64>() as f64 / full as f64;
        let worst = *counts.iter().min()? as f64;
        Some(if mean > 0.0 { worst / mean } else { 0.0 })
    }
}

/// A latency histogram from 1 us to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn value(rng: &mut SmallRng, bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    rng.fill(&mut v[..]);
    v
}

/// How many created sessions [`preload`] reports progress after (a display, rate-limited anyway).
const PROGRESS_EVERY: usize = 100;

/// Creates `count` sessions, each with attribute `v` of `value_bytes` random bytes (none when
/// 0), from `concurrency` concurrent creators; `progress` is called with the number done.
pub async fn preload(
    client: &Client,
    count: usize,
    value_bytes: usize,
    concurrency: usize,
    progress: impl Fn(usize) + Send + Sync + 'static,
) -> Result<Vec<SessionId>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(progress);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency.clamp(1, count.max(1)) {
        let (client, next, progress) = (client.clone(), next.clone(), progress.clone());
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + worker as u64);
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, crate::Error>(ids);
                }
                let mut attributes = Attributes::new();
                if value_bytes > 0 {
                    attributes.insert("v".into(), value(&mut rng, value_bytes));
                }
                let (id, _) = client.create(attributes, CreateOptions::default()).await?;
                ids.push(id);
                if (n + 1) % PROGRESS_EVERY == 0 {
                    progress(n + 1);
                }
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        let ids = done.map_err(|e| crate::Error::Raft(format!("preload task failed: {e}")))??;
        all.extend(ids);
    }
    progress(all.len());
    Ok(all)
}

/// Deletes `ids` from `concurrency` concurrent deleters; how many were deleted.
pub async fn cleanup(client: &Client, ids: &[SessionId], concurrency: usize) -> usize {
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, ids, next) = (client.clone(), ids.clone(), next.clone());
        tasks.spawn(async move {
            let mut deleted = 0;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(n) else {
                    return deleted;
                };
                if client.delete(*id, None).await.is_ok() {
                    deleted += 1;
                }
            }
        });
    }
    let mut deleted = 0;
    while let Some(n) = tasks.join_next().await {
        deleted += n.unwrap_or(0);
    }
    deleted
}

/// Runs one point: `workload.clients` closed-loop clients over `ids` (updates set attribute
/// `v`; reads are linearizable gets) for `workload.duration`.
pub async fn run(client: &Client, ids: Arc<Vec<SessionId>>, workload: &Workload) -> Report {
    let started = Instant::now();
    let stop = started + workload.duration;
    let seconds = workload.duration.as_secs() as usize + 2;
    let timeline = Arc::new(Mutex::new(
        (0..seconds).map(|_| histogram()).collect::<Vec<_>>(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workload.clients.max(1) {
        let (client, ids, timeline) = (client.clone(), ids.clone(), timeline.clone());
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker as u64);
            let (mut reads, mut writes, mut errors) = (histogram(), histogram(), 0u64);
            while Instant::now() < stop {
                let id = ids[rng.gen_range(0..ids.len())];
                let read = rng.gen_bool(workload.read_ratio);
                let t0 = Instant::now();
                let ok = if read {
                    client.get(id).await.is_ok()
                } else {
                    let v = value(&mut rng, workload.value_bytes);
                    client
                        .update(id, Update::default().set("v", v))
                        .await
                        .is_ok()
                };
                let micros = (t0.elapsed().as_micros() as u64).max(1);
                if !ok {
                    errors += 1;
                    continue;
                }
                if read {
                    reads.saturating_record(micros);
                } else {
                    writes.saturating_record(micros);
                }
                let second = (t0 - started).as_secs() as usize;
                if let Some(h) = timeline.lock().expect("timeline lock").get_mut(second) {
                    h.saturating_record(micros);
                }
            }
            (reads, writes, errors)
        });
    }
    let (mut reads, mut writes, mut errors) = (histogram(), histogram(), 0);
    while let Some(done) = tasks.join_next().await {
        if let Ok((r, w, e)) = done {
            // Same bounds on every histogram: adding cannot fail.
            let _ = reads.add(&r);
            let _ = writes.add(&w);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    let mut timeline = std::mem::take(&mut *timeline.lock().expect("timeline lock"));
    timeline.truncate((elapsed.as_secs() as usize + 1).min(timeline.len()));
    Report {
        writes,
        reads,
        errors,
        elapsed,
        timeline,
    }
}
