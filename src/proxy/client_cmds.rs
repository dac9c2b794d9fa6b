//! The `CLIENT` subcommands a session answers itself: about its own connection (`SETNAME`,
//! `INFO`, ...), about the proxy's other clients (`LIST`, `KILL`), and about its replies
//! (`REPLY`).

use bytes::Bytes;

use super::session::Session;
use crate::client::reply_mode::Switch;
use crate::resp::{error_reply, Request};
use crate::router::ConnCmd;

impl Session {
    /// Answers `CLIENT ...` (`cmd`); `None` when it has no reply (`CLIENT REPLY OFF`/`SKIP`).
    /// `dropped`: its reply was marked to be dropped (replies are off).
    pub(super) async fn conn_command(
        &mut self,
        cmd: ConnCmd,
        req: &Request,
        in_multi: bool,
        dropped: bool,
    ) -> Option<Bytes> {
        if in_multi && cmd.proxy_wide() {
            // Queued, it would run on the transaction's server connection, and act on the
            // proxy's connections there: refused, and the transaction with it.
            self.dispatch.spoil_transaction();
            return Some(error_reply(&format!(
                "ERR haproxy-rs does not support 'CLIENT {}' inside a transaction",
                String::from_utf8_lossy(req.arg(1).unwrap_or_default()).to_uppercase()
            )));
        }
        let reply = match cmd {
            ConnCmd::Kill => {
                let (reply, me) = self.client.kill(req, &self.ctx.clients, &self.ctx.security);
                if me {
                    self.close_input();
                }
                reply
            }
            ConnCmd::Reply => match self.replies.switch(req) {
                Switch::Reply(reply) => {
                    // `ON` is answered whatever came before.
                    if dropped {
                        self.replies.unmark_last();
                    }
                    reply
                }
                Switch::Silent => {
                    if dropped {
                        self.replies.unmark_last();
                    }
                    return None;
                }
                Switch::Error(e) => e,
            },
            cmd => self
                .client
                .answer(cmd, req, self.protocol, &self.ctx.clients, &self.entry),
        };
        Some(reply)
    }
}
