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
