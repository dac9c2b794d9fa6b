//! Subscriber mode: the session loop while a client has subscriptions.
//!
//! One client request is worked on at a time. A (un)subscribe changes the client's
//! [`Subscriptions`] at once and the links are brought in line with them; the client's
//! confirmations go out when every server concerned has confirmed, at the latest after
//! `failover.hold_ms` (no master to place a subscription on, or one that does not answer). Links
//! are opened in the background, so a server that does not answer never holds up the loop.
//! Messages that arrive meanwhile wait behind the confirmations, so a client never sees a
//! message of a channel before its confirmation. Between requests, and while a RESP3 client's
//! command runs, messages go straight to the client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::{Link, LinkEvent};
use super::redirect::Tracking;

mod frames;
mod placement;
mod tracking;
use super::{resp2_pong, Kind, Locate, Subscriptions};
use crate::backend::{BackendError, Protocol};
use crate::client::acl::{self, ClientAuth};
use crate::client::backlog::{must_write, write_or_flush, Backlog};
use crate::client::registry::ClientEntry;
use crate::client::reply::{backend_error, input_error, Close};
use crate::client::{local, ProxyContext};
use crate::resp::{error_reply, status_reply, CommandTable, Request, RequestParser};
use crate::router::slot::key_slot;
use crate::router::{classify_info, Class};
use crate::stats::ListenerStats;
use crate::tls::{ReadHalf, WriteHalf};
use tracking::TakesInvalidations;

/// Invalidations redirected to a client that its session has not taken yet (beyond, they are
/// lost and the client told to drop everything).
const INVALIDATION_QUEUE: usize = 256;

/// How often placement is checked against the topology.
const TICK: Duration = Duration::from_millis(50);
/// Request bytes read ahead of the one being worked on.
const MAX_READ_AHEAD: usize = 64 * 1024;
/// Frames queued from the links towards the loop.
const EVENT_QUEUE: usize = 64;
/// Longest wait before placing subscriptions is tried again.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// Redirections followed for one command before its last one is the answer (as the cluster
/// session's bound on a redirection loop).
const MAX_REDIRECTS: u8 = 5;

/// How subscriber mode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// No subscription is left: back to the ordinary session.
    Unsubscribed,
    /// `RESET` (answered already): the session resets its own state and goes on.
    Reset,
    /// The client hung up, quit or broke the protocol, or the proxy is stopping.
    Close,
}

/// The client's side of the session, lent to subscriber mode.
pub struct ClientIo<'a> {
    /// The client's read half.
    pub rd: &'a mut ReadHalf,
    /// The client's write half.
    pub wr: &'a mut WriteHalf,
    /// Bytes read and not parsed yet.
    pub inbuf: &'a mut BytesMut,
    /// Bytes for the client not written yet.
    pub out: &'a mut BytesMut,
    /// The session's request parser.
    pub parser: &'a mut RequestParser,
    /// The session's output-limit bookkeeping.
    pub backlog: &'a mut Backlog,
}

impl ClientIo<'_> {
    /// The same parts, lent on for a shorter while.
    fn reborrow(&mut self) -> ClientIo<'_> {
        ClientIo {
            rd: self.rd,
            wr: self.wr,
            inbuf: self.inbuf,
            out: self.out,
            parser: self.parser,
            backlog: self.backlog,
        }
    }
}

/// What subscriber mode needs of the session.
pub struct SessionParts<'a> {
    /// Shared settings.
    pub ctx: &'a Arc<ProxyContext>,
    /// The listener's counters.
    pub stats: &'a ListenerStats,
    /// Who the client is.
    pub auth: &'a mut ClientAuth,
    /// The client's protocol (and its links').
    pub protocol: Protocol,
    /// Where links go in this mode.
    pub locator: &'a dyn Locate,
    /// The client as `CLIENT LIST` shows it (its subscription counts).
    pub entry: &'a ClientEntry,
}

/// A link opened in the background to a server (its address), or why not.
type Opened = (String, Result<Link, BackendError>);

