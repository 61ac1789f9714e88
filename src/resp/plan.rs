//! Key commands as key operations: parses a command's arguments into the [`RedisOp`]s it needs
//! (one or more per key) and how their replies combine into the command's reply. The same plan
//! runs alone or queued in `MULTI`.

use bytes::Bytes;

use crate::command::redis::{Expiry, KeyRef, ReadOp, RedisOp, Reply, SetCondition};
use crate::id::SessionId;
use crate::limits;

use super::keyspace::key_id;

/// How the replies of a plan's operations make the command's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// The one operation's reply.
    One,
    /// The sum of integer replies (`DEL k1 k2`, `EXISTS`).
    Sum,
    /// An array of the replies (`MGET`).
    Array,
    /// `OK` unless an operation failed (`HMSET`).
    Ok,
    /// `SETNX`: `OK` means 1, nil means 0.
    SetNx,
}

/// The operations of one key command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The operations, each on one key.
    pub ops: Vec<RedisOp>,
    /// How their replies combine.
    pub combine: Combine,
}

/// What a key command needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Operations on keys (possibly in several groups).
    Keys(Plan),
    /// `RENAME`/`RENAMENX` between keys of different groups: two steps, fail-safe.
    CrossGroupRename {
        /// The source key.
        from: KeyRef,
        /// The destination.
        to: KeyRef,
        /// `RENAMENX`.
        only_if_absent: bool,
    },
}

type Parsed<T> = Result<T, Reply>;

fn arity(name: &str) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn syntax() -> Reply {
    Reply::err("syntax error")
}

fn integer(arg: &Bytes) -> Parsed<i64> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

fn text(arg: &Bytes) -> Parsed<String> {
    String::from_utf8(arg.to_vec())
        .map_err(|_| Reply::err("hash fields and set members must be UTF-8 in steadfast"))
}

/// A positive time in ms from `amount` in `unit_ms` units, for `command`.
fn duration_ms(arg: &Bytes, unit_ms: i64, command: &str) -> Parsed<u64> {
    let n = integer(arg)?;
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms as u64),
        _ => Err(Reply::err(format!(
            "invalid expire time in '{}' command",
            command.to_ascii_lowercase()
        ))),
    }
}

struct Keys {
    groups: u32,
}

impl Keys {
    fn key(&self, name: &Bytes) -> Parsed<KeyRef> {
        if name.len() > limits::REDIS_KEY_BYTES_MAX {
            return Err(Reply::err(format!(
                "key of {} bytes, limit {}",
                name.len(),
                limits::REDIS_KEY_BYTES_MAX
            )));
        }
        Ok(KeyRef {
            id: key_id(name, self.groups),
            name: name.to_vec(),
        })
    }

    fn id(&self, name: &Bytes) -> Parsed<SessionId> {
        Ok(self.key(name)?.id)
    }

    fn read(&self, name: &Bytes, op: ReadOp) -> Parsed<Plan> {
        Ok(one(RedisOp::Read {
            id: self.id(name)?,
            op,
        }))
    }

    fn per_key(
        &self,
        names: &[Bytes],
        combine: Combine,
        op: impl Fn(SessionId) -> RedisOp,
    ) -> Parsed<Plan> {
        let ops = names
            .iter()
            .map(|n| self.id(n).map(&op))
            .collect::<Parsed<Vec<_>>>()?;
        Ok(Plan { ops, combine })
    }
}

fn one(op: RedisOp) -> Plan {
    Plan {
        ops: vec![op],
        combine: Combine::One,
    }
}

