//! The session state machine: pure, deterministic, and the single source of truth for what a
//! session is.
//!
//! **Architecture invariants:**
//! - It never reads a clock or an RNG. Time is the replicated clock: the maximum of the leader
//!   stamps of every applied request, so every replica computes the same expiry.
//! - Every collection is ordered (`BTreeMap`, `BTreeSet`, `VecDeque` in apply order), so two
//!   replicas that applied the same log hold byte-identical state (see [`SessionState::digest`]).
//! - A session's version is the position in the log ([`crate::command::version_at`]: log index
//!   and place in that entry) of the last command that changed its data; touches do
//!   not change it, so a read that extends the idle timeout never breaks a compare-and-set.
//! - Delete wins: a deleted or expired id is tombstoned and cannot be created again while the
//!   tombstone is kept ([`crate::limits::TOMBSTONE_RETENTION_MS`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::command::{Attributes, Command, Limits, Origin, Outcome, Request, Response, WhenFull};
use crate::id::SessionId;
use crate::limits;
pub use crate::session::Session;
use crate::teeth::{self, Bug};

mod redis;

/// A state image that no state machine could have produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid state image: {0}")]
pub struct InvalidImage(pub String);

/// What happened to sessions, stamped with the log position (version) of the command that did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The command's position in the log ([`crate::command::version_at`]); a watch resumes
    /// from the last seen `index + 1`.
    pub index: u64,
    /// Replicated time of the command.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of [`Event`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A session was created.
    Created(SessionId),
    /// A session's data changed.
    Updated(SessionId),
    /// Sessions read since the last batch had their idle deadline extended.
    TouchedInBatch(Vec<SessionId>),
    /// A session expired.
    Expired(SessionId),
    /// A session was deleted (or evicted, or invalidated with its principal).
    Deleted(SessionId),
    /// A session moved to a new id.
    Rotated {
        /// The old, now dead id.
        from: SessionId,
        /// The new id.
        to: SessionId,
    },
    /// A Redis key was deleted (`DEL`, `UNLINK`, `GETDEL`, an emptied hash or set, a deadline
    /// set in the past): what `Deleted` is for a session, with the key's name, which keyspace
    /// notifications (`__keyevent@0__:del`) carry. A key moved by `RENAME` is `Deleted`.
    KeyDeleted {
        /// The key's session id.
        id: SessionId,
        /// The key's name.
        name: Vec<u8>,
    },
    /// A Redis key's deadline passed (`__keyevent@0__:expired`): `Expired`, with the name.
    KeyExpired {
        /// The key's session id.
        id: SessionId,
        /// The key's name.
        name: Vec<u8>,
    },
}

/// The whole replicated state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// The replicated clock: the largest leader stamp applied so far.
    clock_ms: u64,
    /// Live sessions (some may be past their deadline until the next access or purge). A
    /// persistent map of shared sessions: [`SessionState::view`] takes it in O(1), and a write
    /// copies only the path (and the session) it changes while a snapshot still holds the old.
    sessions: OrdMap<SessionId, Arc<Session>>,
    /// `(expires_at_ms, id)` for every live session, to purge in deadline order.
    expiry: BTreeSet<(u64, SessionId)>,
    /// Ids that died at the given time and must not be created again.
    tombstones: OrdMap<SessionId, u64>,
    /// `(died_at_ms, id)`, to forget the oldest tombstones first.
    tombstone_order: BTreeSet<(u64, SessionId)>,
    /// Results of recent writes, returned again when a client retries.
    dedup: OrdMap<Origin, Response>,
    /// Dedup keys in apply order with their apply time, for bounded retention.
    dedup_order: VecDeque<(u64, Origin)>,
    /// Sessions by principal.
    principals: BTreeMap<String, BTreeSet<SessionId>>,
    /// `(accessed_ms, id)` of every live session, for least-recently-used eviction.
    lru: BTreeSet<(u64, SessionId)>,
    /// The most recent events, oldest first (at most [`limits::EVENTS_RETAINED`]).
    events: VecDeque<Event>,
    /// Bytes of live sessions' attributes ([`Session::encoded_bytes`]), for compaction.
    bytes: u64,
    /// Order-independent sum of every live session's and tombstone's fingerprint, kept
    /// up to date on every change, so [`SessionState::digest`] costs nothing at any size.
    fingerprints: u64,
    /// Version (log position) of the command being applied (events are stamped with it).
    applying: u64,
}

/// What a read returns: a consistent view of one session at one point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session's id.
    pub id: SessionId,
    /// Its attributes.
    #[serde(with = "crate::session::byte_serde::map")]
    pub attributes: Attributes,
    /// Its version.
    pub version: u64,
    /// Replicated time of creation.
    pub created_ms: u64,
    /// Replicated time of the last access.
    pub accessed_ms: u64,
    /// Max-inactive interval.
    pub idle_timeout_ms: u64,
    /// Absolute deadline, if any.
    pub deadline_ms: Option<u64>,
    /// When it expires unless touched.
    pub expires_at_ms: u64,
    /// The replicated clock at the read.
    pub server_time_ms: u64,
    /// The user this session belongs to.
    pub principal: Option<String>,
}

/// The serialized form of [`SessionState`], used in snapshots and backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateImage {
    /// The replicated clock.
    pub clock_ms: u64,
    /// Live sessions in id order.
    pub sessions: Vec<(SessionId, Session)>,
    /// Tombstones in id order.
    pub tombstones: Vec<(SessionId, u64)>,
    /// Dedup entries in apply order.
    pub dedup: Vec<(u64, Origin, Response)>,
    /// Retained events, oldest first.
    pub events: Vec<Event>,
}

impl SessionState {
    /// The replicated clock.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The number of stored sessions (including ones past their deadline not yet purged).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The earliest deadline of any stored session.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Reads a session as of the replicated clock; an expired session is never returned.
    pub fn get(&self, id: &SessionId) -> Option<SessionView> {
        let s = self.sessions.get(id)?;
        let expires_at_ms = s.expires_at_ms();
        // Deliberately wrong in a teeth build (simulation only): expiry left to the purge.
        if expires_at_ms <= self.clock_ms && !teeth::planted(Bug::ExpiredGet) {
            return None;
        }
        Some(SessionView {
            id: *id,
            attributes: s.attributes.to_map(),
            version: s.version,
            created_ms: s.created_ms,
            accessed_ms: s.accessed_ms,
            idle_timeout_ms: s.idle_timeout_ms,
            deadline_ms: s.deadline_ms,
            expires_at_ms,
            server_time_ms: self.clock_ms,
            principal: s.principal.clone(),
        })
    }

