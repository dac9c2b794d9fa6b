//! Drop-in for real clients: Python's `redis` (transactions, `WATCH`, `BLPOP`, scripts, RESP3,
//! authentication) and `redis-cli -3` through the proxy in Sentinel and in cluster mode, both
//! with `requirepass`, plus the raw RESP3 types and cluster mode's refusals and input limits.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use haproxy_rs::config::{Config, MaskedString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clients::run;
use crate::harness::eventually::scaled;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer, Topology};

/// The clients' password (the proxy's `[auth] requirepass`; the servers have none).
const PASSWORD: &str = "drop-in-pw";

const NOAUTH: &str = "-NOAUTH Authentication required.";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.";

fn requirepass(c: &mut Config) {
    c.auth.requirepass = Some(MaskedString::new(PASSWORD));
}

/// Run as `python3 -c SCRIPT <proxy port> <password> <server,server,...>`: the servers are
/// polled directly (`INFO clients`) to see the `BLPOP` block before the push. Every assertion
/// also holds against a redis-server with `requirepass` (checked when the test was written).
const PYTHON: &str = r##"import sys, threading, time, redis

port, pw, backends = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
backend_pw = sys.argv[4] if len(sys.argv) > 4 else None
# `protocol=` (HELLO 3) came with redis-py 5.0.
resp3 = tuple(int(x) for x in redis.__version__.split(".")[:2]) >= (5, 0)
if not resp3:
    print("redis-py %s has no protocol=3: the RESP3 part is skipped" % redis.__version__)


def connect(**kw):
    # retry=None: redis-py 6+ retries a failed connection (AuthenticationError included) three
    # times with backoff, seconds per refused login.
    if kw.get("protocol") == 2 and not resp3:
        del kw["protocol"]
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, retry=None, **kw)


def client(**kw):
    kw.setdefault("protocol", 2)
    return connect(password=pw, **kw)


def blocked():
    n = 0
    for a in backends:
        host, p = a.rsplit(":", 1)
        c = redis.Redis(host=host, port=int(p), password=backend_pw, socket_timeout=5)
        n += c.info("clients")["blocked_clients"]
        c.close()
    return n


r = client()
assert r.ping()
assert r.auth(pw)  # AUTH again on an authenticated connection: +OK
r.delete("{u1}a", "{u1}b", "{u1}q", "{u1}h", "{u1}n")

# MULTI ... EXEC: every result, in order.
p = r.pipeline(transaction=True)
p.set("{u1}a", 1).incr("{u1}a").rpush("{u1}b", "x", "y").lrange("{u1}b", 0, -1).get("{u1}a")
got = p.execute()
assert got == [True, 2, 2, [b"x", b"y"], b"2"], got

# WATCH, another connection changes the key, EXEC: WatchError, and the other write stands.
other = client()
with r.pipeline(transaction=True) as p:
    p.watch("{u1}a")
    v = int(p.get("{u1}a"))
    other.set("{u1}a", 100)
    p.multi()
    p.set("{u1}a", v + 1)
    try:
        p.execute()
        raise AssertionError("EXEC ran although {u1}a changed after WATCH")
    except redis.WatchError:
        pass
# Read on the writer's connection: another one may read from a replica not there yet.
assert other.get("{u1}a") == b"100", other.get("{u1}a")


# Without a conflict the optimistic transaction goes through.
def bump(p):
    v = int(p.get("{u1}a"))
    p.multi()
    p.set("{u1}a", v + 1)


r.transaction(bump, "{u1}a")
assert r.get("{u1}a") == b"101", r.get("{u1}a")

# BLPOP in a thread, blocked on the server until another client pushes.
popped = []
t = threading.Thread(target=lambda: popped.append(client().blpop(["{u1}q"], timeout=10)))
t.start()
deadline = time.time() + 5
while blocked() == 0:
    assert time.time() < deadline, "the BLPOP never blocked on a server"
    time.sleep(0.02)
assert other.rpush("{u1}q", "job") == 1
t.join(15)
assert not t.is_alive() and len(popped) == 1 and list(popped[0]) == [b"{u1}q", b"job"], popped

# register_script: EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA again.
script = r.register_script(
    "return redis.call('INCRBY', KEYS[1], ARGV[1]) -- %d %f" % (port, time.time())
)
assert r.script_exists(script.sha) == [False], r.script_exists(script.sha)
assert script(keys=["{u1}n"], args=[5]) == 5
assert r.script_exists(script.sha) == [True], r.script_exists(script.sha)
assert script(keys=["{u1}n"], args=[2]) == 7

