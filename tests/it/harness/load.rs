//! A closed-loop write load for failover tests: each client sends `SET <unique key> <key>` one at a
//! time through an endpoint (optionally reading each acknowledged key back), records what was
//! acknowledged and every error, and reconnects after a connection failure (as the clients in the
//! issue's measurements did).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use haproxy_rs::resp::ReplyScanner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest a single request may take before the client calls it an error (well above the hold).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A load never runs longer than this, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(120);

/// One client-visible failure.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// Which client of the load (0-based).
    pub client: usize,
    /// When, since the load started.
    pub at: Duration,
    /// The error reply or I/O error.
    pub what: String,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keys whose `SET` was acknowledged with `+OK`.
    pub acked: Vec<String>,
    /// When each key of `acked` was acknowledged (same index), since the load started.
    pub acked_at: Vec<Duration>,
    /// Every error, in time order per client.
    pub errors: Vec<LoadError>,
    /// The slowest acknowledged request.
    pub max_latency: Duration,
}

/// What each client of a [`WriteLoad`] does besides writing.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// After each acknowledged `SET`, `GET` the key on the same connection: a reply other than
    /// the value just written is an error (`read-back ...`).
    pub read_back: bool,
    /// Each client stops after this many acknowledged writes (besides [`MAX_RUN`]).
    pub max_writes: Option<u64>,
}

/// A running write load.
pub struct WriteLoad {
    stop: CancellationToken,
    clients: Vec<JoinHandle<LoadReport>>,
    acked: Arc<AtomicU64>,
    /// When the load started.
    pub started: Instant,
}

impl LoadReport {
    /// The errors, summarized for an assertion message: how many, the first and the last few.
    pub fn error_summary(&self) -> String {
        let n = self.errors.len();
        let first: Vec<_> = self.errors.iter().take(3).collect();
        let last: Vec<_> = self
            .errors
            .iter()
            .skip(n.saturating_sub(2).max(3))
            .collect();
        format!("{n} errors; first {first:?}; last {last:?}")
    }
}

impl WriteLoad {
    /// Starts `clients` writers against `addr`: `SET` of unique keys prefixed `prefix:`, or, with a
    /// prefix `counter:<key>`, `INCR <key>` (each acknowledged INCR is recorded as `<key>`).
    pub fn start(addr: SocketAddr, clients: usize, prefix: &str) -> WriteLoad {
        Self::start_with(addr, clients, prefix, LoadOptions::default())
    }

    /// [`start`](Self::start) with options.
    pub fn start_with(
        addr: SocketAddr,
        clients: usize,
        prefix: &str,
        options: LoadOptions,
    ) -> WriteLoad {
        let stop = CancellationToken::new();
        let acked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let clients = (0..clients)
            .map(|c| {
                let prefix = format!("{prefix}:{c}");
                tokio::spawn(run_client(
                    addr,
                    c,
                    prefix,
                    options,
                    stop.clone(),
                    acked.clone(),
                    started,
                ))
            })
            .collect();
        WriteLoad {
            stop,
            clients,
            acked,
            started,
        }
    }

    /// Writes acknowledged so far, over all clients.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes than now have been acknowledged.
    ///
    /// # Panics
    /// When that takes more than 30 s (scaled).
    pub async fn wait_more_acks(&self, n: u64) {
        let target = self.acked() + n;
        crate::eventually!(
            Duration::from_secs(30),
            self.acked() >= target,
            "the load gets {n} more writes acknowledged"
        );
    }

    /// Stops the clients (each finishes its request in flight) and merges what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.cancel();
        let mut report = LoadReport::default();
        for c in self.clients {
            let r = c.await.expect("load client panicked");
            report.acked.extend(r.acked);
            report.acked_at.extend(r.acked_at);
            report.errors.extend(r.errors);
            report.max_latency = report.max_latency.max(r.max_latency);
        }
        report
    }
}

async fn run_client(
    addr: SocketAddr,
    client: usize,
    prefix: String,
    options: LoadOptions,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
    started: Instant,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    let more = |r: &LoadReport| {
        options
            .max_writes
            .is_none_or(|m| (r.acked.len() as u64) < m)
    };
    while !stop.is_cancelled() && started.elapsed() < MAX_RUN && more(&report) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match TcpStream::connect(addr).await {
                Ok(s) => conn.insert(Conn::new(s)),
                Err(e) => {
                    report.errors.push(LoadError {
                        client,
                        at: started.elapsed(),
                        what: format!("connect: {e}"),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        seq += 1;
        // `counter:<key>` prefixes make every client INCR that one key instead.
        let (key, request) = match prefix.strip_prefix("counter:") {
            Some(counter) => {
                let k = counter.split(':').next().unwrap_or(counter).to_string();
                (k.clone(), command(&["INCR", &k]))
            }
            None => {
                let k = format!("{prefix}:{seq}");
                (k.clone(), command(&["SET", &k, &k]))
            }
        };
        let sent = Instant::now();
        let error = match c.call(&request).await {
            Ok(reply) if reply == "+OK" || reply.starts_with(':') => {
                report.max_latency = report.max_latency.max(sent.elapsed());
                report.acked.push(key.clone());
                report.acked_at.push(started.elapsed());
                acked.fetch_add(1, Ordering::Relaxed);
                if options.read_back && reply == "+OK" {
                    let want = format!("${}\r\n{key}", key.len());
                    match c.call(&command(&["GET", &key])).await {
                        Ok(got) if got == want => None,
                        Ok(got) => Some(Ok(format!("read-back of {key}: {got}"))),
                        Err(e) => Some(Err(e)),
                    }
                } else {
                    None
                }
            }
            Ok(reply) => Some(Ok(reply)),
            Err(e) => Some(Err(e)),
        };
        match error {
            None => {}
            Some(Ok(what)) => report.errors.push(LoadError {
                client,
                at: started.elapsed(),
                what,
            }),
            Some(Err(what)) => {
                report.errors.push(LoadError {
                    client,
                    at: started.elapsed(),
                    what,
                });
                conn = None;
            }
        }
    }
    report
}

/// One client connection of the load.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    scanner: ReplyScanner,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            scanner: ReplyScanner::new(8),
        }
    }

    /// Sends `request` and reads one reply (trailing CRLF trimmed); `Err` describes an I/O
    /// failure or a timeout, after which the connection is not usable.
    async fn call(&mut self, request: &[u8]) -> Result<String, String> {
        let exchange = async {
            self.stream.write_all(request).await?;
            loop {
                if let Some(frame) = self
                    .scanner
                    .next(&mut self.buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    return Ok::<_, std::io::Error>(
                        String::from_utf8_lossy(&frame).trim_end().to_string(),
                    );
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(format!("io: {e}")),
            Err(_) => Err("timeout".into()),
        }
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    haproxy_rs::resp::encode_command(args).to_vec()
}

/// The keys of `keys` that `server` does not have (checked with `EXISTS` in pipelines).
pub async fn missing_keys(server: &super::RedisServer, keys: &[String]) -> Vec<String> {
    let mut c = server.client().await;
    let mut missing = Vec::new();
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.exists(k);
        }
        let found: Vec<bool> = pipe.query_async(&mut c).await.expect("EXISTS pipeline");
        missing.extend(
            chunk
                .iter()
                .zip(found)
                .filter(|(_, f)| !f)
                .map(|(k, _)| k.clone()),
        );
    }
    missing
}
