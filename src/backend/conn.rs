//! One backend connection as an actor: requests in through a channel, written in batches,
//! replies matched to requests in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::busy::BusyProbe;
use super::{connect_stream, BackendError, ConnSettings};
use crate::resp::{encode_command, is_error_reply, ReplyScanner};
use crate::stats::BackendStats;
use crate::tls::{Stream, WriteHalf};

/// Most requests written but not yet answered on one connection.
const MAX_IN_FLIGHT: usize = 16 * 1024;
/// Stop taking new requests while this much is waiting to be written.
const MAX_WRITE_BUF: usize = 4 * 1024 * 1024;
/// First reconnect delay; it doubles up to `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// The protocol a connection speaks; a client's `HELLO 3` moves its session to RESP3 connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default.
    Resp2,
    /// RESP3 (after `HELLO 3`).
    Resp3,
}

/// What came back for a [`Dispatch`]: one reply frame per request, in order. When the connection
/// failed part-way, `frames` is short and `error` says why the rest have no reply.
#[derive(Debug, Default)]
pub struct BatchReply {
    /// Reply frames, in request order.
    pub frames: Vec<Bytes>,
    /// Why the requests after `frames` got no reply.
    pub error: Option<BackendError>,
    /// For a durable dispatch: how many replicas the `WAIT` written after it confirmed (`None`
    /// when the connection failed before `WAIT` answered).
    pub confirmed: Option<i64>,
}

impl BatchReply {
    /// A reply that failed as a whole.
    pub fn failed(error: BackendError) -> BatchReply {
        BatchReply {
            frames: Vec::new(),
            error: Some(error),
            confirmed: None,
        }
    }
}

/// A run of requests from one session for one connection, and where their replies go. Sending a
/// pipeline as one message (one channel send, one wake-up, one reply) is what keeps the proxy's
/// cost per request low when clients pipeline.
#[derive(Debug)]
pub struct Dispatch {
    /// The requests exactly as they go on the wire, back to back.
    pub raw: Bytes,
    /// How many requests `raw` holds.
    pub count: usize,
    /// Its replies wait for a `WAIT` (`write_durability`), one shared by every durable dispatch
    /// written in the same syscall.
    pub durable: bool,
    /// Where their replies go.
    pub reply: oneshot::Sender<BatchReply>,
}

impl Dispatch {
    /// `count` requests and the receiver of their replies.
    pub fn new(
        raw: Bytes,
        count: usize,
        durable: bool,
    ) -> (Dispatch, oneshot::Receiver<BatchReply>) {
        let (tx, rx) = oneshot::channel();
        (
            Dispatch {
                raw,
                count,
                durable,
                reply: tx,
            },
            rx,
        )
    }
}

/// A dispatch written to the server, collecting its replies; or (no `reply`) the connection's
/// own `WAIT` for the durable dispatches written before it.
struct InFlight {
    reply: Option<oneshot::Sender<BatchReply>>,
    frames: Vec<Bytes>,
    count: usize,
    durable: bool,
    sent: Instant,
    /// Its number on the connection.
    seq: u64,
}

impl InFlight {
    fn new(d: Dispatch, sent: Instant, seq: u64) -> InFlight {
        InFlight {
            reply: Some(d.reply),
            frames: Vec::with_capacity(d.count),
            count: d.count,
            durable: d.durable,
            sent,
            seq,
        }
    }

    fn wait(sent: Instant, seq: u64) -> InFlight {
        InFlight {
            reply: None,
            frames: Vec::with_capacity(1),
            count: 1,
            durable: false,
            sent,
            seq,
        }
    }

    fn answer(self, error: Option<BackendError>, confirmed: Option<i64>) {
        if let Some(reply) = self.reply {
            let _ = reply.send(BatchReply {
                frames: self.frames,
                error,
                confirmed,
            });
        }
    }
}

/// The actor: connect, serve until the connection fails, reconnect with backoff; ends when the
/// token is cancelled or every sender is gone.
pub(crate) async fn run_conn(
    addr: Arc<str>,
    settings: Arc<ConnSettings>,
    protocol: Protocol,
    db: u8,
    mut rx: mpsc::Receiver<Dispatch>,
    stats: Arc<BackendStats>,
    token: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let connected = tokio::select! {
            _ = token.cancelled() => break,
            r = connect(&addr, &settings, protocol, db) => r,
        };
        match connected {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                stats.connection_opened();
                tracing::debug!(backend.addr = %addr, "backend connection up");
                let result = serve(&addr, stream, &mut rx, &settings, &stats, &token).await;
                stats.connection_closed();
                match result {
                    Ok(Ended::Shutdown) => break,
                    Ok(Ended::NoSenders) => return,
                    Err(e) => {
                        tracing::warn!(backend.addr = %addr, error = %e, "backend connection lost")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(backend.addr = %addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "backend connect failed");
                if !refuse_for(backoff, &mut rx, &token).await {
                    break;
                }
                backoff = (backoff * 2).min(settings.max_backoff);
            }
        }
    }
    rx.close();
    while let Ok(d) = rx.try_recv() {
        let _ = d.reply.send(BatchReply::failed(BackendError::Unavailable));
    }
}

