//! The replies of introspection commands clients send at connect time: `HELLO`, `INFO` and
//! `COMMAND` (enough for clients' ready checks and feature probes).

use bytes::Bytes;

use crate::command::redis::Reply;

use super::connection::CONNECTION_COMMANDS;
use super::plan::KEY_COMMANDS;
use super::Shared;

/// The Redis version steadfast reports: clients enable features by it (RESP3 and `GETEX`,
/// `GETDEL` need 6.2+).
pub const REDIS_VERSION: &str = "7.2.0";

/// `HELLO`'s answer.
pub fn hello(id: u64, resp3: bool) -> Reply {
    let pair = |k: &str, v: Reply| (Reply::text(k), v);
    Reply::Map(vec![
        pair("server", Reply::text("redis")),
        pair("version", Reply::text(REDIS_VERSION)),
        pair("proto", Reply::Int(if resp3 { 3 } else { 2 })),
        pair("id", Reply::Int(id as i64)),
        pair("mode", Reply::text("standalone")),
        pair("role", Reply::text("master")),
        pair("modules", Reply::Array(Vec::new())),
    ])
}

/// `INFO`'s text (every section at once).
pub fn info(shared: &Shared, resp3: bool) -> String {
    let lines = [
        "# Server".to_string(),
        format!("redis_version:{REDIS_VERSION}"),
        "redis_mode:standalone".into(),
        format!("steadfast_version:{}", env!("CARGO_PKG_VERSION")),
        format!("tcp_port:{}", shared.port),
        format!("resp:{}", if resp3 { 3 } else { 2 }),
        "# Clients".into(),
        format!("connected_clients:{}", shared.connections()),
        "# Persistence".into(),
        "loading:0".into(),
        "# Replication".into(),
        "role:master".into(),
        "connected_slaves:0".into(),
        "# Cluster".into(),
        "cluster_enabled:0".into(),
        format!("steadfast_groups:{}", shared.executor.groups()),
        "# Keyspace".into(),
    ];
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, `COMMAND INFO`.
pub fn command(args: &[Bytes]) -> Reply {
    let all = || KEY_COMMANDS.iter().chain(CONNECTION_COMMANDS);
    let entry = |name: &str| {
        Reply::Array(vec![
            Reply::text(name.to_ascii_lowercase()),
            Reply::Int(-1),
            Reply::Array(Vec::new()),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
        ])
    };
    match args.first().map(|a| a.to_ascii_uppercase()) {
        None => Reply::Array(all().map(|n| entry(n)).collect()),
        Some(sub) if sub == b"COUNT" => Reply::Int(all().count() as i64),
        Some(sub) if sub == b"DOCS" => Reply::Map(Vec::new()),
        Some(sub) if sub == b"INFO" => Reply::Array(
            args[1..]
                .iter()
                .map(|a| {
                    let name = String::from_utf8_lossy(a).to_ascii_uppercase();
                    if all().any(|c| *c == name) {
                        entry(&name)
                    } else {
                        Reply::Nil
                    }
                })
                .collect(),
        ),
        Some(_) => Reply::err("COMMAND supports COUNT, DOCS and INFO in steadfast"),
    }
}

/// The configuration parameters `CONFIG GET` reports: keyspace notifications as steadfast
/// publishes them (Spring Session reads this), and the persistence settings benchmark and
/// monitoring tools ask for (every write is durable on a majority; there are no RDB saves).
const CONFIG: &[(&str, &str)] = &[
    (
        "notify-keyspace-events",
        super::pubsub::NOTIFY_KEYSPACE_EVENTS,
    ),
    ("databases", "1"),
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("save", ""),
];

/// The flags `notify-keyspace-events` accepts (Redis's).
const NOTIFY_FLAGS: &[u8] = b"KEg$lshzxetmdnA";

/// `CONFIG GET pattern...`, `CONFIG SET notify-keyspace-events flags`, `CONFIG RESETSTAT`.
/// `SET` accepts any valid `notify-keyspace-events` flags (clients such as Spring Session send
/// them at start) and leaves what is in effect as it is: `del` and `expired` notifications
/// always reach subscribers, and cost nothing while nobody subscribes.
pub fn config(args: &[Bytes]) -> Reply {
    let Some((sub, rest)) = args.split_first() else {
        return Reply::err("wrong number of arguments for 'config' command");
    };
    match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"GET", patterns) if !patterns.is_empty() => Reply::Map(
            CONFIG
                .iter()
                .filter(|(name, _)| {
                    patterns.iter().any(|p| {
                        super::keyspace::glob_match(&p.to_ascii_lowercase(), name.as_bytes())
                    })
                })
                .map(|(name, value)| (Reply::text(*name), Reply::text(*value)))
                .collect(),
        ),
        (b"SET", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
            for pair in pairs.chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                if name != "notify-keyspace-events" {
                    return Reply::err(format!(
                        "Unknown option or number of arguments for CONFIG SET - '{name}' \
                         (steadfast accepts notify-keyspace-events only)"
                    ));
                }
                if !pair[1].iter().all(|f| NOTIFY_FLAGS.contains(f)) {
                    return Reply::err(
                        "CONFIG SET failed (possibly related to argument 'notify-keyspace-events') \
                         - Invalid event class character. Use 'Ag$lshzxeKEtmdn'.",
                    );
                }
            }
            Reply::Ok
        }
        (b"RESETSTAT", []) => Reply::Ok,
        _ => Reply::err(
            "unknown subcommand or wrong number of arguments for 'CONFIG' (steadfast supports \
             GET, SET notify-keyspace-events, RESETSTAT)",
        ),
    }
}
