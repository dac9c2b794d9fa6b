//! Incremental parser for client requests (multibulk arrays of bulk strings, or inline commands).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::encode::encode_command_into;
use super::{string2ll, DecodeError};

/// Most arguments a client that has not authenticated may send in one multibulk (Redis 7).
const UNAUTHENTICATED_MAX_ARGS: u64 = 10;

/// Longest bulk a client that has not authenticated may send (Redis 7).
const UNAUTHENTICATED_MAX_BULK: u64 = 16 * 1024;

/// Never reserve more argument slots than this up front, whatever the client declared (Redis `argv_len`).
const MAX_ARGS_PREALLOC: usize = 1024;

/// One client command: the exact bytes to forward and the offsets of its arguments inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    raw: Bytes,
    args: Vec<Range<usize>>,
}

impl Request {
    /// The multibulk bytes to forward to Redis (an inline command has been re-encoded as a multibulk).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the request, returning its raw bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).and_then(|r| self.raw.get(r.clone()))
    }

    /// All arguments in order, the command name first.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        self.args.iter().filter_map(|r| self.raw.get(r.clone()))
    }

    /// The command name as sent (any case), or `b""` for an empty request.
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    /// Builds a request from its arguments, encoding them as a multibulk.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        let mut buf = BytesMut::new();
        let mut ranges = Vec::with_capacity(args.len());
        encode_command_into(&mut buf, args, |r| ranges.push(r));
        Request {
            raw: buf.freeze(),
            args: ranges,
        }
    }
}

/// Bounds on what a client may send; defaults are Redis 7.0's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest accepted bulk string (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: u64,
    /// Largest accepted argument count (Redis: `INT_MAX`).
    pub max_multibulk_len: u64,
    /// Longest inline command line, and longest `*`/`$` count line (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes of a client's input held before they form a complete request, plus what the
    /// session declares it holds parsed and not sent yet ([`RequestParser::set_buffered`]):
    /// Redis's `client-query-buffer-limit` (1 GiB). Past it the client is closed without a reply.
    pub max_query_buffer: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1 << 30,
        }
    }
}

/// Where the parser stopped inside the request at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the next request has been examined yet.
    Idle,
    /// Inside an inline command: looking for its `\n`.
    Inline,
    /// Inside `*<n>\r\n`: looking for its CR.
    MultibulkCount,
    /// `remaining` bulks still to come; `bulk` is the length of the current one once its `$` line was read.
    Bulks { remaining: u64, bulk: Option<usize> },
}

/// Incremental, resumable client request parser.
///
/// All offsets are relative to the front of the caller's buffer, which only grows at the back between calls
/// until a request is taken off the front; so each call resumes exactly where the previous one stopped and
/// every byte is examined once.
#[derive(Debug)]
pub struct RequestParser {
    limits: RequestLimits,
    state: State,
    /// End of the part of the current request that has been parsed.
    pos: usize,
    /// Where the search for the current line's terminator resumes.
    scan: usize,
    args: Vec<Range<usize>>,
    /// Bytes searched for line terminators (for the linear-time test).
    scanned: u64,
    /// Redis's smaller limits apply until the client authenticates.
    unauthenticated: bool,
    /// Request bytes the session holds parsed and not sent yet, counted against the query buffer.
    buffered: usize,
}

