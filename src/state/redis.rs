//! Applying `Command::Redis` batches: Redis keys stored as sessions (the layout is documented
//! in [`crate::command::redis`]).
//!
//! Differences from native sessions, all deliberate: a key has no idle timeout (only the
//! absolute deadline `EXPIRE` sets, so reads never extend it); a write may create a key whose id
//! is tombstoned (Redis's `SET` after `DEL`), unless the batch's `delete_grace_ms` says the
//! deletion is too recent; every change to a key's value or deadline gives it a new version,
//! which is what `WATCH` compares.

use super::{validate, EventKind, Session, SessionState};
use crate::command::redis::{
    is_user_field, read, Expiry, KeyData, KeyRef, KeyType, RedisBatch, RedisOp, Reply,
    SetCondition, KEY_ATTR, SCAN_PREFIX_BYTES, TYPE_ATTR, VALUE_ATTR, WRONGTYPE,
};
use crate::command::{Attributes, Outcome};
use crate::id::SessionId;
use crate::session::PackedAttributes;

/// A Redis key never idles out: its only deadline is the absolute one.
const NO_IDLE_TIMEOUT: u64 = u64::MAX;

type OpResult = Result<Reply, Reply>;

fn wrongtype() -> Reply {
    Reply::Error(WRONGTYPE.into())
}

