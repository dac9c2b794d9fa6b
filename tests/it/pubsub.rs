//! Pub/Sub through the proxy: the same frames as Redis itself, subscriptions that follow a
//! failover (Sentinel and Cluster), shard channels on their slot's master, and real clients.

use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use haproxy_rs::resp::{encode_command, ReplyScanner};
use haproxy_rs::router::slot::key_slot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::{Cluster, RedisServer, Topology};

/// A raw RESP connection that reads frames one by one.
pub(crate) struct Raw {
    s: TcpStream,
    buf: BytesMut,
    scanner: ReplyScanner,
}

impl Raw {
    pub(crate) async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            scanner: ReplyScanner::new(8),
        }
    }

    pub(crate) async fn send(&mut self, args: &[&str]) {
        self.s.write_all(&encode_command(args)).await.unwrap();
    }

    /// Writes `bytes` as they are, in one write (a pipeline).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` if none comes within `within`.
    pub(crate) async fn frame_within(&mut self, within: Duration) -> Option<String> {
        let read = async {
            loop {
                if let Some(f) = self.scanner.next(&mut self.buf).unwrap() {
                    return Some(String::from_utf8_lossy(&f).replace("\r\n", " "));
                }
                if self.s.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(within, read).await.ok().flatten()
    }

    pub(crate) async fn frame(&mut self) -> String {
        self.frame_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    pub(crate) async fn frames(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.frame().await);
        }
        out
    }
}

