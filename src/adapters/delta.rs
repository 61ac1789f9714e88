//! Attribute deltas for the generic framework stores (tower-sessions, actix-session).
//!
//! Their traits hand `save`/`update` the *whole* session, not what changed. To write only the
//! changed attributes, a store remembers what `load` returned — per session id **and per tokio
//! task**, because both frameworks call `load` and `save` from the one task that serves the
//! request (hyper and actix-web run each connection, and each HTTP/2 stream, as its own task),
//! while two concurrent requests on the same session run in different tasks. A save then sends
//! `set` for attributes whose bytes differ from what this request loaded and `remove` for those
//! it dropped; attributes it did not touch are not sent, so a concurrent request's changes to
//! them survive.
//!
//! Without a snapshot (the save runs outside a tokio task, in another task than the load, or the
//! snapshot was evicted) the store falls back to a full set: it reads the current session and
//! replaces it with the record (last writer wins for the whole session, as with other stores).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::adapters::ConflictPolicy;
use crate::client::{Client, Update, Written};
use crate::command::Attributes;
use crate::error::Error;
use crate::id::SessionId;

/// What both generic stores are made of: the client, the snapshots their requests loaded, and
/// the conflict policy. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreCore {
    pub(crate) client: Client,
    pub(crate) loaded: std::sync::Arc<LoadedTable>,
    pub(crate) policy: ConflictPolicy,
}

impl StoreCore {
    pub(crate) fn new(client: Client) -> Self {
        StoreCore {
            client,
            loaded: std::sync::Arc::default(),
            policy: ConflictPolicy::MergeAttributes,
        }
    }

    /// Writes `desired` as the delta against what this request loaded for `id` (or a full set
    /// without a snapshot), and remembers the result as the new snapshot.
    pub(crate) async fn save(
        &self,
        id: SessionId,
        desired: Attributes,
        idle_timeout: Option<Duration>,
    ) -> Result<Written, SaveFailure> {
        let loaded = self.loaded.take(id);
        let deadline_ms = loaded.as_ref().and_then(|s| s.deadline_ms);
        let written = save_delta(
            &self.client,
            id,
            loaded,
            &desired,
            idle_timeout,
            self.policy,
        )
        .await?;
        self.loaded.remember(
            id,
            Snapshot {
                version: written.version,
                attributes: desired,
                deadline_ms,
            },
        );
        Ok(written)
    }

    /// `Debug` for the store named `name` (no session data, no secrets).
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("client_id", &self.client.client_id())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Declares a generic framework store: a cloneable wrapper of [`StoreCore`] with `new`,
/// `with_conflict_policy` and `client`, and a `Debug` that shows no session data.
macro_rules! store_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            core: $crate::adapters::delta::StoreCore,
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.core.debug(stringify!($name), f)
            }
        }

        impl $name {
            /// A store using `client`, merging concurrent changes at attribute level.
            pub fn new(client: $crate::client::Client) -> Self {
                $name {
                    core: $crate::adapters::delta::StoreCore::new(client),
                }
            }

            /// What a write does when a concurrent request changed the same attribute.
            pub fn with_conflict_policy(mut self, policy: $crate::adapters::ConflictPolicy) -> Self {
                self.core.policy = policy;
                self
            }

            /// The underlying client.
            pub fn client(&self) -> &$crate::client::Client {
                &self.core.client
            }
        }
    };
}
pub(crate) use store_type;

/// How many loaded snapshots a store keeps by default. Requests that load but never save (read
/// only) leave theirs behind until evicted, oldest first.
pub(crate) const SNAPSHOTS_MAX: usize = 1024;

/// The attributes a request loaded, and their version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub version: u64,
    pub attributes: Attributes,
    /// The session's absolute deadline as this request knows it (tower-sessions: a save that
    /// keeps the record's date needs no deadline write); `None` when not tracked.
    pub deadline_ms: Option<u64>,
}

type Key = (SessionId, tokio::task::Id);

/// Snapshots by (session, task), bounded, evicting the oldest.
#[derive(Debug)]
pub(crate) struct LoadedTable {
    capacity: usize,
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    entries: BTreeMap<Key, (u64, Snapshot)>,
    order: BTreeMap<u64, Key>,
    next: u64,
}

impl Default for LoadedTable {
    fn default() -> Self {
        Self::new(SNAPSHOTS_MAX)
    }
}

