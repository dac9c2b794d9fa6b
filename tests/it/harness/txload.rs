//! A closed-loop transaction load for failover and resharding tests: each client sends
//! `MULTI; INCR {tag}n; RPUSH {tag}log <entry>; EXEC` in one write, one transaction at a time,
//! and records what `EXEC` answered; [`TxReport::check`] then holds the server's counter and log
//! to those answers (atomicity: never a counter bump without its log entry).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use haproxy_rs::resp::ReplyScanner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RedisServer;

/// Longest one transaction may take before the client calls its outcome unknown (above the
/// proxy's 10 s hold, so a held transaction is answered, not timed out).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// A load never runs longer than this, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(60);
/// How long a client waits before the next transaction after a failed one.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A transaction whose `EXEC` answered `[counter, log length]`.
#[derive(Debug, Clone)]
pub struct TxAck {
    /// The entry it pushed onto the log.
    pub entry: String,
    /// `INCR`'s reply inside `EXEC`.
    pub counter: i64,
    /// `RPUSH`'s reply inside `EXEC`.
    pub len: i64,
    /// When it was acknowledged, since the load started.
    pub at: Duration,
}

/// A transaction that did not get the array of results.
#[derive(Debug, Clone)]
pub struct TxFailure {
    /// The entry it would have pushed.
    pub entry: String,
    /// The four replies (or the I/O error).
    pub what: String,
    /// The proxy or Redis said it did not run (`EXECABORT`, `... not executed`, a nil `EXEC`);
    /// otherwise its outcome is unknown and its entry may or may not be in the log.
    pub not_run: bool,
    /// When it failed, since the load started.
    pub at: Duration,
}

/// What the clients of a [`TxLoad`] saw.
#[derive(Debug, Default)]
pub struct TxReport {
    /// Acknowledged transactions.
    pub acked: Vec<TxAck>,
    /// The others.
    pub failed: Vec<TxFailure>,
}

/// A running transaction load.
pub struct TxLoad {
    stop: CancellationToken,
    clients: Vec<JoinHandle<TxReport>>,
    acked: Arc<AtomicU64>,
    failures: Failures,
    /// When the load started.
    pub started: Instant,
}

/// The number of failed transactions so far and the last few, for a test's panic message.
#[derive(Debug, Clone, Default)]
struct Failures(Arc<Mutex<(u64, Vec<String>)>>);

impl Failures {
    fn record(&self, f: &TxFailure) {
        // A poisoned lock only means another client panicked; the counts are still usable.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        if g.1.len() == 5 {
            g.1.remove(0);
        }
        g.1.push(format!("{}: {}", f.entry, f.what));
    }

    fn summary(&self) -> String {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        format!("{} failed so far, the last: {:?}", g.0, g.1)
    }
}

impl TxLoad {
    /// Starts `clients` clients against `addr` on the keys `{tag}n` and `{tag}log`; each stops
    /// after `max_per_client` transactions (or [`MAX_RUN`], or [`stop`](Self::stop)).
    pub fn start(addr: SocketAddr, clients: usize, tag: &str, max_per_client: u64) -> TxLoad {
        let stop = CancellationToken::new();
        let acked = Arc::new(AtomicU64::new(0));
        let failures = Failures::default();
        let started = Instant::now();
        let clients = (0..clients)
            .map(|c| {
                let client = Client {
                    addr,
                    id: c,
                    tag: tag.to_string(),
                    max: max_per_client,
                    stop: stop.clone(),
                    acked: acked.clone(),
                    failures: failures.clone(),
                    started,
                };
                tokio::spawn(client.run())
            })
            .collect();
        TxLoad {
            stop,
            clients,
            acked,
            failures,
            started,
        }
    }

    /// Transactions acknowledged so far, over all clients.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more transactions than now have been acknowledged.
    ///
    /// # Panics
    /// When that takes more than 20 s (scaled).
    pub async fn wait_more_acks(&self, n: u64) {
        let target = self.acked() + n;
        crate::eventually!(
            Duration::from_secs(20),
            self.acked() >= target,
            "the load gets {n} more transactions acknowledged ({} in all; {})",
            self.acked(),
            self.failures.summary()
        );
    }

    /// Stops the clients (each finishes its transaction in flight) and merges what they saw.
    pub async fn stop(self) -> TxReport {
        self.stop.cancel();
        let mut report = TxReport::default();
        for c in self.clients {
            let r = c.await.expect("transaction client panicked");
            report.acked.extend(r.acked);
            report.failed.extend(r.failed);
        }
        report
    }
}

impl TxReport {
    /// One line per failure kind with its count, for the test's output.
    pub fn failure_summary(&self) -> String {
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for f in &self.failed {
            *kinds.entry(f.what.clone()).or_default() += 1;
        }
        let mut lines: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        lines.sort();
        lines.join("\n")
    }