/// Plans `name` (upper case) with `args` (after the name); `None` if it is not a key command.
pub fn plan(name: &str, args: &[Bytes], groups: u32) -> Option<Parsed<Planned>> {
    let k = Keys { groups };
    let need = |min: usize, exact: bool| -> Parsed<()> {
        if args.len() < min || (exact && args.len() != min) {
            Err(arity(name))
        } else {
            Ok(())
        }
    };
    let keys = |k: &Keys| -> Parsed<Plan> { plan_keys(k, name, args, &need) };
    Some(match name {
        "RENAME" | "RENAMENX" => (|| {
            need(2, true)?;
            let from = k.key(&args[0])?;
            let to = k.key(&args[1])?;
            let only_if_absent = name == "RENAMENX";
            if from.id.group(groups) == to.id.group(groups) {
                Ok(Planned::Keys(one(RedisOp::Rename {
                    from: from.id,
                    to,
                    only_if_absent,
                })))
            } else {
                Ok(Planned::CrossGroupRename {
                    from,
                    to,
                    only_if_absent,
                })
            }
        })(),
        _ if KEY_COMMANDS.contains(&name) => keys(&k).map(Planned::Keys),
        _ => return None,
    })
}

/// Every command [`plan`] knows, for `COMMAND` and metrics labels.
pub const KEY_COMMANDS: &[&str] = &[
    "GET",
    "SET",
    "SETNX",
    "SETEX",
    "PSETEX",
    "MGET",
    "GETDEL",
    "GETEX",
    "DEL",
    "UNLINK",
    "EXISTS",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "TTL",
    "PTTL",
    "PERSIST",
    "TYPE",
    "STRLEN",
    "HSET",
    "HMSET",
    "HGET",
    "HMGET",
    "HGETALL",
    "HDEL",
    "HEXISTS",
    "HLEN",
    "HKEYS",
    "HVALS",
    "HINCRBY",
    "SADD",
    "SREM",
    "SMEMBERS",
    "SISMEMBER",
    "SCARD",
    "RENAME",
    "RENAMENX",
];

