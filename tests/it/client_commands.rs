//! The `CLIENT` subcommands with the proxy's own clients as their subject (issue 14 item 5):
//! `LIST`/`INFO` in Redis 7.0's format, `KILL`, `REPLY`, `UNBLOCK`, `PAUSE`/`UNPAUSE`, in Sentinel
//! and cluster mode, against real servers.

use tokio::net::TcpStream;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer, Topology};
use crate::security::send;

/// The text of a bulk-string reply frame (`$n\r\n...`).
fn bulk_text(frame: &str) -> String {
    frame
        .split_once("\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// `key=value` of a `CLIENT LIST` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The keys of a `CLIENT LIST` line, in order.
fn keys(line: &str) -> Vec<&str> {
    line.split(' ')
        .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
        .collect()
}

/// `CLIENT LIST [args]` on `s`: its lines.
async fn list(s: &mut TcpStream, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["CLIENT", "LIST"];
    cmd.extend_from_slice(args);
    let reply = send(s, &[&cmd]).await;
    bulk_text(&reply[0])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

async fn id_of(s: &mut TcpStream) -> String {
    send(s, &[&["CLIENT", "ID"]]).await[0]
        .trim_start_matches(':')
        .to_string()
}

/// Two tests of `check`, `<name>::sentinel_mode` and `<name>::cluster_mode`.
macro_rules! in_both_modes {
    ($name:ident, $check:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel_mode() {
                let (_topo, proxy) = super::sentinel_proxy().await;
                super::$check(&proxy).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_mode() {
                let (_cluster, proxy) = super::cluster_proxy().await;
                super::$check(&proxy).await;
            }
        }
    };
}
/// A proxy in front of a Sentinel-managed master with one replica.
async fn sentinel_proxy() -> (Topology, TestProxy) {
    let topo = Topology::builder().replicas(1).sentinels(1).start().await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    (topo, proxy)
}

/// A cluster-mode proxy in front of three masters.
async fn cluster_proxy() -> (Cluster, TestProxy) {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    (cluster, proxy)
}

async fn connect(proxy: &TestProxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.unwrap()
}

/// `CLIENT LIST`, `LIST TYPE`/`ID` and `INFO` show the proxy's clients, in Redis 7.0's format.
async fn lists_the_proxys_clients(proxy: &TestProxy) {
    let direct_line = {
        let server = RedisServer::start().await;
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        bulk_text(&send(&mut s, &[&["CLIENT", "INFO"]]).await[0])
    };
    let mut a = connect(proxy).await;
    let mut b = connect(proxy).await;
    let mut sub = connect(proxy).await;
    assert_eq!(
        send(&mut a, &[&["CLIENT", "SETNAME", "alpha"]]).await,
        ["+OK"]
    );
    let (ida, idb) = (id_of(&mut a).await, id_of(&mut b).await);
    let ids = id_of(&mut sub).await;
    send(&mut sub, &[&["SUBSCRIBE", "news"]]).await;

    let lines = list(&mut b, &[]).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| field(l, "id") == id)
            .cloned()
            .unwrap_or_else(|| panic!("client {id} not in {lines:?}"))
    };
    let (la, lb, ls) = (line_of(&ida), line_of(&idb), line_of(&ids));
    assert_eq!(keys(&la), keys(&direct_line), "{la}\n{direct_line}");
    assert_eq!(field(&la, "name"), "alpha");
    assert_eq!(field(&la, "cmd"), "client|id");
    assert_eq!(field(&la, "addr"), a.local_addr().unwrap().to_string());
    assert_eq!(field(&la, "laddr"), proxy.addr().to_string());
    assert_eq!(field(&la, "flags"), "N");
    assert_eq!(field(&lb, "cmd"), "client|list");
    assert_eq!(
        (field(&ls, "flags"), field(&ls, "sub"), field(&ls, "cmd")),
        ("P", "1", "subscribe")
    );

    assert_eq!(list(&mut b, &["TYPE", "pubsub"]).await, [ls]);
    assert_eq!(list(&mut b, &["TYPE", "normal"]).await.len(), 2);
    let by_id = list(&mut b, &["ID", &ida, "999999999"]).await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(field(&by_id[0], "id"), ida);
    assert_eq!(
        send(&mut b, &[&["CLIENT", "LIST", "TYPE", "foo"]]).await,
        ["-ERR Unknown client type 'foo'"]
    );
    // INFO is the client's own LIST line.
    let info = bulk_text(&send(&mut a, &[&["CLIENT", "INFO"]]).await[0]);
    let info = info.trim_end();
    assert_eq!(field(info, "id"), ida);
    assert_eq!(field(info, "cmd"), "client|info");
    assert_eq!(keys(info), keys(&la));
    // A client that leaves is no longer listed.
    drop(sub);
    crate::eventually!(
        std::time::Duration::from_secs(5),
        list(&mut b, &[]).await.len() == 2
    );
}

in_both_modes!(
    client_list_and_info_show_the_proxys_clients,
    lists_the_proxys_clients
);

/// `s` is closed by the proxy (soon), with nothing more to read.
async fn closed(s: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `CLIENT KILL` by `ID`, `ADDR`, `LADDR`, `USER`, `TYPE`, `SKIPME`, `MAXAGE` and the old form
/// ends the proxy's sessions, a blocked one among them.
async fn kills_the_proxys_clients(proxy: &TestProxy) {
    let mut me = connect(proxy).await;
    let mut a = connect(proxy).await;
    let ida = id_of(&mut a).await;
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "ID", &ida]]).await,
        [":1"]
    );
    assert!(closed(&mut a).await, "killed by id");
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "ID", &ida]]).await,
        [":0"]
    );
    assert_eq!(list(&mut me, &[]).await.len(), 1);

    // The old form: +OK, or Redis's error.
    let mut b = connect(proxy).await;
    id_of(&mut b).await;
    let addr = b.local_addr().unwrap().to_string();
    assert_eq!(send(&mut me, &[&["CLIENT", "KILL", &addr]]).await, ["+OK"]);
    assert!(closed(&mut b).await, "killed by the old form");
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", &addr]]).await,
        ["-ERR No such client"]
    );
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "ID", "0"]]).await,
        ["-ERR client-id should be greater than 0"]
    );
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "USER", "nobody"]]).await,
        ["-ERR No such user 'nobody'"]
    );

    // A subscriber by TYPE, a blocked client by ADDR.
    let mut sub = connect(proxy).await;
    send(&mut sub, &[&["SUBSCRIBE", "news"]]).await;
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "TYPE", "pubsub"]]).await,
        [":1"]
    );
    assert!(closed(&mut sub).await, "killed by type");
    let mut blocked = connect(proxy).await;
    let idb = id_of(&mut blocked).await;
    use tokio::io::AsyncWriteExt;
    blocked
        .write_all(&haproxy_rs::resp::encode_command(&[
            "BLPOP", "{q}kill", "0",
        ]))
        .await
        .unwrap();
    crate::eventually!(
        std::time::Duration::from_secs(5),
        field(&list(&mut me, &["ID", &idb]).await[0], "flags") == "b"
    );
    let addr = blocked.local_addr().unwrap().to_string();
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "ADDR", &addr]]).await,
        [":1"]
    );
    assert!(closed(&mut blocked).await, "a blocked client killed");

    // LADDR and USER, sparing the sender (SKIPME yes by default); MAXAGE names older ones only.
    let mut c = connect(proxy).await;
    let mut d = connect(proxy).await;
    id_of(&mut c).await;
    id_of(&mut d).await;
    let laddr = proxy.addr().to_string();
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "MAXAGE", "100000"]]).await,
        [":0"]
    );
    assert_eq!(
        send(
            &mut me,
            &[&["CLIENT", "KILL", "LADDR", &laddr, "USER", "default"]]
        )
        .await,
        [":2"]
    );
    assert!(closed(&mut c).await && closed(&mut d).await);
    // SKIPME no: the sender gets its count, then is closed.
    let idme = id_of(&mut me).await;
    assert_eq!(
        send(&mut me, &[&["CLIENT", "KILL", "ID", &idme, "SKIPME", "no"]]).await,
        [":1"]
    );
    assert!(closed(&mut me).await, "killed itself");
}