impl SessionState {
    /// Applies a batch: all its operations at this one log position, or none if a watched key
    /// changed.
    pub(super) fn apply_redis(&mut self, index: u64, batch: &RedisBatch) -> Outcome {
        let mut touched: Vec<SessionId> = batch.watches.iter().map(|(id, _)| *id).collect();
        for op in &batch.ops {
            touched.push(op.id());
            if let RedisOp::Rename { to, .. } = op {
                touched.push(to.id);
            }
        }
        for id in &touched {
            self.expire_key_if_due(id);
        }
        for (id, seen) in &batch.watches {
            if self.sessions.get(id).map(|s| s.version) != *seen {
                return Outcome::Redis(None);
            }
        }
        let mut replies = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let reply = self.redis_op(index, op, batch.delete_grace_ms);
            replies.push(reply.unwrap_or_else(|e| e));
        }
        Outcome::Redis(Some(replies))
    }

    /// Redis keys of this group with ids `>= from`, visiting about `count` sessions: the batch
    /// ends at a change of the ids' first [`SCAN_PREFIX_BYTES`] bytes, and the second value is
    /// where the next batch starts (`None` when the group is done). Keys present for the whole
    /// iteration are returned exactly once.
    pub fn redis_scan(
        &self,
        from: SessionId,
        count: usize,
    ) -> (Vec<(Vec<u8>, KeyType)>, Option<SessionId>) {
        let prefix = |id: &SessionId| -> [u8; SCAN_PREFIX_BYTES] {
            let mut p = [0; SCAN_PREFIX_BYTES];
            p.copy_from_slice(&id.as_bytes()[..SCAN_PREFIX_BYTES]);
            p
        };
        let mut keys = Vec::new();
        let mut last: Option<[u8; SCAN_PREFIX_BYTES]> = None;
        for (visited, (id, session)) in self.sessions.range(from..).enumerate() {
            let p = prefix(id);
            if visited >= count.max(1) && last != Some(p) {
                break;
            }
            last = Some(p);
            if session.expires_at_ms() <= self.clock_ms {
                continue;
            }
            if let (Some(t), Some(name)) = (
                KeyType::of(&session.attributes),
                session.attributes.get(KEY_ATTR),
            ) {
                keys.push((name.to_vec(), t));
            }
        }
        let next = last.and_then(|p| {
            // The smallest id after every id with prefix `p`.
            let n = u64::from_be_bytes([0, 0, 0, p[0], p[1], p[2], p[3], p[4]]) + 1;
            if n >> (8 * SCAN_PREFIX_BYTES) != 0 {
                return None;
            }
            let mut bytes = [0u8; 16];
            bytes[..SCAN_PREFIX_BYTES].copy_from_slice(&n.to_be_bytes()[8 - SCAN_PREFIX_BYTES..]);
            let next = SessionId::from_bytes(bytes);
            self.sessions.range(next..).next().map(|_| next)
        });
        (keys, next)
    }

    fn expire_key_if_due(&mut self, id: &SessionId) {
        let event = self.expired_event(*id);
        if self.expire_if_due(id) {
            self.emit(event);
        }
    }

    /// The event of `id`'s expiry: `KeyExpired` with the name for a Redis key, else `Expired`.
    pub(super) fn expired_event(&self, id: SessionId) -> EventKind {
        match self.key_name(&id) {
            Some(name) => EventKind::KeyExpired { id, name },
            None => EventKind::Expired(id),
        }
    }

    /// The name of the Redis key `id` (`None` for a native session or no session).
    fn key_name(&self, id: &SessionId) -> Option<Vec<u8>> {
        let s = self.sessions.get(id)?;
        KeyType::of(&s.attributes)?;
        s.attributes.get(KEY_ATTR).map(<[u8]>::to_vec)
    }

    fn key(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id).map(|s| &**s)
    }

    /// The key's session if it holds `t` (`Ok(None)` if absent, `Err` for another type).
    fn typed(&self, id: &SessionId, t: KeyType) -> Result<Option<&Session>, Reply> {
        match self.key(id) {
            None => Ok(None),
            Some(s) if KeyType::of(&s.attributes) == Some(t) => Ok(Some(s)),
            Some(_) => Err(wrongtype()),
        }
    }

    fn redis_op(&mut self, index: u64, op: &RedisOp, grace: u64) -> OpResult {
        let now = self.clock_ms;
        match op {
            RedisOp::Read { id, op } => {
                let key = self.key(id).map(|s| KeyData {
                    attributes: &s.attributes,
                    deadline_ms: s.deadline_ms,
                });
                Ok(read(op, key, now))
            }
            RedisOp::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => {
                let existing = self.key(&key.id);
                let old = if *get {
                    match self.typed(&key.id, KeyType::String)? {
                        Some(s) => Reply::Bulk(string_value(s)),
                        None => Reply::Nil,
                    }
                } else {
                    Reply::Ok
                };
                let skip = match condition {
                    SetCondition::Always => false,
                    SetCondition::IfAbsent => existing.is_some(),
                    SetCondition::IfPresent => existing.is_none(),
                };
                if skip {
                    return Ok(if *get { old } else { Reply::Nil });
                }
                let deadline = expiry.resolve(now, existing.and_then(|s| s.deadline_ms));
                let attributes = layout(key, KeyType::String, [(VALUE_ATTR, value.clone())]);
                self.put(index, key, attributes, deadline, grace)?;
                Ok(old)
            }
            RedisOp::Del { id } => Ok(Reply::Int(i64::from(self.delete_key(id)))),
            RedisOp::GetDel { id } => match self.typed(id, KeyType::String)? {
                Some(s) => {
                    let value = string_value(s);
                    self.delete_key(id);
                    Ok(Reply::Bulk(value))
                }
                None => Ok(Reply::Nil),
            },
            RedisOp::GetEx { id, expiry } => {
                let Some(s) = self.typed(id, KeyType::String)? else {
                    return Ok(Reply::Nil);
                };
                let value = string_value(s);
                let deadline = expiry.resolve(now, s.deadline_ms);
                if *expiry != Expiry::Keep {
                    self.set_deadline(index, id, deadline);
                }
                Ok(Reply::Bulk(value))
            }
            RedisOp::Expire { id, expiry } => {
                let Some(s) = self.key(id) else {
                    return Ok(Reply::Int(0));
                };
                if *expiry == Expiry::Clear && s.deadline_ms.is_none() {
                    return Ok(Reply::Int(0));
                }
                let deadline = expiry.resolve(now, s.deadline_ms);
                self.set_deadline(index, id, deadline);
                Ok(Reply::Int(1))
            }
            RedisOp::HSet { key, fields } => {
                let mut attributes = self.collection(key, KeyType::Hash)?;
                let mut added = 0;
                for (field, value) in fields {
                    check_field(field)?;
                    if attributes.insert(field.clone(), value.clone()).is_none() {
                        added += 1;
                    }
                }
                self.put_keeping_deadline(index, key, attributes, grace)?;
                Ok(Reply::Int(added))
            }
            RedisOp::SAdd { key, members } => {
                let mut attributes = self.collection(key, KeyType::Set)?;
                let mut added = 0;
                for member in members {
                    check_field(member)?;
                    if attributes.insert(member.clone(), Vec::new()).is_none() {
                        added += 1;
                    }
                }
                self.put_keeping_deadline(index, key, attributes, grace)?;
                Ok(Reply::Int(added))
            }
            RedisOp::HDel { id, fields } => self.remove_fields(index, id, KeyType::Hash, fields),
            RedisOp::SRem { id, members } => self.remove_fields(index, id, KeyType::Set, members),
            RedisOp::HIncrBy { key, field, delta } => {
                check_field(field)?;
                let mut attributes = self.collection(key, KeyType::Hash)?;
                let current = match attributes.get(field) {
                    None => 0,
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| Reply::err("hash value is not an integer"))?,
                };
                let next = current
                    .checked_add(*delta)
                    .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
                attributes.insert(field.clone(), next.to_string().into_bytes());
                self.put_keeping_deadline(index, key, attributes, grace)?;
                Ok(Reply::Int(next))
            }
            RedisOp::Rename {
                from,
                to,
                only_if_absent,
            } => {
                let Some(source) = self.key(from) else {
                    return Err(Reply::err("no such key"));
                };
                if *from == to.id {
                    return Ok(if *only_if_absent {
                        Reply::Int(0)
                    } else {
                        Reply::Ok
                    });
                }
                if *only_if_absent && self.key(&to.id).is_some() {
                    return Ok(Reply::Int(0));
                }
                let mut attributes = source.attributes.to_map();
                let deadline = source.deadline_ms;
                attributes.insert(KEY_ATTR.into(), to.name.clone());
                // Store the destination first: if it is refused, the source is untouched.
                self.put(index, to, attributes, deadline, grace)?;
                self.move_key_away(from);
                Ok(if *only_if_absent {
                    Reply::Int(1)
                } else {
                    Reply::Ok
                })
            }
            RedisOp::TakeOut { id } => {
                let Some(s) = self.key(id) else {
                    return Err(Reply::err("no such key"));
                };
                let data = postcard::to_allocvec(&s.attributes).expect("attributes always encode");
                let deadline = s.deadline_ms.map_or(-1, |d| d.min(i64::MAX as u64) as i64);
                self.move_key_away(id);
                Ok(Reply::Array(vec![Reply::Bulk(data), Reply::Int(deadline)]))
            }
            RedisOp::PutIn {
                key,
                attributes,
                deadline_ms,
            } => {
                let mut attributes = attributes.clone();
                attributes.insert(KEY_ATTR.into(), key.name.clone());
                if attributes
                    .get(TYPE_ATTR)
                    .and_then(|t| KeyType::tagged(t))
                    .is_none()
                {
                    return Err(Reply::err("moved data has no key type"));
                }
                self.put(index, key, attributes, *deadline_ms, grace)?;
                Ok(Reply::Ok)
            }
        }
    }

    /// The attributes of the hash or set `key` (new ones if it does not exist).
    fn collection(&self, key: &KeyRef, t: KeyType) -> Result<Attributes, Reply> {
        Ok(match self.typed(&key.id, t)? {
            Some(s) => s.attributes.to_map(),
            None => layout(key, t, []),
        })
    }

    fn remove_fields(
        &mut self,
        index: u64,
        id: &SessionId,
        t: KeyType,
        fields: &[String],
    ) -> OpResult {
        let Some(s) = self.typed(id, t)? else {
            return Ok(Reply::Int(0));
        };
        let mut attributes = s.attributes.to_map();
        let removed = fields
            .iter()
            .filter(|f| is_user_field(f) && attributes.remove(*f).is_some())
            .count();
        if removed == 0 {
            return Ok(Reply::Int(0));
        }
        if attributes.keys().any(|k| is_user_field(k)) {
            let now = self.clock_ms;
            self.modify(id, |s| {
                s.attributes = attributes.into();
                s.version = index;
                s.accessed_ms = now;
            });
            self.emit(EventKind::Updated(*id));
        } else {
            // Redis deletes an emptied hash or set.
            self.delete_key(id);
        }
        Ok(Reply::Int(removed as i64))
    }

    fn put_keeping_deadline(
        &mut self,
        index: u64,
        key: &KeyRef,
        attributes: Attributes,
        grace: u64,
    ) -> Result<(), Reply> {
        let deadline = self.key(&key.id).and_then(|s| s.deadline_ms);
        self.put(index, key, attributes, deadline, grace)
    }

    /// Stores `attributes` under `key` with `deadline`, creating the key if needed (also over a
    /// tombstone, unless it is younger than `grace` ms). A deadline not after now deletes it.
    fn put(
        &mut self,
        index: u64,
        key: &KeyRef,
        attributes: Attributes,
        deadline: Option<u64>,
        grace: u64,
    ) -> Result<(), Reply> {
        let attributes = PackedAttributes::from(&attributes);
        if let Some(rejection) = validate(attributes.iter(), NO_IDLE_TIMEOUT) {
            return Err(match rejection {
                Outcome::TooLarge { bytes, limit } => Reply::err(format!(
                    "value too large: the key would take {bytes} bytes, limit {limit}"
                )),
                Outcome::Invalid { reason } => Reply::err(reason),
                other => Reply::err(format!("refused: {other:?}")),
            });
        }
        let now = self.clock_ms;
        let id = key.id;
        if self.sessions.contains_key(&id) {
            self.modify(&id, |s| {
                s.attributes = attributes;
                s.deadline_ms = deadline;
                s.accessed_ms = now;
                s.version = index;
            });
            self.emit(EventKind::Updated(id));
        } else {
            if let Some(&died) = self.tombstones.get(&id) {
                let ago = now.saturating_sub(died);
                if ago < grace {
                    return Err(Reply::err(format!(
                        "key was deleted {ago} ms ago; it may not be created again within \
                         {grace} ms (the namespace's redis_delete_grace_ms)"
                    )));
                }
                self.unbury(id, died);
            }
            let session = Session {
                attributes,
                created_ms: now,
                accessed_ms: now,
                idle_timeout_ms: NO_IDLE_TIMEOUT,
                deadline_ms: deadline,
                version: index,
                principal: None,
            };
            self.insert_live(id, session);
            self.emit(EventKind::Created(id));
        }
        if deadline.is_some_and(|d| d <= now) {
            let event = self.expired_event(id);
            self.kill(&id);
            self.emit(event);
        }
        Ok(())
    }

    /// Gives a live key a new deadline (and version); one not after now deletes it.
    fn set_deadline(&mut self, index: u64, id: &SessionId, deadline: Option<u64>) {
        let now = self.clock_ms;
        if deadline.is_some_and(|d| d <= now) {
            self.delete_key(id);
            return;
        }
        self.modify(id, |s| {
            s.deadline_ms = deadline;
            s.version = index;
        });
        self.emit(EventKind::Updated(*id));
    }

    /// Deletes a live key (tombstoned, so a grace period can refuse its re-creation), with a
    /// `KeyDeleted` event.
    fn delete_key(&mut self, id: &SessionId) -> bool {
        let Some(name) = self.key_name(id) else {
            return self.move_key_away(id);
        };
        self.kill(id);
        self.emit(EventKind::KeyDeleted { id: *id, name });
        true
    }

    /// Removes a key whose data moves to another name (`RENAME`): a plain `Deleted` event, as
    /// Redis sends no `del` notification for a renamed key.
    fn move_key_away(&mut self, id: &SessionId) -> bool {
        if !self.sessions.contains_key(id) {
            return false;
        }
        self.kill(id);
        self.emit(EventKind::Deleted(*id));
        true
    }
}