/// Outcome of looking for a line terminator.
enum Line {
    /// Index of the terminator.
    Found(usize),
    NeedMore,
    TooLong,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            state: State::Idle,
            pos: 0,
            scan: 0,
            args: Vec::new(),
            scanned: 0,
            unauthenticated: false,
            buffered: 0,
        }
    }

    /// New limits (a reload's), from the next byte parsed on.
    pub fn set_limits(&mut self, limits: RequestLimits) {
        self.limits = limits;
    }

    /// Whether the client has yet to authenticate: until then a multibulk of more than 10
    /// arguments or a bulk over 16 KiB is a protocol error (Redis 7 `authRequired`), so an
    /// unauthenticated client cannot make the proxy buffer large requests.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Request bytes the session holds parsed and not sent on yet (a cluster-mode transaction
    /// being queued): they count against `max_query_buffer` with the bytes not parsed yet, as
    /// Redis counts its `MULTI` queue with its query buffer.
    pub fn set_buffered(&mut self, bytes: usize) {
        self.buffered = bytes;
    }

    /// Takes the next complete request off the front of `buf` (`split_to` + `freeze`, so the raw bytes are
    /// zero-copy).
    ///
    /// `Ok(None)`: more bytes are needed; the state is kept so the next call resumes where this one stopped.
    /// Empty requests (`*0`, `*-1`, blank inline lines) are consumed and skipped, as Redis does.
    ///
    /// A request whose bytes (with those [`set_buffered`](Self::set_buffered) declares) pass
    /// `max_query_buffer` is [`DecodeError::QueryBufferLimit`], whether it is still incomplete
    /// or arrived whole, and whatever the read splits (see `check_held`).
    ///
    /// # Errors
    /// A [`DecodeError`] whose [`client_message`](DecodeError::client_message) is what Redis would reply;
    /// the connection must then be closed (the parser is not usable afterwards).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        loop {
            match self.state {
                State::Idle => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => self.state = State::MultibulkCount,
                    Some(_) => self.state = State::Inline,
                },
                State::Inline => match self.inline(buf)? {
                    Step::NeedMore => return Ok(None),
                    Step::Skipped => {}
                    Step::Done(req) => return Ok(Some(req)),
                },
                State::MultibulkCount => match self.multibulk_count(buf)? {
                    Step::NeedMore => return Ok(None),
                    Step::Skipped | Step::Done(_) => {}
                },
                State::Bulks { .. } => match self.bulks(buf)? {
                    Step::NeedMore => return Ok(None),
                    Step::Skipped => {}
                    Step::Done(req) => return Ok(Some(req)),
                },
            }
        }
    }

    /// `held` bytes of the current request have been read and found valid (a count line, a
    /// bulk, or as much of a bulk's data as has come): past `max_query_buffer`, with what the
    /// session holds, the client is to be closed. Bytes of a line not terminated yet are not
    /// counted (they are bounded by `max_inline_len`), so the outcome does not depend on where
    /// the reads split: the check falls on the same valid byte either way.
    fn check_held(&self, held: usize) -> Result<(), DecodeError> {
        if held.saturating_add(self.buffered) > self.limits.max_query_buffer {
            return Err(DecodeError::QueryBufferLimit);
        }
        Ok(())
    }

    /// Finds `needle` in the current line (starting at `self.pos`) without re-examining bytes.
    fn find(&mut self, buf: &[u8], needle: u8) -> Line {
        let limit = self.limits.max_inline_len;
        // A terminator further than `limit` bytes into the line is "too long" whatever the read splits were.
        let window_end = buf
            .len()
            .min(self.pos.saturating_add(limit).saturating_add(1));
        let from = self.scan.max(self.pos);
        let hay = buf.get(from..window_end).unwrap_or_default();
        match hay.iter().position(|&b| b == needle) {
            Some(i) => {
                self.scanned += i as u64 + 1;
                self.scan = from + i;
                Line::Found(from + i)
            }
            None => {
                self.scanned += hay.len() as u64;
                self.scan = window_end;
                if buf.len() - self.pos > limit {
                    Line::TooLong
                } else {
                    Line::NeedMore
                }
            }
        }
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Step, DecodeError> {
        let nl = match self.find(buf, b'\n') {
            Line::Found(nl) => nl,
            Line::NeedMore => return Ok(Step::NeedMore),
            Line::TooLong => return Err(DecodeError::TooBigInline),
        };
        self.check_held(nl + 1)?;
        let end = match nl.checked_sub(1) {
            Some(cr) if buf.get(cr) == Some(&b'\r') => cr,
            _ => nl,
        };
        // Redis's strchr() stops at a NUL and would then wait for more input until the 64 KiB limit;
        // ending the line at the NUL instead (sdssplitargs does) avoids that stall.
        let args = split_args(buf.get(..end).unwrap_or_default())?;
        buf.advance(nl + 1);
        self.reset();
        if args.is_empty() {
            return Ok(Step::Skipped);
        }
        Ok(Step::Done(Request::from_args(&args)))
    }

    /// Reads the count line; Redis checks for the CR and the byte after it before anything else.
    fn multibulk_count(&mut self, buf: &mut BytesMut) -> Result<Step, DecodeError> {
        let cr = match self.find(buf, b'\r') {
            Line::Found(cr) if cr + 1 < buf.len() => cr,
            Line::Found(_) | Line::NeedMore => return Ok(Step::NeedMore),
            Line::TooLong => return Err(DecodeError::TooBigMultibulkCount),
        };
        let digits = buf.get(self.pos + 1..cr).unwrap_or_default();
        let count = match string2ll(digits) {
            Some(n) if n <= 0 => {
                // `*0` and `*-1` are consumed and ignored, like Redis.
                buf.advance(cr + 2);
                self.reset();
                return Ok(Step::Skipped);
            }
            Some(n) if n.unsigned_abs() <= self.limits.max_multibulk_len => n.unsigned_abs(),
            _ => return Err(DecodeError::InvalidMultibulkLength),
        };
        if self.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
            return Err(DecodeError::UnauthenticatedMultibulkLength);
        }
        self.pos = cr + 2;
        self.scan = self.pos;
        self.check_held(self.pos)?;
        let prealloc = usize::try_from(count).unwrap_or(MAX_ARGS_PREALLOC);
        self.args = Vec::with_capacity(prealloc.min(MAX_ARGS_PREALLOC));
        self.state = State::Bulks {
            remaining: count,
            bulk: None,
        };
        Ok(Step::Skipped)
    }

    fn bulks(&mut self, buf: &mut BytesMut) -> Result<Step, DecodeError> {
        while let State::Bulks { remaining, bulk } = self.state {
            if remaining == 0 {
                let raw = buf.split_to(self.pos).freeze();
                let args = std::mem::take(&mut self.args);
                self.reset();
                return Ok(Step::Done(Request { raw, args }));
            }
            let len = match bulk {
                Some(len) => len,
                None => match self.bulk_len(buf)? {
                    Some(len) => len,
                    None => return Ok(Step::NeedMore),
                },
            };
            // The two bytes after the data are skipped, not checked, like Redis.
            let Some(end) = self.pos.checked_add(len).and_then(|e| e.checked_add(2)) else {
                return Err(DecodeError::InvalidBulkLength);
            };
            if buf.len() < end {
                self.state = State::Bulks {
                    remaining,
                    bulk: Some(len),
                };
                // Everything read so far is this bulk's data: valid, and held.
                self.check_held(buf.len())?;
                return Ok(Step::NeedMore);
            }
            self.args.push(self.pos..self.pos + len);
            self.pos = end;
            self.scan = end;
            self.check_held(end)?;
            self.state = State::Bulks {
                remaining: remaining - 1,
                bulk: None,
            };
        }
        Ok(Step::NeedMore)
    }

    /// Reads a `$<len>\r\n` line at `self.pos`; `None` if it is not complete yet.
    fn bulk_len(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let cr = match self.find(buf, b'\r') {
            Line::Found(cr) if cr + 1 < buf.len() => cr,
            Line::Found(_) | Line::NeedMore => return Ok(None),
            Line::TooLong => return Err(DecodeError::TooBigBulkCount),
        };
        match buf.get(self.pos) {
            Some(b'$') => {}
            Some(&other) => return Err(DecodeError::ExpectedDollar(other)),
            None => return Ok(None),
        }
        let len = buf
            .get(self.pos + 1..cr)
            .and_then(string2ll)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n <= self.limits.max_bulk_len)
            .ok_or(DecodeError::InvalidBulkLength)?;
        if self.unauthenticated && len > UNAUTHENTICATED_MAX_BULK {
            return Err(DecodeError::UnauthenticatedBulkLength);
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::InvalidBulkLength)?;
        self.pos = cr + 2;
        self.scan = self.pos;
        self.check_held(self.pos)?;
        Ok(Some(len))
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.pos = 0;
        self.scan = 0;
    }
}

