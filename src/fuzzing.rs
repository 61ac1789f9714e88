//! Fuzz-target bodies, shared by the libFuzzer targets in `fuzz/` and by the corpus replay test
//! (`tests/it/fuzz_corpus.rs`), so the decoding logic is written once.
//!
//! Every function takes arbitrary bytes and must never panic, loop or allocate without bound;
//! a panic here is a bug (either in the code under test or in an assertion of an invariant).
//! Not part of the public API.

#![doc(hidden)]
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::codec;
use crate::command::{Attributes, Command, Origin, Outcome, Request, Response};
use crate::config::NodeConfig;
use crate::id::{ClientId, SessionId};
use crate::limits;
use crate::raft::store::{decode_snapshot, SnapshotFile};
use crate::raft::typ::{Entry, LogId, Vote};
use crate::state::{Session, SessionState, StateImage};
use crate::wire::{self, Kind, RaftRequest, RequestBody, ResponseBody};

/// The size limit the log store uses for metadata records.
const META_RECORD_BYTES_MAX: usize = 4096;
/// Commands interpreted per input by [`command_apply`], to bound the time of one run.
const COMMANDS_MAX: usize = 512;
/// Session ids [`command_apply`] draws from (small, so commands collide).
const IDS: u8 = 4;

/// A client or peer frame (without the length prefix): header, then a request or response body.
/// A request body that decodes must encode and decode again to the same value.
pub fn wire_frame(data: &[u8]) {
    let header = wire::decode_header(data);
    let _ = wire::decode_body::<ResponseBody>(data);
    let Ok(body) = wire::decode_body::<RequestBody>(data) else {
        return;
    };
    let (kind, request_id, group) = match header {
        Ok(h) => (h.kind, h.request_id, h.group),
        Err(_) => (Kind::Request, 0, crate::id::GroupId(0)),
    };
    let frame = wire::encode(kind, request_id, group, &body);
    let again = wire::decode_header(&frame).expect("an encoded frame has a header");
    assert_eq!(
        (again.version, again.kind, again.request_id, again.group),
        (wire::PROTOCOL_VERSION, kind, request_id, group)
    );
    let back: RequestBody = wire::decode_body(&frame).expect("an encoded body decodes");
    assert_eq!(
        format!("{body:?}"),
        format!("{back:?}"),
        "request body round trip"
    );
}

/// Raft messages between nodes (postcard bytes of [`RaftRequest`]).
pub fn peer_message(data: &[u8]) {
    let Ok(message) = postcard::from_bytes::<RaftRequest>(data) else {
        return;
    };
    let bytes = postcard::to_allocvec(&message).expect("a decoded message encodes");
    let back: RaftRequest = postcard::from_bytes(&bytes).expect("an encoded message decodes");
    assert_eq!(
        format!("{message:?}"),
        format!("{back:?}"),
        "raft message round trip"
    );
}

/// Bytes as a sequence of commands applied to a [`SessionState`], checking its invariants after
/// every step; then the same bytes as a postcard [`Request`], applied if they decode.
pub fn command_apply(data: &[u8]) {
    let mut run = CommandRun::default();
    let mut input = Input(data);
    let mut steps = 0;
    while !input.is_empty() && steps < COMMANDS_MAX {
        steps += 1;
        let (index_gap, request) = run.next_request(&mut input);
        run.apply(index_gap, &request);
    }
    run.check_image();

    if let Ok(request) = postcard::from_bytes::<Request>(data) {
        run.apply(0, &request);
        run.check_image();
        let mut fresh = CommandRun::default();
        fresh.apply(0, &request);
        fresh.check_image();
    }
}

