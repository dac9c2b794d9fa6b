//! A scripted Redis server on in-memory connections: it parses requests with the proxy's own
//! parser, answers the connection handshake (`AUTH`, `HELLO`, `SELECT`, `READONLY`,
//! `CLIENT SETNAME`) with `+OK` (`CLIENT ID`, a pinned connection's, with the connection's number), runs `MULTI`/`EXEC` queuing, and answers everything else from
//! a script: a closure that sees each request and says what to do with it (a reply, a reply
//! after a delay, a reply held until a [`Gate`] opens, a closed connection, silence).
//!
//! A connection's requests are answered one at a time, in order, as Redis does: a delayed or
//! held reply delays the replies after it on that connection, not those of other connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::backend::memory::MemoryListener;
use crate::resp::{bulk_reply, error_reply, status_reply, Request, RequestLimits, RequestParser};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The arguments, the command's name first, as text (lossy).
    pub args: Vec<String>,
    /// Which connection (0 for the first one accepted).
    pub conn: usize,
    /// Its place among that connection's requests after the handshake (0 for the first).
    pub seq: usize,
    /// When it was read (paused-time clock).
    pub at: Instant,
}

impl Call {
    /// The command's name, upper case.
    pub fn name(&self) -> String {
        self.args
            .first()
            .map_or_else(String::new, |a| a.to_uppercase())
    }

    /// Argument `i` (`""` past the end).
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", String::as_str)
    }

    /// The whole command as one line: `SET k v`.
    pub fn line(&self) -> String {
        self.args.join(" ")
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers with these bytes (a whole frame, or anything: a test may send half a one).
    Reply(Bytes),
    /// Answers after this long (paused time); the connection's later requests wait.
    Delay(Duration, Bytes),
    /// Answers once the gate opens; the connection's later requests wait.
    Hold(Gate, Bytes),
    /// Closes the connection without answering this request or any after it.
    Close,
    /// Never answers (the connection stays open).
    Stall,
}

impl Action {
    /// The reply bytes of a [`Reply`](Action::Reply) (empty for any other action): to delay or
    /// hold what a script would have answered.
    pub fn reply(self) -> Bytes {
        match self {
            Action::Reply(r) | Action::Delay(_, r) | Action::Hold(_, r) => r,
            Action::Close | Action::Stall => Bytes::new(),
        }
    }
}

/// A latch a test opens to release the replies held on it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(watch::Sender::new(false)))
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Opens it: every reply held on it goes out (and any held later, at once).
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// The script: what to do with each request (the handshake and `MULTI`/`EXEC` never reach it).
pub type Script = Arc<dyn Fn(&Call) -> Action + Send + Sync>;

/// The default answer: a bulk string naming the server and echoing the command
/// (`m:SET k v`), so a test sees which server served each request and in what order; `PING`
/// answers `+PONG`, `MGET` an array of one such string per key (`m:k1`, `m:k2`), so the proxy's
/// split commands can combine them.
pub fn echo(name: &str, call: &Call) -> Action {
    match call.name().as_str() {
        "PING" => Action::Reply(status_reply("PONG")),
        "MGET" => {
            let mut out = BytesMut::new();
            out.extend_from_slice(format!("*{}\r\n", call.args.len().saturating_sub(1)).as_bytes());
            for key in call.args.iter().skip(1) {
                out.extend_from_slice(&bulk_reply(format!("{name}:{key}").as_bytes()));
            }
            Action::Reply(out.freeze())
        }
        _ => Action::Reply(bulk_reply(format!("{name}:{}", call.line()).as_bytes())),
    }
}

/// `-MOVED <slot> <addr>`.
pub fn moved(slot: u16, to: &str) -> Action {
    Action::Reply(error_reply(&format!("MOVED {slot} {to}")))
}

/// `-ASK <slot> <addr>`.
pub fn ask(slot: u16, to: &str) -> Action {
    Action::Reply(error_reply(&format!("ASK {slot} {to}")))
}

/// What every connection of a server shares.
struct Shared {
    name: String,
    script: Script,
    /// Every request after the handshakes, in the order read (all connections).
    calls: Mutex<Vec<Call>>,
    /// Every handshake command, as `conn: line`.
    handshakes: Mutex<Vec<String>>,
    conns: AtomicUsize,
}

/// A scripted server, reachable at [`addr`](Self::addr) by every backend connection of the
/// proxy under test. Stops (and its address refuses connections) when dropped.
pub struct FakeRedis {
    addr: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRedis")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeRedis {
    /// A server named `name` answering [`echo`].
    pub fn start(name: &str) -> FakeRedis {
        let n = name.to_string();
        FakeRedis::scripted(name, move |call| echo(&n, call))
    }

