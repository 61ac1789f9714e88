//! The fault injector: steps the simulation, injects one fault at a time from the seed's fault
//! mix, springs the timed traps (an unsynced vote, a leader's unsynced tail), heals, and checks
//! election safety at every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use steadfast::raft::backend::{Backend, MetaKey};

use crate::disk::SimDisk;
use crate::faults::FaultClass;
use crate::harness::{node_name, World};
use crate::operator::{self, Order};
use crate::swarm::Params;

/// A fault in force: its class, when it heals, and the links it cut.
type ActiveFault = (FaultClass, Duration, Vec<(String, String)>);

/// A `LeaderTailLoss` fault in progress.
#[derive(Clone, Debug)]
enum TailLoss {
    /// The leader's syncs are slow; waiting for a write acknowledged in a group it leads
    /// (beyond the per-group counts `acks`).
    Armed {
        leader: usize,
        acks: BTreeMap<u32, u64>,
        /// Acknowledgements before this count as old: the slow syncs must be in force first.
        settled: Duration,
        deadline: Duration,
    },
    /// Every node is down; the old leader restarts at `leader_at`, the others at `rest_at`.
    Down {
        leader: usize,
        leader_at: Duration,
        rest_at: Duration,
    },
    /// The old leader is back alone until `rest_at`.
    LeaderAlone { rest_at: Duration },
}

/// The injector's state.
pub struct Injector {
    pub(crate) rng: SmallRng,
    disks: Vec<SimDisk>,
    offsets: Vec<Arc<AtomicI64>>,
    pub(crate) counts: BTreeMap<FaultClass, u32>,
    pub(crate) down: BTreeSet<usize>,
    /// Nodes lost for good (replaced under a new id): never restarted.
    pub(crate) gone: BTreeSet<usize>,
    pub(crate) active: Option<ActiveFault>,
    next_at: Duration,
    /// Kill the next node seen with an unsynced vote.
    vote_trap: bool,
    /// A trapped node to restart, and when.
    reboot: Option<(usize, Duration)>,
    /// The isolated old leader of a `CrashAfterVote` fault: the only node the trapped voter
    /// may talk to after its restart, so it campaigns again in the term whose vote it lost.
    trap_partner: Option<usize>,
    /// Election safety: the leader seen for each (group, term).
    leaders: BTreeMap<(u32, u64), usize>,
    /// A leader-tail-loss fault in progress.
    tail: Option<TailLoss>,
    /// A large-snapshot fault in progress: the follower cut off, and since when.
    pub(crate) large: Option<(usize, Duration)>,
}

impl Injector {
    /// An injector for the seed, over the nodes' disks and clock offsets.
    pub fn new(seed: u64, disks: Vec<SimDisk>, offsets: Vec<Arc<AtomicI64>>) -> Self {
        Injector {
            rng: SmallRng::seed_from_u64(seed ^ 0xfa17),
            disks,
            offsets,
            counts: BTreeMap::new(),
            down: BTreeSet::new(),
            gone: BTreeSet::new(),
            active: None,
            next_at: Duration::from_secs(2),
            vote_trap: false,
            reboot: None,
            trap_partner: None,
            leaders: BTreeMap::new(),
            tail: None,
            large: None,
        }
    }

    /// Faults injected so far, by class.
    pub fn counts(&mut self) -> &mut BTreeMap<FaultClass, u32> {
        &mut self.counts
    }
}