/// What one parsing step achieved.
enum Step {
    NeedMore,
    /// Progress was made (or an empty request was skipped); keep going.
    Skipped,
    Done(Request),
}

/// Redis `sdssplitargs`: whitespace-separated tokens, `"..."` with `\xHH` and `\n\r\t\b\a` escapes,
/// `'...'` with only `\'`; a closing quote must be followed by a space or the end. The line ends at a NUL.
///
/// # Errors
/// [`DecodeError::UnbalancedQuotes`] when a quote is not closed properly.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(at(line, p)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(out);
        }
        let (arg, next) = split_arg(line, p)?;
        out.push(arg);
        p = next;
    }
}

/// The byte at `i`, 0 past the end (the NUL that ends a C string).
fn at(line: &[u8], i: usize) -> u8 {
    line.get(i).copied().unwrap_or(0)
}

/// `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// What reading at one position of an argument did.
enum Read {
    /// Read up to and including this position; the argument goes on after it.
    Through(usize),
    /// The argument ended; the next one is looked for from this position.
    Ended(usize),
}

/// The argument that starts at `p`, and where to look for the next one.
fn split_arg(line: &[u8], mut p: usize) -> Result<(Vec<u8>, usize), DecodeError> {
    let mut cur = Vec::new();
    // The quote the argument is in at `p`, if any.
    let mut quote = None;
    loop {
        let read = match quote {
            Some(q) => in_quotes(line, p, q, &mut cur)?,
            None => unquoted(line, p, &mut cur, &mut quote),
        };
        match read {
            Read::Through(last) => p = last + 1,
            Read::Ended(next) => return Ok((cur, next)),
        }
    }
}

