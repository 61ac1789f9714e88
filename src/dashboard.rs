//! The admin listener's dashboard: one self-contained HTML page ([`PAGE`]) that polls this
//! node's [`Report`] every second and shows, per group, the leader, term, commit and applied
//! index, members and sessions; per node of the cluster, whether it is healthy; and per
//! operation, request rates and latencies.
//!
//! - [`page`]: the HTML (inline CSS and JS, no external assets), compiled into the binary.
//! - [`report`]: the JSON the page polls (`/dashboard.json`).
//! - [`requests`]: request counters and latency quantiles read back from the Prometheus text.
//! - [`rates`]: ops/s from the difference of two samples of those counters.
//! - [`health`]: whether a node is healthy, from the answers to this node's probes.
//! - [`probe`]: asking another node for its groups' status over the peer connections.
//! - [`monitor`]: the task that probes every peer and samples the metrics once a tick, and
//!   builds the report.
//!
//! Nothing here writes: the dashboard only reads the node's state and asks its peers for their
//! status (a `status` request each per tick, counted in their metrics like any other). Every
//! probe has a deadline ([`monitor::PROBE_TIMEOUT_MS`]), so one silent peer delays a tick by
//! at most that, and the report is at most a tick and a deadline old.

pub mod health;
pub mod monitor;
pub mod page;
pub mod probe;
pub mod rates;
pub mod report;
pub mod requests;

pub use monitor::Monitor;
pub use page::PAGE;
pub use probe::ProbeError;
pub use report::Report;
