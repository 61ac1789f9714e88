//! The clients: a conflicting workload on the seed's keys (creates, reads, writes with and
//! without compare-and-set, touches, deletes, rotations within and across groups), logins under
//! the principal limit, "log out everywhere", deadline chasing, and reads right after a
//! whole-cluster restart. Every op is recorded for the checkers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::resp::exec::Executor;
use steadfast::{Client, ClientId, Error, GroupId, SessionId};

use crate::checker::{Op, OpKind, Outcome, ReadValue, Rotation};
use crate::faults::Corner;
use crate::harness::{now_ms, World, PORT};
use crate::lifecycle::{LifeKind, LifeOp, LoginOutcome, RotatedAway, SessionNo};
use crate::net::SimConnector;
use crate::rworkload::Resp;
use crate::swarm::Params;

/// Principals the workload logs in as; the namespace allows each `Params::principal_limit`.
pub const PRINCIPALS: [&str; 2] = ["ann", "bob"];

pub fn value_of(attributes: &Attributes) -> u64 {
    attributes
        .get("v")
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn read_value(s: &steadfast::state::SessionView) -> ReadValue {
    ReadValue {
        version: s.version,
        value: value_of(&s.attributes),
        expires_at_ms: s.expires_at_ms,
    }
}

/// A client of every node, with the simulation's deadlines.
pub async fn connect(client: u64, nodes: usize) -> Result<Client, Box<dyn std::error::Error>> {
    let addrs = (0..nodes).map(|i| format!("n{}:{PORT}", i + 1)).collect();
    let mut config = ClientConfig::new(addrs);
    config.client_id = Some(ClientId(client));
    config.request_timeout = Duration::from_secs(3);
    config.attempt_timeout = Duration::from_millis(700);
    Ok(Client::connect_with(config, Arc::new(SimConnector)).await?)
}

/// One client's state.
struct Worker<'a> {
    world: &'a World,
    p: &'a Params,
    client: Client,
    rng: SmallRng,
    me: u32,
    /// The last version seen per key (for compare-and-set guesses).
    seen: BTreeMap<u64, u64>,
    /// Sessions this client logged in, with their principal.
    logins: Vec<(SessionNo, SessionId, usize)>,
    /// The RESP-level scenarios' side of this client.
    resp: Resp<'a>,
}

