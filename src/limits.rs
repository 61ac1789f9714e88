//! Every limit in one place (TigerBeetle's "put a limit on everything").
//!
//! Decoders check lengths against these before allocating; the state machine refuses commands
//! that would exceed them with a typed error.

/// The largest encoded session (attribute names + values + per-attribute overhead). Kept well
/// below sled's ~128 KiB blob threshold: blobs are written without fsync (DESIGN §5).
pub const SESSION_BYTES_MAX: usize = 64 * 1024;
/// Per-attribute bookkeeping counted against [`SESSION_BYTES_MAX`].
pub const ATTRIBUTE_OVERHEAD_BYTES: usize = 16;
/// The most attributes one session may hold.
pub const ATTRIBUTES_MAX: usize = 1024;
/// The shortest attribute name of a native session: an empty name is refused (Redis hash
/// fields, stored as attributes too, may be empty as in Redis).
pub const ATTRIBUTE_NAME_BYTES_MIN: usize = 1;
/// The longest attribute name.
pub const ATTRIBUTE_NAME_BYTES_MAX: usize = 256;
/// The largest frame on the wire: a snapshot chunk plus headroom.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most request bytes (approximately: attribute names and values) packed into one log entry.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// The most request bytes one write may carry; a larger one is refused before it is proposed
/// (the state machine would refuse it anyway, see [`SESSION_BYTES_MAX`]).
pub const REQUEST_BYTES_MAX: usize = 2 * SESSION_BYTES_MAX;
/// The most entry bytes (approximately) sent in one AppendEntries request.
pub const APPEND_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;
/// Decoded log entries a group keeps in memory (its newest); older ones are read from disk.
pub const LOG_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// A group snapshots once the log applied since its last snapshot outweighs its sessions, or
/// this many bytes, whichever is more (compaction by size).
pub const COMPACT_LOG_BYTES_MIN: u64 = 8 * 1024 * 1024;
/// Snapshot chunks sent by openraft; must fit in a frame.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Requests one connection may have in flight on the server before it stops reading.
pub const CONNECTION_REQUESTS_INFLIGHT_MAX: usize = 4096;
/// Remembered `(client, seq)` results per group, for exactly-once retries.
pub const DEDUP_ENTRIES_MAX: usize = 100_000;
/// How long (in replicated time) a write's result is remembered for retries.
pub const DEDUP_RETENTION_MS: u64 = 10 * 60 * 1000;
/// How long a deleted or expired id is remembered so it cannot be created again.
pub const TOMBSTONE_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// The most tombstones per group; the oldest are forgotten first.
pub const TOMBSTONES_MAX: usize = 1_000_000;
/// The most sessions one `Expire` entry purges, and the most tombstones it forgets: a mass
/// expiry (a million sessions created in one burst) is spread over entries with other writes
/// between them, instead of one apply that holds a replica's only thread for seconds. Expired
/// sessions are never served meanwhile (reads judge deadlines by the replicated clock).
pub const EXPIRE_PER_ENTRY_MAX: usize = 4096;
/// Events retained per group for watchers; older ones are compacted away.
pub const EVENTS_RETAINED: usize = 4096;
/// Events returned by one watch call.
pub const EVENTS_PER_WATCH_MAX: usize = 512;
/// The most groups a cluster may have.
pub const GROUPS_MAX: u32 = 1024;
/// The largest piece of a backup image sent in one response.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;
/// Backup images a group's leader keeps at once while they are fetched (a memory bound).
pub const BACKUP_IMAGES_HELD_MAX: usize = 2;
/// The most voters one group may have.
pub const VOTERS_MAX: usize = 7;
/// The longest node address accepted in a membership change.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// The largest snapshot or backup image accepted from disk or the network.
pub const SNAPSHOT_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024 - 1;
/// Sessions one Redis SCAN batch visits at most in a group (a COUNT above is capped).
pub const REDIS_SCAN_VISIT_MAX: usize = 10_000;
/// The longest RESP request the RESP listener buffers (one command with all its arguments).
pub const RESP_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// The most arguments one RESP command may have.
pub const RESP_ARGS_MAX: usize = 4096;
/// The longest inline (telnet-style) RESP command line.
pub const RESP_INLINE_BYTES_MAX: usize = 64 * 1024;
/// The longest Redis key name (it is stored in the key's session).
pub const REDIS_KEY_BYTES_MAX: usize = 1024;
/// Commands one `MULTI` may queue.
pub const REDIS_MULTI_COMMANDS_MAX: usize = 1024;
/// Keys one connection may `WATCH`.
pub const REDIS_WATCHED_KEYS_MAX: usize = 256;
/// RESP connections one node serves at once; more are refused with an error.
pub const RESP_CONNECTIONS_MAX: usize = 4096;
/// Channels plus patterns one RESP connection may subscribe to.
pub const RESP_SUBSCRIPTIONS_MAX: usize = 1024;
/// The longest channel name or pattern a RESP connection may subscribe to.
pub const RESP_CHANNEL_BYTES_MAX: usize = REDIS_KEY_BYTES_MAX + 64;
/// Keyspace notifications buffered for a node's subscribers; a subscriber further behind is
/// disconnected (as Redis disconnects a pub/sub client over its output buffer limit).
pub const RESP_NOTIFICATIONS_BUFFERED: usize = 16 * 1024;

const _: () = assert!(FRAME_BYTES_MAX > SESSION_BYTES_MAX * 2);
const _: () = assert!(APPEND_BYTES_MAX >= BATCH_BYTES_MAX + REQUEST_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX > SNAPSHOT_CHUNK_BYTES + 64 * 1024);
const _: () = assert!(FRAME_BYTES_MAX > BACKUP_CHUNK_BYTES + 64 * 1024);
