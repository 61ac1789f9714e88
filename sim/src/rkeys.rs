//! Redis keys (the RESP-level commands of issue 11) as the simulation records and checks them.
//!
//! A client runs one **scenario** at a time on fresh keys of its own (slot `a`, slot `b`), one
//! command after another, so a scenario's history is sequential; the only concurrency is an
//! op whose outcome is unknown (a timeout), which may still apply at any later time. Values are
//! unique per `SET` (a history tick), so a value seen names the write that made it.
//!
//! | property | rule | violation |
//! |---|---|---|
//! | after a rename, its value is never visible under both names (same group: atomic; across groups: fail-safe, "loses the key, never duplicates it") | [`check`] | [`RedisViolation::RenameDuplicated`] |
//! | a rename that answered (OK, refused, no such key, a reported failure) never loses the value: a final read finds it under one of the names | [`check`] | [`RedisViolation::RenameLost`] |
//! | reads of a key show the acknowledged writes (value, or absence after `DEL` / a rename away) | [`check`] | [`RedisViolation::LostWrite`] |
//! | a plain `SET` within `redis_delete_grace_ms` of the key's `DEL` (as bounded by reads' replicated times) is refused | [`check`] | [`RedisViolation::GraceResurrection`] |
//! | a plain `SET` surely after the grace period (or with grace off) is accepted | [`check`] | [`RedisViolation::GraceFalseRefusal`] |
//! | a deadline is absolute: every read shows the deadline the last write set (reads never extend it; a relative one resolves within the write's replicated time) | [`check`] | [`RedisViolation::DeadlineMoved`] |
//! | no read returns a key at or past its deadline as of the read's replicated time | [`check`] | [`RedisViolation::ExpiredRead`] |
//!
//! Soundness: only definite answers change what the model knows; an unknown op makes the keys
//! it touches unknown for the rest of the scenario (no rule but the duplicate check, which no
//! late apply can explain, uses them). Replicated times bound a write's apply time from both
//! sides: a read of the same key that completed before the write was invoked has a clock at
//! most the write's, a read invoked after it completed a clock at least the write's.

use std::collections::BTreeMap;
use std::fmt;

/// A key of a scenario: `0` is slot `a`, `1` slot `b`.
pub type Slot = u8;

/// A RESP command as a scenario issues it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RCmd {
    /// `SET k v` (plain), or `SET k v PXAT t`.
    Set {
        key: Slot,
        value: u64,
        deadline_at: Option<u64>,
    },
    /// `DEL k`.
    Del { key: Slot },
    /// `RENAME from to` (`cross`: the keys are in different groups).
    Rename { from: Slot, to: Slot, cross: bool },
    /// `PEXPIREAT k t`.
    ExpireAt { key: Slot, at_ms: u64 },
    /// `PEXPIRE k ms`.
    Expire { key: Slot, in_ms: u64 },
    /// `GET k` through the read path the RESP executor uses.
    Get { key: Slot },
}

impl RCmd {
    /// The keys a write may change (a read changes none).
    fn writes(&self) -> Vec<Slot> {
        match *self {
            RCmd::Set { key, .. }
            | RCmd::Del { key }
            | RCmd::ExpireAt { key, .. }
            | RCmd::Expire { key, .. } => vec![key],
            RCmd::Rename { from, to, .. } => vec![from, to],
            RCmd::Get { .. } => vec![],
        }
    }
}

/// What a command answered, as the model needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RResult {
    /// `+OK`.
    Ok,
    /// An integer reply.
    Int(i64),
    /// Refused because the key's deletion is within the grace period.
    Refused,
    /// `ERR no such key` (RENAME of a missing key).
    NoSuchKey,
    /// Another error from the cluster that is not a transport failure (it answered).
    Failed(String),
    /// A transport failure or timeout: it may apply at any later time.
    Unknown,
    /// A read: the value (`None`: no key), the key's deadline and the read's replicated time.
    Read {
        value: Option<u64>,
        deadline_ms: Option<u64>,
        server_time_ms: u64,
    },
}

/// One recorded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ROp {
    /// The scenario (fresh keys each).
    pub scenario: u32,
    /// History ticks; `complete` is `None` for an unknown outcome.
    pub invoke: u64,
    pub complete: Option<u64>,
    pub cmd: RCmd,
    pub result: RResult,
}