/// Runs one client until `until`.
pub async fn workload(
    world: World,
    p: std::rc::Rc<Params>,
    me: u32,
    seed: u64,
    until: Duration,
) -> turmoil::Result {
    let client = connect(u64::from(me) + 1, p.nodes).await?;
    let resp = Resp {
        world: &world,
        client: client.clone(),
        executor: Executor::new(client.clone(), String::new(), p.delete_grace_ms),
        groups: p.groups,
        grace_ms: p.delete_grace_ms,
        cross_pct: p.mix.redis_cross_pct,
        me,
    };
    let mut w = Worker {
        world: &world,
        p: &p,
        client,
        rng: SmallRng::seed_from_u64(seed),
        me,
        seen: BTreeMap::new(),
        logins: Vec::new(),
        resp,
    };
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        let urgent = world.urgent.borrow_mut().pop_front();
        if let Some(key) = urgent {
            // The old leader just came back alone after a power loss: read what it acknowledged.
            world.count(Corner::ReadAfterRestart);
            w.op(key, OpKind::Get).await;
            continue;
        }
        let roll = w.rng.gen_range(0..100);
        if roll < p.mix.lifecycle_pct {
            w.lifecycle().await;
        } else if roll < p.mix.lifecycle_pct + p.mix.deadline_pct {
            w.chase_deadline().await;
        } else if roll < p.mix.lifecycle_pct + p.mix.deadline_pct + p.mix.redis_pct {
            w.resp.scenario(&mut w.rng).await;
        } else {
            w.random_op().await;
        }
        let pause = w.rng.gen_range(0..=p.mix.think_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    world.finished.set(world.finished.get() + 1);
    Ok(())
}

/// What a random step does.
#[derive(Clone, Copy)]
enum Choice {
    Create,
    Get,
    Put,
    Touch,
    Delete,
    Rotate,
}

impl Worker<'_> {
    async fn random_op(&mut self) {
        let key = self.rng.gen_range(0..self.p.keys.len()) as u64;
        let choices = [
            Choice::Create,
            Choice::Get,
            Choice::Put,
            Choice::Touch,
            Choice::Delete,
            Choice::Rotate,
        ];
        let weights = self.p.mix.weights();
        let choice = *choices
            .iter()
            .zip(weights)
            .collect::<Vec<_>>()
            .choose_weighted(&mut self.rng, |(_, w)| *w)
            .map(|(c, _)| *c)
            .unwrap_or(&Choice::Get);
        let expected = self
            .seen
            .get(&key)
            .copied()
            .filter(|_| self.rng.gen_bool(0.5));
        let value = self.world.tick();
        let kind = match choice {
            Choice::Create => OpKind::Create { value },
            Choice::Get => OpKind::Get,
            Choice::Put => OpKind::Put { value, expected },
            Choice::Touch => OpKind::Touch,
            Choice::Delete => OpKind::Delete { expected },
            Choice::Rotate => return self.rotate(key).await,
        };
        self.op(key, kind).await;
    }

    /// Runs and records one op on a workload key; returns its outcome.
    async fn op(&mut self, key: u64, kind: OpKind) -> Outcome {
        let invoke = self.world.tick();
        let outcome = execute(&self.client, self.p.keys[key as usize], &kind, self.p).await;
        self.record(key, kind, invoke, outcome.clone());
        outcome
    }

    fn record(&mut self, key: u64, kind: OpKind, invoke: u64, outcome: Outcome) {
        match &outcome {
            Outcome::Ok { version, .. } => {
                self.seen.insert(key, *version);
            }
            Outcome::Read { found: Some(r), .. } => {
                self.seen.insert(key, r.version);
            }
            _ => {}
        }
        if kind != OpKind::Get && outcome != Outcome::Unknown {
            // Every definite write answer (a refusal too) comes from a committed log entry.
            let group = self.p.keys[key as usize].group(self.p.groups).0;
            self.world.acked(group, key);
        }
        let complete = (outcome != Outcome::Unknown).then(|| self.world.tick());
        self.world.trace.event(
            now_ms(),
            format!("c{} key={key} {kind:?} -> {outcome:?}", self.me),
        );
        self.world.history.borrow_mut().push(Op {
            id: invoke,
            client: self.me,
            group: self.p.keys[key as usize].group(self.p.groups).0,
            key,
            kind,
            invoke,
            complete,
            outcome,
        });
    }

    /// Rotates a key to a fresh id, in its own group or (`cross_group_pct`) another one. For the
    /// checker the old key dies: within a group at the rotation's version; across groups at a
    /// version this client never learns (an Unknown delete), with the rotation's completion as
    /// the point from which any sight of the old id is a second live copy.
    async fn rotate(&mut self, key: u64) {
        let id = self.p.keys[key as usize];
        let home = id.group(self.p.groups);
        let cross = self.p.groups > 1 && self.rng.gen_range(0..100) < self.p.mix.cross_group_pct;
        let target = if cross {
            let others: Vec<u32> = (0..self.p.groups).filter(|g| *g != home.0).collect();
            GroupId(*others.choose(&mut self.rng).expect("two groups or more"))
        } else {
            home
        };
        let new = id_in(&mut self.rng, target, self.p.groups);
        let invoke = self.world.tick();
        let outcome = match self.client.rotate_into(id, new, None).await {
            Ok((_, w)) => Outcome::Ok {
                version: w.version,
                server_time_ms: w.server_time_ms,
            },
            Err(Error::NotFound) => Outcome::NotFound,
            Err(_) => Outcome::Unknown,
        };
        if let Outcome::Ok { version, .. } = outcome {
            self.world.rotated_away.borrow_mut().push(RotatedAway {
                key,
                op: invoke,
                complete: self.world.tick(),
            });
            if cross {
                self.world.count(Corner::CrossGroupRotation);
            }
            // Nobody else knows the new id: reading it shows exactly what the rotation moved.
            let carried = self.client.read(new).await.ok();
            let complete = self.world.tick();
            if let Some(r) = carried {
                self.world.rotations.borrow_mut().push(Rotation {
                    op: invoke,
                    key,
                    version,
                    carried: r.session.as_ref().map(read_value),
                    complete,
                    cross_group: cross,
                });
            }
        }
        self.world.trace.event(
            now_ms(),
            format!("c{} key={key} rotate -> {new} {outcome:?}", self.me),
        );
        let outcome = match outcome {
            Outcome::Ok { .. } if cross => Outcome::Unknown,
            o => o,
        };
        self.record(key, OpKind::Delete { expected: None }, invoke, outcome);
    }

    /// Reads a key, waits until just before its deadline, reads or touches it there, then reads
    /// it just after the deadline and once more later: expiry, touch batches and purges race.
    async fn chase_deadline(&mut self) {
        let key = self.rng.gen_range(0..self.p.keys.len()) as u64;
        let Outcome::Read {
            found: Some(r),
            server_time_ms,
        } = self.op(key, OpKind::Get).await
        else {
            return;
        };
        let left = r.expires_at_ms.saturating_sub(server_time_ms);
        if left > 10_000 {
            return;
        }
        let early = self.rng.gen_range(0..60);
        tokio::time::sleep(Duration::from_millis(left.saturating_sub(early))).await;
        match self.rng.gen_range(0..10) {
            0..=4 => {
                self.op(key, OpKind::Get).await;
            }
            5..=7 => {
                self.op(key, OpKind::Touch).await;
            }
            _ => {}
        }
        let late = self.rng.gen_range(0..150);
        tokio::time::sleep(Duration::from_millis(early + late)).await;
        if let Outcome::Read { server_time_ms, .. } = self.op(key, OpKind::Get).await {
            if server_time_ms.abs_diff(r.expires_at_ms) < 150 {
                self.world.count(Corner::DeadlineRace);
            }
        }
        let later = self.rng.gen_range(300..900);
        tokio::time::sleep(Duration::from_millis(later)).await;
        self.op(key, OpKind::Get).await;
    }

    /// Logins (anonymous session, then a rotation tagging it with a principal), "log out
    /// everywhere", probes of this client's logins and listings of a principal's sessions.
    async fn lifecycle(&mut self) {
        let principal = self.rng.gen_range(0..PRINCIPALS.len());
        let name = PRINCIPALS[principal];
        let invoke = self.world.tick();
        let kind = match self.rng.gen_range(0..100) {
            0..=11 => {
                let r = self.client.invalidate_principal(name).await;
                self.trace(format!("invalidate {name} -> {r:?}"));
                match r {
                    Ok(_) => LifeKind::Invalidate {
                        principal: principal as u32,
                        done: true,
                    },
                    Err(e) if definite(&e) => return,
                    Err(_) => LifeKind::Invalidate {
                        principal: principal as u32,
                        done: false,
                    },
                }
            }
            12..=29 => {
                let Ok(ids) = self.client.sessions_of(name).await else {
                    return;
                };
                let known = self.world.login_ids.borrow();
                let sessions: Vec<SessionNo> =
                    ids.iter().filter_map(|id| known.get(id).copied()).collect();
                let others = ids.len() - sessions.len();
                self.trace(format!("sessions_of {name} -> {sessions:?} + {others}"));
                LifeKind::SessionsOf {
                    principal: principal as u32,
                    sessions,
                    others,
                }
            }
            30..=59 if !self.logins.is_empty() => {
                let (no, id, _) = *self.logins.choose(&mut self.rng).expect("non-empty");
                let Ok(r) = self.client.read(id).await else {
                    return;
                };
                self.trace(format!(
                    "probe login {no} -> {:?}",
                    r.session.as_ref().map(|s| s.expires_at_ms)
                ));
                LifeKind::Probe {
                    session: no,
                    found: r.session.map(|s| s.expires_at_ms),
                    server_time_ms: r.server_time_ms,
                }
            }
            _ => match self.login(principal).await {
                Some(kind) => kind,
                None => return,
            },
        };
        let complete = match &kind {
            LifeKind::Login {
                outcome: LoginOutcome::Unknown,
                ..
            }
            | LifeKind::Invalidate { done: false, .. } => None,
            _ => Some(self.world.tick()),
        };
        self.world.lifecycle.borrow_mut().push(LifeOp {
            invoke,
            complete,
            kind,
        });
    }

    async fn login(&mut self, principal: usize) -> Option<LifeKind> {
        let name = PRINCIPALS[principal];
        let anon = SessionId::from_bytes(self.rng.gen());
        let options = CreateOptions {
            idle_timeout: Some(Duration::from_millis(self.p.idle_timeout_ms)),
            ..CreateOptions::default()
        };
        self.client
            .create_with_id(anon, Attributes::new(), options)
            .await
            .ok()?;
        let home = steadfast::id::principal_group(name, self.p.groups);
        let new = id_in(&mut self.rng, home, self.p.groups);
        let no = {
            let mut ids = self.world.login_ids.borrow_mut();
            let no = ids.len() as SessionNo + 1;
            ids.insert(new, no);
            no
        };
        let r = self
            .client
            .rotate_into(anon, new, Some(name.to_string()))
            .await;
        self.trace(format!(
            "login {no} {name} {anon} -> {new}: {:?}",
            r.as_ref().map(|(_, w)| w.version)
        ));
        let outcome = match r {
            Ok((_, w)) => {
                self.logins.push((no, new, principal));
                LoginOutcome::Ok {
                    server_time_ms: w.server_time_ms,
                }
            }
            Err(Error::LimitReached(_)) => {
                self.world.count(Corner::LoginRefused);
                LoginOutcome::Refused
            }
            Err(e) if definite(&e) => LoginOutcome::Failed,
            Err(_) => LoginOutcome::Unknown,
        };
        Some(LifeKind::Login {
            principal: principal as u32,
            session: no,
            outcome,
        })
    }

    fn trace(&self, line: String) {
        self.world
            .trace
            .event(now_ms(), format!("c{} {line}", self.me));
    }
}

