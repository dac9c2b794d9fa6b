//! Decoded replies the proxy reads itself (INFO, ROLE, SENTINEL, COMMAND); never used for passthrough.

use bytes::Bytes;

use super::{string2ll, DecodeError};

/// Cap on up-front element reservations, whatever count the frame declared.
const MAX_PREALLOC: usize = 1024;

/// Deepest nesting accepted. Parsing is iterative, but dropping a [`Value`] recurses once per level.
pub const MAX_VALUE_DEPTH: usize = 512;

/// A decoded RESP2/RESP3 reply.
///
/// RESP3 maps, sets and pushes become [`Value::Array`] (maps as `k1, v1, k2, v2, ...` in wire order);
/// doubles, big numbers and verbatim strings become [`Value::Bulk`] text (verbatim without its `txt:` prefix);
/// booleans become `Int(1)`/`Int(0)`; attributes are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Null bulk, null array, or RESP3 null.
    Nil,
    /// A simple string (`+OK`).
    Status(Bytes),
    /// An error, with its prefix (`ERR ...`, `MOVED ...`).
    Error(Bytes),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// An array (or flattened map, set, push).
    Array(Vec<Value>),
}

impl Value {
    /// The bytes of a status, error or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Status(b) | Value::Error(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// [`Value::as_bytes`] when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a status/bulk string that is one (Redis `string2ll` rules).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Status(b) | Value::Bulk(b) => string2ll(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
}

/// An aggregate being filled.
struct Open {
    items: Vec<Value>,
    remaining: usize,
    /// Attributes are parsed and thrown away.
    discard: bool,
}

/// Decodes one complete frame, as split off by [`ReplyScanner`](super::ReplyScanner).
///
/// Iterative (an explicit stack, no recursion) and zero-copy for strings. Hand-written rather than
/// redis-protocol's decoder so RESP3 maps keep their wire order and non-hashable map keys are fine.
///
/// # Errors
/// [`DecodeError::InvalidReply`] if `raw` is not exactly one well-formed frame;
/// [`DecodeError::ReplyTooDeep`] if it nests more than [`MAX_VALUE_DEPTH`] aggregates.
pub fn parse_value(raw: Bytes) -> Result<Value, DecodeError> {
    let mut cur = Cursor { raw, pos: 0 };
    let mut stack: Vec<Open> = Vec::new();
    loop {
        let mut done = match cur.token()? {
            Token::Value(v) => Some(v),
            Token::Aggregate { count: 0, discard } => (!discard).then(|| Value::Array(Vec::new())),
            Token::Aggregate { count, discard } => {
                if stack.len() >= MAX_VALUE_DEPTH {
                    return Err(DecodeError::ReplyTooDeep(MAX_VALUE_DEPTH));
                }
                stack.push(Open {
                    items: Vec::with_capacity(count.min(MAX_PREALLOC)),
                    remaining: count,
                    discard,
                });
                continue;
            }
        };
        while let Some(v) = done.take() {
            let Some(top) = stack.last_mut() else {
                if cur.pos != cur.raw.len() {
                    return Err(DecodeError::InvalidReply("trailing bytes after frame"));
                }
                return Ok(v);
            };
            top.items.push(v);
            top.remaining -= 1;
            if top.remaining == 0 {
                if let Some(open) = stack.pop() {
                    done = (!open.discard).then_some(Value::Array(open.items));
                }
            }
        }
    }
}

enum Token {
    Value(Value),
    Aggregate { count: usize, discard: bool },
}

struct Cursor {
    raw: Bytes,
    pos: usize,
}

impl Cursor {
    /// The line at `pos` without its type byte and CRLF; advances past it.
    fn line(&mut self) -> Result<(u8, Bytes), DecodeError> {
        let rest = self.raw.get(self.pos..).unwrap_or_default();
        let lf = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::InvalidReply("incomplete frame"))?;
        if lf < 2 || rest.get(lf - 1) != Some(&b'\r') {
            return Err(DecodeError::InvalidReply("line not terminated by CRLF"));
        }
        let kind = rest.first().copied().unwrap_or(0);
        let body = self.raw.slice(self.pos + 1..self.pos + lf - 1);
        self.pos += lf + 1;
        Ok((kind, body))
    }

    fn blob(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e.saturating_add(2) <= self.raw.len())
            .ok_or(DecodeError::InvalidReply("incomplete frame"))?;
        if self.raw.get(end..end + 2) != Some(&b"\r\n"[..]) {
            return Err(DecodeError::InvalidReply(
                "bulk string not followed by CRLF",
            ));
        }
        let data = self.raw.slice(self.pos..end);
        self.pos = end + 2;
        Ok(data)
    }

    fn token(&mut self) -> Result<Token, DecodeError> {
        let (kind, body) = self.line()?;
        let v = match kind {
            b'+' => Value::Status(body),
            b'-' => Value::Error(body),
            b':' => Value::Int(parse_int(&body)?),
            b'_' => Value::Nil,
            b',' | b'(' => Value::Bulk(body),
            b'#' => Value::Int(i64::from(body.as_ref() == b"t")),
            b'$' | b'!' | b'=' => {
                let Some(len) = parse_len(&body)? else {
                    return Ok(Token::Value(Value::Nil));
                };
                let data = self.blob(len)?;
                match kind {
                    b'!' => Value::Error(data),
                    b'=' if data.get(3) == Some(&b':') => Value::Bulk(data.slice(4..)),
                    _ => Value::Bulk(data),
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let Some(n) = parse_len(&body)? else {
                    return Ok(Token::Value(Value::Nil));
                };
                let count = if matches!(kind, b'%' | b'|') {
                    n.checked_mul(2)
                        .ok_or(DecodeError::InvalidReply("aggregate too large"))?
                } else {
                    n
                };
                return Ok(Token::Aggregate {
                    count,
                    discard: kind == b'|',
                });
            }
            _ => return Err(DecodeError::InvalidReply("unknown type byte")),
        };
        Ok(Token::Value(v))
    }
}