fn plan_keys(
    k: &Keys,
    name: &str,
    args: &[Bytes],
    need: &dyn Fn(usize, bool) -> Parsed<()>,
) -> Parsed<Plan> {
    match name {
        "GET" => {
            need(1, true)?;
            k.read(&args[0], ReadOp::Get)
        }
        "SET" => {
            need(2, false)?;
            plan_set(k, args)
        }
        "SETNX" => {
            need(2, true)?;
            Ok(Plan {
                ops: vec![set(
                    k.key(&args[0])?,
                    &args[1],
                    SetCondition::IfAbsent,
                    Expiry::Clear,
                )],
                combine: Combine::SetNx,
            })
        }
        "SETEX" | "PSETEX" => {
            need(3, true)?;
            let unit = if name == "SETEX" { 1000 } else { 1 };
            let ms = duration_ms(&args[1], unit, name)?;
            Ok(one(set(
                k.key(&args[0])?,
                &args[2],
                SetCondition::Always,
                Expiry::In(ms),
            )))
        }
        "MGET" => {
            need(1, false)?;
            k.per_key(args, Combine::Array, |id| RedisOp::Read {
                id,
                op: ReadOp::Get,
            })
        }
        "GETDEL" => {
            need(1, true)?;
            Ok(one(RedisOp::GetDel {
                id: k.id(&args[0])?,
            }))
        }
        "GETEX" => {
            need(1, false)?;
            let expiry = match &args[1..] {
                [] => Expiry::Keep,
                [p] if p.eq_ignore_ascii_case(b"PERSIST") => Expiry::Clear,
                [o, n] => expiry_option(o, n, name)?,
                _ => return Err(syntax()),
            };
            Ok(one(RedisOp::GetEx {
                id: k.id(&args[0])?,
                expiry,
            }))
        }
        "DEL" | "UNLINK" => {
            need(1, false)?;
            k.per_key(args, Combine::Sum, |id| RedisOp::Del { id })
        }
        "EXISTS" => {
            need(1, false)?;
            k.per_key(args, Combine::Sum, |id| RedisOp::Read {
                id,
                op: ReadOp::Exists,
            })
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            if args.len() > 2 {
                return Err(Reply::err(format!(
                    "{} options NX/XX/GT/LT are not supported by steadfast",
                    name
                )));
            }
            need(2, true)?;
            let n = integer(&args[1])?;
            let unit: i64 = if name.starts_with('P') { 1 } else { 1000 };
            let ms = n.checked_mul(unit).ok_or_else(|| {
                Reply::err(format!(
                    "invalid expire time in '{}' command",
                    name.to_ascii_lowercase()
                ))
            })?;
            // A deadline not after now deletes the key (as in Redis).
            let expiry = match (name.ends_with("AT"), ms) {
                (_, ms) if ms <= 0 => Expiry::At(0),
                (true, ms) => Expiry::At(ms as u64),
                (false, ms) => Expiry::In(ms as u64),
            };
            Ok(one(RedisOp::Expire {
                id: k.id(&args[0])?,
                expiry,
            }))
        }
        "PERSIST" => {
            need(1, true)?;
            Ok(one(RedisOp::Expire {
                id: k.id(&args[0])?,
                expiry: Expiry::Clear,
            }))
        }
        "TTL" | "PTTL" => {
            need(1, true)?;
            k.read(
                &args[0],
                ReadOp::Ttl {
                    millis: name == "PTTL",
                },
            )
        }
        "TYPE" => {
            need(1, true)?;
            k.read(&args[0], ReadOp::Type)
        }
        "STRLEN" => {
            need(1, true)?;
            k.read(&args[0], ReadOp::StrLen)
        }
        "HSET" | "HMSET" => {
            if args.len() < 3 || args.len().is_multiple_of(2) {
                return Err(arity(name));
            }
            let fields = args[1..]
                .chunks(2)
                .map(|p| Ok((text(&p[0])?, p[1].to_vec())))
                .collect::<Parsed<Vec<_>>>()?;
            let op = RedisOp::HSet {
                key: k.key(&args[0])?,
                fields,
            };
            Ok(Plan {
                ops: vec![op],
                combine: if name == "HMSET" {
                    Combine::Ok
                } else {
                    Combine::One
                },
            })
        }
        "HGET" | "HEXISTS" | "SISMEMBER" => {
            need(2, true)?;
            let field = text(&args[1])?;
            let op = match name {
                "HGET" => ReadOp::HGet(field),
                "HEXISTS" => ReadOp::HExists(field),
                _ => ReadOp::SIsMember(field),
            };
            k.read(&args[0], op)
        }
        "HMGET" => {
            need(2, false)?;
            let fields = args[1..].iter().map(text).collect::<Parsed<Vec<_>>>()?;
            k.read(&args[0], ReadOp::HMGet(fields))
        }
        "HGETALL" | "HLEN" | "HKEYS" | "HVALS" | "SMEMBERS" | "SCARD" => {
            need(1, true)?;
            let op = match name {
                "HGETALL" => ReadOp::HGetAll,
                "HLEN" => ReadOp::HLen,
                "HKEYS" => ReadOp::HKeys,
                "HVALS" => ReadOp::HVals,
                "SMEMBERS" => ReadOp::SMembers,
                _ => ReadOp::SCard,
            };
            k.read(&args[0], op)
        }
        "HDEL" | "SREM" => {
            need(2, false)?;
            let names = args[1..].iter().map(text).collect::<Parsed<Vec<_>>>()?;
            let id = k.id(&args[0])?;
            Ok(one(if name == "HDEL" {
                RedisOp::HDel { id, fields: names }
            } else {
                RedisOp::SRem { id, members: names }
            }))
        }
        "SADD" => {
            need(2, false)?;
            let members = args[1..].iter().map(text).collect::<Parsed<Vec<_>>>()?;
            Ok(one(RedisOp::SAdd {
                key: k.key(&args[0])?,
                members,
            }))
        }
        "HINCRBY" => {
            need(3, true)?;
            Ok(one(RedisOp::HIncrBy {
                key: k.key(&args[0])?,
                field: text(&args[1])?,
                delta: integer(&args[2])?,
            }))
        }
        _ => Err(Reply::err(format!("unknown command '{name}'"))),
    }
}

