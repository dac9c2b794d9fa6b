//! A real `redis-sentinel` per test, and `Topology`: a master, its replicas and the sentinels watching them.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;

use super::eventually::Deadline;
use super::netns::Host;
use super::ports;
use super::redis::{connect, wait_ping, Process, RedisServer};

/// The master name every harness sentinel monitors (the lab's and compose's too).
pub const MASTER_NAME: &str = "mymaster";

/// How long a sentinel may take to answer `PING` and name its master.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the sentinels may take to discover the replicas and each other (hello period is 2 s).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a `SENTINEL FAILOVER` may take until the promoted replica answers `ROLE` as master.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at spawning on a fresh port when the chosen port was taken before the bind.
const SPAWN_ATTEMPTS: usize = 3;

/// Sentinel settings; the defaults are the lab's (quorum 2, down-after 5 s, failover-timeout 10 s).
#[derive(Debug, Clone)]
pub struct SentinelOptions {
    /// Name of the monitored master.
    pub master_name: String,
    /// Sentinels that must agree the master is down.
    pub quorum: u32,
    /// `down-after-milliseconds`.
    pub down_after: Duration,
    /// `failover-timeout`.
    pub failover_timeout: Duration,
}

impl Default for SentinelOptions {
    fn default() -> Self {
        Self {
            master_name: MASTER_NAME.to_owned(),
            quorum: 2,
            down_after: Duration::from_millis(5000),
            failover_timeout: Duration::from_millis(10_000),
        }
    }
}

/// A `redis-sentinel` on 127.0.0.1:`port` monitoring one master; killed (SIGKILL + wait) on drop.
pub struct Sentinel {
    ip: String,
    port: u16,
    master_name: String,
    process: Process,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Sentinel {
    /// Starts a sentinel monitoring `master` as `master_name` with `quorum`, lab timings otherwise; ready
    /// when it answers `PING` and `SENTINEL get-master-addr-by-name` returns `master`.
    pub async fn start(master: &RedisServer, master_name: &str, quorum: u32) -> Self {
        let opts = SentinelOptions {
            master_name: master_name.to_owned(),
            quorum,
            ..SentinelOptions::default()
        };
        Self::start_with(master, &opts).await
    }

    /// Starts a sentinel with explicit options.
    ///
    /// # Panics
    /// When redis-sentinel is missing or not ready within the (scaled) start timeout.
    pub async fn start_with(master: &RedisServer, opts: &SentinelOptions) -> Self {
        Self::start_on(&Host::loopback(), master, opts).await
    }

    /// [`start_with`](Self::start_with) on `host` (a network namespace's address).
    pub async fn start_on(host: &Host, master: &RedisServer, opts: &SentinelOptions) -> Self {
        let mut last_log = String::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let port = ports::free_port();
            let sentinel = Self {
                ip: host.ip.clone(),
                port,
                master_name: opts.master_name.clone(),
                process: Process::spawn_in(
                    host.netns.as_deref(),
                    "redis-sentinel",
                    "sentinel.conf",
                    &config(&host.ip, port, &master.addr(), opts),
                ),
            };
            match wait_ping(&sentinel.process, &sentinel.addr(), START_TIMEOUT).await {
                Ok(()) => {
                    sentinel.wait_master_addr(&master.addr()).await;
                    return sentinel;
                }
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-sentinel on port {port} did not start:\n{log}"),
            }
        }
        panic!("redis-sentinel did not find a free port in {SPAWN_ATTEMPTS} attempts:\n{last_log}");
    }

    /// "ip:port" ("127.0.0.1:port" but in a network namespace).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The pid of the running process, `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A new multiplexed connection to the sentinel.
    pub async fn client(&self) -> MultiplexedConnection {
        connect(&self.addr())
            .await
            .unwrap_or_else(|e| panic!("connect to sentinel {}: {e}", self.addr()))
    }

    /// `SENTINEL get-master-addr-by-name` as "ip:port", `None` if the sentinel does not answer.
    pub async fn master_addr(&self) -> Option<String> {
        let mut c = connect(&self.addr()).await.ok()?;
        let reply: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await
            .ok()?;
        reply.map(|(ip, port)| format!("{ip}:{port}"))
    }

