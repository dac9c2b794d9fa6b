//! `CONFIG SET` through the main endpoint goes to every server of the topology, the master and
//! each replica, so the replicas that serve reads behave like the master (encodings,
//! `notify-keyspace-events`, `busy-reply-threshold`, ...); the client gets one reply.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::dispatcher::Dispatcher;
use super::queue::{Batch, Pending};
use crate::backend::{BackendError, BatchReply, Dispatch};
use crate::resp::{error_reply, is_error_reply, status_reply, CommandInfo, Request};
use crate::router::RoutingTable;

/// Whether `info` is a command that must reach every server.
pub(super) fn to_every_server(info: Option<&CommandInfo>) -> bool {
    info.is_some_and(|i| i.name == "config|set")
}

impl Dispatcher {
    /// Sends `req` to the master and every replica the table names, on this client's shared
    /// connections (so its later requests to each server come after it). `Err(req)`: there is
    /// no master to send to now, and the caller routes it as a write (held).
    pub(super) async fn every_server(
        &mut self,
        req: Request,
        table: &RoutingTable,
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
        let raw = req.into_raw();
        let mut servers = vec![master.clone()];
        servers.extend(
            table
                .replicas
                .iter()
                .filter_map(|r| self.ctx.backends.resolve(r)),
        );
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
            let _ = tx.send(BatchReply {
                frames: vec![combine(&replies)],
                error: None,
                confirmed: None,
            });
        });
        let batch = Batch::single(raw, 1, self.db());
        self.queue.push_back(Pending::Waiting {
            rx,
            batch,
            backend: master,
        });
        Ok(())
    }
}

fn no_reply(error: Option<BackendError>) -> Bytes {
    let why = error.map_or_else(|| "the connection was lost".to_string(), |e| e.to_string());
    error_reply(&format!("ERR no reply: {why}"))
}

/// One reply for the servers' replies, master first: `+OK` when each said so; the error when
/// every server gave the same one (an unknown parameter, a bad value: Redis's own words);
/// else the servers that refused, with their errors.
fn combine(replies: &[(String, Bytes)]) -> Bytes {
    if replies.iter().all(|(_, r)| !is_error_reply(r)) {
        return status_reply("OK");
    }
    if let Some((_, first)) = replies.first() {
        if replies.iter().all(|(_, r)| r == first) {
            return first.clone();
        }
    }
    let failed: Vec<String> = replies
        .iter()
        .filter(|(_, r)| is_error_reply(r))
        .map(|(addr, r)| {
            let text = String::from_utf8_lossy(r.get(1..).unwrap_or_default());
            format!("{addr} ({})", text.trim_end())
        })
        .collect();
    error_reply(&format!("ERR CONFIG SET failed on {}", failed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(addr: &str, reply: &'static [u8]) -> (String, Bytes) {
        (addr.to_string(), Bytes::from_static(reply))
    }

    #[test]
    fn ok_only_when_every_server_said_so() {
        assert_eq!(
            combine(&[r("m", b"+OK\r\n"), r("r", b"+OK\r\n")]),
            status_reply("OK")
        );
        let unknown = b"-ERR Unknown option or number of arguments for CONFIG SET - 'x'\r\n";
        assert_eq!(
            combine(&[r("m", unknown), r("r", unknown)]),
            Bytes::from_static(unknown),
            "the same refusal everywhere: Redis's own words"
        );
        assert_eq!(
            combine(&[
                r("m", b"+OK\r\n"),
                r("r1", b"-ERR nope\r\n"),
                r("r2", b"+OK\r\n")
            ]),
            error_reply("ERR CONFIG SET failed on r1 (ERR nope)")
        );
    }
}
