//! Client authentication, users' rules and the command policy, with real servers, in static and
//! cluster mode: raw RESP for the exact replies, the `redis` crate for what a real client does.

use haproxy_rs::config::{AuthConfig, Config, MaskedString, UserConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer, Topology};

const NOAUTH: &str = "-NOAUTH Authentication required.";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.";
const NOPERM_KEY: &str =
    "-NOPERM this user has no permissions to access one of the keys used as arguments";

fn noperm_cmd(name: &str) -> String {
    format!("-NOPERM this user has no permissions to run the '{name}' command")
}

fn topology_refusal(name: &str) -> String {
    format!("-ERR haproxy-rs: '{name}' is refused: it would change the topology behind the proxy (commands.refuse_topology_changes)")
}

fn deny_refusal(name: &str) -> String {
    format!("-ERR haproxy-rs: '{name}' is refused by the command policy (commands.deny)")
}

fn user(name: &str, password: &str, commands: &[&str], keys: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: MaskedString::new(password),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        channels: Vec::new(),
    }
}

/// `requirepass client-pw`, a user `app` limited to `app:*` without `@dangerous`, and a
/// read-only user `ro` whose password is given as a SHA-256 (`printf ro-pw | sha256sum`);
/// FLUSHALL denied.
fn secure(c: &mut Config) {
    c.auth = AuthConfig {
        requirepass: Some(MaskedString::new("client-pw")),
        users: vec![
            user("app", "app-pw", &["+@all", "-@dangerous"], &["~app:*"]),
            user(
                "ro",
                "#b1d0dcca2d13f5a2c5d6b3db68bb90b740ecebf9ede4b3bfa5c2cfc0852364f1",
                &["+@read"],
                &["~*"],
            ),
        ],
        ..AuthConfig::default()
    };
    c.commands.deny = vec!["flushall".into()];
}

/// Sends every command in one write on a new connection; the raw replies, in order.
pub(crate) async fn raw(addr: std::net::SocketAddr, commands: &[&[&str]]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(&mut s, commands).await
}

pub(crate) async fn send(s: &mut TcpStream, commands: &[&[&str]]) -> Vec<String> {
    let mut out = Vec::new();
    for c in commands {
        let args: Vec<String> = c.iter().map(|a| a.to_string()).collect();
        out.extend_from_slice(&haproxy_rs::resp::encode_command(&args));
    }
    s.write_all(&out).await.unwrap();
    read_replies(s, commands.len()).await
}