    /// `SENTINEL replicas <name>`: one field map per replica.
    pub async fn replicas(&self) -> redis::RedisResult<Vec<HashMap<String, String>>> {
        let mut c = connect(&self.addr()).await?;
        redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await
    }

    /// One field of `SENTINEL master <name>`, e.g. "num-other-sentinels" or "flags".
    pub async fn master_field(&self, field: &str) -> Option<String> {
        let mut c = connect(&self.addr()).await.ok()?;
        let mut fields: HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("master")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await
            .ok()?;
        fields.remove(field)
    }

    /// Kills it and starts it again from its own config file, which names the master it knew
    /// when it died: until other sentinels' hellos reach it, it reports that stale master.
    pub async fn restart(&self) {
        self.process.kill();
        self.process.respawn();
        if let Err(log) = wait_ping(&self.process, &self.addr(), START_TIMEOUT).await {
            panic!("redis-sentinel {} did not restart:\n{log}", self.addr());
        }
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// SIGSTOP: the sentinel hangs with its port open.
    pub fn stop(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`stop`](Self::stop).
    pub fn cont(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    async fn wait_master_addr(&self, want: &str) {
        let deadline = Deadline::after(START_TIMEOUT);
        loop {
            let got = self.master_addr().await;
            if got.as_deref() == Some(want) {
                return;
            }
            if deadline.expired() {
                panic!(
                    "sentinel {} reports master {got:?}, want {want}\n{}",
                    self.addr(),
                    self.process.log_tail()
                );
            }
            deadline.tick().await;
        }
    }

    /// True when this sentinel sees `replicas` healthy replicas and `others` other sentinels.
    pub async fn sees(&self, replicas: usize, others: usize) -> bool {
        let healthy = match self.replicas().await {
            Ok(list) => list
                .iter()
                .filter(|fields| {
                    let get = |k: &str| fields.get(k).map(String::as_str);
                    let flags = get("flags").unwrap_or("");
                    !flags.contains("disconnected")
                        && !flags.contains("s_down")
                        && get("master-link-status") == Some("ok")
                })
                .count(),
            Err(_) => return false,
        };
        let other_sentinels = self
            .master_field("num-other-sentinels")
            .await
            .and_then(|n| n.parse::<usize>().ok());
        healthy == replicas && other_sentinels == Some(others)
    }
}

fn config(ip: &str, port: u16, master: &str, opts: &SentinelOptions) -> String {
    let name = &opts.master_name;
    let (master_ip, master_port) = master.rsplit_once(':').unwrap_or((master, "6379"));
    format!(
        "port {port}\nbind {ip}\nprotected-mode no\ndaemonize no\nlogfile server.log\ndir .\n\
         sentinel resolve-hostnames no\n\
         sentinel monitor {name} {master_ip} {master_port} {quorum}\n\
         sentinel down-after-milliseconds {name} {down}\n\
         sentinel failover-timeout {name} {failover}\n\
         sentinel parallel-syncs {name} 1\n",
        quorum = opts.quorum,
        down = opts.down_after.as_millis(),
        failover = opts.failover_timeout.as_millis(),
    )
}

/// A master, its replicas and the sentinels monitoring it, all real processes on loopback.
#[derive(Debug)]
pub struct Topology {
    /// The master at start (after a failover it is a replica, or dead).
    pub master: RedisServer,
    /// The replicas at start.
    pub replicas: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<Sentinel>,
    opts: SentinelOptions,
}

/// Builds a [`Topology`]; defaults: 2 replicas, 3 sentinels, lab sentinel options.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    replicas: usize,
    sentinels: usize,
    opts: SentinelOptions,
    /// Where the processes run: server `i` (the master first) and sentinel `i` on host `i`
    /// (round the list); empty: loopback.
    hosts: Vec<Host>,
    /// Where the sentinels run instead, when not on the servers' hosts: sentinel `i` on host `i`
    /// (round the list).
    sentinel_hosts: Vec<Host>,
}

impl TopologyBuilder {
    /// Number of replicas.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Number of sentinels.
    pub fn sentinels(mut self, n: usize) -> Self {
        self.sentinels = n;
        self
    }

    /// Sentinel quorum.
    pub fn quorum(mut self, q: u32) -> Self {
        self.opts.quorum = q;
        self
    }

    /// `down-after-milliseconds` (shorten it for kill-the-master tests).
    pub fn down_after(mut self, d: Duration) -> Self {
        self.opts.down_after = d;
        self
    }