impl LoadedTable {
    pub(crate) fn new(capacity: usize) -> Self {
        LoadedTable {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// Remembers what the current task loaded for `id` (nothing outside a tokio task).
    pub(crate) fn remember(&self, id: SessionId, snapshot: Snapshot) {
        let Some(task) = tokio::task::try_id() else {
            return;
        };
        let mut t = self.inner.lock().expect("snapshot table lock");
        let seq = t.next;
        t.next += 1;
        if let Some((old, _)) = t.entries.insert((id, task), (seq, snapshot)) {
            t.order.remove(&old);
        }
        t.order.insert(seq, (id, task));
        while t.entries.len() > self.capacity {
            let Some((_, key)) = t.order.pop_first() else {
                break;
            };
            t.entries.remove(&key);
        }
    }

    /// The deadline the current task knows for `id`, leaving its snapshot in place.
    pub(crate) fn deadline(&self, id: SessionId) -> Option<u64> {
        let task = tokio::task::try_id()?;
        let t = self.inner.lock().expect("snapshot table lock");
        t.entries.get(&(id, task)).and_then(|(_, s)| s.deadline_ms)
    }

    /// Records `deadline_ms` in the current task's snapshot of `id`, if it has one.
    pub(crate) fn set_deadline(&self, id: SessionId, deadline_ms: u64) {
        let Some(task) = tokio::task::try_id() else {
            return;
        };
        let mut t = self.inner.lock().expect("snapshot table lock");
        if let Some((_, s)) = t.entries.get_mut(&(id, task)) {
            s.deadline_ms = Some(deadline_ms);
        }
    }

    /// Takes what the current task loaded for `id`.
    pub(crate) fn take(&self, id: SessionId) -> Option<Snapshot> {
        let task = tokio::task::try_id()?;
        let mut t = self.inner.lock().expect("snapshot table lock");
        let (seq, snapshot) = t.entries.remove(&(id, task))?;
        t.order.remove(&seq);
        Some(snapshot)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .expect("snapshot table lock")
            .entries
            .len()
    }
}

/// Why a delta save failed.
#[derive(Debug)]
pub(crate) enum SaveFailure {
    /// The session no longer exists (deleted or expired during the request). Not re-created.
    Gone,
    /// [`ConflictPolicy::DetectSameAttribute`]: another request changed this attribute.
    Conflict { key: String },
    /// Any other store error (`Timeout` = unknown outcome).
    Store(Error),
}

impl std::fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaveFailure::Gone => f.write_str(
                "the session was deleted or expired while the request ran; it is not re-created",
            ),
            SaveFailure::Conflict { key } => write!(
                f,
                "session attribute {key:?} was changed by a concurrent request"
            ),
            SaveFailure::Store(e) => write!(f, "steadfast: {e}"),
        }
    }
}

impl std::error::Error for SaveFailure {}

/// The `set`/`remove` that turns `base` into `desired`.
pub(crate) fn diff(base: &Attributes, desired: &Attributes) -> Update {
    let mut update = Update::default();
    for (k, v) in desired {
        if base.get(k) != Some(v) {
            update.set.insert(k.clone(), v.clone());
        }
    }
    for k in base.keys() {
        if !desired.contains_key(k) {
            update.remove.insert(k.clone());
        }
    }
    update
}

/// Makes the stored session `id` hold `desired` (plus whatever concurrent requests changed in
/// attributes this request did not touch), writing only the difference from `loaded`.
/// Returns the written version and what the request should consider loaded from now on.
pub(crate) async fn save_delta(
    client: &Client,
    id: SessionId,
    loaded: Option<Snapshot>,
    desired: &Attributes,
    idle_timeout: Option<Duration>,
    policy: ConflictPolicy,
) -> Result<Written, SaveFailure> {
    let base = match loaded {
        Some(s) => s,
        None => match client.get(id).await.map_err(SaveFailure::Store)? {
            Some(view) => Snapshot {
                version: view.version,
                attributes: view.attributes,
                deadline_ms: None,
            },
            None => return Err(SaveFailure::Gone),
        },
    };
    let mut update = diff(&base.attributes, desired);
    update.idle_timeout = idle_timeout;
    let mut expected = base.version;
    for _ in 0..CONFLICT_ROUNDS_MAX {
        if policy == ConflictPolicy::DetectSameAttribute {
            update.expected_version = Some(expected);
        }
        match client.update(id, update.clone()).await {
            Ok(w) => return Ok(w),
            Err(Error::NotFound) => return Err(SaveFailure::Gone),
            Err(Error::Conflict { .. }) => {
                let Some(now) = client.get(id).await.map_err(SaveFailure::Store)? else {
                    return Err(SaveFailure::Gone);
                };
                let touched = update.set.keys().chain(update.remove.iter());
                for key in touched {
                    if now.attributes.get(key) != base.attributes.get(key) {
                        return Err(SaveFailure::Conflict { key: key.clone() });
                    }
                }
                expected = now.version;
            }
            Err(e) => return Err(SaveFailure::Store(e)),
        }
    }
    Err(SaveFailure::Store(Error::Unavailable(
        "the session kept changing under a conditional save".into(),
    )))
}

/// Rounds of compare-and-set before giving up on a session that keeps changing.
pub(crate) const CONFLICT_ROUNDS_MAX: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn diff_sends_only_changes() {
        let base = attrs(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let desired = attrs(&[("a", "1"), ("b", "9"), ("d", "4")]);
        let u = diff(&base, &desired);
        assert_eq!(u.set, attrs(&[("b", "9"), ("d", "4")]));
        assert_eq!(
            u.remove.into_iter().collect::<Vec<_>>(),
            vec!["c".to_string()]
        );
    }

    #[tokio::test]
    async fn snapshots_are_per_task_and_bounded() {
        let table = std::sync::Arc::new(LoadedTable::new(2));
        let id = SessionId::from_bytes([1; 16]);
        let snap = |v| Snapshot {
            version: v,
            ..Snapshot::default()
        };
        assert!(
            table.take(id).is_none(),
            "the test body runs outside a task"
        );
        let t = table.clone();
        tokio::spawn(async move {
            t.remember(id, snap(1));
            let t2 = t.clone();
            tokio::spawn(async move {
                assert!(t2.take(id).is_none(), "another task's load is not ours");
            })
            .await
            .expect("inner task");
            assert_eq!(t.take(id).map(|s| s.version), Some(1));
            assert!(t.take(id).is_none(), "taken once");
            for n in 0..3u8 {
                t.remember(SessionId::from_bytes([n; 16]), snap(u64::from(n)));
            }
            assert_eq!(t.len(), 2, "bounded");
            assert!(
                t.take(SessionId::from_bytes([0; 16])).is_none(),
                "oldest evicted"
            );
        })
        .await
        .expect("task");
    }
}
