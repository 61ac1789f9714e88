//! The session-lifecycle promises the linearizability checker does not state: rotations,
//! principals and their limits, access times and deadlines.
//!
//! | promise | check | violation |
//! |---|---|---|
//! | the old id of a rotation is dead from the rotation on (at most one live copy) | [`check_rotated_ids`] | [`LifeViolation::RotatedIdAlive`] |
//! | never more sessions of a principal than its limit | [`check_principals`] | [`LifeViolation::OverLimit`] |
//! | a login is refused only at the limit | [`check_principals`] | [`LifeViolation::FalseRefusal`] |
//! | no session of a principal ends without a cause (invalidation, expiry, eviction) | [`check_principals`] | [`LifeViolation::EndedWithoutCause`] |
//! | a session's expiry never moves backwards (no idle-timeout changes in the workload) | [`check_access`] | [`LifeViolation::AccessWentBackwards`] |
//! | no read returns a session past its deadline as of the read's replicated time | [`check_principals`] (login probes); [`crate::checker`] (workload keys) | [`LifeViolation::ExpiredRead`] |
//!
//! Like [`crate::checker`], every rule uses only what holds in every linearization: acknowledged
//! results, observations of definite ops, and real-time order between definite ops (an op that
//! completed before another was invoked took effect first). An Unknown op may have taken effect
//! at any time after its invocation, so it can always be a cause and never be a proof. Versions
//! are compared for equality and order only: nothing here assumes a version is a log index.
//!
//! # Adding a promise of your own
//!
//! Record what your deployment's clients see (an op, its invoke and complete ticks, its result),
//! then write a function from that record to `Result<(), LifeViolation>` that flags only what no
//! linearization allows, add a hand-made history that breaks it to the tests below, and call it
//! from `harness::check_history`. See sim/README.md.

use std::collections::BTreeMap;
use std::fmt;

use crate::checker::{Op, OpKind, Outcome};

/// A login handle: the harness numbers the ids it logs in as.
pub type SessionNo = u64;

/// What a login returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The session exists under the new id; the replicated time of the login.
    Ok { server_time_ms: u64 },
    /// Refused by the principal's limit.
    Refused,
    /// Definitely did not create the session (the anonymous session was gone, or the id taken).
    Failed,
    /// May or may not have happened.
    Unknown,
}

/// One lifecycle operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifeKind {
    /// Log `principal` in under a new id `session`.
    Login {
        principal: u32,
        session: SessionNo,
        outcome: LoginOutcome,
    },
    /// "Log out everywhere" for `principal`; `done` if acknowledged (else Unknown; a definite
    /// failure is not recorded, it changed nothing).
    Invalidate { principal: u32, done: bool },
    /// A read of a logged-in session: its expiry if found, and the replicated time of the read.
    Probe {
        session: SessionNo,
        found: Option<u64>,
        server_time_ms: u64,
    },
    /// A linearizable read of the principal's live sessions (`others`: ids the harness did not
    /// log in, which must not exist).
    SessionsOf {
        principal: u32,
        sessions: Vec<SessionNo>,
        others: usize,
    },
}

/// One recorded lifecycle operation with its real-time span (ticks of the harness clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifeOp {
    pub invoke: u64,
    /// `None` if it never returned (then the outcome is Unknown).
    pub complete: Option<u64>,
    pub kind: LifeKind,
}

impl LifeOp {
    fn complete_or_never(&self) -> u64 {
        self.complete.unwrap_or(u64::MAX)
    }

    /// Whether this op can have ended sessions of `principal` before real time `by`.
    fn can_end_sessions_of(&self, principal: u32, by: u64, evict: bool) -> bool {
        if self.invoke >= by {
            return false;
        }
        match &self.kind {
            LifeKind::Invalidate { principal: p, .. } => *p == principal,
            LifeKind::Login {
                principal: p,
                outcome: LoginOutcome::Ok { .. } | LoginOutcome::Unknown,
                ..
            } => evict && *p == principal,
            _ => false,
        }
    }
}