/// The request being worked on.
struct Current {
    tag: u64,
    /// A (un)subscribe, answered by the proxy's own confirmations (else a command, answered by
    /// its server's reply).
    confirms: bool,
    /// Server answers still to come.
    awaiting: usize,
    /// What the client gets once they are in.
    replies: Vec<Bytes>,
    since: Instant,
    /// `MOVED`/`ASK` followed so far.
    redirects: u8,
    /// A `CLIENT TRACKING on|off` (on: replayed on every link commands go to).
    tracking: Option<Tracking>,
    /// A `CLIENT TRACKINGINFO` whose reply names this proxy client as the redirect (the
    /// server's names the relay).
    shows_redirect: Option<u64>,
}

/// A command a node redirected: sent again to `addr` (after `ASKING` when `ask`).
struct Redirect {
    addr: String,
    ask: bool,
    raw: Bytes,
}

struct Subscriber<'a> {
    parts: SessionParts<'a>,
    subs: Subscriptions,
    links: Vec<Link>,
    next_link: u64,
    events_tx: mpsc::Sender<LinkEvent>,
    /// Servers a link is being opened to, in the background.
    opening: Vec<String>,
    opened_tx: mpsc::Sender<Opened>,
    current: Option<Current>,
    next_tag: u64,
    /// Messages that arrived while a request was being worked on.
    held: VecDeque<Bytes>,
    held_bytes: usize,
    /// Some subscription has no server right now.
    unplaced: bool,
    retry_at: Instant,
    retry_backoff: Duration,
    /// The topology generation the links were last placed by.
    seen: u64,
    /// A server whose link failed a moment ago.
    avoid: Option<String>,
    /// Cluster mode: the server whose link delivers ordinary messages through a pattern placed on
    /// every master (for keyspace notifications); the other masters' copies are dropped.
    home: Option<String>,
    /// The current command, redirected by its node, to send again.
    redirect: Option<Redirect>,
    closing: bool,
    /// The client's `CLIENT TRACKING on ...` in force (client-side caching).
    tracking: Option<Tracking>,
    /// The server the client's commands went to last, while tracking (Sentinel/static mode).
    tracking_addr: Option<String>,
    /// Pushes of the proxy's own for the client (an invalidation of everything it caches).
    notices: Vec<Bytes>,
}

/// Serves a client in subscriber mode, starting with `first` (a pub/sub command), until it
/// has no subscription left, resets, or goes away; or, for `MONITOR`, in monitor mode. The
/// session's replies before `first` must all be in `io.out` already.
pub async fn serve(
    parts: SessionParts<'_>,
    io: ClientIo<'_>,
    first: Request,
    shutdown: &CancellationToken,
) -> Exit {
    if first.name().eq_ignore_ascii_case(b"monitor") {
        let servers = parts.locator.monitored();
        return super::monitor::serve(parts, io, servers, first, shutdown).await;
    }
    let _counted = Subscribed::new(parts.stats);
    let mut io = io;
    let exit = subscribed(parts, io.reborrow(), first, shutdown).await;
    // Messages held behind a confirmation are gone with subscriber mode.
    io.backlog.set_held(0);
    exit
}

/// Counts a client in subscriber mode for as long as it lives.
struct Subscribed<'s>(&'s ListenerStats);

impl<'s> Subscribed<'s> {
    fn new(stats: &'s ListenerStats) -> Self {
        stats.pubsub_client(1);
        Subscribed(stats)
    }
}

impl Drop for Subscribed<'_> {
    fn drop(&mut self) {
        self.0.pubsub_client(-1);
    }
}

