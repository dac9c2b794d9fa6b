//! Commands that go to every server of the topology, the master and each replica, with one
//! reply: `CONFIG SET` through the main endpoint, so the replicas that serve reads behave like the
//! master (encodings, `notify-keyspace-events`, `busy-reply-threshold`, ...); `SCRIPT KILL` and
//! `FUNCTION KILL`, on connections of their own (the shared ones may wait behind the very
//! script), since a script may run on the master or on a replica (`EVAL_RO`, `FCALL_RO`).

use bytes::Bytes;
use tokio::sync::oneshot;

use super::dispatcher::Dispatcher;
use super::queue::{Batch, Pending};
use std::sync::Arc;

use crate::backend::{Backend, BackendError, BatchReply, Dispatch};
use crate::client::fanout::{config_set_reply, kill_on_each, no_reply};
use crate::resp::{CommandInfo, Request};
use crate::router::RoutingTable;

/// How a command reaches every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fanout {
    /// On the client's shared connections, in order with its other requests (`CONFIG SET`).
    Shared,
    /// On a new connection to each server, which a busy one still answers (`SCRIPT KILL`).
    Own,
}

/// Whether `info` is a command that must reach every server, and how.
pub(super) fn fanout(info: Option<&CommandInfo>) -> Option<Fanout> {
    match info?.name.as_str() {
        "config|set" => Some(Fanout::Shared),
        "script|kill" | "function|kill" => Some(Fanout::Own),
        _ => None,
    }
}

impl Dispatcher {
    /// Sends `req` to the master and every replica the table names, on this client's shared
    /// connections (so its later requests to each server come after it). `Err(req)`: there is
    /// no master to send to now, and the caller routes it as a write (held).
    pub(super) async fn every_server(
        &mut self,
        req: Request,
        table: &RoutingTable,
        how: Fanout,
    ) -> Result<(), Request> {
        let Some(master) = table
            .master
            .as_ref()
            .filter(|_| table.fence.is_none())
            .and_then(|m| self.ctx.backends.resolve(m))
        else {
            return Err(req);
        };
        self.flush().await;
        let args: Vec<Bytes> = match how {
            Fanout::Own => req.args().map(Bytes::copy_from_slice).collect(),
            Fanout::Shared => Vec::new(),
        };
        let raw = req.into_raw();
        let mut servers = vec![master.clone()];
        servers.extend(
            table
                .replicas
                .iter()
                .filter_map(|r| self.ctx.backends.resolve(r)),
        );
        let rx = match how {
            Fanout::Shared => self.on_shared(&servers, &raw).await,
            Fanout::Own => on_own(servers, args),
        };
        let batch = Batch::single(raw, u32::from(how == Fanout::Shared), self.db());
        self.queue.push_back(Pending::Waiting {
            rx,
            batch,
            backend: master,
        });
        Ok(())
    }
}

impl Dispatcher {
    /// Sends `raw` to each of `servers` on this client's shared connections; the combined reply.
    async fn on_shared(
        &mut self,
        servers: &[Arc<Backend>],
        raw: &Bytes,
    ) -> oneshot::Receiver<BatchReply> {
        let mut parts = Vec::with_capacity(servers.len());
        for backend in servers {
            let (dispatch, rx) = Dispatch::new(raw.clone(), 1, false);
            let sent = match backend.pool(self.worker, self.protocol, self.db()) {
                Some(pool) => pool.send(self.slot, dispatch).await,
                None => Err(BackendError::Unavailable),
            };
            parts.push((backend.addr().to_string(), sent.map(|()| rx)));
        }
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut replies = Vec::with_capacity(parts.len());
            for (addr, part) in parts {
                let reply = match part {
                    Ok(rx) => match rx.await {
                        Ok(BatchReply { mut frames, .. }) if !frames.is_empty() => {
                            frames.swap_remove(0)
                        }
                        Ok(BatchReply { error, .. }) => no_reply(error),
                        Err(_) => no_reply(None),
                    },
                    Err(e) => no_reply(Some(e)),
                };
                replies.push((addr, reply));
            }
            let _ = tx.send(one_reply(config_set_reply(&replies)));
        });
        rx
    }
}

/// Sends `args` to each of `servers` on a new connection of its own, all at once; the combined
/// reply, as Redis words it for the kill commands.
fn on_own(servers: Vec<Arc<Backend>>, args: Vec<Bytes>) -> oneshot::Receiver<BatchReply> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(one_reply(kill_on_each(&servers, &args).await));
    });
    rx
}

fn one_reply(frame: Bytes) -> BatchReply {
    BatchReply {
        frames: vec![frame],
        error: None,
        confirmed: None,
    }
}