/// The deployment's rules the checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifeOptions {
    /// Sessions one principal may hold.
    pub limit: u32,
    /// `true`: a login beyond the limit is refused; `false`: it ends the oldest session.
    pub refuse: bool,
    /// Every session's idle timeout (the workload never changes it).
    pub idle_timeout_ms: u64,
    /// Sessions outlive the run, so an absence in `sessions_of` (which carries no time) cannot
    /// be expiry.
    pub no_expiry: bool,
}

/// A broken lifecycle promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifeViolation {
    /// An op found a rotated-away id alive after the rotation completed.
    RotatedIdAlive { key: u64, rotate: u64, op: u64 },
    /// A principal held more sessions than its limit.
    OverLimit {
        principal: u32,
        sessions: usize,
        limit: u32,
    },
    /// A login was refused although the principal cannot have been at its limit.
    FalseRefusal {
        principal: u32,
        session: SessionNo,
        live_at_most: usize,
    },
    /// A logged-in session vanished with no invalidation, no expiry and no eviction to explain it.
    EndedWithoutCause {
        principal: u32,
        session: SessionNo,
        seen_gone_at_ms: Option<u64>,
    },
    /// A read showed an earlier expiry than an earlier write or read guaranteed.
    AccessWentBackwards {
        key: String,
        floor_ms: u64,
        seen_ms: u64,
    },
    /// A probe returned a session whose deadline had passed at the probe's replicated time.
    ExpiredRead {
        session: SessionNo,
        expires_at_ms: u64,
        server_time_ms: u64,
    },
}

impl LifeViolation {
    /// Short class name, stable for tests and dashboards.
    pub fn class(&self) -> &'static str {
        match self {
            LifeViolation::RotatedIdAlive { .. } => "RotatedIdAlive",
            LifeViolation::OverLimit { .. } => "OverLimit",
            LifeViolation::FalseRefusal { .. } => "FalseRefusal",
            LifeViolation::EndedWithoutCause { .. } => "EndedWithoutCause",
            LifeViolation::AccessWentBackwards { .. } => "AccessWentBackwards",
            LifeViolation::ExpiredRead { .. } => "ExpiredRead",
        }
    }
}

impl fmt::Display for LifeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifeViolation::RotatedIdAlive { key, rotate, op } => write!(
                f,
                "two live copies: op {op} found key {key} alive after its rotation (op {rotate}) \
                 completed"
            ),
            LifeViolation::OverLimit {
                principal,
                sessions,
                limit,
            } => write!(
                f,
                "principal limit: principal {principal} holds {sessions} sessions, limit {limit}"
            ),
            LifeViolation::FalseRefusal {
                principal,
                session,
                live_at_most,
            } => write!(
                f,
                "login {session} of principal {principal} refused, but at most {live_at_most} of \
                 its sessions can have been live"
            ),
            LifeViolation::EndedWithoutCause {
                principal,
                session,
                seen_gone_at_ms,
            } => write!(
                f,
                "session {session} of principal {principal} ended without a cause (no \
                 invalidation, eviction or expiry; seen gone at server time {seen_gone_at_ms:?})"
            ),
            LifeViolation::AccessWentBackwards {
                key,
                floor_ms,
                seen_ms,
            } => write!(
                f,
                "access time went backwards: {key} was seen expiring at {seen_ms} ms after a \
                 write or read guaranteed at least {floor_ms} ms"
            ),
            LifeViolation::ExpiredRead {
                session,
                expires_at_ms,
                server_time_ms,
            } => write!(
                f,
                "expired read: login session {session} returned expiring at {expires_at_ms} ms at \
                 server time {server_time_ms} ms"
            ),
        }
    }
}

impl std::error::Error for LifeViolation {}

/// A successful rotation of workload key `key` by op `op`, which returned at tick `complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotatedAway {
    pub key: u64,
    pub op: u64,
    pub complete: u64,
}