    /// `failover-timeout`.
    pub fn failover_timeout(mut self, d: Duration) -> Self {
        self.opts.failover_timeout = d;
        self
    }

    /// Runs server `i` (the master first) and sentinel `i` on `hosts[i]`, round the list.
    pub fn on(mut self, hosts: &[Host]) -> Self {
        self.hosts = hosts.to_vec();
        self
    }

    /// Runs sentinel `i` on `hosts[i]` (round the list) instead of on the servers' hosts, so that
    /// a partition can separate the sentinels from the servers.
    pub fn sentinels_on(mut self, hosts: &[Host]) -> Self {
        self.sentinel_hosts = hosts.to_vec();
        self
    }

    /// Starts the master, then the replicas (linked), then the sentinels; ready when every sentinel sees
    /// every replica healthy and all the other sentinels.
    ///
    /// # Panics
    /// When any process does not come up or discovery does not finish within its (scaled) timeout.
    pub async fn start(self) -> Topology {
        let loopback = [Host::loopback()];
        let hosts = if self.hosts.is_empty() {
            &loopback[..]
        } else {
            &self.hosts[..]
        };
        let host = |i: usize| &hosts[i % hosts.len()];
        let master = RedisServer::start_on(host(0), "").await;
        // Replicas first and linked, so each sentinel learns them from the master's first INFO.
        let replicas = join_all(
            (0..self.replicas).map(|i| RedisServer::start_replica_on(host(i + 1), &master)),
        )
        .await;
        let sentinel_host = |i: usize| match self.sentinel_hosts.len() {
            0 => host(i),
            n => &self.sentinel_hosts[i % n],
        };
        let sentinels = join_all(
            (0..self.sentinels).map(|i| Sentinel::start_on(sentinel_host(i), &master, &self.opts)),
        )
        .await;
        let topology = Topology {
            master,
            replicas,
            sentinels,
            opts: self.opts,
        };
        topology.wait_discovered().await;
        topology
    }
}

impl Topology {
    /// A builder with the defaults (2 replicas, 3 sentinels, quorum 2, down-after 5 s).
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder {
            replicas: 2,
            sentinels: 3,
            opts: SentinelOptions::default(),
            hosts: Vec::new(),
            sentinel_hosts: Vec::new(),
        }
    }

    /// Starts `replicas` replicas and `sentinels` sentinels with the lab's sentinel options.
    pub async fn start(replicas: usize, sentinels: usize) -> Self {
        Self::builder()
            .replicas(replicas)
            .sentinels(sentinels)
            .start()
            .await
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.opts.master_name
    }

    /// The sentinel options in force.
    pub fn options(&self) -> &SentinelOptions {
        &self.opts
    }