/// Steps the simulation, injecting and healing faults; `Some(reason)` if the run broke.
pub fn drive(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    p: &Params,
    inj: &mut Injector,
    fault_end: Option<Duration>,
) -> Option<String> {
    let mut healed = fault_end.is_none();
    loop {
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => return Some(format!("simulation error: {e}")),
        }
        let now = sim.elapsed();
        if let Some(v) = election_safety(world, inj, now) {
            return Some(v);
        }
        spring_vote_trap(sim, world, inj, now);
        step_tail_loss(sim, world, inj, now);
        operator::step_operator(sim, world, inj, p);
        let Some(end) = fault_end else { continue };
        if !healed && now >= end {
            heal(sim, world, inj, p);
            world.trace.event(now.as_millis(), "healed everything");
            healed = true;
        }
        if healed {
            continue;
        }
        if let Some((class, until, _)) = &inj.active {
            if now >= *until {
                let class = *class;
                heal(sim, world, inj, p);
                world
                    .trace
                    .event(now.as_millis(), format!("healed {class}"));
                inj.next_at = now + Duration::from_millis(inj.rng.gen_range(300..2500));
            }
        } else if now >= inj.next_at {
            inject(sim, world, inj, p, now);
        }
    }
}

/// Raft's election safety: at most one leader per term in each group.
fn election_safety(world: &World, inj: &mut Injector, now: Duration) -> Option<String> {
    for ((node, group), raft) in world.rafts.borrow().iter() {
        let m = raft.metrics();
        let m = m.borrow();
        if !m.state.is_leader() {
            continue;
        }
        let seen = *inj
            .leaders
            .entry((*group, m.current_term))
            .or_insert_with(|| {
                world.trace.event(
                    now.as_millis(),
                    format!(
                        "leader g{group} term {} = {}",
                        m.current_term,
                        node_name(*node)
                    ),
                );
                *node
            });
        if seen != *node {
            let votes: Vec<String> = world
                .rafts
                .borrow()
                .iter()
                .filter(|((_, g), _)| g == group)
                .map(|((n, _), r)| {
                    let m = r.metrics();
                    let m = m.borrow();
                    format!(
                        "{}: {:?} vote={} last_log={:?}",
                        node_name(*n),
                        m.state,
                        m.vote,
                        m.last_log_index
                    )
                })
                .collect();
            return Some(format!(
                "election safety: group {group} has two leaders in term {}: {} and {} ({})",
                m.current_term,
                node_name(seen),
                node_name(*node),
                votes.join("; ")
            ));
        }
    }
    None
}

fn spring_vote_trap(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, now: Duration) {
    if let Some((n, at)) = inj.reboot {
        if now >= at {
            inj.reboot = None;
            inj.down.remove(&n);
            world.rafts.borrow_mut().retain(|(node, _), _| *node != n);
            sim.bounce(node_name(n));
            // It comes back knowing only its last durable vote; let it reach nobody but the old
            // leader, so a forgotten vote shows up as a second leader in the same term.
            if let Some(partner) = inj.trap_partner {
                for m in (0..inj.disks.len()).filter(|m| *m != n && *m != partner) {
                    sim.partition(node_name(n), node_name(m));
                }
                sim.repair(node_name(n), node_name(partner));
            }
            world
                .trace
                .event(now.as_millis(), format!("trap: {} restarted", node_name(n)));
        }
    }
    if !inj.vote_trap {
        return;
    }
    let partner = inj.trap_partner;
    // A vote granted to another node (losing one's own candidacy vote is harmless).
    let granted = |n: usize| {
        inj.disks[n]
            .mem
            .pending_meta_values(MetaKey::Vote)
            .iter()
            .any(|bytes| {
                steadfast::codec::decode::<steadfast::raft::typ::Vote>(bytes, 4096)
                    .is_ok_and(|v| v.leader_id().voted_for.is_some_and(|c| c != n as u64 + 1))
            })
    };
    let caught = (0..inj.disks.len()).find(|n| {
        !inj.down.contains(n) && !inj.gone.contains(n) && Some(*n) != partner && granted(*n)
    });
    if let Some(n) = caught {
        inj.vote_trap = false;
        inj.down.insert(n);
        sim.crash(node_name(n));
        inj.disks[n].mem.crash(0);
        let back = now + Duration::from_millis(inj.rng.gen_range(20..400));
        inj.reboot = Some((n, back));
        world.trace.event(
            now.as_millis(),
            format!("trap: {} killed with an unsynced vote", node_name(n)),
        );
    }
}

