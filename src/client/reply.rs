//! The one place that decides what a client sees when something fails.

use bytes::Bytes;

use crate::backend::BackendError;
use crate::resp::{error_reply, DecodeError};
use crate::stats::ListenerStats;

/// Whether the client connection must close after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Keep serving.
    No,
    /// Close once the reply is written.
    AfterReply,
    /// Close at once: no reply, and replies still owed are dropped (Redis's `freeClientAsync`).
    Now,
}

/// A client's malformed input: Redis's own `-ERR Protocol error: ...`, then the connection
/// closes; past `client_query_buffer_limit`, nothing and the close at once, as Redis does.
pub fn protocol_error(e: &DecodeError) -> (Bytes, Close) {
    match e {
        DecodeError::QueryBufferLimit => (Bytes::new(), Close::Now),
        _ => (
            error_reply(&format!("ERR {}", e.client_message())),
            Close::AfterReply,
        ),
    }
}

/// What every session loop (both modes, subscriber and monitor mode) does with the parser's
/// error: logs it, counts a close for the query buffer limit, and says what the client gets (the
/// error reply is counted where it is written, as every error is).
pub fn input_error(stats: &ListenerStats, e: &DecodeError) -> (Bytes, Close) {
    let (reply, close) = protocol_error(e);
    if close == Close::Now {
        // Redis logs this at its warning level too: the operator should know which client.
        tracing::warn!(
            "closing client that reached max query buffer length (client_query_buffer_limit)"
        );
        stats.query_buffer_limit_reached();
    } else {
        tracing::debug!(error = %e, "client protocol error");
    }
    (reply, close)
}

/// A backend failure as a Redis-style error reply; the client connection stays open.
pub fn backend_error(e: &BackendError, backend: &str) -> (Bytes, Close) {
    let msg = match e {
        BackendError::Unavailable => {
            format!("ERR haproxy-rs: server {backend} is unreachable; the command was not sent")
        }
        BackendError::ConnectionLost | BackendError::Closed | BackendError::Io(_) => format!(
            "ERR haproxy-rs: connection to {backend} was lost; the command's outcome is unknown"
        ),
        BackendError::Timeout => format!(
            "ERR haproxy-rs: {backend} did not answer in time; the command's outcome is unknown"
        ),
        BackendError::Auth(_) => {
            format!("ERR haproxy-rs: the proxy could not authenticate to {backend}")
        }
        BackendError::Protocol(_) => {
            format!(
                "ERR haproxy-rs: {backend} sent an invalid reply; the command's outcome is unknown"
            )
        }
    };
    (error_reply(&msg), Close::No)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorReason;

    #[test]
    fn every_backend_failure_is_counted_as_a_backend_error() {
        for e in [
            BackendError::Unavailable,
            BackendError::ConnectionLost,
            BackendError::Closed,
            BackendError::Io(std::io::ErrorKind::BrokenPipe.into()),
            BackendError::Timeout,
            BackendError::Auth("WRONGPASS".into()),
            BackendError::Protocol(DecodeError::QueryBufferLimit),
        ] {
            let (reply, _) = backend_error(&e, "10.0.0.1:6379");
            assert_eq!(ErrorReason::of(&reply), ErrorReason::Backend, "{e:?}");
        }
    }

    #[test]
    fn a_protocol_error_is_counted_as_one() {
        let e = DecodeError::ExpectedDollar(b'x');
        let (reply, close) = protocol_error(&e);
        assert_eq!(close, Close::AfterReply);
        assert_eq!(ErrorReason::of(&reply), ErrorReason::Protocol);
    }
}
