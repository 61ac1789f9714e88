//! The node's write-ahead journal: every backend write, for every group, in one append-only file,
//! so one `write` and one `fdatasync` make a whole round of appends and votes durable.
//!
//! sled stays the store that is read (its trees are what a node loads and reads old log entries
//! from), but it is no longer on the durability path: a write reaches sled only *after* the
//! journal made it durable, and sled is flushed only at a checkpoint, off the hot path. sled's
//! own flush (its IO threads, `pwrite` + `sync_file_range`, and the futex traffic between them)
//! cost more CPU per write than everything else a node does.
//!
//! Recovery replays the journal over sled. That is correct because sled never holds a write the
//! journal does not (so nothing newer can be rolled back to a mix), and every journalled write is
//! a blind set or delete of keys: replaying them in order over any state that already holds some
//! of them ends in the state the journal describes.
//!
//! A segment file is `journal-<n>.log`: an 8-byte magic, then records of
//! `len: u32 LE | crc32(payload): u32 LE | payload`. A torn or unchecked record ends the newest
//! segment (a crash mid-write); in an older segment it is corruption and opening refuses.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::id::GroupId;
use crate::raft::backend::{MetaKey, WriteOp};

const MAGIC: &[u8; 8] = b"SFJRNL01";
const HEADER_BYTES: usize = 8;
/// A segment this large is closed at the next sync and a checkpoint started.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A segment file larger than this is refused at replay (it was not written by us).
const SEGMENT_FILE_BYTES_MAX: u64 = 4 * SEGMENT_BYTES;

/// The segment being appended to.
pub struct Segment {
    file: File,
    number: u64,
    bytes: u64,
}

impl Segment {
    /// Creates segment `number` in `dir` (durably: the file and its directory entry).
    pub fn create(dir: &Path, number: u64) -> io::Result<Segment> {
        let path = segment_path(dir, number);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            file,
            number,
            bytes: HEADER_BYTES as u64,
        })
    }

    /// Appends `bytes` (whole records) and makes them durable.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// This segment's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Whether this segment holds at least `limit` bytes (then it is closed).
    pub fn is_full(&self, limit: u64) -> bool {
        self.bytes >= limit
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("journal-{number:020}.log"))
}

/// The segment numbers in `dir`, ascending.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("journal-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Removes segments numbered `up_to` and below (their writes are durable elsewhere).
pub fn remove_up_to(dir: &Path, up_to: u64) -> io::Result<()> {
    for n in segments(dir)? {
        if n <= up_to {
            std::fs::remove_file(segment_path(dir, n))?;
        }
    }
    File::open(dir)?.sync_all()
}

/// What [`replay`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The newest segment number seen (0 if none).
    pub last_segment: u64,
    /// Records applied.
    pub records: u64,
    /// Whether the newest segment ended in a torn record (a crash mid-write).
    pub torn_tail: bool,
}

