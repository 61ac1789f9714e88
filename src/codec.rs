//! Checked binary records: a format version, a CRC-32 and a postcard body.
//!
//! Used for everything steadfast writes to disk (log entries, votes, snapshots, backups).
//! Decoding untrusted bytes never panics: the version, the length and the checksum are checked
//! before the body is parsed, and postcard's own allocations are bounded by the input length.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record format this build writes.
pub const RECORD_FORMAT: u8 = 1;
const HEADER_BYTES: usize = 5;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header. The record was cut short (torn write or truncated file).
    #[error("record truncated: {0} bytes")]
    Truncated(usize),
    /// Written by a format this build does not read.
    #[error("unsupported record format {0}")]
    Format(u8),
    /// The checksum does not match: the bytes were damaged.
    #[error("record checksum mismatch")]
    Checksum,
    /// Larger than the caller's limit.
    #[error("record of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The body does not parse.
    #[error("malformed record body: {0}")]
    Body(String),
}

/// Encodes `value` as a checked record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(value).expect("in-memory values always encode");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a checked record of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len(),
            limit,
        });
    }
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[0] != RECORD_FORMAT {
        return Err(DecodeError::Format(bytes[0]));
    }
    let crc = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let body = &bytes[HEADER_BYTES..];
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Checksum);
    }
    postcard::from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&(7u64, "seven".to_string()));
        assert_eq!(
            decode::<(u64, String)>(&bytes, 1024),
            Ok((7, "seven".into()))
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode::<(u64, String)>(&bad, 1024).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(
                decode::<(u64, String)>(&bytes[..n], 1024).is_err(),
                "cut at {n}"
            );
        }
        assert!(matches!(
            decode::<(u64, String)>(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
