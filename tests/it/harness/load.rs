//! A closed-loop write load for failover tests: each client sends `SET <unique key> <key>` one at a
//! time through an endpoint, records what was acknowledged and every error, and reconnects after a
//! connection failure (as the clients in the measurements did).

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
    /// Every error, in time order per client.
    pub errors: Vec<LoadError>,
    /// The slowest acknowledged request.
    pub max_latency: Duration,
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
        let stop = CancellationToken::new();
        let acked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let clients = (0..clients)
            .map(|c| {
                let prefix = format!("{prefix}:{c}");
                tokio::spawn(run_client(
                    addr,
                    prefix,
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

    /// Stops the clients (each finishes its request in flight) and merges what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.cancel();
        let mut report = LoadReport::default();
        for c in self.clients {
            let r = c.await.expect("load client panicked");
            report.acked.extend(r.acked);
            report.errors.extend(r.errors);
            report.max_latency = report.max_latency.max(r.max_latency);
        }
        report
    }
}

async fn run_client(
    addr: SocketAddr,
    prefix: String,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
    started: Instant,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut conn: Option<(TcpStream, BytesMut, ReplyScanner)> = None;
    let mut seq = 0u64;
    while !stop.is_cancelled() && started.elapsed() < MAX_RUN {
        let (stream, buf, scanner) = match conn.as_mut() {
            Some(c) => (&mut c.0, &mut c.1, &mut c.2),
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let c = conn.insert((s, BytesMut::new(), ReplyScanner::new(8)));
                    (&mut c.0, &mut c.1, &mut c.2)
                }
                Err(e) => {
                    report.errors.push(LoadError {
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
                let r = format!("*2\r\n$4\r\nINCR\r\n${}\r\n{k}\r\n", k.len());
                (k, r)
            }
            None => {
                let k = format!("{prefix}:{seq}");
                let r = format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{k}\r\n",
                    k.len(),
                    k.len()
                );
                (k, r)
            }
        };
        let sent = Instant::now();
        let outcome = tokio::time::timeout(REPLY_TIMEOUT, async {
            stream.write_all(request.as_bytes()).await?;
            loop {
                if let Some(frame) = scanner
                    .next(buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    return Ok::<_, std::io::Error>(
                        String::from_utf8_lossy(&frame).trim_end().to_string(),
                    );
                }
                if stream.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(reply)) if reply == "+OK" || reply.starts_with(':') => {
                report.max_latency = report.max_latency.max(sent.elapsed());
                report.acked.push(key);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(reply)) => report.errors.push(LoadError {
                at: started.elapsed(),
                what: reply,
            }),
            Ok(Err(e)) => {
                report.errors.push(LoadError {
                    at: started.elapsed(),
                    what: format!("io: {e}"),
                });
                conn = None;
            }
            Err(_) => {
                report.errors.push(LoadError {
                    at: started.elapsed(),
                    what: "timeout".into(),
                });
                conn = None;
            }
        }
    }
    report
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