fn parse_int(b: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError::InvalidReply("bad integer"))
}

/// A length or count; `None` for `-1`.
fn parse_len(b: &[u8]) -> Result<Option<usize>, DecodeError> {
    if b == b"-1" {
        return Ok(None);
    }
    if !b.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::InvalidReply("bad length"));
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or(DecodeError::InvalidReply("bad length"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn parse(s: &[u8]) -> Value {
        parse_value(Bytes::copy_from_slice(s)).unwrap()
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse(b"+OK\r\n"), Value::Status(Bytes::from_static(b"OK")));
        assert!(parse(b"-ERR x\r\n").is_error());
        assert!(parse(b"!5\r\nERR x\r\n").is_error());
        assert_eq!(parse(b":-7\r\n").as_int(), Some(-7));
        assert_eq!(parse(b"$-1\r\n"), Value::Nil);
        assert_eq!(parse(b"*-1\r\n"), Value::Nil);
        assert_eq!(parse(b"_\r\n"), Value::Nil);
        assert_eq!(parse(b"#t\r\n"), Value::Int(1));
        assert_eq!(parse(b"#f\r\n"), Value::Int(0));
        assert_eq!(parse(b",1.5\r\n"), bulk("1.5"));
        assert_eq!(
            parse(b"(123456789012345678901234\r\n"),
            bulk("123456789012345678901234")
        );
        assert_eq!(parse(b"=8\r\ntxt:a\r\nb\r\n"), bulk("a\r\nb"));
        assert_eq!(parse(b"$2\r\n42\r\n").as_int(), Some(42));
        assert_eq!(parse(b"$2\r\nhi\r\n").as_str(), Some("hi"));
    }

    #[test]
    fn parses_info_bulk() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
        let raw = format!("${}\r\n{info}\r\n", info.len());
        assert_eq!(parse(raw.as_bytes()).as_str(), Some(info));
    }

    #[test]
    fn parses_role_replies() {
        let master = parse(b"*3\r\n$6\r\nmaster\r\n:3129659\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001\r\n$7\r\n3129242\r\n");
        let a = master.as_array().unwrap();
        assert_eq!(a[0].as_str(), Some("master"));
        assert_eq!(a[1].as_int(), Some(3_129_659));
        let replica = &a[2].as_array().unwrap()[0];
        assert_eq!(replica.as_array().unwrap()[1].as_int(), Some(9001));

        let slave = parse(
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:3167038\r\n",
        );
        assert_eq!(slave.as_array().unwrap()[3].as_str(), Some("connected"));
    }

    #[test]
    fn flattens_resp3_aggregates_in_order() {
        let v = parse(b"|1\r\n+ttl\r\n:9\r\n%2\r\n+b\r\n:2\r\n+a\r\n~1\r\n:1\r\n");
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].as_str(), Some("b"));
        assert_eq!(a[2].as_str(), Some("a"));
        assert_eq!(a[3], Value::Array(vec![Value::Int(1)]));
        assert_eq!(
            parse(b"*2\r\n*0\r\n%0\r\n"),
            Value::Array(vec![Value::Array(vec![]), Value::Array(vec![])])
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut raw = "*1\r\n".repeat(MAX_VALUE_DEPTH + 1).into_bytes();
        raw.extend_from_slice(b":1\r\n");
        assert_eq!(
            parse_value(Bytes::from(raw)),
            Err(DecodeError::ReplyTooDeep(MAX_VALUE_DEPTH))
        );
        let depth = MAX_VALUE_DEPTH;
        let mut raw = "*1\r\n".repeat(depth).into_bytes();
        raw.extend_from_slice(b":1\r\n");
        let v = parse_value(Bytes::from(raw)).unwrap();
        // Count the levels (unwrapping iteratively, as dropping recurses).
        let mut v = v;
        let mut levels = 0;
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap();
            levels += 1;
        }
        assert_eq!(levels, depth);
    }

    #[test]
    fn rejects_malformed_frames() {
        for bad in [
            &b""[..],
            b"+OK",
            b"*2\r\n:1\r\n",
            b"$3\r\nab\r\n",
            b":x\r\n",
            b"+OK\r\n+OK\r\n",
            b"?\r\n",
        ] {
            assert!(parse_value(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
