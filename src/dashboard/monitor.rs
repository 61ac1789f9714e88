//! The dashboard's monitor: once a tick it probes every other node it knows (all at once, each
//! under a deadline) and samples the request counters; [`Monitor::report`] joins that with the
//! local groups' state read at the time of the request.
//!
//! Health is judged when the report is built, not when the probe returns, so a monitor that
//! stopped ticking shows its peers turning unhealthy rather than frozen green.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;

use super::health::{Health, PeerRecord};
use super::probe::peer_status;
use super::rates::{rates, OpRate};
use super::report::{GroupRow, NodeRow, Report, REPORT_VERSION};
use super::requests::RequestSample;
use crate::id::NodeId;
use crate::node::NodeObserver;

/// How often the monitor probes its peers and samples the counters.
pub const TICK_MS: u64 = 1_000;

/// How long one probe may wait for a peer's answer (below [`TICK_MS`], so ticks do not stack).
pub const PROBE_TIMEOUT_MS: u64 = 800;

/// Renders the node's metrics as Prometheus text (the admin listener's recorder).
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// Watches one node and its peers for the dashboard; clones share what was observed.
#[derive(Clone)]
pub struct Monitor {
    /// The node reporting.
    node: NodeObserver,
    /// Where the request counters are read.
    metrics: MetricsText,
    /// The origin of monitor time (milliseconds in the records).
    started: tokio::time::Instant,
    /// What the ticks observed.
    seen: Arc<Mutex<Observed>>,
}

#[derive(Default)]
struct Observed {
    /// Every peer probed so far.
    peers: BTreeMap<NodeId, PeerRecord>,
    /// The latest sample of the counters and when it was taken.
    sample: Option<(u64, RequestSample)>,
    /// The rates between the last two samples.
    rates: Vec<OpRate>,
    /// The interval of those rates.
    rate_window_ms: u64,
    /// Ticks finished.
    ticks: u64,
}

impl Monitor {
    /// A monitor of `node` reading request counters from `metrics`; nothing is probed until
    /// [`run`](Self::run) or [`tick`](Self::tick).
    pub fn new(node: NodeObserver, metrics: MetricsText) -> Monitor {
        Monitor {
            node,
            metrics,
            started: tokio::time::Instant::now(),
            seen: Arc::default(),
        }
    }

    /// Ticks every [`TICK_MS`] until the future is dropped.
    pub async fn run(self) {
        loop {
            self.tick().await;
            tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        }
    }

    /// Probes every other known node and samples the counters once.
    pub async fn tick(&self) {
        let me = self.node.id();
        let peers: Vec<(NodeId, String)> = self
            .node
            .nodes()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .collect();
        let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
        let probes = peers
            .iter()
            .map(|(_, addr)| peer_status(&self.node, addr, timeout));
        let answers = join_all(probes).await;
        let sample = RequestSample::parse(&(self.metrics)());
        let now_ms = self.now_ms();
        let mut seen = self.seen.lock().expect("monitor lock");
        for ((id, _), answer) in peers.into_iter().zip(answers) {
            let record = seen.peers.entry(id).or_default();
            match answer {
                Ok(groups) => record.answered(now_ms, id, &groups),
                Err(e) => record.failed(e.to_string()),
            }
        }
        if let Some((then_ms, before)) = &seen.sample {
            let window_ms = now_ms.saturating_sub(*then_ms);
            seen.rates = rates(before, &sample, window_ms);
            seen.rate_window_ms = window_ms;
        }
        seen.sample = Some((now_ms, sample));
        seen.ticks += 1;
    }

    /// The report now: the local groups as they are, the peers as last probed.
    pub fn report(&self) -> Report {
        let me = self.node.id();
        let status = self.node.status();
        let groups = status
            .iter()
            .map(|g| GroupRow {
                group: g.group,
                role: g.role.clone(),
                leader: g.leader,
                term: g.term,
                committed_index: self.node.committed_index(g.group),
                applied_index: g.applied_index,
                last_log_index: g.last_log_index,
                members: g.members.clone(),
                learners: g.learners.clone(),
                sessions: g.sessions,
            })
            .collect();
        let now_ms = self.now_ms();
        let seen = self.seen.lock().expect("monitor lock");
        let nodes = self
            .node
            .nodes()
            .into_iter()
            .map(|(id, addr)| {
                if id == me {
                    return self.local_row(addr, &status);
                }
                let record = seen.peers.get(&id).cloned().unwrap_or_default();
                let Health {
                    healthy,
                    reachable,
                    problems,
                } = record.health(now_ms);
                NodeRow {
                    node: id,
                    addr,
                    local: false,
                    healthy,
                    problems,
                    last_answer_ms_ago: record.last_answer_ms.map(|t| now_ms.saturating_sub(t)),
                    // A silent node's last leaderships are history, not news.
                    leads: if reachable { record.leads } else { Vec::new() },
                }
            })
            .collect();
        Report {
            version: REPORT_VERSION,
            node: me,
            ticks: seen.ticks,
            groups,
            nodes,
            requests: seen.rates.clone(),
            rate_window_ms: seen.rate_window_ms,
        }
    }

    /// The reporting node's own row: healthy when every readiness check passes.
    fn local_row(&self, addr: String, status: &[crate::wire::GroupStatus]) -> NodeRow {
        let me = self.node.id();
        let problems: Vec<String> = self
            .node
            .readiness()
            .into_iter()
            .filter_map(|(group, check)| check.err().map(|why| format!("group {}: {why}", group.0)))
            .collect();
        NodeRow {
            node: me,
            addr,
            local: true,
            healthy: problems.is_empty(),
            problems,
            last_answer_ms_ago: Some(0),
            leads: status
                .iter()
                .filter(|g| g.leader == Some(me))
                .map(|g| g.group)
                .collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
