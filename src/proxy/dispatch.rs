//! Where a session's commands go: one dispatcher per kind of topology.
//!
//! The session answers what is the client's own and hands everything else to its dispatcher,
//! which routes it, keeps the replies in request order and says when the client may go on.
//! Where the modes differ, the difference is Redis's own:
//!
//! | | [`primary`](crate::primary) (Sentinel, static) | [`cluster`](crate::cluster) |
//! |---|---|---|
//! | routing | writes to the master, reads to replicas (read policy, read-your-writes) | by key slot; redirections followed; multi-key commands split and merged |
//! | no master | writes (and `MULTI`, blocking commands, `WAIT`) held up to `hold_ms` | `-CLUSTERDOWN` or a retry after a map refresh |
//! | `SELECT` | databases 0-15, each with its own connections | only `SELECT 0`, as Redis Cluster |
//! | `MULTI` | on a connection of the client's own, `MULTI` sent to the master | queued by the proxy, sent to the slot's master at `EXEC` (one slot per transaction) |
//! | `WATCH` | on the client's own connection | on the watched slot's master |
//! | `READONLY`/`READWRITE` | refused (they change a shared connection) | `+OK`: the proxy decides where reads go |
//! | a connection lost mid-batch | unanswered reads of a batch of reads sent again once (as held requests are routed); the rest: "outcome unknown" | unanswered reads sent again within the retry window; writes: "outcome unknown" |
//!
//! In the last row both resend only what is safe to run twice; Sentinel mode resends whole
//! batches of reads (reads that share a batch with writes on the master get the error), cluster
//! mode each read.
//!
//! The same in both: the read-only endpoint sends reads to replicas whatever `read_policy` says
//! and refuses writes, transactions and blocking commands with `-READONLY`; pub/sub is refused
//! inside `MULTI` and allowed under `WATCH`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::Protocol;
use crate::client::registry::ClientEntry;
use crate::pubsub::Locate;
use crate::resp::{CommandInfo, Request};
use crate::router::Class;

/// A session's dispatcher. Each variant's `command` routes one request of the mode's (reads,
/// writes, transactions, blocking commands, `SELECT`, and everything queued inside `MULTI`); the
/// session calls it on the variant directly (see `session.rs`).
pub enum Dispatcher {
    /// Sentinel and static mode.
    Primary(Box<crate::primary::Dispatcher>),
    /// Cluster mode.
    Cluster(Box<crate::cluster::Dispatcher>),
}

/// Something a dispatcher waited for happened (replies came, held requests may go).
pub enum Progress {
    /// Sentinel and static mode.
    Primary(crate::primary::Progress),
    /// Cluster mode: a chunk's replies.
    Cluster(Bytes),
}

/// Calls the same method on whichever dispatcher this is.
macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Dispatcher::Primary($d) => $e,
            Dispatcher::Cluster($d) => $e,
        }
    };
}

impl Dispatcher {
    /// The session runs on session thread `worker`; `local` is the client connection's own
    /// address (cluster mode names the proxy by it); `client` its entry in the registry (where a
    /// blocking command says where it waits).
    pub fn attach(&mut self, worker: usize, local: Option<SocketAddr>, client: &Arc<ClientEntry>) {
        each!(self, d => d.attach(worker, local, client.clone()))
    }
    /// How the mode sees a command.
    pub fn classify(&self, info: Option<&CommandInfo>, req: &Request) -> Class {
        each!(self, d => d.classify(info, req))
    }
    /// Requests are about to be parsed from one read (snapshots of the topology are taken).
    pub fn begin_read(&mut self) {
        each!(self, d => d.begin_read())
    }
    /// Queues a reply known already, after what was dispatched before it.
    pub async fn push_ready(&mut self, reply: Bytes) {
        each!(self, d => d.push_ready(reply).await)
    }
    /// Sends what was gathered from the read.
    pub async fn flush(&mut self) {
        each!(self, d => d.flush().await)
    }
    /// Between `MULTI` and `EXEC`/`DISCARD`.
    pub fn in_multi(&self) -> bool {
        each!(self, d => d.in_multi())
    }
    /// Takes a reloaded context unless the client still depends on its own (see each mode's).
    pub fn adopt(&mut self, ctx: &Arc<crate::client::ProxyContext>) -> bool {
        each!(self, d => d.adopt(ctx))
    }
    /// A command of the transaction was refused: `EXEC` will answer `-EXECABORT`.
    pub fn spoil_transaction(&mut self) {
        each!(self, d => d.spoil_transaction())
    }
    /// The client's database.
    pub fn db(&self) -> u8 {
        each!(self, d => d.db())
    }
    /// Bytes the proxy keeps for the client (a queued transaction), counted against the
    /// query buffer limit.
    pub fn buffered_bytes(&self) -> usize {
        each!(self, d => d.buffered_bytes())
    }
    /// Requests parsed whose replies are not written yet.
    pub fn queued(&self) -> usize {
        each!(self, d => d.queued())
    }
    /// Whether more requests may be parsed now (not while a command waits for a master).
    pub fn can_parse(&self) -> bool {
        each!(self, d => d.can_parse())
    }
    /// Nothing is waiting for a reply.
    pub fn is_idle(&self) -> bool {
        each!(self, d => d.is_idle())
    }
    /// The client waits on its own connection (a blocking command): a hang-up drops it at once.
    pub fn blocked(&self) -> bool {
        each!(self, d => d.blocked())
    }
    /// Moves the replies known already, from the front, into `out`.
    pub fn collect(&mut self, out: &mut BytesMut) {
        each!(self, d => d.collect(out))
    }
    /// Sends requests deferred behind others, once those are answered; true when it sent any.
    pub async fn send_deferred(&mut self) -> bool {
        each!(self, d => d.send_deferred().await)
    }
    /// Waits for replies, or for held requests to be worth routing again. Cancel-safe.
    pub async fn progress(&mut self) -> Progress {
        match self {
            Dispatcher::Primary(d) => Progress::Primary(d.progress().await),
            Dispatcher::Cluster(d) => Progress::Cluster(d.progress().await),
        }
    }
    /// Acts on what [`progress`](Self::progress) returned; replies go into `out`.
    pub async fn advance(&mut self, progress: Progress, out: &mut BytesMut) {
        match (self, progress) {
            (Dispatcher::Primary(d), Progress::Primary(p)) => d.advance(p, out).await,
            (Dispatcher::Cluster(d), Progress::Cluster(reply)) => d.advance(reply, out),
            _ => {}
        }
    }
    /// The client's protocol changed (`HELLO`, `RESET`); later requests use connections that
    /// speak it.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        each!(self, d => d.set_protocol(protocol))
    }
    /// `RESET`: database 0, no transaction or `WATCH`, read-your-writes forgotten.
    pub async fn reset(&mut self) {
        each!(self, d => d.reset().await)
    }
    /// No more requests will be read (QUIT, EOF, shutdown): nothing waits for a master any more
    /// than it must.
    pub fn close_input(&mut self) {
        each!(self, d => d.close_input())
    }
    /// The proxy is stopping: held requests are answered now.
    pub async fn shutdown(&mut self) {
        each!(self, d => d.shutdown().await)
    }
    /// The session ends: what it still holds is given back.
    pub fn end(&mut self) {
        each!(self, d => d.end())
    }
    /// Where subscriber mode's links go.
    pub fn locator(&self) -> Box<dyn Locate> {
        each!(self, d => d.locator())
    }
}