/// Runs `steps` (commands, how many frames each answers with) on a subscriber connection to
/// `addr`, publishing through `publisher` after the subscriptions; every frame, in order.
async fn script(addr: String, publisher: String, resp3: bool) -> Vec<String> {
    let mut sub = Raw::connect(&addr).await;
    let mut out = Vec::new();
    if resp3 {
        sub.send(&["HELLO", "3"]).await;
        sub.frame().await; // the id differs
    }
    let before: &[(&[&str], usize)] = &[
        (&["SUBSCRIBE", "a", "b"], 2),
        (&["PSUBSCRIBE", "n*"], 1),
        (&["SSUBSCRIBE", "s"], 1),
        (&["PING"], 1),
        (&["PING", "x"], 1),
        (&["SUBSCRIBE", "a"], 1),
        (&["SET", "k", "v"], 1),
        (&["FOO", "bar"], 1),
        (&["SUBSCRIBE"], 1),
    ];
    for (cmd, n) in before {
        sub.send(cmd).await;
        out.extend(sub.frames(*n).await);
    }
    let mut p = Raw::connect(&publisher).await;
    for cmd in [
        &["PUBLISH", "a", "1"][..],
        &["PUBLISH", "nx", "2"],
        &["SPUBLISH", "s", "3"],
    ] {
        p.send(cmd).await;
        assert_eq!(p.frame().await, ":1 ", "{cmd:?} reaches the subscriber");
        out.push(sub.frame().await);
    }
    let after: &[(&[&str], usize)] = &[
        (&["UNSUBSCRIBE", "b", "zz"], 2),
        (&["UNSUBSCRIBE"], 1),
        (&["PUNSUBSCRIBE"], 1),
        (&["UNSUBSCRIBE"], 1),
        (&["SUNSUBSCRIBE"], 1),
        // Back to an ordinary connection.
        (&["GET", "k"], 1),
        (&["UNSUBSCRIBE"], 1),
        (&["SUBSCRIBE", "q"], 1),
        (&["RESET"], 1),
        (&["GET", "k"], 1),
    ];
    for (cmd, n) in after {
        sub.send(cmd).await;
        out.extend(sub.frames(*n).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_the_same_frames_as_from_redis_itself() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    for resp3 in [false, true] {
        let direct = script(server.addr(), server.addr(), resp3).await;
        let through = script(proxy.addr().to_string(), proxy.addr().to_string(), resp3).await;
        assert_eq!(through, direct, "resp3: {resp3}");
        // What the script checks, so that a script gone wrong on both sides is seen.
        let joined = direct.join("\n");
        for expected in [
            "subscribe $1 b :2",
            "psubscribe $2 n* :3",
            "ssubscribe $1 s :1",
            "message $1 a $1 1",
            "pmessage $2 n* $2 nx $1 2",
            "smessage $1 s $1 3",
            "unsubscribe $2 zz :2",
            "sunsubscribe $1 s :0",
        ] {
            assert!(joined.contains(expected), "{expected:?} in {joined}");
        }
        // RESP2 refuses the SET while subscribed; RESP3 runs it.
        let last = direct.last().unwrap();
        let expected = if resp3 { "$1 v " } else { "$-1 " };
        assert_eq!(last, expected, "GET k after RESET, resp3: {resp3}");
    }
}

/// Publishes `prefix:i` to `channel` through `publisher` until `sub` gets one (bounded), and
/// returns the frames `sub` got meanwhile.
pub(crate) async fn publish_until_received(
    publisher: &mut Raw,
    sub: &mut Raw,
    channel: &str,
    prefix: &str,
    spublish: bool,
) -> Vec<String> {
    let verb = if spublish { "SPUBLISH" } else { "PUBLISH" };
    let mut got = Vec::new();
    for i in 0..400 {
        let msg = format!("{prefix}:{i}");
        publisher.send(&[verb, channel, &msg]).await;
        let _ = publisher.frame().await;
        while let Some(f) = sub.frame_within(Duration::from_millis(50)).await {
            let done = f.contains(&format!("{prefix}:"));
            got.push(f);
            if done {
                return got;
            }
        }
    }
    panic!("no {prefix} message on {channel} within 400 publications; got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_a_sentinel_failover() {
    let topo = Topology::start(2, 3).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(2).await;
    let old = topo.current_master_addr().await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "news"]).await;
    sub.send(&["PSUBSCRIBE", "alerts:*"]).await;
    assert_eq!(
        sub.frames(2).await,
        [
            "*3 $9 subscribe $4 news :1 ",
            "*3 $10 psubscribe $8 alerts:* :2 "
        ]
    );
    let mut publisher = Raw::connect(proxy.addr()).await;
    publish_until_received(&mut publisher, &mut sub, "news", "before", false).await;
    // A redis-py subscriber too: it sees no disconnection, only the messages after the switch.
    let python = python_subscriber(proxy.addr().port()).await;

    let new = topo.failover().await;
    eventually!(
        Duration::from_secs(15),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy follows the failover to {new}"
    );
    let after = publish_until_received(&mut publisher, &mut sub, "news", "after", false).await;
    // Each subscriber is placed again by its own session: publish until python has one too.
    let mut python = tokio::spawn(python.wait_with_output());
    let mut late = 0;
    let out = loop {
        tokio::select! {
            out = &mut python => break out.unwrap().unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                assert!(late < 400, "the python subscriber got nothing in 20 s");
                late += 1;
                publisher.send(&["PUBLISH", "news", &format!("late:{late}")]).await;
                publisher.frame().await;
            }
        }
    };
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("got after"),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pattern =
        publish_until_received(&mut publisher, &mut sub, "alerts:1", "after", false).await;
    // The resubscriptions' confirmations are the proxy's business: the client sees messages.
    for f in after.iter().chain(&pattern) {
        assert!(
            f.starts_with("*3 $7 message") || f.starts_with("*4 $8 pmessage"),
            "{f}"
        );
    }
    let numsub = |addr: String| async move {
        let mut direct = Raw::connect(addr).await;
        direct.send(&["PUBSUB", "NUMSUB", "news"]).await;
        direct.frame().await
    };
    eventually!(
        Duration::from_secs(5),
        numsub(new.clone()).await == "*2 $4 news :1 ",
        "the subscription is on the new master {new}"
    );
    eventually!(
        Duration::from_secs(5),
        numsub(old.clone()).await == "*2 $4 news :0 ",
        "and no longer on the old one {old}"
    );
    // Unsubscribing still counts as Redis does, and the connection is ordinary again.
    sub.send(&["UNSUBSCRIBE"]).await;
    sub.send(&["PUNSUBSCRIBE"]).await;
    sub.send(&["SET", "k", "v"]).await;
    let tail = sub.frames(3).await;
    assert_eq!(
        tail[..2],
        [
            "*3 $11 unsubscribe $4 news :1 ",
            "*3 $12 punsubscribe $8 alerts:* :0 "
        ]
    );
    assert_eq!(tail[2], "+OK ");
}

