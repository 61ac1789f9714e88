//! One stored session: its data and its timing, as the state machine keeps it and as it travels
//! in a cross-group rotation.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::limits;

pub mod byte_serde;
mod packed;

pub use packed::{Iter as PackedIter, PackedAttributes};

/// Attribute names mapped to opaque values.
pub type Attributes = BTreeMap<String, Vec<u8>>;

/// One stored session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The application's attributes, packed (serialized exactly as an [`Attributes`] map).
    pub attributes: PackedAttributes,
    /// Replicated time of creation.
    pub created_ms: u64,
    /// Replicated time of the last access (create, update or touch).
    pub accessed_ms: u64,
    /// Max-inactive interval.
    pub idle_timeout_ms: u64,
    /// Absolute deadline, if the session has a maximum lifetime.
    pub deadline_ms: Option<u64>,
    /// Version of the last change to this session's data ([`crate::command::version_at`]: its
    /// log index and position in that entry).
    pub version: u64,
    /// The user this session belongs to, if logged in.
    pub principal: Option<String>,
}

impl Session {
    /// The replicated time at which this session stops existing unless touched.
    pub fn expires_at_ms(&self) -> u64 {
        let idle = self.accessed_ms.saturating_add(self.idle_timeout_ms);
        self.deadline_ms.map_or(idle, |d| d.min(idle))
    }

    /// The bytes `attributes` count against [`limits::SESSION_BYTES_MAX`].
    pub fn encoded_bytes(attributes: &Attributes) -> usize {
        Self::counted_bytes(attributes.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// The bytes this session's attributes count against [`limits::SESSION_BYTES_MAX`].
    pub fn bytes(&self) -> usize {
        Self::counted_bytes(self.attributes.iter())
    }

    /// The bytes attributes count against [`limits::SESSION_BYTES_MAX`].
    pub fn counted_bytes<'a>(attributes: impl Iterator<Item = (&'a str, &'a [u8])>) -> usize {
        attributes
            .map(|(k, v)| k.len() + v.len() + limits::ATTRIBUTE_OVERHEAD_BYTES)
            .sum()
    }
}
