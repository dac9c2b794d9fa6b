//! A backend connection one client session holds for itself: for a transaction (`MULTI` ...
//! `EXEC`, `WATCH`) or a blocking command (`BLPOP`, `XREAD ... BLOCK`, `WAIT`), whose state or
//! wait must not touch the shared, pipelined connections.
//!
//! The connection is an actor like the shared ones, without the command timeout (a blocking
//! command may wait forever) and without reconnecting: when it fails, its requests get
//! "outcome unknown" and the session gets a fresh one next time. It closes when the session
//! lets go of it and its replies are in, or at once when the session goes away (a client gone
//! mid-`BLPOP` unblocks its server side by the close).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::conn::{connect_with_id, BatchReply, Dispatch, Protocol};
use super::{Backend, BackendError};
use crate::resp::{encode_command, error_reply, is_error_reply, ReplyScanner, Value};

/// The channel of [`wait_probe`]: nobody subscribes to it.
pub const WAIT_PROBE_CHANNEL: &str = "__haproxy-rs:wait";

/// `PUBLISH __haproxy-rs:wait ""`, sent on a pinned connection just before a client's `WAIT`,
/// whose reply the client never sees.
///
/// Redis's `WAIT` counts the replicas that acknowledged the *connection's* last write offset.
/// The client's writes went on shared connections, so the pinned one first runs a command that
/// Redis propagates to the replicas, which sets that offset to the master's current one; the
/// session sends it only once the client's earlier requests are answered, so the offset covers
/// all of the client's writes. `PUBLISH` changes no data and is propagated in every Redis
/// version outside cluster mode. (Redis 7.0 sets the offset after any command; 7.2 only after
/// one that propagated, so the probe must propagate. Redis Cluster sends `PUBLISH` over the
/// cluster bus instead: cluster mode has a probe of its own.)
pub fn wait_probe() -> Bytes {
    encode_command(&["PUBLISH", WAIT_PROBE_CHANNEL, ""])
}

/// Redis's answer to `WAIT` on a replica: what the read-only endpoint says.
pub const WAIT_ON_REPLICA: &str = "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.";

/// What the client gets instead of `WAIT`'s reply when the server refused the probe, `what`
/// (an ACL user without `PUBLISH` on the channel): the count would not cover the client's
/// writes. `None` when `reply` is not an error.
pub fn wait_probe_refused(reply: &[u8], what: &str) -> Option<Bytes> {
    if !is_error_reply(reply) {
        return None;
    }
    let why = String::from_utf8_lossy(reply.get(1..).unwrap_or_default());
    Some(error_reply(&format!(
        "ERR haproxy-rs: WAIT needs '{what}' on the master to count this client's writes, and it was refused: {}",
        why.trim_end()
    )))
}

/// Dispatches queued towards one pinned connection.
const QUEUE_DEPTH: usize = 1024;

/// Idle pinned connections kept per server.
const MAX_IDLE: usize = 16;
/// How long one is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// The session's handle on its pinned connection: dropping it lets the connection go once the
/// replies already asked for are in; [`Pinned::recycle`] keeps it for the next transaction.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// Shared by the session's clones of the handle (batches on their way): recycled only when
    /// no other clone is left.
    tx: Arc<mpsc::Sender<Dispatch>>,
    /// The connection's permit while it is in use (the actor keeps it as long as it runs);
    /// given back when the connection goes idle.
    permit: PermitSlot,
    backend: Arc<Backend>,
    protocol: Protocol,
    db: u8,
    /// The server's id for the connection (`CLIENT ID`), for `CLIENT UNBLOCK`.
    server_id: Option<u64>,
}

/// A client's blocking command waiting on a pinned connection: the server, and its id for the
/// connection.
#[derive(Debug, Clone)]
pub struct BlockedOn {
    /// The server.
    pub backend: Arc<Backend>,
    /// The connection's `CLIENT ID` there.
    pub server_id: u64,
}

