//! Serde helpers that write attribute values as byte strings.
//!
//! serde writes a `Vec<u8>` as a sequence and reads it back one element at a time; postcard
//! encodes a byte string and a sequence of `u8` alike (a length, then the bytes) and JSON both as
//! an array of numbers, so writing values as byte strings changes no encoding, while reading
//! them as byte strings copies each value at once. Used with `#[serde(with = …)]` on the
//! attribute maps and values that travel in log entries and replies.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Attributes;

/// A value written as a byte string.
pub(super) struct ByteStr<'a>(pub(super) &'a [u8]);

impl Serialize for ByteStr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A value read as a byte string (or, from a self-describing format, a sequence of bytes).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = ByteBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
        Ok(ByteBuf(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
        Ok(ByteBuf(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
        // The hint comes from the input: bounded so a forged length cannot allocate much.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(ByteBuf(out))
    }
}

/// `#[serde(with = "crate::session::byte_serde::map")]` for an [`Attributes`] map.
pub mod map {
    use super::*;

    /// Writes the map with its values as byte strings.
    pub fn serialize<S: Serializer>(map: &Attributes, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (name, value) in map {
            out.serialize_entry(name, &ByteStr(value))?;
        }
        out.end()
    }

    /// Reads a map whose values are byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Attributes, D::Error> {
        deserializer.deserialize_map(MapVisitor)
    }

    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = Attributes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of attribute names to byte strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Attributes, A::Error> {
            let mut map = Attributes::new();
            while let Some(name) = access.next_key::<String>()? {
                let ByteBuf(value) = access.next_value()?;
                map.insert(name, value);
            }
            Ok(map)
        }
    }
}

/// `#[serde(with = "crate::session::byte_serde::bytes")]` for one `Vec<u8>` value.
pub mod bytes {
    use super::*;

    /// Writes the value as a byte string.
    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    /// Reads a byte string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        ByteBuf::deserialize(deserializer).map(|ByteBuf(v)| v)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::Attributes;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        map: Attributes,
        value: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsBytes {
        #[serde(with = "super::map")]
        map: Attributes,
        #[serde(with = "super::bytes")]
        value: Vec<u8>,
    }

    #[test]
    fn byte_strings_encode_as_sequences_do() {
        let map = Attributes::from([("a".into(), vec![0, 255]), ("b".into(), Vec::new())]);
        let plain = Plain {
            map: map.clone(),
            value: vec![1; 300],
        };
        let fast = AsBytes {
            map,
            value: vec![1; 300],
        };
        let bytes = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&fast).unwrap());
        assert_eq!(postcard::from_bytes::<AsBytes>(&bytes).unwrap(), fast);
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(json, serde_json::to_string(&fast).unwrap());
        assert_eq!(serde_json::from_str::<AsBytes>(&json).unwrap(), fast);
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<AsBytes>(&bytes[..cut]).is_err());
        }
    }
}