fn set(key: KeyRef, value: &Bytes, condition: SetCondition, expiry: Expiry) -> RedisOp {
    RedisOp::Set {
        key,
        value: value.to_vec(),
        condition,
        expiry,
        get: false,
    }
}

/// `EX n`, `PX n`, `EXAT t`, `PXAT t` for `command`.
fn expiry_option(option: &Bytes, n: &Bytes, command: &str) -> Parsed<Expiry> {
    let upper = option.to_ascii_uppercase();
    Ok(match upper.as_slice() {
        b"EX" => Expiry::In(duration_ms(n, 1000, command)?),
        b"PX" => Expiry::In(duration_ms(n, 1, command)?),
        b"EXAT" => Expiry::At(duration_ms(n, 1000, command)?),
        b"PXAT" => Expiry::At(duration_ms(n, 1, command)?),
        _ => return Err(syntax()),
    })
}

fn plan_set(k: &Keys, args: &[Bytes]) -> Parsed<Plan> {
    let mut condition = SetCondition::Always;
    let mut expiry = None;
    let mut keep = false;
    let mut get = false;
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        match option.as_slice() {
            b"NX" | b"XX" if condition == SetCondition::Always => {
                condition = if option == b"NX" {
                    SetCondition::IfAbsent
                } else {
                    SetCondition::IfPresent
                };
            }
            b"KEEPTTL" if expiry.is_none() && !keep => keep = true,
            b"GET" if !get => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry.is_none() && !keep => {
                let n = args.get(i + 1).ok_or_else(syntax)?;
                expiry = Some(expiry_option(&args[i], n, "set")?);
                i += 1;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    let expiry = match (expiry, keep) {
        (Some(e), _) => e,
        (None, true) => Expiry::Keep,
        (None, false) => Expiry::Clear,
    };
    Ok(one(RedisOp::Set {
        key: k.key(&args[0])?,
        value: args[1].to_vec(),
        condition,
        expiry,
        get,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
    }

    fn planned(cmd: &str) -> Parsed<Planned> {
        let all = args(cmd);
        plan(
            &all[0]
                .to_ascii_uppercase()
                .iter()
                .map(|b| *b as char)
                .collect::<String>(),
            &all[1..],
            8,
        )
        .expect("a key command")
    }

    #[test]
    fn set_options_parse_and_conflicts_are_syntax_errors() {
        let Ok(Planned::Keys(p)) = planned("SET k v PX 1500 NX GET") else {
            panic!("SET parses");
        };
        assert!(matches!(
            &p.ops[0],
            RedisOp::Set {
                condition: SetCondition::IfAbsent,
                expiry: Expiry::In(1500),
                get: true,
                ..
            }
        ));
        assert_eq!(planned("SET k v NX XX"), Err(syntax()));
        assert_eq!(planned("SET k v EX 1 KEEPTTL"), Err(syntax()));
        assert_eq!(planned("SET k v EX"), Err(syntax()));
        assert!(planned("SET k v EX 0").is_err());
        assert!(planned("SET k v EX -1").is_err());
        assert_eq!(
            planned("GET"),
            Err(Reply::err("wrong number of arguments for 'get' command"))
        );
        assert!(plan("PING", &[], 8).is_none());
    }

    #[test]
    fn multi_key_commands_plan_one_op_per_key() {
        let Ok(Planned::Keys(p)) = planned("DEL a b c") else {
            panic!("DEL parses");
        };
        assert_eq!((p.ops.len(), p.combine), (3, Combine::Sum));
        let Ok(Planned::Keys(p)) = planned("EXPIRE k -5") else {
            panic!("EXPIRE parses");
        };
        assert!(matches!(
            p.ops[0],
            RedisOp::Expire {
                expiry: Expiry::At(0),
                ..
            }
        ));
        assert!(matches!(planned("RENAME {a}x {a}y"), Ok(Planned::Keys(_))));
    }
}