async fn subscribed(
    parts: SessionParts<'_>,
    io: ClientIo<'_>,
    first: Request,
    shutdown: &CancellationToken,
) -> Exit {
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (opened_tx, mut opened) = mpsc::channel(EVENT_QUEUE);
    let (invalidations_tx, mut invalidations) = mpsc::channel(INVALIDATION_QUEUE);
    let _taken = TakesInvalidations::new(parts.entry, invalidations_tx);
    let mut s = Subscriber::new(parts, events_tx, opened_tx);
    let ClientIo {
        rd,
        wr,
        inbuf,
        out,
        parser,
        backlog,
    } = io;
    let mut first = Some(first);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let unwritten = out.len();
        if let Some(exit) = s.read_requests(&mut first, parser, inbuf, out).await {
            return exit;
        }
        if s.current.is_none() && !s.engaged() && !s.closing {
            return Exit::Unsubscribed;
        }
        s.parts.entry.state().subscribed =
            Some([Kind::Channel, Kind::Pattern, Kind::Shard].map(|k| s.subs.of(k).len()));
        for n in s.notices.drain(..) {
            out.extend_from_slice(&n);
        }
        backlog.set_held(s.held_bytes);
        if backlog.over_limit(s.parts.stats, unwritten, out.len()) || s.held_over_limit() {
            return Exit::Close;
        }
        if let Err(e) = backlog.write_now(wr, out) {
            tracing::debug!(error = %e, "client write failed");
            return Exit::Close;
        }
        if s.closing && out.is_empty() && !wr.needs_flush() {
            return Exit::Close;
        }
        // Requests are read ahead of the one being worked on up to MAX_READ_AHEAD; with none
        // being worked on, what is in `inbuf` is an incomplete request, which must be read
        // whole however large (a SUBSCRIBE of 10,000 channels): client_query_buffer_limit, in
        // the parser, bounds it.
        let can_read = !s.closing && (inbuf.len() < MAX_READ_AHEAD || s.current.is_none());
        let writing = must_write(wr, out);
        tokio::select! {
            r = write_or_flush(wr, out), if writing => match r {
                Ok(n) => backlog.written(out, n),
                Err(e) => {
                    tracing::debug!(error = %e, "client write failed");
                    return Exit::Close;
                }
            },
            Some(event) = events.recv() => {
                s.event(event, out).await;
                // Take what else is there without going round the loop for each read, up to the
                // output buffer limit (checked at the top of the loop).
                let limit = s.parts.ctx.output_buffer_limit;
                while limit == 0 || out.len() <= limit {
                    let Ok(event) = events.try_recv() else {
                        break;
                    };
                    s.event(event, out).await;
                }
            }
            r = rd.read_buf(inbuf), if can_read => match r {
                Ok(0) => return Exit::Close,
                Ok(_) => backlog.active(),
                Err(e) => {
                    tracing::debug!(error = %e, "client read failed");
                    return Exit::Close;
                }
            },
            Some((addr, link)) = opened.recv() => s.opened(addr, link, out).await,
            Some(keys) = invalidations.recv() => s.invalidation(keys, out),
            _ = tick.tick() => s.tick(out).await,
            _ = backlog.evicted() => return Exit::Close,
            _ = shutdown.cancelled() => return Exit::Close,
        }
    }
}

