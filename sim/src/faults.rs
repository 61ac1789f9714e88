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
    /// The leader's syncs slow down so its followers' finish first; right after a write is
    /// acknowledged every node loses power, the leader its whole unsynced tail (entries a
    /// majority of followers hold); the old leader restarts alone first and is read at once,
    /// the others later. A leader that resumed its old term would reissue those log ids.
    LeaderTailLoss,
    /// A follower is cut off while a bulk client writes many sessions with large values (and
    /// the workload keeps writing); the leaders purge their logs past it, so once back it must
    /// catch up by installing a large snapshot while clients still write. Counted when some
    /// group's leader had purged past the follower's log (a snapshot install was needed).
    LargeSnapshot,
    /// A node's disk is lost for good: it never comes back, and a fresh node under a new id
    /// (on a new host) joins every group the old one was a voter of through the public
    /// `Client::change_membership`, the old id removed. Counted when every group committed it.
    ReplaceNode,
    /// A backup is taken mid-run through the public backup API (`steadfast backup`'s
    /// `fetch_group`/`assemble`), its images checked as linearizable reads of every key, then
    /// restored (`restore_into`, as `steadfast restore` does) into three fresh nodes of a new
    /// cluster, which must serve every backed-up session at its version, refuse creates of
    /// tombstoned ids, and issue versions above any the live cluster acknowledged. Counted when
    /// the restored cluster passed.
    BackupRestore,
}

impl FaultClass {
    /// Every class, in report order.
    pub const ALL: [FaultClass; 19] = [
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
        FaultClass::LeaderTailLoss,
        FaultClass::LargeSnapshot,
        FaultClass::ReplaceNode,
        FaultClass::BackupRestore,
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

/// Workload corners where the planted bugs live; a sweep reports how often each was reached
/// and fails if one never was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Corner {
    /// A rotation into another group succeeded (`RotateOut` then `RotateIn`).
    CrossGroupRotation,
    /// An op on a rotated-away id after its rotation completed.
    OpOnRotatedId,
    /// A login refused at the principal limit.
    LoginRefused,
    /// Two logins of one principal in flight at once.
    LoginsRacing,
    /// A read landing within 150 ms of the session's deadline.
    DeadlineRace,
    /// A read issued right after the old leader restarted alone after a power loss.
    ReadAfterRestart,
    /// RESP `RENAME` within one group succeeded.
    RenameSameGroup,
    /// RESP `RENAME` across groups (take out, put in) succeeded.
    RenameCrossGroup,
    /// RESP `RENAME` onto an existing key succeeded.
    RenameOntoExisting,
    /// RESP `RENAME` of a missing key answered "no such key".
    RenameMissing,
    /// RESP `RENAME` onto a key deleted within the grace period was refused.
    RenameRefused,
    /// A plain RESP `SET` right after `DEL` was refused within the grace period.
    SetWithinGrace,
    /// A plain RESP `SET` after the grace period (or with grace off) recreated a deleted key.
    SetAfterGrace,
    /// A read of a Redis key within 60 ms of its absolute deadline that still found it.
    KeyDeadlineRace,
}

impl Corner {
    /// Every corner, in report order.
    pub const ALL: [Corner; 14] = [
        Corner::CrossGroupRotation,
        Corner::OpOnRotatedId,
        Corner::LoginRefused,
        Corner::LoginsRacing,
        Corner::DeadlineRace,
        Corner::ReadAfterRestart,
        Corner::RenameSameGroup,
        Corner::RenameCrossGroup,
        Corner::RenameOntoExisting,
        Corner::RenameMissing,
        Corner::RenameRefused,
        Corner::SetWithinGrace,
        Corner::SetAfterGrace,
        Corner::KeyDeadlineRace,
    ];
}

impl fmt::Display for Corner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
