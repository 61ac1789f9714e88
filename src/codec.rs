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

/// Where a record can be streamed: it is written front to back, then its checksum is filled in.
pub trait WriteSeek: std::io::Write + std::io::Seek {}

impl<T: std::io::Write + std::io::Seek> WriteSeek for T {}

/// Encodes `value` as a checked record straight into `out` (from its current position), without
/// building the record in memory first: what snapshots of large states use. Decodes with
/// [`decode`] like any record.
pub fn encode_into<T: Serialize>(value: &T, out: &mut dyn WriteSeek) -> std::io::Result<()> {
    use std::io::{SeekFrom, Write};
    let start = out.stream_position()?;
    out.write_all(&[RECORD_FORMAT, 0, 0, 0, 0])?;
    let crc = {
        let mut body = ChecksumWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, &mut *out),
            hasher: crc32fast::Hasher::new(),
        };
        postcard::to_io(value, &mut body).map_err(std::io::Error::other)?;
        body.inner.flush()?;
        body.hasher.clone().finalize()
    };
    let end = out.stream_position()?;
    out.seek(SeekFrom::Start(start + 1))?;
    out.write_all(&crc.to_le_bytes())?;
    out.seek(SeekFrom::Start(end))?;
    Ok(())
}

/// Passes bytes through and checksums them.
struct ChecksumWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: std::io::Write> std::io::Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
    fn streamed_records_equal_encoded_ones() {
        let value = (7u64, "seven".repeat(100_000), vec![1u8; 3000]);
        let mut out = std::io::Cursor::new(b"prefix".to_vec());
        out.set_position(6);
        encode_into(&value, &mut out).expect("stream");
        let bytes = out.into_inner();
        assert_eq!(&bytes[..6], b"prefix");
        assert_eq!(bytes[6..], encode(&value)[..]);
    }

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