/// Connects, authenticates and, for a RESP3 pool, switches the protocol with `HELLO 3`, and
/// selects database `db`; the connection is named `haproxy-rs` for `CLIENT LIST`.
pub(crate) async fn connect(
    addr: &str,
    settings: &ConnSettings,
    protocol: Protocol,
    db: u8,
) -> Result<Stream, BackendError> {
    Ok(connect_with_id(addr, settings, protocol, db, false)
        .await?
        .0)
}

/// [`connect`], and with `want_id` the server's id for the connection (`CLIENT ID`, `None` from a
/// server that refuses it), as a pinned connection needs for `CLIENT UNBLOCK`.
pub(crate) async fn connect_with_id(
    addr: &str,
    settings: &ConnSettings,
    protocol: Protocol,
    db: u8,
    want_id: bool,
) -> Result<(Stream, Option<u64>), BackendError> {
    let mut stream = connect_stream(
        addr,
        settings.creds.tls.as_deref(),
        settings.connect_timeout,
    )
    .await?;
    // (command, whether an error reply to it is fatal)
    let mut steps: Vec<(Bytes, bool)> = Vec::new();
    if let Some(auth) = settings.creds.auth_command() {
        steps.push((encode_command(&auth), true));
    }
    if protocol == Protocol::Resp3 {
        steps.push((encode_command(&["HELLO", "3"]), true));
    }
    if db != 0 {
        steps.push((
            encode_command(&["SELECT".to_string(), db.to_string()]),
            true,
        ));
    }
    if settings.readonly {
        // Not fatal: without it a replica answers MOVED and the read goes to the master.
        steps.push((encode_command(&["READONLY"]), false));
    }
    // A server that renamed CLIENT still serves.
    steps.push((encode_command(&["CLIENT", "SETNAME", "haproxy-rs"]), false));
    if want_id {
        steps.push((encode_command(&["CLIENT", "ID"]), false));
    }
    let mut id = None;
    let handshake = async {
        let out: Vec<u8> = steps.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut rbuf = BytesMut::new();
        let mut scanner = ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH);
        let mut seen = 0;
        while seen < steps.len() {
            while let Some(frame) = scanner.next(&mut rbuf)? {
                let fatal = steps.get(seen).is_some_and(|(_, fatal)| *fatal);
                if fatal && is_error_reply(&frame) {
                    return Err(BackendError::Auth(
                        String::from_utf8_lossy(&frame).trim().to_string(),
                    ));
                }
                seen += 1;
                if want_id && seen == steps.len() {
                    id = std::str::from_utf8(&frame)
                        .ok()
                        .and_then(|f| f.strip_prefix(':')?.trim_end().parse().ok());
                }
            }
            if seen < steps.len() && stream.read_buf(&mut rbuf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
        Ok(())
    };
    tokio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| BackendError::Timeout)??;
    Ok((stream, id))
}

/// While the backend is unreachable, answer every request at once instead of queueing it.
/// Returns false when the actor should stop.
async fn refuse_for(
    delay: Duration,
    rx: &mut mpsc::Receiver<Dispatch>,
    token: &CancellationToken,
) -> bool {
    let until = tokio::time::sleep(delay);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = token.cancelled() => return false,
            _ = &mut until => return true,
            d = rx.recv() => match d {
                Some(d) => { let _ = d.reply.send(BatchReply::failed(BackendError::Unavailable)); }
                None => return false,
            },
        }
    }
}

enum Ended {
    Shutdown,
    NoSenders,
}

