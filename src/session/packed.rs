//! A session's attributes as the state machine keeps them: one allocation holding every
//! `(name, value)` pair in name order.
//!
//! A `BTreeMap<String, Vec<u8>>` costs a 544-byte node plus two allocations per attribute before
//! the first value byte; at a million one-attribute sessions that was half a gigabyte. Packed,
//! a session's attributes are one buffer: `u32` name length, name, `u32` value length, value, for
//! each attribute, names strictly increasing. They serialize exactly as the map does (a map of
//! strings to byte strings: postcard writes a `Vec<u8>` and a byte string alike), so snapshots,
//! backups and the wire keep their format, and decoding copies each value once instead of
//! pushing it byte by byte.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::byte_serde::ByteStr;
use super::Attributes;

/// Attribute names mapped to opaque values, packed in one buffer (see the module docs).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PackedAttributes {
    /// Per attribute: name length (`u32` LE), name, value length (`u32` LE), value; names
    /// strictly increasing.
    buf: Box<[u8]>,
}

/// The bytes a length prefix takes.
const LEN_BYTES: usize = 4;

impl PackedAttributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The attributes in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.buf }
    }

    /// The attribute names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        for (n, value) in self.iter() {
            match n.cmp(name) {
                Ordering::Less => continue,
                Ordering::Equal => return Some(value),
                Ordering::Greater => return None,
            }
        }
        None
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The attributes as a map.
    pub fn to_map(&self) -> Attributes {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect()
    }

    /// These attributes with `remove` removed, then `set` set (in one pass over both).
    pub fn with_changes(&self, set: &Attributes, remove: &BTreeSet<String>) -> Self {
        let mut packer = Packer::with_capacity(self.buf.len());
        let mut old = self
            .iter()
            .filter(|(name, _)| !remove.contains(*name))
            .peekable();
        let mut new = set.iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((o, _)), Some((n, _))) => (*o).cmp(n.as_str()),
            };
            if order == Ordering::Equal {
                old.next();
            }
            let next = match order {
                Ordering::Less => old.next(),
                _ => new.next().map(|(n, v)| (n.as_str(), v.as_slice())),
            };
            if let Some((name, value)) = next {
                packer.push(name, value);
            }
        }
        packer.finish()
    }
}

impl From<&Attributes> for PackedAttributes {
    fn from(map: &Attributes) -> Self {
        let bytes = map.iter().map(|(k, v)| 2 * LEN_BYTES + k.len() + v.len());
        let mut packer = Packer::with_capacity(bytes.sum());
        for (name, value) in map {
            packer.push(name, value);
        }
        packer.finish()
    }
}

impl From<Attributes> for PackedAttributes {
    fn from(map: Attributes) -> Self {
        Self::from(&map)
    }
}

impl fmt::Debug for PackedAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The attributes of a [`PackedAttributes`] in name order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, rest) = split_field(self.rest)?;
        let (value, rest) = split_field(rest)?;
        self.rest = rest;
        // Names were strings when packed; a buffer is only ever built by `Packer`.
        Some((std::str::from_utf8(name).ok()?, value))
    }
}

/// Splits a length-prefixed field off the front of `bytes`.
fn split_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..LEN_BYTES)?.try_into().ok()?) as usize;
    let end = LEN_BYTES.checked_add(len)?;
    Some((bytes.get(LEN_BYTES..end)?, bytes.get(end..)?))
}

/// Builds a buffer from attributes given in strictly increasing name order.
struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    fn with_capacity(bytes: usize) -> Self {
        Packer {
            buf: Vec::with_capacity(bytes),
        }
    }

    fn push(&mut self, name: &str, value: &[u8]) {
        self.field(name.as_bytes());
        self.field(value);
    }

    fn field(&mut self, bytes: &[u8]) {
        // Every attribute arrives in a frame or a decoded record far below 4 GiB
        // (`limits::FRAME_BYTES_MAX`; decoded images are checked in `FieldSeed`).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(bytes);
    }

    fn finish(self) -> PackedAttributes {
        PackedAttributes {
            buf: self.buf.into_boxed_slice(),
        }
    }
}

impl Serialize for PackedAttributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, &ByteStr(value))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PackedAttributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PackedVisitor)
    }
}

struct PackedVisitor;

impl<'de> Visitor<'de> for PackedVisitor {
    type Value = PackedAttributes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attribute names to byte strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut buf = Vec::new();
        let mut canonical = true;
        let mut previous: Option<(usize, usize)> = None;
        while let Some(name) = map.next_key_seed(FieldSeed {
            buf: &mut buf,
            text: true,
        })? {
            if let Some(before) = previous {
                canonical &= buf[before.0..before.1] < buf[name.0..name.1];
            }
            previous = Some(name);
            map.next_value_seed(FieldSeed {
                buf: &mut buf,
                text: false,
            })?;
        }
        let packed = PackedAttributes {
            buf: buf.into_boxed_slice(),
        };
        if canonical {
            return Ok(packed);
        }
        // Out of order or repeated names (never written by us): what a map would have made of
        // them, the last value of a name winning.
        Ok(PackedAttributes::from(&packed.to_map()))
    }
}

