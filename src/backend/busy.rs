//! Whether a server that has not answered a connection's oldest request for a while is busy
//! running a script rather than gone: asked on a new connection, a busy server answers `-BUSY`
//! at once (past its `busy-reply-threshold`). Then the connection is kept past
//! `command_timeout_ms`, so the script's own client gets the script's reply (or Redis's `Script
//! killed` error) as directly, and the requests other clients would queue behind the script get
//! the server's `-BUSY` at once, as directly, instead of waiting for the script's end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::control::ControlConn;
use super::ConnSettings;
use crate::resp::{error_reply, Value};

/// How long the oldest request waits before the server is asked whether it is busy, and how
/// often again while it waits (Redis answers `-BUSY` past `busy-reply-threshold`, 5 s by
/// default; before that it makes every client wait, as the proxy's do).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What the server answers a connection's oldest request (by its number), asked on a new
/// connection while that request waits.
#[derive(Default)]
pub(super) struct BusyProbe {
    /// The request asked about, and the answer to come: the server's `-BUSY` reply, or `None`
    /// when it is not busy (or did not answer).
    asked: Option<(u64, oneshot::Receiver<Option<Bytes>>)>,
    /// The latest answer about that request, and when it came.
    answer: Option<(u64, Option<Bytes>, Instant)>,
}

impl BusyProbe {
    /// Each tick with the oldest request waiting (its number and age): whether to keep the
    /// connection. False once that request is overdue (`command_timeout_ms`) and the server was
    /// last found not busy: the connection is given up as before.
    pub fn keep_waiting(
        &mut self,
        oldest: Option<(u64, Duration)>,
        addr: &Arc<str>,
        settings: &ConnSettings,
    ) -> bool {
        let Some((seq, age)) = oldest else {
            *self = BusyProbe::default();
            return true;
        };
        let now = Instant::now();
        if let Some((asked_seq, rx)) = self.asked.as_mut() {
            let asked_seq = *asked_seq;
            match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {}
                Ok(busy) => {
                    self.answer = Some((asked_seq, busy, now));
                    self.asked = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.answer = Some((asked_seq, None, now));
                    self.asked = None;
                }
            }
        }
        if self.answer.as_ref().is_some_and(|(s, ..)| *s != seq) {
            self.answer = None;
        }
        let due = self
            .answer
            .as_ref()
            .is_none_or(|(.., at)| now.duration_since(*at) >= PROBE_EVERY);
        let overdue = age > settings.command_timeout;
        if (overdue || age >= PROBE_EVERY) && due && self.asked.is_none() {
            self.asked = Some((seq, ask(addr.clone(), settings)));
        }
        let not_busy = matches!(self.answer, Some((_, None, _)));
        !(overdue && not_busy)
    }

    /// The server's `-BUSY` reply while the oldest request, number `oldest`, waits on a busy
    /// script: what the server would answer a new request on this connection at once, had it
    /// not to wait behind that one.
    pub fn busy_reply(&self, oldest: Option<u64>) -> Option<&Bytes> {
        match &self.answer {
            Some((seq, Some(reply), _)) if Some(*seq) == oldest => Some(reply),
            _ => None,
        }
    }
}

/// Sends `PING` on a new connection; the server's `-BUSY` reply if it answers one.
fn ask(addr: Arc<str>, settings: &ConnSettings) -> oneshot::Receiver<Option<Bytes>> {
    let (tx, rx) = oneshot::channel();
    let (creds, timeout) = (settings.creds.clone(), settings.connect_timeout);
    tokio::spawn(async move {
        let busy = match ControlConn::connect(&addr, &creds, timeout).await {
            Ok(mut conn) => match conn.call(&["PING"]).await {
                Ok(Value::Error(e)) if e.starts_with(b"BUSY") => {
                    Some(error_reply(&String::from_utf8_lossy(&e)))
                }
                _ => None,
            },
            Err(_) => None,
        };
        let _ = tx.send(busy);
    });
    rx
}
