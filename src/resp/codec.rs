//! RESP bytes: a bounded request decoder (a `tokio_util` [`Decoder`]) and reply encoding through
//! the `redis-protocol` crate (RESP2, or RESP3 after `HELLO 3`).
//!
//! Requests are decoded here rather than by `redis-protocol`'s decoder: a Redis server accepts
//! only arrays of bulk strings (or an inline line) from clients, and the crate's decoder parses
//! any frame recursively with no depth or length limit (a stream of `*1\r\n` recurses once per
//! 4 bytes until the stack overflows, which would take the whole node down) and re-parses the
//! whole buffer on every call. This decoder reads headers only, skips bulk bodies by length,
//! and checks every length against [`crate::limits`] before buffering it.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{OwnedFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::{FrameMap, FrameSet, OwnedFrame as Frame3, Resp3Frame};
use tokio_util::codec::Decoder;

use crate::command::redis::Reply;
use crate::limits;

/// Why a request could not be decoded; the connection answers it and closes.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Not RESP (or not a request).
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// Reading the socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Decodes requests: each is the command's arguments (the name first). An empty request (`*0`,
/// or a blank inline line) decodes as no arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestDecoder;

fn protocol(message: impl Into<String>) -> RespError {
    RespError::Protocol(message.into())
}

/// The line starting at `from`, without its CRLF, and the offset after it; `Ok(None)` if it is
/// not complete yet. Lines longer than `max` are refused.
fn line(buf: &[u8], from: usize, max: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], from + end + 2))),
        None if window.len() >= max + 2 => Err(protocol("too big length line")),
        None => Ok(None),
    }
}

fn number(digits: &[u8], what: &str) -> Result<i64, RespError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| protocol(format!("invalid {what} length")))
}

impl RequestDecoder {
    fn inline(&self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        let window = &buf[..buf.len().min(limits::RESP_INLINE_BYTES_MAX + 1)];
        let Some(end) = window.iter().position(|b| *b == b'\n') else {
            if window.len() > limits::RESP_INLINE_BYTES_MAX {
                return Err(protocol("too big inline request"));
            }
            return Ok(None);
        };
        let line = buf.split_to(end + 1).freeze();
        let text = line.slice(..end);
        let mut args = Vec::new();
        let mut start = None;
        for (i, b) in text.iter().enumerate() {
            match (b.is_ascii_whitespace(), start) {
                (true, Some(s)) => {
                    args.push(text.slice(s..i));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            args.push(text.slice(s..));
        }
        if args.len() > limits::RESP_ARGS_MAX {
            return Err(protocol("too many arguments"));
        }
        Ok(Some(args))
    }
}

impl Decoder for RequestDecoder {
    type Item = Vec<Bytes>;
    type Error = RespError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, RespError> {
        if buf.is_empty() {
            return Ok(None);
        }
        if buf[0] != b'*' {
            return self.inline(buf);
        }
        let Some((header, mut at)) = line(buf, 1, 20)? else {
            return Ok(None);
        };
        let count = number(header, "multibulk")?;
        if count > limits::RESP_ARGS_MAX as i64 {
            return Err(protocol("invalid multibulk length"));
        }
        let count = count.max(0) as usize;
        let mut ranges = Vec::with_capacity(count);
        for _ in 0..count {
            if at >= buf.len() {
                return Ok(None);
            }
            if buf[at] != b'$' {
                return Err(protocol(format!(
                    "expected '$', got '{}'",
                    char::from(buf[at]).escape_default()
                )));
            }
            let Some((digits, body)) = line(buf, at + 1, 20)? else {
                return Ok(None);
            };
            let len = number(digits, "bulk")?;
            if len < 0 || len as usize > limits::RESP_REQUEST_BYTES_MAX {
                return Err(protocol("invalid bulk length"));
            }
            let end = body + len as usize;
            if end + 2 > limits::RESP_REQUEST_BYTES_MAX {
                return Err(protocol(format!(
                    "request larger than {} bytes",
                    limits::RESP_REQUEST_BYTES_MAX
                )));
            }
            if end + 2 > buf.len() {
                buf.reserve(end + 2 - buf.len());
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol("bulk string not terminated by CRLF"));
            }
            ranges.push(body..end);
            at = end + 2;
        }
        let request = buf.split_to(at).freeze();
        Ok(Some(ranges.into_iter().map(|r| request.slice(r)).collect()))
    }
}

/// Appends `reply` to `out` in RESP3 (`resp3`) or RESP2.
pub fn encode(reply: &Reply, resp3: bool, out: &mut BytesMut) {
    let at = out.len();
    let written = if resp3 {
        let frame = to_resp3(reply);
        out.resize(at + frame.encode_len(false), 0);
        redis_protocol::resp3::encode::complete::encode(&mut out[at..], &frame, false)
    } else {
        let frame = to_resp2(reply);
        out.resize(at + frame.encode_len(false), 0);
        redis_protocol::resp2::encode::encode(&mut out[at..], &frame, false)
    };
    // The buffer is sized by the crate's own length computation, so encoding cannot fail.
    let n = written.expect("a reply encodes into a buffer of its encoded length");
    out.truncate(at + n);
}

fn to_resp2(reply: &Reply) -> Frame2 {
    match reply {
        Reply::Ok => Frame2::SimpleString(b"OK".to_vec()),
        Reply::Simple(s) => Frame2::SimpleString(one_line(s).into_bytes()),
        Reply::Error(e) => Frame2::Error(one_line(e)),
        Reply::Int(i) => Frame2::Integer(*i),
        Reply::Bulk(b) => Frame2::BulkString(b.clone()),
        Reply::Nil | Reply::NilArray => Frame2::Null,
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            Frame2::Array(items.iter().map(to_resp2).collect())
        }
        Reply::Map(pairs) => Frame2::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [to_resp2(k), to_resp2(v)])
                .collect(),
        ),
    }
}