    /// A server named `name` answering by `script`.
    pub fn scripted(
        name: &str,
        script: impl Fn(&Call) -> Action + Send + Sync + 'static,
    ) -> FakeRedis {
        let listener = MemoryListener::bind();
        let addr = listener.addr().to_string();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            script: Arc::new(script),
            calls: Mutex::new(Vec::new()),
            handshakes: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        FakeRedis { addr, shared, task }
    }

    /// The address the proxy reaches it by.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its name (what [`echo`] answers with).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every request seen after the handshakes, in the order read.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`calls`](Self::calls) as lines (`SET k v`).
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(Call::line).collect()
    }

    /// The first request whose line is `line`.
    pub fn call(&self, line: &str) -> Option<Call> {
        self.calls().into_iter().find(|c| c.line() == line)
    }

    /// Every handshake command, as `<conn>: <line>`.
    pub fn handshakes(&self) -> Vec<String> {
        self.shared
            .handshakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::Relaxed)
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves every connection; they end with this task (aborted with the server).
async fn accept(mut listener: MemoryListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    while let Some(stream) = listener.accept().await {
        let conn = shared.conns.fetch_add(1, Ordering::Relaxed);
        conns.spawn(serve(stream, conn, shared.clone()));
        // Reap the finished ones, so a long test does not pile them up.
        while conns.try_join_next().is_some() {}
    }
}

/// The commands `backend::conn::connect` (and the control connections) send before any other.
fn is_handshake(req: &Request) -> bool {
    let name = req.name();
    let any = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    any(&[b"AUTH", b"HELLO", b"SELECT", b"READONLY"])
        || (name.eq_ignore_ascii_case(b"CLIENT")
            && req.arg(1).is_some_and(|a| {
                a.eq_ignore_ascii_case(b"SETNAME") || a.eq_ignore_ascii_case(b"ID")
            }))
}

/// One connection: its handshake, then each request in order.
async fn serve(mut stream: DuplexStream, conn: usize, shared: Arc<Shared>) {
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::with_capacity(4096);
    let mut handshaking = true;
    let mut seq = 0;
    // `MULTI` ... `EXEC`: the queued requests.
    let mut multi: Option<Vec<Call>> = None;
    loop {
        let req = match parser.next(&mut buf) {
            Ok(Some(req)) => req,
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(_) => return,
        };
        let args: Vec<String> = req
            .args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if handshaking && is_handshake(&req) {
            let line = format!("{conn}: {}", args.join(" "));
            shared
                .handshakes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
            let reply = if req.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"ID")) {
                crate::resp::int_reply(i64::try_from(conn).unwrap_or(0))
            } else {
                status_reply("OK")
            };
            if stream.write_all(&reply).await.is_err() {
                return;
            }
            continue;
        }
        handshaking = false;
        let call = Call {
            args,
            conn,
            seq,
            at: Instant::now(),
        };
        seq += 1;
        shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call.clone());
        let action = match (call.name().as_str(), &mut multi) {
            ("MULTI", None) => {
                multi = Some(Vec::new());
                Action::Reply(status_reply("OK"))
            }
            ("EXEC", Some(_)) => {
                let queued = multi.take().unwrap_or_default();
                Action::Reply(exec(&shared.script, &queued))
            }
            ("DISCARD", Some(_)) => {
                multi = None;
                Action::Reply(status_reply("OK"))
            }
            ("WATCH" | "UNWATCH" | "ASKING", _) => Action::Reply(status_reply("OK")),
            (_, Some(queued)) => {
                queued.push(call.clone());
                Action::Reply(status_reply("QUEUED"))
            }
            _ => (shared.script)(&call),
        };
        let reply = match action {
            Action::Reply(r) => r,
            Action::Delay(d, r) => {
                tokio::time::sleep(d).await;
                r
            }
            Action::Hold(gate, r) => {
                gate.wait().await;
                r
            }
            Action::Close => return,
            Action::Stall => std::future::pending().await,
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// `EXEC`'s array: each queued request's reply by the script (delays and holds ignored; a
/// request scripted to close or stall answers an error).
fn exec(script: &Script, queued: &[Call]) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{}\r\n", queued.len()).as_bytes());
    for call in queued {
        match script(call) {
            Action::Reply(r) | Action::Delay(_, r) | Action::Hold(_, r) => {
                out.extend_from_slice(&r)
            }
            Action::Close | Action::Stall => {
                out.extend_from_slice(&error_reply("ERR scripted failure inside EXEC"))
            }
        }
    }
    out.freeze()
}
