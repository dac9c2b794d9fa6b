//! The `CLIENT` subcommands a session answers itself: about its own connection (`SETNAME`,
//! `INFO`, ...), about the proxy's other clients (`LIST`, `KILL`, `UNBLOCK`, `PAUSE`), and about
//! its replies (`REPLY`); and how `CLIENT PAUSE` holds the session's commands.

use bytes::Bytes;
use tokio::sync::watch;

use super::session::Session;
use crate::client::registry::{parse_i64, Clients, Pause};
use crate::client::reply::backend_error;
use crate::client::reply_mode::Switch;
use crate::resp::{error_reply, int_reply, CommandFlags, CommandInfo, Request, Value};
use crate::router::ConnCmd;

/// Redis 7.0's commands flagged `may_replicate` without `write`, which `CLIENT PAUSE WRITE`
/// holds too. Its `COMMAND` does not report that flag, so they are named here (checked one by
/// one against redis-server 7.0 under a pause).
const MAY_REPLICATE: &[&str] = &[
    "eval",
    "evalsha",
    "fcall",
    "publish",
    "spublish",
    "pfcount",
    "pfselftest",
];

/// Whether `CLIENT PAUSE WRITE` holds the command: flagged `write` or `may_replicate`
/// (`PUBLISH`, `EVAL`, `PFCOUNT`, ...), as Redis 7.0 decides.
pub(super) fn holds_on_write(info: Option<&CommandInfo>) -> bool {
    info.is_some_and(|i| {
        i.flags.contains(CommandFlags::WRITE)
            || i.flags.contains(CommandFlags::MAY_REPLICATE)
            || MAY_REPLICATE.contains(&i.name.as_str())
    })
}

/// Returns when `pause` (the one a command waits for) may be over: it was changed or lifted, or
/// its time is up.
pub(super) async fn pause_changed(rx: &mut watch::Receiver<Option<Pause>>, pause: Option<Pause>) {
    let Some(p) = pause else {
        return;
    };
    tokio::select! {
        r = rx.changed() => {
            if r.is_err() {
                tokio::time::sleep_until(p.until).await;
            }
        }
        _ = tokio::time::sleep_until(p.until) => {}
    }
}

impl Session {
    /// Whether `CLIENT PAUSE` holds a command (`info`) now: every command under `ALL`; under
    /// `WRITE` the writes, and `EXEC` of a transaction that queued one. A command Redis does not
    /// know is refused before the pause, as Redis does.
    pub(super) fn paused(&self, info: Option<&CommandInfo>) -> bool {
        let Some(pause) = *self.pauses.borrow() else {
            return false;
        };
        let Some(i) = info else {
            return false;
        };
        pause.holds(holds_on_write(info) || (i.name == "exec" && self.tx_writes))
    }

    /// The command postponed by `CLIENT PAUSE` runs once the pause is over.
    pub(super) async fn resume_postponed(&mut self) {
        let commands = self.ctx.commands.load_full();
        let Some(req) = self.postponed.take() else {
            return;
        };
        self.dispatch.begin_read();
        self.handle(req, &commands).await;
        self.dispatch.flush().await;
    }

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
