//! Why a command was answered with an error: the reasons `haproxy_rs_errors_total` counts.
//!
//! One function, [`ErrorReason::of`], reads the reason off the error reply itself, wherever it
//! came from (the server, or the proxy's own answer), so every place that writes an error to a
//! client counts it the same way, and a new refusal is counted without a new call site. The
//! proxy's own texts it recognises are pinned by tests where they are written
//! (`client::reply`, `client::policy`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a command failed, as the client's error reply says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// `-READONLY`: a write on the read-only endpoint (or a replica's own refusal).
    Readonly,
    /// Refused by the proxy's command policy (`commands.deny`, `commands.allow`, the topology and
    /// lockout guards).
    Policy,
    /// `-NOPERM` (outside the user's ACL rules) and `-WRONGPASS` (a failed login).
    Acl,
    /// `-NOAUTH`: a command before the client authenticated.
    Noauth,
    /// `-TRYAGAIN`: no master (a failover; the hold expired or is full), or the cluster did not
    /// answer within the retry window.
    Tryagain,
    /// `-ERR Protocol error`: input that is not RESP (the connection closes).
    Protocol,
    /// The server could not answer: unreachable, connection lost, too slow, an invalid reply, the
    /// proxy's login to it refused.
    Backend,
    /// The command's own error, Redis's way (`WRONGTYPE`, `ERR unknown command`, `CROSSSLOT`,
    /// a wrong number of arguments...), whether the server or the proxy answered it.
    Command,
    /// The proxy's other refusals (what it does not support, unconfirmed durable writes...).
    Other,
}

impl ErrorReason {
    /// Every reason, in the order of [`ErrorCounts`].
    pub const ALL: [ErrorReason; 9] = [
        ErrorReason::Readonly,
        ErrorReason::Policy,
        ErrorReason::Acl,
        ErrorReason::Noauth,
        ErrorReason::Tryagain,
        ErrorReason::Protocol,
        ErrorReason::Backend,
        ErrorReason::Command,
        ErrorReason::Other,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Readonly => "readonly",
            ErrorReason::Policy => "policy",
            ErrorReason::Acl => "acl",
            ErrorReason::Noauth => "noauth",
            ErrorReason::Tryagain => "tryagain",
            ErrorReason::Protocol => "protocol",
            ErrorReason::Backend => "backend",
            ErrorReason::Command => "command",
            ErrorReason::Other => "other",
        }
    }

    /// The reason of an error reply (`-CODE message\r\n`, or RESP3's `!len\r\nCODE message\r\n`).
    pub fn of(reply: &[u8]) -> ErrorReason {
        let text = match reply.first() {
            Some(b'!') => reply
                .iter()
                .position(|&b| b == b'\n')
                .and_then(|i| reply.get(i + 1..))
                .unwrap_or_default(),
            _ => reply.get(1..).unwrap_or_default(),
        };
        let code_len = text
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(text.len());
        let (code, message) = text.split_at(code_len);
        let message = message.strip_prefix(b" ").unwrap_or(message);
        match code {
            b"READONLY" => ErrorReason::Readonly,
            b"NOAUTH" => ErrorReason::Noauth,
            b"NOPERM" | b"WRONGPASS" => ErrorReason::Acl,
            b"TRYAGAIN" => ErrorReason::Tryagain,
            b"ERR" if message.starts_with(b"Protocol error") => ErrorReason::Protocol,
            b"ERR" if message.starts_with(b"haproxy-rs") => proxy_reason(message),
            _ => ErrorReason::Command,
        }
    }
}

/// What the proxy's own `-ERR haproxy-rs...` answers say (their texts: `client::reply`'s
/// `backend_error`, `client::policy`'s refusals).
fn proxy_reason(message: &[u8]) -> ErrorReason {
    const BACKEND: [&[u8]; 6] = [
        b"is unreachable",
        b"was lost",
        b"did not answer in time",
        b"could not authenticate to",
        b"sent an invalid reply",
        b"no reply",
    ];
    let has = |needle: &[u8]| message.windows(needle.len()).any(|w| w == needle);
    if has(b"' is refused") {
        ErrorReason::Policy
    } else if BACKEND.iter().any(|b| has(b)) {
        ErrorReason::Backend
    } else {
        ErrorReason::Other
    }
}

/// Errors per reason, counted with relaxed atomics on the data path.
#[derive(Debug, Default)]
pub struct ErrorCounts([AtomicU64; ErrorReason::ALL.len()]);

impl ErrorCounts {
    /// One error of `reason`.
    pub fn add(&self, reason: ErrorReason) {
        if let Some(c) = self.0.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every reason's count, in [`ErrorReason::ALL`]'s order, zeros included (so `rate()` has a
    /// series before the first error).
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ErrorReason::ALL
            .iter()
            .zip(&self.0)
            .map(|(r, c)| (r.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_read_off_the_error_code() {
        for (reply, reason) in [
            (&b"-READONLY You can't write against a read only replica.\r\n"[..], "readonly"),
            (b"-NOAUTH Authentication required.\r\n", "noauth"),
            (b"-NOPERM this user has no permissions to run the 'get' command\r\n", "acl"),
            (b"-WRONGPASS invalid username-password pair\r\n", "acl"),
            (b"-TRYAGAIN haproxy-rs: no master to write to\r\n", "tryagain"),
            (b"-ERR Protocol error: invalid multibulk length\r\n", "protocol"),
            (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "command"),
            (b"-ERR unknown command 'foo'\r\n", "command"),
            (b"-CROSSSLOT Keys in request don't hash to the same slot\r\n", "command"),
            (b"-ERR haproxy-rs does not support pub/sub commands inside a transaction\r\n", "other"),
            (b"-ERR haproxy-rs: 'FLUSHALL' is refused by the command policy (commands.deny)\r\n", "policy"),
            (b"-ERR haproxy-rs: server 10.0.0.1:6379 is unreachable; the command was not sent\r\n", "backend"),
            (b"!21\r\nNOAUTH Authentication\r\n", "noauth"),
            (b"-ERR\r\n", "command"),
            (b"-", "command"),
            (b"", "command"),
        ] {
            let got = ErrorReason::of(reply).as_str();
            assert_eq!(got, reason, "{}", String::from_utf8_lossy(reply));
        }
    }

    #[test]
    fn counts_keep_every_reason_in_order() {
        let c = ErrorCounts::default();
        c.add(ErrorReason::Readonly);
        c.add(ErrorReason::Other);
        c.add(ErrorReason::Other);
        let s = c.snapshot();
        assert_eq!(s.len(), ErrorReason::ALL.len());
        assert_eq!(s.first(), Some(&("readonly", 1)));
        assert_eq!(s.last(), Some(&("other", 2)));
        assert_eq!(s.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
