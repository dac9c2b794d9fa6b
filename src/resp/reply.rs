//! Frame boundaries of backend replies (RESP2 and RESP3), found without recursion or per-element allocation.

use bytes::{Bytes, BytesMut};

use super::DecodeError;

/// Longest length/count header line (`$`, `*`, ...) accepted from a backend, CRLF excluded.
const MAX_HEADER_LINE: usize = 32;

/// Splits complete replies off a backend's read buffer.
///
/// Keeps an explicit stack of "elements still to come" per open aggregate and the offset reached, so a huge
/// reply (a big `LRANGE`) arriving in pieces is scanned once, in linear time, and nesting costs no recursion.
#[derive(Debug)]
pub struct ReplyScanner {
    max_depth: usize,
    /// End of the part of the current reply already scanned.
    pos: usize,
    /// Where the search for the current line's LF resumes.
    scan: usize,
    /// Remaining element counts of the open aggregates, innermost last.
    stack: Vec<u64>,
    /// End offset of the blob string being skipped, once its header was read.
    blob_end: Option<usize>,
}

/// How deep a server's reply may nest aggregates. Redis itself answers about 8,000 levels (a Lua
/// table that contains itself, returned until the Lua stack limit), and the client must get that
/// reply as it is; the scanner's stack grows with the reply (8 bytes a level, each level at least
/// 4 bytes of the reply), so a high bound costs nothing the reply does not hold already.
pub const MAX_REPLY_DEPTH: usize = 100_000;

/// Whether a raw reply is an error (`-` in RESP2, `-` or `!` in RESP3).
pub fn is_error_reply(raw: &[u8]) -> bool {
    matches!(raw.first(), Some(b'-' | b'!'))
}

impl ReplyScanner {
    /// A scanner rejecting replies nested more than `max_depth` aggregates deep (64 is plenty for Redis).
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth,
            pos: 0,
            scan: 0,
            stack: Vec::new(),
            blob_end: None,
        }
    }

    /// Splits one complete reply off the front of `buf` and returns its raw bytes (zero-copy).
    ///
    /// `Ok(None)`: the reply is not complete; the scan resumes where it stopped on the next call.
    ///
    /// # Errors
    /// [`DecodeError::InvalidReply`] or [`DecodeError::ReplyTooDeep`]: the backend stream is unusable and the
    /// connection must be dropped (the scanner is not usable afterwards).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        loop {
            if let Some(end) = self.blob_end {
                if buf.len() < end {
                    return Ok(None);
                }
                if buf.get(end - 2..end) != Some(&b"\r\n"[..]) {
                    return Err(DecodeError::InvalidReply(
                        "bulk string not followed by CRLF",
                    ));
                }
                self.blob_end = None;
                self.pos = end;
                self.scan = end;
                if self.element_done() {
                    return Ok(Some(self.take(buf)));
                }
                continue;
            }
            let Some(line_end) = self.find_lf(buf)? else {
                return Ok(None);
            };
            let kind = buf.get(self.pos).copied().unwrap_or(0);
            let body = buf.get(self.pos + 1..line_end - 1).unwrap_or_default();
            let header_len = body.len();
            let next = line_end + 1;
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    self.pos = next;
                    self.scan = next;
                    if self.element_done() {
                        return Ok(Some(self.take(buf)));
                    }
                }
                b'$' | b'!' | b'=' => {
                    let len = header_count(body, header_len)?;
                    self.pos = next;
                    self.scan = next;
                    match len {
                        None => {
                            if self.element_done() {
                                return Ok(Some(self.take(buf)));
                            }
                        }
                        Some(len) => {
                            let end = usize::try_from(len)
                                .ok()
                                .and_then(|l| next.checked_add(l))
                                .and_then(|e| e.checked_add(2))
                                .ok_or(DecodeError::InvalidReply("bulk length too large"))?;
                            self.blob_end = Some(end);
                        }
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let count = header_count(body, header_len)?;
                    self.pos = next;
                    self.scan = next;
                    let count = match (kind, count) {
                        (_, None) | (_, Some(0)) if kind != b'|' => {
                            if self.element_done() {
                                return Ok(Some(self.take(buf)));
                            }
                            continue;
                        }
                        (b'%', Some(n)) => n.checked_mul(2),
                        // An attribute is followed by the value it annotates: count that value too.
                        (b'|', n) => n.unwrap_or(0).checked_mul(2).and_then(|n| n.checked_add(1)),
                        (_, n) => n,
                    }
                    .ok_or(DecodeError::InvalidReply("aggregate too large"))?;
                    if self.stack.len() >= self.max_depth {
                        return Err(DecodeError::ReplyTooDeep(self.max_depth));
                    }
                    self.stack.push(count);
                }
                _ => return Err(DecodeError::InvalidReply("unknown type byte")),
            }
        }
    }

    /// Finds the LF ending the line at `self.pos`, checking the CR before it; `None` if not there yet.
    fn find_lf(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let from = self.scan.max(self.pos);
        let hay = buf.get(from..).unwrap_or_default();
        match hay.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let lf = from + i;
                if lf < self.pos + 2 || buf.get(lf - 1) != Some(&b'\r') {
                    return Err(DecodeError::InvalidReply("line not terminated by CRLF"));
                }
                Ok(Some(lf))
            }
            None => {
                self.scan = buf.len();
                let is_header = matches!(
                    buf.get(self.pos),
                    Some(b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|')
                );
                if is_header && buf.len() - self.pos > MAX_HEADER_LINE + 2 {
                    return Err(DecodeError::InvalidReply("length line too long"));
                }
                Ok(None)
            }
        }
    }

    /// Records that one element (scalar or whole aggregate) ended at `self.pos`; true if the reply is complete.
    fn element_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top = top.saturating_sub(1);
            if *top > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }

    fn take(&mut self, buf: &mut BytesMut) -> Bytes {
        let raw = buf.split_to(self.pos).freeze();
        self.pos = 0;
        self.scan = 0;
        self.stack.clear();
        raw
    }
}