fn leader_counts(
    world: &World,
    p: &Params,
    down: &BTreeSet<usize>,
    gone: &BTreeSet<usize>,
) -> Vec<(usize, usize)> {
    let rafts = world.rafts.borrow();
    let mut counts: Vec<(usize, usize)> = (0..p.nodes)
        .filter(|i| !down.contains(i) && !gone.contains(i))
        .map(|i| (i, 0))
        .collect();
    for ((node, _), raft) in rafts.iter() {
        if raft.metrics().borrow().state.is_leader() {
            if let Some(c) = counts.iter_mut().find(|(n, _)| n == node) {
                c.1 += 1;
            }
        }
    }
    counts
}

fn pairs_across(a: &[usize], b: &[usize]) -> Vec<(String, String)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (node_name(*x), node_name(*y))))
        .collect()
}

fn inject(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    inj: &mut Injector,
    p: &Params,
    now: Duration,
) {
    // The seed's own fault mix; uniform if it drew no weight at all.
    let class = p
        .fault_weights
        .choose_weighted(&mut inj.rng, |(_, w)| *w)
        .map(|(c, _)| *c)
        .unwrap_or_else(|_| {
            let classes: Vec<FaultClass> = FaultClass::ALL
                .iter()
                .copied()
                .filter(|c| c.applies_to(p.nodes))
                .collect();
            *classes.choose(&mut inj.rng).expect("classes")
        });
    let mut order: Vec<usize> = (0..p.nodes).collect();
    order.shuffle(&mut inj.rng);
    let mut leaders = leader_counts(world, p, &inj.down, &inj.gone);
    leaders.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
    let top = leaders.first().map_or(order[0], |(n, _)| *n);
    let bottom = leaders.last().map_or(order[0], |(n, _)| *n);
    let mut cut: Vec<(String, String)> = Vec::new();
    let mut detail = String::new();
    match class {
        FaultClass::PartitionMajority => {
            let minority = (p.nodes - 1) / 2;
            cut = pairs_across(&order[..minority], &order[minority..]);
        }
        FaultClass::IsolateLeader | FaultClass::Pause => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            cut = pairs_across(&[top], &others);
            detail = node_name(top);
        }
        FaultClass::MajoritiesRing => {
            for i in 0..p.nodes {
                let skip = order[(i + 2) % p.nodes];
                cut.push((node_name(order[i]), node_name(skip)));
            }
        }
        FaultClass::Bridge => cut = pairs_across(&order[..2], &order[3..]),
        FaultClass::OneWay => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            for o in others {
                sim.partition_oneway(node_name(o), node_name(top));
            }
            detail = format!("{} hears nobody", node_name(top));
        }
        FaultClass::HoldRelease => cut = pairs_across(&order[..1], &order[1..]),
        FaultClass::MessageLoss => {
            for (a, b) in pairs_across(&order, &order)
                .into_iter()
                .filter(|(a, b)| a < b)
            {
                sim.set_link_fail_rate(a.clone(), b.clone(), 0.05);
                cut.push((a, b));
            }
        }
        FaultClass::KillLeader => kill(sim, inj, &[top]),
        FaultClass::KillFollower => kill(sim, inj, &[bottom]),
        FaultClass::KillMajority => kill(sim, inj, &order[..p.nodes / 2 + 1]),
        FaultClass::KillAll => kill(sim, inj, &order.clone()),
        FaultClass::ClockJump => {
            // Backward jumps on a leader are the dangerous ones: its stamps fall behind.
            let jump = inj.rng.gen_range(-30_000i64..10_000);
            inj.offsets[top].fetch_add(jump, std::sync::atomic::Ordering::Relaxed);
            detail = format!("{} jumps {jump} ms", node_name(top));
        }
        FaultClass::CrashAfterVote => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            cut = pairs_across(&[top], &others);
            inj.vote_trap = true;
            inj.trap_partner = Some(top);
            detail = format!("{} isolated; trap armed", node_name(top));
        }
        FaultClass::LeaderTailLoss => {
            // A leader whose followers alone are a quorum (three voters or more).
            let leader = (0..p.nodes)
                .max_by_key(|n| (led_groups(world, *n).len(), *n == top))
                .unwrap_or(top);
            let extra = Duration::from_millis(inj.rng.gen_range(100..400));
            inj.disks[leader].slow_syncs(extra);
            detail = format!("{} syncs {extra:?} slower", node_name(leader));
            inj.tail = Some(TailLoss::Armed {
                leader,
                acks: world.acks.borrow().clone(),
                settled: now + extra,
                deadline: now + extra + Duration::from_secs(3),
            });
        }
        FaultClass::LargeSnapshot => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != bottom).collect();
            cut = pairs_across(&[bottom], &others);
            let bulk = p.groups * inj.rng.gen_range(25..50);
            world.ops.bulk_wanted.set(bulk);
            world.ops.bulk_cut.set(true);
            inj.large = Some((bottom, now));
            detail = format!(
                "{} cut off while {bulk} large sessions are written",
                node_name(bottom)
            );
        }
        FaultClass::ReplaceNode => {
            detail = operator::replace_node(sim, world, inj, p)
                .unwrap_or_else(|| "skipped (a node was replaced already, or none can be)".into());
        }
        FaultClass::BackupRestore => {
            world.ops.backup_wanted.set(true);
            detail = "backup asked for".into();
        }
        FaultClass::MembershipChange => {
            let group = inj.rng.gen_range(0..p.groups);
            let voters = next_voters(world, group, &mut inj.rng);
            detail = format!("g{group} -> {voters:?}");
            world
                .orders
                .borrow_mut()
                .push_back(Order::Voters(group, voters));
            // Most changes run under another fault: a node down or a minority cut off.
            match inj.rng.gen_range(0..3) {
                0 => {}
                1 => {
                    kill(sim, inj, &order[..1]);
                    detail += &format!(" while {} is down", node_name(order[0]));
                }
                _ => {
                    let minority = (p.nodes - 1) / 2;
                    cut = pairs_across(&order[..minority], &order[minority..]);
                }
            }
        }
    }
    match class {
        FaultClass::HoldRelease | FaultClass::Pause => {
            for (a, b) in &cut {
                sim.hold(a.clone(), b.clone());
            }
        }
        FaultClass::MessageLoss | FaultClass::OneWay => {}
        _ => {
            for (a, b) in &cut {
                sim.partition(a.clone(), b.clone());
            }
        }
    }
    if matches!(
        class,
        FaultClass::KillLeader
            | FaultClass::KillFollower
            | FaultClass::KillMajority
            | FaultClass::KillAll
    ) {
        detail = format!(
            "down {:?}",
            inj.down.iter().map(|n| node_name(*n)).collect::<Vec<_>>()
        );
    }
    if !matches!(
        class,
        FaultClass::MembershipChange
            | FaultClass::LargeSnapshot
            | FaultClass::ReplaceNode
            | FaultClass::BackupRestore
    ) {
        // These are counted when they happened in full (see their docs).
        *inj.counts.entry(class).or_default() += 1;
    }
    let hold_ms = match class {
        FaultClass::Pause => inj.rng.gen_range(700..3000),
        // Ended by `step_tail_loss` once every node is back.
        FaultClass::LeaderTailLoss => 60_000,
        // Ended by `step_operator` once the bulk writes are in.
        FaultClass::LargeSnapshot => 20_000,
        FaultClass::CrashAfterVote => inj.rng.gen_range(3000..6000),
        _ => inj.rng.gen_range(500..6000),
    };
    world.trace.event(
        now.as_millis(),
        format!("fault {class} {detail} cut={cut:?} for {hold_ms} ms"),
    );
    inj.active = Some((class, now + Duration::from_millis(hold_ms), cut));
}