in_both_modes!(
    client_kill_ends_the_proxys_sessions,
    kills_the_proxys_clients
);

/// `CLIENT REPLY OFF|SKIP|ON` drops the replies Redis would not send, split commands' among them;
/// inside `MULTI` it is refused (the transaction with it).
async fn suppresses_replies(proxy: &TestProxy) {
    let mut s = connect(proxy).await;
    use tokio::io::AsyncWriteExt;
    let mut bytes = Vec::new();
    for c in [
        &["SET", "{r}x", "1"][..],
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "{r}y", "2"],
        &["GET", "{r}x"],
        &["MGET", "{r}x", "other"],
        &["DEL", "a", "b", "c"],
        &["CLIENT", "REPLY", "SKIP"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "{r}y"],
        &["CLIENT", "REPLY", "SKIP"],
        &["PING"],
        &["PING", "hi"],
    ] {
        bytes.extend_from_slice(&haproxy_rs::resp::encode_command(c));
    }
    s.write_all(&bytes).await.unwrap();
    assert_eq!(
        crate::harness::redis::read_replies(&mut s, 4).await,
        ["+OK", "+OK", "$1\r\n2", "$2\r\nhi"]
    );
    assert_eq!(
        send(
            &mut s,
            &[
                &["MULTI"],
                &["CLIENT", "REPLY", "OFF"],
                &["EXEC"],
                &["PING"]
            ]
        )
        .await,
        [
            "+OK",
            "-ERR haproxy-rs does not support 'CLIENT REPLY' inside a transaction",
            "-EXECABORT Transaction discarded because of previous errors.",
            "+PONG"
        ]
    );
}

