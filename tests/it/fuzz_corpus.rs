//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through `steadfast::fuzzing`, so every
//! seed and every past crash stays fixed without a fuzzer installed.
//!
//! The seeds are generated from real values by the ignored test `write_fuzz_seeds`:
//! `cargo test --test it fuzz_corpus::write_fuzz_seeds -- --ignored`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, StoredMembership};
use steadfast::codec;
use steadfast::command::{Attributes, Command, Origin, Outcome, Request, Response};
use steadfast::fuzzing;
use steadfast::id::{ClientId, GroupId, SessionId};
use steadfast::identity::ClusterId;
use steadfast::raft::store::SnapshotFile;
use steadfast::raft::typ::{Entry, LogId, SnapshotMeta, Vote};
use steadfast::state::SessionState;
use steadfast::wire::{
    self, ClientRequest, Kind, RaftRequest, ReadReply, RequestBody, ResponseBody, WireError,
};

type Target = fn(&[u8]);

/// Every fuzz target, by the name of its directory under `fuzz/corpus/` and its binary.
const TARGETS: [(&str, Target); 7] = [
    ("wire_frame", fuzzing::wire_frame),
    ("peer_message", fuzzing::peer_message),
    ("command_apply", fuzzing::command_apply),
    ("snapshot_decode", fuzzing::snapshot_decode),
    ("config_parse", fuzzing::config_parse),
    ("session_id_parse", fuzzing::session_id_parse),
    ("resp_request", fuzzing::resp_request),
];

/// Longest a single input may run (libFuzzer runs with `-timeout=10`).
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    out.sort();
    out
}

/// Runs one input on its own thread: a panic is reported with its message, a hang as a timeout.
fn run_input(target: Target, path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| target(&data));
        let _ = tx.send(outcome.map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into())
        }));
    });
    match rx.recv_timeout(INPUT_TIMEOUT) {
        Ok(result) => result.map_err(|m| format!("panicked: {m}")),
        Err(_) => Err(format!("still running after {INPUT_TIMEOUT:?}")),
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let root = corpus_dir();
    let known: BTreeSet<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for dir in sorted_entries(&root) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            known.contains(name),
            "{} has no fuzz target in steadfast::fuzzing",
            dir.display()
        );
    }
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let files = sorted_entries(&dir);
        assert!(!files.is_empty(), "{} has no seeds", dir.display());
        for file in files {
            replayed += 1;
            if let Err(e) = run_input(target, &file) {
                let hex: String = std::fs::read(&file)
                    .unwrap_or_default()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                failures.push(format!("{}: {e}\n  input: {hex}", file.display()));
            }
        }
    }
    eprintln!("fuzz_corpus: replayed {replayed} inputs");
    assert!(
        failures.is_empty(),
        "{} corpus inputs fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Seed generation.

fn id(n: u8) -> SessionId {
    SessionId::from_bytes([n; 16])
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|n| (n, BasicNode::new(format!("127.0.0.1:700{n}"))))
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn attrs(pairs: &[(&str, &[u8])]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn requests() -> Vec<Request> {
    let origin = |seq| {
        Some(Origin {
            client: ClientId(7),
            seq,
        })
    };
    vec![
        Request {
            now_ms: 1_000,
            origin: origin(1),
            command: Command::Create {
                id: id(1),
                attributes: attrs(&[("user", b"ann"), ("cart", b"")]),
                idle_timeout_ms: 60_000,
                lifetime_ms: Some(3_600_000),
                principal: None,
                limits: Default::default(),
            },
        },
        Request {
            now_ms: 1_010,
            origin: origin(2),
            command: Command::Update {
                id: id(1),
                set: attrs(&[("cart", b"apple")]),
                remove: BTreeSet::from(["user".to_string()]),
                expected_version: Some(1),
                idle_timeout_ms: Some(30_000),
            },
        },
        Request {
            now_ms: 1_020,
            origin: origin(3),
            command: Command::Touch { id: id(1) },
        },
        Request {
            now_ms: 1_030,
            origin: origin(4),
            command: Command::Create {
                id: id(2),
                attributes: attrs(&[("x", b"1")]),
                idle_timeout_ms: 10,
                lifetime_ms: None,
                principal: None,
                limits: Default::default(),
            },
        },
        Request {
            now_ms: 1_040,
            origin: origin(5),
            command: Command::Delete {
                id: id(2),
                expected_version: None,
            },
        },
        Request {
            now_ms: 2_000,
            origin: None,
            command: Command::Expire,
        },
    ]
}

fn snapshot() -> SnapshotFile {
    let mut state = SessionState::default();
    for (i, r) in requests().iter().enumerate() {
        state.apply(i as u64 + 2, r);
    }
    SnapshotFile {
        meta: SnapshotMeta {
            last_log_id: Some(log_id(1, 7)),
            last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
            snapshot_id: "1-7-1".into(),
        },
        state: state.to_image(),
    }
}

fn entries() -> Vec<Entry> {
    let mut out = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Blank,
        },
    ];
    for (i, r) in requests().into_iter().enumerate().take(2) {
        out.push(Entry {
            log_id: log_id(1, i as u64 + 3),
            payload: EntryPayload::Normal(steadfast::command::Batch::one(r)),
        });
    }
    out
}