/// Snapshot files and the other checked records the log store reads from disk.
///
/// Each input is tried as a whole record and, so that the fuzzer gets past the checksum, as a
/// record body wrapped in a valid header. A snapshot that decodes must re-encode to itself and
/// be usable as a state machine (reads, then the housekeeping command a leader would send).
pub fn snapshot_decode(data: &[u8]) {
    let wrapped = wrap_record(data);
    for bytes in [data, &wrapped[..]] {
        let decoded = decode_snapshot(bytes);
        // A restart streams the file: it must accept exactly what decoding the bytes accepts
        // (a streamed parse may see trailing bytes as damage only through the checksum, which
        // both check), and yield the same snapshot.
        let streamed = codec::decode_from::<SnapshotFile>(
            bytes,
            bytes.len() as u64,
            limits::SNAPSHOT_BYTES_MAX,
        );
        assert_eq!(
            decoded.is_ok(),
            streamed.is_ok(),
            "streamed and in-memory decoding agree"
        );
        if let (Ok(file), Ok(again)) = (decoded, streamed) {
            assert_eq!(file, again, "streamed decoding yields the same snapshot");
            use_snapshot(file);
        }
        round_trip_record::<LogId>(bytes, META_RECORD_BYTES_MAX);
        round_trip_record::<Option<LogId>>(bytes, META_RECORD_BYTES_MAX);
        round_trip_record::<Vote>(bytes, META_RECORD_BYTES_MAX);
        round_trip_record::<Entry>(bytes, limits::FRAME_BYTES_MAX);
        round_trip_record::<Request>(bytes, limits::FRAME_BYTES_MAX);
        let _ = codec::decode::<StateImage>(bytes, limits::SNAPSHOT_BYTES_MAX);
    }
    backup_file(data);
}

/// A backup file: one that decodes must encode and decode again to the same backup.
fn backup_file(data: &[u8]) {
    let Ok(backup) = crate::backup::decode(data) else {
        return;
    };
    let records: Vec<Vec<u8>> = backup.groups.iter().map(codec::encode).collect();
    let again = crate::backup::decode(&crate::backup::encode(&backup.header, &records))
        .expect("a re-encoded backup decodes");
    assert_eq!(again, backup, "backup round trip");
}

/// A node's TOML configuration; a valid one must survive serialization and give a placement
/// for every group.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = NodeConfig::from_toml(text) else {
        return;
    };
    let peers = config.addresses();
    for g in 0..config.groups.min(64) {
        let replicas = config.placement(crate::id::GroupId(g));
        assert!(!replicas.is_empty() && replicas.len() <= config.replicas as usize);
        assert!(replicas.iter().all(|r| peers.contains_key(r)));
        let distinct: BTreeSet<_> = replicas.iter().collect();
        assert_eq!(distinct.len(), replicas.len(), "replicas are distinct");
    }
    if let Ok(text) = toml::to_string(&config) {
        let back = NodeConfig::from_toml(&text).expect("a serialized valid config parses");
        assert_eq!(back, config, "config round trip");
    }
}

/// The axum layer's cookie parsing: whatever the `Cookie` header holds, it finds at most one
/// session id, and only one that prints back to a 32-hex value present in the header.
#[cfg(feature = "axum")]
fn cookie_header(data: &[u8]) {
    use axum::http::{header, HeaderMap, HeaderValue};
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, value);
    if let Some(id) = crate::adapters::axum_layer::cookie_session_id(&headers, "sid") {
        let text = String::from_utf8_lossy(data).to_ascii_lowercase();
        assert!(
            text.contains(&id.to_string()),
            "a parsed id comes from the header"
        );
    }
}

#[cfg(not(feature = "axum"))]
fn cookie_header(_: &[u8]) {}