/// A redis-py subscriber of `news` through the proxy on `port`, subscribed when this returns; it
/// exits 0 printing "got after" once it gets a message published after the failover, and fails
/// on any error (a disconnection included).
async fn python_subscriber(port: u16) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let script = r#"
import sys, time, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
p = r.pubsub()
p.subscribe("news")
deadline = time.time() + 60
while time.time() < deadline:
    m = p.get_message(timeout=1)
    if m and m["type"] == "subscribe":
        print("subscribed", flush=True)
    if m and m["type"] == "message" and m["data"].startswith((b"after:", b"late:")):
        print("got after", flush=True)
        sys.exit(0)
sys.exit("no message after the failover")
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("python subscribes within 10 s")
        .unwrap();
    assert_eq!(first.as_deref(), Some("subscribed"));
    child.stdout = Some(lines.into_inner().into_inner());
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gone_frees_its_server_connection() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    let numsub = || async {
        let mut direct = Raw::connect(server.addr()).await;
        direct.send(&["PUBSUB", "NUMSUB", "c"]).await;
        direct.frame().await
    };
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "c"]).await;
    sub.frame().await;
    assert_eq!(numsub().await, "*2 $1 c :1 ");
    assert_eq!(crate::limits::main_listener(&proxy).pubsub_clients, 1);
    let (_, metrics) = crate::stats_http::get(proxy.stats_addr(), "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("haproxy_rs_listener_pubsub_clients{") && l.ends_with(" 1")),
        "{metrics}"
    );
    let (_, page) = crate::stats_http::get(proxy.stats_addr(), "/").await;
    assert!(page.contains("<th>Subscribed</th>"), "{page}");
    drop(sub);
    eventually!(
        Duration::from_secs(5),
        numsub().await == "*2 $1 c :0 ",
        "the proxy's subscription goes with its client"
    );
    eventually!(
        Duration::from_secs(5),
        crate::limits::main_listener(&proxy).pubsub_clients == 0
    );
    // A transaction cannot subscribe (its connection is the client's own and shared with EXEC).
    let mut c = Raw::connect(proxy.addr()).await;
    c.send(&["MULTI"]).await;
    c.send(&["SUBSCRIBE", "c"]).await;
    c.send(&["DISCARD"]).await;
    let replies = c.frames(3).await;
    assert!(replies[1].starts_with("-ERR haproxy-rs"), "{replies:?}");
    assert_eq!(replies[2], "+OK ");
}

