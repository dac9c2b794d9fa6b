//! A real `redis-server` per test on a loopback port from the registry, in its own temp dir, killed on drop.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tempfile::TempDir;

use super::eventually::{scaled, Deadline};
use super::netns::Host;
use super::ports;

/// How long a server may take to answer `PING` after spawn (scaled by the patience multiplier).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replica may take to report `master_link_status:up`.
const LINK_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts at spawning on a fresh port when the chosen port was taken between the check and the bind.
const SPAWN_ATTEMPTS: usize = 3;

/// A child process (redis-server or redis-sentinel) started from a config file in its own temp dir.
///
/// The child sits behind a `std::sync::Mutex` so that `kill`/`restart` work through `&self` (tests reach
/// servers through `Topology::server_by_addr`, which hands out shared references); the lock is never held
/// across an `.await`.
pub(super) struct Process {
    program: &'static str,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
    conf: PathBuf,
    child: Mutex<Option<Child>>,
    dir: TempDir,
}

impl Process {
    /// Writes `conf_text` to `<tempdir>/<conf_name>` and spawns `program <conf>` with cwd in the temp dir.
    pub(super) fn spawn(program: &'static str, conf_name: &str, conf_text: &str) -> Self {
        Self::spawn_in(None, program, conf_name, conf_text)
    }

    /// [`spawn`](Self::spawn) in network namespace `netns`.
    pub(super) fn spawn_in(
        netns: Option<&str>,
        program: &'static str,
        conf_name: &str,
        conf_text: &str,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("haproxy-rs-it-")
            .tempdir()
            .expect("create a temp dir for a test server");
        let conf = dir.path().join(conf_name);
        fs::write(&conf, conf_text).expect("write the server config");
        let process = Self {
            program,
            netns: netns.map(str::to_owned),
            conf,
            child: Mutex::new(None),
            dir,
        };
        process.respawn();
        process
    }

    /// The temp dir holding the config, logs and any dump.
    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the program from its config file; the previous child must be gone.
    pub(super) fn respawn(&self) {
        let stdio = File::create(self.dir().join("stdio.log")).expect("create stdio.log");
        let child = command(self.netns.as_deref(), self.program)
            .arg(&self.conf)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().expect("clone a file handle"))
            .stderr(stdio)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} (is it installed?): {e}", self.program));
        *self.lock() = Some(child);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // A poisoned lock only means a test panicked meanwhile; the Option<Child> is still valid.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The child's pid, `None` once killed.
    pub(super) fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    /// True while the child has not exited (a stopped child counts as running).
    pub(super) fn is_running(&self) -> bool {
        match self.lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `sig` to the child; a no-op once it is gone.
    pub(super) fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            // ESRCH means it already exited; the caller's next readiness check will tell.
            let _ = signal::kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// SIGKILL and reap the child, so its port is closed when this returns. Idempotent.
    pub(super) fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log and stdio, for panic messages.
    pub(super) fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stdio.log", "server.log"] {
            if let Ok(text) = fs::read_to_string(self.dir().join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(15);
                out.push_str(&format!("--- {name}\n{}\n", lines[from..].join("\n")));
            }
        }
        out
    }
}

/// `program` wrapped in `setpriv --pdeathsig KILL` when util-linux provides it, so servers die with the test
/// binary even when it is SIGKILLed (a CI timeout) and `Drop` never runs. The signal fires when the
/// *thread* that spawned the server exits: start servers from the test's task, not from `spawn_blocking`.
/// In namespace `netns`, through `ip netns exec` (which becomes the program: the same pid).
fn command(netns: Option<&str>, program: &str) -> Command {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["ip", "netns", "exec", ns]);
    }
    args.push(program);
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have_setpriv = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut cmd = if have_setpriv {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL"]).args(&args);
        cmd
    } else {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        cmd
    };
    cmd.stdin(Stdio::null());
    cmd
}