fn raft_requests() -> Vec<(&'static str, RaftRequest)> {
    let vote = Vote::new_committed(1, 1);
    vec![
        (
            "vote",
            RaftRequest::Vote(VoteRequest::new(Vote::new(2, 3), Some(log_id(1, 4)))),
        ),
        (
            "heartbeat",
            RaftRequest::Append(AppendEntriesRequest {
                vote,
                prev_log_id: Some(log_id(1, 4)),
                entries: vec![],
                leader_commit: Some(log_id(1, 4)),
            }),
        ),
        (
            "append",
            RaftRequest::Append(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: entries(),
                leader_commit: None,
            }),
        ),
        (
            "snapshot-chunk",
            RaftRequest::InstallSnapshot(InstallSnapshotRequest {
                vote,
                meta: snapshot().meta,
                offset: 0,
                data: codec::encode(&snapshot())[..48].to_vec(),
                done: false,
            }),
        ),
    ]
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let req = |body: RequestBody| wire::encode(Kind::Request, 9, GroupId(3), &body).to_vec();
    let resp = |body: ResponseBody| wire::encode(Kind::Response, 9, GroupId(3), &body).to_vec();
    let mut out = vec![
        (
            "read",
            req(RequestBody::Client(ClientRequest::Read { id: id(1) })),
        ),
        ("status", req(RequestBody::Client(ClientRequest::Status))),
        (
            "topology",
            req(RequestBody::Client(ClientRequest::Topology)),
        ),
        (
            "written",
            resp(ResponseBody::Written(Response {
                server_time_ms: 1_000,
                outcome: Outcome::Conflict { current_version: 4 },
            })),
        ),
        (
            "read-reply",
            resp(ResponseBody::Read(ReadReply {
                session: None,
                server_time_ms: 5,
                read_index: 6,
            })),
        ),
        (
            "not-leader",
            resp(ResponseBody::Error(WireError::NotLeader {
                leader: Some((2, "127.0.0.1:7002".into())),
            })),
        ),
        (
            "hello",
            req(RequestBody::Hello(wire::Hello {
                cluster_id: Some(ClusterId::new("c-0123456789abcdef").expect("valid")),
                node: Some(2),
            })),
        ),
        (
            "welcome",
            resp(ResponseBody::Welcome {
                cluster_id: ClusterId::new("shop-prod").expect("valid"),
                node: 1,
            }),
        ),
        (
            "wrong-cluster",
            resp(ResponseBody::Error(WireError::WrongCluster {
                ours: "a".into(),
                theirs: "b".into(),
            })),
        ),
    ];
    for (r, name) in requests().into_iter().take(2).zip(["create", "update"]) {
        let body = RequestBody::Client(ClientRequest::Write {
            origin: r.origin.expect("client write"),
            command: r.command,
            namespace: String::new(),
        });
        out.push((name, req(body)));
    }
    for (name, r) in raft_requests().into_iter().take(3) {
        out.push((name, req(RequestBody::Raft(r))));
    }
    out
}

/// Inputs for `fuzzing::command_apply`, in its byte interpretation (see `CommandRun`).
fn command_programs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "create-update-touch",
            vec![
                0x00, 1, 2, 0, 5, 1, 3, 100, 0, // create id 1: k0=5B, k1=3B, idle 1 s
                0x29, 1, 10, 2, 1, 2, 7, 1, 0, // update +10 ms, origin, set k2, remove k0
                0x03, 1, // touch
                0x0a, 1, 20, 1, 0, 0, 0, 0, 0, // update-cas with a seen version
                0x1f, 1, 3, 0, // retry of the update, stale stamp
            ],
        ),
        (
            "expire-and-delete-wins",
            vec![
                0x00, 2, 0, 10, 5, // create id 2, idle 100 ms, lifetime 50 ms
                0x16, 0, 1, // expire after a minute
                0x00, 2, 0, 10, 0, // create again: refused (tombstone)
                0x25, 2, 4, 0, // delete-cas with origin
                0x16, 0, 255, // a long jump
            ],
        ),
        (
            "oversized",
            vec![
                0x00, 3, 1, 0, 0xf8, 10, 0, // create with a value at the limit
                0x01, 3, 1, 1, 0xf9, 0, 0, // update over it
                0x00, 0, 0xff, 10, 0, // too many attributes
            ],
        ),
        (
            "postcard-request",
            postcard::to_allocvec(&requests()[1]).expect("encode"),
        ),
    ]
}

const CONFIG_FULL: &str = r#"id = 2
listen = "127.0.0.1:7002"
data_dir = "/var/lib/steadfast"
peers = [
  { id = 1, addr = "10.0.0.1:7001" },
  { id = 2, addr = "10.0.0.2:7002" },
  { id = 3, addr = "10.0.0.3:7003" },
]
groups = 16
replicas = 3

[raft]
heartbeat_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
snapshot_every_logs = 1000
logs_kept_after_snapshot = 100

[sessions]
idle_timeout_ms = 1800000
expire_tick_ms = 500