fn to_resp3(reply: &Reply) -> Frame3 {
    match reply {
        Reply::Ok => Frame3::SimpleString {
            data: b"OK".to_vec(),
            attributes: None,
        },
        Reply::Simple(s) => Frame3::SimpleString {
            data: one_line(s).into_bytes(),
            attributes: None,
        },
        Reply::Error(e) => Frame3::SimpleError {
            data: one_line(e),
            attributes: None,
        },
        Reply::Int(i) => Frame3::Number {
            data: *i,
            attributes: None,
        },
        Reply::Bulk(b) => Frame3::BlobString {
            data: b.clone(),
            attributes: None,
        },
        Reply::Nil | Reply::NilArray => Frame3::Null,
        Reply::Array(items) => Frame3::Array {
            data: items.iter().map(to_resp3).collect(),
            attributes: None,
        },
        Reply::Push(items) => Frame3::Push {
            data: items.iter().map(to_resp3).collect(),
            attributes: None,
        },
        Reply::Set(items) => Frame3::Set {
            data: items.iter().map(to_resp3).collect::<FrameSet<_>>(),
            attributes: None,
        },
        Reply::Map(pairs) => Frame3::Map {
            data: pairs
                .iter()
                .map(|(k, v)| (to_resp3(k), to_resp3(v)))
                .collect::<FrameMap<_, _>>(),
            attributes: None,
        },
    }
}

/// Simple strings and errors may not contain CR or LF.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, RespError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = RequestDecoder.decode(&mut buf)? {
            out.push(args);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_decode_in_order_and_partial_ones_wait() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\nPING x\r\n";
        let all = decode_all(input).expect("valid");
        assert_eq!(
            all,
            vec![
                vec![Bytes::from("GET"), Bytes::from("k")],
                vec![Bytes::from("PING")],
                vec![Bytes::from("PING"), Bytes::from("x")]
            ]
        );
        for cut in 1..20 {
            let mut buf = BytesMut::from(&input[..cut]);
            assert!(
                RequestDecoder
                    .decode(&mut buf)
                    .expect("a prefix is not an error")
                    .is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bounds_and_garbage_are_errors_not_allocations() {
        for bad in [
            &b"*99999999\r\n"[..],
            b"*1\r\n$99999999999\r\n",
            b"*1\r\n*1\r\n",
            b"*1\r\n$-5\r\n",
            b"*x\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*123456789012345678901234567890\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_inline = vec![b'a'; limits::RESP_INLINE_BYTES_MAX + 10];
        assert!(decode_all(&long_inline).is_err());
    }

    #[test]
    fn replies_encode_as_resp2_and_resp3() {
        let map = Reply::Map(vec![(Reply::text("f"), Reply::Bulk(b"v".to_vec()))]);
        let mut out = BytesMut::new();
        encode(&map, false, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
        out.clear();
        encode(&map, true, &mut out);
        assert_eq!(&out[..], b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
        out.clear();
        encode(&Reply::Nil, true, &mut out);
        encode(&Reply::Nil, false, &mut out);
        encode(&Reply::Error("ERR a\r\nb".into()), false, &mut out);
        assert_eq!(&out[..], b"_\r\n$-1\r\n-ERR a  b\r\n");
    }
}
