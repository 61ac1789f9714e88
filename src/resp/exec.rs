//! Runs planned key commands on the cluster through the native [`Client`]: reads through the
//! linearizable read path, writes (and transactions) as one `Command::Redis` batch per group,
//! each under one `(client, seq)` that the client retries until committed, so a retried write
//! applies once. Also SCAN/KEYS/DBSIZE over every group, and RENAME across groups.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::client::Client;
use crate::command::redis::{read_map, KeyRef, KeyType, RedisBatch, RedisOp, Reply};
use crate::command::{Attributes, Command, Outcome};
use crate::error::Error;
use crate::id::{GroupId, SessionId};
use crate::teeth::{self, Bug};
use crate::wire::{ClientRequest, RequestBody, ResponseBody};

use super::keyspace::{glob_match, Cursor};
use super::plan::{Combine, Plan};

/// The error a transaction over several groups gets (Redis Cluster's wording).
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Talks to the cluster for RESP connections.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    namespace: String,
    delete_grace_ms: u64,
}

/// A cluster call's failure as a Redis error line.
fn failure(e: Error) -> Reply {
    match e {
        Error::Timeout => Reply::err(
            "steadfast: timed out; the outcome of a write is unknown (it applies at most once)",
        ),
        other => Reply::err(format!("steadfast: {other}")),
    }
}

impl Executor {
    /// An executor writing in `namespace` with its `delete_grace_ms`.
    pub fn new(client: Client, namespace: String, delete_grace_ms: u64) -> Executor {
        Executor {
            client,
            namespace,
            delete_grace_ms,
        }
    }

    /// The number of groups.
    pub fn groups(&self) -> u32 {
        self.client.topology().groups
    }

    fn group(&self, id: &SessionId) -> GroupId {
        id.group(self.groups())
    }

    /// Runs one command's plan: each group's share concurrently, then combines the replies.
    pub async fn run(&self, plan: &Plan) -> Reply {
        let mut by_group: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
        for (i, op) in plan.ops.iter().enumerate() {
            by_group.entry(self.group(&op.id())).or_default().push(i);
        }
        let shares = by_group.into_iter().map(|(group, indexes)| async move {
            let ops: Vec<RedisOp> = indexes.iter().map(|i| plan.ops[*i].clone()).collect();
            let replies = if ops.iter().all(|op| matches!(op, RedisOp::Read { .. })) {
                self.reads(&ops).await
            } else {
                match self.batch(group, ops, Vec::new()).await {
                    Ok(Some(replies)) => replies,
                    Ok(None) => vec![Reply::err("steadfast: batch aborted"); indexes.len()],
                    Err(e) => vec![e; indexes.len()],
                }
            };
            indexes.into_iter().zip(replies)
        });
        let mut replies = vec![Reply::Nil; plan.ops.len()];
        for share in join_all(shares).await {
            for (i, reply) in share {
                replies[i] = reply;
            }
        }
        combine(plan.combine, replies)
    }