/// Shard channel names, one per master of `cluster` (by the cluster's own map).
async fn shard_channels(cluster: &Cluster) -> Vec<(String, String)> {
    let map = cluster.slot_map().await;
    let mut out: Vec<(String, String)> = Vec::new();
    for i in 0.. {
        let name = format!("shard:{i}");
        let owner = map
            .owners(key_slot(name.as_bytes()))
            .unwrap()
            .master
            .clone();
        if !out.iter().any(|(_, o)| *o == owner) {
            out.push((name, owner));
        }
        if out.len() == map.masters().len() {
            return out;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_subscriptions_reach_every_shard_and_follow_a_killed_master() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let shards = shard_channels(&cluster).await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "news"]).await;
    assert_eq!(sub.frame().await, "*3 $9 subscribe $4 news :1 ");
    for (i, (name, _)) in shards.iter().enumerate() {
        sub.send(&["SSUBSCRIBE", name]).await;
        // The client's own count, though each lives on another master.
        assert_eq!(
            sub.frame().await,
            format!("*3 $10 ssubscribe ${} {name} :{} ", name.len(), i + 1)
        );
    }
    let (a, b) = (&shards[0].0, &shards[1].0);
    sub.send(&["SSUBSCRIBE", a, b]).await;
    assert_eq!(
        sub.frame().await,
        "-CROSSSLOT Keys in request don't hash to the same slot "
    );
    // PUBLISH on any node reaches a subscriber (the cluster bus carries it), SPUBLISH on the
    // owner reaches its shard channel's subscribers.
    for node in cluster.addrs() {
        let mut p = Raw::connect(&node).await;
        p.send(&["PUBLISH", "news", &node]).await;
        p.frame().await;
        assert_eq!(
            sub.frame().await,
            format!("*3 $7 message $4 news ${} {node} ", node.len())
        );
    }
    for (name, owner) in &shards {
        let mut p = Raw::connect(owner).await;
        p.send(&["SPUBLISH", name, "hi"]).await;
        assert_eq!(p.frame().await, ":1 ");
        assert_eq!(
            sub.frame().await,
            format!("*3 $8 smessage ${} {name} $2 hi ", name.len())
        );
    }

    // The owner of the first shard channel dies; its replica takes over.
    let map = cluster.slot_map().await;
    let (victim_channel, victim) = shards[0].clone();
    let heir = map
        .owners(key_slot(victim_channel.as_bytes()))
        .unwrap()
        .replicas[0]
        .clone();
    cluster.node(&victim).kill();
    eventually!(
        Duration::from_secs(30),
        cluster.node(&heir).role().await == "master",
        "replica {heir} is promoted"
    );
    let mut p = Raw::connect(&heir).await;
    let got = publish_until_received(&mut p, &mut sub, &victim_channel, "after", true).await;
    assert!(
        got.iter().all(|f| f.starts_with("*3 $8 smessage")),
        "{got:?}"
    );
    // Classic subscriptions too (they may have lived on the dead node).
    let mut p = Raw::connect(&heir).await;
    publish_until_received(&mut p, &mut sub, "news", "after", false).await;
    // Every shard channel is still subscribed once, as the client's count says.
    sub.send(&["SUNSUBSCRIBE"]).await;
    let mut left: Vec<String> = sub.frames(shards.len()).await;
    left.retain(|f| f.starts_with("*3 $12 sunsubscribe"));
    assert_eq!(left.len(), shards.len(), "{left:?}");
    assert!(left.last().unwrap().ends_with(":0 "), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_publish_counts_and_pubsub_counts_are_the_whole_clusters() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    // One channel per master; a direct cluster client subscribes on the channel's slot's
    // master, and so does the proxy for its client.
    let channels = shard_channels(&cluster).await;
    let mut direct = Vec::new();
    for (name, owner) in &channels {
        let mut d = Raw::connect(owner).await;
        d.send(&["SUBSCRIBE", name]).await;
        d.frame().await;
        direct.push(d);
    }
    let mut sub = Raw::connect(proxy.addr()).await;
    for (i, (name, _)) in channels.iter().enumerate() {
        sub.send(&["SUBSCRIBE", name]).await;
        assert_eq!(
            sub.frame().await,
            format!("*3 $9 subscribe ${} {name} :{} ", name.len(), i + 1)
        );
    }
    // One pattern on one master, one that can match keyspace notifications on every master.
    sub.send(&["PSUBSCRIBE", "other:*", "*oo"]).await;
    sub.frames(2).await;

    let mut c = Raw::connect(proxy.addr()).await;
    for (name, _) in &channels {
        // Both subscribers, each message once.
        c.send(&["PUBLISH", name, "hi"]).await;
        assert_eq!(c.frame().await, ":2 ", "PUBLISH {name}");
        assert_eq!(
            sub.frame().await,
            format!("*3 $7 message ${} {name} $2 hi ", name.len())
        );
    }
    assert_eq!(sub.frame_within(Duration::from_millis(300)).await, None);
    let names: Vec<&str> = channels.iter().map(|(n, _)| n.as_str()).collect();
    let mut numsub = vec!["PUBSUB", "NUMSUB"];
    numsub.extend(&names);
    c.send(&numsub).await;
    let want: String = names
        .iter()
        .map(|n| format!("${} {n} :2 ", n.len()))
        .collect();
    assert_eq!(c.frame().await, format!("*6 {want}"));
    // Two patterns, each counted once.
    c.send(&["PUBSUB", "NUMPAT"]).await;
    assert_eq!(c.frame().await, ":2 ");
    c.send(&["PUBSUB", "CHANNELS", "shard:*"]).await;
    let listed = c.frame().await;
    assert!(listed.starts_with("*3 "), "{listed}");
    for n in &names {
        assert!(listed.contains(&format!(" {n} ")), "{n}: {listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pubsub_works_through_the_proxy() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    let port = proxy.addr().port().to_string();
    let script = r#"
import sys, time, redis
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=proto)
    p = r.pubsub()
    p.subscribe("news")
    p.psubscribe("alerts:*")
    kinds = []
    deadline = time.time() + 5
    while len(kinds) < 2 and time.time() < deadline:
        m = p.get_message(timeout=1)
        if m:
            kinds.append(m["type"])
    assert kinds == ["subscribe", "psubscribe"], kinds
    assert r.publish("news", "hello") == 1
    assert r.publish("alerts:disk", "full") == 1
    got = []
    while len(got) < 2 and time.time() < deadline:
        m = p.get_message(timeout=1)
        if m:
            got.append((m["type"], m["channel"], m["data"]))
    assert got == [("message", b"news", b"hello"), ("pmessage", b"alerts:disk", b"full")], got
    p.unsubscribe()
    p.punsubscribe()
    p.close()
    assert r.set("after", "1")
    r.close()
print("python pubsub ok")
"#;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &port])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "python pubsub ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected_at_the_output_buffer_limit() {
    const LIMIT: usize = 1 << 20;
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| c.client_output_buffer_limit_bytes = LIMIT)
        .start(0)
        .await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "flood"]).await;
    sub.frame().await;
    // 40 MiB of messages the subscriber never reads (more than the socket buffers hold).
    let payload = "m".repeat(100 * 1024);
    let mut p = Raw::connect(server.addr()).await;
    for _ in 0..400 {
        p.send(&["PUBLISH", "flood", &payload]).await;
        let delivered = p.frame().await;
        if delivered == ":0 " {
            break; // the subscriber is gone already
        }
    }
    // The peak is recorded when the session has ended, just after the disconnection counts.
    eventually!(
        Duration::from_secs(10),
        {
            let l = crate::limits::main_listener(&proxy);
            l.output_buffer_limit_disconnections == 1 && l.output_buffer_peak_bytes > 0
        },
        "the subscriber is disconnected: {:?}",
        crate::limits::main_listener(&proxy)
    );
    let peak = crate::limits::main_listener(&proxy).output_buffer_peak_bytes as usize;
    // Past the limit by at most one batch of a link's frames (64 KiB and one message).
    assert!(
        (LIMIT..=LIMIT + (512 << 10)).contains(&peak),
        "peak backlog {peak} bytes"
    );
    let mut direct = Raw::connect(server.addr()).await;
    eventually!(
        Duration::from_secs(5),
        {
            direct.send(&["PUBSUB", "NUMSUB", "flood"]).await;
            direct.frame().await == "*2 $5 flood :0 "
        },
        "its subscription goes with it"
    );
}