/// Errors that prove a write did not happen.
fn definite(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound | Error::Exists | Error::Invalid(_) | Error::TooLarge { .. }
    )
}

/// A seeded id in `group` (the simulation never draws from the OS).
pub fn id_in(rng: &mut SmallRng, group: GroupId, groups: u32) -> SessionId {
    loop {
        let id = SessionId::from_bytes(rng.gen());
        if id.group(groups) == group {
            return id;
        }
    }
}

async fn execute(client: &Client, id: SessionId, kind: &OpKind, p: &Params) -> Outcome {
    let ok = |w: steadfast::client::Written| Outcome::Ok {
        version: w.version,
        server_time_ms: w.server_time_ms,
    };
    let fail = |e: Error| match e {
        Error::Exists => Outcome::Exists,
        Error::NotFound => Outcome::NotFound,
        Error::Conflict { current_version } => Outcome::Conflict {
            current: current_version,
        },
        _ => Outcome::Unknown,
    };
    match kind {
        OpKind::Create { value } => {
            let attributes = Attributes::from([("v".to_string(), value.to_be_bytes().to_vec())]);
            let options = CreateOptions {
                idle_timeout: Some(Duration::from_millis(p.idle_timeout_ms)),
                ..CreateOptions::default()
            };
            client
                .create_with_id(id, attributes, options)
                .await
                .map_or_else(fail, ok)
        }
        OpKind::Get => match client.read(id).await {
            Ok(r) => Outcome::Read {
                found: r.session.as_ref().map(read_value),
                server_time_ms: r.server_time_ms,
            },
            Err(_) => Outcome::Unknown,
        },
        OpKind::Put { value, expected } => {
            let update = Update {
                set: Attributes::from([("v".to_string(), value.to_be_bytes().to_vec())]),
                expected_version: *expected,
                ..Default::default()
            };
            client.update(id, update).await.map_or_else(fail, ok)
        }
        OpKind::Touch => client.touch(id).await.map_or_else(fail, ok),
        OpKind::Delete { expected } => client.delete(id, *expected).await.map_or_else(fail, ok),
    }
}
