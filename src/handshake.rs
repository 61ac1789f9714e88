//! A node's answer to a connection's hello: welcome a caller of its own cluster (or a client
//! that does not know the cluster yet), refuse one of another cluster.
//!
//! The transport calls this through [`crate::transport::Handler::hello`] before any other request
//! on the connection, and closes the connection after a refusal.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::NodeId;
use crate::identity::ClusterId;
use crate::wire::{Hello, ResponseBody, WireError};

/// How often (ms of the node's clock) a refusal is logged at most: a foreign peer retries every
/// heartbeat.
const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;

/// The answer of node `node` of cluster `ours` to `hello`, at `now_ms`; `logged_ms` remembers
/// when a refusal was last logged.
pub fn answer(
    ours: &ClusterId,
    node: NodeId,
    hello: &Hello,
    now_ms: u64,
    logged_ms: &AtomicU64,
) -> ResponseBody {
    match &hello.cluster_id {
        Some(theirs) if theirs != ours => {
            let last = logged_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS
                && logged_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let caller = hello
                    .node
                    .map_or("a client".to_string(), |n| format!("node {n}"));
                tracing::warn!(
                    "refused {caller} of cluster {theirs}: this node serves cluster {ours} \
                     (a node of another cluster, e.g. one restored beside this one, must not \
                     join it)"
                );
            }
            ResponseBody::Error(WireError::WrongCluster {
                ours: ours.to_string(),
                theirs: theirs.to_string(),
            })
        }
        _ => ResponseBody::Welcome {
            cluster_id: ours.clone(),
            node,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_of_another_cluster_is_refused_and_a_client_without_one_welcomed() {
        let ours = ClusterId::new("a").expect("valid");
        let logged = AtomicU64::new(0);
        let hello = |c: Option<&str>| Hello {
            cluster_id: c.map(|c| ClusterId::new(c).expect("valid")),
            node: Some(2),
        };
        for h in [hello(None), hello(Some("a"))] {
            assert!(matches!(
                answer(&ours, 1, &h, 0, &logged),
                ResponseBody::Welcome { node: 1, .. }
            ));
        }
        let refused = answer(&ours, 1, &hello(Some("b")), 20_000, &logged);
        assert!(matches!(
            refused,
            ResponseBody::Error(WireError::WrongCluster { .. })
        ));
        assert_eq!(logged.load(Ordering::Relaxed), 20_000);
    }
}