/// Sends `input` and reads until the proxy closes the connection (bounded).
pub(crate) async fn until_closed(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(input).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// A `redis` crate connection logged in with `user:password` (`resp3`: via `HELLO 3 AUTH`).
async fn login(
    proxy: &TestProxy,
    user: &str,
    password: &str,
    resp3: bool,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let url = format!("redis://{user}:{password}@{}/{proto}", proxy.addr());
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

pub(crate) async fn query<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_serves_nothing_before_auth_and_holds_users_to_their_rules() {
    let master = RedisServer::start().await;
    // The servers' password is the proxy's own (`[backend]`), not a client's.
    let mut admin = master.client().await;
    let _: () = query(&mut admin, &["CONFIG", "SET", "requirepass", "backend-pw"])
        .await
        .unwrap();
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| {
            c.backend.password = Some(MaskedString::new("backend-pw"));
            secure(c);
        })
        .start(0)
        .await;

    let replies = raw(
        proxy.addr(),
        &[
            &["GET", "k"],
            &["PING"],
            &["AUTH", "backend-pw"],
            &["AUTH", "wrong"],
            &["AUTH", "nosuch", "client-pw"],
            &["HELLO", "3"],
            &["AUTH", "client-pw"],
            &["SET", "k", "v"],
            &["GET", "k"],
            &["AUTH", "wrong"],
            &["GET", "k"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            NOAUTH,
            NOAUTH,
            WRONGPASS,
            WRONGPASS,
            WRONGPASS,
            "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            "+OK",
            "+OK",
            "$1\r\nv",
            WRONGPASS,
            "$1\r\nv",
        ]
    );

    // Redis's smaller limits before authentication; the usual ones after.
    assert_eq!(
        until_closed(proxy.addr(), b"*11\r\n").await,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert_eq!(
        until_closed(proxy.addr(), b"*2\r\n$3\r\nGET\r\n$16385\r\n").await,
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    let big = "x".repeat(20_000);
    let mset: Vec<&str> = std::iter::once("MSET")
        .chain((0..6).flat_map(|_| ["big", big.as_str()]))
        .collect();
    assert_eq!(
        raw(proxy.addr(), &[&["AUTH", "client-pw"], &mset]).await,
        ["+OK", "+OK"]
    );

    // Differential: the same streams get the same replies from Redis itself, whose own password
    // is set and which has the same `app` user.
    let _: () = query(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-pw",
            "~app:*",
            "+@all",
            "-@dangerous",
        ],
    )
    .await
    .unwrap();
    let direct: std::net::SocketAddr = master.addr().parse().unwrap();
    let streams: &[&[&[&str]]] = &[
        &[
            &["GET", "k"],
            &["PING"],
            &["GET"],
            &["AUTH", "wrong"],
            &["AUTH", "nosuch", "x"],
            &["AUTH", "a", "b", "c"],
            &["HELLO", "3"],
            &["HELLO", "3", "AUTH", "app", "wrong"],
        ],
        &[
            &["AUTH", "app", "app-pw"],
            &["SET", "app:0", "zero"],
            &["GET", "app:0"],
            &["GET", "k"],
            &["MGET", "app:0", "k"],
            &["KEYS", "*"],
            &["FLUSHDB"],
            &["CONFIG", "GET", "maxmemory"],
            &["ACL", "WHOAMI"],
            &["PUBLISH", "app:news", "m"],
            &["AUTH", "app", "wrong"],
            &["GET", "app:0"],
            &["RESET"],
            &["GET", "app:0"],
        ],
    ];
    for stream in streams {
        assert_eq!(raw(proxy.addr(), stream).await, raw(direct, stream).await);
    }
    for input in [&b"*11\r\n"[..], b"*2\r\n$3\r\nGET\r\n$16385\r\n"] {
        assert_eq!(
            until_closed(proxy.addr(), input).await,
            until_closed(direct, input).await
        );
    }

    // A user with rules, through the redis crate (AUTH user pass).
    let mut app = login(&proxy, "app", "app-pw", false).await.unwrap();
    let _: () = query(&mut app, &["SET", "app:1", "one"]).await.unwrap();
    let got: String = query(&mut app, &["GET", "app:1"]).await.unwrap();
    assert_eq!(got, "one");
    let err = query::<String>(&mut app, &["GET", "k"]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no permissions to access one of the keys"),
        "{err}"
    );
    let err = query::<()>(&mut app, &["FLUSHDB"]).await.unwrap_err();
    assert!(err.to_string().contains("'flushdb'"), "{err}");
    assert!(login(&proxy, "app", "wrong", false).await.is_err());

    // HELLO 3 AUTH user pass (the redis crate's RESP3 login), and a password given as SHA-256.
    let mut ro = login(&proxy, "ro", "ro-pw", true).await.unwrap();
    let got: String = query(&mut ro, &["GET", "k"]).await.unwrap();
    assert_eq!(got, "v");
    let err = query::<()>(&mut ro, &["SET", "k", "w"]).await.unwrap_err();
    assert!(err.to_string().contains("'set'"), "{err}");

    // The exact replies, raw: HELLO 3 AUTH, then the user's refusals and the policy's.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let hello = send(&mut s, &[&["HELLO", "3", "AUTH", "app", "app-pw"]]).await;
    assert!(
        hello[0].starts_with("%7\r\n") && hello[0].contains("proto\r\n:3"),
        "{hello:?}"
    );
    let replies = send(
        &mut s,
        &[
            &["GET", "app:1"],
            &["MGET", "app:1", "k"],
            &["KEYS", "*"],
            &["CONFIG", "GET", "maxmemory"],
            &["REPLICAOF", "NO", "ONE"],
            &["FLUSHALL"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            "$3\r\none".to_string(),
            NOPERM_KEY.to_string(),
            noperm_cmd("keys"),
            noperm_cmd("config|get"),
            topology_refusal("REPLICAOF"),
            deny_refusal("FLUSHALL"),
        ]
    );
    // Nothing of it reached the server.
    let role: Vec<redis::Value> = query(&mut admin, &["ROLE"]).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
    let n: u64 = query(&mut admin, &["DBSIZE"]).await.unwrap();
    assert!(n >= 2, "FLUSHALL must not have run: {n} keys");
}

fn lockout_refusal(what: &str, user: &str) -> String {
    format!("-ERR haproxy-rs: '{what}' is refused: it would change how the proxy logs in to the servers (user '{user}'); change it on the servers and in [backend] together (commands.refuse_proxy_lockout)")
}

/// `CONFIG SET requirepass` through a proxy without a `[backend]` password would leave every new
/// backend connection of the proxy unauthenticated, and every client after it failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_would_lock_the_proxy_out_of_its_servers_are_refused() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let replies = raw(
        proxy.addr(),
        &[
            &["CONFIG", "SET", "requirepass", "pw"],
            &["ACL", "SETUSER", "default", "on", ">pw"],
            &["ACL", "DELUSER", "default"],
            &["ACL", "SETUSER", "app", "on", ">app-pw", "~*", "+@all"],
            &["CONFIG", "SET", "maxmemory-samples", "6"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            lockout_refusal("CONFIG SET requirepass", "default"),
            lockout_refusal("ACL SETUSER", "default"),
            lockout_refusal("ACL DELUSER", "default"),
            "+OK".to_string(),
            "+OK".to_string(),
        ]
    );
    let mut direct = master.client().await;
    let pass: Vec<String> = query(&mut direct, &["CONFIG", "GET", "requirepass"])
        .await
        .unwrap();
    assert_eq!(pass, ["requirepass", ""]);
    let served = raw(proxy.addr(), &[&["SET", "k", "v"]]).await;
    assert_eq!(served, ["+OK"]);

    // Turned off, the command reaches the server (and the proxy is then locked out).
    let open = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| c.commands.refuse_proxy_lockout = false)
        .start(0)
        .await;
    let replies = raw(open.addr(), &[&["CONFIG", "SET", "requirepass", "pw"]]).await;
    assert_eq!(replies, ["+OK"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_auth_only_topology_changes_and_the_deny_list_are_refused() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| c.commands.deny = vec!["config|set".into(), "debug".into()])
        .start(0)
        .await;
    let replies = raw(
        proxy.addr(),
        &[
            &["SET", "k", "v"],
            &["GET", "k"],
            &["SLAVEOF", "127.0.0.1", "1"],
            &["FAILOVER"],
            &["SHUTDOWN", "NOSAVE"],
            &["CONFIG", "SET", "maxmemory", "1"],
            &["DEBUG", "SLEEP", "0"],
            &["CONFIG", "GET", "maxmemory"],
        ],
    )
    .await;
    assert_eq!(
        replies[..7],
        [
            "+OK".to_string(),
            "$1\r\nv".to_string(),
            topology_refusal("SLAVEOF"),
            topology_refusal("FAILOVER"),
            topology_refusal("SHUTDOWN"),
            deny_refusal("CONFIG SET"),
            deny_refusal("DEBUG"),
        ]
    );
    assert!(replies[7].starts_with("*2\r\n"), "{replies:?}");
    assert!(
        master.answers_ping().await,
        "SHUTDOWN never reached the server"
    );
    // A refused command spoils the transaction being queued, as in Redis: EXEC aborts and
    // nothing of it runs.
    let replies = raw(
        proxy.addr(),
        &[
            &["MULTI"],
            &["SET", "k", "changed"],
            &["DEBUG", "SLEEP", "0"],
            &["EXEC"],
            &["GET", "k"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            "+OK".to_string(),
            "+QUEUED".to_string(),
            deny_refusal("DEBUG"),
            "-EXECABORT Transaction discarded because of previous errors.".to_string(),
            "$1\r\nv".to_string(),
        ]
    );

    // An allowlist serves only what it names (and AUTH, HELLO, QUIT).
    let proxy = ProxyBuilder::servers(vec![master.addr()])
        .with(|c| c.commands.allow = vec!["get".into(), "ping".into()])
        .start(0)
        .await;
    let replies = raw(
        proxy.addr(),
        &[&["GET", "k"], &["SET", "k", "w"], &["PING"]],
    )
    .await;
    assert_eq!(
        replies,
        [
            "$1\r\nv",
            "-ERR haproxy-rs: 'SET' is refused by the command policy (not in commands.allow)",
            "+PONG",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_serves_nothing_before_auth_and_refuses_topology_changes() {
    let cluster = Cluster::start(3, 1).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(secure)
        .start_cluster()
        .await;
    let replies = raw(
        proxy.addr(),
        &[
            &["GET", "k"],
            &["AUTH", "app", "wrong"],
            &["AUTH", "app", "app-pw"],
            &["MSET", "app:1", "a", "app:2", "b", "app:3", "c"],
            &["MGET", "app:1", "app:2", "app:3"],
            &["MGET", "app:1", "other"],
            &["FLUSHDB"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            NOAUTH.to_string(),
            WRONGPASS.to_string(),
            "+OK".to_string(),
            "+OK".to_string(),
            "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc".to_string(),
            NOPERM_KEY.to_string(),
            noperm_cmd("flushdb"),
        ]
    );

    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let hello = send(&mut s, &[&["HELLO", "3", "AUTH", "default", "client-pw"]]).await;
    assert!(hello[0].starts_with("%7\r\n"), "{hello:?}");
    let replies = send(
        &mut s,
        &[
            &["CLUSTER", "FAILOVER"],
            &["cluster", "reset", "hard"],
            &["CLUSTER", "SETSLOT", "0", "STABLE"],
            &["CLUSTER", "FORGET", "abc"],
            &["REPLICAOF", "NO", "ONE"],
            &["FLUSHALL"],
            &["GET", "app:1"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            topology_refusal("CLUSTER FAILOVER"),
            topology_refusal("CLUSTER RESET"),
            topology_refusal("CLUSTER SETSLOT"),
            topology_refusal("CLUSTER FORGET"),
            topology_refusal("REPLICAOF"),
            deny_refusal("FLUSHALL"),
            "$1\r\na".to_string(),
        ]
    );
    // A refused command spoils the transaction being queued, as in Redis.
    let replies = send(
        &mut s,
        &[
            &["MULTI"],
            &["SET", "app:1", "changed"],
            &["FLUSHALL"],
            &["EXEC"],
            &["GET", "app:1"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            "+OK".to_string(),
            "+QUEUED".to_string(),
            deny_refusal("FLUSHALL"),
            "-EXECABORT Transaction discarded because of previous errors.".to_string(),
            "$1\r\na".to_string(),
        ]
    );
    assert!(cluster.all_ok().await, "the cluster is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_serves_nothing_before_auth_on_either_endpoint() {
    let topo = Topology::start(1, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo).with(secure).start(1).await;
    for addr in [proxy.addr(), proxy.read_addr()] {
        assert_eq!(raw(addr, &[&["GET", "k"]]).await, [NOAUTH]);
    }
    let replies = raw(
        proxy.addr(),
        &[
            &["AUTH", "app", "app-pw"],
            &["SET", "app:s", "v"],
            &["GET", "other"],
            &["REPLICAOF", "NO", "ONE"],
            &["FAILOVER"],
        ],
    )
    .await;
    assert_eq!(
        replies,
        [
            "+OK".to_string(),
            "+OK".to_string(),
            NOPERM_KEY.to_string(),
            topology_refusal("REPLICAOF"),
            topology_refusal("FAILOVER"),
        ]
    );
    let mut ro = TcpStream::connect(proxy.read_addr()).await.unwrap();
    let replies = send(
        &mut ro,
        &[&["HELLO", "3", "AUTH", "ro", "ro-pw"], &["SET", "k", "v"]],
    )
    .await;
    assert!(replies[0].starts_with("%7\r\n"), "{replies:?}");
    assert_eq!(replies[1], noperm_cmd("set"));
}