/// The old id of every successful rotation is dead from the rotation's completion on: no op
/// invoked afterwards may find it present (it would be a second live copy of the session).
///
/// # Errors
///
/// [`LifeViolation::RotatedIdAlive`].
pub fn check_rotated_ids(history: &[Op], rotations: &[RotatedAway]) -> Result<(), LifeViolation> {
    for r in rotations {
        let alive = history.iter().find(|o| {
            o.key == r.key && o.invoke > r.complete && o.is_definite() && proves_present(o)
        });
        if let Some(o) = alive {
            return Err(LifeViolation::RotatedIdAlive {
                key: r.key,
                rotate: r.op,
                op: o.id,
            });
        }
    }
    Ok(())
}

fn proves_present(op: &Op) -> bool {
    match (&op.kind, &op.outcome) {
        (OpKind::Create { .. }, _) => false,
        (_, Outcome::Ok { .. } | Outcome::Conflict { .. }) => true,
        (_, Outcome::Read { found, .. }) => found.is_some(),
        _ => false,
    }
}

/// Expiry floors: an acknowledged create, update or touch at server time `s` guarantees an
/// expiry of at least `s + idle` from its completion on; a read that found expiry `e`
/// guarantees `e`. No later read may show less (only an explicit write of the idle timeout
/// could lower it, and the workload never does).
///
/// # Errors
///
/// [`LifeViolation::AccessWentBackwards`].
pub fn check_access(history: &[Op], idle_timeout_ms: u64) -> Result<(), LifeViolation> {
    let mut by_key: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|o| o.is_definite()) {
        by_key.entry(op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        let mut floors: Vec<(u64, u64)> = Vec::new();
        let mut reads: Vec<(u64, u64)> = Vec::new();
        for o in ops {
            let Some(complete) = o.complete else { continue };
            match (&o.kind, &o.outcome) {
                (
                    OpKind::Create { .. } | OpKind::Put { .. } | OpKind::Touch,
                    Outcome::Ok { server_time_ms, .. },
                ) => floors.push((complete, server_time_ms.saturating_add(idle_timeout_ms))),
                (
                    OpKind::Get,
                    Outcome::Read {
                        found: Some(rv), ..
                    },
                ) => {
                    floors.push((complete, rv.expires_at_ms));
                    reads.push((o.invoke, rv.expires_at_ms));
                }
                _ => {}
            }
        }
        monotone(&format!("key {key}"), floors, &reads)?;
    }
    Ok(())
}

/// `(real time, expiry in ms)`: a floor from its completion, or a sighting at its invocation.
type Floor = (u64, u64);

/// Every `(invoke, seen)` must be at least every floor `(complete, floor)` completed before it.
fn monotone(
    what: &str,
    mut floors: Vec<(u64, u64)>,
    reads: &[(u64, u64)],
) -> Result<(), LifeViolation> {
    floors.sort_unstable();
    let mut best = Vec::with_capacity(floors.len());
    let mut max = 0;
    for (_, f) in &floors {
        max = max.max(*f);
        best.push(max);
    }
    for (invoke, seen) in reads {
        let before = floors.partition_point(|(c, _)| c < invoke);
        if before > 0 && *seen < best[before - 1] {
            return Err(LifeViolation::AccessWentBackwards {
                key: what.to_string(),
                floor_ms: best[before - 1],
                seen_ms: *seen,
            });
        }
    }
    Ok(())
}