/// A broken promise of the Redis layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisViolation {
    /// The renamed value was seen under both names after the rename.
    RenameDuplicated {
        scenario: u32,
        rename: u64,
        from_read: u64,
        to_read: u64,
    },
    /// A rename with a definite answer lost the value: the final reads find it under neither.
    RenameLost {
        scenario: u32,
        rename: u64,
        answer: String,
    },
    /// A read disagrees with the acknowledged writes.
    LostWrite {
        scenario: u32,
        slot: Slot,
        read: u64,
        expected: String,
        got: String,
    },
    /// A plain SET recreated a key within the grace period of its deletion.
    GraceResurrection {
        scenario: u32,
        del: u64,
        set: u64,
        at_most_ms: u64,
        grace_ms: u64,
    },
    /// A plain SET was refused although the deletion was surely older than the grace period.
    GraceFalseRefusal {
        scenario: u32,
        del: u64,
        set: u64,
        at_least_ms: u64,
        grace_ms: u64,
    },
    /// A read showed a deadline other than the one the last write set.
    DeadlineMoved {
        scenario: u32,
        slot: Slot,
        read: u64,
        expected: String,
        seen: Option<u64>,
    },
    /// A read returned a key at or past its deadline.
    ExpiredRead {
        scenario: u32,
        slot: Slot,
        read: u64,
        deadline_ms: u64,
        server_time_ms: u64,
    },
}

impl RedisViolation {
    /// Short class name, stable for tests and dashboards.
    pub fn class(&self) -> &'static str {
        match self {
            RedisViolation::RenameDuplicated { .. } => "RenameDuplicated",
            RedisViolation::RenameLost { .. } => "RenameLost",
            RedisViolation::LostWrite { .. } => "LostWrite",
            RedisViolation::GraceResurrection { .. } => "GraceResurrection",
            RedisViolation::GraceFalseRefusal { .. } => "GraceFalseRefusal",
            RedisViolation::DeadlineMoved { .. } => "DeadlineMoved",
            RedisViolation::ExpiredRead { .. } => "ExpiredRead",
        }
    }
}

fn slot_name(slot: Slot) -> char {
    if slot == 0 {
        'a'
    } else {
        'b'
    }
}

impl fmt::Display for RedisViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisViolation::RenameDuplicated {
                scenario,
                rename,
                from_read,
                to_read,
            } => write!(
                f,
                "rename duplicated: scenario {scenario}'s value renamed by op {rename} seen under \
                 the old name (op {from_read}) and the new one (op {to_read})"
            ),
            RedisViolation::RenameLost {
                scenario,
                rename,
                answer,
            } => write!(
                f,
                "rename lost the value: scenario {scenario}'s rename op {rename} answered \
                 {answer}, yet the final reads find the value under neither name"
            ),
            RedisViolation::LostWrite {
                scenario,
                slot,
                read,
                expected,
                got,
            } => write!(
                f,
                "lost write: read op {read} of scenario {scenario} key {} got {got}, the \
                 acknowledged writes say {expected}",
                slot_name(*slot)
            ),
            RedisViolation::GraceResurrection {
                scenario,
                del,
                set,
                at_most_ms,
                grace_ms,
            } => write!(
                f,
                "grace resurrection: scenario {scenario}'s SET op {set} recreated the key at most \
                 {at_most_ms} ms after its DEL op {del} (grace {grace_ms} ms)"
            ),
            RedisViolation::GraceFalseRefusal {
                scenario,
                del,
                set,
                at_least_ms,
                grace_ms,
            } => write!(
                f,
                "grace false refusal: scenario {scenario}'s SET op {set} refused at least \
                 {at_least_ms} ms after its DEL op {del} (grace {grace_ms} ms)"
            ),
            RedisViolation::DeadlineMoved {
                scenario,
                slot,
                read,
                expected,
                seen,
            } => write!(
                f,
                "deadline moved: read op {read} of scenario {scenario} key {} shows deadline \
                 {seen:?}, the writes set {expected}",
                slot_name(*slot)
            ),
            RedisViolation::ExpiredRead {
                scenario,
                slot,
                read,
                deadline_ms,
                server_time_ms,
            } => write!(
                f,
                "expired read: read op {read} of scenario {scenario} key {} returned the key \
                 with deadline {deadline_ms} ms at server time {server_time_ms} ms",
                slot_name(*slot)
            ),
        }
    }
}

impl std::error::Error for RedisViolation {}

