//! The session state machine: pure, deterministic, and the single source of truth for what a
//! session is.
//!
//! **Architecture invariants:**
//! - It never reads a clock or an RNG. Time is the replicated clock: the maximum of the leader
//!   stamps of every applied request, so every replica computes the same expiry.
//! - Every collection is ordered (`BTreeMap`, `BTreeSet`, `VecDeque` in apply order), so two
//!   replicas that applied the same log hold byte-identical state (see [`SessionState::digest`]).
//! - A session's version is the log index of the last command that changed its data; touches do
//!   not change it, so a read that extends the idle timeout never breaks a compare-and-set.
//! - Delete wins: a deleted or expired id is tombstoned and cannot be created again while the
//!   tombstone is kept ([`crate::limits::TOMBSTONE_RETENTION_MS`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Attributes, Command, Limits, Origin, Outcome, Request, Response, WhenFull};
use crate::id::SessionId;
use crate::limits;

mod redis;

/// A state image that no state machine could have produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid state image: {0}")]
pub struct InvalidImage(pub String);

/// One stored session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The application's attributes.
    pub attributes: Attributes,
    /// Replicated time of creation.
    pub created_ms: u64,
    /// Replicated time of the last access (create, update or touch).
    pub accessed_ms: u64,
    /// Max-inactive interval.
    pub idle_timeout_ms: u64,
    /// Absolute deadline, if the session has a maximum lifetime.
    pub deadline_ms: Option<u64>,
    /// Log index of the last change to this session's data.
    pub version: u64,
    /// The user this session belongs to, if logged in.
    pub principal: Option<String>,
}

/// What happened to sessions, stamped with the log index that did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The log index of the command.
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
}

impl Session {
    /// The replicated time at which this session stops existing unless touched.
    pub fn expires_at_ms(&self) -> u64 {
        let idle = self.accessed_ms.saturating_add(self.idle_timeout_ms);
        self.deadline_ms.map_or(idle, |d| d.min(idle))
    }

    /// The bytes this session counts against [`limits::SESSION_BYTES_MAX`].
    pub fn encoded_bytes(attributes: &Attributes) -> usize {
        attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + limits::ATTRIBUTE_OVERHEAD_BYTES)
            .sum()
    }
}

/// The whole replicated state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// The replicated clock: the largest leader stamp applied so far.
    clock_ms: u64,
    /// Live sessions (some may be past their deadline until the next access or purge).
    sessions: BTreeMap<SessionId, Session>,
    /// `(expires_at_ms, id)` for every live session, to purge in deadline order.
    expiry: BTreeSet<(u64, SessionId)>,
    /// Ids that died at the given time and must not be created again.
    tombstones: BTreeMap<SessionId, u64>,
    /// `(died_at_ms, id)`, to forget the oldest tombstones first.
    tombstone_order: BTreeSet<(u64, SessionId)>,
    /// Results of recent writes, returned again when a client retries.
    dedup: BTreeMap<Origin, Response>,
    /// Dedup keys in apply order with their apply time, for bounded retention.
    dedup_order: VecDeque<(u64, Origin)>,
    /// Sessions by principal.
    principals: BTreeMap<String, BTreeSet<SessionId>>,
    /// `(accessed_ms, id)` of every live session, for least-recently-used eviction.
    lru: BTreeSet<(u64, SessionId)>,
    /// The most recent events, oldest first (at most [`limits::EVENTS_RETAINED`]).
    events: VecDeque<Event>,
    /// Log index of the command being applied (events are stamped with it).
    applying: u64,
}

