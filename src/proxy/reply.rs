//! The one place that decides what a client sees when something fails.

use bytes::Bytes;

use crate::backend::BackendError;
use crate::resp::{error_reply, DecodeError};

/// Whether the client connection must close after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Keep serving.
    No,
    /// Close once the reply is written.
    AfterReply,
}

/// A client's malformed input: Redis's own `-ERR Protocol error: ...`, then the connection closes.
pub fn protocol_error(e: &DecodeError) -> (Bytes, Close) {
    (
        error_reply(&format!("ERR {}", e.client_message())),
        Close::AfterReply,
    )
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