/// What the model knows of a key's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// Exactly this (`None`: no deadline).
    Known(Option<u64>),
    /// `PEXPIRE` of `in_ms` applied at a replicated time of at least `after_ms`; the next read
    /// learns it (and bounds it from above by its own clock).
    Relative { in_ms: u64, after_ms: u64 },
}

/// What the model knows of a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Model {
    /// Certainly absent.
    #[default]
    Absent,
    /// Certainly this value with this deadline.
    Live { value: u64, deadline: Deadline },
    /// An unknown op may have changed it (or may still).
    Unknown,
}

/// Checks every scenario of `ops` (a plain SET within `grace_ms` of a DEL must be refused).
///
/// # Errors
///
/// The first broken promise found.
pub fn check(ops: &[ROp], grace_ms: u64) -> Result<(), RedisViolation> {
    let mut scenarios: BTreeMap<u32, Vec<&ROp>> = BTreeMap::new();
    for op in ops {
        scenarios.entry(op.scenario).or_default().push(op);
    }
    for (scenario, mut ops) in scenarios {
        ops.sort_by_key(|o| o.invoke);
        check_renames(scenario, &ops)?;
        check_model(scenario, &ops)?;
        check_grace(scenario, &ops, grace_ms)?;
    }
    Ok(())
}

fn read_of(op: &ROp, slot: Slot) -> Option<(Option<u64>, Option<u64>, u64)> {
    match (op.cmd, &op.result) {
        (
            RCmd::Get { key },
            RResult::Read {
                value,
                deadline_ms,
                server_time_ms,
            },
        ) if key == slot => Some((*value, *deadline_ms, *server_time_ms)),
        _ => None,
    }
}

/// The value of the last SET of `slot` before position `before`, if any.
fn last_set(ops: &[&ROp], slot: Slot, before: usize) -> Option<u64> {
    ops[..before].iter().rev().find_map(|o| match o.cmd {
        RCmd::Set { key, value, .. } if key == slot => Some(value),
        _ => None,
    })
}

fn check_renames(scenario: u32, ops: &[&ROp]) -> Result<(), RedisViolation> {
    for (i, r) in ops.iter().enumerate() {
        let RCmd::Rename { from, to, .. } = r.cmd else {
            continue;
        };
        let Some(v) = last_set(ops, from, i) else {
            continue;
        };
        let after = &ops[i + 1..];
        let holding = |slot: Slot| {
            after
                .iter()
                .filter(move |o| read_of(o, slot).is_some_and(|(value, _, _)| value == Some(v)))
        };
        // Reads at different times see both names only if the value came back to the old one:
        // a read of the new name that completed before a read of the old one began, or (the
        // rename answered) a read of the old name that began after the answer. A rename of
        // unknown outcome may take effect at any later time, so "old name, then new name" is
        // not a duplicate on its own.
        let moved = holding(to).filter_map(|o| o.complete).min();
        let answered = (r.result == RResult::Ok).then_some(r.complete).flatten();
        let back = holding(from).find(|o| {
            moved.is_some_and(|t| o.invoke > t) || answered.is_some_and(|c| o.invoke > c)
        });
        if let (Some(from_read), Some(to_read)) = (back, holding(to).next()) {
            return Err(RedisViolation::RenameDuplicated {
                scenario,
                rename: r.invoke,
                from_read: from_read.invoke,
                to_read: to_read.invoke,
            });
        }
        // A rename that answered keeps the value under one name, if the source held it for
        // sure and nothing wrote either key after the rename.
        if r.result == RResult::Unknown
            || after.iter().any(|o| !o.cmd.writes().is_empty())
            || source_model(ops, i, from) != Some(v)
        {
            continue;
        }
        let last_read = |slot: Slot| after.iter().rev().find_map(|o| read_of(o, slot));
        if let (Some(a), Some(b)) = (last_read(from), last_read(to)) {
            if a.0 != Some(v) && b.0 != Some(v) {
                return Err(RedisViolation::RenameLost {
                    scenario,
                    rename: r.invoke,
                    answer: format!("{:?}", r.result),
                });
            }
        }
    }
    Ok(())
}

/// The value `slot` certainly held (without a deadline) just before position `at`.
fn source_model(ops: &[&ROp], at: usize, slot: Slot) -> Option<u64> {
    let mut keys = Keys::default();
    for op in &ops[..at] {
        keys.apply(op, &mut |_, _| Ok(())).ok()?;
    }
    match keys.models[slot as usize] {
        Model::Live {
            value,
            deadline: Deadline::Known(None),
        } => Some(value),
        _ => None,
    }
}