/// Reads frames until one contains `needle` (bounded), returning it.
async fn frame_containing(c: &mut Raw, needle: &str) -> String {
    for _ in 0..1000 {
        let f = c.frame().await;
        if f.contains(needle) {
            return f;
        }
    }
    panic!("no frame with {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shows_the_masters_commands() {
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()]).start(0).await;
    let mut m = Raw::connect(proxy.addr()).await;
    m.send(&["MONITOR"]).await;
    assert_eq!(m.frame().await, "+OK ");
    let mut c = Raw::connect(proxy.addr()).await;
    c.send(&["SET", "watched", "1"]).await;
    c.frame().await;
    let line = frame_containing(&mut m, "\"watched\"").await;
    assert!(
        line.starts_with('+') && line.contains("\"SET\" \"watched\" \"1\""),
        "{line}"
    );
    m.send(&["QUIT"]).await;
    frame_containing(&mut m, "+OK").await;
    assert_eq!(m.frame_within(Duration::from_secs(5)).await, None, "closed");

    // Cluster mode: every master's lines, one +OK.
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let keys = crate::harness::cluster::keys_on_every_master(&cluster.slot_map().await, "mon", 1);
    let mut m = Raw::connect(proxy.addr()).await;
    m.send(&["MONITOR"]).await;
    assert_eq!(m.frame().await, "+OK ");
    let mut c = Raw::connect(proxy.addr()).await;
    for k in &keys {
        c.send(&["SET", k, "v"]).await;
        assert_eq!(c.frame().await, "+OK ");
        let line = frame_containing(&mut m, &format!("\"{k}\"")).await;
        assert!(line.contains("\"SET\""), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_channel_rules_hold_while_subscribed() {
    use haproxy_rs::config::{AuthConfig, MaskedString, UserConfig};
    let server = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| {
            c.auth = AuthConfig {
                requirepass: None,
                users: vec![UserConfig {
                    name: "reader".into(),
                    password: MaskedString::new("pw"),
                    commands: vec!["+@all".into()],
                    keys: vec!["~*".into()],
                    channels: vec!["&news:*".into()],
                }],
                ..AuthConfig::default()
            };
        })
        .start(0)
        .await;
    let mut sub = Raw::connect(proxy.addr()).await;
    sub.send(&["SUBSCRIBE", "news:1"]).await;
    assert_eq!(sub.frame().await, "-NOAUTH Authentication required. ");
    sub.send(&["AUTH", "reader", "pw"]).await;
    assert_eq!(sub.frame().await, "+OK ");
    sub.send(&["SUBSCRIBE", "news:1"]).await;
    assert_eq!(sub.frame().await, "*3 $9 subscribe $6 news:1 :1 ");
    // Subscribed already: the rules still apply to each command.
    for cmd in [&["SUBSCRIBE", "secret"][..], &["PSUBSCRIBE", "*"]] {
        sub.send(cmd).await;
        let f = sub.frame().await;
        assert!(f.starts_with("-NOPERM"), "{cmd:?}: {f}");
    }
    sub.send(&["PING"]).await;
    assert_eq!(sub.frame().await, "*2 $4 pong $0  ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_redis_crate_subscribes_through_the_proxy_in_cluster_mode() {
    use futures_util::StreamExt;
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let client = redis::Client::open(format!("redis://{}/", proxy.addr())).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("news").await.unwrap();
    pubsub.psubscribe("alerts:*").await.unwrap();
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    let mut got = Vec::new();
    {
        let mut messages = pubsub.on_message();
        for (channel, payload) in [("news", "a"), ("alerts:disk", "b")] {
            // Redis Cluster counts the receivers of the node PUBLISH reached only: 0 or 1 here.
            let n: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut publisher)
                .await
                .unwrap();
            assert!((0..=1).contains(&n), "{channel}: {n}");
            let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("a message within 5 s")
                .expect("the stream goes on");
            got.push((
                msg.get_channel_name().to_string(),
                msg.get_payload::<String>().unwrap(),
            ));
        }
    }
    assert_eq!(
        got,
        [
            ("news".to_string(), "a".to_string()),
            ("alerts:disk".to_string(), "b".to_string())
        ]
    );
    pubsub.unsubscribe("news").await.unwrap();
    pubsub.punsubscribe("alerts:*").await.unwrap();
}
