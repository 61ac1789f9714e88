//! One RESP connection: reads pipelined requests, answers each in order, and keeps the
//! connection's state (protocol version, authentication, name, `MULTI` queue, `WATCH`ed keys).
//!
//! Requests are answered in arrival order; every reply of one read is written back in one
//! write. Pipelined key commands on distinct keys run concurrently (they commute; see the
//! private `pipeline` module); anything else waits for what came before it. Malformed input
//! gets one `-ERR Protocol error` line and the connection is closed (other connections are
//! untouched). A subscribed connection also receives keyspace notifications between replies
//! (push frames in RESP3; in RESP2 it may then only (un)subscribe, `PING`, `QUIT` or `RESET`,
//! as in Redis).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::command::redis::{KeyType, Reply};
use crate::id::SessionId;
use crate::limits;
use crate::transport::BoxStream;

use super::codec::encode;
use super::exec::CROSSSLOT;
use super::keyspace::{key_id, Cursor};
use super::plan::{plan, Plan, Planned, KEY_COMMANDS};
use super::pubsub::{Kind, Notification, Subscriptions};
use super::{info, Shared};

mod pipeline;

/// RESP commands served, by `command` and `result` (`ok` or `error`).
pub const METRIC_RESP_COMMANDS: &str = "steadfast_resp_commands_total";
/// Time to answer a RESP command, by `command`.
pub const METRIC_RESP_SECONDS: &str = "steadfast_resp_command_duration_seconds";

/// Notifications taken from the hub at once before they are written.
const NOTIFICATIONS_PER_WRITE: usize = 256;

/// Connection commands (beside [`KEY_COMMANDS`]), for `COMMAND` and metric labels.
pub const CONNECTION_COMMANDS: &[&str] = &[
    "PING",
    "ECHO",
    "HELLO",
    "AUTH",
    "SELECT",
    "CLIENT",
    "INFO",
    "COMMAND",
    "QUIT",
    "RESET",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SCAN",
    "KEYS",
    "DBSIZE",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "CONFIG",
];

/// What a subscribed RESP2 connection may still send.
const SUBSCRIBED_COMMANDS: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "PING",
    "QUIT",
    "RESET",
];

struct Conn {
    id: u64,
    resp3: bool,
    authenticated: bool,
    name: Option<Bytes>,
    /// Queued plans of an open `MULTI`, and whether queueing one failed (EXEC then aborts).
    multi: Option<(Vec<Plan>, bool)>,
    watches: Vec<(SessionId, Option<u64>)>,
    /// Channels and patterns subscribed to.
    subs: Subscriptions,
    /// Keyspace notifications, while anything is subscribed.
    feed: Option<broadcast::Receiver<Arc<Notification>>>,
    /// Frames a command answers after its first (one per channel of `SUBSCRIBE a b`).
    extra: Vec<Reply>,
}

/// What to do after a reply.
enum After {
    Continue,
    Close,
}

/// What woke a waiting connection.
enum Wake {
    Read(std::io::Result<usize>),
    Notified(Result<Vec<Reply>, Reply>),
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
        subs: Subscriptions::default(),
        feed: None,
        extra: Vec::new(),
    };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::new();
    loop {
        if conn
            .answer_buffered(&shared, &mut input, &mut output, &mut stream)
            .await
            .is_err()
        {
            return;
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        let wake = tokio::select! {
            read = stream.read_buf(&mut input) => Wake::Read(read),
            frames = conn.notifications() => Wake::Notified(frames),
        };
        match wake {
            Wake::Read(Ok(0) | Err(_)) => return,
            Wake::Read(Ok(_)) => {}
            Wake::Notified(Ok(frames)) => {
                for f in &frames {
                    encode(f, conn.resp3, &mut output);
                }
            }
            Wake::Notified(Err(e)) => {
                encode(&e, conn.resp3, &mut output);
                let _ = stream.write_all(&output).await;
                return;
            }
        }
    }
}

