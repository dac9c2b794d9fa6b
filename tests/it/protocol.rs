//! Malformed RESP: Redis's own error, then that connection closes; other clients keep working.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::RedisServer;

/// Sends `input` and reads until the proxy closes the connection (bounded).
async fn exchange(addr: std::net::SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(input).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the proxy closes the connection after a protocol error")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_resp_gets_a_protocol_error_and_only_that_connection_closes() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let mut bystander = proxy.client().await;

    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$4\r\nPING\r\n*x\r\n",
            "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n*1\r\n",
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            b"*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n",
            "+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            exchange(proxy.addr(), input).await,
            *want,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        let pong: String = redis::cmd("PING")
            .query_async(&mut bystander)
            .await
            .unwrap();
        assert_eq!(pong, "PONG", "other clients keep working");
    }
    let huge_inline = vec![b'a'; 70 * 1024];
    assert_eq!(
        exchange(proxy.addr(), &huge_inline).await,
        "-ERR Protocol error: too big inline request\r\n"
    );
    // Inline commands (telnet style) work.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"SET inline \"a b\"\r\nGET inline\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let mut got = Vec::new();
    while got.len() < b"+OK\r\n$3\r\na b\r\n".len() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$3\r\na b\r\n");
}

/// Reads from `s` until the bytes end with `tail` (bounded by 10 s).
async fn read_until_tail(s: &mut TcpStream, tail: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !buf.ends_with(tail) {
            let mut chunk = [0u8; 16 * 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed after {} bytes", buf.len());
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the whole reply within 10 s");
    buf
}

/// Issue 14, item 2: a Lua table that contains itself makes Redis answer about 8,000 nested
/// one-element arrays ending in `-ERR reached lua stack limit`. The client gets exactly Redis's
/// reply, and the shared backend connection it came on is not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_reply_reaches_the_client_whole_and_keeps_the_connection() {
    let master = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![master.addr()]).start(0).await;
    let script = haproxy_rs::resp::encode_command(&[
        "EVAL",
        "local a = {}; local b = {a}; a[1] = b; return a",
        "0",
    ]);
    let tail = b"-ERR reached lua stack limit\r\n";
    let mut direct = TcpStream::connect(master.addr()).await.unwrap();
    direct.write_all(&script).await.unwrap();
    let want = read_until_tail(&mut direct, tail).await;
    assert!(
        want.starts_with(b"*1\r\n*1\r\n") && want.len() > 1000 * 4,
        "Redis answers a deep reply: {} bytes",
        want.len()
    );

    let mut bystander = proxy.client().await;
    let () = redis::AsyncCommands::set(&mut bystander, "k", "v")
        .await
        .unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"GET k\r\n").await.unwrap();
    assert_eq!(read_until_tail(&mut c, b"v\r\n").await, b"$1\r\nv\r\n");
    let before = proxy_connections(&master).await;
    assert!(
        !before.is_empty(),
        "the proxy's pooled connections are named"
    );
    c.write_all(&script).await.unwrap();
    let got = read_until_tail(&mut c, tail).await;
    assert_eq!(got.len(), want.len(), "the same reply as from Redis");
    assert!(got == want, "the same bytes as from Redis");
    // The connection that carried it (and every client's requests on it) goes on: no new
    // connection reached the server.
    c.write_all(b"GET k\r\n").await.unwrap();
    assert_eq!(read_until_tail(&mut c, b"v\r\n").await, b"$1\r\nv\r\n");
    let v: String = redis::AsyncCommands::get(&mut bystander, "k")
        .await
        .unwrap();
    assert_eq!(v, "v");
    let after = proxy_connections(&master).await;
    assert!(
        before.iter().all(|id| after.contains(id)),
        "no backend connection was dropped: before {before:?}, after {after:?}"
    );
}

/// The ids of the proxy's pooled connections on `server` (named `haproxy-rs`).
async fn proxy_connections(server: &RedisServer) -> Vec<String> {
    let mut c = server.client().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.contains(" name=haproxy-rs "))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}
