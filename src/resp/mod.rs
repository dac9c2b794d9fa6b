//! RESP on the data path: client request parsing, backend reply framing, reply decoding, encoding, command table.
//!
//! The two parsers that see every byte ([`RequestParser`] and [`ReplyScanner`]) are hand-written, incremental
//! and non-recursive: they keep their position between reads so a frame arriving in many pieces is scanned
//! once, and they never reserve memory from a length the peer declared.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod command;
mod command_table;
pub mod encode;
pub mod redirect;
pub mod reply;
pub mod request;
pub mod value;

pub use command::{
    acl_category_bit, command_stats_name, CommandFlags, CommandInfo, CommandTable,
    CommandTableError, ACL_CATEGORIES, COMMAND_STATS_OTHER, COMMAND_STATS_SLOTS,
};
pub use encode::{
    bulk_reply, encode_command, error_reply, int_reply, nil_reply, null_reply, status_reply,
};
pub use reply::{is_error_reply, ReplyScanner};
pub use request::{Request, RequestLimits, RequestParser};
pub use value::{parse_value, Value, MAX_VALUE_DEPTH};

/// A malformed client request or backend reply.
///
/// Client-side variants mirror Redis 7.0 `networking.c`; [`DecodeError::client_message`] gives the exact
/// text Redis replies with (the caller sends `-ERR <text>` and closes the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `*<n>` where n is not a number or exceeds the multibulk limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$<n>` where n is not a number, negative, or exceeds the bulk limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A multibulk element did not start with `$`; holds the byte found instead.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// No CR within the inline limit after `*`.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// No CR within the inline limit after `$`.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command line longer than the inline limit.
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// `*<n>` with n over 10 from a client that has not authenticated yet.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// `$<n>` with n over 16384 from a client that has not authenticated yet.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An inline command with an unterminated quote (or a closing quote not followed by a space).
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A client's input passed `client_query_buffer_limit`: the connection is closed without a
    /// reply, as Redis does (its log line says this).
    #[error("closing client that reached max query buffer length")]
    QueryBufferLimit,
    /// A backend reply nested deeper than the scanner's limit.
    #[error("reply nested deeper than {0} levels")]
    ReplyTooDeep(usize),
    /// A backend reply that is not valid RESP2/RESP3.
    #[error("invalid reply: {0}")]
    InvalidReply(&'static str),
}

impl DecodeError {
    /// The message Redis itself would send for this error, without the `ERR ` prefix.
    ///
    /// For client errors this is Redis 7.0's exact text, e.g. `Protocol error: invalid bulk length`.
    pub fn client_message(&self) -> String {
        self.to_string()
    }

    /// Whether this error came from parsing a client request (as opposed to a backend reply).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::ReplyTooDeep(_) | Self::InvalidReply(_))
    }
}

/// Redis `string2ll`: strict decimal, optional `-`, no `+`, no leading zeros, no spaces, at most 20 bytes.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -(2^63) is representable; anything larger is not.
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_matches_redis() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"123"), Some(123));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"99999999999999999999",
        ] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn client_messages_are_redis_texts() {
        assert_eq!(
            DecodeError::ExpectedDollar(b'x').client_message(),
            "Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            DecodeError::TooBigMultibulkCount.client_message(),
            "Protocol error: too big mbulk count string"
        );
    }
}
