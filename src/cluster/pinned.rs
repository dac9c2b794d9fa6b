//! Transactions, `WATCH` and blocking commands in cluster mode, on connections of the client's
//! own to the master of the slot involved.
//!
//! A transaction is queued by the session (`+QUEUED`, with `CROSSSLOT` for a command whose keys
//! leave the transaction's slot) and sent at `EXEC` as one `MULTI ... EXEC` to the slot's
//! master, on the connection `WATCH` pinned if there is one. `MOVED`/`ASK` are followed by
//! sending the whole again to the node named (with `ASKING` first for `ASK`), except for a
//! transaction under `WATCH`: the node named never saw the `WATCH`, so the client gets the
//! `EXECABORT` of the node that did. `TRYAGAIN`/`CLUSTERDOWN`/... (nothing ran) are sent again
//! within `cluster.retry_window_ms`, as for every other command. `WAIT` runs on a
//! connection of its own to the master the client last wrote to, after a probe that makes it
//! count the client's writes ([`wait_probe`] explains why; Redis Cluster does not replicate
//! `PUBLISH`, so here the probe is a script that sets and deletes a key of the proxy's own in
//! the slot last written, which every version replicates, as `MULTI SET DEL EXEC`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;

use super::ClusterState;
#[cfg(doc)]
use crate::backend::pinned::wait_probe;
use crate::backend::pinned::{wait_probe_refused, WAIT_PROBE_CHANNEL};
use crate::backend::{Backend, BackendError, Dispatch, Pinned, Protocol};
use crate::client::fanout::kill_on_each;
use crate::client::registry::ClientEntry;
use crate::client::reply::backend_error;
use crate::resp::redirect::{reaction, Reaction};
use crate::resp::{encode_command, error_reply};
use crate::router::slot::slot_tag;

/// Redirections followed for one operation.
const MAX_REDIRECTS: usize = 3;
/// First pause before sending again after `TRYAGAIN`/`CLUSTERDOWN` (doubling), as exec.rs.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The cluster-mode probe before `WAIT`: sets and deletes `__haproxy-rs:wait:{n}` at once.
const WAIT_PROBE_SCRIPT: &str = "redis.call('set', KEYS[1], '') return redis.call('del', KEYS[1])";
/// How the refusal of the probe names it.
const WAIT_PROBE_NAME: &str = "EVAL (a SET and DEL of __haproxy-rs:wait:{n})";

/// The probe for `slot`: a key of the proxy's own there, so it runs on the slot's master.
fn wait_probe_in(slot: u16) -> Option<Bytes> {
    let key = format!("{WAIT_PROBE_CHANNEL}:{{{}}}", slot_tag(slot)?);
    Some(encode_command(&["EVAL", WAIT_PROBE_SCRIPT, "1", &key]))
}

/// The connection a `WATCH` pinned, shared by the session and its operations.
pub type WatchConn = Arc<Mutex<Option<Pinned>>>;

/// What to run on a pinned connection.
#[derive(Debug)]
pub enum PinOp {
    /// A blocking command (its own connection, closed after its reply).
    Blocking {
        /// The command's slot.
        slot: u16,
        /// The command.
        raw: Bytes,
    },
    /// `WATCH keys` (the connection stays pinned for the transaction).
    Watch {
        /// The keys' slot.
        slot: u16,
        /// The command.
        raw: Bytes,
    },
    /// `SCRIPT KILL`/`FUNCTION KILL`: to every node, masters and replicas (where `EVAL_RO` and
    /// `FCALL_RO` may run), each on a connection of its own (a shared one may wait behind the
    /// very script to kill).
    Kill {
        /// The command's arguments.
        args: Vec<Bytes>,
    },
    /// `MULTI`, the queued commands and `EXEC`, on the watch connection if any.
    Exec {
        /// The transaction's slot (`None`: keyless, any master).
        slot: Option<u16>,
        /// The queued commands.
        queued: Bytes,
        /// How many.
        count: usize,
    },
    /// `WAIT`, after the probe, on a connection of its own (never the watch connection, which
    /// may be on another master).
    Wait {
        /// The slot the client last wrote to (`None`: no write yet, the first master).
        slot: Option<u16>,
        /// The command.
        raw: Bytes,
    },
}