/// The textual session id (cookies, CLI arguments), and the cookie header it arrives in.
pub fn session_id_parse(data: &[u8]) {
    cookie_header(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = SessionId::from_str(text) else {
        return;
    };
    let printed = id.to_string();
    assert_eq!(
        printed,
        text.to_ascii_lowercase(),
        "ids print as lowercase hex"
    );
    assert_eq!(
        SessionId::from_str(&printed),
        Ok(id),
        "session id round trip"
    );
}

/// Prefixes `body` with a valid record header (format byte and CRC-32).
fn wrap_record(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(codec::RECORD_FORMAT);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn round_trip_record<T>(bytes: &[u8], limit: usize)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Ok(value) = codec::decode::<T>(bytes, limit) {
        let again = codec::encode(&value);
        let back: T = codec::decode(&again, usize::MAX).expect("an encoded record decodes");
        assert_eq!(
            format!("{value:?}"),
            format!("{back:?}"),
            "record round trip"
        );
    }
}

fn use_snapshot(file: SnapshotFile) {
    let again = codec::encode(&file);
    assert_eq!(
        decode_snapshot(&again).as_ref(),
        Ok(&file),
        "snapshot round trip"
    );
    let next_index = file
        .meta
        .last_log_id
        .map_or(1, |l| l.index.saturating_add(1));
    let ids: Vec<SessionId> = file.state.sessions.iter().map(|(id, _)| *id).collect();
    let Ok(mut state) = SessionState::from_image(file.state) else {
        return;
    };
    for id in &ids {
        if let Some(view) = state.get(id) {
            assert!(view.expires_at_ms > view.server_time_ms, "expired read");
        }
    }
    let clock = state.clock_ms();
    let purge = Request {
        now_ms: clock.saturating_add(1),
        origin: None,
        command: Command::Expire,
    };
    state.apply(next_index, &purge);
    for id in &ids {
        if let Some(view) = state.get(id) {
            assert!(view.expires_at_ms > view.server_time_ms, "expired read");
        }
    }
}

/// Reads the fuzzer's bytes; past the end every byte is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

/// A state machine under test plus what the fuzz target remembers to check it.
#[derive(Default)]
struct CommandRun {
    state: SessionState,
    index: u64,
    /// The stamp of the next request; only moves forward (stale stamps are drawn below it).
    now_ms: u64,
    /// Versions seen in results, for compare-and-set guards that sometimes match.
    versions: Vec<u64>,
    /// Requests that carried an origin, for retries.
    sent: Vec<Request>,
    /// The response recorded for each origin and the replicated time it was recorded at.
    answered: BTreeMap<Origin, Response>,
}

impl CommandRun {
    /// Interprets the next few bytes as a request; also returns how many log indexes to skip
    /// (blank and membership entries).
    fn next_request(&mut self, input: &mut Input<'_>) -> (u64, Request) {
        let op = input.byte();
        let kind = op % 8;
        let time_mode = (op >> 3) & 3;
        let with_origin = (op >> 5) & 1 == 1;
        let index_gap = u64::from(op >> 6);
        let id = SessionId::from_bytes([input.byte() % IDS; 16]);

        let stamp = match time_mode {
            0 => self.now_ms,
            1 => self.now_ms + u64::from(input.byte()),
            // Minutes: crosses idle timeouts, dedup retention and (in ~24 steps) tombstones.
            2 => self.now_ms + u64::from(input.byte()) * 60_000,
            // A stale leader's stamp: must not move the replicated clock back.
            _ => self.now_ms.saturating_sub(u64::from(input.byte())),
        };
        self.now_ms = self.now_ms.max(stamp);

        if kind == 7 && !self.sent.is_empty() {
            let previous = &self.sent[usize::from(input.byte()) % self.sent.len()];
            return (
                index_gap,
                Request {
                    now_ms: stamp,
                    ..previous.clone()
                },
            );
        }
        let origin = with_origin.then(|| {
            let b = input.byte();
            Origin {
                client: ClientId(u64::from(b & 1)),
                seq: u64::from(b >> 1),
            }
        });
        let command = match kind {
            0 => Command::Create {
                id,
                attributes: attributes(input),
                idle_timeout_ms: u64::from(input.byte()) * 10,
                lifetime_ms: match input.byte() {
                    0 => None,
                    b => Some(u64::from(b) * 10),
                },
                principal: None,
                limits: Default::default(),
            },
            1 | 2 => {
                let set = attributes(input);
                let mask = input.byte();
                let remove = (0..4)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| format!("k{i}"))
                    .collect();
                let idle_timeout_ms = match input.byte() {
                    0 => None,
                    b => Some(u64::from(b - 1) * 10),
                };
                let expected_version = (kind == 2).then(|| self.version_guess(input));
                Command::Update {
                    id,
                    set,
                    remove,
                    expected_version,
                    idle_timeout_ms,
                }
            }
            3 => Command::Touch { id },
            4 | 5 => Command::Delete {
                id,
                expected_version: (kind == 5).then(|| self.version_guess(input)),
            },
            _ => Command::Expire,
        };
        let request = Request {
            now_ms: stamp,
            origin,
            command,
        };
        if origin.is_some() {
            self.sent.push(request.clone());
        }
        (index_gap, request)
    }

    fn version_guess(&self, input: &mut Input<'_>) -> u64 {
        let b = input.byte();
        if b < 0xf0 && !self.versions.is_empty() {
            self.versions[usize::from(b) % self.versions.len()]
        } else {
            u64::from(b & 0x0f)
        }
    }

    fn apply(&mut self, index_gap: u64, request: &Request) {
        self.index = self.index.saturating_add(1 + index_gap);
        let index = self.index;
        let clock_before = self.state.clock_ms();
        let response = self.state.apply(index, request);
        let clock = self.state.clock_ms();
        assert_eq!(clock, clock_before.max(request.now_ms), "replicated clock");
        assert!(response.server_time_ms <= clock);
        match response.outcome {
            Outcome::Ok { version } => {
                assert!(version <= index, "version {version} after index {index}");
                self.versions.push(version);
            }
            Outcome::Conflict { current_version } => {
                assert!(current_version <= index);
                self.versions.push(current_version);
            }
            _ => {}
        }
        if let Some(origin) = request.origin {
            match self.answered.get(&origin) {
                // The state machine keeps a result while `remembered_at + retention > clock`,
                // and the clock only moves forward.
                Some(first)
                    if first
                        .server_time_ms
                        .saturating_add(limits::DEDUP_RETENTION_MS)
                        > clock =>
                {
                    assert_eq!(&response, first, "a retry gets the first result");
                }
                _ => {
                    self.answered.insert(origin, response.clone());
                }
            }
        }
        self.check_reads();
    }

    fn check_reads(&self) {
        for n in 0..IDS {
            let id = SessionId::from_bytes([n; 16]);
            if let Some(view) = self.state.get(&id) {
                assert!(
                    view.expires_at_ms > view.server_time_ms,
                    "expired session returned: {view:?}"
                );
                assert_eq!(view.server_time_ms, self.state.clock_ms());
                assert!(view.version <= self.index, "version from the future");
                assert!(view.accessed_ms <= view.server_time_ms);
                assert!(Session::encoded_bytes(&view.attributes) <= limits::SESSION_BYTES_MAX);
                assert!(view.attributes.len() <= limits::ATTRIBUTES_MAX);
            }
        }
    }

    fn check_image(&self) {
        let image = self.state.to_image();
        let tombstoned: BTreeSet<_> = image.tombstones.iter().map(|(id, _)| *id).collect();
        for (id, session) in &image.sessions {
            assert!(
                session.version <= self.index,
                "live session version {} > last index {}",
                session.version,
                self.index
            );
            assert!(!tombstoned.contains(id), "a live session is tombstoned");
        }
        let back = SessionState::from_image(image).expect("to_image always yields a valid image");
        assert!(back == self.state, "from_image(to_image(s)) == s");
        assert_eq!(back.digest(), self.state.digest());
    }
}