impl Subscriber<'_> {
    fn new<'a>(
        parts: SessionParts<'a>,
        events_tx: mpsc::Sender<LinkEvent>,
        opened_tx: mpsc::Sender<Opened>,
    ) -> Subscriber<'a> {
        let seen = parts.locator.generation();
        Subscriber {
            parts,
            subs: Subscriptions::default(),
            links: Vec::new(),
            next_link: 0,
            events_tx,
            opening: Vec::new(),
            opened_tx,
            current: None,
            next_tag: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            unplaced: false,
            retry_at: Instant::now(),
            retry_backoff: TICK,
            seen,
            avoid: None,
            home: None,
            redirect: None,
            closing: false,
            tracking: None,
            tracking_addr: None,
            notices: Vec::new(),
        }
    }

    /// Works on the client's requests (`first`, then what `inbuf` holds) while none is being
    /// worked on; `Some` when subscriber mode ends.
    async fn read_requests(
        &mut self,
        first: &mut Option<Request>,
        parser: &mut RequestParser,
        inbuf: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Option<Exit> {
        while self.current.is_none() && !self.closing {
            let req = match first.take() {
                Some(r) => r,
                // Unsubscribed from everything: the next request is the ordinary session's.
                None if !self.engaged() => break,
                None => {
                    parser.set_unauthenticated(!self.parts.auth.authenticated());
                    match parser.next(inbuf) {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            let (reply, close) = input_error(self.parts.stats, &e);
                            if close == Close::Now {
                                return Some(Exit::Close);
                            }
                            self.parts.stats.error(&reply);
                            out.extend_from_slice(&reply);
                            self.closing |= close == Close::AfterReply;
                            break;
                        }
                    }
                }
            };
            if let Some(exit) = self.request(req, out).await {
                return Some(exit);
            }
        }
        None
    }

    /// Works on one client request; `Some` when subscriber mode ends with it.
    async fn request(&mut self, req: Request, out: &mut BytesMut) -> Option<Exit> {
        let stats = self.parts.stats;
        stats.command();
        let ctx = self.parts.ctx.clone();
        let commands = ctx.commands.load_full();
        if let Some(refused) = acl::check(&ctx.security, self.parts.auth, &commands, &req) {
            stats.error(&refused);
            out.extend_from_slice(&refused);
            return None;
        }
        if let Some((kind, subscribe)) = Kind::of_verb(req.name()) {
            self.pubsub(kind, subscribe, &req, out).await;
            return None;
        }
        let info = commands.lookup(&req);
        let name = info.map(|i| i.name.as_str()).unwrap_or_default();
        // A RESP2 client may only (un)subscribe, ping, quit or reset while subscribed; one here
        // for tracking alone runs its commands as a RESP3 client does.
        let restricted = self.parts.protocol == Protocol::Resp2 && self.subs.total() > 0;
        if !restricted {
            if let Some(exit) = self.tracking_command(name, &commands, &req, out).await {
                return exit;
            }
        }
        let reply = match (name, restricted) {
            ("ping", _) if req.argc() > 2 => {
                error_reply("ERR wrong number of arguments for 'ping' command")
            }
            ("ping", true) => resp2_pong(req.arg(1)),
            ("quit", _) => {
                self.closing = true;
                status_reply("OK")
            }
            ("reset", _) => {
                out.extend_from_slice(&status_reply("RESET"));
                return Some(Exit::Reset);
            }
            (_, true) if info.is_none() => unknown_command(&req),
            (_, true) => error_reply(&format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )),
            ("auth", _) => local::auth_reply(&ctx, self.parts.auth, &req).await,
            _ => match classify_info(info, &req) {
                Class::Local(reply) | Class::Reject(reply) => reply,
                Class::Read | Class::Write => {
                    return self.forward(&commands, &req, None, out).await;
                }
                _ => error_reply(&format!(
                    "ERR haproxy-rs does not support '{}' while the client is subscribed; unsubscribe first",
                    String::from_utf8_lossy(req.name()).to_uppercase()
                )),
            },
        };
        if crate::resp::is_error_reply(&reply) {
            stats.error(&reply);
        }
        out.extend_from_slice(&reply);
        None
    }

    /// A (un)subscribe: the client's set changes now, the servers follow.
    async fn pubsub(&mut self, kind: Kind, subscribe: bool, req: &Request, out: &mut BytesMut) {
        if subscribe && req.argc() < 2 {
            let reply = error_reply(&format!(
                "ERR wrong number of arguments for '{}' command",
                kind.verb(true)
            ));
            self.parts.stats.error(&reply);
            out.extend_from_slice(&reply);
            return;
        }
        let names: Vec<Bytes> = req.args().skip(1).map(Bytes::copy_from_slice).collect();
        if kind == Kind::Shard && self.parts.locator.cluster() {
            let mut slots = names.iter().map(|n| key_slot(n));
            if let Some(first) = slots.next() {
                if slots.any(|s| s != first) {
                    let reply =
                        error_reply("CROSSSLOT Keys in request don't hash to the same slot");
                    self.parts.stats.error(&reply);
                    out.extend_from_slice(&reply);
                    return;
                }
            }
        }
        let replies = self
            .subs
            .apply(kind, subscribe, &names, self.parts.protocol);
        let tag = self.start(replies, true);
        self.place(Some(tag)).await;
        self.try_complete(out);
    }

    /// A command while subscribed (RESP3) or tracking: on a link to the server that serves it.
    /// `switch`: it is this `CLIENT TRACKING`, sent with the `REDIRECT` of the link's server.
    async fn forward(
        &mut self,
        commands: &CommandTable,
        req: &Request,
        switch: Option<Tracking>,
        out: &mut BytesMut,
    ) -> Option<Exit> {
        let Some(backend) = self.parts.locator.command(commands, req) else {
            let reply = error_reply(
                "TRYAGAIN haproxy-rs: no master right now (failover in progress); not executed",
            );
            self.parts.stats.error(&reply);
            out.extend_from_slice(&reply);
            return None;
        };
        let addr = backend.addr().to_string();
        self.follow_tracking(&addr);
        let idx = match self.link_index(&backend).await {
            Ok(i) => i,
            Err(e) => {
                let reply = backend_error(&e, &addr).0;
                self.parts.stats.error(&reply);
                out.extend_from_slice(&reply);
                return None;
            }
        };
        let tracking = self.tracking.clone();
        let wanted = switch.as_ref().filter(|t| t.on()).or(tracking.as_ref());
        if let Err(e) = self.relay_for(idx, wanted).await {
            let reply = backend_error(&e, &addr).0;
            self.parts.stats.error(&reply);
            out.extend_from_slice(&reply);
            return None;
        }
        let tag = self.start(Vec::new(), false);
        if let Some(c) = &mut self.current {
            c.awaiting = 1;
        }
        let sent = match self.links.get_mut(idx) {
            Some(link) => {
                let relay = link.relay.as_ref().map(|r| r.server_id);
                let mut ok = true;
                if let Some(t) = tracking.filter(|_| !link.tracking && switch.is_none()) {
                    // What the client reads here is tracked for it too.
                    ok = link.internal(&t.command(relay)).await.is_ok();
                    link.tracking = ok;
                }
                let raw = switch
                    .as_ref()
                    .map_or_else(|| req.raw().clone(), |t| t.command(relay));
                ok && link.command(raw, tag, false).await.is_ok()
            }
            None => false,
        };
        if let Some(c) = &mut self.current {
            c.tracking = switch;
        }
        if !sent {
            if let Some(id) = self.links.get(idx).map(|l| l.id) {
                self.lost(id);
            }
            self.place(Some(tag)).await;
        }
        self.try_complete(out);
        None
    }

    /// Makes `replies` the request being worked on; returns its tag.
    fn start(&mut self, replies: Vec<Bytes>, confirms: bool) -> u64 {
        self.next_tag += 1;
        self.current = Some(Current {
            tag: self.next_tag,
            confirms,
            awaiting: 0,
            replies,
            since: Instant::now(),
            redirects: 0,
            tracking: None,
            shows_redirect: None,
        });
        self.next_tag
    }

    fn current_tag(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.tag)
    }

    /// Whether the client still needs this mode: subscriptions, or tracking on.
    fn engaged(&self) -> bool {
        self.subs.total() > 0 || self.tracking.is_some()
    }

    /// Sends the current request's replies, and the messages held behind them, once the servers
    /// have answered and every subscription is placed, or, for a (un)subscribe, once
    /// `failover.hold_ms` has passed: a server that does not answer (a hung master, one a
    /// failover is leaving) holds the client no longer than a server that is not there. Its
    /// confirmations, if they ever come, belong to no request then and are dropped.
    fn try_complete(&mut self, out: &mut BytesMut) {
        let Some(c) = &self.current else {
            return;
        };
        let waited_enough = c.since.elapsed() >= self.parts.ctx.hold;
        let owed = c.awaiting > 0 && !(c.confirms && waited_enough);
        if owed || (c.confirms && self.unplaced && !waited_enough) {
            return;
        }
        if let Some(c) = self.current.take() {
            for r in &c.replies {
                out.extend_from_slice(r);
            }
        }
        for m in self.held.drain(..) {
            out.extend_from_slice(&m);
        }
        self.held_bytes = 0;
    }

    fn held_over_limit(&self) -> bool {
        let limit = self.parts.ctx.output_buffer_limit;
        limit > 0 && self.held_bytes > limit
    }
}

/// Redis's reply to a command it does not know.
fn unknown_command(req: &Request) -> Bytes {
    let mut args = String::new();
    for a in req.args().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = String::from_utf8_lossy(a);
        let a: String = a.chars().take(room).collect();
        args.push_str(&format!("'{a}' "));
    }
    let name: String = String::from_utf8_lossy(req.name())
        .chars()
        .take(128)
        .collect();
    error_reply(&format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}