fn check_model(scenario: u32, ops: &[&ROp]) -> Result<(), RedisViolation> {
    let mut keys = Keys::default();
    for op in ops {
        keys.apply(op, &mut |slot, what| {
            Err(match what {
                Mismatch::Value { expected, got } => RedisViolation::LostWrite {
                    scenario,
                    slot,
                    read: op.invoke,
                    expected,
                    got,
                },
                Mismatch::Deadline { expected, seen } => RedisViolation::DeadlineMoved {
                    scenario,
                    slot,
                    read: op.invoke,
                    expected,
                    seen,
                },
                Mismatch::Expired {
                    deadline_ms,
                    server_time_ms,
                } => RedisViolation::ExpiredRead {
                    scenario,
                    slot,
                    read: op.invoke,
                    deadline_ms,
                    server_time_ms,
                },
            })
        })?;
    }
    Ok(())
}

/// How a read disagreed with the model.
enum Mismatch {
    Value {
        expected: String,
        got: String,
    },
    Deadline {
        expected: String,
        seen: Option<u64>,
    },
    Expired {
        deadline_ms: u64,
        server_time_ms: u64,
    },
}

type Flag<'a> = dyn FnMut(Slot, Mismatch) -> Result<(), RedisViolation> + 'a;

/// The model of a scenario's two keys.
#[derive(Default)]
struct Keys {
    models: [Model; 2],
    /// The replicated clock of the last read of each key (a lower bound for a later write's).
    clock: [u64; 2],
}

