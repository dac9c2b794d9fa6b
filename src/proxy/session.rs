//! One client connection: parse requests, route each, and return replies in request order.
//!
//! A session is a single task. Requests are dispatched as soon as they are parsed (pipelining),
//! each to the backend connection slot this session sticks to, so its requests to one backend keep
//! their order. Replies wait in a FIFO and are written in batches, so a pipeline that mixes reads
//! (replicas) and writes (master) still comes back in order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::reply::{backend_error, protocol_error, Close};
use super::ProxyContext;
use crate::backend::{Backend, BackendError, BatchReply, Dispatch, Protocol};
use crate::config::ReadConsistency;
use crate::resp::{
    error_reply, is_error_reply, status_reply, CommandTable, Request, RequestParser,
};
use crate::router::{
    classify, route, Class, Endpoint, ReadNeed, ReadYourWrites, Route, RoutingTable,
};
use crate::stats::ListenerStats;

/// A reply slot, in request order.
enum Pending {
    /// Known already (local answers, refusals, errors).
    Ready(Bytes),
    /// `count` requests sent to a backend as one dispatch; their replies come through `rx`.
    Waiting {
        rx: oneshot::Receiver<BatchReply>,
        count: usize,
        writes: u32,
        backend: Arc<Backend>,
    },
}

/// Requests for one backend gathered while parsing one read, sent when the target changes or the
/// input runs dry: a pipeline becomes one dispatch instead of one per request.
struct OpenBatch {
    backend: Arc<Backend>,
    /// Opened by a read that any replica may serve, so later such reads join it.
    any_read: bool,
    count: usize,
    writes: u32,
}

/// One client's state.
pub struct Session {
    ctx: Arc<ProxyContext>,
    endpoint: Endpoint,
    stats: Arc<ListenerStats>,
    /// Backend connection slot; fixed for the session's life.
    slot: usize,
    /// Round-robin cursor over replicas.
    cursor: usize,
    /// Client id reported by `HELLO`.
    id: u64,
    /// RESP2 until the client says `HELLO 3`.
    protocol: Protocol,
    rw: ReadYourWrites,
    track_writes: bool,
    pending: VecDeque<Pending>,
    /// Requests parsed whose replies have not been written yet.
    queued: usize,
    open: Option<OpenBatch>,
    /// The open batch's bytes; reused, so dispatching does not allocate once it has grown.
    batch_buf: BytesMut,
    /// No more requests are read: QUIT, a protocol error, EOF or shutdown.
    closing: bool,
}

enum Event {
    Reply(BatchReply),
    Read(std::io::Result<usize>),
    Shutdown,
}

impl Session {
    /// A session for client number `id` on `endpoint`.
    pub fn new(
        ctx: Arc<ProxyContext>,
        endpoint: Endpoint,
        stats: Arc<ListenerStats>,
        id: u64,
    ) -> Session {
        let track_writes = endpoint == Endpoint::Main
            && ctx.routing.read_consistency == ReadConsistency::ReadYourWrites;
        Session {
            ctx,
            endpoint,
            stats,
            slot: id as usize,
            cursor: id as usize,
            id,
            protocol: Protocol::Resp2,
            rw: ReadYourWrites::default(),
            track_writes,
            pending: VecDeque::new(),
            queued: 0,
            open: None,
            batch_buf: BytesMut::new(),
            closing: false,
        }
    }