    /// Every acknowledged transaction's entry is in `server`'s log at the place its `INCR`
    /// answered, the counter equals the log's length, no entry is there twice, and every entry
    /// is one whose transaction was acknowledged or has an unknown outcome (nothing said not to
    /// have run, nothing from nowhere). Returns the number of log entries.
    ///
    /// # Panics
    /// When any of that does not hold.
    pub async fn check(&self, server: &RedisServer, tag: &str) -> usize {
        let mut c = server.client().await;
        let counter: Option<i64> = redis::cmd("GET")
            .arg(format!("{{{tag}}}n"))
            .query_async(&mut c)
            .await
            .expect("GET the counter");
        let log: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{{{tag}}}log"))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .expect("LRANGE the log");
        assert_eq!(
            counter.unwrap_or(0),
            log.len() as i64,
            "the counter on {} equals the log's length",
            server.addr()
        );
        let distinct: HashSet<&String> = log.iter().collect();
        assert_eq!(distinct.len(), log.len(), "no log entry is there twice");
        for a in &self.acked {
            assert_eq!(
                a.counter, a.len,
                "EXEC answered a counter and a log length that differ: {a:?}"
            );
            let at = usize::try_from(a.counter - 1).expect("a positive counter");
            assert_eq!(
                log.get(at),
                Some(&a.entry),
                "acknowledged transaction {a:?} is in the log at its place ({} entries)",
                log.len()
            );
        }
        let acked: HashSet<&String> = self.acked.iter().map(|a| &a.entry).collect();
        let unknown: HashSet<&String> = self
            .failed
            .iter()
            .filter(|f| !f.not_run)
            .map(|f| &f.entry)
            .collect();
        let stray: Vec<&String> = log
            .iter()
            .filter(|e| !acked.contains(e) && !unknown.contains(e))
            .collect();
        assert!(
            stray.is_empty(),
            "log entries of transactions that were not acknowledged and not of unknown outcome \
             (said not to have run, or never sent): {stray:?}; failures:\n{}",
            self.failure_summary()
        );
        log.len()
    }
}

/// One client of the load.
struct Client {
    addr: SocketAddr,
    id: usize,
    tag: String,
    max: u64,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
    failures: Failures,
    started: Instant,
}

impl Client {
    async fn run(self) -> TxReport {
        let mut report = TxReport::default();
        let mut conn: Option<Conn> = None;
        let mut seq = 0;
        while !self.stop.is_cancelled() && self.started.elapsed() < MAX_RUN && seq < self.max {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match TcpStream::connect(self.addr).await {
                    Ok(s) => conn.insert(Conn::new(s)),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            seq += 1;
            let entry = format!("c{}:{seq}", self.id);
            let (n, log) = (format!("{{{}}}n", self.tag), format!("{{{}}}log", self.tag));
            let request = [
                command(&["MULTI"]),
                command(&["INCR", &n]),
                command(&["RPUSH", &log, &entry]),
                command(&["EXEC"]),
            ]
            .concat();
            match c.call(&request, 4).await {
                Ok(replies) => match acknowledged(&replies) {
                    Some((counter, len)) => {
                        report.acked.push(TxAck {
                            entry,
                            counter,
                            len,
                            at: self.started.elapsed(),
                        });
                        self.acked.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => {
                        let exec = replies.last().map(String::as_str).unwrap_or_default();
                        let not_run = exec.starts_with("-EXECABORT")
                            || exec == "*-1"
                            || exec.contains("not executed");
                        self.fail(&mut report, entry, replies.join(" | "), not_run);
                    }
                },
                Err(what) => {
                    self.fail(&mut report, entry, what, false);
                    conn = None;
                }
            }
            // As a client would, it tries again after a pause rather than in a busy loop.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        report
    }

    fn fail(&self, report: &mut TxReport, entry: String, what: String, not_run: bool) {
        let f = TxFailure {
            entry,
            what,
            not_run,
            at: self.started.elapsed(),
        };
        self.failures.record(&f);
        report.failed.push(f);
    }
}

/// `(counter, log length)` when the replies are `+OK +QUEUED +QUEUED *2 :counter :len`.
fn acknowledged(replies: &[String]) -> Option<(i64, i64)> {
    let [ok, q1, q2, exec] = replies else {
        return None;
    };
    if (ok.as_str(), q1.as_str(), q2.as_str()) != ("+OK", "+QUEUED", "+QUEUED") {
        return None;
    }
    let rest = exec.strip_prefix("*2\r\n:")?;
    let (counter, len) = rest.split_once("\r\n:")?;
    Some((counter.parse().ok()?, len.parse().ok()?))
}

/// One client connection.
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

    /// Sends `request` and reads `n` replies (each with its trailing CRLF trimmed); `Err`
    /// describes an I/O failure or a timeout, after which the connection is not usable.
    async fn call(&mut self, request: &[u8], n: usize) -> Result<Vec<String>, String> {
        let exchange = async {
            self.stream.write_all(request).await?;
            let mut replies = Vec::with_capacity(n);
            while replies.len() < n {
                if let Some(frame) = self
                    .scanner
                    .next(&mut self.buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    replies.push(String::from_utf8_lossy(&frame).trim_end().to_string());
                    continue;
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok::<_, std::io::Error>(replies)
        };
        match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(e)) => Err(format!("outcome unknown: io: {e}")),
            Err(_) => Err("outcome unknown: timeout".into()),
        }
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    haproxy_rs::resp::encode_command(args).to_vec()
}
