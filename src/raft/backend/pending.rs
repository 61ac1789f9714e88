//! Log entries that are in the journal but not yet in sled.
//!
//! Most log entries are purged (after a snapshot) within seconds of being written. The journal
//! already makes an entry durable, so [`SledBackend`](super::SledBackend) keeps journalled
//! entries here, in memory, and a checkpoint moves only the ones still in the log into sled
//! before it deletes the journal segment that held them: an entry purged or truncated before
//! its checkpoint never costs a sled insert.

use std::collections::BTreeMap;

use super::{remove_covered, WriteOp};
use crate::id::GroupId;

/// Journalled log entries by group and index.
#[derive(Debug, Default)]
pub struct PendingLog {
    groups: BTreeMap<GroupId, BTreeMap<u64, Vec<u8>>>,
}

impl PendingLog {
    /// Adds a group's entries (replacing any at the same indexes).
    pub fn append(&mut self, group: GroupId, entries: Vec<(u64, Vec<u8>)>) {
        self.groups.entry(group).or_default().extend(entries);
    }

    /// Applies what a journalled truncation or purge removes; other writes change nothing here.
    pub fn remove(&mut self, group: GroupId, op: &WriteOp) {
        let Some(entries) = self.groups.get_mut(&group) else {
            return;
        };
        remove_covered(entries, op);
        if entries.is_empty() {
            self.groups.remove(&group);
        }
    }

    /// Moves `newer`'s entries in; where both hold an index, `newer`'s entry wins.
    pub fn merge(&mut self, newer: PendingLog) {
        for (group, mut entries) in newer.groups {
            self.groups.entry(group).or_default().append(&mut entries);
        }
    }

    /// Lays copies of the group's entries with `start <= index < end` over `out`.
    pub fn lay_over(&self, group: GroupId, start: u64, end: u64, out: &mut BTreeMap<u64, Vec<u8>>) {
        if let Some(entries) = self.groups.get(&group) {
            if start < end {
                out.extend(entries.range(start..end).map(|(i, e)| (*i, e.clone())));
            }
        }
    }

    /// Copies of the first `n` entries in (group, index) order.
    pub fn first(&self, n: usize) -> Vec<(GroupId, u64, Vec<u8>)> {
        self.groups
            .iter()
            .flat_map(|(group, entries)| entries.iter().map(|(i, e)| (*group, *i, e.clone())))
            .take(n)
            .collect()
    }

    /// Drops one entry, if it is still here.
    pub fn forget(&mut self, group: GroupId, index: u64) {
        if let Some(entries) = self.groups.get_mut(&group) {
            entries.remove(&index);
            if entries.is_empty() {
                self.groups.remove(&group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pending: &PendingLog, group: u32) -> Vec<(u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        pending.lay_over(GroupId(group), 0, u64::MAX, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn truncation_and_purge_remove_only_their_group_and_range() {
        let mut p = PendingLog::default();
        p.append(GroupId(1), (1..=6).map(|i| (i, vec![i as u8])).collect());
        p.append(GroupId(2), vec![(3, b"x".to_vec())]);
        p.remove(GroupId(1), &WriteOp::PurgeUpTo(2));
        p.remove(GroupId(1), &WriteOp::TruncateFrom(5));
        p.remove(
            GroupId(1),
            &WriteOp::Meta(super::super::MetaKey::Vote, vec![]),
        );
        let got: Vec<u64> = entries(&p, 1).into_iter().map(|(i, _)| i).collect();
        assert_eq!(got, vec![3, 4]);
        assert_eq!(entries(&p, 2), vec![(3, b"x".to_vec())]);
        p.remove(GroupId(2), &WriteOp::PurgeUpTo(u64::MAX));
        assert_eq!(p.first(10).len(), 2, "group 2 is gone, group 1 keeps two");
    }

    #[test]
    fn merged_newer_entries_win_and_forgotten_ones_go() {
        let mut older = PendingLog::default();
        older.append(GroupId(0), vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
        let mut newer = PendingLog::default();
        newer.append(GroupId(0), vec![(2, b"B".to_vec()), (3, b"C".to_vec())]);
        older.merge(newer);
        assert_eq!(
            older.first(10),
            vec![
                (GroupId(0), 1, b"a".to_vec()),
                (GroupId(0), 2, b"B".to_vec()),
                (GroupId(0), 3, b"C".to_vec())
            ]
        );
        for i in 1..=3 {
            older.forget(GroupId(0), i);
        }
        assert!(older.first(1).is_empty());
    }
}