    /// Reads through the linearizable read path, one key at a time.
    async fn reads(&self, ops: &[RedisOp]) -> Vec<Reply> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let RedisOp::Read { id, op } = op else {
                out.push(Reply::err("steadfast: not a read"));
                continue;
            };
            out.push(match self.client.read(*id).await {
                Ok(r) => {
                    let key = r.session.as_ref().map(|s| (&s.attributes, s.deadline_ms));
                    read_map(op, key, r.server_time_ms)
                }
                Err(e) => failure(e),
            });
        }
        out
    }

    /// Applies `ops` atomically in `group` if every watched key is still at its version;
    /// `Ok(None)` if one changed.
    pub async fn batch(
        &self,
        group: GroupId,
        ops: Vec<RedisOp>,
        watches: Vec<(SessionId, Option<u64>)>,
    ) -> Result<Option<Vec<Reply>>, Reply> {
        self.batch_with_grace(group, ops, watches, self.delete_grace_ms)
            .await
    }

    /// [`Executor::batch`] with `delete_grace_ms` given.
    async fn batch_with_grace(
        &self,
        group: GroupId,
        ops: Vec<RedisOp>,
        watches: Vec<(SessionId, Option<u64>)>,
        delete_grace_ms: u64,
    ) -> Result<Option<Vec<Reply>>, Reply> {
        let batch = RedisBatch {
            watches,
            ops,
            delete_grace_ms,
        };
        let body = RequestBody::Client(ClientRequest::Write {
            origin: self.client.next_origin(),
            command: Command::Redis(batch),
            namespace: self.namespace.clone(),
        });
        match self.client.call(group, body).await {
            Ok(ResponseBody::Written(r)) => match r.outcome {
                Outcome::Redis(replies) => Ok(replies),
                Outcome::TooLarge { bytes, limit } => Err(Reply::err(format!(
                    "value too large: the command would take {bytes} bytes, limit {limit}"
                ))),
                other => Err(Reply::err(format!(
                    "steadfast: unexpected outcome {other:?}"
                ))),
            },
            Ok(other) => Err(Reply::err(format!(
                "steadfast: unexpected answer {other:?}"
            ))),
            Err(e) => Err(failure(e)),
        }
    }

    /// The version of `id` now (`None` if absent), for `WATCH`.
    pub async fn version(&self, id: SessionId) -> Result<Option<u64>, Reply> {
        let r = self.client.read(id).await.map_err(failure)?;
        Ok(r.session.map(|s| s.version))
    }

    /// `EXEC`: every queued plan and the watches as one atomic batch in one group.
    pub async fn exec(&self, plans: &[Plan], watches: Vec<(SessionId, Option<u64>)>) -> Reply {
        let ids = plans
            .iter()
            .flat_map(|p| p.ops.iter().map(RedisOp::id))
            .chain(watches.iter().map(|(id, _)| *id));
        let mut groups: Vec<GroupId> = ids.map(|id| self.group(&id)).collect();
        groups.sort();
        groups.dedup();
        let group = match groups.as_slice() {
            [] => return Reply::Array(Vec::new()),
            [g] => *g,
            _ => return Reply::Error(CROSSSLOT.into()),
        };
        let ops: Vec<RedisOp> = plans.iter().flat_map(|p| p.ops.iter().cloned()).collect();
        match self.batch(group, ops, watches).await {
            Ok(None) => Reply::NilArray,
            Ok(Some(replies)) => {
                let mut replies = replies.into_iter();
                Reply::Array(
                    plans
                        .iter()
                        .map(|p| combine(p.combine, replies.by_ref().take(p.ops.len()).collect()))
                        .collect(),
                )
            }
            Err(e) => e,
        }
    }

    /// `RENAME` between groups, fail-safe like a cross-group rotation: the source is taken out
    /// (deleted, its data returned) in its group, then stored under the destination in the
    /// other; if the destination refuses it, it is put back. A crash between the steps, or a
    /// destination write whose outcome is unknown (a timeout: it may still apply), loses the
    /// key, never duplicates it. `RENAMENX` checks the destination first (not atomically).
    ///
    /// The put-back ignores the grace period: the source's tombstone is the take-out's own, a
    /// few milliseconds old, so with `redis_delete_grace_ms` on it refused the put-back and a
    /// RENAME onto a key deleted within the grace period lost the source (found by the
    /// simulation's RESP scenarios, seeds 7, 8, 9 and 11 of their first sweep). And it happens
    /// only after a definite refusal: putting back after a timed-out destination write that did
    /// apply would leave the value under both names.
    pub async fn rename_across(&self, from: KeyRef, to: KeyRef, only_if_absent: bool) -> Reply {
        let done = if only_if_absent {
            Reply::Int(1)
        } else {
            Reply::Ok
        };
        if only_if_absent {
            match self.version(to.id).await {
                Ok(Some(_)) => return Reply::Int(0),
                Ok(None) => {}
                Err(e) => return e,
            }
        }
        let taken = self
            .batch(
                self.group(&from.id),
                vec![RedisOp::TakeOut { id: from.id }],
                vec![],
            )
            .await;
        let (attributes, deadline_ms) = match first(taken) {
            Reply::Array(parts) => match parts.as_slice() {
                [Reply::Bulk(data), Reply::Int(deadline)] => {
                    match postcard::from_bytes::<Attributes>(data) {
                        Ok(a) => (a, u64::try_from(*deadline).ok()),
                        Err(e) => return Reply::err(format!("steadfast: moved data: {e}")),
                    }
                }
                _ => return Reply::err("steadfast: unexpected take-out reply"),
            },
            other => return other,
        };
        let put = |key: KeyRef| RedisOp::PutIn {
            key,
            attributes: attributes.clone(),
            deadline_ms,
        };
        let stored = self.batch(self.group(&to.id), vec![put(to)], vec![]).await;
        if let Err(unknown) = stored {
            // Not answered by the destination group: it may still apply; never put back.
            return unknown;
        }
        match first(stored) {
            Reply::Ok => done,
            refused => {
                // Teeth build (simulation only): the put-back under the grace period again.
                let grace = if teeth::planted(Bug::RenamePutBackGrace) {
                    self.delete_grace_ms
                } else {
                    0
                };
                let back = self
                    .batch_with_grace(self.group(&from.id), vec![put(from)], vec![], grace)
                    .await;
                match first(back) {
                    Reply::Ok => refused,
                    lost => Reply::err(format!(
                        "steadfast: RENAME across groups failed ({refused:?}) and restoring the \
                         source failed too ({lost:?})"
                    )),
                }
            }
        }
    }

    /// One SCAN step from `cursor`: the next batch of one group, filtered by `pattern` and
    /// `kind`, and the cursor to continue from (0 when done).
    pub async fn scan(
        &self,
        cursor: Cursor,
        count: u32,
        pattern: Option<&[u8]>,
        kind: Option<KeyType>,
    ) -> Result<(u64, Vec<Vec<u8>>), Reply> {
        let body = RequestBody::Client(ClientRequest::RedisScan {
            from: cursor.from,
            count,
        });
        let (keys, next) = match self.client.call(GroupId(cursor.group), body).await {
            Ok(ResponseBody::RedisKeys { keys, next }) => (keys, next),
            Ok(other) => {
                return Err(Reply::err(format!(
                    "steadfast: unexpected answer {other:?}"
                )))
            }
            Err(e) => return Err(failure(e)),
        };
        let names = keys
            .into_iter()
            .filter(|(name, t)| {
                kind.is_none_or(|k| k == *t) && pattern.is_none_or(|p| glob_match(p, name))
            })
            .map(|(name, _)| name)
            .collect();
        let next = match next {
            Some(from) => Cursor {
                group: cursor.group,
                from,
            }
            .encode(),
            None if cursor.group + 1 < self.groups() => Cursor {
                group: cursor.group + 1,
                from: SessionId::from_bytes([0; 16]),
            }
            .encode(),
            None => 0,
        };
        Ok((next, names))
    }

    /// Every key matching `pattern` (`KEYS`), or their number (`DBSIZE` with `None`).
    pub async fn all_keys(&self, pattern: Option<&[u8]>) -> Result<Vec<Vec<u8>>, Reply> {
        let mut cursor = Cursor::start();
        let mut out = Vec::new();
        loop {
            let (next, names) = self
                .scan(
                    cursor,
                    crate::limits::REDIS_SCAN_VISIT_MAX as u32,
                    pattern,
                    None,
                )
                .await?;
            out.extend(names);
            if next == 0 {
                return Ok(out);
            }
            cursor = Cursor::decode(next, self.groups()).expect("our own cursor decodes");
        }
    }
}

fn first(r: Result<Option<Vec<Reply>>, Reply>) -> Reply {
    match r {
        Ok(Some(replies)) => replies.into_iter().next().unwrap_or(Reply::Nil),
        Ok(None) => Reply::err("steadfast: batch aborted"),
        Err(e) => e,
    }
}

/// Makes a command's reply from its operations' replies.
pub fn combine(how: Combine, replies: Vec<Reply>) -> Reply {
    let error = replies
        .iter()
        .find(|r| matches!(r, Reply::Error(_)))
        .cloned();
    match how {
        Combine::One => replies.into_iter().next().unwrap_or(Reply::Nil),
        Combine::Array => Reply::Array(replies),
        Combine::Sum => error.unwrap_or_else(|| {
            Reply::Int(
                replies
                    .iter()
                    .map(|r| if let Reply::Int(n) = r { *n } else { 0 })
                    .sum(),
            )
        }),
        Combine::Ok => error.unwrap_or(Reply::Ok),
        Combine::SetNx => match replies.into_iter().next() {
            Some(Reply::Ok) => Reply::Int(1),
            Some(Reply::Nil) => Reply::Int(0),
            other => other.unwrap_or(Reply::Nil),
        },
    }
}
