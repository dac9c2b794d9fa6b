//! `CLIENT REPLY ON|OFF|SKIP`: which of a session's replies the client never sees.
//!
//! Redis suppresses a reply as it is produced; the proxy's replies come back from the dispatcher
//! in request order, one frame per request, some long after the request. So the session marks a
//! request whose reply must go when it dispatches it, by its place among the replies still owed
//! (the dispatcher's `queued()`), and [`ReplyMode::filter`] drops the frames at those places as
//! they reach the output buffer. While nothing is marked, nothing is scanned.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::resp::reply::MAX_REPLY_DEPTH;
use crate::resp::{error_reply, status_reply, ReplyScanner, Request};

/// A session's reply mode and the replies it marked to drop.
#[derive(Debug, Default)]
pub struct ReplyMode {
    /// `CLIENT REPLY OFF` in force.
    off: bool,
    /// `CLIENT REPLY SKIP` came just before: the next command's reply goes.
    skip: bool,
    /// Places (counted from `base`) of the replies to drop, ascending.
    drop: VecDeque<u64>,
    /// Replies that reached the output buffer since the first of `drop` was marked.
    seen: u64,
    scanner: Option<ReplyScanner>,
}

/// What `CLIENT REPLY` asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Switch {
    /// `ON`: answered (never dropped).
    Reply(Bytes),
    /// `OFF`, `SKIP`: no reply at all, as in Redis.
    Silent,
    /// Bad arguments: Redis's error, dropped like any other reply when replies are off.
    Error(Bytes),
}

impl ReplyMode {
    /// Called for each command: whether its reply is to be dropped (replies off, or the command
    /// after `SKIP`). Consumes the `SKIP`.
    pub fn next_command(&mut self) -> bool {
        std::mem::take(&mut self.skip) || self.off
    }

    /// The reply of the command about to be dispatched goes, `owed` replies being due before it.
    pub fn drop_reply(&mut self, owed: usize) {
        if self.drop.is_empty() {
            self.seen = 0;
        }
        self.drop
            .push_back(self.seen + u64::try_from(owed).unwrap_or(u64::MAX));
    }

    /// The command marked last produces no reply after all (it was `CLIENT REPLY` itself, or the
    /// session went into subscriber mode with it).
    pub fn unmark_last(&mut self) {
        self.drop.pop_back();
    }

    /// `CLIENT REPLY ...` (checked for arity by the caller).
    pub fn switch(&mut self, req: &Request) -> Switch {
        if req.argc() != 3 {
            return Switch::Error(error_reply(
                "ERR wrong number of arguments for 'client|reply' command",
            ));
        }
        let mode = req.arg(2).unwrap_or_default().to_ascii_lowercase();
        match &mode[..] {
            b"on" => {
                (self.off, self.skip) = (false, false);
                Switch::Reply(status_reply("OK"))
            }
            b"off" => {
                self.off = true;
                Switch::Silent
            }
            b"skip" => {
                self.skip = !self.off;
                Switch::Silent
            }
            _ => Switch::Error(error_reply("ERR syntax error")),
        }
    }

    /// Drops the marked replies among those appended to `out` from `start` on.
    pub fn filter(&mut self, out: &mut BytesMut, start: usize) {
        if self.drop.is_empty() || out.len() <= start {
            return;
        }
        let mut fresh = out.split_off(start);
        let scanner = self
            .scanner
            .get_or_insert_with(|| ReplyScanner::new(MAX_REPLY_DEPTH));
        // The replies are whole frames of the server's (checked once already) or the proxy's.
        while let Ok(Some(frame)) = scanner.next(&mut fresh) {
            if self.drop.front() == Some(&self.seen) {
                self.drop.pop_front();
            } else {
                out.extend_from_slice(&frame);
            }
            self.seen += 1;
            if self.drop.is_empty() {
                break;
            }
        }
        out.extend_from_slice(&fresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    #[test]
    fn off_skip_and_on_as_redis() {
        let mut m = ReplyMode::default();
        assert!(!m.next_command());
        assert_eq!(m.switch(&req(&["CLIENT", "REPLY", "SKIP"])), Switch::Silent);
        assert!(m.next_command(), "the command after SKIP");
        assert!(!m.next_command(), "and only that one");
        assert_eq!(m.switch(&req(&["CLIENT", "REPLY", "OFF"])), Switch::Silent);
        assert!(m.next_command());
        // SKIP while off changes nothing.
        assert_eq!(m.switch(&req(&["client", "reply", "skip"])), Switch::Silent);
        assert!(m.next_command() && m.next_command());
        assert!(matches!(
            m.switch(&req(&["CLIENT", "REPLY", "maybe"])),
            Switch::Error(_)
        ));
        assert_eq!(
            m.switch(&req(&["CLIENT", "REPLY", "ON"])),
            Switch::Reply(status_reply("OK"))
        );
        assert!(!m.next_command());
    }

    #[test]
    fn marked_replies_are_dropped_as_they_arrive() {
        let mut m = ReplyMode::default();
        // Two replies owed before the first to drop, then the one after it dropped too.
        m.drop_reply(2);
        m.drop_reply(4);
        let mut out = BytesMut::from(&b"+old\r\n"[..]);
        out.extend_from_slice(b"+a\r\n$1\r\nb\r\n*1\r\n:1\r\n");
        m.filter(&mut out, 6);
        assert_eq!(&out[..], b"+old\r\n+a\r\n$1\r\nb\r\n");
        let start = out.len();
        out.extend_from_slice(b"+d\r\n-ERR e\r\n+f\r\n");
        m.filter(&mut out, start);
        assert_eq!(&out[start..], b"+d\r\n+f\r\n");
        // Nothing marked: nothing touched.
        out.extend_from_slice(b"*2\r\n");
        let len = out.len();
        m.filter(&mut out, start);
        assert_eq!(out.len(), len);
    }
}