/// Applies every record of every segment in `dir`, oldest first.
pub fn replay(
    dir: &Path,
    mut apply: impl FnMut(GroupId, WriteOp) -> io::Result<()>,
) -> io::Result<Replayed> {
    let numbers = segments(dir)?;
    let mut out = Replayed::default();
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment_path(dir, n);
        let len = std::fs::metadata(&path)?.len();
        if len > SEGMENT_FILE_BYTES_MAX {
            return Err(invalid(format!(
                "{} is {len} bytes, more than a journal segment can be",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path)?;
        let newest = i + 1 == numbers.len();
        let torn = replay_segment(&bytes, &path, &mut apply, &mut out.records)?;
        if torn && !newest {
            return Err(invalid(format!(
                "{} is damaged before its end and a newer segment follows it; \
                 the journal cannot be trusted",
                path.display()
            )));
        }
        out.torn_tail = torn;
        out.last_segment = n;
    }
    Ok(out)
}

/// Applies one segment's records; whether it ended in a torn record.
fn replay_segment(
    bytes: &[u8],
    path: &Path,
    apply: &mut impl FnMut(GroupId, WriteOp) -> io::Result<()>,
    records: &mut u64,
) -> io::Result<bool> {
    if bytes.len() < HEADER_BYTES {
        // Created but its header never became durable: nothing was written after it.
        return Ok(!bytes.is_empty());
    }
    if &bytes[..HEADER_BYTES] != MAGIC {
        return Err(invalid(format!(
            "{} is not a steadfast journal segment",
            path.display()
        )));
    }
    let mut rest = &bytes[HEADER_BYTES..];
    while !rest.is_empty() {
        let Some((payload, after)) = next_record(rest) else {
            return Ok(true);
        };
        let (group, op) = decode(payload).map_err(|why| {
            invalid(format!(
                "{}: a checksummed record does not decode ({why})",
                path.display()
            ))
        })?;
        apply(group, op)?;
        *records += 1;
        rest = after;
    }
    Ok(false)
}

/// The next whole, checksummed record's payload and what follows it; `None` if torn.
fn next_record(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if len == 0 {
        // No record is empty: this is a zero-filled tail (space the file system allocated for a
        // write that never landed), whose checksum of nothing would otherwise match.
        return None;
    }
    let crc = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
    let payload = rest.get(8..8usize.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then(|| (payload, &rest[8 + len..]))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Appends `op` on `group` to `out` as one record.
pub fn encode(out: &mut Vec<u8>, group: GroupId, op: &WriteOp) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&group.0.to_le_bytes());
    match op {
        WriteOp::Meta(key, value) => {
            out.push(0);
            out.push(meta_tag(*key));
            put_bytes(out, value);
        }
        WriteOp::Append(entries) => {
            out.push(1);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (index, bytes) in entries {
                out.extend_from_slice(&index.to_le_bytes());
                put_bytes(out, bytes);
            }
        }
        WriteOp::TruncateFrom(index) => {
            out.push(2);
            out.extend_from_slice(&index.to_le_bytes());
        }
        WriteOp::PurgeUpTo(index) => {
            out.push(3);
            out.extend_from_slice(&index.to_le_bytes());
        }
    }
    let payload = &out[start + 8..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn meta_tag(key: MetaKey) -> u8 {
    match key {
        MetaKey::Vote => 0,
        MetaKey::Committed => 1,
        MetaKey::Purged => 2,
    }
}

/// Decodes one record's payload (bounded by its length).
pub fn decode(payload: &[u8]) -> Result<(GroupId, WriteOp), &'static str> {
    let mut r = Reader(payload);
    let group = GroupId(r.u32()?);
    let op = match r.u8()? {
        0 => {
            let key = match r.u8()? {
                0 => MetaKey::Vote,
                1 => MetaKey::Committed,
                2 => MetaKey::Purged,
                _ => return Err("unknown metadata key"),
            };
            WriteOp::Meta(key, r.bytes()?.to_vec())
        }
        1 => {
            let n = r.u32()? as usize;
            // Each entry takes at least 12 bytes: a count past that is a lie.
            if n > r.0.len() / 12 {
                return Err("entry count exceeds the record");
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let index = r.u64()?;
                entries.push((index, r.bytes()?.to_vec()));
            }
            WriteOp::Append(entries)
        }
        2 => WriteOp::TruncateFrom(r.u64()?),
        3 => WriteOp::PurgeUpTo(r.u64()?),
        _ => return Err("unknown operation"),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok((group, op))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("record ends early");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<(GroupId, WriteOp)> {
        vec![
            (GroupId(0), WriteOp::Meta(MetaKey::Vote, b"v1".to_vec())),
            (
                GroupId(7),
                WriteOp::Append(vec![(1, b"a".to_vec()), (2, vec![0xff; 300])]),
            ),
            (GroupId(7), WriteOp::TruncateFrom(2)),
            (GroupId(7), WriteOp::PurgeUpTo(1)),
            (GroupId(1), WriteOp::Meta(MetaKey::Committed, vec![])),
        ]
    }

    fn written(dir: &Path, ops: &[(GroupId, WriteOp)]) -> Vec<u8> {
        let mut seg = Segment::create(dir, 1).expect("create");
        let mut buf = Vec::new();
        for (g, op) in ops {
            encode(&mut buf, *g, op);
        }
        seg.append(&buf).expect("append");
        buf
    }

    fn replayed(dir: &Path) -> io::Result<(Vec<(GroupId, WriteOp)>, Replayed)> {
        let mut got = Vec::new();
        let r = replay(dir, |g, op| {
            got.push((g, op));
            Ok(())
        })?;
        Ok((got, r))
    }

    #[test]
    fn records_round_trip_through_a_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), &ops());
        let (got, r) = replayed(dir.path()).expect("replay");
        assert_eq!(got, ops());
        assert_eq!((r.records, r.torn_tail, r.last_segment), (5, false, 1));
    }

    #[test]
    fn a_torn_tail_ends_the_newest_segment_at_the_last_whole_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buf = written(dir.path(), &ops());
        let path = segment_path(dir.path(), 1);
        // Every cut inside the records keeps exactly the records wholly before it.
        let mut ends = vec![0];
        let mut rest = &buf[..];
        while let Some((_, after)) = next_record(rest) {
            ends.push(buf.len() - after.len());
            rest = after;
        }
        let whole_file = std::fs::read(&path).expect("read");
        for cut in 0..buf.len() {
            std::fs::write(&path, &whole_file[..HEADER_BYTES + cut]).expect("cut");
            let (got, r) = replayed(dir.path()).expect("replay");
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(got, ops()[..whole], "cut at {cut}");
            assert_eq!(r.torn_tail, !ends.contains(&cut), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_is_caught_and_damage_before_a_newer_segment_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), &ops());
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER_BYTES + 10] ^= 0x10; // inside the first record's payload
        std::fs::write(&path, &bytes).expect("write");
        let (got, r) = replayed(dir.path()).expect("newest segment: a torn tail");
        assert!(got.is_empty() && r.torn_tail);
        Segment::create(dir.path(), 2).expect("newer segment");
        let e = replayed(dir.path()).expect_err("damage before a newer segment");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn checksummed_garbage_is_refused_not_applied() {
        let mut out = Vec::new();
        encode(&mut out, GroupId(1), &WriteOp::TruncateFrom(3));
        let (payload, _) = next_record(&out).expect("record");
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut {cut}");
        }
        let mut lying = payload.to_vec();
        lying[4] = 1; // Append
        lying.truncate(5);
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&lying), Err("entry count exceeds the record"));
        assert!(decode(&[0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn a_zero_filled_tail_is_the_end_not_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), &ops());
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &bytes).expect("write");
        let (got, r) = replayed(dir.path()).expect("replay");
        assert_eq!(got, ops());
        assert!(r.torn_tail);
    }

    #[test]
    fn removing_keeps_newer_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [3, 4, 5] {
            Segment::create(dir.path(), n).expect("create");
        }
        remove_up_to(dir.path(), 4).expect("remove");
        assert_eq!(segments(dir.path()).expect("list"), vec![5]);
    }
}
