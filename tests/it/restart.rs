//! Restart and upgrade without dropping anyone (issue 15 part 3), with the real binary: a graceful
//! stop on `SIGTERM` (`/healthz` fails at once, what is in flight is answered, idle clients go at
//! once, the rest within `shutdown_grace_ms`), and a new binary taking the listening sockets over
//! from the running one (`[upgrade] socket`, `run --takeover`) with no client refused.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::eventually::scaled;
use crate::harness::ports::free_port;
use crate::harness::redis::read_replies;
use crate::harness::RedisServer;
use crate::security::{query, send};
use crate::stats_http::get;

/// `haproxy-rs run` as a child process, static mode in front of one server; killed on drop.
pub(crate) struct Binary {
    child: Child,
    /// The client endpoint.
    pub(crate) addr: SocketAddr,
    /// The stats page.
    pub(crate) stats: SocketAddr,
    /// The config's lines before the `extra` ones.
    base: String,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary with `extra` config lines on the given ports, and `args` after `run`.
    pub(crate) fn spawn(server: &str, ports: (u16, u16), extra: &str, args: &[&str]) -> Binary {
        Binary::spawn_with(&format!("servers = [\"{server}\"]\n"), ports, extra, args)
    }

    /// [`Binary::spawn`] with `backend` (top-level lines naming the servers) instead of one
    /// static server.
    pub(crate) fn spawn_with(
        backend: &str,
        ports: (u16, u16),
        extra: &str,
        args: &[&str],
    ) -> Binary {
        Binary::spawn_logging(backend, ports, extra, Some("haproxy_rs=debug"), args)
    }

    /// [`Binary::spawn_with`] with `--log log`, or with neither the flag nor `HAPROXY_RS_LOG`
    /// (the config's `log` counts then).
    pub(crate) fn spawn_logging(
        backend: &str,
        ports: (u16, u16),
        extra: &str,
        log: Option<&str>,
        args: &[&str],
    ) -> Binary {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, stats) = (
            SocketAddr::from(([127, 0, 0, 1], ports.0)),
            SocketAddr::from(([127, 0, 0, 1], ports.1)),
        );
        let config = dir.path().join("proxy.toml");
        let base = format!("listen = \"{addr}\"\nstats = \"{stats}\"\nthreads = 1\n{backend}");
        std::fs::write(&config, format!("{base}{extra}")).expect("config file");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_haproxy-rs"));
        match log {
            Some(filter) => command.args(["--log", filter]),
            None => command.env_remove("HAPROXY_RS_LOG"),
        };
        let child = command
            .args(["run", "-c"])
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run the haproxy-rs binary");
        Binary {
            child,
            addr,
            stats,
            base,
            _dir: dir,
        }
    }

    /// Writes the config file again, with `extra` instead of the lines it started with.
    pub(crate) fn rewrite_config(&self, extra: &str) {
        let path = self._dir.path().join("proxy.toml");
        std::fs::write(path, format!("{}{extra}", self.base)).expect("config file");
    }

    /// Sends `SIGHUP` (a reload).
    pub(crate) fn sighup(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the binary");
    }

    /// The binary's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits until `/healthz` says the proxy knows its master.
    pub(crate) async fn wait_healthy(&self) {
        eventually!(
            Duration::from_secs(10),
            healthz(self.stats).await.map(|(s, _)| s) == Some(200),
            "the proxy becomes healthy; log: {}",
            self.log()
        );
    }

    pub(crate) fn sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// The exit status once the process has exited, if it has.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/healthz`'s status and body, `None` when nothing answers.
pub(crate) async fn healthz(stats: SocketAddr) -> Option<(u16, String)> {
    TcpStream::connect(stats).await.ok()?;
    Some(get(stats, "/healthz").await)
}

/// Whether the peer closed `s` within `within` (EOF, or a reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn connect_and_ping(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(send(&mut s, &[&["PING"]]).await, ["+PONG"]);
    s
}

