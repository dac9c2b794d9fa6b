//! A lean RESP connection for the load generator: batched writes, replies split with [`ReplyScanner`].

use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::resp::{encode_command, parse_value, DecodeError, ReplyScanner, Value};

/// Read buffer reservation per read call.
const READ_CHUNK: usize = 64 * 1024;

/// Why a bench connection failed; [`ConnError::kind`] names it in the error counts.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The TCP connection (or AUTH/HELLO) could not be set up.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing failed, or the server closed the connection.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server sent something that is not RESP.
    #[error("protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// A control command (AUTH, SENTINEL, INFO, ...) got an error reply.
    #[error("{0}")]
    Reply(String),
}

impl ConnError {
    /// The error's kind in the report: `connect`, `io`, `timeout`, `protocol` or the reply's first word.
    pub fn kind(&self) -> String {
        match self {
            ConnError::Connect { .. } => "connect".into(),
            ConnError::Io(_) => "io".into(),
            ConnError::Timeout(_) => "timeout".into(),
            ConnError::Protocol(_) => "protocol".into(),
            ConnError::Reply(msg) => error_kind(msg.as_bytes()),
        }
    }
}

/// The first word of an error reply (`ERR`, `READONLY`, `LOADING`, ...), from its raw frame or text.
pub fn error_kind(raw: &[u8]) -> String {
    let body = match raw.first() {
        Some(b'-' | b'!') => raw.get(1..).unwrap_or_default(),
        _ => raw,
    };
    // `!<len>\r\n` (RESP3 blob error): skip the length line.
    let body = match body.iter().position(|&b| b == b'\n') {
        Some(i) if raw.first() == Some(&b'!') => body.get(i + 1..).unwrap_or_default(),
        _ => body,
    };
    let word: Vec<u8> = body
        .iter()
        .copied()
        .take_while(|b| !b.is_ascii_whitespace())
        .take(32)
        .collect();
    if word.is_empty() {
        "ERR".into()
    } else {
        String::from_utf8_lossy(&word).into_owned()
    }
}

/// The text of an error reply (CR/LF and the type byte stripped, at most 200 bytes).
pub fn error_message(raw: &[u8]) -> String {
    let text: Vec<u8> = raw
        .iter()
        .skip(1)
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .take(200)
        .collect();
    String::from_utf8_lossy(&text).into_owned()
}

/// Credentials sent with `AUTH` on connect.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// ACL user.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
}

/// One connection: a write path for whole batches and a scanner over the read buffer.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    scanner: ReplyScanner,
    timeout: Duration,
}

impl Conn {
    /// Connects to `addr` (TCP_NODELAY) and authenticates; every step bounded by `timeout`.
    ///
    /// # Errors
    /// [`ConnError::Connect`] when the socket or AUTH fails.
    pub async fn connect(addr: &str, auth: &Auth, timeout: Duration) -> Result<Self, ConnError> {
        let fail = |reason: String| ConnError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            scanner: ReplyScanner::new(64),
            timeout,
        };
        if let Some(password) = &auth.password {
            let mut args = vec!["AUTH"];
            args.extend(auth.user.as_deref());
            args.push(password.as_str());
            let reply = conn
                .call(&args)
                .await
                .map_err(|e| fail(format!("AUTH: {e}")))?;
            if let Value::Error(msg) = reply {
                return Err(fail(format!("AUTH: {}", String::from_utf8_lossy(&msg))));
            }
        }
        Ok(conn)
    }

    /// Writes a batch of encoded requests in one call.
    ///
    /// # Errors
    /// The write fails or takes longer than the timeout.
    pub async fn send(&mut self, batch: &[u8]) -> Result<(), ConnError> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(batch)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnError::Timeout(self.timeout)),
        }
    }

    /// The next complete reply already in the buffer, without reading.
    ///
    /// # Errors
    /// The bytes are not RESP.
    pub fn buffered_reply(&mut self) -> Result<Option<Bytes>, ConnError> {
        Ok(self.scanner.next(&mut self.rbuf)?)
    }

    /// Reads once more from the socket (no timeout: the caller bounds it). Cancel-safe.
    ///
    /// # Errors
    /// The read fails or the server closed the connection.
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        self.rbuf.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// [`Conn::fill`] as a poll, so one task can wait on several connections at once (`bench
    /// --cluster` waits on every master its batch went to) without a future per connection.
    ///
    /// # Errors
    /// The read fails or the server closed the connection.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => {
                    return Poll::Ready(Err(ConnError::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    )))
                }
                Ok(_) => return Poll::Ready(Ok(())),
                // A spurious readiness: try_read_buf cleared it, so the next poll waits again.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// The next reply, reading as needed, within the timeout.
    ///
    /// # Errors
    /// I/O, timeout or protocol errors.
    pub async fn reply(&mut self) -> Result<Bytes, ConnError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(r) = self.buffered_reply()? {
                return Ok(r);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnError::Timeout(self.timeout)),
            }
        }
    }

    /// Sends one command and decodes its reply (for control traffic, not the measured path).
    ///
    /// # Errors
    /// I/O, timeout or protocol errors; an error reply is returned as [`Value::Error`].
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ConnError> {
        self.send(&encode_command(args)).await?;
        Ok(parse_value(self.reply().await?)?)
    }

    /// [`Conn::call`], with an error reply turned into [`ConnError::Reply`].
    ///
    /// # Errors
    /// See [`Conn::call`].
    pub async fn call_ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ConnError> {
        match self.call(args).await? {
            Value::Error(msg) => Err(ConnError::Reply(String::from_utf8_lossy(&msg).into_owned())),
            v => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_first_words() {
        assert_eq!(error_kind(b"-READONLY You can't write\r\n"), "READONLY");
        assert_eq!(error_kind(b"-ERR unknown command\r\n"), "ERR");
        assert_eq!(error_kind(b"!21\r\nSYNTAX invalid syntax\r\n"), "SYNTAX");
        assert_eq!(error_kind(b"-\r\n"), "ERR");
        assert_eq!(error_message(b"-ERR no master\r\n"), "ERR no master");
        assert_eq!(
            ConnError::Reply("NOAUTH Authentication required.".into()).kind(),
            "NOAUTH"
        );
        assert_eq!(ConnError::Timeout(Duration::from_secs(1)).kind(), "timeout");
    }
}
