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
    /// The record could not be read from its stream.
    #[error("record unreadable: {0}")]
    Io(String),
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
    check_size(bytes.len(), limit)?;
    let (header, body) = bytes.split_at(HEADER_BYTES);
    let crc = header_crc(header)?;
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Checksum);
    }
    postcard::from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))
}

/// The largest string or byte string a streamed record may hold: nothing in a record is larger
/// than the frame that brought it.
const STREAM_SCRATCH_BYTES: usize = crate::limits::FRAME_BYTES_MAX;

/// Decodes a checked record of `len` bytes from `reader` without holding the record in memory:
/// what a restart reads large snapshots with. The body is parsed as it streams (bounded as in
/// [`decode`]: postcard's allocations follow the bytes actually read) and the checksum is
/// verified at its end, so a damaged record is refused, only later than [`decode`] refuses it.
pub fn decode_from<T: DeserializeOwned>(
    mut reader: impl std::io::Read,
    len: u64,
    limit: usize,
) -> Result<T, DecodeError> {
    let bytes = usize::try_from(len).unwrap_or(usize::MAX);
    check_size(bytes, limit)?;
    let mut header = [0u8; HEADER_BYTES];
    reader
        .read_exact(&mut header)
        .map_err(|e| DecodeError::Io(e.to_string()))?;
    let crc = header_crc(&header)?;
    let body_len = len - HEADER_BYTES as u64;
    // Checksummed in large reads beneath the buffer: postcard pulls single bytes from the top.
    // Neither buffer need be larger than the record (nothing in it is longer than it).
    let bounded = |cap: usize| cap.min(bytes);
    let mut body = std::io::BufReader::with_capacity(
        bounded(1 << 20),
        ChecksumReader {
            inner: reader.take(body_len),
            hasher: crc32fast::Hasher::new(),
            read: 0,
        },
    );
    let mut scratch = vec![0u8; bounded(STREAM_SCRATCH_BYTES)];
    let parsed = postcard::from_io::<T, _>((&mut body, &mut scratch[..]))
        .map(|(value, _)| value)
        .map_err(|e| DecodeError::Body(e.to_string()));
    // The rest of the body counts towards the checksum (and a parse error may be damage).
    std::io::copy(&mut body, &mut std::io::sink()).map_err(|e| DecodeError::Io(e.to_string()))?;
    let body = body.into_inner();
    if body.read != body_len {
        return Err(DecodeError::Truncated(HEADER_BYTES + body.read as usize));
    }
    if body.hasher.finalize() != crc {
        return Err(DecodeError::Checksum);
    }
    parsed
}

/// Refuses a record of `bytes` over `limit` or shorter than a header.
fn check_size(bytes: usize, limit: usize) -> Result<(), DecodeError> {
    if bytes > limit {
        return Err(DecodeError::TooLarge { bytes, limit });
    }
    if bytes < HEADER_BYTES {
        return Err(DecodeError::Truncated(bytes));
    }
    Ok(())
}

/// The body checksum a record's header carries, if this build reads its format.
fn header_crc(header: &[u8]) -> Result<u32, DecodeError> {
    match *header {
        [RECORD_FORMAT, a, b, c, d] => Ok(u32::from_le_bytes([a, b, c, d])),
        [format, ..] => Err(DecodeError::Format(format)),
        [] => Err(DecodeError::Truncated(0)),
    }
}

/// Passes bytes through, checksums and counts them.
struct ChecksumReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
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
    fn streamed_decoding_equals_decoding_and_detects_damage() {
        // More string bytes than the scratch buffer holds: each is read into it in turn.
        let value: Vec<String> = (0..2_500)
            .map(|i| format!("{i:04}").repeat(1_000))
            .collect();
        let bytes = encode(&value);
        assert!(bytes.len() > 2 * STREAM_SCRATCH_BYTES);
        let read = |b: &[u8], len: u64| decode_from::<Vec<String>>(b, len, usize::MAX);
        assert_eq!(read(&bytes, bytes.len() as u64), Ok(value));
        for i in [0, 1, 4, 5, 6, 1000, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(read(&bad, bad.len() as u64).is_err(), "flip at {i}");
        }
        let short = &bytes[..bytes.len() - 1];
        assert!(read(short, bytes.len() as u64).is_err(), "truncated stream");
        assert!(read(short, short.len() as u64).is_err(), "truncated record");
        assert!(matches!(
            decode_from::<Vec<String>>(&bytes[..], bytes.len() as u64, 1000),
            Err(DecodeError::TooLarge { .. })
        ));
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