fn ports() -> (u16, u16) {
    (free_port(), free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_healthz_at_once_answers_what_is_in_flight_and_lets_idle_clients_go() {
    let master = RedisServer::start().await;
    let mut admin = master.client().await;
    // The default grace, 5 s.
    let mut proxy = Binary::spawn(&master.addr(), ports(), "", &[]);
    proxy.wait_healthy().await;
    let mut idle = connect_and_ping(proxy.addr).await;
    let mut in_multi = connect_and_ping(proxy.addr).await;
    assert_eq!(
        send(&mut in_multi, &[&["MULTI"], &["SET", "tx-key", "v"]]).await,
        ["+OK", "+QUEUED"]
    );
    let mut blocked = connect_and_ping(proxy.addr).await;
    blocked
        .write_all(&haproxy_rs::resp::encode_command(&[
            "BLPOP".to_string(),
            "restart-list".to_string(),
            "10".to_string(),
        ]))
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(5),
        master.info("clients").await.contains("blocked_clients:1"),
        "the BLPOP waits on the server"
    );

    proxy.sigterm();
    let stopped = Instant::now();
    eventually!(
        Duration::from_millis(500),
        healthz(proxy.stats).await == Some((503, "shutting down\n".to_string())),
        "/healthz fails at once, saying why: {:?}",
        healthz(proxy.stats).await
    );
    assert!(
        closed_within(&mut idle, scaled(Duration::from_secs(1))).await,
        "an idle client is closed at once"
    );
    eventually!(
        Duration::from_secs(1),
        TcpStream::connect(proxy.addr).await.is_err(),
        "the listener stops accepting"
    );
    // The transaction ends as it would have: EXEC is answered, then the client is let go.
    assert_eq!(send(&mut in_multi, &[&["EXEC"]]).await, ["*1\r\n+OK"]);
    assert!(closed_within(&mut in_multi, scaled(Duration::from_secs(1))).await);
    // The request in flight is answered (the server's answer, not a close), then the client goes.
    let _: () = query(&mut admin, &["LPUSH", "restart-list", "x"])
        .await
        .unwrap();
    assert_eq!(
        read_replies(&mut blocked, 1).await,
        ["*2\r\n$12\r\nrestart-list\r\n$1\r\nx"]
    );
    assert!(closed_within(&mut blocked, scaled(Duration::from_secs(1))).await);
    eventually!(
        Duration::from_secs(3),
        proxy.exited().is_some(),
        "the proxy exits once every client is gone; log: {}",
        proxy.log()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "before the grace ends"
    );
    assert!(proxy.exited().is_some_and(|s| s.success()));
    let v: Option<String> = query(&mut admin, &["GET", "tx-key"]).await.unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_left_when_shutdown_grace_ms_ends_is_closed_and_the_proxy_exits() {
    let master = RedisServer::start().await;
    let mut admin = master.client().await;
    let grace = Duration::from_millis(1500);
    let mut proxy = Binary::spawn(&master.addr(), ports(), "shutdown_grace_ms = 1500\n", &[]);
    proxy.wait_healthy().await;
    let mut in_multi = connect_and_ping(proxy.addr).await;
    assert_eq!(
        send(&mut in_multi, &[&["MULTI"], &["SET", "never", "v"]]).await,
        ["+OK", "+QUEUED"]
    );
    let mut subscriber = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(
        send(&mut subscriber, &[&["SUBSCRIBE", "news"]]).await,
        ["*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1"]
    );

    proxy.sigterm();
    let stopped = Instant::now();
    eventually!(
        Duration::from_millis(500),
        healthz(proxy.stats).await.map(|(s, _)| s) == Some(503)
    );
    // A subscriber keeps getting its messages during the grace.
    let n: i64 = query(&mut admin, &["PUBLISH", "news", "still here"])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        read_replies(&mut subscriber, 1).await,
        ["*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$10\r\nstill here"]
    );
    let limit = grace + scaled(Duration::from_secs(2));
    assert!(
        closed_within(&mut in_multi, limit).await,
        "closed at the end of the grace"
    );
    assert!(
        closed_within(&mut subscriber, limit).await,
        "closed at the end of the grace"
    );
    assert!(
        stopped.elapsed() >= grace - Duration::from_millis(100),
        "closed before the grace ended: {:?}",
        stopped.elapsed()
    );
    eventually!(
        Duration::from_secs(4),
        proxy.exited().is_some(),
        "the proxy exits after the grace; log: {}",
        proxy.log()
    );
    assert!(stopped.elapsed() < grace + scaled(Duration::from_secs(4)));
    // The transaction never ran.
    let v: Option<String> = query(&mut admin, &["GET", "never"]).await.unwrap();
    assert_eq!(v, None);
}

/// What a closed-loop writer saw: keys acknowledged, and every failure (refused connection,
/// error reply, closed connection) with what it was.
#[derive(Debug, Default)]
struct Written {
    acked: Vec<String>,
    failures: Vec<String>,
}

/// Connects, `SET`s a unique key and reads the reply, without pause, until `stop` (at most
/// `max` writes and `within`): each write on a new connection, so that every one of them goes
/// through the listening socket.
async fn write_loop(
    addr: SocketAddr,
    prefix: String,
    stop: Arc<AtomicBool>,
    max: usize,
    within: Duration,
) -> Written {
    let mut out = Written::default();
    let started = Instant::now();
    for i in 0..max {
        if stop.load(Ordering::Relaxed) || started.elapsed() > within {
            break;
        }
        let key = format!("{prefix}:{i}");
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                out.failures.push(format!("{key}: connect: {e}"));
                continue;
            }
        };
        let cmd =
            haproxy_rs::resp::encode_command(&["SET".to_string(), key.clone(), "v".to_string()]);
        if let Err(e) = s.write_all(&cmd).await {
            out.failures.push(format!("{key}: write: {e}"));
            continue;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if buf.get(..n) == Some(&b"+OK\r\n"[..]) => out.acked.push(key),
            other => out.failures.push(format!("{key}: {other:?}")),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_takes_the_listeners_over_and_no_client_is_refused() {
    let master = RedisServer::start().await;
    let ports = ports();
    let sockets = tempfile::tempdir().expect("temp dir");
    let path = sockets.path().join("upgrade.sock");
    let extra = format!(
        "shutdown_grace_ms = 3000\n[upgrade]\nsocket = \"{}\"\n",
        path.display()
    );
    let mut old = Binary::spawn(&master.addr(), ports, &extra, &[]);
    old.wait_healthy().await;
    eventually!(
        Duration::from_secs(5),
        path.exists(),
        "the upgrade socket is made"
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Three writers, each at most 20000 writes and 60 s.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(write_loop(
                old.addr,
                format!("upgrade{w}"),
                stop.clone(),
                20_000,
                Duration::from_secs(60),
            ))
        })
        .collect();
    eventually!(
        Duration::from_secs(5),
        master.commandstats("set").await >= 200,
        "the writer writes through the old proxy"
    );

    let path_arg = path.to_str().expect("utf-8 path");
    let mut new = Binary::spawn(&master.addr(), ports, &extra, &["--takeover", path_arg]);
    eventually!(
        Duration::from_secs(15),
        old.exited().is_some(),
        "the old proxy drains and exits; old log: {}\nnew log: {}",
        old.log(),
        new.log()
    );
    assert!(old.exited().is_some_and(|s| s.success()), "{}", old.log());
    assert!(
        old.log().contains("taken over by a new process"),
        "{}",
        old.log()
    );
    let after_old = master.commandstats("set").await;
    eventually!(
        Duration::from_secs(5),
        master.commandstats("set").await >= after_old + 1000,
        "the writer goes on through the new proxy"
    );
    stop.store(true, Ordering::Relaxed);
    let mut written = Written::default();
    for w in writers {
        let w = w.await.expect("a writer ends");
        written.acked.extend(w.acked);
        written.failures.extend(w.failures);
    }
    assert!(
        written.failures.is_empty(),
        "{} failures of {} writes, first: {:?}; new log: {}",
        written.failures.len(),
        written.acked.len() + written.failures.len(),
        written.failures.first(),
        new.log()
    );
    // Every acknowledged write is on the master.
    let mut admin = master.client().await;
    for chunk in written.acked.chunks(500) {
        let mut args = vec!["EXISTS"];
        args.extend(chunk.iter().map(String::as_str));
        let n: usize = query(&mut admin, &args).await.unwrap();
        assert_eq!(n, chunk.len(), "acknowledged writes missing on the master");
    }
    // The new proxy serves the stats page, and took the upgrade socket for the next upgrade.
    assert_eq!(healthz(new.stats).await.map(|(s, _)| s), Some(200));
    assert!(new.exited().is_none());
    assert!(path.exists());
    assert!(
        new.log().contains("taken over from the running proxy"),
        "{}",
        new.log()
    );
}