in_both_modes!(
    client_reply_suppresses_the_sessions_replies,
    suppresses_replies
);

/// Sends `cmd` on `s` without reading its reply.
async fn start(s: &mut TcpStream, cmd: &[&str]) {
    use tokio::io::AsyncWriteExt;
    s.write_all(&haproxy_rs::resp::encode_command(cmd))
        .await
        .unwrap();
}

/// `CLIENT UNBLOCK id [reason]` (none when empty).
async fn unblock(me: &mut TcpStream, id: &str, reason: &str) -> Vec<String> {
    let mut cmd = vec!["CLIENT", "UNBLOCK", id];
    cmd.extend(Some(reason).filter(|r| !r.is_empty()));
    send(me, &[&cmd]).await
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` releases a client of the proxy blocked in `BLPOP` or
/// `XREAD BLOCK` with the command's timeout reply or `-UNBLOCKED`, as Redis does.
async fn unblocks_the_proxys_clients(proxy: &TestProxy) {
    use std::time::Duration;
    let mut me = connect(proxy).await;
    let mut b = connect(proxy).await;
    let id = id_of(&mut b).await;
    assert_eq!(unblock(&mut me, &id, "").await, [":0"], "not blocked");
    // (command, reason, what the blocked client gets)
    let cases: [(&[&str], &str, &str); 3] = [
        (&["BLPOP", "{u}q", "0"], "", "*-1"),
        (
            &["XREAD", "BLOCK", "0", "STREAMS", "{u}s", "$"],
            "ERROR",
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK",
        ),
        // RESP3 (below): its null.
        (&["BZPOPMIN", "{u}z", "0"], "TIMEOUT", "_"),
    ];
    for (i, (cmd, reason, got)) in cases.into_iter().enumerate() {
        if i == 2 {
            send(&mut b, &[&["HELLO", "3"]]).await;
        }
        start(&mut b, cmd).await;
        crate::eventually!(
            Duration::from_secs(5),
            unblock(&mut me, &id, reason).await == [":1"]
        );
        assert_eq!(crate::harness::redis::read_replies(&mut b, 1).await, [got]);
        // The client goes on.
        assert_eq!(send(&mut b, &[&["PING"]]).await, ["+PONG"]);
    }
    assert_eq!(
        send(
            &mut me,
            &[
                &["CLIENT", "UNBLOCK", "x"],
                &["CLIENT", "UNBLOCK", &id, "foo"],
                &["CLIENT", "UNBLOCK", "999999999"],
            ]
        )
        .await,
        [
            "-ERR value is not an integer or out of range",
            "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ":0"
        ]
    );
}

in_both_modes!(
    client_unblock_releases_a_blocked_client,
    unblocks_the_proxys_clients
);

/// Nothing arrives on `s` for a while.
async fn silent(s: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let wait = crate::harness::eventually::scaled(std::time::Duration::from_millis(300));
    tokio::time::timeout(wait, s.read(&mut buf)).await.is_err()
}

/// `CLIENT PAUSE WRITE` holds the proxy's clients' writes (`PUBLISH` too) while reads go on,
/// `CLIENT PAUSE ALL` every command, until `CLIENT UNPAUSE` or the timeout, as Redis does.
async fn pauses_the_proxys_clients(proxy: &TestProxy) {
    use std::time::{Duration, Instant};
    let mut a = connect(proxy).await;
    let mut b = connect(proxy).await;
    let mut c = connect(proxy).await;
    let idb = id_of(&mut b).await;
    assert_eq!(
        send(&mut a, &[&["CLIENT", "PAUSE", "60000", "WRITE"]]).await,
        ["+OK"]
    );
    assert_eq!(send(&mut b, &[&["GET", "{p}k"]]).await, ["$-1"]);
    start(&mut b, &["SET", "{p}k", "v"]).await;
    start(&mut c, &["PUBLISH", "ch", "m"]).await;
    assert!(silent(&mut b).await && silent(&mut c).await, "writes wait");
    assert_eq!(
        field(&list(&mut a, &["ID", &idb]).await[0], "flags"),
        "b",
        "a paused client shows as blocked"
    );
    assert_eq!(send(&mut a, &[&["GET", "{p}k"]]).await, ["$-1"]);
    assert_eq!(send(&mut a, &[&["CLIENT", "UNPAUSE"]]).await, ["+OK"]);
    assert_eq!(
        crate::harness::redis::read_replies(&mut b, 1).await,
        ["+OK"]
    );
    assert_eq!(crate::harness::redis::read_replies(&mut c, 1).await, [":0"]);

    // ALL: everything waits, the pausing client's own commands too, until the timeout.
    let since = Instant::now();
    assert_eq!(send(&mut a, &[&["CLIENT", "PAUSE", "500"]]).await, ["+OK"]);
    assert_eq!(send(&mut b, &[&["GET", "{p}k"]]).await, ["$1\r\nv"]);
    assert!(
        since.elapsed() >= Duration::from_millis(450),
        "a read waited"
    );
    assert_eq!(send(&mut a, &[&["PING"]]).await, ["+PONG"]);
    assert_eq!(
        send(
            &mut a,
            &[
                &["CLIENT", "PAUSE", "x"],
                &["CLIENT", "PAUSE", "10", "foo"],
                &["CLIENT", "PAUSE", "-1"],
                &["CLIENT", "UNPAUSE", "x"],
            ]
        )
        .await,
        [
            "-ERR timeout is not an integer or out of range",
            "-ERR CLIENT PAUSE mode must be WRITE or ALL",
            "-ERR timeout is negative",
            "-ERR wrong number of arguments for 'client|unpause' command"
        ]
    );
}

in_both_modes!(
    client_pause_holds_the_proxys_clients,
    pauses_the_proxys_clients
);