/// The group's voters as its most advanced replica knows them.
pub fn current_voters(world: &World, group: u32) -> Vec<u64> {
    world
        .rafts
        .borrow()
        .iter()
        .filter(|((_, g), _)| *g == group)
        .map(|(_, raft)| raft.metrics().borrow().clone())
        .max_by_key(|m| (m.current_term, m.last_log_index))
        .map(|m| m.membership_config.membership().voter_ids().collect())
        .unwrap_or_default()
}

/// The voters to ask for: the group's current voters with one swapped for a non-voter (5 nodes),
/// or one removed / the full set restored (3 nodes); a replaced node's id always gives way to
/// its successor's.
fn next_voters(world: &World, group: u32, rng: &mut SmallRng) -> Vec<u64> {
    let all: Vec<u64> = world.ops.members.borrow().clone();
    let current = current_voters(world, group);
    let outside: Vec<u64> = all
        .iter()
        .copied()
        .filter(|n| !current.contains(n))
        .collect();
    let mut next: Vec<u64> = current
        .iter()
        .copied()
        .filter(|v| all.contains(v))
        .collect();
    if next.len() < current.len() {
        next.extend(outside.iter().take(current.len() - next.len()));
    } else if current.len() == 3 && all.len() == 3 {
        next.remove(rng.gen_range(0..next.len()));
    } else if current.len() == 3 {
        let out = rng.gen_range(0..next.len());
        next[out] = *outside.choose(rng).expect("5 nodes, 3 voters");
    } else {
        next = all;
        next.shuffle(rng);
        next.truncate(3);
    }
    next.sort_unstable();
    next
}

