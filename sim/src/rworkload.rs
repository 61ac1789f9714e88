//! RESP-level scenarios: a client runs Redis commands through the RESP layer's own
//! [`Executor`] (the `plan` → `run` / `rename_across` dispatch a RESP connection does, minus
//! the wire codec), on fresh keys per scenario, and records them for [`crate::rkeys`]:
//! renames within and across groups (onto an existing key, onto a just-deleted one, of a missing
//! key), `SET` after `DEL` inside and past the namespace's `redis_delete_grace_ms`, and absolute
//! deadlines read over and over until past them.

use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use steadfast::command::redis::{read_map, ReadOp, Reply};
use steadfast::resp::exec::Executor;
use steadfast::resp::keyspace::key_id;
use steadfast::resp::plan::{plan, Planned};
use steadfast::Client;

use crate::faults::Corner;
use crate::harness::{now_ms, World};
use crate::rkeys::{RCmd, ROp, RResult, Slot};

/// One client's RESP side.
pub struct Resp<'a> {
    pub world: &'a World,
    pub client: Client,
    pub executor: Executor,
    pub groups: u32,
    pub grace_ms: u64,
    pub cross_pct: u32,
    pub me: u32,
}

/// Error texts of transport failures and timeouts (`steadfast::Error`'s retryable variants, as
/// the executor words them): the command may still apply.
const UNKNOWN_MARKS: [&str; 6] = [
    "timed out",
    "unavailable",
    "protocol error",
    "i/o:",
    "raft:",
    "unexpected",
];

/// What a reply means for the model.
pub fn classify(reply: &Reply) -> RResult {
    match reply {
        Reply::Ok => RResult::Ok,
        Reply::Int(n) => RResult::Int(*n),
        Reply::Error(text) if UNKNOWN_MARKS.iter().any(|m| text.contains(m)) => RResult::Unknown,
        Reply::Error(text) if text.starts_with("ERR key was deleted") => RResult::Refused,
        Reply::Error(text) if text == "ERR no such key" => RResult::NoSuchKey,
        other => RResult::Failed(format!("{other:?}")),
    }
}

/// A scenario's key names: `a` and `b`, in one group or (`cross`) in two.
fn names(scenario: u32, cross: bool, groups: u32) -> [Vec<u8>; 2] {
    let a = format!("{{s{scenario}}}a").into_bytes();
    if !cross {
        return [a, format!("{{s{scenario}}}b").into_bytes()];
    }
    let home = key_id(&a, groups).group(groups);
    let b = (0..)
        .map(|n| format!("{{s{scenario}.{n}}}b").into_bytes())
        .find(|b| key_id(b, groups).group(groups) != home)
        .expect("another group exists");
    [a, b]
}