impl Drop for Process {
    fn drop(&mut self) {
        // Runs on unwinding too, so a panicking test does not leak servers.
        self.kill();
    }
}

/// A `redis-server` listening on 127.0.0.1:`port`, persistence off, killed (SIGKILL + wait) on drop.
pub struct RedisServer {
    ip: String,
    port: u16,
    process: Process,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .finish()
    }
}

impl RedisServer {
    /// Starts a master and waits until it answers `PING`.
    ///
    /// # Panics
    /// When redis-server is missing or does not come up within the (scaled) start timeout.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a replica of `master` and waits until it answers `PING` and reports `master_link_status:up`.
    pub async fn start_replica_of(master: &RedisServer) -> Self {
        Self::start_replica_on(&Host::loopback(), master).await
    }

    /// [`start_replica_of`](Self::start_replica_of) on `host`.
    pub async fn start_replica_on(host: &Host, master: &RedisServer) -> Self {
        let replicaof = format!("replicaof {} {}\n", master.ip, master.port());
        let server = Self::start_on(host, &replicaof).await;
        server.wait_link_up().await;
        server
    }

    /// Starts a server with `extra` appended to the base config, retrying on a fresh port when the chosen
    /// one was taken before redis-server could bind it.
    pub async fn start_with(extra: &str) -> Self {
        Self::start_on(&Host::loopback(), extra).await
    }

