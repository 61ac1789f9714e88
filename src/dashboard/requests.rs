//! Request counters and latency quantiles per operation, read back from the node's Prometheus
//! text: the recorder keeps its numbers to itself, and its rendering is the one place they are
//! readable, so the dashboard shows exactly what `/metrics` shows.
//!
//! Only the families in [`FAMILIES`] are read. Other lines, and lines that do not parse, are
//! skipped: a new metric or an odd label never breaks the dashboard, it only leaves a row out.

use std::collections::BTreeMap;

use crate::node::{METRIC_REQUESTS, METRIC_REQUEST_SECONDS};
use crate::resp::connection::{METRIC_RESP_COMMANDS, METRIC_RESP_SECONDS};

/// One request counter and its latency histogram (rendered as a summary with quantiles).
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The counter, labelled with the operation and `result` ("ok" or an error kind).
    pub counter: &'static str,
    /// The latency histogram in seconds, labelled with the operation.
    pub histogram: &'static str,
    /// The label naming the operation.
    pub label: &'static str,
    /// Put before the operation's name, so the two protocols' operations stay apart.
    pub prefix: &'static str,
}

/// The request families the dashboard shows: the data port's, and the Redis listener's.
pub const FAMILIES: [Family; 2] = [
    Family {
        counter: METRIC_REQUESTS,
        histogram: METRIC_REQUEST_SECONDS,
        label: "op",
        prefix: "",
    },
    Family {
        counter: METRIC_RESP_COMMANDS,
        histogram: METRIC_RESP_SECONDS,
        label: "command",
        prefix: "redis ",
    },
];

/// The most operations one sample keeps (label values come from a fixed set of operations and
/// commands; this only bounds what a surprise could cost).
pub const OPS_MAX: usize = 256;

/// One operation's counters and recent latency quantiles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpCounts {
    /// Requests answered successfully since the node started.
    pub ok: u64,
    /// Requests answered with an error since the node started.
    pub failed: u64,
    /// Median latency over the recorder's recent window, in seconds.
    pub p50_seconds: Option<f64>,
    /// 99th-percentile latency over the recorder's recent window, in seconds.
    pub p99_seconds: Option<f64>,
}

/// Every operation's counters at one moment, by operation name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestSample {
    /// By operation (with its family's prefix).
    pub ops: BTreeMap<String, OpCounts>,
}

impl RequestSample {
    /// Reads the request families out of Prometheus text exposition.
    pub fn parse(text: &str) -> RequestSample {
        let mut sample = RequestSample::default();
        for line in text.lines().filter_map(Line::parse) {
            for family in &FAMILIES {
                sample.add(family, &line);
            }
        }
        sample
    }

    fn add(&mut self, family: &Family, line: &Line<'_>) {
        let counter = line.name == family.counter;
        let histogram = line.name == family.histogram;
        if !counter && !histogram {
            return;
        }
        let Some(op) = line.label(family.label) else {
            return;
        };
        let name = format!("{}{op}", family.prefix);
        if !self.ops.contains_key(&name) && self.ops.len() >= OPS_MAX {
            return;
        }
        let counts = self.ops.entry(name).or_default();
        if counter {
            // Counters render as integers; a count is never negative or fractional.
            let n = line.value.max(0.0) as u64;
            match line.label("result") {
                Some("ok") => counts.ok = counts.ok.saturating_add(n),
                _ => counts.failed = counts.failed.saturating_add(n),
            }
            return;
        }
        let value = line.value.is_finite().then_some(line.value);
        match line.label("quantile") {
            Some("0.5") => counts.p50_seconds = value,
            Some("0.99") => counts.p99_seconds = value,
            _ => {}
        }
    }
}

/// One sample line: `name{label="value",...} value`.
struct Line<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Option<Line<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..])?;
                (&line[..open], labels, rest)
            }
            None => {
                let space = line.find(' ')?;
                (&line[..space], Vec::new(), &line[space..])
            }
        };
        // The value, then an optional timestamp.
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Line {
            name,
            labels,
            value,
        })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The labels after `{` up to the closing `}`, and what follows it. Values are quoted, with
/// `\\`, `\"` and `\n` escaped.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[eq + 2 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What metrics-exporter-prometheus renders for our families (histograms as summaries).
    const TEXT: &str = r#"# TYPE steadfast_requests_total counter
steadfast_requests_total{op="write",result="ok"} 10
steadfast_requests_total{op="write",result="not_leader"} 2
steadfast_requests_total{op="read",result="ok"} 7
# TYPE steadfast_request_duration_seconds summary
steadfast_request_duration_seconds{op="write",quantile="0"} 0.0001
steadfast_request_duration_seconds{op="write",quantile="0.5"} 0.002
steadfast_request_duration_seconds{op="write",quantile="0.99"} 0.03
steadfast_request_duration_seconds_sum{op="write"} 0.1
steadfast_request_duration_seconds_count{op="write"} 12
steadfast_resp_commands_total{command="get",result="ok"} 3
steadfast_group_term{group="0"} 4
steadfast_requests_total{op="odd \"quoted\"",result="ok"} 1
steadfast_requests_total{op="broken
"#;

    #[test]
    fn counters_and_quantiles_per_operation() {
        let s = RequestSample::parse(TEXT);
        let write = &s.ops["write"];
        assert_eq!((write.ok, write.failed), (10, 2));
        assert_eq!(write.p50_seconds, Some(0.002));
        assert_eq!(write.p99_seconds, Some(0.03));
        let read = &s.ops["read"];
        assert_eq!((read.ok, read.failed, read.p50_seconds), (7, 0, None));
        assert_eq!(s.ops["redis get"].ok, 3);
        assert_eq!(s.ops["odd \"quoted\""].ok, 1);
        // Gauges, _sum/_count lines and the truncated line are not operations.
        assert_eq!(s.ops.len(), 4, "{:?}", s.ops.keys());
    }

    #[test]
    fn nothing_recorded_is_an_empty_sample() {
        assert!(RequestSample::parse("").ops.is_empty());
        assert!(RequestSample::parse("# HELP x\n\n").ops.is_empty());
    }

    #[test]
    fn a_nan_quantile_is_no_latency() {
        let s = RequestSample::parse(
            "steadfast_request_duration_seconds{op=\"read\",quantile=\"0.5\"} NaN",
        );
        assert_eq!(s.ops["read"].p50_seconds, None);
    }
}
