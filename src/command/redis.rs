//! Redis keys as sessions: how a key's name, type and value are laid out in a session's
//! attributes, the key operations the state machine applies ([`RedisBatch`], carried by
//! `Command::Redis`), and the replies they produce.
//!
//! Layout: a Redis key is a session whose id is derived from the key name (see
//! `crate::resp::keyspace`). Reserved attributes start with a NUL byte, which a hash field or
//! set member may not: `\0key` holds the key name, `\0type` its type (`string`, `hash` or `set`),
//! `\0value` a string's value. A hash's fields and a set's members are the other attributes (a
//! member's value is empty). A key has no idle timeout; its only deadline is the absolute one
//! `EXPIRE` and friends set, so reads never extend it.
//!
//! Read operations are pure functions of a key's attributes and deadline ([`read`]), so a read
//! through the linearizable read path and the same read inside a transaction answer alike.

use serde::{Deserialize, Serialize};

use super::Attributes;
use crate::id::SessionId;
use crate::session::PackedAttributes;

/// The attribute holding the key's name.
pub const KEY_ATTR: &str = "\0key";
/// The attribute holding the key's type.
pub const TYPE_ATTR: &str = "\0type";
/// The attribute holding a string's value.
pub const VALUE_ATTR: &str = "\0value";

/// The bytes of a session id that a SCAN cursor keeps: with a group number below 2^10, a cursor
/// stays below 2^53, which JavaScript clients parse exactly.
pub const SCAN_PREFIX_BYTES: usize = 5;

/// The error Redis gives for an operation on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The kinds of value a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// A string (`SET`/`GET`).
    String,
    /// A hash (`HSET`/`HGET`).
    Hash,
    /// A set (`SADD`/`SMEMBERS`).
    Set,
}

impl KeyType {
    /// The name `TYPE` answers.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Hash => "hash",
            KeyType::Set => "set",
        }
    }

    /// The type recorded in `attributes`; `None` for a session that is not a Redis key.
    pub fn of(attributes: &PackedAttributes) -> Option<KeyType> {
        Self::tagged(attributes.get(TYPE_ATTR)?)
    }

    /// The type a `TYPE_ATTR` value names.
    pub fn tagged(tag: &[u8]) -> Option<KeyType> {
        match tag {
            b"string" => Some(KeyType::String),
            b"hash" => Some(KeyType::Hash),
            b"set" => Some(KeyType::Set),
            _ => None,
        }
    }
}

/// Whether `name` may be a hash field or set member (reserved names start with NUL).
pub fn is_user_field(name: &str) -> bool {
    !name.starts_with('\0')
}

/// A key addressed by a write that may create it: its session id and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// The key's session id.
    pub id: SessionId,
    /// The key's name (stored, so SCAN and KEYS can list it).
    pub name: Vec<u8>,
}

/// A key's deadline after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// Keep the current deadline (`KEEPTTL`, or `GETEX` without options).
    Keep,
    /// No deadline (`PERSIST`, or a `SET` without options).
    Clear,
    /// At this replicated time, in ms since the Unix epoch (`EXAT`, `PXAT`, `EXPIREAT`).
    At(u64),
    /// This many ms after the replicated time of the write (`EX`, `PX`, `EXPIRE`).
    In(u64),
}

impl Expiry {
    /// The absolute deadline this makes at replicated time `now_ms`, given the current one.
    pub fn resolve(self, now_ms: u64, current: Option<u64>) -> Option<u64> {
        match self {
            Expiry::Keep => current,
            Expiry::Clear => None,
            Expiry::At(t) => Some(t),
            Expiry::In(ms) => Some(now_ms.saturating_add(ms)),
        }
    }
}

/// `SET`'s `NX`/`XX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always write.
    Always,
    /// Only if the key does not exist (`NX`).
    IfAbsent,
    /// Only if the key exists (`XX`).
    IfPresent,
}

/// A read of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    /// `GET`.
    Get,
    /// `EXISTS` (one key): 1 or 0.
    Exists,
    /// `TYPE`.
    Type,
    /// `TTL` (seconds) or `PTTL` (ms): -2 without key, -1 without deadline.
    Ttl {
        /// Milliseconds instead of seconds.
        millis: bool,
    },
    /// `HGET`.
    HGet(String),
    /// `HMGET`.
    HMGet(Vec<String>),
    /// `HGETALL`.
    HGetAll,
    /// `HEXISTS`.
    HExists(String),
    /// `HLEN`.
    HLen,
    /// `HKEYS`.
    HKeys,
    /// `HVALS`.
    HVals,
    /// `SMEMBERS`.
    SMembers,
    /// `SISMEMBER`.
    SIsMember(String),
    /// `SCARD`.
    SCard,
    /// `STRLEN`.
    StrLen,
}

