//! Answering a read's worth of pipelined requests: in order, with consecutive key commands on
//! distinct keys run concurrently.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

use crate::command::redis::{RedisOp, Reply};
use crate::id::SessionId;
use crate::resp::codec::{encode, RequestDecoder};
use crate::resp::plan::{plan, Plan, Planned, KEY_COMMANDS};
use crate::resp::Shared;
use crate::transport::BoxStream;

use super::{label, record, upper, After, Conn, METRIC_RESP_COMMANDS};

/// Replies buffered before they are written even if more requests are waiting.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// Pipelined requests decoded (and key commands run concurrently) at once.
const PIPELINE_RUN_MAX: usize = 256;

/// The connection is to be closed (after what `output` holds was written).
pub(super) struct Closed;

impl Conn {
    /// Answers every complete request in `input` into `output` (written out whenever it grows
    /// large); `Err` once the connection is to be closed.
    pub(super) async fn answer_buffered(
        &mut self,
        shared: &Shared,
        input: &mut BytesMut,
        output: &mut BytesMut,
        stream: &mut BoxStream,
    ) -> Result<(), Closed> {
        loop {
            let mut requests = Vec::new();
            let mut malformed = None;
            while requests.len() < PIPELINE_RUN_MAX {
                match RequestDecoder.decode(input) {
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) => requests.push(args),
                    Ok(None) => break,
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            if requests.is_empty() && malformed.is_none() {
                return Ok(());
            }
            self.answer_pipeline(shared, requests, output, stream)
                .await?;
            if let Some(e) = malformed {
                tracing::debug!(connection = self.id, error = %e, "closing a RESP connection");
                metrics::counter!(METRIC_RESP_COMMANDS, "command" => "malformed", "result" => "error")
                    .increment(1);
                encode(&Reply::err(e), self.resp3, output);
                let _ = stream.write_all(output).await;
                return Err(Closed);
            }
        }
    }

    /// Answers pipelined requests in order. Consecutive key commands on distinct keys run
    /// concurrently (they commute, so the connection sees what running them one after another
    /// gives); a command on a key an earlier one of the run touches, and any other command,
    /// waits for everything before it.
    async fn answer_pipeline(
        &mut self,
        shared: &Shared,
        requests: Vec<Vec<Bytes>>,
        output: &mut BytesMut,
        stream: &mut BoxStream,
    ) -> Result<(), Closed> {
        let mut run: Vec<(&'static str, Plan)> = Vec::new();
        let mut keys: BTreeSet<SessionId> = BTreeSet::new();
        for args in requests {
            let name = upper(&args[0]);
            if let Some(plan) = self.concurrent_plan(shared, &name, &args[1..]) {
                let ids = plan_keys(&plan);
                if ids.iter().any(|id| keys.contains(id)) {
                    self.run_concurrently(shared, &mut run, output).await;
                    keys.clear();
                }
                keys.extend(ids);
                run.push((label(&name), plan));
                continue;
            }
            self.run_concurrently(shared, &mut run, output).await;
            keys.clear();
            let (reply, after) = self.answer(shared, args).await;
            encode(&reply, self.resp3, output);
            for f in self.extra.drain(..) {
                encode(&f, self.resp3, output);
            }
            if matches!(after, After::Close) {
                let _ = stream.write_all(output).await;
                return Err(Closed);
            }
            if output.len() >= OUTPUT_FLUSH_BYTES {
                if stream.write_all(output).await.is_err() {
                    return Err(Closed);
                }
                output.clear();
            }
        }
        self.run_concurrently(shared, &mut run, output).await;
        Ok(())
    }

    /// The plan of a key command that may run concurrently with its neighbours: authenticated,
    /// outside `MULTI`, not refused in subscribed mode, and a valid one-step plan.
    fn concurrent_plan(&self, shared: &Shared, name: &str, args: &[Bytes]) -> Option<Plan> {
        let subscribed_resp2 = !self.resp3 && self.subs.count() > 0;
        if !self.authenticated || self.multi.is_some() || subscribed_resp2 {
            return None;
        }
        if !KEY_COMMANDS.contains(&name) {
            return None;
        }
        match plan(name, args, shared.executor.groups()) {
            Some(Ok(Planned::Keys(p))) => Some(p),
            _ => None,
        }
    }

    /// Runs the plans of `run` at once and appends their replies in order.
    async fn run_concurrently(
        &mut self,
        shared: &Shared,
        run: &mut Vec<(&'static str, Plan)>,
        output: &mut BytesMut,
    ) {
        if run.is_empty() {
            return;
        }
        let start = tokio::time::Instant::now();
        let replies = join_all(run.iter().map(|(_, p)| shared.executor.run(p))).await;
        let seconds = start.elapsed().as_secs_f64();
        for ((command, _), reply) in run.drain(..).zip(replies) {
            record(command, &reply, seconds);
            encode(&reply, self.resp3, output);
        }
    }
}

/// Every key a plan reads or writes (a `RENAME`'s destination too).
fn plan_keys(plan: &Plan) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = plan.ops.iter().map(RedisOp::id).collect();
    for op in &plan.ops {
        if let RedisOp::Rename { to, .. } = op {
            ids.push(to.id);
        }
    }
    ids
}
