//! One RESP connection: reads pipelined requests, answers each in order, and keeps the
//! connection's state (protocol version, authentication, name, `MULTI` queue, `WATCH`ed keys).
//!
//! Requests are answered one after another in arrival order; every reply of one read is written
//! back in one write. Malformed input gets one `-ERR Protocol error` line and the connection is
//! closed (other connections are untouched).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::command::redis::{KeyType, Reply};
use crate::id::SessionId;
use crate::limits;
use crate::transport::BoxStream;

use super::codec::{encode, RequestDecoder};
use super::exec::CROSSSLOT;
use super::keyspace::{key_id, Cursor};
use super::plan::{plan, Plan, Planned, KEY_COMMANDS};
use super::{info, Shared};

/// RESP commands served, by `command` and `result` (`ok` or `error`).
pub const METRIC_RESP_COMMANDS: &str = "steadfast_resp_commands_total";
/// Time to answer a RESP command, by `command`.
pub const METRIC_RESP_SECONDS: &str = "steadfast_resp_command_duration_seconds";

/// Replies buffered before they are written even if more requests are waiting.
const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;

/// Connection commands (beside [`KEY_COMMANDS`]), for `COMMAND` and metric labels.
pub const CONNECTION_COMMANDS: &[&str] = &[
    "PING", "ECHO", "HELLO", "AUTH", "SELECT", "CLIENT", "INFO", "COMMAND", "QUIT", "RESET",
    "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SCAN", "KEYS", "DBSIZE",
];

struct Conn {
    id: u64,
    resp3: bool,
    authenticated: bool,
    name: Option<Bytes>,
    /// Queued plans of an open `MULTI`, and whether queueing one failed (EXEC then aborts).
    multi: Option<(Vec<Plan>, bool)>,
    watches: Vec<(SessionId, Option<u64>)>,
}

/// What to do after a reply.
enum After {
    Continue,
    Close,
}