/// What a read returns: a consistent view of one session at one point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session's id.
    pub id: SessionId,
    /// Its attributes.
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
        if expires_at_ms <= self.clock_ms {
            return None;
        }
        Some(SessionView {
            id: *id,
            attributes: s.attributes.clone(),
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

    /// Applies one committed request at log index `index`.
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        self.applying = index;
        self.clock_ms = if cfg!(feature = "broken-local-clock") {
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
        let outcome = self.execute(index, &request.command);
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

    fn execute(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Create {
                id,
                attributes,
                idle_timeout_ms,
                lifetime_ms,
                principal,
                limits,
            } => {
                let now = self.clock_ms;
                let session = Session {
                    attributes: attributes.clone(),
                    created_ms: now,
                    accessed_ms: now,
                    idle_timeout_ms: *idle_timeout_ms,
                    deadline_ms: lifetime_ms.map(|l| now.saturating_add(l)),
                    version: index,
                    principal: principal.clone(),
                };
                self.admit(index, *id, session, limits, EventKind::Created(*id))
            }
            Command::Rotate {
                old,
                new,
                principal,
                limits,
            } => {
                let Some(session) = self.sessions.get(old).cloned() else {
                    return Outcome::NotFound;
                };
                if self.sessions.contains_key(new) || self.tombstones.contains_key(new) {
                    return Outcome::Exists;
                }
                let mut moved = session;
                moved.principal = principal.clone().or(moved.principal);
                moved.accessed_ms = self.clock_ms;
                // Check the limits before killing the old id, so a refused login changes nothing.
                if let Some(refusal) = self.refusal(&moved, limits) {
                    return refusal;
                }
                self.kill(old);
                self.admit(
                    index,
                    *new,
                    moved,
                    limits,
                    EventKind::Rotated {
                        from: *old,
                        to: *new,
                    },
                )
            }
            Command::RotateOut { old, new } => {
                let Some(session) = self.sessions.get(old).cloned() else {
                    return Outcome::NotFound;
                };
                self.kill(old);
                self.emit(EventKind::Rotated {
                    from: *old,
                    to: *new,
                });
                Outcome::RotatedOut {
                    session: Box::new(session),
                }
            }
            Command::RotateIn {
                new,
                from,
                session,
                principal,
                limits,
            } => {
                let mut moved = (**session).clone();
                moved.principal = principal.clone().or(moved.principal);
                moved.accessed_ms = self.clock_ms;
                moved.created_ms = moved.created_ms.min(self.clock_ms);
                self.admit(
                    index,
                    *new,
                    moved,
                    limits,
                    EventKind::Rotated {
                        from: *from,
                        to: *new,
                    },
                )
            }
            Command::InvalidatePrincipal { principal } => {
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
            Command::TouchBatch { reads } => {
                let mut touched = Vec::new();
                for (id, read_at) in reads {
                    // Only a session still alive now is extended. Extending one whose deadline
                    // passed after the read would resurrect it: another read may already have
                    // reported it expired (found by the simulation, seed 194).
                    let clock = self.clock_ms;
                    let alive = self
                        .sessions
                        .get(id)
                        .is_some_and(|s| s.expires_at_ms() > clock);
                    if alive {
                        // A read cannot happen after now (regression: a fuzzed batch from the
                        // future moved `accessed_ms` past the replicated clock).
                        let at = (*read_at).min(clock);
                        self.modify(id, |s| s.accessed_ms = s.accessed_ms.max(at));
                        touched.push(*id);
                    }
                }
                let count = touched.len() as u64;
                if !touched.is_empty() {
                    self.emit(EventKind::TouchedInBatch(touched));
                }
                Outcome::Purged { sessions: count }
            }
            Command::Update {
                id,
                set,
                remove,
                expected_version,
                idle_timeout_ms,
            } => {
                let session = match self.guard(id, *expected_version) {
                    Ok(session) => session,
                    Err(refusal) => return refusal,
                };
                let mut attributes = session.attributes.clone();
                for name in remove {
                    attributes.remove(name);
                }
                for (name, value) in set {
                    attributes.insert(name.clone(), value.clone());
                }
                if let Some(rejection) = validate(&attributes, idle_timeout_ms.unwrap_or(1)) {
                    return rejection;
                }
                let now = self.clock_ms;
                self.modify(id, |s| {
                    s.attributes = attributes;
                    s.accessed_ms = now;
                    s.version = index;
                    if let Some(t) = idle_timeout_ms {
                        s.idle_timeout_ms = *t;
                    }
                });
                self.emit(EventKind::Updated(*id));
                Outcome::Ok { version: index }
            }
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
                Outcome::Ok { version: index }
            }
            Command::Expire => Outcome::Purged {
                sessions: self.purge_expired(),
            },
            Command::Redis(batch) => self.apply_redis(index, batch),
        }
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
        if let Some(rejection) = validate(&session.attributes, session.idle_timeout_ms) {
            return Some(rejection);
        }
        if let (Some(p), Some(max)) = (&session.principal, limits.max_per_principal) {
            let live = self.sessions_of(p).len() as u64;
            if live >= u64::from(max) && limits.when_principal_full == WhenFull::Refuse {
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
        index: u64,
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
        session.version = index;
        self.insert_live(id, session);
        self.emit(event);
        Outcome::Ok { version: index }
    }

    fn insert_live(&mut self, id: SessionId, session: Session) {
        self.expiry.insert((session.expires_at_ms(), id));
        self.lru.insert((session.accessed_ms, id));
        if let Some(p) = &session.principal {
            self.principals.entry(p.clone()).or_default().insert(id);
        }
        self.sessions.insert(id, session);
    }

    /// Changes a live session and keeps the expiry index in step; returns its version.
    fn modify(&mut self, id: &SessionId, change: impl FnOnce(&mut Session)) -> Option<u64> {
        let session = self.sessions.get_mut(id)?;
        let removed = self.expiry.remove(&(session.expires_at_ms(), *id));
        debug_assert!(removed, "every live session is in the expiry index");
        self.lru.remove(&(session.accessed_ms, *id));
        change(session);
        self.expiry.insert((session.expires_at_ms(), *id));
        self.lru.insert((session.accessed_ms, *id));
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
            self.tombstones.insert(*id, self.clock_ms);
            self.tombstone_order.insert((self.clock_ms, *id));
        }
    }

    fn expire_if_due(&mut self, id: &SessionId) {
        let due = self
            .sessions
            .get(id)
            .is_some_and(|s| s.expires_at_ms() <= self.clock_ms);
        if due {
            self.kill(id);
        }
    }

    fn purge_expired(&mut self) -> u64 {
        let mut purged = 0;
        // Every iteration consumes an index entry, so the loop ends even if the index and the
        // sessions disagree (regression: a fuzzed snapshot with a duplicate id spun forever).
        while let Some(&(at, id)) = self.expiry.first() {
            if at > self.clock_ms {
                break;
            }
            self.expiry.pop_first();
            if self
                .sessions
                .get(&id)
                .is_some_and(|s| s.expires_at_ms() == at)
            {
                self.kill(&id);
                self.emit(EventKind::Expired(id));
                purged += 1;
            }
        }
        while let Some(&(died, id)) = self.tombstone_order.first() {
            let fresh = died.saturating_add(limits::TOMBSTONE_RETENTION_MS) > self.clock_ms;
            if fresh && self.tombstone_order.len() <= limits::TOMBSTONES_MAX {
                break;
            }
            self.tombstone_order.pop_first();
            self.tombstones.remove(&id);
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
            sessions: self.sessions.iter().map(|(k, v)| (*k, v.clone())).collect(),
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
        for (id, session) in image.sessions {
            state.insert_live(id, session);
        }
        for (id, died) in image.tombstones {
            if state.sessions.contains_key(&id) {
                return Err(InvalidImage(format!("{id} is both live and tombstoned")));
            }
            state.tombstones.insert(id, died);
            state.tombstone_order.insert((died, id));
        }
        for (at, origin, response) in image.dedup {
            if state.dedup.insert(origin, response).is_some() {
                return Err(InvalidImage("a request is remembered twice".into()));
            }
            state.dedup_order.push_back((at, origin));
        }
        Ok(state)
    }

    /// A digest of the whole state; replicas at the same applied index must agree on it.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_allocvec(&self.to_image()).expect("state images always encode");
        crate::id::fnv1a64(&bytes)
    }
}

/// Checks a would-be session against the limits; `Some(outcome)` is the rejection.
fn validate(attributes: &Attributes, idle_timeout_ms: u64) -> Option<Outcome> {
    if attributes.len() > limits::ATTRIBUTES_MAX {
        let reason = format!(
            "{} attributes, limit {}",
            attributes.len(),
            limits::ATTRIBUTES_MAX
        );
        return Some(Outcome::Invalid { reason });
    }
    if let Some(name) = attributes
        .keys()
        .find(|k| k.len() > limits::ATTRIBUTE_NAME_BYTES_MAX)
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
    let bytes = Session::encoded_bytes(attributes);
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
}