fn kill(sim: &mut turmoil::Sim<'_>, inj: &mut Injector, nodes: &[usize]) {
    for n in nodes.iter().filter(|n| !inj.gone.contains(n)) {
        if inj.down.insert(*n) {
            sim.crash(node_name(*n));
            let pending = inj.disks[*n].mem.pending_writes();
            let keep = inj.rng.gen_range(0..=pending);
            inj.disks[*n].mem.crash(keep);
        }
    }
}

fn heal(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, p: &Params) {
    let names: Vec<String> = (0..p.nodes).map(node_name).collect();
    for a in &names {
        for b in &names {
            if a != b {
                sim.repair(a.clone(), b.clone());
                sim.release(a.clone(), b.clone());
                sim.set_link_fail_rate(a.clone(), b.clone(), 0.0);
            }
        }
    }
    inj.vote_trap = false;
    inj.reboot = None;
    inj.trap_partner = None;
    inj.tail = None;
    inj.large = None;
    world.ops.bulk_cut.set(false);
    for disk in &inj.disks {
        disk.slow_syncs(Duration::ZERO);
    }
    for n in std::mem::take(&mut inj.down) {
        world.rafts.borrow_mut().retain(|(node, _), _| *node != n);
        sim.bounce(node_name(n));
    }
    inj.active = None;
}