impl Conn {
    /// The next keyspace notifications' frames for this connection (pending forever while it
    /// is not subscribed); `Err` if it fell too far behind, and is to be closed.
    async fn notifications(&mut self) -> Result<Vec<Reply>, Reply> {
        let Some(feed) = self.feed.as_mut() else {
            return std::future::pending().await;
        };
        let behind = |n: u64| {
            Reply::err(format!(
                "steadfast: this subscriber fell {n} keyspace notifications behind; \
                 reconnect and subscribe again"
            ))
        };
        let mut frames = Vec::new();
        match feed.recv().await {
            Ok(n) => self.subs.messages(&n, &mut frames),
            Err(broadcast::error::RecvError::Lagged(n)) => return Err(behind(n)),
            Err(broadcast::error::RecvError::Closed) => {
                self.feed = None;
                return Ok(frames);
            }
        }
        for _ in 1..NOTIFICATIONS_PER_WRITE {
            match feed.try_recv() {
                Ok(n) => self.subs.messages(&n, &mut frames),
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Err(behind(n)),
                Err(_) => break,
            }
        }
        Ok(frames)
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
        record(label(&name), &reply, start.elapsed().as_secs_f64());
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
        if !self.resp3 && self.subs.count() > 0 && !SUBSCRIBED_COMMANDS.contains(&name) {
            let refusal = format!(
                "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
                 RESET are allowed in this context",
                name.to_ascii_lowercase()
            );
            return (Reply::err(refusal), After::Continue);
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
                self.subs = Subscriptions::default();
                self.feed = None;
                Reply::Simple("RESET".into())
            }
            "PING" => self.ping(args),
            "SUBSCRIBE" => self.subscribe(shared, Kind::Channel, args).await,
            "PSUBSCRIBE" => self.subscribe(shared, Kind::Pattern, args).await,
            "UNSUBSCRIBE" => self.unsubscribe(Kind::Channel, args),
            "PUNSUBSCRIBE" => self.unsubscribe(Kind::Pattern, args),
            "CONFIG" => info::config(args),
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

    /// `PING`; a subscribed RESP2 connection gets `["pong", message]`, as in Redis.
    fn ping(&self, args: &[Bytes]) -> Reply {
        let subscribed = !self.resp3 && self.subs.count() > 0;
        match (args, subscribed) {
            ([], false) => Reply::Simple("PONG".into()),
            ([m], false) => Reply::Bulk(m.to_vec()),
            ([], true) => Reply::Array(vec![Reply::text("pong"), Reply::text("")]),
            ([m], true) => Reply::Array(vec![Reply::text("pong"), Reply::Bulk(m.to_vec())]),
            _ => arity("PING"),
        }
    }

    /// `SUBSCRIBE`/`PSUBSCRIBE`: joins the node's keyspace notifications first, so that every
    /// deletion or expiry committed after the confirmation reaches this connection.
    async fn subscribe(&mut self, shared: &Shared, kind: Kind, args: &[Bytes]) -> Reply {
        if args.is_empty() {
            return arity(match kind {
                Kind::Channel => "SUBSCRIBE",
                Kind::Pattern => "PSUBSCRIBE",
            });
        }
        if self.feed.is_none() {
            match shared.hub.join().await {
                Ok(feed) => self.feed = Some(feed),
                Err(e) => return e,
            }
        }
        let frames = self.subs.subscribe(kind, args);
        if self.subs.count() == 0 {
            self.feed = None;
        }
        match frames {
            Ok(frames) => self.frames(frames),
            Err(e) => e,
        }
    }

    fn unsubscribe(&mut self, kind: Kind, args: &[Bytes]) -> Reply {
        let frames = self.subs.unsubscribe(kind, args);
        if self.subs.count() == 0 {
            self.feed = None;
        }
        self.frames(frames)
    }

    /// The first of several frames as the reply; the others follow it (`extra`).
    fn frames(&mut self, frames: Vec<Reply>) -> Reply {
        let mut frames = frames.into_iter();
        let first = frames.next().unwrap_or(Reply::Nil);
        self.extra.extend(frames);
        first
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

/// Counts one answered command (by outcome) and records how long it took.
fn record(command: &'static str, reply: &Reply, seconds: f64) {
    let result = if matches!(reply, Reply::Error(_)) {
        "error"
    } else {
        "ok"
    };
    metrics::counter!(METRIC_RESP_COMMANDS, "command" => command, "result" => result).increment(1);
    metrics::histogram!(METRIC_RESP_SECONDS, "command" => command).record(seconds);
}