/// What an operation needs from its session.
pub struct PinCtx {
    /// The cluster.
    pub state: Arc<ClusterState>,
    /// The bound on pinned connections.
    pub limit: Arc<Semaphore>,
    /// The session's protocol.
    pub protocol: Protocol,
    /// The session's `WATCH` connection.
    pub watch: WatchConn,
    /// The client's registry entry: a blocking command says there where it waits.
    pub client: Option<Arc<ClientEntry>>,
}

/// An operation as it goes on the wire.
struct Wire {
    /// Whose master runs it (`None`: any master).
    slot: Option<u16>,
    raw: Bytes,
    /// How many replies `raw` gets.
    count: usize,
    /// The connection stays the client's afterwards (`WATCH`).
    keep: bool,
}

impl PinOp {
    /// Runs the operation; returns the client's reply.
    pub async fn run(self, ctx: PinCtx) -> Bytes {
        if let PinOp::Kill { args } = &self {
            return kill_on_each(&ctx.state.map().nodes(), args).await;
        }
        let on_watch = !matches!(self, PinOp::Wait { .. });
        let blocking = matches!(self, PinOp::Blocking { .. });
        let Wire {
            slot,
            raw,
            count,
            keep,
        } = match self.wire(&ctx) {
            Ok(w) => w,
            Err(reply) => return reply,
        };
        let mut conn = if on_watch { take(&ctx.watch) } else { None };
        // A blocking command under WATCH runs on the watch connection and leaves it pinned.
        let keep = keep || (conn.is_some() && count == 1);
        let watched_before = conn.is_some();
        let mut asking = false;
        let (mut redirects, mut backoff) = (0, MIN_BACKOFF);
        let deadline = Instant::now() + ctx.state.retry_window;
        while redirects <= MAX_REDIRECTS {
            let pinned = match conn.take() {
                Some(c) => c,
                None => {
                    let Some(backend) = master_for(&ctx.state, slot) else {
                        return error_reply("CLUSTERDOWN Hash slot not served");
                    };
                    match Pinned::open(backend, ctx.protocol, 0, &ctx.limit).await {
                        Ok(c) => c,
                        Err(_) => return no_connection(),
                    }
                }
            };
            let client = ctx.client.as_ref().filter(|_| blocking);
            if let Some(c) = client {
                c.set_blocked_on(pinned.blocked_on());
            }
            let sent = send(&pinned, &raw, count, asking).await;
            // Answered: before the connection can serve another client.
            if let Some(c) = client {
                c.set_blocked_on(None);
            }
            let frames = match sent {
                Ok(f) => f,
                Err(e) => return backend_error(&e, pinned.backend().addr()).0,
            };
            // The frame that answers: the command's, or EXEC's; a redirection shows in any
            // frame of a transaction (its commands were refused, so EXEC aborts).
            let redirect = redirection(&frames);
            // TRYAGAIN, CLUSTERDOWN, ...: the node ran nothing (a transaction's refused command
            // makes its EXEC abort). Sent again later, from the slot's master, within the
            // retry window, as every other command is (exec.rs); not under WATCH, whose
            // connection holds the watches.
            let later = frames.iter().any(|f| reaction(f) == Reaction::Later);
            if redirect.is_none() && later && !watched_before && Instant::now() < deadline {
                ctx.state.stats.retried();
                drop(pinned);
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                asking = false;
                continue;
            }
            match redirect {
                Some(_) if keep && watched_before => {
                    // The keys watched so far live on this node: a WATCH elsewhere cannot join.
                    put(&ctx.watch, pinned);
                    return error_reply(super::plan::CROSSSLOT);
                }
                Some(_) if watched_before => {
                    // EXEC under WATCH: the node named never saw the WATCH, so the transaction
                    // would run there unguarded (a write made meanwhile by another client,
                    // which should have aborted it, would be overwritten). It did not run here
                    // (the node refused its commands): its EXEC answer goes to the client.
                    return frames.last().cloned().unwrap_or_else(no_connection);
                }
                Some((addr, ask)) => {
                    asking = ask;
                    redirects += 1;
                    conn = match follow(&ctx, slot, &addr, ask).await {
                        Ok(c) => Some(c),
                        Err(reply) => return reply,
                    };
                }
                None => return answered(&ctx, pinned, &frames, keep, on_watch),
            }
        }
        error_reply("TRYAGAIN haproxy-rs: too many redirections")
    }