[tls]
cert = "/etc/steadfast/node.pem"
key = "/etc/steadfast/node-key.pem"
ca = "/etc/steadfast/ca.pem"
"#;

const CONFIG_SMALL: &str = r#"id = 1
listen = "127.0.0.1:7001"
data_dir = "d"
peers = [{ id = 1, addr = "a:1" }]
groups = 1
replicas = 1
"#;

/// The committed seed corpus is what the generator below produces, so a format change cannot
/// leave the fuzzers starting from stale seeds. After a deliberate format change, regenerate:
/// `STEADFAST_WRITE_FUZZ_SEEDS=1 cargo test --test it fuzz_seeds_are_current`.
#[test]
fn fuzz_seeds_are_current() {
    let root = corpus_dir();
    let regenerate = std::env::var_os("STEADFAST_WRITE_FUZZ_SEEDS").is_some();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        let path = dir.join(format!("seed-{name}"));
        if regenerate {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(&path, bytes).expect("write seed");
        } else {
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} is stale; regenerate with STEADFAST_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    };
    for (name, frame) in frames() {
        write("wire_frame", name, &frame);
    }
    for (name, r) in raft_requests() {
        write(
            "peer_message",
            name,
            &postcard::to_allocvec(&r).expect("encode"),
        );
    }
    for (name, program) in command_programs() {
        write("command_apply", name, &program);
    }
    let snap = snapshot();
    write("snapshot_decode", "snapshot", &codec::encode(&snap));
    write(
        "snapshot_decode",
        "snapshot-body",
        &postcard::to_allocvec(&snap).expect("encode"),
    );
    let header = steadfast::backup::BackupHeader {
        format: steadfast::backup::BACKUP_FORMAT,
        groups: 2,
        taken_at_ms: 1_700_000_000_000,
    };
    let records: Vec<Vec<u8>> = (0..2)
        .map(|g| {
            codec::encode(&steadfast::backup::GroupImage {
                group: steadfast::GroupId(g),
                index: 40 + u64::from(g),
                state: snap.state.clone(),
            })
        })
        .collect();
    write(
        "snapshot_decode",
        "backup",
        &steadfast::backup::encode(&header, &records),
    );
    write(
        "snapshot_decode",
        "vote",
        &codec::encode(&Vote::new_committed(3, 2)),
    );
    write(
        "snapshot_decode",
        "committed-body",
        &postcard::to_allocvec(&Some(log_id(2, 9))).expect("encode"),
    );
    for (i, e) in entries().iter().enumerate() {
        write("snapshot_decode", &format!("entry-{i}"), &codec::encode(e));
    }
    write(
        "snapshot_decode",
        "entry-body",
        &postcard::to_allocvec(&entries()[3]).expect("encode"),
    );
    write("config_parse", "full", CONFIG_FULL.as_bytes());
    write("config_parse", "small", CONFIG_SMALL.as_bytes());
    write(
        "config_parse",
        "invalid-timeouts",
        CONFIG_SMALL
            .replace("replicas = 1", "[raft]\nheartbeat_ms = 900")
            .as_bytes(),
    );
    write("session_id_parse", "lower", id(0xab).to_string().as_bytes());
    write(
        "session_id_parse",
        "upper",
        id(0x3c).to_string().to_uppercase().as_bytes(),
    );
    write("session_id_parse", "short", b"0123456789abcdef");
    write("session_id_parse", "non-hex", "zz".repeat(16).as_bytes());
    for (name, bytes) in resp_requests() {
        write("resp_request", name, &bytes);
    }
}

/// Seeds for `fuzzing::resp_request`: a piece-size byte, then pipelined requests.
fn resp_requests() -> Vec<(&'static str, Vec<u8>)> {
    let cmd = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    };
    let program = |piece: u8, cmds: &[&[&str]]| {
        let mut out = vec![piece];
        for c in cmds {
            out.extend(cmd(c));
        }
        out
    };
    vec![
        (
            "strings",
            program(
                3,
                &[
                    &["SET", "sess:1", "v", "EX", "60"],
                    &["GET", "sess:1"],
                    &["SET", "sess:1", "w", "NX", "GET"],
                    &["EXPIRE", "sess:1", "5"],
                    &["TTL", "sess:1"],
                    &["DEL", "sess:1", "sess:2"],
                    &["SET", "sess:1", "again"],
                    &["GETEX", "sess:1", "PX", "10"],
                ],
            ),
        ),
        (
            "hashes-sets",
            program(
                7,
                &[
                    &["HSET", "h", "a", "1", "b", "2"],
                    &["HINCRBY", "h", "a", "-5"],
                    &["HGETALL", "h"],
                    &["HDEL", "h", "a", "b"],
                    &["SADD", "s", "x", "y"],
                    &["SREM", "s", "x"],
                    &["RENAME", "{t}s", "{t}u"],
                    &["GET", "s"],
                ],
            ),
        ),
        ("inline", b"\x01PING\r\nSET k v\r\n\r\nGET k\n".to_vec()),
        ("nested", b"\x02*1\r\n*1\r\n$4\r\nPING\r\n".to_vec()),
    ]
}
