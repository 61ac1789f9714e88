//! Deliberately planted bugs, to prove the simulation catches each class of bug it is for
//! (sim/README.md, "The suite has teeth"). They exist only in builds with the `teeth` feature,
//! and even there only the one bug planted at start (`plant`) is active; without the feature
//! [`planted`] is a constant `false` and every planted branch compiles away.
//!
//! One build carries every bug so CI builds the teeth binary once, not once per bug.

/// A planted bug; [`Bug::name`] is the name `steadfast-sim --plant` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Reads served from the local replica without ReadIndex.
    StaleReads,
    /// Appends acknowledged before the log is durable.
    EarlyAck,
    /// Votes not made durable.
    VolatileVote,
    /// Each leader's own clock decides expiry (no monotonic replicated clock).
    LocalClock,
    /// A restarted leader resumes its old term on its remembered (committed) vote.
    ResumeLeadership,
    /// The first step of a rotation across groups (RotateOut) leaves the old id alive.
    RotateOutKeepsOld,
    /// The per-principal limit check is off by one under `refuse`.
    PrincipalLimit,
    /// A batched touch sets the read time as is, moving a newer access time backwards.
    TouchBackwards,
    /// A late batched touch extends a session that already expired.
    TouchRevives,
    /// `get` returns a session past its idle deadline (expiry enforced only by the purge).
    ExpiredGet,
    /// Reads skip the leader's barrier entry in its term; implies [`Bug::ResumeLeadership`],
    /// the old-term resumption the barrier guards against.
    ReadBarrier,
    /// A refused cross-group RENAME puts the source back under the grace period (which
    /// refuses it).
    RenamePutBackGrace,
}

impl Bug {
    /// Every planted bug, in the order `--list-bugs` prints them.
    pub const ALL: [Bug; 12] = [
        Bug::StaleReads,
        Bug::EarlyAck,
        Bug::VolatileVote,
        Bug::LocalClock,
        Bug::ResumeLeadership,
        Bug::RotateOutKeepsOld,
        Bug::PrincipalLimit,
        Bug::TouchBackwards,
        Bug::TouchRevives,
        Bug::ExpiredGet,
        Bug::ReadBarrier,
        Bug::RenamePutBackGrace,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::StaleReads => "stale-reads",
            Bug::EarlyAck => "early-ack",
            Bug::VolatileVote => "volatile-vote",
            Bug::LocalClock => "local-clock",
            Bug::ResumeLeadership => "resume-leadership",
            Bug::RotateOutKeepsOld => "rotate-out-keeps-old",
            Bug::PrincipalLimit => "principal-limit",
            Bug::TouchBackwards => "touch-backwards",
            Bug::TouchRevives => "touch-revives",
            Bug::ExpiredGet => "expired-get",
            Bug::ReadBarrier => "read-barrier",
            Bug::RenamePutBackGrace => "rename-put-back-grace",
        }
    }

    /// The bug of that name.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(feature = "teeth")]
static PLANTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

/// Plants `bug` for the rest of the process (a teeth build only; call before any node starts).
#[cfg(feature = "teeth")]
pub fn plant(bug: Bug) {
    let index = Bug::ALL
        .iter()
        .position(|b| *b == bug)
        .unwrap_or(usize::MAX);
    PLANTED.store(index, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `bug` is planted in this process: always `false` without the `teeth` feature.
#[inline]
pub fn planted(bug: Bug) -> bool {
    #[cfg(feature = "teeth")]
    {
        let planted = Bug::ALL
            .get(PLANTED.load(std::sync::atomic::Ordering::Relaxed))
            .copied();
        planted == Some(bug) || (bug == Bug::ResumeLeadership && planted == Some(Bug::ReadBarrier))
    }
    #[cfg(not(feature = "teeth"))]
    {
        let _ = bug;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_is_planted_by_default() {
        for bug in Bug::ALL {
            assert_eq!(Bug::from_name(bug.name()), Some(bug));
            assert!(!planted(bug), "{bug:?} planted without being asked for");
        }
        assert_eq!(Bug::from_name("no-such-bug"), None);
    }
}
