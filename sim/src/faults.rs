//! Fault classes and how each is injected into a turmoil simulation.

use std::fmt;

/// Every kind of fault the simulation injects. A sweep reports how often each happened and
/// fails if one never did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultClass {
    /// A random minority is cut off from the majority.
    PartitionMajority,
    /// The node leading the most groups is cut off from everyone.
    IsolateLeader,
    /// 5 nodes: each sees only its ring neighbours, so every node has a different majority.
    MajoritiesRing,
    /// 5 nodes: two pairs that can only talk through one bridge node.
    Bridge,
    /// One node stops receiving from the others but can still send.
    OneWay,
    /// Messages between some pairs are held, then released late and in a burst.
    HoldRelease,
    /// Links drop messages at random.
    MessageLoss,
    /// kill -9 the node leading the most groups; unsynced writes may be lost.
    KillLeader,
    /// kill -9 a node that leads nothing (or the fewest groups).
    KillFollower,
    /// kill -9 a majority.
    KillMajority,
    /// kill -9 every node (power loss).
    KillAll,
    /// A node freezes (all its traffic held) past the election timeout, then resumes.
    Pause,
    /// One node's clock jumps forward or back.
    ClockJump,
    /// The leader is isolated, and the first node caught with an unsynced vote is killed at
    /// that instant (the worst moment for vote durability).
    CrashAfterVote,
    /// A group's voters change (one swapped for a non-voter on 5 nodes; on 3 nodes one removed,
    /// later added back) through joint consensus while clients and other faults go on. Counted
    /// when the change commits.
    MembershipChange,
}

impl FaultClass {
    /// Every class, in report order.
    pub const ALL: [FaultClass; 15] = [
        FaultClass::PartitionMajority,
        FaultClass::IsolateLeader,
        FaultClass::MajoritiesRing,
        FaultClass::Bridge,
        FaultClass::OneWay,
        FaultClass::HoldRelease,
        FaultClass::MessageLoss,
        FaultClass::KillLeader,
        FaultClass::KillFollower,
        FaultClass::KillMajority,
        FaultClass::KillAll,
        FaultClass::Pause,
        FaultClass::ClockJump,
        FaultClass::CrashAfterVote,
        FaultClass::MembershipChange,
    ];

    /// Whether the class applies to a cluster of `nodes`.
    pub fn applies_to(self, nodes: usize) -> bool {
        match self {
            FaultClass::MajoritiesRing | FaultClass::Bridge => nodes >= 5,
            _ => true,
        }
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