/// One operation of a [`RedisBatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedisOp {
    /// A read, at this position of the batch.
    Read {
        /// The key.
        id: SessionId,
        /// What to read.
        op: ReadOp,
    },
    /// `SET` (and `SETEX`, `PSETEX`, `SETNX`).
    Set {
        /// The key.
        key: KeyRef,
        /// The value.
        #[serde(with = "crate::session::byte_serde::bytes")]
        value: Vec<u8>,
        /// `NX`/`XX`.
        condition: SetCondition,
        /// The deadline afterwards.
        expiry: Expiry,
        /// `GET`: answer the old value instead of OK.
        get: bool,
    },
    /// `DEL`/`UNLINK` of one key: 1 or 0.
    Del {
        /// The key.
        id: SessionId,
    },
    /// `GETDEL`.
    GetDel {
        /// The key.
        id: SessionId,
    },
    /// `GETEX`.
    GetEx {
        /// The key.
        id: SessionId,
        /// The deadline afterwards.
        expiry: Expiry,
    },
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (a deadline not after now deletes the key)
    /// and `PERSIST` (`Expiry::Clear`): 1 if changed, 0 if not.
    Expire {
        /// The key.
        id: SessionId,
        /// The new deadline.
        expiry: Expiry,
    },
    /// `HSET`/`HMSET`: the number of fields added.
    HSet {
        /// The key.
        key: KeyRef,
        /// Fields and values.
        fields: Vec<(String, Vec<u8>)>,
    },
    /// `HDEL`: the number of fields removed (an emptied hash is deleted).
    HDel {
        /// The key.
        id: SessionId,
        /// Fields to remove.
        fields: Vec<String>,
    },
    /// `HINCRBY`: the new value.
    HIncrBy {
        /// The key.
        key: KeyRef,
        /// The field.
        field: String,
        /// The increment.
        delta: i64,
    },
    /// `SADD`: the number of members added.
    SAdd {
        /// The key.
        key: KeyRef,
        /// Members to add.
        members: Vec<String>,
    },
    /// `SREM`: the number removed (an emptied set is deleted).
    SRem {
        /// The key.
        id: SessionId,
        /// Members to remove.
        members: Vec<String>,
    },
    /// `RENAME`/`RENAMENX` within one group: the value and deadline move to `to`.
    Rename {
        /// The source key.
        from: SessionId,
        /// The destination key.
        to: KeyRef,
        /// `RENAMENX`: only if `to` does not exist (answers 1 or 0 instead of OK).
        only_if_absent: bool,
    },
    /// First half of a `RENAME` across groups: deletes the key and answers its attributes
    /// (postcard) and deadline (-1 for none), as `[bulk, integer]`.
    TakeOut {
        /// The source key.
        id: SessionId,
    },
    /// Second half of a `RENAME` across groups: stores moved data under `key`, replacing it.
    PutIn {
        /// The destination key.
        key: KeyRef,
        /// The moved attributes (without the key's name, which is set from `key`).
        #[serde(with = "crate::session::byte_serde::map")]
        attributes: Attributes,
        /// The moved deadline.
        deadline_ms: Option<u64>,
    },
}

impl RedisOp {
    /// The session this operation addresses.
    pub fn id(&self) -> SessionId {
        match self {
            RedisOp::Read { id, .. }
            | RedisOp::Del { id }
            | RedisOp::GetDel { id }
            | RedisOp::GetEx { id, .. }
            | RedisOp::Expire { id, .. }
            | RedisOp::HDel { id, .. }
            | RedisOp::SRem { id, .. }
            | RedisOp::TakeOut { id }
            | RedisOp::Rename { from: id, .. } => *id,
            RedisOp::Set { key, .. }
            | RedisOp::HSet { key, .. }
            | RedisOp::HIncrBy { key, .. }
            | RedisOp::SAdd { key, .. }
            | RedisOp::PutIn { key, .. } => key.id,
        }
    }
}

/// Key operations applied atomically, in order, at one log position; with `watches`, only if
/// every watched key is still at the version the client saw (`WATCH`/`MULTI`/`EXEC`). All keys
/// live in the group the command is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisBatch {
    /// `(key, version seen)`; `None` = the key did not exist. Any mismatch aborts the batch.
    pub watches: Vec<(SessionId, Option<u64>)>,
    /// The operations, answered one reply each.
    pub ops: Vec<RedisOp>,
    /// Writes that would create a key deleted or expired less than this long ago are refused
    /// (the namespace's `redis_delete_grace_ms`; 0 = Redis behaviour, a key comes back at once).
    pub delete_grace_ms: u64,
}