fn string_value(s: &Session) -> Vec<u8> {
    s.attributes.get(VALUE_ATTR).unwrap_or_default().to_vec()
}

fn check_field(name: &str) -> Result<(), Reply> {
    if is_user_field(name) {
        Ok(())
    } else {
        Err(Reply::err(
            "field names and members may not start with a NUL byte",
        ))
    }
}

/// A key's attributes: its name, its type and `extra`.
fn layout<const N: usize>(key: &KeyRef, t: KeyType, extra: [(&str, Vec<u8>); N]) -> Attributes {
    let mut attributes = Attributes::from([
        (KEY_ATTR.to_string(), key.name.clone()),
        (TYPE_ATTR.to_string(), t.name().as_bytes().to_vec()),
    ]);
    for (name, value) in extra {
        attributes.insert(name.to_string(), value);
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::redis::ReadOp;
    use crate::command::{Command, Request};

    fn key(n: u8) -> KeyRef {
        KeyRef {
            id: SessionId::from_bytes([n; 16]),
            name: format!("k{n}").into_bytes(),
        }
    }

    fn run(s: &mut SessionState, index: u64, now_ms: u64, batch: RedisBatch) -> Option<Vec<Reply>> {
        let request = Request {
            now_ms,
            origin: None,
            command: Command::Redis(batch),
        };
        match s.apply(index, &request).outcome {
            Outcome::Redis(replies) => replies,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn ops(ops: Vec<RedisOp>, grace: u64) -> RedisBatch {
        RedisBatch {
            watches: Vec::new(),
            ops,
            delete_grace_ms: grace,
        }
    }

    fn set(n: u8, value: &str, expiry: Expiry) -> RedisOp {
        RedisOp::Set {
            key: key(n),
            value: value.as_bytes().to_vec(),
            condition: SetCondition::Always,
            expiry,
            get: false,
        }
    }

    fn get(n: u8) -> RedisOp {
        RedisOp::Read {
            id: key(n).id,
            op: ReadOp::Get,
        }
    }

    fn del(n: u8) -> RedisOp {
        RedisOp::Del { id: key(n).id }
    }

    #[test]
    fn set_after_del_creates_again_unless_within_the_grace_period() {
        let mut s = SessionState::default();
        run(
            &mut s,
            1,
            1_000,
            ops(vec![set(1, "a", Expiry::Clear), del(1)], 0),
        );
        let again = run(
            &mut s,
            2,
            1_001,
            ops(vec![set(1, "b", Expiry::Clear), get(1)], 0),
        );
        assert_eq!(again, Some(vec![Reply::Ok, Reply::Bulk(b"b".to_vec())]));

        run(&mut s, 3, 2_000, ops(vec![del(1)], 5_000));
        let refused = run(
            &mut s,
            4,
            3_000,
            ops(vec![set(1, "late save", Expiry::Clear), get(1)], 5_000),
        )
        .expect("no watches");
        assert!(
            matches!(&refused[0], Reply::Error(e) if e.contains("deleted 1000 ms ago")),
            "{refused:?}"
        );
        assert_eq!(refused[1], Reply::Nil, "the logged-out key stays gone");
        let later = run(
            &mut s,
            5,
            7_001,
            ops(vec![set(1, "new", Expiry::Clear)], 5_000),
        );
        assert_eq!(
            later,
            Some(vec![Reply::Ok]),
            "after the grace period it may come back"
        );
    }

    #[test]
    fn deadlines_are_absolute_and_reads_do_not_extend_them() {
        let mut s = SessionState::default();
        run(&mut s, 1, 1_000, ops(vec![set(1, "v", Expiry::In(500))], 0));
        for (i, t) in [(2, 1_200), (3, 1_400)] {
            let r = run(&mut s, i, t, ops(vec![get(1)], 0));
            assert_eq!(r, Some(vec![Reply::Bulk(b"v".to_vec())]));
        }
        assert_eq!(
            run(&mut s, 4, 1_500, ops(vec![get(1)], 0)),
            Some(vec![Reply::Nil])
        );
        let events = s.events_from(0, 100).expect("retained");
        let expired = EventKind::KeyExpired {
            id: key(1).id,
            name: key(1).name,
        };
        assert!(events.iter().any(|e| e.kind == expired), "{events:?}");
        // EXPIRE in the past deletes; PERSIST clears; TTL counts down from the set deadline.
        run(
            &mut s,
            5,
            2_000,
            ops(vec![set(2, "v", Expiry::In(10_000))], 0),
        );
        let ttl = RedisOp::Read {
            id: key(2).id,
            op: ReadOp::Ttl { millis: true },
        };
        assert_eq!(
            run(&mut s, 6, 5_000, ops(vec![ttl.clone()], 0)),
            Some(vec![Reply::Int(7_000)])
        );
        let persist = RedisOp::Expire {
            id: key(2).id,
            expiry: Expiry::Clear,
        };
        assert_eq!(
            run(&mut s, 7, 5_000, ops(vec![persist, ttl.clone()], 0)),
            Some(vec![Reply::Int(1), Reply::Int(-1)])
        );
        let past = RedisOp::Expire {
            id: key(2).id,
            expiry: Expiry::At(0),
        };
        assert_eq!(
            run(&mut s, 8, 5_000, ops(vec![past, ttl], 0)),
            Some(vec![Reply::Int(1), Reply::Int(-2)])
        );
    }

    #[test]
    fn deletions_and_expiries_of_keys_carry_the_name_and_a_rename_is_no_deletion() {
        let mut s = SessionState::default();
        run(&mut s, 1, 1_000, ops(vec![set(1, "v", Expiry::Clear)], 0));
        run(&mut s, 2, 1_000, ops(vec![set(2, "v", Expiry::In(100))], 0));
        let rename = RedisOp::Rename {
            from: key(2).id,
            to: key(3),
            only_if_absent: false,
        };
        run(&mut s, 3, 1_010, ops(vec![del(1), rename], 0));
        // The deadline moved with the key: the leader's purge expires it under its new name.
        let purge = Request {
            now_ms: 1_200,
            origin: None,
            command: Command::Expire,
        };
        s.apply(4, &purge);
        let kinds: Vec<EventKind> = s
            .events_from(3, 100)
            .expect("retained")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        let name = |n: u8| key(n).name;
        assert_eq!(
            kinds,
            vec![
                EventKind::KeyDeleted {
                    id: key(1).id,
                    name: name(1)
                },
                EventKind::Created(key(3).id),
                EventKind::Deleted(key(2).id),
                EventKind::KeyExpired {
                    id: key(3).id,
                    name: name(3)
                },
            ]
        );
    }

    #[test]
    fn a_watched_key_that_changed_aborts_the_whole_batch() {
        let mut s = SessionState::default();
        run(&mut s, 1, 1, ops(vec![set(1, "0", Expiry::Clear)], 0));
        let version = s.sessions[&key(1).id].version;
        let tx = |v: Option<u64>| RedisBatch {
            watches: vec![(key(1).id, v)],
            ops: vec![set(1, "tx", Expiry::Clear), set(2, "tx", Expiry::Clear)],
            delete_grace_ms: 0,
        };
        assert_eq!(
            run(&mut s, 2, 2, tx(Some(version))),
            Some(vec![Reply::Ok, Reply::Ok])
        );
        assert_eq!(
            run(&mut s, 3, 3, tx(Some(version))),
            None,
            "the first EXEC changed it"
        );
        assert_eq!(
            run(&mut s, 4, 4, ops(vec![del(2)], 0)),
            Some(vec![Reply::Int(1)])
        );
        assert_eq!(run(&mut s, 5, 5, tx(Some(version))), None);
        assert!(
            s.get(&key(2).id).is_none(),
            "an aborted batch wrote nothing"
        );
    }

    #[test]
    fn types_are_enforced_and_hashes_sets_and_renames_work() {
        let mut s = SessionState::default();
        let hset = RedisOp::HSet {
            key: key(1),
            fields: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        };
        let incr = RedisOp::HIncrBy {
            key: key(1),
            field: "a".into(),
            delta: 41,
        };
        let r = run(&mut s, 1, 1, ops(vec![hset, incr, get(1)], 0)).expect("ran");
        assert_eq!(r[..2], [Reply::Int(2), Reply::Int(42)]);
        assert!(matches!(&r[2], Reply::Error(e) if e.starts_with("WRONGTYPE")));
        let sadd = RedisOp::SAdd {
            key: key(1),
            members: vec!["m".into()],
        };
        let r = run(&mut s, 2, 2, ops(vec![sadd], 0)).expect("ran");
        assert!(matches!(&r[0], Reply::Error(e) if e.starts_with("WRONGTYPE")));
        let rename = RedisOp::Rename {
            from: key(1).id,
            to: key(3),
            only_if_absent: false,
        };
        let all = RedisOp::Read {
            id: key(3).id,
            op: ReadOp::HGetAll,
        };
        let r = run(&mut s, 3, 3, ops(vec![rename, all], 0)).expect("ran");
        assert_eq!(
            r,
            vec![
                Reply::Ok,
                Reply::Map(vec![
                    (Reply::text("a"), Reply::Bulk(b"42".to_vec())),
                    (Reply::text("b"), Reply::Bulk(b"2".to_vec()))
                ])
            ]
        );
        assert!(s.get(&key(1).id).is_none());
        assert_eq!(
            s.sessions[&key(3).id].attributes.get(KEY_ATTR),
            Some(&b"k3"[..])
        );
        let hdel = RedisOp::HDel {
            id: key(3).id,
            fields: vec!["a".into(), "b".into(), "zz".into()],
        };
        assert_eq!(
            run(&mut s, 4, 4, ops(vec![hdel], 0)),
            Some(vec![Reply::Int(2)])
        );
        assert!(s.get(&key(3).id).is_none(), "an emptied hash is deleted");
    }

    #[test]
    fn scan_batches_end_on_prefix_boundaries_and_cover_every_key() {
        let mut s = SessionState::default();
        let mut all = Vec::new();
        for n in 0..50u8 {
            let mut bytes = [n.wrapping_mul(37); 16];
            bytes[15] = n;
            let k = KeyRef {
                id: SessionId::from_bytes(bytes),
                name: vec![n],
            };
            let op = RedisOp::Set {
                key: k,
                value: Vec::new(),
                condition: SetCondition::Always,
                expiry: Expiry::Clear,
                get: false,
            };
            run(&mut s, u64::from(n) + 1, 1, ops(vec![op], 0));
            all.push(vec![n]);
        }
        let mut from = SessionId::from_bytes([0; 16]);
        let mut seen = Vec::new();
        loop {
            let (keys, next) = s.redis_scan(from, 7);
            seen.extend(keys.into_iter().map(|(k, _)| k));
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        seen.sort();
        all.sort();
        assert_eq!(seen, all);
    }
}
