//! One client connection, in every mode: parse requests, answer what is the client's own, hand
//! the rest to the mode's [`Dispatcher`], and write the replies in request order.
//!
//! The session owns everything that is the client's: the socket and its buffers, the parser and
//! its limits, authentication and the user's rules, the name and id (`CLIENT INFO`), the RESP
//! version, subscriber mode, the output limits. Where a command goes, and how its reply comes
//! back, is the dispatcher's (see `dispatch.rs` for what differs between the modes, and why).
//!
//! A session is a single task. Requests are dispatched as soon as they are parsed (pipelining);
//! the dispatcher keeps their replies in request order. See `docs/failover.md` for the write
//! hold.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::client_cmds::{holds_on_write, pause_changed};
use super::dispatch::{Dispatcher, Progress};
use crate::backend::Protocol;
use crate::client::acl::{self, ClientAuth};
use crate::client::backlog::{must_write, sleep_until_some, write_or_flush, Backlog};
use crate::client::client_state::ClientState;
use crate::client::live::LiveContext;
use crate::client::registry::{ClientEntry, Pause};
use crate::client::reply::{input_error, Close};
use crate::client::reply_mode::ReplyMode;
use crate::client::{local, ProxyContext};
use crate::resp::{
    error_reply, is_error_reply, status_reply, CommandTable, Request, RequestParser,
};
use crate::router::{refused_in_transaction, Class, ConnCmd};
use crate::stats::{ListenerStats, ReplyTimer};
use crate::tls::{ReadHalf, WriteHalf};

/// Hands a request to whichever dispatcher this is. A macro, not a method of the enum: an async
/// method would add a future of its own around the dispatcher's, per request (callgrind: about 55
/// instructions each).
macro_rules! dispatch_command {
    ($dispatch:expr, $($arg:expr),*) => {
        match &mut $dispatch {
            Dispatcher::Primary(d) => d.command($($arg),*).await,
            Dispatcher::Cluster(d) => d.command($($arg),*).await,
        }
    };
}

/// Inside `MULTI` these are queued (sent to the server, or kept by the proxy until `EXEC`), as
/// Redis queues them: reads, writes, local answers such as `PING`, and `CLIENT` commands about
/// the client's own connection (those about other clients are refused there: see
/// `client_cmds.rs`).
fn queued_in_multi(class: &Class) -> bool {
    match class {
        Class::Read | Class::Write | Class::Local(_) => true,
        Class::Conn(c) => *c != ConnCmd::Reset && !c.proxy_wide(),
        _ => false,
    }
}

/// While the proxy stops, how long a client that has sent nothing yet is waited for.
const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One client's session.
pub struct Session {
    pub(super) ctx: Arc<ProxyContext>,
    pub(super) stats: Arc<ListenerStats>,
    /// The client's name and id (`CLIENT GETNAME`, `HELLO`).
    pub(super) client: ClientState,
    /// The client as the others see it (`CLIENT LIST`), kept current here.
    pub(super) entry: Arc<ClientEntry>,
    /// Commands queued in the transaction so far (`CLIENT LIST`'s `multi=`).
    pub(super) queued_in_tx: usize,
    /// `CLIENT REPLY`: the replies the client does not get.
    pub(super) replies: ReplyMode,
    /// A command that waits for `CLIENT PAUSE` to end (nothing after it is read meanwhile).
    pub(super) postponed: Option<Request>,
    /// `CLIENT PAUSE`, as the registry says.
    pub(super) pauses: tokio::sync::watch::Receiver<Option<Pause>>,
    /// The transaction queued a command that `CLIENT PAUSE WRITE` holds (so `EXEC` waits).
    pub(super) tx_writes: bool,
    /// RESP2 until the client says `HELLO 3`.
    pub(super) protocol: Protocol,
    /// Who the client authenticated as.
    pub(super) auth: ClientAuth,
    /// No more requests are read: QUIT, a protocol error, EOF or shutdown.
    pub(super) closing: bool,
    /// The proxy is stopping: the client is let go as soon as it has nothing pending (see
    /// [`Session::drained`]).
    pub(super) draining: bool,
    /// The client has sent something.
    pub(super) heard: bool,
    /// While the proxy stops: how long a client that has sent nothing yet is waited for.
    pub(super) first_request_wait: Option<tokio::time::Instant>,
    /// A pub/sub command or `MONITOR`: that mode starts with it once the replies before it are
    /// out.
    pub(super) subscribe: Option<Request>,
    /// Where requests go: the mode's routing, and the replies' order.
    pub(super) dispatch: Dispatcher,
    /// Where a reload puts the new context, and the generation `ctx` is (`None`: no reloads).
    live: Option<(Arc<LiveContext>, u64)>,
    /// When the commands whose replies are not ready yet were read (the listener's latency).
    timer: ReplyTimer,
}