impl RedisBatch {
    /// About how many bytes this batch adds to a log entry: names, values and a fixed overhead
    /// per operation (what batches and AppendEntries requests are bounded by).
    pub fn approx_bytes(&self) -> usize {
        64 + self.watches.len() * 32 + self.ops.iter().map(RedisOp::approx_bytes).sum::<usize>()
    }
}

impl RedisOp {
    /// About how many bytes this operation takes in a log entry.
    pub fn approx_bytes(&self) -> usize {
        const OVERHEAD: usize = 48;
        let texts = |v: &[String]| v.iter().map(|t| t.len() + 8).sum::<usize>();
        OVERHEAD
            + match self {
                RedisOp::Read { op, .. } => match op {
                    ReadOp::HGet(f) | ReadOp::HExists(f) | ReadOp::SIsMember(f) => f.len(),
                    ReadOp::HMGet(fs) => texts(fs),
                    _ => 0,
                },
                RedisOp::Set { key, value, .. } => key.name.len() + value.len(),
                RedisOp::HSet { key, fields } => {
                    key.name.len()
                        + fields
                            .iter()
                            .map(|(f, v)| f.len() + v.len() + 8)
                            .sum::<usize>()
                }
                RedisOp::HIncrBy { key, field, .. } => key.name.len() + field.len(),
                RedisOp::SAdd { key, members } => key.name.len() + texts(members),
                RedisOp::HDel { fields, .. } => texts(fields),
                RedisOp::SRem { members, .. } => texts(members),
                RedisOp::Rename { to, .. } => to.name.len(),
                RedisOp::PutIn {
                    key, attributes, ..
                } => {
                    key.name.len()
                        + attributes
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 8)
                            .sum::<usize>()
                }
                RedisOp::Del { .. }
                | RedisOp::GetDel { .. }
                | RedisOp::GetEx { .. }
                | RedisOp::Expire { .. }
                | RedisOp::TakeOut { .. } => 0,
            }
    }
}

/// A Redis reply, as the state machine and the RESP server produce it. Encoded as RESP2 or
/// RESP3 by the connection (maps and sets degrade to arrays in RESP2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A simple string.
    Simple(String),
    /// An error line (starting with its code, e.g. `ERR` or `WRONGTYPE`).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(#[serde(with = "crate::session::byte_serde::bytes")] Vec<u8>),
    /// The null bulk string (RESP3 null).
    Nil,
    /// An array.
    Array(Vec<Reply>),
    /// The null array (an aborted `EXEC`; RESP3 null).
    NilArray,
    /// A map (RESP3; a flat array of pairs in RESP2).
    Map(Vec<(Reply, Reply)>),
    /// A set (RESP3; an array in RESP2).
    Set(Vec<Reply>),
    /// An out-of-band push (RESP3; an array in RESP2), for pub/sub messages.
    Push(Vec<Reply>),
}

impl Reply {
    /// An `ERR` error line.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }
}

/// A key as read: its attributes and absolute deadline.
#[derive(Clone, Copy, Debug)]
pub struct KeyData<'a> {
    /// The session's attributes.
    pub attributes: &'a PackedAttributes,
    /// The key's deadline, if any.
    pub deadline_ms: Option<u64>,
}

impl KeyData<'_> {
    fn key_type(&self) -> Option<KeyType> {
        KeyType::of(self.attributes)
    }

    /// The user's fields or members, in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.attributes.iter().filter(|(k, _)| is_user_field(k))
    }
}

/// [`read`] on a key as a client reads it: its attributes as a map and its deadline.
pub fn read_map(op: &ReadOp, key: Option<(&Attributes, Option<u64>)>, now_ms: u64) -> Reply {
    let packed =
        key.map(|(attributes, deadline_ms)| (PackedAttributes::from(attributes), deadline_ms));
    let key = packed.as_ref().map(|(attributes, deadline_ms)| KeyData {
        attributes,
        deadline_ms: *deadline_ms,
    });
    read(op, key, now_ms)
}

