//! A [`tower_sessions_core::SessionStore`] (tower-sessions 0.15) backed by steadfast.
//!
//! ```no_run
//! # async fn demo(client: steadfast::Client) {
//! use steadfast::adapters::tower_sessions::SteadfastStore;
//! // with `tower-sessions = "0.15"` in the app:
//! // let layer = tower_sessions::SessionManagerLayer::new(SteadfastStore::new(client));
//! // let app = axum::Router::new().route(...).layer(layer);
//! let store = SteadfastStore::new(client);
//! # let _ = store;
//! # }
//! ```
//!
//! Mapping:
//! - tower's `Id(i128)` is steadfast's 16-byte [`SessionId`] (`i128::to_le_bytes`).
//! - Each key of `Record.data` is one steadfast attribute holding the rmp-serde (MessagePack)
//!   encoding of its `serde_json::Value` (postcard cannot decode a `Value`).
//! - `Record.expiry_date` is the session's absolute deadline, as with tower-sessions' own
//!   stores: reads do not extend it (the session has no idle timeout), so
//!   `Expiry::AtDateTime` ends at its date however often the session is read, and
//!   `Expiry::OnInactivity` moves when tower-sessions saves (a modifying request, or every
//!   request with `SessionManagerLayer::with_always_save(true)`: the cookie's max-age moves only
//!   then too). `create` sets it as the session's lifetime; a `save` that changes the date sets
//!   it anew (the state machine's absolute-deadline write, `EXPIREAT` for Redis keys). `load`
//!   reports the server's deadline, judged on the replicated clock.
//! - `create` is create-if-absent and picks a fresh id on a collision (or a tombstoned id);
//!   `save` updates an existing session only (like the Redis store's `SET XX`), writing the
//!   attribute delta against what this request loaded (see the `delta` module), and fails with a
//!   backend error if the session was deleted or expired meanwhile — it never re-creates it, so
//!   a logout racing a slow request stays a logout (tower-sessions answers that request 500).
//!   The trait has one error type for both, `Error::Backend`; [`save_failure`] tells a
//!   deleted session ([`SaveFailureKind::Gone`]) from a concurrent change to the same attribute
//!   ([`SaveFailureKind::Conflict`], under `ConflictPolicy::DetectSameAttribute`).
//! - `delete` is idempotent; `delete_expired` is a no-op (see [`ExpiredDeletion`] below).

#![expect(
    clippy::disallowed_types,
    reason = "tower-sessions' Record.data is a std HashMap; the trait dictates it"
)]

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use crate::adapters::delta::{store_type, SaveFailure, Snapshot};
use crate::adapters::{create_options, millis_at_least_one};
use crate::command::redis::{Expiry, RedisBatch, RedisOp, Reply};
use crate::command::{Attributes, Command, Outcome};
use crate::error::Error;
use crate::id::SessionId;
use crate::wire::{ClientRequest, RequestBody, ResponseBody};

/// How many fresh ids `create` tries after collisions before giving up.
const CREATE_ATTEMPTS: usize = 8;

/// Sessions of this store never idle out: their only deadline is the record's `expiry_date`.
const NO_IDLE_TIMEOUT: Duration = Duration::from_millis(u64::MAX);

/// How a failed `save` text begins, per kind (see [`save_failure`]).
const GONE_PREFIX: &str = "session gone: ";
const CONFLICT_PREFIX: &str = "session conflict: ";

/// Why a `save` failed, as far as the trait's one error type lets it say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveFailureKind {
    /// The session was deleted or expired while the request ran; it was not re-created (a
    /// logout won). Send the user to log in again.
    Gone,
    /// Another request changed an attribute this one changed too
    /// (`ConflictPolicy::DetectSameAttribute`); retry the request.
    Conflict,
}

/// What kind of failure a `SessionStore::save` error of this store is; `None` for others
/// (encoding, or the cluster unreachable).
pub fn save_failure(e: &session_store::Error) -> Option<SaveFailureKind> {
    match e {
        session_store::Error::Backend(text) if text.starts_with(GONE_PREFIX) => {
            Some(SaveFailureKind::Gone)
        }
        session_store::Error::Backend(text) if text.starts_with(CONFLICT_PREFIX) => {
            Some(SaveFailureKind::Conflict)
        }
        _ => None,
    }
}

store_type!(
    /// A tower-sessions store on a steadfast cluster. Cheap to clone.
    SteadfastStore
);

/// tower's id as steadfast's.
pub fn session_id(id: &Id) -> SessionId {
    SessionId::from_bytes(id.0.to_le_bytes())
}

/// steadfast's id as tower's.
pub fn tower_id(id: SessionId) -> Id {
    Id(i128::from_le_bytes(*id.as_bytes()))
}

