//! Identifiers: session ids, group ids, node ids and client ids.
//!
//! A [`SessionId`] is 128 bits from the OS CSPRNG, printed as 32 lowercase hex characters. It is
//! mapped to a Raft group by a stable hash (FNV-1a), so every node and client agrees on the
//! placement without talking to each other.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A node's id. openraft wants a bare `u64`, so this is an alias rather than a newtype.
pub type NodeId = u64;

/// A Raft group (a partition of the session space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// Identifies a client for exactly-once writes: `(client, seq)` names one logical write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// A session id: 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId([u8; 16]);

/// The printed length of a session id.
pub const SESSION_ID_CHARS: usize = 32;

impl SessionId {
    /// A fresh id from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    /// Builds an id from raw bytes (used by adapters whose frameworks mint their own ids, and by
    /// the simulation, whose ids come from its seeded RNG).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The group this id lives in, for a cluster of `groups` groups. Stable across releases:
    /// changing it would strand every stored session.
    pub fn group(&self, groups: u32) -> GroupId {
        assert!(groups > 0, "a cluster has at least one group");
        GroupId((fnv1a64(&self.0) % u64::from(groups)) as u32)
    }
}

/// The group that holds every session of `principal`. Co-locating a user's sessions makes the
/// per-user limit, "find all" and "log out everywhere" single-group, atomic operations.
pub fn principal_group(principal: &str, groups: u32) -> GroupId {
    assert!(groups > 0, "a cluster has at least one group");
    GroupId((fnv1a64(principal.as_bytes()) % u64::from(groups)) as u32)
}

impl SessionId {
    /// A fresh id from the OS CSPRNG that lives in `group` (rejection sampling: the id is
    /// uniform over that group's ids, i.e. 128 - log2(groups) bits of entropy).
    pub fn generate_in(group: GroupId, groups: u32) -> Self {
        loop {
            let id = SessionId::generate();
            if id.group(groups) == group {
                return id;
            }
        }
    }
}

/// FNV-1a, 64 bit: tiny, stable, and good enough to spread random ids evenly.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash over more bytes: `fnv1a64_extend(fnv1a64(a), b)` is the hash of
/// `a` followed by `b`.
pub fn fnv1a64_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// A string that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id: expected {SESSION_ID_CHARS} hex characters")]
pub struct ParseSessionIdError;

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != SESSION_ID_CHARS {
            return Err(ParseSessionIdError);
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseSessionIdError)?;
            let lo = hex_value(pair[1]).ok_or(ParseSessionIdError)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(SessionId(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_text() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), SESSION_ID_CHARS);
        assert_eq!(text.parse::<SessionId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<SessionId>(), Ok(id));
    }

    #[test]
    fn bad_session_ids_are_rejected() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"0".repeat(31),
            &"0".repeat(33),
            "é",
        ] {
            assert_eq!(
                bad.parse::<SessionId>(),
                Err(ParseSessionIdError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_ids_differ_and_spread_over_groups() {
        let mut seen = [0u32; 8];
        for _ in 0..800 {
            seen[SessionId::generate().group(8).0 as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread: {seen:?}");
        assert_ne!(SessionId::generate(), SessionId::generate());
    }
}