/// Drives a `LeaderTailLoss` fault: power loss right after an acknowledged write, the leader
/// losing every unsynced write while its followers keep theirs, then the old leader back first
/// and alone (and read at once), the others later.
fn step_tail_loss(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, now: Duration) {
    let Some(phase) = inj.tail.clone() else {
        return;
    };
    match phase {
        TailLoss::Armed {
            leader,
            acks,
            settled,
            deadline,
        } => {
            if now < settled {
                inj.tail = Some(TailLoss::Armed {
                    leader,
                    acks: world.acks.borrow().clone(),
                    settled,
                    deadline,
                });
                return;
            }
            let led = led_groups(world, leader);
            let acked = led.iter().any(|g| {
                world.acks.borrow().get(g).copied().unwrap_or(0) > acks.get(g).copied().unwrap_or(0)
            });
            if !(acked && inj.disks[leader].mem.pending_writes() > 0) && now < deadline {
                return;
            }
            let lost = inj.disks[leader].mem.pending_writes();
            for n in (0..inj.disks.len()).filter(|n| !inj.gone.contains(n)) {
                if inj.down.insert(n) {
                    sim.crash(node_name(n));
                }
                let disk = &inj.disks[n];
                disk.slow_syncs(Duration::ZERO);
                let keep = if n == leader {
                    0
                } else {
                    disk.mem.pending_writes()
                };
                disk.mem.crash(keep);
            }
            let leader_at = now + Duration::from_millis(inj.rng.gen_range(20..200));
            let rest_at = leader_at + Duration::from_millis(inj.rng.gen_range(300..2500));
            inj.tail = Some(TailLoss::Down {
                leader,
                leader_at,
                rest_at,
            });
            // What each node kept of the groups the leader led: its last durable log index
            // (and, before the crash, its last log index in memory).
            let kept: Vec<String> = led
                .iter()
                .map(|g| {
                    let memory: Vec<Option<u64>> = (0..inj.disks.len())
                        .map(|n| {
                            world
                                .rafts
                                .borrow()
                                .get(&(n, *g))
                                .and_then(|r| r.metrics().borrow().last_log_index)
                        })
                        .collect();
                    let last: Vec<Option<u64>> = inj
                        .disks
                        .iter()
                        .map(|d| {
                            d.mem
                                .load(steadfast::GroupId(*g))
                                .ok()
                                .and_then(|i| i.entries.keys().next_back().copied())
                        })
                        .collect();
                    let replication = world
                        .rafts
                        .borrow()
                        .get(&(leader, *g))
                        .map(|r| format!("{:?}", r.metrics().borrow().replication));
                    format!("g{g} {last:?} of {memory:?} {replication:?}")
                })
                .collect();
            world.trace.event(
                now.as_millis(),
                format!(
                    "tail loss: power off everywhere, {} loses {lost} unsynced writes; last \
                     durable index per node: {kept:?}",
                    node_name(leader)
                ),
            );
        }
        TailLoss::Down {
            leader,
            leader_at,
            rest_at,
        } if now >= leader_at => {
            restart(sim, world, inj, leader);
            // Read what was acknowledged last in every group, while the old leader is alone.
            let keys: Vec<u64> = world.last_acked.borrow().values().copied().collect();
            world.urgent.borrow_mut().extend(keys);
            inj.tail = Some(TailLoss::LeaderAlone { rest_at });
            world.trace.event(
                now.as_millis(),
                format!("tail loss: {} restarted alone", node_name(leader)),
            );
        }
        TailLoss::LeaderAlone { rest_at } if now >= rest_at => {
            for ((n, g), raft) in world.rafts.borrow().iter() {
                let m = raft.metrics().borrow().clone();
                world.trace.event(
                    now.as_millis(),
                    format!(
                        "tail loss: alone, {} g{g}: {:?} term {} vote {} last log {:?}",
                        node_name(*n),
                        m.state,
                        m.current_term,
                        m.vote,
                        m.last_log_index
                    ),
                );
            }
            for n in inj.down.clone() {
                restart(sim, world, inj, n);
            }
            inj.tail = None;
            if let Some(active) = &mut inj.active {
                active.1 = now + Duration::from_millis(500);
            }
            world
                .trace
                .event(now.as_millis(), "tail loss: every node restarted");
        }
        _ => {}
    }
}

fn restart(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, n: usize) {
    if !inj.down.remove(&n) {
        return;
    }
    world.rafts.borrow_mut().retain(|(node, _), _| *node != n);
    sim.bounce(node_name(n));
}

/// The groups `node` leads now whose other voters are a quorum without it (three voters or
/// more): there, entries can be acknowledged before the leader's own sync.
fn led_groups(world: &World, node: usize) -> Vec<u32> {
    world
        .rafts
        .borrow()
        .iter()
        .filter(|((n, _), raft)| {
            let m = raft.metrics().borrow().clone();
            let voters = m.membership_config.membership().voter_ids().count();
            *n == node && m.state.is_leader() && voters >= 3
        })
        .map(|((_, g), _)| *g)
        .collect()
}