/// Parses a length/count header: `None` for `-1` (null), an error for anything else that is not a count.
fn header_count(body: &[u8], len: usize) -> Result<Option<u64>, DecodeError> {
    if len > MAX_HEADER_LINE {
        return Err(DecodeError::InvalidReply("length line too long"));
    }
    if body == b"-1" {
        return Ok(None);
    }
    if body == b"?" {
        return Err(DecodeError::InvalidReply(
            "streamed RESP3 types are not supported",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::InvalidReply("bad length"))?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::InvalidReply("bad length"));
    }
    text.parse::<u64>()
        .map(Some)
        .map_err(|_| DecodeError::InvalidReply("bad length"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn scan_all(input: &[u8]) -> Vec<Bytes> {
        let mut s = ReplyScanner::new(64);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = s.next(&mut buf).unwrap() {
            out.push(r);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR nope\r\n",
        b":-12\r\n",
        b"$5\r\nhe\r\no\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n*0\r\n+x\r\n",
        b"*2\r\n*1\r\n*1\r\n:1\r\n$-1\r\n",
        b"_\r\n",
        b",3.14\r\n",
        b"#t\r\n",
        b"!9\r\nERR boom!\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n",
        b"|1\r\n+ttl\r\n:3600\r\n$3\r\nval\r\n",
        b"%0\r\n",
    ];

    #[test]
    fn scans_every_type_in_one_piece() {
        let all: Vec<u8> = REPLIES.concat();
        let got = scan_all(&all);
        assert_eq!(got.len(), REPLIES.len());
        for (g, want) in got.iter().zip(REPLIES) {
            assert_eq!(&g[..], *want);
        }
    }

    #[test]
    fn scans_every_split_point() {
        let all: Vec<u8> = REPLIES.concat();
        for split in 0..=all.len() {
            let mut s = ReplyScanner::new(64);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&all[..split], &all[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(r) = s.next(&mut buf).unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), REPLIES.len(), "split at {split}");
            assert_eq!(got.concat(), all);
        }
    }

    #[test]
    fn scans_byte_by_byte() {
        let all: Vec<u8> = REPLIES.concat();
        let mut s = ReplyScanner::new(64);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &all {
            buf.extend_from_slice(&[b]);
            while let Some(r) = s.next(&mut buf).unwrap() {
                got.push(r);
            }
        }
        let want: Vec<&[u8]> = REPLIES.to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_nesting_deeper_than_the_limit() {
        let mut ok = "*1\r\n".repeat(4);
        ok.push_str(":1\r\n");
        let mut s = ReplyScanner::new(4);
        assert!(s
            .next(&mut BytesMut::from(ok.as_bytes()))
            .unwrap()
            .is_some());
        let deep = format!("*1\r\n{ok}");
        let mut s = ReplyScanner::new(4);
        assert_eq!(
            s.next(&mut BytesMut::from(deep.as_bytes())),
            Err(DecodeError::ReplyTooDeep(4))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"?x\r\n"[..],
            b"+OK\n",
            b"$abc\r\n",
            b"$3\r\nabcXY",
            b"*-2\r\n",
        ] {
            let mut s = ReplyScanner::new(8);
            assert!(s.next(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        let mut s = ReplyScanner::new(8);
        let long = BytesMut::from(&b"$1111111111111111111111111111111111111111111"[..]);
        assert!(s.next(&mut long.clone()).is_err());
    }

    #[test]
    fn huge_array_in_pieces_is_linear() {
        let n = 200_000;
        let mut all = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            all.extend_from_slice(format!("$6\r\n{i:06}\r\n").as_bytes());
        }
        let start = std::time::Instant::now();
        let mut s = ReplyScanner::new(64);
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in all.chunks(1024) {
            buf.extend_from_slice(chunk);
            if let Some(r) = s.next(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        assert_eq!(got.unwrap().len(), all.len());
        // A scanner restarting from the front would need ~2,600 passes over megabytes here.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn error_replies() {
        assert!(is_error_reply(b"-ERR x\r\n"));
        assert!(is_error_reply(b"!3\r\nERR\r\n"));
        assert!(!is_error_reply(b"+OK\r\n"));
        assert!(!is_error_reply(b""));
    }
}