impl BlockedOn {
    /// `CLIENT UNBLOCK <id> TIMEOUT|ERROR` (`error`), sent to the server on a connection of its
    /// own (the pinned one is busy waiting): the server's answer (`1` when it unblocked it), and
    /// the blocked client gets the server's timeout reply or `-UNBLOCKED` on its connection.
    ///
    /// # Errors
    /// The server could not be reached or did not answer in time.
    pub async fn unblock(&self, error: bool) -> Result<Value, BackendError> {
        let mut conn = self.backend.control().await?;
        let id = self.server_id.to_string();
        let how = if error { "ERROR" } else { "TIMEOUT" };
        conn.call(&["CLIENT", "UNBLOCK", id.as_str(), how]).await
    }
}

/// A server's pinned connections that were let go in a clean state: opening one costs a
/// connection set-up (and its teardown) on the server, about as much as a small transaction.
#[derive(Debug, Default)]
pub struct IdlePinned {
    conns: Mutex<Vec<Idle>>,
}

/// Where a pinned connection's permit lives: taken out when it goes idle, put back in use.
type PermitSlot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

#[derive(Debug)]
struct Idle {
    protocol: Protocol,
    db: u8,
    server_id: Option<u64>,
    since: Instant,
    tx: mpsc::Sender<Dispatch>,
    permit: PermitSlot,
}

impl IdlePinned {
    /// An idle connection speaking `protocol` in `db` whose actor still runs.
    fn take(
        &self,
        protocol: Protocol,
        db: u8,
    ) -> Option<(mpsc::Sender<Dispatch>, PermitSlot, Option<u64>)> {
        let mut conns = self.conns.lock().ok()?;
        conns.retain(|c| !c.tx.is_closed() && c.since.elapsed() < IDLE_FOR);
        let i = conns
            .iter()
            .rposition(|c| c.protocol == protocol && c.db == db)?;
        let idle = conns.swap_remove(i);
        Some((idle.tx, idle.permit, idle.server_id))
    }

    fn put(&self, conn: Idle) {
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        conns.retain(|c| !c.tx.is_closed() && c.since.elapsed() < IDLE_FOR);
        if conns.len() < MAX_IDLE {
            conns.push(conn);
        }
    }
}

impl Pinned {
    /// A connection to `backend` speaking `protocol` in database `db` (an idle one, or a new one),
    /// taking one of `limit`'s permits (the bound on pinned connections in use, all clients
    /// together; idle ones hold none).
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when every permit is taken or the connection cannot be
    /// opened (nothing was sent).
    pub async fn open(
        backend: Arc<Backend>,
        protocol: Protocol,
        db: u8,
        limit: &Arc<Semaphore>,
    ) -> Result<Pinned, BackendError> {
        let permit = limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| BackendError::Unavailable)?;
        if let Some((tx, slot, server_id)) = backend.idle_pinned.take(protocol, db) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
            return Ok(Pinned {
                tx: Arc::new(tx),
                permit: slot,
                backend,
                protocol,
                db,
                server_id,
            });
        }
        let slot: PermitSlot = Arc::new(Mutex::new(Some(permit)));
        let connected = connect_with_id(backend.addr(), &backend.settings, protocol, db, true);
        let (stream, server_id) = match connected.await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(backend.addr = backend.addr(), error = %e, "pinned connect failed");
                return Err(BackendError::Unavailable);
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let token = backend.token().clone();
        backend.stats.connection_opened();
        let stats = backend.stats.clone();
        let held = slot.clone();
        tokio::spawn(async move {
            serve(stream, rx, held, token).await;
            stats.connection_closed();
        });
        Ok(Pinned {
            tx: Arc::new(tx),
            permit: slot,
            backend,
            protocol,
            db,
            server_id,
        })
    }

    /// Lets the connection go for another transaction to use. Only for a connection left as a
    /// fresh one would be: its transaction ended by `EXEC`/`DISCARD` (or `UNWATCH`), no `SELECT`
    /// sent on it, nothing blocking still waiting. Replies still to come reach their own
    /// requests; the next user's requests queue behind them. A handle with clones left (a batch
    /// still to be sent on it) is only dropped.
    pub fn recycle(self) {
        let Pinned {
            tx,
            permit,
            backend,
            protocol,
            db,
            server_id,
        } = self;
        if let Ok(tx) = Arc::try_unwrap(tx) {
            // Idle, it no longer counts against `max_pinned_connections`.
            drop(permit.lock().unwrap_or_else(|e| e.into_inner()).take());
            backend.idle_pinned.put(Idle {
                protocol,
                db,
                server_id,
                since: Instant::now(),
                tx,
                permit,
            });
        }
    }

    /// The server this connection goes to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Where a blocking command sent on this connection waits (`None`: the server did not say
    /// its id for the connection).
    pub fn blocked_on(&self) -> Option<BlockedOn> {
        Some(BlockedOn {
            backend: self.backend.clone(),
            server_id: self.server_id?,
        })
    }

    /// Queues a dispatch on the connection.
    ///
    /// # Errors
    /// [`BackendError::ConnectionLost`] when the connection has failed already.
    pub async fn send(&self, dispatch: Dispatch) -> Result<(), BackendError> {
        self.tx
            .send(dispatch)
            .await
            .map_err(|_| BackendError::ConnectionLost)
    }
}