# RESP3: HELLO 3 (with AUTH) on connect, maps as dicts, a transaction.
if resp3:
    r3 = client(protocol=3)
    hello = r3.execute_command("HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"server"] == b"redis", hello
    assert r3.client_info()["resp"] == "3", r3.client_info()
    r3.hset("{u1}h", mapping={"f": "v"})
    assert r3.hgetall("{u1}h") == {b"f": b"v"}
    p = r3.pipeline(transaction=True)
    p.incr("{u1}a").hgetall("{u1}h")
    got = p.execute()
    assert got == [102, {b"f": b"v"}], got

# Authentication: a wrong password and none at all, in both protocols.
for proto in (2, 3) if resp3 else (2,):
    for kw, want in (
        (dict(password="wrong"), "invalid username-password pair"),
        (dict(), "Authentication required" if proto == 2 else "HELLO must be called"),
    ):
        c = connect(protocol=proto, **kw)
        try:
            c.get("{u1}a")
            raise AssertionError("served without authentication: %r %r" % (proto, kw))
        except redis.AuthenticationError as e:
            assert want in str(e), (proto, kw, str(e))
print("python ok")
"##;

/// The Python script against `proxy`, whose backends are `servers`.
async fn python(proxy: &TestProxy, servers: Vec<String>) {
    let port = proxy.addr().port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("python3").args(["-c", PYTHON, &port, PASSWORD, &servers.join(",")]))
    })
    .await
    .expect("python3 thread");
    assert_eq!(out.trim(), "python ok");
}