/// Answers `op` on a key (`None` = it does not exist) at replicated time `now_ms`.
pub fn read(op: &ReadOp, key: Option<KeyData<'_>>, now_ms: u64) -> Reply {
    let kind = key.and_then(|k| k.key_type());
    let want = |t: KeyType| -> Result<Option<KeyData<'_>>, Reply> {
        match (key, kind) {
            (None, _) => Ok(None),
            (Some(k), Some(found)) if found == t => Ok(Some(k)),
            _ => Err(Reply::Error(WRONGTYPE.into())),
        }
    };
    let result = (|| -> Result<Reply, Reply> {
        Ok(match op {
            ReadOp::Get => match want(KeyType::String)? {
                Some(k) => Reply::Bulk(k.attributes.get(VALUE_ATTR).unwrap_or_default().to_vec()),
                None => Reply::Nil,
            },
            ReadOp::StrLen => Reply::Int(
                want(KeyType::String)?
                    .and_then(|k| k.attributes.get(VALUE_ATTR).map(|v| v.len() as i64))
                    .unwrap_or(0),
            ),
            ReadOp::Exists => Reply::Int(i64::from(key.is_some())),
            ReadOp::Type => Reply::Simple(kind.map_or("none", KeyType::name).into()),
            ReadOp::Ttl { millis } => Reply::Int(match key {
                None => -2,
                Some(KeyData {
                    deadline_ms: None, ..
                }) => -1,
                Some(KeyData {
                    deadline_ms: Some(d),
                    ..
                }) => {
                    let left = d.saturating_sub(now_ms);
                    let left = if *millis { left } else { left.div_ceil(1000) };
                    left.min(i64::MAX as u64) as i64
                }
            }),
            ReadOp::HGet(field) => want(KeyType::Hash)?
                .and_then(|k| k.attributes.get(field).map(<[u8]>::to_vec))
                .map_or(Reply::Nil, Reply::Bulk),
            ReadOp::HMGet(fields) => {
                let k = want(KeyType::Hash)?;
                Reply::Array(
                    fields
                        .iter()
                        .map(|f| {
                            k.and_then(|k| k.attributes.get(f).map(<[u8]>::to_vec))
                                .map_or(Reply::Nil, Reply::Bulk)
                        })
                        .collect(),
                )
            }
            ReadOp::HGetAll => Reply::Map(
                want(KeyType::Hash)?
                    .map(|k| {
                        k.fields()
                            .map(|(f, v)| (Reply::text(f), Reply::Bulk(v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            ReadOp::HExists(field) => Reply::Int(i64::from(
                want(KeyType::Hash)?.is_some_and(|k| k.attributes.contains_key(field)),
            )),
            ReadOp::HLen => {
                Reply::Int(want(KeyType::Hash)?.map_or(0, |k| k.fields().count()) as i64)
            }
            ReadOp::HKeys => Reply::Array(
                want(KeyType::Hash)?
                    .map(|k| k.fields().map(|(f, _)| Reply::text(f)).collect())
                    .unwrap_or_default(),
            ),
            ReadOp::HVals => Reply::Array(
                want(KeyType::Hash)?
                    .map(|k| k.fields().map(|(_, v)| Reply::Bulk(v.to_vec())).collect())
                    .unwrap_or_default(),
            ),
            ReadOp::SMembers => Reply::Set(
                want(KeyType::Set)?
                    .map(|k| k.fields().map(|(f, _)| Reply::text(f)).collect())
                    .unwrap_or_default(),
            ),
            ReadOp::SIsMember(member) => Reply::Int(i64::from(
                want(KeyType::Set)?.is_some_and(|k| k.attributes.contains_key(member)),
            )),
            ReadOp::SCard => {
                Reply::Int(want(KeyType::Set)?.map_or(0, |k| k.fields().count()) as i64)
            }
        })
    })();
    result.unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(value: &[u8]) -> Attributes {
        Attributes::from([
            (KEY_ATTR.into(), b"k".to_vec()),
            (TYPE_ATTR.into(), b"string".to_vec()),
            (VALUE_ATTR.into(), value.to_vec()),
        ])
    }

    #[test]
    fn reads_answer_by_type_and_ttl_counts_down_from_an_absolute_deadline() {
        let attrs = PackedAttributes::from(string(b"v"));
        let key = KeyData {
            attributes: &attrs,
            deadline_ms: Some(10_500),
        };
        assert_eq!(read(&ReadOp::Get, Some(key), 0), Reply::Bulk(b"v".to_vec()));
        assert_eq!(read(&ReadOp::Get, None, 0), Reply::Nil);
        assert_eq!(
            read(&ReadOp::HGet("f".into()), Some(key), 0),
            Reply::Error(WRONGTYPE.into())
        );
        assert_eq!(
            read(&ReadOp::Ttl { millis: false }, Some(key), 9_000),
            Reply::Int(2)
        );
        assert_eq!(
            read(&ReadOp::Ttl { millis: true }, Some(key), 9_000),
            Reply::Int(1_500)
        );
        assert_eq!(
            read(&ReadOp::Ttl { millis: true }, None, 9_000),
            Reply::Int(-2)
        );
        assert_eq!(
            read(&ReadOp::Type, Some(key), 0),
            Reply::Simple("string".into())
        );
        assert_eq!(read(&ReadOp::Type, None, 0), Reply::Simple("none".into()));
    }
}