/// One dispatch written, collecting its replies.
struct Waiting {
    reply: tokio::sync::oneshot::Sender<BatchReply>,
    frames: Vec<bytes::Bytes>,
    count: usize,
}

async fn serve(
    stream: crate::tls::Stream,
    mut rx: mpsc::Receiver<Dispatch>,
    _permit: PermitSlot,
    token: CancellationToken,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH);
    let mut open = true;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let error = loop {
        if !open && waiting.is_empty() {
            break None;
        }
        tokio::select! {
            d = rx.recv(), if open => match d {
                Some(d) => {
                    if let Err(e) = wr.write_all_flush(&d.raw).await {
                        let _ = d.reply.send(BatchReply::failed(BackendError::ConnectionLost));
                        break Some(BackendError::Io(e));
                    }
                    waiting.push_back(Waiting {
                        reply: d.reply,
                        frames: Vec::with_capacity(d.count),
                        count: d.count,
                    });
                }
                None => open = false,
            },
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => break Some(BackendError::Closed),
                    Ok(_) => {}
                    Err(e) => break Some(BackendError::Io(e)),
                }
                if let Err(e) = deliver(&mut scanner, &mut rbuf, &mut waiting) {
                    break Some(e);
                }
            }
            // The client went away (nobody will read the replies): whatever it waits for (a
            // blocking pop) is dropped with the connection.
            _ = tick.tick(), if !open => {
                if waiting.iter().all(|w| w.reply.is_closed()) {
                    break None;
                }
            }
            _ = token.cancelled() => break Some(BackendError::ConnectionLost),
        }
    };
    if let Some(e) = &error {
        tracing::debug!(error = %e, "pinned connection ended");
    }
    {
        for w in waiting {
            let _ = w.reply.send(BatchReply {
                frames: w.frames,
                error: Some(BackendError::ConnectionLost),
                confirmed: None,
            });
        }
    }
}

fn deliver(
    scanner: &mut ReplyScanner,
    rbuf: &mut BytesMut,
    waiting: &mut VecDeque<Waiting>,
) -> Result<(), BackendError> {
    while let Some(frame) = scanner.next(rbuf)? {
        let Some(front) = waiting.front_mut() else {
            return Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply without a request",
            )));
        };
        front.frames.push(frame);
        if front.frames.len() >= front.count {
            if let Some(done) = waiting.pop_front() {
                let _ = done.reply.send(BatchReply {
                    frames: done.frames,
                    error: None,
                    confirmed: None,
                });
            }
        }
    }
    Ok(())
}
