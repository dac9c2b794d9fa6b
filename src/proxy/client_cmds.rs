//! The `CLIENT` subcommands a session answers itself: about its own connection (`SETNAME`,
//! `INFO`, ...), about the proxy's other clients (`LIST`, `KILL`, `UNBLOCK`), and about its
//! replies (`REPLY`).

use bytes::Bytes;

use super::session::Session;
use crate::client::registry::{parse_i64, Clients};
use crate::client::reply::backend_error;
use crate::client::reply_mode::Switch;
use crate::resp::{error_reply, int_reply, Request, Value};
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
            ConnCmd::Unblock => {
                let ctx = self.ctx.clone();
                unblock(&ctx.clients, req).await
            }
            cmd => self
                .client
                .answer(cmd, req, self.protocol, &self.ctx.clients, &self.entry),
        };
        Some(reply)
    }
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: a client of the proxy's blocked in a command on its
/// own connection is released by that connection's server, as Redis releases it (the
/// command's timeout reply, or `-UNBLOCKED`); `:1` when it was, `:0` otherwise.
async fn unblock(clients: &Clients, req: &Request) -> Bytes {
    let error = match (req.argc(), req.arg(3)) {
        (0..=2, _) => {
            return error_reply("ERR wrong number of arguments for 'client|unblock' command")
        }
        (3, _) => false,
        (4, Some(r)) if r.eq_ignore_ascii_case(b"timeout") => false,
        (4, Some(r)) if r.eq_ignore_ascii_case(b"error") => true,
        (4, _) => return error_reply("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
        _ => return error_reply(
            "ERR unknown subcommand or wrong number of arguments for 'unblock'. Try CLIENT HELP.",
        ),
    };
    let Some(id) = req.arg(2).and_then(parse_i64) else {
        return error_reply("ERR value is not an integer or out of range");
    };
    let target = u64::try_from(id)
        .ok()
        .and_then(|id| clients.get(id))
        .and_then(|e| e.blocked_on());
    let Some(on) = target else {
        return int_reply(0);
    };
    match on.unblock(error).await {
        Ok(Value::Int(n)) => int_reply(n),
        Ok(Value::Error(e)) => error_reply(&String::from_utf8_lossy(&e)),
        Ok(_) => int_reply(0),
        Err(e) => backend_error(&e, on.backend.addr()).0,
    }
}