/// Appends one length-prefixed field (a name if `text`, else a value) to `buf`; its value is
/// the range of the field's bytes.
struct FieldSeed<'b> {
    buf: &'b mut Vec<u8>,
    text: bool,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; LEN_BYTES]);
        let text = self.text;
        let visitor = FieldVisitor {
            buf: &mut *self.buf,
        };
        // The owned forms: a streaming decoder lends its scratch buffer for them only while
        // the visitor runs, where the borrowed forms would use it up for good.
        if text {
            deserializer.deserialize_string(visitor)?;
        } else {
            deserializer.deserialize_byte_buf(visitor)?;
        }
        let body = start + LEN_BYTES;
        let len = u32::try_from(self.buf.len() - body)
            .map_err(|_| de::Error::custom("attribute of 4 GiB or more"))?;
        self.buf[start..body].copy_from_slice(&len.to_le_bytes());
        Ok((body, self.buf.len()))
    }
}

struct FieldVisitor<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'de> Visitor<'de> for FieldVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute name or value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.buf.extend_from_slice(v.as_bytes());
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.buf.extend_from_slice(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(byte) = seq.next_element::<u8>()? {
            self.buf.push(byte);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn packs_and_reads_back_a_map() {
        let m = map(&[("b", b"2"), ("a", b"1"), ("", b""), ("long", &[9; 300])]);
        let p = PackedAttributes::from(&m);
        assert_eq!(p.to_map(), m);
        assert_eq!(p.len(), 4);
        assert_eq!(p.get("a"), Some(&b"1"[..]));
        assert_eq!(p.get(""), Some(&b""[..]));
        assert_eq!(p.get("c"), None);
        assert!(!p.contains_key("aa"));
        assert_eq!(p.keys().collect::<Vec<_>>(), ["", "a", "b", "long"]);
        assert!(PackedAttributes::new().is_empty());
    }

    #[test]
    fn changes_remove_then_set() {
        let p = PackedAttributes::from(&map(&[("a", b"1"), ("b", b"2"), ("d", b"4")]));
        let set = map(&[("b", b"two"), ("c", b"3"), ("e", b"5")]);
        let remove = BTreeSet::from(["a".to_string(), "c".to_string(), "x".to_string()]);
        let changed = p.with_changes(&set, &remove);
        let expected = map(&[("b", b"two"), ("c", b"3"), ("d", b"4"), ("e", b"5")]);
        assert_eq!(changed.to_map(), expected);
        assert_eq!(changed, PackedAttributes::from(&expected));
    }

    #[test]
    fn encodes_exactly_as_the_map_does() {
        let m = map(&[("user", b"ann"), ("cart", &[0, 1, 255]), ("e", b"")]);
        let p = PackedAttributes::from(&m);
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&m).unwrap());
        assert_eq!(postcard::from_bytes::<PackedAttributes>(&bytes).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, serde_json::to_string(&m).unwrap());
        assert_eq!(serde_json::from_str::<PackedAttributes>(&json).unwrap(), p);
    }

    #[test]
    fn decodes_unordered_or_repeated_names_as_a_map_would() {
        let bytes = postcard::to_allocvec(&vec![
            ("b", b"2".to_vec()),
            ("a", b"1".to_vec()),
            ("b", b"3".to_vec()),
        ])
        .unwrap();
        // A sequence of pairs and a map share postcard's layout (length, then entries).
        let p: PackedAttributes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(p.to_map(), map(&[("a", b"1"), ("b", b"3")]));
        let m: Attributes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(p.to_map(), m);
    }

    fn small_map() -> impl proptest::strategy::Strategy<Value = Attributes> {
        use proptest::prelude::*;
        proptest::collection::btree_map(
            "[a-d]{0,2}",
            proptest::collection::vec(any::<u8>(), 0..4),
            0..6,
        )
    }

    proptest::proptest! {
        #[test]
        fn changes_and_encoding_agree_with_the_map(
            old in small_map(),
            set in small_map(),
            remove in proptest::collection::btree_set("[a-d]{0,2}", 0..4),
        ) {
            let mut expected = old.clone();
            for name in &remove {
                expected.remove(name);
            }
            expected.extend(set.clone());
            let changed = PackedAttributes::from(&old).with_changes(&set, &remove);
            proptest::prop_assert_eq!(changed.to_map(), expected.clone());
            proptest::prop_assert_eq!(&changed, &PackedAttributes::from(&expected));
            let bytes = postcard::to_allocvec(&changed).unwrap();
            proptest::prop_assert_eq!(&bytes, &postcard::to_allocvec(&expected).unwrap());
            for (name, value) in &expected {
                proptest::prop_assert_eq!(changed.get(name), Some(value.as_slice()));
            }
            proptest::prop_assert_eq!(changed.len(), expected.len());
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = postcard::to_allocvec(&map(&[("user", b"ann")])).unwrap();
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<PackedAttributes>(&bytes[..cut]).is_err());
        }
    }
}