    /// Serves the client until it quits, breaks the protocol, hangs up, or the proxy stops.
    pub async fn run(mut self, stream: TcpStream, shutdown: CancellationToken) {
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::new(self.ctx.limits);
        loop {
            if !self.closing {
                self.dispatch_parsed(&mut parser, &mut inbuf).await;
            }
            self.collect_ready(&mut out);
            if !out.is_empty() {
                if let Err(e) = wr.write_all(&out).await {
                    tracing::debug!(error = %e, "client write failed");
                    return;
                }
                out.clear();
                continue;
            }
            if self.closing && self.pending.is_empty() {
                break;
            }
            let can_read = !self.closing && self.queued < self.ctx.max_pipeline;
            let event = tokio::select! {
                r = front_reply(&mut self.pending) => Event::Reply(r),
                r = rd.read_buf(&mut inbuf), if can_read => Event::Read(r),
                _ = shutdown.cancelled(), if !self.closing => Event::Shutdown,
            };
            match event {
                Event::Reply(reply) => {
                    if let Some(Pending::Waiting {
                        count,
                        writes,
                        backend,
                        ..
                    }) = self.pending.pop_front()
                    {
                        self.finish(count, writes, &backend, reply, &mut out);
                    }
                }
                Event::Read(Ok(0)) => self.closing = true,
                Event::Read(Ok(_)) => {}
                Event::Read(Err(e)) => {
                    tracing::debug!(error = %e, "client read failed");
                    return;
                }
                Event::Shutdown => self.closing = true,
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Parses and dispatches every complete request in `inbuf`, up to the pipeline cap.
    async fn dispatch_parsed(&mut self, parser: &mut RequestParser, inbuf: &mut BytesMut) {
        let mut snapshot: Option<(Arc<RoutingTable>, Arc<CommandTable>)> = None;
        while self.queued < self.ctx.max_pipeline {
            match parser.next(inbuf) {
                Ok(Some(req)) => {
                    let ctx = &self.ctx;
                    let (table, commands) = snapshot
                        .get_or_insert_with(|| (ctx.table.load_full(), ctx.commands.load_full()));
                    self.handle(req, table, commands).await;
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.error();
                    let (reply, close) = protocol_error(&e);
                    tracing::debug!(error = %e, "client protocol error");
                    self.push_ready(reply).await;
                    self.closing |= close == Close::AfterReply;
                    break;
                }
            }
        }
        self.flush().await;
    }

    async fn handle(&mut self, req: Request, table: &RoutingTable, commands: &CommandTable) {
        self.stats.command();
        let write = match classify(commands, &req) {
            Class::Read => false,
            Class::Write => true,
            Class::Local(reply) | Class::Reject(reply) => return self.push_ready(reply).await,
            Class::Quit => {
                self.closing = true;
                return self.push_ready(status_reply("OK")).await;
            }
            Class::Auth => {
                let reply = self.auth_reply(&req);
                return self.push_ready(reply).await;
            }
            Class::Hello => {
                // Flush first: the batch was gathered for the protocol in force before HELLO.
                self.flush().await;
                let reply = self.hello_reply(&req);
                return self.push_ready(reply).await;
            }
        };
        let need = if self.track_writes && !write {
            self.rw.need(&self.ctx.clock)
        } else {
            ReadNeed::Any
        };
        let any_read = !write && need == ReadNeed::Any;
        if !(any_read && self.open.as_ref().is_some_and(|o| o.any_read)) {
            let policy = self.ctx.routing.read_policy;
            let backend = match route(table, self.endpoint, policy, write, need, &mut self.cursor) {
                Route::Backend(b) => b,
                Route::Error(reply) => return self.push_ready(reply).await,
            };
            if !self
                .open
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(&o.backend, backend))
            {
                self.flush().await;
                self.open = Some(OpenBatch {
                    backend: backend.clone(),
                    any_read,
                    count: 0,
                    writes: 0,
                });
            }
        }
        if let Some(open) = &mut self.open {
            self.batch_buf.extend_from_slice(req.raw());
            open.count += 1;
            self.queued += 1;
            if write {
                open.writes += 1;
                if self.track_writes {
                    self.rw.write_sent();
                }
            }
        }
    }

    /// Queues a reply known already, after whatever was gathered before it.
    async fn push_ready(&mut self, reply: Bytes) {
        self.flush().await;
        self.queued += 1;
        self.pending.push_back(Pending::Ready(reply));
    }

    /// Sends the open batch to its backend.
    async fn flush(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let raw = self.batch_buf.split().freeze();
        let (dispatch, rx) = Dispatch::new(raw, open.count);
        let sent = match open.backend.pool(self.protocol) {
            Some(pool) => pool.send(self.slot, dispatch).await,
            None => Err(BackendError::Unavailable),
        };
        match sent {
            Ok(()) => self.pending.push_back(Pending::Waiting {
                rx,
                count: open.count,
                writes: open.writes,
                backend: open.backend,
            }),
            Err(e) => {
                let (reply, _) = backend_error(&e, open.backend.addr());
                for _ in 0..open.count {
                    self.pending.push_back(Pending::Ready(reply.clone()));
                }
                self.writes_done(open.writes);
            }
        }
    }

    fn writes_done(&mut self, writes: u32) {
        if self.track_writes {
            for _ in 0..writes {
                self.rw.write_done(&self.ctx.clock);
            }
        }
    }

    /// Moves every reply that is already known, from the front of the queue, into `out`.
    fn collect_ready(&mut self, out: &mut BytesMut) {
        loop {
            match self.pending.front_mut() {
                Some(Pending::Ready(_)) => {
                    if let Some(Pending::Ready(b)) = self.pending.pop_front() {
                        self.queued -= 1;
                        out.extend_from_slice(&b);
                    }
                }
                Some(Pending::Waiting { rx, .. }) => {
                    let reply = match rx.try_recv() {
                        Ok(r) => r,
                        Err(oneshot::error::TryRecvError::Empty) => return,
                        Err(oneshot::error::TryRecvError::Closed) => {
                            BatchReply::failed(BackendError::ConnectionLost)
                        }
                    };
                    if let Some(Pending::Waiting {
                        count,
                        writes,
                        backend,
                        ..
                    }) = self.pending.pop_front()
                    {
                        self.finish(count, writes, &backend, reply, out);
                    }
                }
                None => return,
            }
        }
    }

    /// Writes a dispatch's replies into `out`: the frames, then an error for each request the
    /// backend did not answer.
    fn finish(
        &mut self,
        count: usize,
        writes: u32,
        backend: &Backend,
        reply: BatchReply,
        out: &mut BytesMut,
    ) {
        self.writes_done(writes);
        self.queued -= count;
        let answered = reply.frames.len().min(count);
        for frame in reply.frames.iter().take(count) {
            if is_error_reply(frame) {
                self.stats.error();
            }
            out.extend_from_slice(frame);
        }
        if answered < count {
            let error = reply.error.unwrap_or(BackendError::ConnectionLost);
            tracing::debug!(backend.addr = backend.addr(), error = %error, "request failed");
            let (bytes, _) = backend_error(&error, backend.addr());
            for _ in answered..count {
                self.stats.error();
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// `AUTH [user] password`, checked against the backend's credentials: a client configured with
    /// the servers' password keeps working through the proxy.
    fn auth_reply(&self, req: &Request) -> Bytes {
        let (user, pass) = match (req.argc(), req.arg(1), req.arg(2)) {
            (2, Some(p), _) => (None, p),
            (3, Some(u), Some(p)) => (Some(u), p),
            _ => return error_reply("ERR wrong number of arguments for 'auth' command"),
        };
        if self.ctx.backend_password.is_none() && user.is_none() {
            return error_reply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        if self.credentials_match(user, pass) {
            status_reply("OK")
        } else {
            error_reply(WRONGPASS)
        }
    }

    fn credentials_match(&self, user: Option<&[u8]>, pass: &[u8]) -> bool {
        let Some(expected) = &self.ctx.backend_password else {
            // No password: Redis's default user accepts any password via HELLO ... AUTH default x.
            return user.is_none_or(|u| u == b"default");
        };
        let expected_user = self.ctx.backend_username.as_deref().unwrap_or("default");
        let user_ok = user.is_none_or(|u| constant_time_eq(u, expected_user.as_bytes()));
        user_ok && constant_time_eq(pass, expected.expose().as_bytes())
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`, answered as Redis 7.0 does. `HELLO 3`
    /// moves this session to RESP3 backend connections, so replies keep their RESP3 types.
    fn hello_reply(&mut self, req: &Request) -> Bytes {
        let mut protocol = self.protocol;
        let mut i = 1;
        if let Some(v) = req.arg(1) {
            protocol = match v {
                b"2" => Protocol::Resp2,
                b"3" => Protocol::Resp3,
                _ if std::str::from_utf8(v).is_ok_and(|s| s.parse::<i64>().is_ok()) => {
                    return error_reply("NOPROTO sorry, this protocol version is not supported.")
                }
                _ => return error_reply("ERR Protocol version is not an integer or out of range"),
            };
            i = 2;
        }
        while let Some(opt) = req.arg(i) {
            if opt.eq_ignore_ascii_case(b"auth") {
                let (Some(user), Some(pass)) = (req.arg(i + 1), req.arg(i + 2)) else {
                    return hello_syntax_error(opt);
                };
                if !self.credentials_match(Some(user), pass) {
                    return error_reply(WRONGPASS);
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"setname") && req.arg(i + 1).is_some() {
                i += 2;
            } else {
                return hello_syntax_error(opt);
            }
        }
        self.protocol = protocol;
        hello_map(protocol, &self.ctx.server_version.load(), self.id)
    }
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn hello_syntax_error(opt: &[u8]) -> Bytes {
    error_reply(&format!(
        "ERR Syntax error in HELLO option '{}'",
        String::from_utf8_lossy(opt)
    ))
}

/// The `HELLO` reply: a map in RESP3, a flat array in RESP2.
fn hello_map(protocol: Protocol, version: &str, id: u64) -> Bytes {
    let proto = if protocol == Protocol::Resp3 { 3 } else { 2 };
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let mut out = if proto == 3 {
        "%7\r\n".to_string()
    } else {
        "*14\r\n".to_string()
    };
    for (k, v) in [("server", bulk("redis")), ("version", bulk(version))] {
        out.push_str(&bulk(k));
        out.push_str(&v);
    }
    out.push_str(&format!("{}:{proto}\r\n", bulk("proto")));
    out.push_str(&format!("{}:{}\r\n", bulk("id"), id + 1));
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        out.push_str(&bulk(k));
        out.push_str(&bulk(v));
    }
    out.push_str(&format!("{}*0\r\n", bulk("modules")));
    Bytes::from(out)
}

/// Waits for the replies at the front of the queue (never resolves when the front is not waiting).
async fn front_reply(pending: &mut VecDeque<Pending>) -> BatchReply {
    match pending.front_mut() {
        Some(Pending::Waiting { rx, .. }) => rx
            .await
            .unwrap_or_else(|_| BatchReply::failed(BackendError::ConnectionLost)),
        _ => std::future::pending().await,
    }
}

/// Compares secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