impl Resp<'_> {
    /// Runs one scenario of a random kind.
    pub async fn scenario(&mut self, rng: &mut SmallRng) {
        let scenario = self.world.next_scenario();
        match rng.gen_range(0..3) {
            0 => self.rename(scenario, rng).await,
            1 => self.set_after_del(scenario, rng).await,
            _ => self.deadline(scenario, rng).await,
        }
    }

    /// A command as a RESP connection runs it: plan, then the executor.
    async fn command(&self, args: &[&[u8]]) -> Reply {
        let name = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
        let rest: Vec<Bytes> = args[1..]
            .iter()
            .map(|a| Bytes::copy_from_slice(a))
            .collect();
        match plan(&name, &rest, self.groups) {
            Some(Ok(Planned::Keys(p))) => self.executor.run(&p).await,
            Some(Ok(Planned::CrossGroupRename {
                from,
                to,
                only_if_absent,
            })) => self.executor.rename_across(from, to, only_if_absent).await,
            Some(Err(e)) => e,
            None => Reply::err("not a key command"),
        }
    }

    fn record(&self, scenario: u32, cmd: RCmd, invoke: u64, result: RResult) -> RResult {
        let complete = (result != RResult::Unknown).then(|| self.world.tick());
        self.world.trace.event(
            now_ms(),
            format!("c{} s{scenario} {cmd:?} -> {result:?}", self.me),
        );
        self.world.resp.borrow_mut().push(ROp {
            scenario,
            invoke,
            complete,
            cmd,
            result: result.clone(),
        });
        result
    }

    /// Runs `cmd` on the scenario's keys and records it.
    async fn run(&self, scenario: u32, keys: &[Vec<u8>; 2], cmd: RCmd) -> RResult {
        let invoke = self.world.tick();
        let key = |s: Slot| keys[s as usize].as_slice();
        let result = match cmd {
            RCmd::Get { key: slot } => get(&self.client, key(slot), self.groups).await,
            RCmd::Set {
                key: slot,
                value,
                deadline_at,
            } => {
                let v = value.to_string();
                let reply = match deadline_at {
                    None => self.command(&[b"SET", key(slot), v.as_bytes()]).await,
                    Some(t) => {
                        let t = t.to_string();
                        let args: [&[u8]; 5] =
                            [b"SET", key(slot), v.as_bytes(), b"PXAT", t.as_bytes()];
                        self.command(&args).await
                    }
                };
                classify(&reply)
            }
            RCmd::Del { key: slot } => classify(&self.command(&[b"DEL", key(slot)]).await),
            RCmd::Rename { from, to, .. } => {
                classify(&self.command(&[b"RENAME", key(from), key(to)]).await)
            }
            RCmd::ExpireAt { key: slot, at_ms } => {
                let t = at_ms.to_string();
                classify(&self.command(&[b"PEXPIREAT", key(slot), t.as_bytes()]).await)
            }
            RCmd::Expire { key: slot, in_ms } => {
                let t = in_ms.to_string();
                classify(&self.command(&[b"PEXPIRE", key(slot), t.as_bytes()]).await)
            }
        };
        self.record(scenario, cmd, invoke, result)
    }

    fn register(&self, scenario: u32, keys: &[Vec<u8>; 2]) {
        self.world
            .resp_keys
            .borrow_mut()
            .push((scenario, keys.clone()));
    }

    /// `SET a`, maybe `SET b` (onto an existing key) or `SET b` + `DEL b` (onto a tombstone,
    /// refused within the grace period), maybe no `SET a` (a missing key); `RENAME a b`; reads
    /// of both at once and once more later (a late apply of an unknown step shows then). The
    /// harness reads both again after healing.
    async fn rename(&self, scenario: u32, rng: &mut SmallRng) {
        let cross = rng.gen_range(0..100) < self.cross_pct;
        let keys = names(scenario, cross, self.groups);
        self.register(scenario, &keys);
        let value = |w: &World| w.tick();
        let missing = rng.gen_range(0..100) < 15;
        if !missing {
            let cmd = set(0, value(self.world), None);
            self.run(scenario, &keys, cmd).await;
        }
        let onto = rng.gen_range(0..100);
        if onto < 60 {
            self.run(scenario, &keys, set(1, value(self.world), None))
                .await;
            if onto < 25 {
                self.run(scenario, &keys, RCmd::Del { key: 1 }).await;
            }
        }
        let renamed = self
            .run(
                scenario,
                &keys,
                RCmd::Rename {
                    from: 0,
                    to: 1,
                    cross,
                },
            )
            .await;
        let corner = match (cross, &renamed) {
            (_, RResult::NoSuchKey) => Some(Corner::RenameMissing),
            (_, RResult::Refused) => Some(Corner::RenameRefused),
            (true, RResult::Ok) => Some(Corner::RenameCrossGroup),
            (false, RResult::Ok) => Some(Corner::RenameSameGroup),
            _ => None,
        };
        if let Some(corner) = corner {
            self.world.count(corner);
        }
        if renamed == RResult::Ok && (25..60).contains(&onto) && !missing {
            self.world.count(Corner::RenameOntoExisting);
        }
        for pass in 0..2 {
            if pass == 1 {
                let wait = rng.gen_range(500..4_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            self.run(scenario, &keys, RCmd::Get { key: 0 }).await;
            self.run(scenario, &keys, RCmd::Get { key: 1 }).await;
        }
    }

    /// `SET a`, `DEL a`, a read, a plain `SET a` at once (refused within the grace period),
    /// a read; then past the grace period a read, a plain `SET a` (accepted), a read.
    async fn set_after_del(&self, scenario: u32, rng: &mut SmallRng) {
        let keys = names(scenario, false, self.groups);
        self.register(scenario, &keys);
        let get = RCmd::Get { key: 0 };
        self.run(scenario, &keys, set(0, self.world.tick(), None))
            .await;
        self.run(scenario, &keys, get).await;
        self.run(scenario, &keys, RCmd::Del { key: 0 }).await;
        self.run(scenario, &keys, get).await;
        let early = self
            .run(scenario, &keys, set(0, self.world.tick(), None))
            .await;
        self.run(scenario, &keys, get).await;
        if early == RResult::Refused {
            self.world.count(Corner::SetWithinGrace);
        }
        if early == RResult::Ok && self.grace_ms > 0 {
            // Too late for the grace period (a slow step): nothing more to test here.
            return;
        }
        let wait = self.grace_ms + rng.gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        self.run(scenario, &keys, get).await;
        let late = self
            .run(scenario, &keys, set(0, self.world.tick(), None))
            .await;
        self.run(scenario, &keys, get).await;
        if late == RResult::Ok {
            self.world.count(Corner::SetAfterGrace);
        }
    }

    /// `SET a`, a read, then an absolute deadline 0.2–1.5 s ahead (`PEXPIREAT`, `SET … PXAT`)
    /// or a relative one (`PEXPIRE`); reads every 20–250 ms until past it, and once more later.
    async fn deadline(&self, scenario: u32, rng: &mut SmallRng) {
        let keys = names(scenario, false, self.groups);
        let get = RCmd::Get { key: 0 };
        self.run(scenario, &keys, set(0, self.world.tick(), None))
            .await;
        let RResult::Read {
            value: Some(_),
            server_time_ms: now,
            ..
        } = self.run(scenario, &keys, get).await
        else {
            return;
        };
        let ahead = rng.gen_range(200..1_500);
        let cmd = match rng.gen_range(0..3) {
            0 => RCmd::ExpireAt {
                key: 0,
                at_ms: now + ahead,
            },
            1 => set(0, self.world.tick(), Some(now + ahead)),
            _ => RCmd::Expire {
                key: 0,
                in_ms: ahead,
            },
        };
        self.run(scenario, &keys, cmd).await;
        let mut deadline = None;
        for _ in 0..40 {
            let pause = rng.gen_range(20..250);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match self.run(scenario, &keys, get).await {
                RResult::Read {
                    value: Some(_),
                    deadline_ms: Some(d),
                    server_time_ms,
                } => {
                    deadline = Some(d);
                    if d.abs_diff(server_time_ms) < 60 {
                        self.world.count(Corner::KeyDeadlineRace);
                    }
                }
                RResult::Read { value: None, .. } => break,
                _ => {}
            }
        }
        if deadline.is_some() {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..800))).await;
            self.run(scenario, &keys, get).await;
        }
    }
}

fn set(key: Slot, value: u64, deadline_at: Option<u64>) -> RCmd {
    RCmd::Set {
        key,
        value,
        deadline_at,
    }
}

/// `GET` as the executor reads: the linearizable read path and the shared pure `read`, plus the
/// read's replicated time and the key's deadline (which a RESP reply does not carry).
pub async fn get(client: &Client, name: &[u8], groups: u32) -> RResult {
    let Ok(r) = client.read(key_id(name, groups)).await else {
        return RResult::Unknown;
    };
    let key = r.session.as_ref().map(|s| (&s.attributes, s.deadline_ms));
    let value = match read_map(&ReadOp::Get, key, r.server_time_ms) {
        Reply::Bulk(v) => std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok()),
        _ => None,
    };
    RResult::Read {
        value,
        deadline_ms: r.session.and_then(|s| s.deadline_ms),
        server_time_ms: r.server_time_ms,
    }
}