/// Principals and their limits (see the module table).
///
/// # Errors
///
/// The first [`LifeViolation`] found.
pub fn check_principals(ops: &[LifeOp], opts: LifeOptions) -> Result<(), LifeViolation> {
    let logins: BTreeMap<SessionNo, (u32, &LifeOp)> = ops
        .iter()
        .filter_map(|o| match &o.kind {
            LifeKind::Login {
                principal, session, ..
            } => Some((*session, (*principal, o))),
            _ => None,
        })
        .collect();
    for o in ops {
        match &o.kind {
            LifeKind::SessionsOf {
                principal,
                sessions,
                others,
            } if sessions.len() + others > opts.limit as usize => {
                return Err(LifeViolation::OverLimit {
                    principal: *principal,
                    sessions: sessions.len() + others,
                    limit: opts.limit,
                })
            }
            LifeKind::Probe {
                session,
                found: Some(expires_at_ms),
                server_time_ms,
            } if expires_at_ms <= server_time_ms => {
                return Err(LifeViolation::ExpiredRead {
                    session: *session,
                    expires_at_ms: *expires_at_ms,
                    server_time_ms: *server_time_ms,
                })
            }
            _ => {}
        }
    }
    for (session, (principal, login)) in &logins {
        check_login(ops, opts, *session, *principal, login)?;
    }
    let mut probes: BTreeMap<SessionNo, (Vec<Floor>, Vec<Floor>)> = BTreeMap::new();
    for o in ops {
        let Some(complete) = o.complete else { continue };
        match &o.kind {
            LifeKind::Probe {
                session,
                found: Some(e),
                ..
            } => {
                let entry = probes.entry(*session).or_default();
                entry.0.push((complete, *e));
                entry.1.push((o.invoke, *e));
            }
            LifeKind::Login {
                session,
                outcome: LoginOutcome::Ok { server_time_ms },
                ..
            } => probes.entry(*session).or_default().0.push((
                complete,
                server_time_ms.saturating_add(opts.idle_timeout_ms),
            )),
            _ => {}
        }
    }
    for (session, (floors, reads)) in probes {
        monotone(&format!("login session {session}"), floors, &reads)?;
    }
    Ok(())
}

