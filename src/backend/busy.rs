//! Whether a server that has not answered a connection's oldest request for `command_timeout_ms`
//! is busy running a script rather than gone: asked on a new connection, a busy server answers
//! `-BUSY` at once (past its `busy-reply-threshold`), and then its connections are kept, so the
//! script's own client gets the script's reply (or Redis's `Script killed` error) as directly.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::control::ControlConn;
use super::ConnSettings;
use crate::resp::Value;

/// One connection's probe, asked again each `command_timeout_ms` while the wait goes on.
#[derive(Default)]
pub(super) struct BusyProbe {
    asked: Option<oneshot::Receiver<bool>>,
    busy_until: Option<Instant>,
}

impl BusyProbe {
    /// The oldest request is overdue: whether to keep waiting for it. False once the server was
    /// found not busy (or unreachable): the connection is given up as before.
    pub fn keep_waiting(&mut self, addr: &Arc<str>, settings: &ConnSettings) -> bool {
        let now = Instant::now();
        if self.busy_until.is_some_and(|t| now < t) {
            return true;
        }
        let Some(asked) = self.asked.as_mut() else {
            self.asked = Some(ask(addr.clone(), settings));
            return true;
        };
        match asked.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => true,
            Ok(true) => {
                self.asked = None;
                self.busy_until = Some(now + settings.command_timeout);
                true
            }
            Ok(false) | Err(oneshot::error::TryRecvError::Closed) => false,
        }
    }
}

/// Sends `PING` on a new connection; true if the server answered `-BUSY`.
fn ask(addr: Arc<str>, settings: &ConnSettings) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    let (creds, timeout) = (settings.creds.clone(), settings.connect_timeout);
    tokio::spawn(async move {
        let busy = match ControlConn::connect(&addr, &creds, timeout).await {
            Ok(mut conn) => {
                matches!(conn.call(&["PING"]).await, Ok(Value::Error(e)) if e.starts_with(b"BUSY"))
            }
            Err(_) => false,
        };
        let _ = tx.send(busy);
    });
    rx
}