/// Serves one connection until the client leaves or sends something malformed.
pub async fn serve(mut stream: BoxStream, shared: Arc<Shared>, id: u64) {
    let mut conn = Conn {
        id,
        resp3: false,
        authenticated: shared.options.password.is_none(),
        name: None,
        multi: None,
        watches: Vec::new(),
    };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::new();
    loop {
        loop {
            match RequestDecoder.decode(&mut input) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => {
                    let (reply, after) = conn.answer(&shared, args).await;
                    encode(&reply, conn.resp3, &mut output);
                    if matches!(after, After::Close) {
                        let _ = stream.write_all(&output).await;
                        return;
                    }
                    if output.len() >= OUTPUT_FLUSH_BYTES {
                        if stream.write_all(&output).await.is_err() {
                            return;
                        }
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(connection = id, error = %e, "closing a RESP connection");
                    metrics::counter!(METRIC_RESP_COMMANDS, "command" => "malformed", "result" => "error")
                        .increment(1);
                    encode(&Reply::err(e), conn.resp3, &mut output);
                    let _ = stream.write_all(&output).await;
                    return;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The metrics label of a command: its name if we know it, else `other` (bounded cardinality).
fn label(name: &str) -> &'static str {
    KEY_COMMANDS
        .iter()
        .chain(CONNECTION_COMMANDS)
        .find(|c| **c == name)
        .copied()
        .unwrap_or("other")
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

impl Conn {
    async fn answer(&mut self, shared: &Shared, args: Vec<Bytes>) -> (Reply, After) {
        let start = tokio::time::Instant::now();
        let name = upper(&args[0]);
        let (reply, after) = self.dispatch(shared, &name, &args[1..]).await;
        let command = label(&name);
        let result = if matches!(reply, Reply::Error(_)) {
            "error"
        } else {
            "ok"
        };
        metrics::counter!(METRIC_RESP_COMMANDS, "command" => command, "result" => result)
            .increment(1);
        metrics::histogram!(METRIC_RESP_SECONDS, "command" => command)
            .record(start.elapsed().as_secs_f64());
        (reply, after)
    }

    async fn dispatch(&mut self, shared: &Shared, name: &str, args: &[Bytes]) -> (Reply, After) {
        let open = matches!(name, "AUTH" | "HELLO" | "QUIT" | "RESET");
        if !self.authenticated && !open {
            return (
                Reply::Error("NOAUTH Authentication required.".into()),
                After::Continue,
            );
        }
        if self.multi.is_some()
            && !matches!(
                name,
                "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT" | "RESET"
            )
        {
            return (self.queue(shared, name, args), After::Continue);
        }
        let reply = match name {
            "QUIT" => return (Reply::Ok, After::Close),
            "RESET" => {
                self.resp3 = false;
                self.name = None;
                self.multi = None;
                self.watches.clear();
                self.authenticated = shared.options.password.is_none();
                Reply::Simple("RESET".into())
            }
            "PING" => match args {
                [] => Reply::Simple("PONG".into()),
                [m] => Reply::Bulk(m.to_vec()),
                _ => arity(name),
            },
            "ECHO" => match args {
                [m] => Reply::Bulk(m.to_vec()),
                _ => arity(name),
            },
            "HELLO" => self.hello(shared, args),
            "AUTH" => match args {
                [password] => self.auth(shared, b"default", password),
                [user, password] => self.auth(shared, user, password),
                _ => arity(name),
            },
            "SELECT" => match args {
                [db] if db.as_ref() == b"0" => Reply::Ok,
                [_] => Reply::err("DB index is out of range (steadfast has database 0 only)"),
                _ => arity(name),
            },
            "CLIENT" => self.client(args),
            "INFO" => Reply::Bulk(info::info(shared, self.resp3).into_bytes()),
            "COMMAND" => info::command(args),
            "MULTI" => match self.multi {
                Some(_) => Reply::err("MULTI calls can not be nested"),
                None => {
                    self.multi = Some((Vec::new(), false));
                    Reply::Ok
                }
            },
            "DISCARD" => match self.multi.take() {
                Some(_) => {
                    self.watches.clear();
                    Reply::Ok
                }
                None => Reply::err("DISCARD without MULTI"),
            },
            "EXEC" => self.exec(shared).await,
            "WATCH" => self.watch(shared, args).await,
            "UNWATCH" => {
                self.watches.clear();
                Reply::Ok
            }
            "SCAN" => scan(shared, args).await,
            "KEYS" => match args {
                [pattern] => match shared.executor.all_keys(Some(pattern)).await {
                    Ok(keys) => Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
                    Err(e) => e,
                },
                _ => arity(name),
            },
            "DBSIZE" => match shared.executor.all_keys(None).await {
                Ok(keys) => Reply::Int(keys.len() as i64),
                Err(e) => e,
            },
            _ => match plan(name, args, shared.executor.groups()) {
                Some(Ok(Planned::Keys(p))) => shared.executor.run(&p).await,
                Some(Ok(Planned::CrossGroupRename {
                    from,
                    to,
                    only_if_absent,
                })) => {
                    shared
                        .executor
                        .rename_across(from, to, only_if_absent)
                        .await
                }
                Some(Err(e)) => e,
                None => unknown(name, args),
            },
        };
        (reply, After::Continue)
    }

    fn queue(&mut self, shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
        let Some((plans, failed)) = self.multi.as_mut() else {
            return Reply::err("not in MULTI");
        };
        let refused = |failed: &mut bool, reply: Reply| {
            *failed = true;
            reply
        };
        if plans.len() >= limits::REDIS_MULTI_COMMANDS_MAX {
            return refused(
                failed,
                Reply::err(format!(
                    "MULTI holds at most {} commands",
                    limits::REDIS_MULTI_COMMANDS_MAX
                )),
            );
        }
        match plan(name, args, shared.executor.groups()) {
            Some(Ok(Planned::Keys(p))) => {
                plans.push(p);
                Reply::Simple("QUEUED".into())
            }
            Some(Ok(Planned::CrossGroupRename { .. })) => {
                refused(failed, Reply::Error(CROSSSLOT.into()))
            }
            Some(Err(e)) => refused(failed, e),
            None if KEY_COMMANDS.contains(&name) || CONNECTION_COMMANDS.contains(&name) => refused(
                failed,
                Reply::err(format!("{name} inside MULTI is not supported by steadfast")),
            ),
            None => refused(failed, unknown(name, args)),
        }
    }

    async fn exec(&mut self, shared: &Shared) -> Reply {
        let Some((plans, failed)) = self.multi.take() else {
            return Reply::err("EXEC without MULTI");
        };
        let watches = std::mem::take(&mut self.watches);
        if failed {
            return Reply::Error(
                "EXECABORT Transaction discarded because of previous errors.".into(),
            );
        }
        shared.executor.exec(&plans, watches).await
    }

    async fn watch(&mut self, shared: &Shared, args: &[Bytes]) -> Reply {
        if self.multi.is_some() {
            return Reply::err("WATCH inside MULTI is not allowed");
        }
        if args.is_empty() {
            return arity("WATCH");
        }
        if self.watches.len() + args.len() > limits::REDIS_WATCHED_KEYS_MAX {
            return Reply::err(format!(
                "a connection may watch at most {} keys",
                limits::REDIS_WATCHED_KEYS_MAX
            ));
        }
        for key in args {
            if key.len() > limits::REDIS_KEY_BYTES_MAX {
                return Reply::err("key too long");
            }
            let id = key_id(key, shared.executor.groups());
            match shared.executor.version(id).await {
                Ok(version) => self.watches.push((id, version)),
                Err(e) => return e,
            }
        }
        Reply::Ok
    }

    fn auth(&mut self, shared: &Shared, user: &[u8], password: &[u8]) -> Reply {
        let Some(expected) = &shared.options.password else {
            return Reply::err(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        };
        // Compare digests, so the time taken says nothing about the password's bytes.
        let hash = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
        let same = hash(expected.as_bytes()).as_ref() == hash(password).as_ref();
        if user == b"default" && same {
            self.authenticated = true;
            Reply::Ok
        } else {
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }

    fn hello(&mut self, shared: &Shared, args: &[Bytes]) -> Reply {
        let mut resp3 = self.resp3;
        let mut rest = args;
        if let Some((version, tail)) = rest.split_first() {
            match version.as_ref() {
                b"2" => resp3 = false,
                b"3" => resp3 = true,
                _ => {
                    return Reply::Error("NOPROTO unsupported protocol version".into());
                }
            }
            rest = tail;
        }
        let mut name = None;
        while let Some((option, tail)) = rest.split_first() {
            match (upper(option).as_str(), tail) {
                ("AUTH", [user, password, more @ ..]) => {
                    if let Reply::Error(e) = self.auth(shared, user, password) {
                        return Reply::Error(e);
                    }
                    rest = more;
                }
                ("SETNAME", [n, more @ ..]) => {
                    name = Some(n.clone());
                    rest = more;
                }
                _ => return Reply::err("syntax error in HELLO"),
            }
        }
        if !self.authenticated {
            return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
        }
        self.resp3 = resp3;
        if name.is_some() {
            self.name = name;
        }
        info::hello(self.id, resp3)
    }

    fn client(&mut self, args: &[Bytes]) -> Reply {
        let Some((sub, rest)) = args.split_first() else {
            return arity("CLIENT");
        };
        match (upper(sub).as_str(), rest) {
            ("SETNAME", [n]) => {
                if n.iter().any(|b| *b == b' ' || *b == b'\n') {
                    return Reply::err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!n.is_empty()).then(|| n.clone());
                Reply::Ok
            }
            ("GETNAME", []) => self
                .name
                .clone()
                .map_or(Reply::Nil, |n| Reply::Bulk(n.to_vec())),
            ("ID", []) => Reply::Int(self.id as i64),
            ("SETINFO", [_, _]) => Reply::Ok,
            (s, _) => Reply::err(format!(
                "unknown subcommand or wrong number of arguments for 'CLIENT|{s}' (steadfast \
                 supports SETNAME, GETNAME, ID, SETINFO)"
            )),
        }
    }
}

async fn scan(shared: &Shared, args: &[Bytes]) -> Reply {
    let Some((cursor, mut rest)) = args.split_first() else {
        return arity("SCAN");
    };
    let groups = shared.executor.groups();
    let Some(cursor) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .and_then(|c| Cursor::decode(c, groups))
    else {
        return Reply::err("invalid cursor");
    };
    let (mut pattern, mut count, mut kind) = (None, 10u32, None);
    while let [option, value, more @ ..] = rest {
        match upper(option).as_str() {
            "MATCH" => pattern = Some(value.as_ref()),
            "COUNT" => match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
            {
                Some(n) if n > 0 => count = n,
                _ => return Reply::err("value is not an integer or out of range"),
            },
            "TYPE" => {
                kind = match value.to_ascii_lowercase().as_slice() {
                    b"string" => Some(KeyType::String),
                    b"hash" => Some(KeyType::Hash),
                    b"set" => Some(KeyType::Set),
                    // No key of another type exists here: match nothing.
                    _ => return Reply::Array(vec![Reply::text("0"), Reply::Array(Vec::new())]),
                }
            }
            _ => return Reply::err("syntax error"),
        }
        rest = more;
    }
    if !rest.is_empty() {
        return Reply::err("syntax error");
    }
    match shared.executor.scan(cursor, count, pattern, kind).await {
        Ok((next, names)) => Reply::Array(vec![
            Reply::text(next.to_string()),
            Reply::Array(names.into_iter().map(Reply::Bulk).collect()),
        ]),
        Err(e) => e,
    }
}

fn arity(name: &str) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn unknown(name: &str, args: &[Bytes]) -> Reply {
    let shown: Vec<String> = args
        .iter()
        .take(3)
        .map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(64)])))
        .collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {} (not supported by steadfast; see \
         README \"Use it from any language\")",
        name.to_ascii_lowercase(),
        shown.join(" ")
    ))
}