    /// Live sessions of a principal, as of the replicated clock.
    pub fn sessions_of(&self, principal: &str) -> Vec<SessionId> {
        self.principals
            .get(principal)
            .map(|ids| {
                ids.iter()
                    .filter(|id| self.get(id).is_some())
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Events with index `>= from`, at most `max`; `Err(first)` if `from` was compacted away
    /// (`first` is the oldest retained index).
    pub fn events_from(&self, from: u64, max: usize) -> Result<Vec<Event>, u64> {
        if let Some(first) = self.events.front() {
            if from < first.index && self.events_compacted() {
                return Err(first.index);
            }
        }
        // Never split one command's events across batches: a watcher resumes from the last
        // index + 1.
        let mut out: Vec<Event> = Vec::new();
        for e in self.events.iter().filter(|e| e.index >= from) {
            if out.len() >= max && out.last().is_some_and(|l| l.index != e.index) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Whether older events than the oldest retained one were dropped.
    fn events_compacted(&self) -> bool {
        self.events.len() >= limits::EVENTS_RETAINED
    }

    /// The oldest retained event index, if any.
    pub fn first_event_index(&self) -> Option<u64> {
        self.events.front().map(|e| e.index)
    }

    fn emit(&mut self, kind: EventKind) {
        self.events.push_back(Event {
            index: self.applying,
            at_ms: self.clock_ms,
            kind,
        });
        while self.events.len() > limits::EVENTS_RETAINED {
            self.events.pop_front();
        }
    }

    /// Applies one committed request; `version` is its place in the log
    /// ([`crate::command::version_at`]): the version of what it writes and the index of its events.
    pub fn apply(&mut self, version: u64, request: &Request) -> Response {
        self.applying = version;
        self.clock_ms = if teeth::planted(Bug::LocalClock) {
            // Deliberately wrong (simulation teeth only): each leader's own clock decides expiry.
            request.now_ms
        } else {
            self.clock_ms.max(request.now_ms)
        };
        if let Some(origin) = request.origin {
            if let Some(previous) = self.dedup.get(&origin) {
                self.applying = 0;
                return previous.clone();
            }
        }
        if let Some(id) = request.command.session() {
            self.expire_if_due(&id);
        }
        let outcome = self.execute(version, &request.command);
        let response = Response {
            server_time_ms: self.clock_ms,
            outcome,
        };
        if let Some(origin) = request.origin {
            self.remember(origin, response.clone());
        }
        self.trim_dedup();
        self.applying = 0;
        response
    }

    fn execute(&mut self, version: u64, command: &Command) -> Outcome {
        match command {
            Command::Create {
                id,
                attributes,
                idle_timeout_ms,
                lifetime_ms,
                principal,
                limits,
            } => {
                if let Some(rejection) = empty_name(attributes.keys()) {
                    return rejection;
                }
                let now = self.clock_ms;
                let session = Session {
                    attributes: attributes.into(),
                    created_ms: now,
                    accessed_ms: now,
                    idle_timeout_ms: *idle_timeout_ms,
                    deadline_ms: lifetime_ms.map(|l| now.saturating_add(l)),
                    version,
                    principal: principal.clone(),
                };
                self.admit(version, *id, session, limits, EventKind::Created(*id))
            }
            Command::Rotate {
                old,
                new,
                principal,
                limits,
            } => self.rotate(version, old, new, principal, limits),
            Command::RotateOut { old, new } => self.rotate_out(old, new),
            Command::RotateIn {
                new,
                from,
                session,
                principal,
                limits,
            } => self.rotate_in(version, new, from, session, principal, limits),
            Command::InvalidatePrincipal { principal } => self.invalidate_principal(principal),
            Command::TouchBatch { reads } => self.touch_batch(reads),
            Command::Update {
                id,
                set,
                remove,
                expected_version,
                idle_timeout_ms,
            } => self.update(
                version,
                id,
                set,
                remove,
                *expected_version,
                *idle_timeout_ms,
            ),
            Command::Touch { id } => {
                let now = self.clock_ms;
                match self.modify(id, |s| s.accessed_ms = now) {
                    Some(version) => Outcome::Ok { version },
                    None => Outcome::NotFound,
                }
            }
            Command::Delete {
                id,
                expected_version,
            } => {
                if let Err(refusal) = self.guard(id, *expected_version) {
                    return refusal;
                }
                self.kill(id);
                self.emit(EventKind::Deleted(*id));
                Outcome::Ok { version }
            }
            Command::Expire => Outcome::Purged {
                sessions: self.purge_expired(),
            },
            Command::Redis(batch) => self.apply_redis(version, batch),
        }
    }

    fn rotate(
        &mut self,
        version: u64,
        old: &SessionId,
        new: &SessionId,
        principal: &Option<String>,
        limits: &Limits,
    ) -> Outcome {
        let Some(session) = self.sessions.get(old) else {
            return Outcome::NotFound;
        };
        if self.sessions.contains_key(new) || self.tombstones.contains_key(new) {
            return Outcome::Exists;
        }
        let mut moved = Session::clone(session);
        moved.principal = principal.clone().or(moved.principal);
        moved.accessed_ms = self.clock_ms;
        // Check the limits before killing the old id, so a refused login changes nothing.
        if let Some(refusal) = self.refusal(&moved, limits) {
            return refusal;
        }
        self.kill(old);
        let event = EventKind::Rotated {
            from: *old,
            to: *new,
        };
        self.admit(version, *new, moved, limits, event)
    }

    fn rotate_out(&mut self, old: &SessionId, new: &SessionId) -> Outcome {
        let Some(session) = self.sessions.get(old).map(|s| Session::clone(s)) else {
            return Outcome::NotFound;
        };
        // Deliberately wrong in a teeth build (simulation only): old id stays.
        if !teeth::planted(Bug::RotateOutKeepsOld) {
            self.kill(old);
        }
        self.emit(EventKind::Rotated {
            from: *old,
            to: *new,
        });
        Outcome::RotatedOut {
            session: Box::new(session),
        }
    }

    fn rotate_in(
        &mut self,
        version: u64,
        new: &SessionId,
        from: &SessionId,
        session: &Session,
        principal: &Option<String>,
        limits: &Limits,
    ) -> Outcome {
        let mut moved = session.clone();
        moved.principal = principal.clone().or(moved.principal);
        moved.accessed_ms = self.clock_ms;
        moved.created_ms = moved.created_ms.min(self.clock_ms);
        let event = EventKind::Rotated {
            from: *from,
            to: *new,
        };
        self.admit(version, *new, moved, limits, event)
    }

    fn invalidate_principal(&mut self, principal: &str) -> Outcome {
        let ids: Vec<SessionId> = self
            .principals
            .get(principal)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in &ids {
            self.kill(id);
            self.emit(EventKind::Deleted(*id));
        }
        Outcome::Purged {
            sessions: ids.len() as u64,
        }
    }

    fn touch_batch(&mut self, reads: &[(SessionId, u64)]) -> Outcome {
        let mut touched = Vec::new();
        for (id, read_at) in reads {
            // Only a session still alive now is extended. Extending one whose deadline passed
            // after the read would resurrect it: another read may already have reported it
            // expired (found by the simulation, seed 194).
            let clock = self.clock_ms;
            let alive = self.sessions.get(id).is_some_and(|s| {
                // Teeth build (simulation only): the seed-194 fix reverted.
                s.expires_at_ms() > clock || teeth::planted(Bug::TouchRevives)
            });
            if alive {
                // A read cannot happen after now (regression: a fuzzed batch from the future
                // moved `accessed_ms` past the replicated clock).
                let at = (*read_at).min(clock);
                self.modify(id, |s| {
                    s.accessed_ms = if teeth::planted(Bug::TouchBackwards) {
                        at // Deliberately wrong (simulation teeth only): may go back.
                    } else {
                        s.accessed_ms.max(at)
                    }
                });
                touched.push(*id);
            }
        }
        let count = touched.len() as u64;
        if !touched.is_empty() {
            self.emit(EventKind::TouchedInBatch(touched));
        }
        Outcome::Purged { sessions: count }
    }

    fn update(
        &mut self,
        version: u64,
        id: &SessionId,
        set: &Attributes,
        remove: &std::collections::BTreeSet<String>,
        expected_version: Option<u64>,
        idle_timeout_ms: Option<u64>,
    ) -> Outcome {
        if let Some(rejection) = empty_name(set.keys()) {
            return rejection;
        }
        let session = match self.guard(id, expected_version) {
            Ok(session) => session,
            Err(refusal) => return refusal,
        };
        let attributes = session.attributes.with_changes(set, remove);
        if let Some(rejection) = validate(attributes.iter(), idle_timeout_ms.unwrap_or(1)) {
            return rejection;
        }
        let now = self.clock_ms;
        self.modify(id, |s| {
            s.attributes = attributes;
            s.accessed_ms = now;
            s.version = version;
            if let Some(t) = idle_timeout_ms {
                s.idle_timeout_ms = t;
            }
        });
        self.emit(EventKind::Updated(*id));
        Outcome::Ok { version }
    }

    /// The live session `id`, if it exists and (for a compare-and-set) is at `expected`.
    fn guard(&self, id: &SessionId, expected: Option<u64>) -> Result<&Session, Outcome> {
        let session = self.sessions.get(id).ok_or(Outcome::NotFound)?;
        match expected {
            Some(v) if v != session.version => Err(Outcome::Conflict {
                current_version: session.version,
            }),
            _ => Ok(session),
        }
    }

    /// Why `session` may not be admitted under `limits` (with the Refuse policies), if so.
    fn refusal(&self, session: &Session, limits: &Limits) -> Option<Outcome> {
        if let Some(rejection) = validate(session.attributes.iter(), session.idle_timeout_ms) {
            return Some(rejection);
        }
        if let (Some(p), Some(max)) = (&session.principal, limits.max_per_principal) {
            let live = self.sessions_of(p).len() as u64;
            // Deliberately off by one in a teeth build (simulation only).
            let full = if teeth::planted(Bug::PrincipalLimit) {
                live > u64::from(max)
            } else {
                live >= u64::from(max)
            };
            if full && limits.when_principal_full == WhenFull::Refuse {
                return Some(Outcome::LimitReached {
                    reason: format!("principal has {live} sessions, limit {max}"),
                });
            }
        }
        if let Some(max) = limits.max_sessions {
            if self.sessions.len() as u64 >= max && limits.when_full == WhenFull::Refuse {
                return Some(Outcome::LimitReached {
                    reason: format!("group holds {max} sessions, its limit"),
                });
            }
        }
        None
    }

    /// Stores a new session under `id` if the limits allow, evicting where the policy says so.
    fn admit(
        &mut self,
        version: u64,
        id: SessionId,
        mut session: Session,
        limits: &Limits,
        event: EventKind,
    ) -> Outcome {
        if self.sessions.contains_key(&id) || self.tombstones.contains_key(&id) {
            return Outcome::Exists;
        }
        if let Some(refusal) = self.refusal(&session, limits) {
            return refusal;
        }
        if let (Some(p), Some(max)) = (session.principal.clone(), limits.max_per_principal) {
            let mut live: Vec<(u64, SessionId)> = self
                .sessions_of(&p)
                .into_iter()
                .filter_map(|i| self.sessions.get(&i).map(|s| (s.created_ms, i)))
                .collect();
            live.sort();
            let excess = (live.len() + 1).saturating_sub(max as usize);
            for (_, victim) in live.into_iter().take(excess) {
                self.kill(&victim);
                self.emit(EventKind::Deleted(victim));
            }
        }
        if let Some(max) = limits.max_sessions {
            while self.sessions.len() as u64 >= max.max(1) {
                let Some(&(_, victim)) = self.lru.first() else {
                    break;
                };
                self.kill(&victim);
                self.emit(EventKind::Deleted(victim));
            }
        }
        session.version = version;
        self.insert_live(id, session);
        self.emit(event);
        Outcome::Ok { version }
    }

    /// Loads the sessions of an image (ids strictly increasing) into an empty state. As
    /// [`SessionState::insert_live`] for each, but the indexes are built from sorted runs
    /// (`BTreeSet::from_iter` sorts, then builds in one pass) rather than by one insert each:
    /// the larger part of a restart at a million sessions.
    fn load_sessions(&mut self, sessions: Vec<(SessionId, Session)>) {
        let mut expiry = Vec::with_capacity(sessions.len());
        let mut lru = Vec::with_capacity(sessions.len());
        for (id, session) in sessions {
            expiry.push((session.expires_at_ms(), id));
            lru.push((session.accessed_ms, id));
            if let Some(p) = &session.principal {
                self.principals.entry(p.clone()).or_default().insert(id);
            }
            self.bytes += session.bytes() as u64;
            self.fingerprints = self.fingerprints.wrapping_add(fingerprint(&id, &session));
            self.sessions.insert(id, Arc::new(session));
        }
        self.expiry.append(&mut expiry.into_iter().collect());
        self.lru.append(&mut lru.into_iter().collect());
    }

    fn insert_live(&mut self, id: SessionId, session: Session) {
        self.expiry.insert((session.expires_at_ms(), id));
        self.lru.insert((session.accessed_ms, id));
        if let Some(p) = &session.principal {
            self.principals.entry(p.clone()).or_default().insert(id);
        }
        self.bytes += session.bytes() as u64;
        self.fingerprints = self.fingerprints.wrapping_add(fingerprint(&id, &session));
        self.sessions.insert(id, Arc::new(session));
    }

    /// Changes a live session and keeps the expiry index in step; returns its version.
    fn modify(&mut self, id: &SessionId, change: impl FnOnce(&mut Session)) -> Option<u64> {
        let shared = self.sessions.get_mut(id)?;
        let session = Arc::make_mut(shared);
        let removed = self.expiry.remove(&(session.expires_at_ms(), *id));
        debug_assert!(removed, "every live session is in the expiry index");
        self.lru.remove(&(session.accessed_ms, *id));
        let before = (session.bytes() as u64, fingerprint(id, session));
        change(session);
        self.expiry.insert((session.expires_at_ms(), *id));
        self.lru.insert((session.accessed_ms, *id));
        self.bytes = self.bytes - before.0 + session.bytes() as u64;
        self.fingerprints = self
            .fingerprints
            .wrapping_sub(before.1)
            .wrapping_add(fingerprint(id, session));
        Some(session.version)
    }

    /// Removes a live session and tombstones its id.
    fn kill(&mut self, id: &SessionId) {
        if let Some(session) = self.sessions.remove(id) {
            // Already gone when the purge loop popped it first.
            self.expiry.remove(&(session.expires_at_ms(), *id));
            self.lru.remove(&(session.accessed_ms, *id));
            if let Some(p) = &session.principal {
                if let Some(ids) = self.principals.get_mut(p) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.principals.remove(p);
                    }
                }
            }
            self.bytes -= session.bytes() as u64;
            self.fingerprints = self.fingerprints.wrapping_sub(fingerprint(id, &session));
            self.bury(*id, self.clock_ms);
        }
    }

    /// Forgets a tombstone (a Redis write may bring a key back), keeping the digest in step.
    fn unbury(&mut self, id: SessionId, died: u64) {
        if self.tombstones.remove(&id).is_some() {
            self.tombstone_order.remove(&(died, id));
            self.fingerprints = self.fingerprints.wrapping_sub(tomb_print(&id, died));
        }
    }

    fn bury(&mut self, id: SessionId, died: u64) {
        if let Some(old) = self.tombstones.insert(id, died) {
            self.tombstone_order.remove(&(old, id));
            self.fingerprints = self.fingerprints.wrapping_sub(tomb_print(&id, old));
        }
        self.tombstone_order.insert((died, id));
        self.fingerprints = self.fingerprints.wrapping_add(tomb_print(&id, died));
    }

    /// Kills `id` if it is past its deadline; whether it did.
    fn expire_if_due(&mut self, id: &SessionId) -> bool {
        let due = self
            .sessions
            .get(id)
            .is_some_and(|s| s.expires_at_ms() <= self.clock_ms);
        if due {
            self.kill(id);
        }
        due
    }

    /// Purges up to [`limits::EXPIRE_PER_ENTRY_MAX`] expired sessions and forgets as many old
    /// tombstones; the leader proposes another `Expire` while more are due.
    fn purge_expired(&mut self) -> u64 {
        let mut purged = 0;
        // Every iteration consumes an index entry, so the loop ends even if the index and the
        // sessions disagree (regression: a fuzzed snapshot with a duplicate id spun forever).
        for _ in 0..limits::EXPIRE_PER_ENTRY_MAX {
            let Some(&(at, id)) = self.expiry.first() else {
                break;
            };
            if at > self.clock_ms {
                break;
            }
            self.expiry.pop_first();
            if self
                .sessions
                .get(&id)
                .is_some_and(|s| s.expires_at_ms() == at)
            {
                let event = self.expired_event(id);
                self.kill(&id);
                self.emit(event);
                purged += 1;
            }
        }
        for _ in 0..limits::EXPIRE_PER_ENTRY_MAX {
            let Some(&(died, id)) = self.tombstone_order.first() else {
                break;
            };
            let fresh = died.saturating_add(limits::TOMBSTONE_RETENTION_MS) > self.clock_ms;
            if fresh && self.tombstone_order.len() <= limits::TOMBSTONES_MAX {
                break;
            }
            self.tombstone_order.pop_first();
            if let Some(died) = self.tombstones.remove(&id) {
                self.fingerprints = self.fingerprints.wrapping_sub(tomb_print(&id, died));
            }
        }
        purged
    }

    fn remember(&mut self, origin: Origin, response: Response) {
        self.dedup.insert(origin, response);
        self.dedup_order.push_back((self.clock_ms, origin));
    }

    fn trim_dedup(&mut self) {
        while let Some(&(at, origin)) = self.dedup_order.front() {
            let fresh = at.saturating_add(limits::DEDUP_RETENTION_MS) > self.clock_ms;
            if fresh && self.dedup_order.len() <= limits::DEDUP_ENTRIES_MAX {
                break;
            }
            self.dedup_order.pop_front();
            self.dedup.remove(&origin);
        }
    }

    /// The serializable image of this state.
    pub fn to_image(&self) -> StateImage {
        StateImage {
            clock_ms: self.clock_ms,
            sessions: self
                .sessions
                .iter()
                .map(|(k, v)| (*k, Session::clone(v)))
                .collect(),
            tombstones: self.tombstones.iter().map(|(k, v)| (*k, *v)).collect(),
            dedup: self
                .dedup_order
                .iter()
                .filter_map(|(at, o)| self.dedup.get(o).map(|r| (*at, *o, r.clone())))
                .collect(),
            events: self.events.iter().cloned().collect(),
        }
    }

    /// Rebuilds a state (and its indexes) from an image, refusing images no state machine
    /// could have produced (they come from disk and from peers: untrusted).
    pub fn from_image(image: StateImage) -> Result<Self, InvalidImage> {
        let increasing = |ids: &mut dyn Iterator<Item = SessionId>| {
            let ids: Vec<SessionId> = ids.collect();
            ids.windows(2).all(|w| w[0] < w[1])
        };
        if !increasing(&mut image.sessions.iter().map(|(id, _)| *id)) {
            return Err(InvalidImage(
                "session ids are not strictly increasing".into(),
            ));
        }
        if !increasing(&mut image.tombstones.iter().map(|(id, _)| *id)) {
            return Err(InvalidImage(
                "tombstone ids are not strictly increasing".into(),
            ));
        }
        if image.events.len() > limits::EVENTS_RETAINED
            || !image.events.windows(2).all(|w| w[0].index <= w[1].index)
        {
            return Err(InvalidImage("events out of order or too many".into()));
        }
        let mut state = SessionState {
            clock_ms: image.clock_ms,
            events: image.events.into(),
            ..Default::default()
        };
        state.load_sessions(image.sessions);
        for (id, died) in image.tombstones {
            if state.sessions.contains_key(&id) {
                return Err(InvalidImage(format!("{id} is both live and tombstoned")));
            }
            state.bury(id, died);
        }
        for (at, origin, response) in image.dedup {
            if state.dedup.insert(origin, response).is_some() {
                return Err(InvalidImage("a request is remembered twice".into()));
            }
            state.dedup_order.push_back((at, origin));
        }
        Ok(state)
    }

    /// A digest of the whole state; replicas at the same applied index must agree on it. It
    /// combines the replicated clock, the counts, and an order-independent sum of fingerprints
    /// of every live session (id, version, times, principal, attribute bytes) and tombstone,
    /// kept up to date by every change, so it costs nothing at any size. A session's attributes
    /// enter through its version: they change only with it.
    pub fn digest(&self) -> u64 {
        let mut bytes = Vec::with_capacity(64);
        for v in [
            self.clock_ms,
            self.sessions.len() as u64,
            self.tombstones.len() as u64,
            self.dedup.len() as u64,
            self.events.len() as u64,
            self.bytes,
            self.fingerprints,
        ] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        crate::id::fnv1a64(&bytes)
    }

    /// Bytes of live sessions' attributes: what compaction weighs the log against.
    pub fn session_bytes(&self) -> u64 {
        self.bytes
    }

    /// A consistent copy of the state for a snapshot, taken in O(1) for the sessions (the
    /// persistent maps share structure; later writes copy what they change). Encoding it
    /// ([`StateView`] is `Serialize`, in [`StateImage`]'s layout) needs no lock.
    pub fn view(&self) -> StateView {
        StateView {
            clock_ms: self.clock_ms,
            sessions: self.sessions.clone(),
            tombstones: self.tombstones.clone(),
            dedup: self.dedup.clone(),
            dedup_order: self.dedup_order.clone(),
            events: self.events.clone(),
        }
    }
}

fn fingerprint(id: &SessionId, s: &Session) -> u64 {
    let mut fixed = [0u8; 16 + 6 * 8];
    fixed[..16].copy_from_slice(id.as_bytes());
    let fields = [
        s.version,
        s.created_ms,
        s.accessed_ms,
        s.idle_timeout_ms,
        s.deadline_ms.map_or(u64::MAX, |d| d),
        s.bytes() as u64,
    ];
    for (slot, v) in fixed[16..].chunks_exact_mut(8).zip(fields) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    let hash = crate::id::fnv1a64(&fixed);
    let principal = s.principal.as_deref().unwrap_or_default();
    crate::id::fnv1a64_extend(hash, principal.as_bytes())
}

fn tomb_print(id: &SessionId, died: u64) -> u64 {
    let mut bytes = [0u8; 25];
    bytes[..16].copy_from_slice(id.as_bytes());
    bytes[16..24].copy_from_slice(&died.to_le_bytes());
    bytes[24] = 0xdd;
    crate::id::fnv1a64(&bytes)
}

/// A state as of one log index, detached from the live state machine: what a snapshot
/// encodes while writes go on. Serializes exactly as the equivalent [`StateImage`].
#[derive(Clone, Debug)]
pub struct StateView {
    clock_ms: u64,
    sessions: OrdMap<SessionId, Arc<Session>>,
    tombstones: OrdMap<SessionId, u64>,
    dedup: OrdMap<Origin, Response>,
    dedup_order: VecDeque<(u64, Origin)>,
    events: VecDeque<Event>,
}

impl StateView {
    /// Live sessions in the view.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the view holds no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

impl Serialize for StateView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let dedup: Vec<(u64, Origin, &Response)> = self
            .dedup_order
            .iter()
            .filter_map(|(at, o)| self.dedup.get(o).map(|r| (*at, *o, r)))
            .collect();
        let mut st = serializer.serialize_struct("StateImage", 5)?;
        st.serialize_field("clock_ms", &self.clock_ms)?;
        st.serialize_field("sessions", &SessionSeq(&self.sessions))?;
        st.serialize_field("tombstones", &Seq(&self.tombstones))?;
        st.serialize_field("dedup", &dedup)?;
        st.serialize_field("events", &self.events)?;
        st.end()
    }
}

/// The sessions as a sequence of `(id, session)` with its exact length.
struct SessionSeq<'a>(&'a OrdMap<SessionId, Arc<Session>>);

impl Serialize for SessionSeq<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            seq.serialize_element(&(k, &**v))?;
        }
        seq.end()
    }
}

