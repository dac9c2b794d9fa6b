//! A plain request/reply connection for the proxy's own questions (INFO, ROLE, SENTINEL, COMMAND, pub/sub).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{connect_stream, BackendError};
use crate::config::MaskedString;
use crate::resp::{encode_command, parse_value, ReplyScanner, Value};
use crate::tls::{ClientTls, Stream};

/// How to reach a kind of server: TLS, if configured, then `AUTH` right after connecting.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// ACL user, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<MaskedString>,
    /// TLS to the server (`[backend] tls`, `[sentinel] tls`); plain TCP when `None`.
    pub tls: Option<Arc<ClientTls>>,
}

impl Credentials {
    /// The `AUTH` command to send, if there is a password.
    pub fn auth_command(&self) -> Option<Vec<Vec<u8>>> {
        let pw = self.password.as_ref()?;
        let mut args = vec![b"AUTH".to_vec()];
        if let Some(u) = &self.username {
            args.push(u.as_bytes().to_vec());
        }
        args.push(pw.expose().as_bytes().to_vec());
        Some(args)
    }
}

/// One connection used for control traffic; every call has a deadline.
pub struct ControlConn {
    stream: Stream,
    rbuf: BytesMut,
    scanner: ReplyScanner,
    timeout: Duration,
}

impl ControlConn {
    /// Connects, authenticates and names the connection `haproxy-rs`.
    ///
    /// # Errors
    /// Connect failure, timeout, or an error reply to AUTH.
    pub async fn connect(
        addr: &str,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<ControlConn, BackendError> {
        let stream = connect_stream(addr, creds.tls.as_deref(), timeout).await?;
        let mut conn = ControlConn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            scanner: ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH),
            timeout,
        };
        if let Some(auth) = creds.auth_command() {
            let reply = conn.call(&auth).await?;
            if let Value::Error(e) = reply {
                return Err(BackendError::Auth(String::from_utf8_lossy(&e).into_owned()));
            }
        }
        Ok(conn)
    }

    /// Sends one command and waits for its reply (an error reply is returned as `Value::Error`).
    ///
    /// # Errors
    /// I/O failure, timeout, or a reply that does not parse.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, BackendError> {
        let cmd = encode_command(args);
        tokio::time::timeout(self.timeout, write_flush(&mut self.stream, &cmd))
            .await
            .map_err(|_| BackendError::Timeout)??;
        tokio::time::timeout(self.timeout, self.read_value())
            .await
            .map_err(|_| BackendError::Timeout)?
    }

    /// Sends a command without waiting for a reply (for SUBSCRIBE).
    ///
    /// # Errors
    /// I/O failure or timeout.
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), BackendError> {
        let cmd = encode_command(args);
        tokio::time::timeout(self.timeout, write_flush(&mut self.stream, &cmd))
            .await
            .map_err(|_| BackendError::Timeout)??;
        Ok(())
    }

    /// Reads the next reply or pushed message, waiting as long as it takes (cancel-safe: bytes stay buffered).
    ///
    /// # Errors
    /// I/O failure, the server closing, or a reply that does not parse.
    pub async fn read_value(&mut self) -> Result<Value, BackendError> {
        loop {
            if let Some(raw) = self.scanner.next(&mut self.rbuf)? {
                return Ok(parse_value(raw)?);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }
}

/// Writes and flushes (a TLS stream may hold written bytes until flushed).
async fn write_flush(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// One field of an `INFO` reply (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\nslave_repl_offset:42\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "slave_repl_offset"), Some("42"));
        assert_eq!(info_field(info, "master"), None);
    }

    #[test]
    fn auth_command_has_user_when_set() {
        let c = Credentials {
            username: Some("u".into()),
            password: Some(MaskedString::new("p")),
            tls: None,
        };
        assert_eq!(c.auth_command().unwrap().len(), 3);
        assert!(Credentials::default().auth_command().is_none());
    }
}