    /// [`start_with`](Self::start_with) on `host` (a network namespace's address).
    pub async fn start_on(host: &Host, extra: &str) -> Self {
        let mut last_log = String::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let port = ports::free_port();
            let conf = format!("{}{extra}", base_config(&host.ip, port));
            let server = Self {
                ip: host.ip.clone(),
                port,
                process: Process::spawn_in(
                    host.netns.as_deref(),
                    "redis-server",
                    "redis.conf",
                    &conf,
                ),
            };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-server on port {port} did not start:\n{log}"),
            }
        }
        panic!("redis-server did not find a free port in {SPAWN_ATTEMPTS} attempts:\n{last_log}");
    }

    /// "ip:port" ("127.0.0.1:port" but in a network namespace).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "redis://127.0.0.1:port/".
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr())
    }

    /// The pid of the running process, `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's temp dir (config, `server.log`, `stdio.log`).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// A new multiplexed connection (connect timeout 2 s, response timeout 5 s, both scaled).
    ///
    /// # Panics
    /// When the server does not accept the connection.
    pub async fn client(&self) -> MultiplexedConnection {
        connect(&self.addr())
            .await
            .unwrap_or_else(|e| panic!("connect to redis-server {}: {e}", self.addr()))
    }

    /// `INFO <section>` as text.
    pub async fn info(&self, section: &str) -> String {
        let mut c = self.client().await;
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("INFO {section} on {}: {e}", self.addr()))
    }

    /// How many times `cmd` (e.g. "get", "set") ran, from `INFO commandstats`; 0 if never.
    pub async fn commandstats(&self, cmd: &str) -> u64 {
        parse_commandstats(&self.info("commandstats").await, cmd)
    }

    /// The role from `INFO replication`: "master" or "slave".
    pub async fn role(&self) -> String {
        info_field(&self.info("replication").await, "role").unwrap_or_default()
    }

    /// Whether it answers `PING` within 200 ms (not while it runs `DEBUG SLEEP` or is stopped).
    pub async fn answers_ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ping = async {
            let mut c = tokio::net::TcpStream::connect(self.addr()).await.ok()?;
            c.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            c.read_exact(&mut buf).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(200), ping).await,
            Ok(Some(_))
        )
    }

    /// SIGKILL and reap: the port is closed when this returns. Idempotent.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// SIGSTOP: the port stays open but nothing answers (a hung server).
    pub fn stop(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`stop`](Self::stop).
    pub fn cont(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    /// Kills the server if running and starts it again on the same port and config (which Sentinel may
    /// have rewritten, e.g. to follow a new master); waits for `PING` only.
    pub async fn restart(&self) {
        self.process.kill();
        self.process.respawn();
        if let Err(log) = self.wait_ready().await {
            panic!("redis-server {} did not restart:\n{log}", self.addr());
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    async fn wait_ready(&self) -> Result<(), String> {
        wait_ping(&self.process, &self.addr(), START_TIMEOUT).await
    }

    /// Waits until this replica has applied every write `master` had when this was called
    /// (`slave_repl_offset` reaches that `master_repl_offset`).
    ///
    /// # Panics
    /// When it does not within 10 s (scaled).
    pub async fn wait_caught_up(&self, master: &RedisServer) {
        let offset = |info: String, field: &str| -> u64 {
            info_field(&info, field)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let target = offset(master.info("replication").await, "master_repl_offset");
        crate::eventually!(
            Duration::from_secs(10),
            offset(self.info("replication").await, "slave_repl_offset") >= target,
            "replica {} caught up with {}",
            self.addr(),
            master.addr()
        );
    }

    /// Waits until `INFO replication` says `master_link_status:up`.
    ///
    /// # Panics
    /// When the link is not up within the (scaled) link timeout.
    pub async fn wait_link_up(&self) {
        let deadline = Deadline::after(LINK_TIMEOUT);
        loop {
            let info = self.info("replication").await;
            if info_field(&info, "master_link_status").as_deref() == Some("up") {
                return;
            }
            if deadline.expired() {
                panic!(
                    "replica {} link not up after {:?}:\n{info}\n{}",
                    self.addr(),
                    deadline.budget(),
                    self.process.log_tail()
                );
            }
            deadline.tick().await;
        }
    }
}

fn base_config(ip: &str, port: u16) -> String {
    format!(
        "port {port}\nbind {ip}\nprotected-mode no\ndaemonize no\nsave \"\"\nappendonly no\n\
         logfile server.log\ndir .\nrepl-diskless-sync-delay 0\n"
    )
}

/// Opens a multiplexed connection to `addr` with bounded connect and response timeouts.
pub async fn connect(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(scaled(Duration::from_secs(2))))
        .set_response_timeout(Some(scaled(Duration::from_secs(5))));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Polls `PING` on `addr` until `+PONG`, the process exits (Err with its log) or the deadline passes.
pub(super) async fn wait_ping(
    process: &Process,
    addr: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Deadline::after(timeout);
    loop {
        if !process.is_running() {
            return Err(format!("process exited\n{}", process.log_tail()));
        }
        if let Ok(Ok(pong)) = tokio::time::timeout(Duration::from_secs(1), ping(addr)).await {
            if pong == "PONG" {
                return Ok(());
            }
        }
        if deadline.expired() {
            return Err(format!(
                "no PONG after {:?}\n{}",
                deadline.budget(),
                process.log_tail()
            ));
        }
        deadline.tick().await;
    }
}

async fn ping(addr: &str) -> redis::RedisResult<String> {
    let mut c = connect(addr).await?;
    redis::cmd("PING").query_async(&mut c).await
}

/// The value of `field:` in INFO text.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim().to_owned())
    })
}

/// `calls=` of `cmdstat_<cmd>` in `INFO commandstats` text; 0 if absent.
pub fn parse_commandstats(info: &str, cmd: &str) -> u64 {
    let key = format!("cmdstat_{}", cmd.to_ascii_lowercase());
    info_field(info, &key)
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Reads `n` complete replies from `s` (bounded in time), as raw frames.
pub async fn read_replies(s: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut scanner = haproxy_rs::resp::ReplyScanner::new(8);
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    let read_all = async {
        while frames.len() < n {
            while let Some(f) = scanner.next(&mut buf).unwrap() {
                frames.push(String::from_utf8_lossy(&f).trim_end().to_string());
            }
            if frames.len() < n && s.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("replies within 10 s");
    frames
}
