//! Request rates: ops/s per operation from the difference between two samples of the counters
//! (the monitor takes one per tick), with the latest latency quantiles beside them.

use serde::{Deserialize, Serialize};

use super::requests::RequestSample;

/// One operation's recent rate and latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRate {
    /// The operation (`write`, `read`, ..., `redis get`, ...).
    pub op: String,
    /// Successful requests per second between the two samples.
    pub ok_per_sec: f64,
    /// Failed requests per second between the two samples.
    pub failed_per_sec: f64,
    /// Requests since the node started (successful and failed).
    pub total: u64,
    /// Median latency in milliseconds over the recorder's recent window.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency in milliseconds over the recorder's recent window.
    pub p99_ms: Option<f64>,
}

/// Each operation of `after` with its rate since `before`, taken `elapsed_ms` earlier. An
/// operation absent from `before` started from zero; a counter lower than before (a recorder
/// that was reset) counts as no requests rather than a negative rate.
pub fn rates(before: &RequestSample, after: &RequestSample, elapsed_ms: u64) -> Vec<OpRate> {
    let per_sec = |delta: u64| {
        if elapsed_ms == 0 {
            0.0
        } else {
            delta as f64 * 1000.0 / elapsed_ms as f64
        }
    };
    let ms = |seconds: Option<f64>| seconds.map(|s| s * 1000.0);
    after
        .ops
        .iter()
        .map(|(op, now)| {
            let then = before.ops.get(op).cloned().unwrap_or_default();
            OpRate {
                op: op.clone(),
                ok_per_sec: per_sec(now.ok.saturating_sub(then.ok)),
                failed_per_sec: per_sec(now.failed.saturating_sub(then.failed)),
                total: now.ok.saturating_add(now.failed),
                p50_ms: ms(now.p50_seconds),
                p99_ms: ms(now.p99_seconds),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::requests::OpCounts;

    fn sample(ops: &[(&str, u64, u64)]) -> RequestSample {
        RequestSample {
            ops: ops
                .iter()
                .map(|(op, ok, failed)| {
                    let counts = OpCounts {
                        ok: *ok,
                        failed: *failed,
                        p50_seconds: Some(0.004),
                        p99_seconds: None,
                    };
                    (op.to_string(), counts)
                })
                .collect(),
        }
    }

    #[test]
    fn rates_are_counter_deltas_over_the_interval() {
        let before = sample(&[("write", 100, 1)]);
        let after = sample(&[("write", 300, 2), ("read", 50, 0)]);
        let r = rates(&before, &after, 2_000);
        let write = r.iter().find(|r| r.op == "write").expect("write");
        assert_eq!((write.ok_per_sec, write.failed_per_sec), (100.0, 0.5));
        assert_eq!(write.total, 302);
        assert_eq!(write.p50_ms, Some(4.0));
        let read = r.iter().find(|r| r.op == "read").expect("read");
        assert_eq!(read.ok_per_sec, 25.0);
    }

    #[test]
    fn no_time_or_a_reset_counter_is_no_rate() {
        let before = sample(&[("write", 100, 0)]);
        assert_eq!(rates(&before, &before, 0)[0].ok_per_sec, 0.0);
        let reset = sample(&[("write", 10, 0)]);
        assert_eq!(rates(&before, &reset, 1_000)[0].ok_per_sec, 0.0);
    }
}