/// The client's side of the session.
struct Io {
    rd: ReadHalf,
    wr: WriteHalf,
    /// Bytes read and not parsed yet.
    inbuf: BytesMut,
    /// Bytes for the client not written yet.
    out: BytesMut,
    parser: RequestParser,
    /// Output limits and idle time.
    backlog: Backlog,
}

/// Whether the session goes on.
#[derive(PartialEq, Eq)]
enum Step {
    Go,
    End,
}

enum Event {
    Progress(Progress),
    Read(std::io::Result<usize>),
    Written(std::io::Result<usize>),
    Idle,
    /// Chosen to bring the replies of all clients under `max_output_bytes_total`.
    Evicted,
    Shutdown,
    /// `CLIENT KILL` from another client: the session ends at once.
    Killed,
    /// The `CLIENT PAUSE` a command waits for may be over.
    Unpaused,
    /// The proxy stops, and a client that connected just before has still sent nothing.
    FirstRequestWaitOver,
}

impl Session {
    /// A session for client number `id`, whose requests go through `dispatch`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        stats: Arc<ListenerStats>,
        id: u64,
        dispatch: Dispatcher,
    ) -> Session {
        Session {
            auth: ClientAuth::new(&ctx.security),
            entry: ctx.clients.register(id),
            queued_in_tx: 0,
            replies: ReplyMode::default(),
            postponed: None,
            pauses: ctx.clients.pauses(),
            tx_writes: false,
            ctx,
            stats,
            client: ClientState::new(id),
            protocol: Protocol::Resp2,
            closing: false,
            draining: false,
            heard: false,
            first_request_wait: None,
            subscribe: None,
            dispatch,
            live: None,
            timer: ReplyTimer::default(),
        }
    }

    /// The session takes the contexts a reload stores in `live` after `generation` (the one it
    /// started with), between requests (see `Session::adopt_reload`).
    pub fn following(mut self, live: Arc<LiveContext>, generation: u64) -> Session {
        self.live = Some((live, generation));
        self
    }

    /// Serves the client until it quits, breaks the protocol, hangs up, or the proxy stops.
    /// `worker` is the session thread running it (whose backend connections it uses).
    pub async fn run(
        mut self,
        stream: crate::tls::Stream,
        shutdown: CancellationToken,
        worker: usize,
    ) {
        let local = stream.local_addr().ok();
        {
            let mut state = self.entry.state();
            state.peer = stream.peer_addr().ok();
            state.local = local;
        }
        self.dispatch.attach(worker, local, &self.entry);
        let (rd, wr) = stream.into_split();
        let mut io = Io {
            rd,
            wr,
            inbuf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
            parser: RequestParser::new(self.ctx.limits),
            backlog: Backlog::new(&self.ctx),
        };
        while self.step(&mut io, &shutdown).await == Step::Go {}
        io.backlog.publish(&self.stats);
        self.dispatch.end();
    }

    /// One turn of the session: dispatch what was read, write what is ready, wait for the next
    /// event and act on it.
    async fn step(&mut self, io: &mut Io, shutdown: &CancellationToken) -> Step {
        if self.postponed.is_some() && !self.closing {
            self.resume_postponed().await;
        }
        if self.reloaded() && self.adopt_reload(io) == Step::End {
            return Step::End;
        }
        if !self.closing && self.dispatch_parsed(&mut io.parser, &mut io.inbuf).await == Close::Now
        {
            return Step::End;
        }
        if self.draining && !self.closing && self.drained(io) {
            self.close_input();
        }
        let unwritten = io.out.len();
        self.dispatch.collect(&mut io.out);
        let collected = io.out.get(unwritten..).unwrap_or_default();
        self.timer
            .answered(self.dispatch.queued(), collected, &self.stats);
        self.replies.filter(&mut io.out, unwritten);
        if io.backlog.over_limit(&self.stats, unwritten, io.out.len()) {
            return Step::End;
        }
        if self.dispatch.send_deferred().await {
            return Step::Go;
        }
        self.publish(None);
        if let Err(e) = io.backlog.write_now(&io.wr, &mut io.out) {
            tracing::debug!(error = %e, "client write failed");
            return Step::End;
        }
        if self.dispatch.is_idle() {
            if let Some(first) = self.subscribe.take() {
                return self.subscriber_mode(io, first).await;
            }
        }
        if self.closing && self.dispatch.is_idle() && io.out.is_empty() {
            let _ = io.wr.shutdown().await;
            return Step::End;
        }
        let event = self.next_event(io, shutdown).await;
        self.on_event(event, io).await
    }

    /// Waits for whatever comes first: the client's socket, the dispatcher, a timer, shutdown.
    async fn next_event(&mut self, io: &mut Io, shutdown: &CancellationToken) -> Event {
        // While the proxy stops, only the rest of a request begun, or of a transaction, is read.
        let can_read = !self.closing
            && self.subscribe.is_none()
            && self.postponed.is_none()
            && self.dispatch.can_parse()
            && self.dispatch.queued() < self.ctx.max_pipeline
            && (!self.draining
                || self.dispatch.in_multi()
                || !io.inbuf.is_empty()
                || self.first_request_wait.is_some());
        // The client is written to as it reads, while replies keep being collected (so the
        // output buffer limit sees a client that does not read) and requests keep being read.
        let writing = must_write(&io.wr, &io.out);
        let idle = io
            .backlog
            .idle_deadline(writing || !self.dispatch.is_idle());
        let pause_ends = self.postponed.as_ref().and_then(|_| *self.pauses.borrow());
        tokio::select! {
            r = write_or_flush(&mut io.wr, &io.out), if writing => Event::Written(r),
            _ = pause_changed(&mut self.pauses, pause_ends), if self.postponed.is_some() => Event::Unpaused,
            p = self.dispatch.progress() => Event::Progress(p),
            r = io.rd.read_buf(&mut io.inbuf), if can_read => Event::Read(r),
            _ = sleep_until_some(idle), if idle.is_some() && !self.closing => Event::Idle,
            _ = io.backlog.evicted() => Event::Evicted,
            _ = shutdown.cancelled(), if !self.closing && !self.draining => Event::Shutdown,
            _ = sleep_until_some(self.first_request_wait), if self.first_request_wait.is_some() => {
                Event::FirstRequestWaitOver
            }
            // The entry's token is a child of the end of the shutdown grace: cancelled by either.
            _ = self.entry.killed().cancelled() => Event::Killed,
        }
    }

    async fn on_event(&mut self, event: Event, io: &mut Io) -> Step {
        match event {
            Event::Written(Ok(n)) => io.backlog.written(&mut io.out, n),
            Event::Written(Err(e)) => {
                tracing::debug!(error = %e, "client write failed");
                return Step::End;
            }
            Event::Progress(p) => {
                let unwritten = io.out.len();
                self.dispatch.advance(p, &mut io.out).await;
                let collected = io.out.get(unwritten..).unwrap_or_default();
                self.timer
                    .answered(self.dispatch.queued(), collected, &self.stats);
                self.replies.filter(&mut io.out, unwritten);
                if io.backlog.over_limit(&self.stats, unwritten, io.out.len()) {
                    return Step::End;
                }
            }
            Event::Read(Ok(0)) => {
                // Like Redis, a client that hangs up while it waits on its own connection (a
                // blocking pop) is dropped at once: its connection closes, the pop with it.
                if self.dispatch.blocked() {
                    return Step::End;
                }
                self.close_input();
            }
            Event::Read(Ok(_)) => {
                self.heard = true;
                self.first_request_wait = None;
                io.backlog.active();
            }
            Event::Read(Err(e)) => {
                tracing::debug!(error = %e, "client read failed");
                return Step::End;
            }
            Event::Idle => {
                // Closed without a reply, as Redis does (`timeout`).
                tracing::debug!("idle client closed");
                self.stats.idle_timeout();
                return Step::End;
            }
            Event::Evicted => return Step::End,
            Event::Unpaused => {}
            Event::FirstRequestWaitOver => self.first_request_wait = None,
            Event::Killed if self.draining => {
                tracing::debug!("client closed at the end of the shutdown grace");
                return Step::End;
            }
            Event::Killed => {
                tracing::debug!("client killed (CLIENT KILL)");
                return Step::End;
            }
            Event::Shutdown => return self.begin_drain().await,
        }
        Step::Go
    }

    /// The proxy begins to stop: what the client sent already is answered, held requests are
    /// answered now, and the client is let go once [`drained`](Self::drained).
    async fn begin_drain(&mut self) -> Step {
        self.draining = true;
        if !self.heard {
            // A client accepted just before the stop connected to send something, which may be
            // on its way: closing on it would fail a request that can be served (without this wait,
            // clients connecting and writing through a takeover saw one such close in 1314).
            self.first_request_wait = Some(tokio::time::Instant::now() + FIRST_REQUEST_WAIT);
        }
        self.dispatch.shutdown().await;
        Step::Go
    }

    /// While the proxy stops: the client has nothing more to send that the proxy would serve
    /// (no request begun, no transaction open, no command waiting for `CLIENT PAUSE`, no
    /// subscriber mode to enter), so its input closes and it goes once its replies are out. A
    /// subscriber stays until the end of the grace, getting its messages.
    fn drained(&self, io: &Io) -> bool {
        io.inbuf.is_empty()
            && self.first_request_wait.is_none()
            && !self.dispatch.in_multi()
            && self.postponed.is_none()
            && self.subscribe.is_none()
    }

    /// A reload stored a context newer than the session's.
    fn reloaded(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|(live, generation)| live.generation() != *generation)
    }

    /// Takes the reloaded context once nothing of the client's depends on the old one: no reply
    /// awaited, no transaction, `WATCH`, blocking command, paused command or subscriber mode
    /// under way (those finish under the settings they began with). Its user is looked up again
    /// (the new rules apply from the next command); a user the reload removed ends the session.
    fn adopt_reload(&mut self, io: &mut Io) -> Step {
        let Some((live, _)) = &self.live else {
            return Step::Go;
        };
        if self.subscribe.is_some() || self.postponed.is_some() {
            return Step::Go;
        }
        let (ctx, generation) = live.load();
        if !self.dispatch.adopt(&ctx) {
            return Step::Go;
        }
        if !self.auth.adopt(&ctx.security) {
            tracing::debug!(
                user = self.auth.user_name(),
                "client closed: its user is gone from the reloaded config"
            );
            return Step::End;
        }
        io.parser.set_limits(ctx.limits);
        io.backlog.reconfigure(&ctx);
        self.ctx = ctx;
        if let Some((_, mine)) = self.live.as_mut() {
            *mine = generation;
        }
        Step::Go
    }

    /// Subscriber (or monitor) mode, from `first`, until the client leaves it.
    async fn subscriber_mode(&mut self, io: &mut Io, first: Request) -> Step {
        let locator = self.dispatch.locator();
        let entry = self.entry.clone();
        {
            let mut state = entry.state();
            if first.name().eq_ignore_ascii_case(b"monitor") {
                state.monitor = true;
            } else {
                state.subscribed = Some([0; 3]);
            }
        }
        let parts = crate::pubsub::SessionParts {
            ctx: &self.ctx,
            stats: &self.stats,
            auth: &mut self.auth,
            protocol: self.protocol,
            locator: locator.as_ref(),
            entry: &entry,
        };
        let client = crate::pubsub::ClientIo {
            rd: &mut io.rd,
            wr: &mut io.wr,
            inbuf: &mut io.inbuf,
            out: &mut io.out,
            parser: &mut io.parser,
            backlog: &mut io.backlog,
        };
        // The entry's token: the proxy's shutdown, or this client killed.
        let exit = crate::pubsub::serve(parts, client, first, entry.killed()).await;
        {
            let mut state = entry.state();
            state.monitor = false;
            state.subscribed = None;
        }
        match exit {
            crate::pubsub::Exit::Close => return Step::End,
            crate::pubsub::Exit::Reset => self.reset().await,
            crate::pubsub::Exit::Unsubscribed => {}
        }
        Step::Go
    }

    /// No more requests are read; what was read is answered.
    pub(super) fn close_input(&mut self) {
        self.closing = true;
        self.dispatch.close_input();
    }

    /// Parses and dispatches every complete request in `inbuf`, up to the pipeline cap;
    /// [`Close::Now`] when the client must be dropped at once (its query buffer limit).
    async fn dispatch_parsed(&mut self, parser: &mut RequestParser, inbuf: &mut BytesMut) -> Close {
        let mut commands: Option<Arc<CommandTable>> = None;
        // Nothing after a QUIT is run, as in Redis (CLIENT_CLOSE_AFTER_REPLY stops its input loop).
        while !self.closing
            && self.subscribe.is_none()
            && self.postponed.is_none()
            && self.dispatch.can_parse()
            && self.dispatch.queued() < self.ctx.max_pipeline
        {
            parser.set_unauthenticated(!self.auth.authenticated());
            parser.set_buffered(self.dispatch.buffered_bytes());
            match parser.next(inbuf) {
                Ok(Some(req)) => {
                    let commands = commands
                        .get_or_insert_with(|| {
                            self.dispatch.begin_read();
                            self.ctx.commands.load_full()
                        })
                        .clone();
                    self.handle(req, &commands).await;
                }
                Ok(None) => break,
                Err(e) => {
                    let (reply, close) = input_error(&self.stats, &e);
                    if close == Close::Now {
                        return Close::Now;
                    }
                    self.timer.read(std::time::Instant::now(), None);
                    self.dispatch.push_ready(reply).await;
                    if close == Close::AfterReply {
                        self.close_input();
                    }
                    break;
                }
            }
        }
        self.dispatch.flush().await;
        Close::No
    }

    /// One request: what is the client's own is answered here, the rest is dispatched.
    pub(super) async fn handle(&mut self, req: Request, commands: &CommandTable) {
        let info = commands.lookup(&req);
        if self.paused(info) {
            self.postponed = Some(req);
            self.entry.state().blocked = true;
            return;
        }
        self.stats.command();
        self.timer.read(std::time::Instant::now(), info);
        self.publish(Some(info.map_or("NULL", |i| i.name.as_str())));
        // `CLIENT REPLY OFF`/`SKIP`: this command's reply is marked to be dropped.
        let dropped = self.replies.next_command();
        if dropped {
            self.replies.drop_reply(self.dispatch.queued());
        }
        let refused = self
            .dispatch
            .in_multi()
            .then(|| refused_in_transaction(info))
            .flatten()
            .or_else(|| acl::check(&self.ctx.security, &self.auth, commands, &req));
        if let Some(refused) = refused {
            // A refused command spoils a transaction being queued, as in Redis.
            if is_error_reply(&refused) {
                self.dispatch.spoil_transaction();
            }
            return self.dispatch.push_ready(refused).await;
        }
        self.ctx.scripts.observe(&req);
        let class = self.dispatch.classify(info, &req);
        let in_multi = self.dispatch.in_multi();
        if in_multi && queued_in_multi(&class) {
            self.queued_in_tx += 1;
            self.tx_writes |= holds_on_write(info);
            return dispatch_command!(self.dispatch, req, info, class, commands);
        }
        let reply = match class {
            Class::Read | Class::Write | Class::Pin(_) | Class::Select(_) => {
                return dispatch_command!(self.dispatch, req, info, class, commands)
            }
            Class::Local(reply) | Class::Reject(reply) => reply,
            Class::Quit => {
                self.close_input();
                status_reply("OK")
            }
            Class::Auth => local::auth_reply(&self.ctx, &mut self.auth, &req).await,
            Class::Hello => {
                // Sent first: what was gathered so far is for the protocol in force before HELLO.
                self.dispatch.flush().await;
                let (reply, protocol) = local::hello(
                    &self.ctx,
                    &mut self.auth,
                    self.protocol,
                    &mut self.client,
                    &req,
                )
                .await;
                self.set_protocol(protocol);
                reply
            }
            Class::Conn(ConnCmd::Reset) => {
                self.reset().await;
                status_reply("RESET")
            }
            // Redis allows SUBSCRIBE under WATCH (the watch stays), and queues it in MULTI,
            // where the proxy cannot follow it into subscriber mode.
            Class::PubSub if in_multi => {
                error_reply("ERR haproxy-rs does not support pub/sub commands inside a transaction")
            }
            Class::PubSub => {
                // Subscriber mode answers it, outside the dispatcher's count.
                self.timer.untimed();
                if dropped {
                    // Subscriber mode writes its own confirmations.
                    self.replies.unmark_last();
                }
                self.dispatch.flush().await;
                self.subscribe = Some(req);
                return;
            }
            Class::Conn(cmd) => match self.conn_command(cmd, &req, in_multi, dropped).await {
                Some(reply) => reply,
                None => return self.timer.untimed(),
            },
        };
        self.dispatch.push_ready(reply).await;
    }

    /// Brings the client's entry up to date (`cmd`: the command just received, by its full
    /// name).
    fn publish(&mut self, cmd: Option<&str>) {
        let in_multi = self.dispatch.in_multi();
        if !in_multi {
            self.queued_in_tx = 0;
            self.tx_writes = false;
        }
        let mut s = self.entry.state();
        if let Some(cmd) = cmd {
            s.cmd.clear();
            s.cmd.push_str(cmd);
            s.last = std::time::Instant::now();
        }
        s.db = self.dispatch.db();
        s.multi = in_multi.then_some(self.queued_in_tx);
        s.blocked = self.dispatch.blocked() || self.postponed.is_some();
        s.resp3 = self.protocol == Protocol::Resp3;
        if s.user != self.auth.user_name() {
            s.user = self.auth.user_name().to_string();
        }
        s.name.clone_from(&self.client.name);
    }

    fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.dispatch.set_protocol(protocol);
    }

    /// `RESET`: back to a fresh connection's state (RESP2, no name, not authenticated when
    /// clients must be, database 0, no transaction or `WATCH`).
    async fn reset(&mut self) {
        self.dispatch.reset().await;
        self.set_protocol(Protocol::Resp2);
        self.client.name = None;
        self.auth.reset(&self.ctx.security);
    }
}

impl Drop for Session {
    /// However the session ends (or is dropped with its thread), its client leaves the registry.
    fn drop(&mut self) {
        self.ctx.clients.remove(self.client.id);
    }
}