/// `redis-cli -3 --no-raw` (the formatted output, which tells a map from an array) with the
/// password, running the commands of `stdin` on one connection.
async fn redis_cli_resp3(proxy: &TestProxy, stdin: &'static str) -> String {
    let port = proxy.addr().port().to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("redis-cli")
            .args(["-3", "--no-raw", "-h", "127.0.0.1", "-p", &port])
            .args(["--pass", PASSWORD, "--no-auth-warning"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        let mut input = child.stdin.take().expect("redis-cli's stdin");
        input
            .write_all(stdin.as_bytes())
            .expect("write redis-cli's stdin");
        drop(input);
        let out = child.wait_with_output().expect("redis-cli finishes");
        assert!(
            out.status.success(),
            "redis-cli failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("redis-cli thread")
}

/// `redis-cli -3` shows `HELLO 3`'s fields and `HGETALL` as maps (`1# "f" => "v"`, where RESP2
/// would print `1) "f"` `2) "v"`).
async fn assert_redis_cli_resp3(proxy: &TestProxy) {
    let out = redis_cli_resp3(proxy, "HELLO 3\nHSET {cli}h f v\nHGETALL {cli}h\n").await;
    let lines: Vec<&str> = out.lines().collect();
    let hello = [
        "1# \"server\" => \"redis\"",
        "3# \"proto\" => (integer) 3",
        "5# \"mode\" => \"standalone\"",
        "6# \"role\" => \"master\"",
        "7# \"modules\" => (empty array)",
    ];
    for field in hello {
        assert!(lines.contains(&field), "HELLO 3 shows {field}:\n{out}");
    }
    assert_eq!(
        lines[lines.len().saturating_sub(2)..],
        ["(integer) 1", "1# \"f\" => \"v\""],
        "{out}"
    );
}

/// Sends every command in one write; the raw replies, in order.
async fn send(s: &mut TcpStream, commands: &[&[&str]]) -> Vec<String> {
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(&haproxy_rs::resp::encode_command(c));
    }
    s.write_all(&out).await.expect("write to the proxy");
    read_replies(s, commands.len()).await
}

/// After `HELLO 3 AUTH ... SETNAME`, the replies carry RESP3's own types on the wire: `%` map,
/// `~` set, `,` double, `_` null; after `HELLO 2` the same commands are RESP2 again. `HELLO`
/// names the connection and reports the id `CLIENT ID` does, as in Redis.
async fn assert_raw_resp3(proxy: &TestProxy) {
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let hello = send(
        &mut s,
        &[
            &[
                "HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "drop-in",
            ],
            &["CLIENT", "GETNAME"],
            &["CLIENT", "ID"],
            &["HELLO", "3", "SETNAME", "a b"],
            &["CLIENT", "GETNAME"],
        ],
    )
    .await;
    assert!(
        hello[0].starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{hello:?}"
    );
    assert!(hello[0].contains("$5\r\nproto\r\n:3\r\n"), "{hello:?}");
    let id = hello[2].strip_prefix(':').expect("CLIENT ID is an integer");
    assert!(
        hello[0].contains(&format!("$2\r\nid\r\n:{id}\r\n")),
        "HELLO reports CLIENT ID's {id}: {hello:?}"
    );
    assert_eq!(
        hello[1..],
        [
            "$7\r\ndrop-in",
            hello[2].as_str(),
            "-ERR Client names cannot contain spaces, newlines or special characters.",
            "$7\r\ndrop-in",
        ]
    );
    let queries: &[&[&str]] = &[
        &["HGETALL", "{r3}h"],
        &["SMEMBERS", "{r3}s"],
        &["ZSCORE", "{r3}z", "m"],
        &["GET", "{r3}missing"],
    ];
    let setup: &[&[&str]] = &[
        &["DEL", "{r3}h", "{r3}s", "{r3}z"],
        &["HSET", "{r3}h", "f", "v"],
        &["SADD", "{r3}s", "m"],
        &["ZADD", "{r3}z", "1.5", "m"],
    ];
    assert_eq!(send(&mut s, setup).await[1..], [":1", ":1", ":1"]);
    assert_eq!(
        send(&mut s, queries).await,
        ["%1\r\n$1\r\nf\r\n$1\r\nv", "~1\r\n$1\r\nm", ",1.5", "_"]
    );
    let hello = send(&mut s, &[&["HELLO", "2"]]).await;
    assert!(hello[0].starts_with("*14\r\n"), "{hello:?}");
    assert_eq!(
        send(&mut s, queries).await,
        [
            "*2\r\n$1\r\nf\r\n$1\r\nv",
            "*1\r\n$1\r\nm",
            "$3\r\n1.5",
            "$-1"
        ]
    );
}

fn topology_refusal(name: &str) -> String {
    format!(
        "-ERR haproxy-rs: '{name}' is refused: it would change the topology behind the proxy \
         (commands.refuse_topology_changes)"
    )
}

/// Sends `input` and reads until the server closes the connection (bounded).
async fn until_closed(addr: SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(input).await.expect("write");
    let mut buf = Vec::new();
    // A reset (input left unread when the server closed) ends the reading too.
    let _ = tokio::time::timeout(scaled(Duration::from_secs(5)), s.read_to_end(&mut buf))
        .await
        .expect("the connection is closed");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Cluster mode with `requirepass`: nothing served before `AUTH`, Redis's errors for bad
/// credentials, the topology changes refused after it; a declared bulk of 2^31 bytes gets the
/// same reply and close as from a redis-server with the same `requirepass`, before and after
/// `AUTH`.
async fn assert_cluster_auth_policy_and_limits(proxy: &TestProxy) {
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let replies = send(
        &mut s,
        &[
            &["GET", "{sec}k"],
            &["AUTH", "wrong"],
            &["AUTH", "default", "wrong"],
            &["HELLO", "3", "AUTH", "default", "wrong"],
            &["AUTH", PASSWORD],
            &["CLUSTER", "FAILOVER"],
            &["CLUSTER", "FAILOVER", "TAKEOVER"],
            &["REPLICAOF", "127.0.0.1", "1"],
            &["REPLICAOF", "NO", "ONE"],
            &["GET", "{sec}k"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            NOAUTH.to_string(),
            WRONGPASS.to_string(),
            WRONGPASS.to_string(),
            WRONGPASS.to_string(),
            "+OK".to_string(),
            topology_refusal("CLUSTER FAILOVER"),
            topology_refusal("CLUSTER FAILOVER"),
            topology_refusal("REPLICAOF"),
            topology_refusal("REPLICAOF"),
            "$-1".to_string(),
        ]
    );

    let redis = RedisServer::start().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut redis.client().await)
        .await
        .expect("CONFIG SET requirepass");
    let redis_addr: SocketAddr = redis.addr().parse().expect("redis address");
    let huge = b"*1\r\n$2147483648\r\n".as_slice();
    let auth = haproxy_rs::resp::encode_command(&["AUTH", PASSWORD]);
    for (input, want) in [
        (
            huge.to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            [&auth[..], huge].concat(),
            "+OK\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let (direct, proxied) = tokio::join!(
            until_closed(redis_addr, &input),
            until_closed(proxy.addr(), &input)
        );
        assert_eq!(direct, want, "redis-server's answer");
        assert_eq!(
            proxied, want,
            "the cluster-mode proxy answers as redis-server"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_redis_and_redis_cli_resp3_work_through_a_sentinel_mode_proxy() {
    let topo = Topology::start(1, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(requirepass)
        .start(1)
        .await;
    python(&proxy, topo.servers().map(RedisServer::addr).collect()).await;
    assert_redis_cli_resp3(&proxy).await;
    assert_raw_resp3(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_redis_redis_cli_resp3_and_auth_work_through_a_cluster_mode_proxy() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(requirepass)
        .start_cluster()
        .await;
    python(&proxy, cluster.addrs()).await;
    assert_redis_cli_resp3(&proxy).await;
    assert_raw_resp3(&proxy).await;
    assert_cluster_auth_policy_and_limits(&proxy).await;
}