/// A persistent map serialized as a sequence of pairs with its exact length.
struct Seq<'a, K, V>(&'a OrdMap<K, V>);

impl<K: Serialize + Ord + Clone, V: Serialize + Clone> Serialize for Seq<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            seq.serialize_element(&(k, v))?;
        }
        seq.end()
    }
}

/// A native session's attribute names must not be empty (a name a person cannot type or see in
/// a listing); `Some(outcome)` is the rejection. Redis hashes keep Redis's rules: an empty
/// field name is allowed there, so this is not part of [`validate`].
fn empty_name<'a>(mut names: impl Iterator<Item = &'a String>) -> Option<Outcome> {
    names
        .any(|k| k.len() < limits::ATTRIBUTE_NAME_BYTES_MIN)
        .then(|| Outcome::Invalid {
            reason: "an attribute name may not be empty".into(),
        })
}

/// Checks a would-be session against the limits; `Some(outcome)` is the rejection.
fn validate<'a>(
    attributes: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    idle_timeout_ms: u64,
) -> Option<Outcome> {
    let count = attributes.clone().count();
    if count > limits::ATTRIBUTES_MAX {
        let reason = format!("{count} attributes, limit {}", limits::ATTRIBUTES_MAX);
        return Some(Outcome::Invalid { reason });
    }
    if let Some((name, _)) = attributes
        .clone()
        .find(|(k, _)| k.len() > limits::ATTRIBUTE_NAME_BYTES_MAX)
    {
        let reason = format!(
            "attribute name of {} bytes, limit {}",
            name.len(),
            limits::ATTRIBUTE_NAME_BYTES_MAX
        );
        return Some(Outcome::Invalid { reason });
    }
    if idle_timeout_ms == 0 {
        return Some(Outcome::Invalid {
            reason: "idle timeout must be positive".into(),
        });
    }
    let bytes = Session::counted_bytes(attributes);
    if bytes > limits::SESSION_BYTES_MAX {
        let limit = limits::SESSION_BYTES_MAX as u64;
        return Some(Outcome::TooLarge {
            bytes: bytes as u64,
            limit,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ClientId;

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    fn req(now_ms: u64, command: Command) -> Request {
        Request {
            now_ms,
            origin: None,
            command,
        }
    }

    fn create(n: u8, idle: u64) -> Command {
        let attributes = Attributes::from([("user".to_string(), b"ann".to_vec())]);
        Command::Create {
            id: id(n),
            attributes,
            idle_timeout_ms: idle,
            lifetime_ms: None,
            principal: None,
            limits: Limits::default(),
        }
    }

    fn limited(n: u8, limits: Limits) -> Command {
        match create(n, 10_000) {
            Command::Create {
                id,
                attributes,
                idle_timeout_ms,
                lifetime_ms,
                principal,
                ..
            } => Command::Create {
                id,
                attributes,
                idle_timeout_ms,
                lifetime_ms,
                principal,
                limits,
            },
            _ => unreachable!("create builds a Create"),
        }
    }

    fn login(n: u8, principal: &str, limits: Limits) -> Command {
        Command::Create {
            id: id(n),
            attributes: Attributes::new(),
            idle_timeout_ms: 10_000,
            lifetime_ms: None,
            principal: Some(principal.into()),
            limits,
        }
    }

    /// `ctl session put <id> =x` used to store an attribute with an empty name, which no
    /// listing shows and no `--remove` can name on a command line.
    #[test]
    fn an_empty_attribute_name_is_refused_on_create_and_update() {
        let mut s = SessionState::default();
        let empty = Attributes::from([(String::new(), b"x".to_vec())]);
        let create_empty = Command::Create {
            id: id(1),
            attributes: empty.clone(),
            idle_timeout_ms: 1000,
            lifetime_ms: None,
            principal: None,
            limits: Limits::default(),
        };
        let refused = s.apply(1, &req(1, create_empty)).outcome;
        assert!(matches!(refused, Outcome::Invalid { .. }), "{refused:?}");
        assert!(s.get(&id(1)).is_none());
        s.apply(2, &req(2, create(1, 1000)));
        let update = Command::Update {
            id: id(1),
            set: empty,
            remove: Default::default(),
            expected_version: None,
            idle_timeout_ms: None,
        };
        let refused = s.apply(3, &req(3, update)).outcome;
        assert!(matches!(refused, Outcome::Invalid { .. }), "{refused:?}");
        let kept = s.get(&id(1)).expect("still there");
        assert_eq!(kept.version, 2, "nothing was written");
        assert!(!kept.attributes.contains_key(""));
    }

    #[test]
    fn rotation_moves_data_and_kills_the_old_id_for_good() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 1000)));
        let rotate = Command::Rotate {
            old: id(1),
            new: id(2),
            principal: Some("ann".into()),
            limits: Limits::default(),
        };
        assert_eq!(
            s.apply(2, &req(2, rotate)).outcome,
            Outcome::Ok { version: 2 }
        );
        assert_eq!(s.get(&id(1)), None);
        let moved = s.get(&id(2)).expect("moved");
        assert_eq!(
            (
                moved.attributes["user"].as_slice(),
                moved.principal.as_deref()
            ),
            (&b"ann"[..], Some("ann"))
        );
        assert_eq!(
            s.apply(3, &req(3, create(1, 1000))).outcome,
            Outcome::Exists,
            "old id never comes back"
        );
        assert_eq!(s.sessions_of("ann"), vec![id(2)]);
        let out = s.apply(
            4,
            &req(
                4,
                Command::RotateOut {
                    old: id(2),
                    new: id(9),
                },
            ),
        );
        assert!(matches!(out.outcome, Outcome::RotatedOut { .. }));
        assert_eq!(
            s.get(&id(2)),
            None,
            "the first half of a cross-group rotation kills the old id"
        );
        assert!(s.sessions_of("ann").is_empty());
    }

    #[test]
    fn principal_limits_refuse_or_evict_oldest() {
        let refuse = Limits {
            max_per_principal: Some(2),
            ..Limits::default()
        };
        let mut s = SessionState::default();
        s.apply(1, &req(1, login(1, "bob", refuse)));
        s.apply(2, &req(2, login(2, "bob", refuse)));
        assert!(matches!(
            s.apply(3, &req(3, login(3, "bob", refuse))).outcome,
            Outcome::LimitReached { .. }
        ));
        let evict = Limits {
            when_principal_full: WhenFull::EvictOldest,
            ..refuse
        };
        assert_eq!(
            s.apply(4, &req(4, login(4, "bob", evict))).outcome,
            Outcome::Ok { version: 4 }
        );
        assert_eq!(
            s.sessions_of("bob"),
            vec![id(2), id(4)],
            "the oldest (1) was ended"
        );
        assert_eq!(
            s.apply(
                5,
                &req(
                    5,
                    Command::InvalidatePrincipal {
                        principal: "bob".into()
                    }
                )
            )
            .outcome,
            Outcome::Purged { sessions: 2 }
        );
        assert!(s.get(&id(2)).is_none() && s.get(&id(4)).is_none());
    }

    #[test]
    fn capacity_refuses_or_evicts_least_recently_used() {
        let full = Limits {
            max_sessions: Some(2),
            ..Limits::default()
        };
        let mut s = SessionState::default();
        s.apply(1, &req(1, limited(1, full)));
        s.apply(2, &req(2, limited(2, full)));
        assert!(matches!(
            s.apply(3, &req(3, limited(3, full))).outcome,
            Outcome::LimitReached { .. }
        ));
        s.apply(4, &req(4, Command::Touch { id: id(1) }));
        let lru = Limits {
            when_full: WhenFull::EvictOldest,
            ..full
        };
        s.apply(5, &req(5, limited(3, lru)));
        assert!(s.get(&id(2)).is_none(), "2 was least recently used");
        assert!(s.get(&id(1)).is_some() && s.get(&id(3)).is_some());
    }

    /// A mass expiry is purged a bounded number at a time, and no expired session is served
    /// while it waits for its turn.
    #[test]
    fn a_mass_expiry_is_purged_in_bounded_rounds() {
        let mut s = SessionState::default();
        let n = 2 * limits::EXPIRE_PER_ENTRY_MAX + 10;
        let ids: Vec<SessionId> = (0..n as u64)
            .map(|i| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&i.to_be_bytes());
                SessionId::from_bytes(bytes)
            })
            .collect();
        for (i, sid) in ids.iter().enumerate() {
            let Command::Create { attributes, .. } = create(0, 100) else {
                unreachable!()
            };
            let command = Command::Create {
                id: *sid,
                attributes,
                idle_timeout_ms: 100,
                lifetime_ms: None,
                principal: None,
                limits: Limits::default(),
            };
            s.apply(i as u64 + 1, &req(1_000, command));
        }
        let mut index = n as u64 + 1;
        let mut rounds = Vec::new();
        while s.next_expiry_ms().is_some() {
            let r = s.apply(index, &req(1_200, Command::Expire));
            index += 1;
            let Outcome::Purged { sessions } = r.outcome else {
                panic!("expire answers Purged: {:?}", r.outcome)
            };
            rounds.push(sessions);
            assert!(ids.iter().all(|i| s.get(i).is_none()), "none served");
        }
        let max = limits::EXPIRE_PER_ENTRY_MAX as u64;
        assert_eq!(rounds, vec![max, max, 10]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_session_read_before_its_deadline_survives_the_purge() {
        let mut s = SessionState::default();
        s.apply(1, &req(1_000, create(1, 100)));
        // Read at 1_060, the batch lands at 1_090, before the deadline (1_100).
        s.apply(
            2,
            &req(
                1_090,
                Command::TouchBatch {
                    reads: vec![(id(1), 1_060)],
                },
            ),
        );
        s.apply(3, &req(1_150, Command::Expire));
        assert!(s.get(&id(1)).is_some(), "extended to 1_160 by the read");
    }

    /// Regression (simulation seed 194): a read saw the session alive, a later read saw it
    /// expired, and then the first read's batched touch brought it back.
    #[test]
    fn a_late_touch_batch_never_resurrects_an_expired_session() {
        let mut s = SessionState::default();
        s.apply(1, &req(1_000, create(1, 100)));
        s.apply(2, &req(1_120, Command::Touch { id: id(7) }));
        assert!(s.get(&id(1)).is_none(), "a reader sees it expired at 1_120");
        s.apply(
            3,
            &req(
                1_130,
                Command::TouchBatch {
                    reads: vec![(id(1), 1_090)],
                },
            ),
        );
        assert!(s.get(&id(1)).is_none(), "and it stays dead");
    }

    #[test]
    fn events_are_stamped_and_compaction_is_reported() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 1000)));
        s.apply(2, &req(2, set(1, "a", b"b", None)));
        s.apply(
            3,
            &req(
                3,
                Command::Delete {
                    id: id(1),
                    expected_version: None,
                },
            ),
        );
        let events = s.events_from(0, 10).expect("retained");
        let kinds: Vec<_> = events.iter().map(|e| (e.index, e.kind.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (1, EventKind::Created(id(1))),
                (2, EventKind::Updated(id(1))),
                (3, EventKind::Deleted(id(1)))
            ]
        );
        for i in 0..limits::EVENTS_RETAINED as u64 + 10 {
            s.apply(10 + i, &req(10, Command::Touch { id: id(7) }));
            s.apply(10 + i, &req(10, set(7, "x", b"y", None)));
        }
        s.apply(100_000, &req(10, create(7, 1000)));
        let n = limits::EVENTS_RETAINED as u64;
        for i in 0..n + 5 {
            s.apply(100_001 + i, &req(10, set(7, "x", b"y", None)));
        }
        assert!(s.events_from(0, 10).is_err(), "index 0 was compacted away");
    }

    fn set(n: u8, k: &str, v: &[u8], expected_version: Option<u64>) -> Command {
        Command::Update {
            id: id(n),
            set: Attributes::from([(k.to_string(), v.to_vec())]),
            remove: BTreeSet::new(),
            expected_version,
            idle_timeout_ms: None,
        }
    }

    #[test]
    fn versions_rise_with_writes_and_cas_conflicts_report_current() {
        let mut s = SessionState::default();
        assert_eq!(
            s.apply(1, &req(10, create(1, 1000))).outcome,
            Outcome::Ok { version: 1 }
        );
        assert_eq!(
            s.apply(2, &req(11, create(1, 1000))).outcome,
            Outcome::Exists
        );
        let ok = s.apply(3, &req(12, set(1, "cart", b"a", Some(1))));
        assert_eq!(ok.outcome, Outcome::Ok { version: 3 });
        let stale = s.apply(4, &req(13, set(1, "cart", b"b", Some(1))));
        assert_eq!(stale.outcome, Outcome::Conflict { current_version: 3 });
        let view = s.get(&id(1)).expect("live");
        assert_eq!(view.version, 3);
        assert_eq!(view.attributes["cart"], b"a");
        assert_eq!(view.attributes["user"], b"ann");
    }

    #[test]
    fn expiry_follows_replicated_time_and_touch_extends_it() {
        let mut s = SessionState::default();
        s.apply(1, &req(1_000, create(1, 100)));
        s.apply(2, &req(1_090, Command::Touch { id: id(1) }));
        s.apply(3, &req(1_150, Command::Expire));
        assert!(s.get(&id(1)).is_some(), "touched at 1090, expires at 1190");
        s.apply(4, &req(1_190, Command::Expire));
        assert_eq!(s.get(&id(1)), None);
        assert_eq!(
            s.apply(5, &req(1_200, Command::Touch { id: id(1) }))
                .outcome,
            Outcome::NotFound
        );
        assert_eq!(
            s.apply(6, &req(1_200, create(1, 100))).outcome,
            Outcome::Exists,
            "delete wins"
        );
    }

    #[test]
    fn a_stale_leader_stamp_never_moves_the_clock_back() {
        let mut s = SessionState::default();
        s.apply(1, &req(5_000, create(1, 100)));
        let r = s.apply(2, &req(10, Command::Touch { id: id(1) }));
        assert_eq!(r.server_time_ms, 5_000);
    }

    #[test]
    fn retried_writes_apply_once() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 1000)));
        let origin = Some(Origin {
            client: ClientId(7),
            seq: 1,
        });
        let first = s.apply(
            2,
            &Request {
                origin,
                ..req(2, set(1, "n", b"1", Some(1)))
            },
        );
        let retry = s.apply(
            3,
            &Request {
                origin,
                ..req(3, set(1, "n", b"1", Some(1)))
            },
        );
        assert_eq!(
            first, retry,
            "the retry gets the first result, not a conflict"
        );
        assert_eq!(s.get(&id(1)).expect("live").version, 2);
    }

    #[test]
    fn oversized_sessions_are_refused_without_change() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 1000)));
        let big = vec![0u8; limits::SESSION_BYTES_MAX];
        let r = s.apply(2, &req(2, set(1, "blob", &big, None)));
        assert!(matches!(r.outcome, Outcome::TooLarge { .. }), "{r:?}");
        assert_eq!(s.get(&id(1)).expect("live").version, 1);
    }

    /// Regression (found by the snapshot_decode fuzzer): an image listing one id twice left a
    /// stale expiry entry, and the next `Expire` looped forever.
    #[test]
    fn images_with_duplicate_ids_are_refused() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 50)));
        let mut image = s.to_image();
        image.sessions.push(image.sessions[0].clone());
        assert!(SessionState::from_image(image).is_err());
    }

    #[test]
    fn images_round_trip_with_indexes() {
        let mut s = SessionState::default();
        s.apply(1, &req(1, create(1, 50)));
        s.apply(2, &req(2, create(2, 5000)));
        s.apply(
            3,
            &Request {
                origin: Some(Origin {
                    client: ClientId(1),
                    seq: 9,
                }),
                ..req(
                    3,
                    Command::Delete {
                        id: id(2),
                        expected_version: None,
                    },
                )
            },
        );
        let back = SessionState::from_image(s.to_image()).expect("valid image");
        assert_eq!(back, s);
        assert_eq!(back.digest(), s.digest());
    }

    #[test]
    fn a_large_image_streams_back_with_indexes() {
        // More attribute bytes than the streaming decoder's scratch buffer: every value is
        // read through it in turn.
        let mut s = SessionState::default();
        for n in 0..6_000u32 {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            let principal = (n % 7 == 0).then(|| format!("user{}", n % 3));
            let command = Command::Create {
                id: SessionId::from_bytes(bytes),
                attributes: Attributes::from([
                    ("cart".to_string(), vec![n as u8; 1024]),
                    ("user".to_string(), b"ann".to_vec()),
                ]),
                idle_timeout_ms: 1_000 + u64::from(n % 50),
                lifetime_ms: (n % 3 == 0).then_some(5_000),
                principal,
                limits: Limits::default(),
            };
            s.apply(u64::from(n) + 1, &req(u64::from(n % 100), command));
        }
        s.apply(7_000, &req(200, set(0, "cart", b"x", None)));
        let bytes = crate::codec::encode(&s.view());
        assert!(bytes.len() > 4 * limits::FRAME_BYTES_MAX / 3);
        let image: StateImage =
            crate::codec::decode_from(&bytes[..], bytes.len() as u64, usize::MAX).expect("streams");
        let back = SessionState::from_image(image).expect("valid image");
        assert_eq!(back, s);
        assert_eq!(back.digest(), s.digest());
        assert_eq!(back.next_expiry_ms(), s.next_expiry_ms());
    }

    #[test]
    fn a_view_encodes_as_its_image_and_ignores_later_writes() {
        let mut s = SessionState::default();
        for n in 1..=40u8 {
            s.apply(u64::from(n), &req(u64::from(n), create(n, 5000)));
        }
        s.apply(41, &req(41, set(3, "cart", b"book", None)));
        s.apply(
            42,
            &Request {
                origin: Some(Origin {
                    client: ClientId(4),
                    seq: 1,
                }),
                ..req(
                    42,
                    Command::Delete {
                        id: id(5),
                        expected_version: None,
                    },
                )
            },
        );
        let image = s.to_image();
        let view = s.view();
        let (digest, bytes) = (s.digest(), s.session_bytes());
        // Writes after the view change the state, not the view.
        s.apply(43, &req(43, set(3, "cart", b"pen", None)));
        s.apply(44, &req(44, create(77, 5000)));
        assert_ne!(s.digest(), digest, "the digest follows every change");
        assert!(s.session_bytes() > bytes);
        assert_eq!(
            postcard::to_allocvec(&view).expect("view"),
            postcard::to_allocvec(&image).expect("image"),
            "a view encodes exactly as the image taken at the same point"
        );
        assert_eq!(view.len(), 39);
        let back = SessionState::from_image(image).expect("valid");
        assert_eq!(
            back.digest(),
            digest,
            "the digest of a rebuilt state is the same"
        );
    }
}