impl Keys {
    fn apply(&mut self, op: &ROp, flag: &mut Flag<'_>) -> Result<(), RedisViolation> {
        if op.result == RResult::Unknown || matches!(op.result, RResult::Failed(_)) {
            for slot in op.cmd.writes() {
                self.models[slot as usize] = Model::Unknown;
            }
            return Ok(());
        }
        match (op.cmd, &op.result) {
            (
                RCmd::Set {
                    key,
                    value,
                    deadline_at,
                },
                RResult::Ok,
            ) => {
                self.models[key as usize] = Model::Live {
                    value,
                    deadline: Deadline::Known(deadline_at),
                };
            }
            (RCmd::Del { key }, RResult::Int(_)) => self.models[key as usize] = Model::Absent,
            (RCmd::ExpireAt { key, at_ms }, RResult::Int(1)) => {
                if let Model::Live { deadline, .. } = &mut self.models[key as usize] {
                    *deadline = Deadline::Known(Some(at_ms));
                }
            }
            (RCmd::Expire { key, in_ms }, RResult::Int(1)) => {
                let after_ms = self.clock[key as usize];
                if let Model::Live { deadline, .. } = &mut self.models[key as usize] {
                    *deadline = Deadline::Relative { in_ms, after_ms };
                }
            }
            (RCmd::Rename { from, to, .. }, RResult::Ok) => {
                self.models[to as usize] = self.models[from as usize];
                self.models[from as usize] = Model::Absent;
            }
            (RCmd::Get { key }, RResult::Read { .. }) => {
                let (value, deadline_ms, now) = read_of(op, key).expect("a read");
                self.clock[key as usize] = now;
                if let (Some(_), Some(d)) = (value, deadline_ms) {
                    if d <= now {
                        return flag(
                            key,
                            Mismatch::Expired {
                                deadline_ms: d,
                                server_time_ms: now,
                            },
                        );
                    }
                }
                read_model(
                    &mut self.models[key as usize],
                    (value, deadline_ms, now),
                    key,
                    flag,
                )?;
            }
            // Refusals, "no such key" and zero counts change nothing.
            _ => {}
        }
        Ok(())
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or("no key".to_string(), |v| format!("value {v}"))
}

fn read_model(
    model: &mut Model,
    (value, seen, now): (Option<u64>, Option<u64>, u64),
    key: Slot,
    flag: &mut Flag<'_>,
) -> Result<(), RedisViolation> {
    let (v, deadline) = match *model {
        Model::Unknown => return Ok(()),
        Model::Absent if value.is_none() => return Ok(()),
        Model::Absent => {
            return flag(
                key,
                Mismatch::Value {
                    expected: "no key".into(),
                    got: show(value),
                },
            )
        }
        Model::Live { value, deadline } => (value, deadline),
    };
    // Past its deadline (or, not yet learnt, possibly past it) the key is gone for good.
    let may_be_gone = match deadline {
        Deadline::Known(d) => d.is_some_and(|d| d <= now),
        Deadline::Relative { in_ms, after_ms } => now >= after_ms.saturating_add(in_ms),
    };
    if value.is_none() && may_be_gone {
        *model = Model::Absent;
        return Ok(());
    }
    if value != Some(v) {
        return flag(
            key,
            Mismatch::Value {
                expected: show(Some(v)),
                got: show(value),
            },
        );
    }
    match deadline {
        Deadline::Known(d) if d != seen => flag(
            key,
            Mismatch::Deadline {
                expected: format!("{d:?}"),
                seen,
            },
        ),
        Deadline::Known(_) => Ok(()),
        Deadline::Relative { in_ms, after_ms } => {
            // Resolved when the write applied: not before `after_ms`, not after this read.
            let lo = after_ms.saturating_add(in_ms);
            if !seen.is_some_and(|d| d >= lo && d <= now.saturating_add(in_ms)) {
                return flag(
                    key,
                    Mismatch::Deadline {
                        expected: format!("{in_ms} ms after a time in [{after_ms}, {now}] ms"),
                        seen,
                    },
                );
            }
            *model = Model::Live {
                value: v,
                deadline: Deadline::Known(seen),
            };
            Ok(())
        }
    }
}

/// Plain SETs after a DEL of a live key: accepted only past the grace period.
fn check_grace(scenario: u32, ops: &[&ROp], grace_ms: u64) -> Result<(), RedisViolation> {
    for (d, del) in ops.iter().enumerate() {
        let (RCmd::Del { key }, RResult::Int(1)) = (del.cmd, &del.result) else {
            continue;
        };
        // The first write of the key after the DEL, if it is a plain SET that answered and
        // nothing unknown happened before it.
        let Some(s) = ops[d + 1..]
            .iter()
            .position(|o| o.cmd.writes().contains(&key))
            .map(|p| p + d + 1)
        else {
            continue;
        };
        let set = ops[s];
        let plain = matches!(
            set.cmd,
            RCmd::Set {
                deadline_at: None,
                ..
            }
        );
        if !plain || ops[..s].iter().any(|o| o.result == RResult::Unknown) {
            continue;
        }
        let clock = |o: &&ROp| read_of(o, key).map(|(_, _, t)| t);
        let before_del = ops[..d].iter().rev().find_map(clock);
        let between: Vec<u64> = ops[d + 1..s].iter().filter_map(clock).collect();
        let after_set = ops[s + 1..].iter().find_map(clock);
        match set.result {
            RResult::Ok => {
                if let (Some(lo), Some(hi)) = (before_del, after_set) {
                    let at_most_ms = hi.saturating_sub(lo);
                    if at_most_ms < grace_ms {
                        return Err(RedisViolation::GraceResurrection {
                            scenario,
                            del: del.invoke,
                            set: set.invoke,
                            at_most_ms,
                            grace_ms,
                        });
                    }
                }
            }
            RResult::Refused => {
                let at_least_ms = match (between.first(), between.last()) {
                    (Some(first), Some(last)) => last - first,
                    _ => 0,
                };
                if at_least_ms >= grace_ms {
                    return Err(RedisViolation::GraceFalseRefusal {
                        scenario,
                        del: del.invoke,
                        set: set.invoke,
                        at_least_ms,
                        grace_ms,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Slot = 0;
    const B: Slot = 1;

    /// A sequential history: each op completes before the next is invoked.
    fn history(ops: Vec<(RCmd, RResult)>) -> Vec<ROp> {
        ops.into_iter()
            .enumerate()
            .map(|(i, (cmd, result))| {
                let invoke = 2 * i as u64 + 1;
                ROp {
                    scenario: 7,
                    invoke,
                    complete: (result != RResult::Unknown).then_some(invoke + 1),
                    cmd,
                    result,
                }
            })
            .collect()
    }
    fn set(key: Slot, value: u64) -> (RCmd, RResult) {
        let cmd = RCmd::Set {
            key,
            value,
            deadline_at: None,
        };
        (cmd, RResult::Ok)
    }
    fn get(key: Slot, value: Option<u64>, deadline_ms: Option<u64>, at: u64) -> (RCmd, RResult) {
        let result = RResult::Read {
            value,
            deadline_ms,
            server_time_ms: at,
        };
        (RCmd::Get { key }, result)
    }
    fn rename(cross: bool, result: RResult) -> (RCmd, RResult) {
        let cmd = RCmd::Rename {
            from: A,
            to: B,
            cross,
        };
        (cmd, result)
    }
    fn class(ops: Vec<(RCmd, RResult)>, grace_ms: u64) -> Option<&'static str> {
        check(&history(ops), grace_ms).err().map(|v| v.class())
    }

    #[test]
    fn a_renamed_value_under_both_names_is_flagged_even_after_an_unknown_rename() {
        let moved = vec![
            set(A, 1),
            set(B, 2),
            rename(true, RResult::Unknown),
            get(A, None, None, 10),
            get(B, Some(1), None, 11),
        ];
        assert_eq!(class(moved, 0), None);
        // Before the fix: the destination's write timed out but applied, and the source was put
        // back as if it had been refused.
        let late = vec![
            set(A, 1),
            rename(true, RResult::Unknown),
            get(A, Some(1), None, 10),
            get(B, Some(1), None, 11),
        ];
        // Legal: the rename of unknown outcome took effect between the two reads (fresh seed
        // 2888857804383304246 flagged this before).
        assert_eq!(class(late, 0), None);
        let both = vec![
            set(A, 1),
            rename(true, RResult::Unknown),
            get(A, Some(1), None, 10),
            get(B, Some(1), None, 11),
            get(A, Some(1), None, 12),
        ];
        assert_eq!(class(both, 0), Some("RenameDuplicated"));
        let after_answer = vec![
            set(A, 1),
            rename(false, RResult::Ok),
            get(A, Some(1), None, 11),
            get(B, Some(1), None, 12),
        ];
        assert_eq!(class(after_answer, 0), Some("RenameDuplicated"));
        let same_group = vec![
            set(A, 1),
            rename(false, RResult::Ok),
            get(B, Some(1), None, 11),
            get(A, Some(1), None, 12),
        ];
        assert_eq!(class(same_group, 0), Some("RenameDuplicated"));
    }

    #[test]
    fn a_rename_that_answered_must_keep_the_value_under_one_name() {
        let lost_after_unknown = vec![
            set(A, 1),
            rename(true, RResult::Unknown),
            get(A, None, None, 10),
            get(B, None, None, 11),
        ];
        assert_eq!(
            class(lost_after_unknown, 0),
            None,
            "documented: a crash loses it"
        );
        let put_back = vec![
            set(A, 1),
            rename(true, RResult::Refused),
            get(A, Some(1), None, 10),
            get(B, None, None, 11),
        ];
        assert_eq!(class(put_back, 500), None);
        // Before the fix: the put-back of a refused cross-group rename was itself refused by
        // the grace period, and the key was gone.
        let lost = vec![
            set(A, 1),
            rename(
                true,
                RResult::Failed("restoring the source failed too".into()),
            ),
            get(A, None, None, 10),
            get(B, None, None, 11),
        ];
        assert_eq!(class(lost, 500), Some("RenameLost"));
    }

    #[test]
    fn reads_must_show_acknowledged_writes() {
        let ok = vec![
            set(A, 1),
            get(A, Some(1), None, 10),
            rename(false, RResult::Ok),
            get(A, None, None, 11),
            get(B, Some(1), None, 12),
            (RCmd::Del { key: B }, RResult::Int(1)),
            get(B, None, None, 13),
            rename(false, RResult::NoSuchKey),
        ];
        assert_eq!(class(ok, 0), None);
        let lost = vec![set(A, 1), set(A, 2), get(A, Some(1), None, 10)];
        assert_eq!(class(lost, 0), Some("LostWrite"));
        let deleted_visible = vec![
            set(A, 1),
            (RCmd::Del { key: A }, RResult::Int(1)),
            get(A, Some(1), None, 10),
        ];
        assert_eq!(class(deleted_visible, 0), Some("LostWrite"));
        let after_unknown = vec![
            set(A, 1),
            (RCmd::Del { key: A }, RResult::Unknown),
            get(A, Some(1), None, 10),
            get(A, None, None, 11),
        ];
        assert_eq!(class(after_unknown, 0), None);
    }

    fn del_then_set(gap_ms: u64, set_result: RResult, after: Option<u64>) -> Vec<(RCmd, RResult)> {
        let mut ops = vec![
            set(A, 1),
            get(A, Some(1), None, 1_000),
            (RCmd::Del { key: A }, RResult::Int(1)),
            get(A, None, None, 1_010),
            get(A, None, None, 1_010 + gap_ms),
        ];
        let accepted = set_result == RResult::Ok;
        let (cmd, _) = set(A, 2);
        ops.push((cmd, set_result));
        if let Some(t) = after {
            ops.push(get(A, accepted.then_some(2), None, t));
        }
        ops
    }

    #[test]
    fn a_plain_set_within_the_grace_period_of_a_del_must_be_refused() {
        assert_eq!(
            class(del_then_set(0, RResult::Refused, Some(1_020)), 500),
            None
        );
        assert_eq!(
            class(del_then_set(0, RResult::Ok, Some(1_020)), 500),
            Some("GraceResurrection")
        );
        // The read after the SET is late enough that the SET may have been past the grace.
        assert_eq!(class(del_then_set(0, RResult::Ok, Some(1_600)), 500), None);
        assert_eq!(class(del_then_set(0, RResult::Ok, Some(1_020)), 0), None);
    }

    #[test]
    fn a_plain_set_surely_after_the_grace_period_must_be_accepted() {
        assert_eq!(
            class(del_then_set(600, RResult::Ok, Some(1_620)), 500),
            None
        );
        assert_eq!(
            class(del_then_set(600, RResult::Refused, None), 500),
            Some("GraceFalseRefusal")
        );
        assert_eq!(class(del_then_set(300, RResult::Refused, None), 500), None);
        assert_eq!(
            class(del_then_set(0, RResult::Refused, None), 0),
            Some("GraceFalseRefusal"),
            "grace off: SET after DEL always creates the key"
        );
    }

    fn expire_then_reads(
        cmd: RCmd,
        reads: Vec<(Option<u64>, Option<u64>, u64)>,
    ) -> Vec<(RCmd, RResult)> {
        let mut ops = vec![
            set(A, 1),
            get(A, Some(1), None, 1_000),
            (cmd, RResult::Int(1)),
        ];
        ops.extend(reads.into_iter().map(|(v, d, t)| get(A, v, d, t)));
        ops
    }

    #[test]
    fn reads_never_move_an_absolute_deadline() {
        let at = RCmd::ExpireAt {
            key: A,
            at_ms: 2_000,
        };
        let steady = vec![
            (Some(1), Some(2_000), 1_100),
            (Some(1), Some(2_000), 1_999),
            (None, None, 2_000),
            (None, None, 2_500),
        ];
        assert_eq!(class(expire_then_reads(at, steady), 0), None);
        let extended = vec![(Some(1), Some(2_000), 1_100), (Some(1), Some(2_100), 1_200)];
        assert_eq!(
            class(expire_then_reads(at, extended), 0),
            Some("DeadlineMoved")
        );
        let early = vec![(None, None, 1_500)];
        assert_eq!(class(expire_then_reads(at, early), 0), Some("LostWrite"));
        let relative = RCmd::Expire { key: A, in_ms: 500 };
        let resolved = vec![(Some(1), Some(1_550), 1_100), (Some(1), Some(1_550), 1_300)];
        assert_eq!(class(expire_then_reads(relative, resolved), 0), None);
        // Resolved at the read's time, not the write's: reads extended it.
        let from_read = vec![(Some(1), Some(1_550), 1_100), (Some(1), Some(1_800), 1_300)];
        assert_eq!(
            class(expire_then_reads(relative, from_read), 0),
            Some("DeadlineMoved")
        );
        let too_late = vec![(Some(1), Some(1_700), 1_100)];
        assert_eq!(
            class(expire_then_reads(relative, too_late), 0),
            Some("DeadlineMoved")
        );
    }

    #[test]
    fn a_key_returned_at_its_deadline_is_flagged_even_when_unknown() {
        let at = RCmd::ExpireAt {
            key: A,
            at_ms: 2_000,
        };
        let at_deadline = vec![(Some(1), Some(2_000), 2_000)];
        assert_eq!(
            class(expire_then_reads(at, at_deadline), 0),
            Some("ExpiredRead")
        );
        let unknown = vec![
            set(A, 1),
            (at, RResult::Unknown),
            get(A, Some(1), Some(2_000), 2_001),
        ];
        assert_eq!(class(unknown, 0), Some("ExpiredRead"));
    }
}