fn backend(e: impl fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encode(data: &HashMap<String, serde_json::Value>) -> session_store::Result<Attributes> {
    data.iter()
        .map(|(k, v)| {
            rmp_serde::to_vec_named(v)
                .map(|bytes| (k.clone(), bytes))
                .map_err(|e| session_store::Error::Encode(format!("{k}: {e}")))
        })
        .collect()
}

fn decode(attributes: &Attributes) -> session_store::Result<HashMap<String, serde_json::Value>> {
    attributes
        .iter()
        .map(|(k, v)| {
            rmp_serde::from_slice(v)
                .map(|value| (k.clone(), value))
                .map_err(|e| session_store::Error::Decode(format!("{k}: {e}")))
        })
        .collect()
}

/// `expiry` in ms since the Unix epoch (0 before it).
fn unix_ms(expiry: OffsetDateTime) -> u64 {
    u64::try_from(expiry.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn datetime_ms(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Time left until `expiry`, or `None` if it has passed.
fn remaining(expiry: OffsetDateTime) -> Option<Duration> {
    let left = expiry - OffsetDateTime::now_utc();
    if left.is_positive() {
        Duration::try_from(left).ok().map(millis_at_least_one)
    } else {
        None
    }
}

#[async_trait]
impl SessionStore for SteadfastStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let attributes = encode(&record.data)?;
        let Some(lifetime) = remaining(record.expiry_date) else {
            // Born expired: nothing to store, and nothing a later load could return.
            return Ok(());
        };
        let options = create_options(Some(NO_IDLE_TIMEOUT), Some(lifetime));
        for _ in 0..CREATE_ATTEMPTS {
            let id = session_id(&record.id);
            match self
                .core
                .client
                .create_with_id(id, attributes.clone(), options.clone())
                .await
            {
                Ok(written) => {
                    self.core.loaded.remember(
                        id,
                        Snapshot {
                            version: written.version,
                            attributes,
                            // About the record's date (the lifetime counted on the server).
                            deadline_ms: Some(unix_ms(record.expiry_date)),
                        },
                    );
                    return Ok(());
                }
                // Taken, or recently deleted (tombstoned): never adopt it, draw another.
                Err(Error::Exists) => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend("no unused session id after several attempts"))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = session_id(&record.id);
        if remaining(record.expiry_date).is_none() {
            // Saved already expired: the session is over.
            self.core.loaded.take(id);
            return self.delete(&record.id).await;
        }
        let desired = encode(&record.data)?;
        let known_deadline = self.core.loaded.deadline(id);
        match self.core.save(id, desired, Some(NO_IDLE_TIMEOUT)).await {
            Ok(_) => {}
            Err(e @ SaveFailure::Gone) => return Err(backend(format!("{GONE_PREFIX}{e}"))),
            Err(e @ SaveFailure::Conflict { .. }) => {
                return Err(backend(format!("{CONFLICT_PREFIX}{e}")))
            }
            Err(SaveFailure::Store(e)) => return Err(backend(e)),
        }
        let deadline = unix_ms(record.expiry_date);
        if known_deadline != Some(deadline) {
            self.expire_at(id, deadline).await?;
        }
        self.core.loaded.set_deadline(id, deadline);
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let sid = session_id(id);
        let Some(view) = self.core.client.get(sid).await.map_err(backend)? else {
            return Ok(None);
        };
        let expiry_date = datetime_ms(view.expires_at_ms);
        // The cluster judged expiry on the replicated clock; also refuse what this host's clock
        // already considers expired, so a record never reaches tower-sessions past its date.
        if expiry_date <= OffsetDateTime::now_utc() {
            return Ok(None);
        }
        let data = decode(&view.attributes)?;
        // A session without an idle timeout has its deadline where a save would put it.
        let deadline_ms = view
            .deadline_ms
            .filter(|_| view.idle_timeout_ms == u64::MAX);
        self.core.loaded.remember(
            sid,
            Snapshot {
                version: view.version,
                attributes: view.attributes,
                deadline_ms,
            },
        );
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self.core.client.delete(session_id(id), None).await {
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

impl SteadfastStore {
    /// Sets the absolute deadline of `id` to `at_ms` (replicated time, ms since the Unix
    /// epoch): the state machine's `Expire` write, which Redis's `EXPIREAT` also makes. A
    /// session gone meanwhile is the same failure as in `save`.
    async fn expire_at(&self, id: SessionId, at_ms: u64) -> session_store::Result<()> {
        let client = &self.core.client;
        let batch = RedisBatch {
            watches: Vec::new(),
            ops: vec![RedisOp::Expire {
                id,
                expiry: Expiry::At(at_ms),
            }],
            delete_grace_ms: 0,
        };
        let body = RequestBody::Client(ClientRequest::Write {
            origin: client.next_origin(),
            command: Command::Redis(batch),
            namespace: client.namespace().to_string(),
        });
        let group = id.group(client.topology().groups);
        match client.call(group, body).await.map_err(backend)? {
            ResponseBody::Written(w) => match w.outcome {
                Outcome::Redis(Some(replies)) if replies == [Reply::Int(1)] => Ok(()),
                Outcome::Redis(Some(_)) => {
                    Err(backend(format!("{GONE_PREFIX}{}", SaveFailure::Gone)))
                }
                other => Err(backend(format!("unexpected outcome {other:?}"))),
            },
            other => Err(backend(format!("unexpected answer {other:?}"))),
        }
    }
}

#[async_trait]
impl ExpiredDeletion for SteadfastStore {
    /// A no-op that returns at once. steadfast expires sessions itself: each group's leader
    /// purges due sessions on the replicated clock (every `expire_tick_ms`), and a read never
    /// returns an expired session even before the purge. There is nothing for an app-side sweep
    /// to do, so `continuously_delete_expired` is safe to run but never needed.
    async fn delete_expired(&self) -> session_store::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_both_ways() {
        for _ in 0..100 {
            let id = Id::default();
            assert_eq!(tower_id(session_id(&id)), id);
        }
    }

    #[test]
    fn json_values_round_trip_through_messagepack() {
        let data: HashMap<String, serde_json::Value> = [
            ("n".to_string(), serde_json::json!(42)),
            (
                "cart".to_string(),
                serde_json::json!({"items": ["book", {"sku": 7, "qty": 1.5}], "gift": null}),
            ),
            ("s".to_string(), serde_json::json!("text")),
        ]
        .into();
        assert_eq!(
            decode(&encode(&data).expect("encode")).expect("decode"),
            data
        );
    }
}