/// One login: a refusal must be explainable by `limit` possibly live sessions, and a success
/// must not vanish without a cause.
fn check_login(
    ops: &[LifeOp],
    opts: LifeOptions,
    session: SessionNo,
    principal: u32,
    login: &LifeOp,
) -> Result<(), LifeViolation> {
    let LifeKind::Login { outcome, .. } = login.kind else {
        return Ok(());
    };
    match outcome {
        LoginOutcome::Refused if opts.refuse => {
            let live = possibly_live(ops, principal, session, login);
            if live < opts.limit as usize {
                return Err(LifeViolation::FalseRefusal {
                    principal,
                    session,
                    live_at_most: live,
                });
            }
        }
        LoginOutcome::Ok { server_time_ms } => {
            let done = login.complete_or_never();
            let expired_by = server_time_ms.saturating_add(opts.idle_timeout_ms);
            for gone in ops
                .iter()
                .filter(|o| o.invoke > done && o.complete.is_some())
            {
                let seen_gone_at_ms = match &gone.kind {
                    LifeKind::Probe {
                        session: s,
                        found: None,
                        server_time_ms,
                    } if *s == session && *server_time_ms < expired_by => Some(*server_time_ms),
                    LifeKind::SessionsOf {
                        principal: p,
                        sessions,
                        ..
                    } if *p == principal && opts.no_expiry && !sessions.contains(&session) => None,
                    _ => continue,
                };
                let by = gone.complete_or_never();
                let caused = ops.iter().any(|c| {
                    !std::ptr::eq(c, login) && c.can_end_sessions_of(principal, by, !opts.refuse)
                });
                if !caused {
                    return Err(LifeViolation::EndedWithoutCause {
                        principal,
                        session,
                        seen_gone_at_ms,
                    });
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// How many sessions of `principal` other than `session` can have been live when `refusal`
/// took effect: logins that may have happened by then and were not known gone before it began.
fn possibly_live(ops: &[LifeOp], principal: u32, session: SessionNo, refusal: &LifeOp) -> usize {
    let (start, end) = (refusal.invoke, refusal.complete_or_never());
    ops.iter()
        .filter(|o| match &o.kind {
            LifeKind::Login {
                principal: p,
                session: s,
                outcome: LoginOutcome::Ok { .. } | LoginOutcome::Unknown,
            } => *p == principal && *s != session && o.invoke < end,
            _ => false,
        })
        .filter(|login| {
            // Only a login known to have happened is known gone once seen gone: an Unknown one
            // may still land afterwards.
            let LifeKind::Login {
                session: s,
                outcome: LoginOutcome::Ok { .. },
                ..
            } = login.kind
            else {
                return true;
            };
            let login_done = login.complete_or_never();
            !ops.iter().any(|o| {
                let before = o.complete.is_some_and(|c| c < start);
                match &o.kind {
                    LifeKind::Probe {
                        session: x,
                        found: None,
                        ..
                    } => before && *x == s && o.invoke > login_done,
                    LifeKind::Invalidate {
                        principal: p,
                        done: true,
                    } => before && *p == principal && o.invoke > login_done,
                    _ => false,
                }
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::ReadValue;

    const OPTS: LifeOptions = LifeOptions {
        limit: 2,
        refuse: true,
        idle_timeout_ms: 1_000,
        no_expiry: false,
    };

    fn life(invoke: u64, complete: u64, kind: LifeKind) -> LifeOp {
        LifeOp {
            invoke,
            complete: Some(complete),
            kind,
        }
    }
    fn login(session: SessionNo, span: (u64, u64), outcome: LoginOutcome) -> LifeOp {
        life(
            span.0,
            span.1,
            LifeKind::Login {
                principal: 0,
                session,
                outcome,
            },
        )
    }
    fn ok_at(server_time_ms: u64) -> LoginOutcome {
        LoginOutcome::Ok { server_time_ms }
    }
    fn probe(session: SessionNo, span: (u64, u64), found: Option<u64>, at: u64) -> LifeOp {
        life(
            span.0,
            span.1,
            LifeKind::Probe {
                session,
                found,
                server_time_ms: at,
            },
        )
    }
    fn class(ops: &[LifeOp], opts: LifeOptions) -> Result<(), &'static str> {
        check_principals(ops, opts).map_err(|v| v.class())
    }

    #[test]
    fn a_session_vanishing_without_a_cause_is_flagged() {
        // Two logins fill the limit; a third is (wrongly) admitted and evicts the first.
        let mut ops = vec![
            login(1, (1, 2), ok_at(100)),
            login(2, (3, 4), ok_at(110)),
            login(3, (5, 6), ok_at(120)),
            probe(1, (7, 8), None, 130),
        ];
        assert_eq!(class(&ops, OPTS), Err("EndedWithoutCause"));
        // The same absence is fine after an invalidation, after its deadline, or where the
        // policy evicts.
        let mut invalidated = ops.clone();
        invalidated.push(life(
            6,
            9,
            LifeKind::Invalidate {
                principal: 0,
                done: false,
            },
        ));
        assert_eq!(class(&invalidated, OPTS), Ok(()));
        ops[3] = probe(1, (7, 8), None, 1_100);
        assert_eq!(class(&ops, OPTS), Ok(()), "expired at 100 + 1000");
        ops[3] = probe(1, (7, 8), None, 130);
        let evicting = LifeOptions {
            refuse: false,
            ..OPTS
        };
        assert_eq!(class(&ops, evicting), Ok(()));
        // Seen through sessions_of when nothing expires.
        let listed = vec![
            login(1, (1, 2), ok_at(100)),
            life(
                3,
                4,
                LifeKind::SessionsOf {
                    principal: 0,
                    sessions: vec![],
                    others: 0,
                },
            ),
        ];
        let forever = LifeOptions {
            no_expiry: true,
            ..OPTS
        };
        assert_eq!(class(&listed, forever), Err("EndedWithoutCause"));
        assert_eq!(class(&listed, OPTS), Ok(()), "it may have expired");
    }

    #[test]
    fn a_refusal_below_the_limit_is_flagged() {
        let mut ops = vec![
            login(1, (1, 2), ok_at(100)),
            login(2, (5, 6), LoginOutcome::Refused),
        ];
        assert_eq!(class(&ops, OPTS), Err("FalseRefusal"));
        // A concurrent Unknown login can fill the limit.
        ops.push(login(3, (4, 4), LoginOutcome::Unknown));
        assert_eq!(class(&ops, OPTS), Ok(()));
        // Not if it was seen gone before the refusal began.
        ops.push(probe(3, (4, 4), None, 200));
        ops.push(probe(3, (5, 5), None, 200));
        assert_eq!(
            class(&ops, OPTS),
            Ok(()),
            "the probe at 4 overlaps the login"
        );
        // An Unknown login seen gone may still land later; a successful one seen gone is gone.
        let mut gone = ops.clone();
        gone[2] = login(3, (2, 3), LoginOutcome::Unknown);
        gone[3] = probe(3, (4, 4), None, 1_200);
        gone.pop();
        assert_eq!(class(&gone, OPTS), Ok(()));
        gone[2] = login(3, (2, 3), ok_at(105));
        assert_eq!(class(&gone, OPTS), Err("FalseRefusal"));
    }

    #[test]
    fn over_limit_and_expired_probes_are_flagged() {
        let over = vec![life(
            1,
            2,
            LifeKind::SessionsOf {
                principal: 0,
                sessions: vec![1, 2],
                others: 1,
            },
        )];
        assert_eq!(class(&over, OPTS), Err("OverLimit"));
        let expired = vec![
            login(1, (1, 2), ok_at(100)),
            probe(1, (3, 4), Some(1_100), 1_100),
        ];
        assert_eq!(class(&expired, OPTS), Err("ExpiredRead"));
        let backwards = vec![
            login(1, (1, 2), ok_at(100)),
            probe(1, (3, 4), Some(1_500), 400),
            probe(1, (5, 6), Some(1_300), 500),
        ];
        assert_eq!(class(&backwards, OPTS), Err("AccessWentBackwards"));
        let fine = vec![
            login(1, (1, 2), ok_at(100)),
            probe(1, (3, 4), Some(1_500), 400),
            probe(1, (3, 6), Some(1_300), 500),
        ];
        assert_eq!(
            class(&fine, OPTS),
            Ok(()),
            "overlapping probes are unordered"
        );
    }

    fn op(id: u64, key: u64, kind: OpKind, span: (u64, u64), outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            group: 0,
            key,
            kind,
            invoke: span.0,
            complete: Some(span.1),
            outcome,
        }
    }
    fn read(id: u64, span: (u64, u64), expires_at_ms: u64, at: u64) -> Op {
        let found = Some(ReadValue {
            version: 1,
            value: 7,
            expires_at_ms,
        });
        op(
            id,
            1,
            OpKind::Get,
            span,
            Outcome::Read {
                found,
                server_time_ms: at,
            },
        )
    }

    #[test]
    fn expiry_moving_backwards_is_flagged() {
        let touch = op(
            2,
            1,
            OpKind::Touch,
            (3, 4),
            Outcome::Ok {
                version: 1,
                server_time_ms: 500,
            },
        );
        // Touched at 500 (idle 1000): a read after it must show at least 1500.
        let h = vec![touch.clone(), read(3, (5, 6), 1_200, 600)];
        assert_eq!(
            check_access(&h, 1_000).map_err(|v| v.class()),
            Err("AccessWentBackwards")
        );
        let concurrent = vec![touch.clone(), read(3, (2, 6), 1_200, 600)];
        assert_eq!(check_access(&concurrent, 1_000), Ok(()));
        let reads = vec![read(1, (1, 2), 1_600, 600), read(3, (3, 4), 1_500, 700)];
        assert_eq!(
            check_access(&reads, 1_000).map_err(|v| v.class()),
            Err("AccessWentBackwards")
        );
        let after = vec![touch, read(3, (5, 6), 1_500, 600)];
        assert_eq!(check_access(&after, 1_000), Ok(()));
    }

    #[test]
    fn a_rotated_away_id_found_alive_is_flagged() {
        let rotation = RotatedAway {
            op: 1,
            key: 1,
            complete: 4,
        };
        let concurrent = vec![read(2, (3, 5), 1_000, 10)];
        assert_eq!(check_rotated_ids(&concurrent, &[rotation]), Ok(()));
        let after = vec![read(2, (5, 6), 1_000, 10)];
        assert_eq!(
            check_rotated_ids(&after, &[rotation]).map_err(|v| v.class()),
            Err("RotatedIdAlive")
        );
    }
}