/// Serves one live connection. Reading, writing and taking new requests run concurrently in one
/// select loop (`read_buf` and `write_buf` are cancel-safe), so a slow reply never stops writes.
async fn serve(
    addr: &Arc<str>,
    stream: Stream,
    rx: &mut mpsc::Receiver<Dispatch>,
    settings: &ConnSettings,
    stats: &BackendStats,
    token: &CancellationToken,
) -> Result<Ended, BackendError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Durable dispatches fully answered, waiting for the `WAIT` written after them.
    let mut parked: VecDeque<InFlight> = VecDeque::new();
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut batch = Vec::with_capacity(128);
    let mut scanner = ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut busy = BusyProbe::default();
    let mut seq = 0u64;
    let result = loop {
        let can_take = wbuf.len() < MAX_WRITE_BUF && in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            n = rx.recv_many(&mut batch, 256), if can_take => {
                if n == 0 {
                    break Ok(Ended::NoSenders);
                }
                let now = Instant::now();
                let mut durable = false;
                // Behind a script the server is busy with, a request would wait for its end;
                // from the server itself, on a connection of its own, it gets -BUSY at once.
                let busy_reply = busy.busy_reply(in_flight.front().map(|f| f.seq)).cloned();
                let mut take = |d: Dispatch, wbuf: &mut BytesMut, in_flight: &mut VecDeque<InFlight>| {
                    seq += 1;
                    if let Some(reply) = &busy_reply {
                        let mut f = InFlight::new(d, now, seq);
                        f.frames.resize(f.count, reply.clone());
                        f.answer(None, None);
                        return;
                    }
                    wbuf.extend_from_slice(&d.raw);
                    durable |= d.durable;
                    in_flight.push_back(InFlight::new(d, now, seq));
                };
                for d in batch.drain(..) {
                    take(d, &mut wbuf, &mut in_flight);
                }
                // Let the other sessions that are ready run first, so that one write (and one
                // read on the server) carries all their requests.
                tokio::task::yield_now().await;
                while let Ok(d) = rx.try_recv() {
                    take(d, &mut wbuf, &mut in_flight);
                }
                if let (true, Some(wait)) = (durable, &settings.wait) {
                    wbuf.extend_from_slice(wait);
                    seq += 1;
                    in_flight.push_back(InFlight::wait(now, seq));
                }
            }
            // The flush is for TLS only: bytes encrypted but not yet on the socket (`WriteHalf`).
            w = write_out(&mut wr, &mut wbuf), if !wbuf.is_empty() || wr.needs_flush() => {
                if let Err(e) = w {
                    break Err(e.into());
                }
            }
            r = rd.read_buf(&mut rbuf) => {
                match r {
                    Ok(0) => break Err(BackendError::Closed),
                    Ok(_) => {}
                    Err(e) => break Err(e.into()),
                }
                if let Err(e) = deliver(&mut scanner, &mut rbuf, &mut in_flight, &mut parked, stats) {
                    break Err(e);
                }
            }
            _ = tick.tick() => {
                let oldest = in_flight.front().map(|f| (f.seq, f.sent.elapsed()));
                if !busy.keep_waiting(oldest, addr, settings) {
                    break Err(BackendError::Timeout);
                }
            }
            _ = token.cancelled() => break Ok(Ended::Shutdown),
        }
    };
    if matches!(result, Ok(Ended::Shutdown)) {
        // Reset instead of a clean close (no FIN handshake with a server that may be stopped);
        // requests still in flight are answered "outcome unknown" below.
        rd.set_linger_zero();
    }
    // A connection given up for a reply too slow says so; any other end is a lost connection.
    let timed_out = matches!(result, Err(BackendError::Timeout));
    for f in parked.drain(..).chain(in_flight.drain(..)) {
        let error = if timed_out {
            BackendError::Timeout
        } else {
            BackendError::ConnectionLost
        };
        f.answer(Some(error), None);
    }
    result
}

/// Writes what the socket takes of `wbuf`; with `wbuf` empty, flushes what TLS still holds.
/// Cancel-safe, like `write_buf` and `flush`.
async fn write_out(wr: &mut WriteHalf, wbuf: &mut BytesMut) -> std::io::Result<()> {
    if wbuf.is_empty() {
        wr.flush().await
    } else {
        wr.write_buf(wbuf).await.map(drop)
    }
}

/// Hands every complete reply in `rbuf` to the oldest waiting dispatch; a dispatch is answered
/// once all its replies are in (a durable one once the `WAIT` after it has answered too).
fn deliver(
    scanner: &mut ReplyScanner,
    rbuf: &mut BytesMut,
    in_flight: &mut VecDeque<InFlight>,
    parked: &mut VecDeque<InFlight>,
    stats: &BackendStats,
) -> Result<(), BackendError> {
    let mut now = None;
    while let Some(frame) = scanner.next(rbuf)? {
        let Some(front) = in_flight.front_mut() else {
            return Err(BackendError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply without a request",
            )));
        };
        let now = *now.get_or_insert_with(Instant::now);
        stats.record(
            now.saturating_duration_since(front.sent),
            !is_error_reply(&frame),
        );
        front.frames.push(frame);
        if front.frames.len() < front.count {
            continue;
        }
        let Some(done) = in_flight.pop_front() else {
            continue;
        };
        if done.reply.is_none() {
            let confirmed = done.frames.first().and_then(|f| integer_reply(f));
            for p in parked.drain(..) {
                p.answer(None, confirmed);
            }
        } else if done.durable {
            parked.push_back(done);
        } else {
            done.answer(None, None);
        }
    }
    Ok(())
}

/// The value of an integer reply (`:12`).
fn integer_reply(frame: &[u8]) -> Option<i64> {
    crate::resp::string2ll(frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
}