/// A few attributes from a small name space; sizes cluster near the session limit sometimes.
fn attributes(input: &mut Input<'_>) -> Attributes {
    let count = input.byte();
    if count == 0xff {
        // One more than the attribute limit.
        return (0..=limits::ATTRIBUTES_MAX)
            .map(|i| (format!("a{i}"), Vec::new()))
            .collect();
    }
    let mut out = Attributes::new();
    for _ in 0..count % 4 {
        let k = input.byte();
        let name = if k >= 0xfc {
            "n".repeat(limits::ATTRIBUTE_NAME_BYTES_MAX + 1)
        } else {
            format!("k{}", k % 4)
        };
        let v = input.byte();
        let len = if v < 0xf0 {
            usize::from(v)
        } else {
            // Around the limit: a single attribute of exactly the limit is v == 0xf8.
            (limits::SESSION_BYTES_MAX - limits::ATTRIBUTE_OVERHEAD_BYTES - 2 + usize::from(v))
                .saturating_sub(0xf8)
        };
        out.insert(name, vec![v; len]);
    }
    out
}

/// Bytes from a Redis client: decoded as pipelined RESP requests (fed in pieces whose size the
/// first byte picks, so partial reads are exercised), each planned as a command and, if it is a
/// key command, applied to a state machine as one `Command::Redis` batch; every reply is
/// encoded as RESP2 and RESP3. `(P)(UN)SUBSCRIBE` change one connection's subscriptions and
/// `CONFIG` is answered; every deletion or expiry the batches make is matched against the
/// subscriptions as a keyspace notification and its messages encoded. Checks: decoding a whole
/// buffer and the same bytes piecewise gives the same requests (until the first error), no
/// request exceeds the argument limit, subscriptions stay within their limit, and the state
/// survives `from_image(to_image(s))` with an equal digest.
pub fn resp_request(data: &[u8]) {
    use crate::command::redis::{RedisBatch, Reply};
    use crate::resp::codec::{encode, RequestDecoder};
    use crate::resp::plan::{plan, Planned};
    use crate::resp::pubsub::{Kind, Notification, Subscriptions};
    use tokio_util::codec::Decoder;

    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let decode_all = |pieces: usize| {
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        for chunk in input.chunks(pieces.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                match RequestDecoder.decode(&mut buf) {
                    Ok(Some(args)) => out.push(args),
                    Ok(None) => break,
                    Err(_) => return out,
                }
            }
        }
        out
    };
    let whole = decode_all(input.len());
    let piecewise = decode_all(usize::from(step));
    assert_eq!(
        whole, piecewise,
        "decoding does not depend on how bytes arrive"
    );
    let mut state = SessionState::default();
    let mut out = bytes::BytesMut::new();
    let mut subs = Subscriptions::default();
    let mut frames = Vec::new();
    for (i, args) in whole.iter().take(COMMANDS_MAX).enumerate() {
        assert!(args.len() <= limits::RESP_ARGS_MAX);
        let Some((name, rest)) = args.split_first() else {
            continue;
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let reply = match plan(&name, rest, 4) {
            Some(Ok(Planned::Keys(p))) => {
                let request = Request {
                    now_ms: 1_000 * i as u64,
                    origin: None,
                    command: Command::Redis(RedisBatch {
                        watches: Vec::new(),
                        ops: p.ops,
                        delete_grace_ms: u64::from(step) * 10,
                    }),
                };
                let reply = match state.apply(i as u64 + 1, &request).outcome {
                    Outcome::Redis(Some(replies)) => Reply::Array(replies),
                    other => panic!("a batch without watches always runs: {other:?}"),
                };
                let events = state
                    .events_from(i as u64 + 1, usize::MAX)
                    .unwrap_or_default();
                for n in events.iter().filter_map(|e| Notification::of(&e.kind)) {
                    subs.messages(&n, &mut frames);
                }
                reply
            }
            Some(Ok(Planned::CrossGroupRename { .. })) => Reply::Ok,
            Some(Err(e)) => e,
            None => {
                let answers = match name.as_str() {
                    "SUBSCRIBE" => subs
                        .subscribe(Kind::Channel, rest)
                        .unwrap_or_else(|e| vec![e]),
                    "PSUBSCRIBE" => subs
                        .subscribe(Kind::Pattern, rest)
                        .unwrap_or_else(|e| vec![e]),
                    "UNSUBSCRIBE" => subs.unsubscribe(Kind::Channel, rest),
                    "PUNSUBSCRIBE" => subs.unsubscribe(Kind::Pattern, rest),
                    "CONFIG" => vec![crate::resp::info::config(rest)],
                    _ => Vec::new(),
                };
                frames.extend(answers);
                Reply::Nil
            }
        };
        assert!(subs.count() <= limits::RESP_SUBSCRIPTIONS_MAX);
        frames.push(reply);
        for f in frames.drain(..) {
            encode(&f, false, &mut out);
            encode(&f, true, &mut out);
        }
        out.clear();
    }
    let back = SessionState::from_image(state.to_image()).expect("own image is valid");
    assert_eq!(back.digest(), state.digest(), "image round trip");
}
