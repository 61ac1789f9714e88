//! Where Redis keys live: key name to session id (and so to group), Redis Cluster hash tags,
//! SCAN cursors, and glob patterns.
//!
//! A key's id is the first 128 bits of SHA-256 over a domain tag and the name, so ids are
//! stable across releases and nodes, spread evenly over groups, and collision resistant. A key
//! with a hash tag (`{user1}:cart`: the part between the first `{` and the next `}`, if
//! non-empty) lives in the group of its tag, as in Redis Cluster: keys sharing a tag can be used
//! together in `MULTI`/`EXEC` and `RENAME` atomically. Such an id is the first candidate
//! `SHA-256(tag, name, counter)` that lands in that group (about `groups` tries).

use ring::digest::{digest, SHA256};

use crate::command::redis::SCAN_PREFIX_BYTES;
use crate::id::{fnv1a64, GroupId, SessionId};

/// Domain tag of key ids (never change it: it would strand every stored key).
const DOMAIN: &[u8] = b"steadfast redis key v1\0";

/// The hash tag of `key`, if it has one.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let close = key[open + 1..].iter().position(|b| *b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

fn candidate(key: &[u8], counter: u32) -> SessionId {
    let mut input = Vec::with_capacity(DOMAIN.len() + key.len() + 4);
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(&counter.to_be_bytes());
    input.extend_from_slice(key);
    let hash = digest(&SHA256, &input);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    SessionId::from_bytes(bytes)
}

/// The session id of `key` in a cluster of `groups` groups.
pub fn key_id(key: &[u8], groups: u32) -> SessionId {
    let Some(tag) = hash_tag(key) else {
        return candidate(key, 0);
    };
    let group = tag_group(tag, groups);
    (0..)
        .map(|c| candidate(key, c))
        .find(|id| id.group(groups) == group)
        .expect("some candidate lands in every group")
}

/// The group of a hash tag.
fn tag_group(tag: &[u8], groups: u32) -> GroupId {
    GroupId((fnv1a64(tag) % u64::from(groups)) as u32)
}

/// A SCAN position: the group and the first id prefix still to visit in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The group being scanned.
    pub group: u32,
    /// The first id of the group not yet visited.
    pub from: SessionId,
}

/// Bits of a cursor that hold the id prefix.
const PREFIX_BITS: u32 = 8 * SCAN_PREFIX_BYTES as u32;

impl Cursor {
    /// The start of a scan.
    pub fn start() -> Cursor {
        Cursor {
            group: 0,
            from: SessionId::from_bytes([0; 16]),
        }
    }

    /// Decodes a cursor a client sent back; `None` if no scan made it.
    pub fn decode(value: u64, groups: u32) -> Option<Cursor> {
        let group = value >> PREFIX_BITS;
        if group >= u64::from(groups) {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..SCAN_PREFIX_BYTES].copy_from_slice(&value.to_be_bytes()[8 - SCAN_PREFIX_BYTES..]);
        Some(Cursor {
            group: group as u32,
            from: SessionId::from_bytes(bytes),
        })
    }

    /// The number a client gets (0 only for the start, which a scan never hands out).
    pub fn encode(&self) -> u64 {
        let mut prefix = [0u8; 8];
        prefix[8 - SCAN_PREFIX_BYTES..].copy_from_slice(&self.from.as_bytes()[..SCAN_PREFIX_BYTES]);
        (u64::from(self.group) << PREFIX_BITS) | u64::from_be_bytes(prefix)
    }
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as `KEYS` and `SCAN MATCH` use it.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                // An escape that does not match: backtrack (never a literal backslash).
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == '['`: whether it matched and
/// the index after the class; `None` if the class is not closed.
fn class(pattern: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        match pattern[i] {
            b']' if !first => return Some((matched != negate, i + 1)),
            b'\\' if i + 1 < pattern.len() => {
                matched |= pattern[i + 1] == c;
                i += 2;
            }
            lo if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' => {
                let hi = pattern[i + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            x => {
                matched |= x == c;
                i += 1;
            }
        }
        first = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_colocate_keys_and_ids_are_stable() {
        let a = key_id(b"{user1}:cart", 8);
        let b = key_id(b"{user1}:profile", 8);
        assert_ne!(a, b);
        assert_eq!(a.group(8), b.group(8));
        assert_eq!(
            key_id(b"plain", 8),
            key_id(b"plain", 16),
            "no tag: one id for any cluster"
        );
        assert_eq!(hash_tag(b"a{}b"), None);
        assert_eq!(hash_tag(b"a{x}b{y}"), Some(&b"x"[..]));
    }

    #[test]
    fn cursors_round_trip_below_two_to_the_53() {
        let mut bytes = [0xffu8; 16];
        bytes[SCAN_PREFIX_BYTES..].fill(0);
        let c = Cursor {
            group: 1023,
            from: SessionId::from_bytes(bytes),
        };
        assert!(c.encode() < 1 << 53);
        assert_eq!(Cursor::decode(c.encode(), 1024), Some(c));
        assert_eq!(Cursor::decode(c.encode(), 8), None, "group out of range");
        assert_eq!(Cursor::decode(0, 8), Some(Cursor::start()));
    }

    #[test]
    fn globs_match_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("sess:*", "sess:abc", true),
            ("sess:*", "user:abc", false),
            ("h?llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("\\*x", "*x", true),
            ("", "", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), *want, "{p} ~ {t}");
        }
    }
}