    /// `SENTINEL RESET <master>` on every sentinel: each forgets the replicas (and the other
    /// sentinels) it cannot see now, and lists no replica until it has asked the master again.
    ///
    /// # Panics
    /// When a sentinel refuses it.
    pub async fn reset_sentinels(&self) {
        for s in &self.sentinels {
            let mut c = s.client().await;
            let _: i64 = redis::cmd("SENTINEL")
                .arg("RESET")
                .arg(self.master_name())
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("SENTINEL RESET on {}: {e}", s.addr()));
        }
    }

    /// "127.0.0.1:port" of every sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// Every redis-server: the initial master first, then the replicas.
    pub fn servers(&self) -> impl Iterator<Item = &RedisServer> {
        std::iter::once(&self.master).chain(self.replicas.iter())
    }

    /// The redis-server listening on `addr` ("127.0.0.1:port").
    ///
    /// # Panics
    /// When no server of this topology has that address.
    pub fn server_by_addr(&self, addr: &str) -> &RedisServer {
        self.servers()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no server at {addr} in this topology"))
    }

    /// The master address according to the first sentinel that answers.
    ///
    /// # Panics
    /// When no sentinel answers.
    pub async fn current_master_addr(&self) -> String {
        for s in &self.sentinels {
            if let Some(addr) = s.master_addr().await {
                return addr;
            }
        }
        panic!("no sentinel answered get-master-addr-by-name");
    }

    /// The server the sentinels currently name as master.
    pub async fn current_master(&self) -> &RedisServer {
        let addr = self.current_master_addr().await;
        self.server_by_addr(&addr)
    }

    /// Waits until every live sentinel sees all replicas healthy and all other sentinels.
    pub async fn wait_discovered(&self) {
        let (replicas, others) = (self.replicas.len(), self.sentinels.len().saturating_sub(1));
        for s in &self.sentinels {
            crate::eventually!(
                DISCOVERY_TIMEOUT,
                s.sees(replicas, others).await,
                "sentinel {} sees {replicas} replicas and {others} other sentinels",
                s.addr()
            );
        }
    }

    /// Waits until every sentinel names `addr` as the master (after a failover the sentinels that did
    /// not lead it switch only at `+switch-master`, several seconds after the promotion).
    pub async fn wait_sentinels_agree(&self, addr: &str, timeout: Duration) {
        for s in &self.sentinels {
            crate::eventually!(
                timeout,
                s.master_addr().await.as_deref() == Some(addr),
                "sentinel {} names {addr} as master",
                s.addr()
            );
        }
    }

    /// Waits until some sentinel names a master other than `old` and that server answers `ROLE` as master
    /// (after a kill: down-after, then the vote; see the failover timeline). Returns its address.
    ///
    /// # Panics
    /// When no promotion is visible within `timeout` (scaled).
    pub async fn wait_new_master(&self, old: &str, timeout: Duration) -> String {
        let mut new = None;
        crate::eventually!(
            timeout,
            {
                new = self.promoted_master(old).await;
                new.is_some()
            },
            "a sentinel names a promoted master other than {old}"
        );
        new.unwrap_or_default()
    }

    /// The first address a sentinel names as master that is not `old`, belongs to this topology and
    /// answers `ROLE` as master.
    async fn promoted_master(&self, old: &str) -> Option<String> {
        for s in &self.sentinels {
            let Some(addr) = s.master_addr().await else {
                continue;
            };
            if addr == old || !self.servers().any(|r| r.addr() == addr) {
                continue;
            }
            if role(self.server_by_addr(&addr)).await.as_deref() == Some("master") {
                return Some(addr);
            }
        }
        None
    }

    /// `SENTINEL FAILOVER` on the first sentinel (retried while it answers -NOGOODSLAVE/-INPROG), then
    /// waits until that sentinel's get-master-addr-by-name changes and the new master answers `ROLE` as
    /// master. Returns the new master's address.
    ///
    /// Only the leading sentinel reports the promoted replica this early (about 1 s); the others follow
    /// at `+switch-master` (see `wait_sentinels_agree` and the failover timeline in shared/reference).
    pub async fn failover(&self) -> String {
        let leader = self
            .sentinels
            .first()
            .expect("a topology with no sentinel cannot fail over");
        let old = leader
            .master_addr()
            .await
            .expect("the leader names a master");
        let deadline = Deadline::after(FAILOVER_TIMEOUT);
        loop {
            // A busy machine can make a connect time out: that is retried like -INPROG.
            let reply: redis::RedisResult<String> = match connect(&leader.addr()).await {
                Ok(mut c) => {
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(leader.master_name())
                        .query_async(&mut c)
                        .await
                }
                Err(e) => Err(e),
            };
            match reply {
                Ok(_) => break,
                Err(e) if deadline.expired() => panic!("SENTINEL FAILOVER kept failing: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let mut new = String::new();
        crate::eventually!(
            FAILOVER_TIMEOUT,
            match leader.master_addr().await {
                Some(addr) if addr != old => {
                    new = addr;
                    true
                }
                _ => false,
            },
            "sentinel {} moves the master away from {old}",
            leader.addr()
        );
        let promoted = self.server_by_addr(&new);
        crate::eventually!(
            FAILOVER_TIMEOUT,
            role(promoted).await.as_deref() == Some("master"),
            "promoted replica {new} answers ROLE master"
        );
        new
    }
}

/// The first element of `ROLE` ("master", "slave", "sentinel"), `None` if the server does not answer.
pub async fn role(server: &RedisServer) -> Option<String> {
    let mut c = connect(&server.addr()).await.ok()?;
    let reply: redis::Value = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
    match reply {
        redis::Value::Array(items) => match items.into_iter().next()? {
            redis::Value::BulkString(b) => String::from_utf8(b).ok(),
            redis::Value::SimpleString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}