    /// What goes on the wire for this operation (not a kill, which goes to every node on
    /// connections of its own); the client's reply when it cannot go anywhere.
    fn wire(&self, ctx: &PinCtx) -> Result<Wire, Bytes> {
        let (slot, raw, count, keep) = match self {
            PinOp::Kill { args } => (None, encode_command(args), 1, false),
            PinOp::Blocking { slot, raw } => (Some(*slot), raw.clone(), 1, false),
            PinOp::Watch { slot, raw } => (Some(*slot), raw.clone(), 1, true),
            PinOp::Exec {
                slot,
                queued,
                count,
            } => {
                let mut raw = BytesMut::with_capacity(queued.len() + 32);
                raw.extend_from_slice(&encode_command(&["MULTI"]));
                raw.extend_from_slice(queued);
                raw.extend_from_slice(&encode_command(&["EXEC"]));
                (*slot, raw.freeze(), count + 2, false)
            }
            PinOp::Wait { slot, raw } => {
                // No write yet: the first master, through its first slot.
                let slot = slot.or_else(|| ctx.state.map().first_slots().first().copied());
                let Some(probe) = slot.and_then(wait_probe_in) else {
                    return Err(error_reply("CLUSTERDOWN Hash slot not served"));
                };
                let mut probed = BytesMut::from(&probe[..]);
                probed.extend_from_slice(raw);
                (slot, probed.freeze(), 2, false)
            }
        };
        Ok(Wire {
            slot,
            raw,
            count,
            keep,
        })
    }
}

/// The redirection a node answered with, if any: (address, `ASK`).
fn redirection(frames: &[Bytes]) -> Option<(String, bool)> {
    frames.iter().find_map(|f| match reaction(f) {
        Reaction::Moved(addr) => Some((addr.to_string(), false)),
        Reaction::Ask(addr) => Some((addr.to_string(), true)),
        _ => None,
    })
}

/// A connection to the node a redirection named, counted and acted on as for every other command
/// (exec.rs): the stats' redirections include transactions, and a slot seen migrating keeps its
/// reads on the master.
async fn follow(ctx: &PinCtx, slot: Option<u16>, addr: &str, ask: bool) -> Result<Pinned, Bytes> {
    if ask {
        ctx.state.stats.ask();
        if let Some(slot) = slot {
            ctx.state.mark_migrating(slot);
        }
    } else {
        ctx.state.stats.moved();
        ctx.state.request_refresh();
    }
    let backend = ctx.state.master_backend(addr);
    Pinned::open(backend, ctx.protocol, 0, &ctx.limit)
        .await
        .map_err(|_| no_connection())
}

/// The client's reply to an operation its node answered; the connection is kept for `WATCH`
/// (`keep`), else recycled.
fn answered(ctx: &PinCtx, pinned: Pinned, frames: &[Bytes], keep: bool, on_watch: bool) -> Bytes {
    if keep {
        put(&ctx.watch, pinned);
    } else {
        // Answered whole (EXEC, or a blocking command that returned): as fresh.
        pinned.recycle();
    }
    if !on_watch {
        let refused = frames
            .first()
            .and_then(|f| wait_probe_refused(f, WAIT_PROBE_NAME));
        if let Some(refused) = refused {
            return refused;
        }
    }
    frames.last().cloned().unwrap_or_else(no_connection)
}

fn master_for(state: &ClusterState, slot: Option<u16>) -> Option<Arc<Backend>> {
    let map = state.map();
    match slot {
        Some(s) => map.owners(s).map(|o| o.master.clone()),
        None => map.masters().first().cloned(),
    }
}

async fn send(
    pinned: &Pinned,
    raw: &Bytes,
    count: usize,
    asking: bool,
) -> Result<Vec<Bytes>, BackendError> {
    let (raw, count) = if asking {
        let mut r = BytesMut::from(&encode_command(&["ASKING"])[..]);
        r.extend_from_slice(raw);
        (r.freeze(), count + 1)
    } else {
        (raw.clone(), count)
    };
    let (dispatch, rx) = Dispatch::new(raw, count, false);
    pinned.send(dispatch).await?;
    let reply = rx.await.map_err(|_| BackendError::ConnectionLost)?;
    if let Some(e) = reply.error {
        return Err(e);
    }
    let skip = usize::from(asking);
    Ok(reply.frames.into_iter().skip(skip).collect())
}

fn take(watch: &WatchConn) -> Option<Pinned> {
    watch.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn put(watch: &WatchConn, conn: Pinned) {
    *watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
}

fn no_connection() -> Bytes {
    error_reply("TRYAGAIN haproxy-rs: no connection to the slot's master for this transaction or blocking command (or backend.max_pinned_connections reached); not executed")
}