/// Inside `quote`s (`"` or `'`): an escape, the closing quote (which must be followed by a space
/// or the end), or a byte of the argument.
fn in_quotes(line: &[u8], p: usize, quote: u8, cur: &mut Vec<u8>) -> Result<Read, DecodeError> {
    if let Some(read) = escape(line, p, quote, cur) {
        return Ok(read);
    }
    let c = at(line, p);
    if c == quote {
        if at(line, p + 1) != 0 && !is_space(at(line, p + 1)) {
            return Err(DecodeError::UnbalancedQuotes);
        }
        Ok(Read::Ended(p + 1))
    } else if c == 0 {
        Err(DecodeError::UnbalancedQuotes)
    } else {
        cur.push(c);
        Ok(Read::Through(p))
    }
}

/// The escape at `p`, if there is one: `\xHH` and `\n\r\t\b\a` (any other byte stands for
/// itself) in `"..."`, only `\'` in `'...'`.
fn escape(line: &[u8], p: usize, quote: u8, cur: &mut Vec<u8>) -> Option<Read> {
    if at(line, p) != b'\\' {
        return None;
    }
    let next = at(line, p + 1);
    if quote == b'\'' {
        return (next == b'\'').then(|| {
            cur.push(b'\'');
            Read::Through(p + 1)
        });
    }
    if let (b'x', Some(hi), Some(lo)) = (next, hex(at(line, p + 2)), hex(at(line, p + 3))) {
        cur.push(hi * 16 + lo);
        return Some(Read::Through(p + 3));
    }
    if next == 0 {
        return None;
    }
    cur.push(match next {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    });
    Some(Read::Through(p + 1))
}

/// Outside quotes: a space (or the end) ends the argument, a quote opens quotes.
fn unquoted(line: &[u8], p: usize, cur: &mut Vec<u8>, quote: &mut Option<u8>) -> Read {
    let c = at(line, p);
    match c {
        b' ' | b'\n' | b'\r' | b'\t' => return Read::Ended(p + 1),
        0 => return Read::Ended(p),
        b'"' | b'\'' => *quote = Some(c),
        _ => cur.push(c),
    }
    Read::Through(p)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
