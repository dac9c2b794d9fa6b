//! Limits, Redis-style (issue 6, part 6): malformed input compared byte for byte with a real
//! redis-server 7.0, the idle client timeout and the client output buffer limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::eventually::scaled;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer};
use haproxy_rs::stats::ListenerSnapshot;

/// Sent after each input: its reply proves the connection is still open and everything before it
/// was answered.
const MARKER: &[u8] = b"*2\r\n$4\r\nECHO\r\n$13\r\nlimits-marker\r\n";
const MARKER_REPLY: &[u8] = b"$13\r\nlimits-marker\r\n";

/// What a server did with an input stream.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// It replied this and closed the connection.
    Closed(String),
    /// It replied this and answered the marker sent after the input.
    Open(String),
    /// It replied this and then neither answered the marker nor closed (it waits for the rest of
    /// a request that the marker became part of).
    Waiting(String),
}

/// How long a case that leaves the server waiting is watched: silence can only be observed over a
/// window, so only the cases expected to wait use it.
const QUIET: Duration = Duration::from_millis(300);

/// Sends `input` (then the marker, in the same write, unless the case says not to) and watches
/// what comes back.
async fn observe(addr: SocketAddr, c: &Case) -> Outcome {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut stream = c.input.clone();
    if c.marker {
        stream.extend_from_slice(MARKER);
    }
    s.write_all(&stream).await.expect("write the input");
    let budget = if c.waits {
        scaled(QUIET)
    } else {
        scaled(Duration::from_secs(10))
    };
    let deadline = tokio::time::Instant::now() + budget;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Outcome::Waiting(text(&got)),
            // A reset (unread input when the server closed) counts as a close.
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed(text(&got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        if let Some(before) = got.strip_suffix(MARKER_REPLY) {
            return Outcome::Open(text(before));
        }
    }
}

/// A malformed (or unusual) input and what both servers are expected to do with it.
struct Case {
    name: &'static str,
    input: Vec<u8>,
    /// The server is expected to keep waiting for the rest of a request.
    waits: bool,
    /// Send the marker after the input (not when it would end an over-long line).
    marker: bool,
}

fn case(name: &'static str, input: &[u8]) -> Case {
    Case {
        name,
        input: input.to_vec(),
        waits: false,
        marker: true,
    }
}

fn cases() -> Vec<Case> {
    let mut all = vec![
        case("multibulk count not a number", b"*x\r\n"),
        case("multibulk count empty", b"*\r\n"),
        case("multibulk count with a plus sign", b"*+1\r\n"),
        case("multibulk count -0", b"*-0\r\n"),
        case("multibulk count 0 is skipped", b"*0\r\n"),
        case("multibulk count -1 is skipped", b"*-1\r\n"),
        case("multibulk count -100 is skipped", b"*-100\r\n"),
        // Redis 7.0 accepts up to INT_MAX (6.x stopped at 1024*1024); the marker then becomes
        // the first element and is refused for its `*`.
        case("multibulk count over 1024*1024", b"*1048577\r\n"),
        case("multibulk count over INT_MAX", b"*2147483648\r\n"),
        case("multibulk count over i64", b"*99999999999999999999\r\n"),
        case("bulk length not a number", b"*1\r\n$x\r\n"),
        case("bulk length negative", b"*1\r\n$-1\r\n"),
        case("bulk length empty", b"*1\r\n$\r\n"),
        case("bulk length 2^31", b"*1\r\n$2147483648\r\n"),
        case(
            "bulk length over proto-max-bulk-len",
            b"*1\r\n$536870913\r\n",
        ),
        case("element not a bulk", b"*1\r\n:1\r\n"),
        case("element is an array", b"*2\r\n*1\r\n"),
        case(
            "protocol error after a good command",
            b"*1\r\n$4\r\nPING\r\n*x\r\n",
        ),
        case(
            "bulk data not followed by CRLF (skipped unchecked)",
            b"*2\r\n$4\r\nECHO\r\n$2\r\nabXY",
        ),
        case(
            "count line ended by CR and any byte",
            b"*1\rX$4\r\nPING\r\n",
        ),
        case("inline unbalanced double quote", b"SET k \"abc\r\n"),
        case("inline unbalanced single quote", b"SET k 'abc\r\n"),
        case(
            "inline closing quote not followed by space",
            b"SET k \"a\"b\r\n",
        ),
        case(
            "inline quotes and escapes",
            b"ECHO \"a\\x41\\n\" 'b\\'c'\r\n",
        ),
        case("inline LF only", b"PING\n"),
        case("empty lines", b"\r\n\r\n\n"),
        case("blank line", b"  \t \r\n"),
        case("empty command name", b"*1\r\n$0\r\n\r\n"),
        case("unknown command", b"*2\r\n$6\r\nNOSUCH\r\n$1\r\na\r\n"),
        case("unknown inline command", b"nosuch a b\r\n"),
        case("wrong arity", b"*1\r\n$3\r\nGET\r\n"),
        case("wrong arity inline", b"GET a b\r\n"),
        case("ping with two arguments", b"PING a b\r\n"),
        case(
            "quit stops the pipeline",
            b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
        ),
        case("inline quit", b"QUIT\r\nPING\r\n"),
    ];
    // Exactly one byte over PROTO_INLINE_MAX_SIZE and no marker: Redis checks the limit only when
    // a read leaves no line end in its buffer, so a marker's newline arriving in the same read
    // would let the line through as a command. The whole input is read before the check fires,
    // so both close cleanly (no unread input, no reset).
    let over = |name, mut input: Vec<u8>| {
        input.resize(input.len() + 64 * 1024 + 1, b'1');
        Case {
            name,
            input,
            waits: false,
            marker: false,
        }
    };
    all.push(over("inline line over 64 KiB", Vec::new()));
    all.push(over("multibulk count line over 64 KiB", b"*".to_vec()));
    all.push(over("bulk count line over 64 KiB", b"*1\r\n$".to_vec()));
    all.push(Case {
        // Declared only: the marker becomes part of the 512 MiB argument.
        name: "bulk length at proto-max-bulk-len waits for the data",
        input: b"*1\r\n$536870912\r\n".to_vec(),
        waits: true,
        marker: true,
    });
    all.push(Case {
        name: "incomplete multibulk waits",
        input: b"*3\r\n$3\r\nSET\r\n".to_vec(),
        waits: true,
        marker: true,
    });
    all
}

/// Runs every case against `redis` and `proxy` side by side; one line per difference.
async fn differences(redis: SocketAddr, proxy: SocketAddr) -> Vec<String> {
    let mut found = Vec::new();
    for c in cases() {
        let (direct, proxied) = tokio::join!(observe(redis, &c), observe(proxy, &c));
        if direct != proxied {
            found.push(format!(
                "{}:\n  redis: {direct:?}\n  proxy: {proxied:?}",
                c.name
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_the_same_replies_and_close_as_redis() {
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()]).start(0).await;
    let redis_addr: SocketAddr = redis.addr().parse().expect("redis address");
    let found = differences(redis_addr, proxy.addr()).await;
    assert!(
        found.is_empty(),
        "the proxy differs from redis-server:\n{}",
        found.join("\n")
    );
}

/// The cluster-mode session has its own input loop: the same cases, compared with a standalone
/// redis-server (none of them touches a key, so no node would answer `MOVED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_in_cluster_mode_gets_the_same_replies_and_close_as_redis() {
    let redis = RedisServer::start().await;
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster).start_cluster().await;
    let redis_addr: SocketAddr = redis.addr().parse().expect("redis address");
    let found = differences(redis_addr, proxy.addr()).await;
    assert!(
        found.is_empty(),
        "the cluster-mode proxy differs from redis-server:\n{}",
        found.join("\n")
    );
}

/// Where the proxy deliberately answers differently from redis-server, each pinned on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_differences_from_redis() {
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()]).start(0).await;
    let redis_addr: SocketAddr = redis.addr().parse().expect("redis address");
    let proxy_addr = proxy.addr();
    // Redis is watched over the quiet window (it waits); the proxy, which answers or closes, is
    // given the full deadline so a slow machine cannot make it look like it waits.
    let both = |c: Case| async move {
        let answers = Case {
            name: c.name,
            input: c.input.clone(),
            waits: false,
            marker: c.marker,
        };
        tokio::join!(observe(redis_addr, &c), observe(proxy_addr, &answers))
    };

    // A NUL in a line: Redis looks for the line end with strchr(), which stops at the NUL, so it
    // waits for more input until 64 KiB have piled up. The proxy ends the line at the NUL as
    // sdssplitargs does (inline) or reads the count up to the CR and refuses it (multibulk):
    // answering at once is better than stalling the client.
    let mut c = case("NUL in an inline command", b"PING\0\r\n");
    c.waits = true;
    let (direct, proxied) = both(c).await;
    assert_eq!(direct, Outcome::Waiting(String::new()));
    assert_eq!(proxied, Outcome::Open("+PONG\r\n".into()));
    let mut c = case("NUL in a count line", b"*1\0\r\n$4\r\nPING\r\n");
    c.waits = true;
    let (direct, proxied) = both(c).await;
    assert_eq!(direct, Outcome::Waiting(String::new()));
    assert_eq!(
        proxied,
        Outcome::Closed("-ERR Protocol error: invalid multibulk length\r\n".into())
    );

    // A line longer than 64 KiB that arrives with its newline: Redis checks the limit only when
    // a read leaves no newline in its buffer, so whether such a line runs depends on how the
    // reads were split (here it arrives in one write and runs). The proxy refuses any line over
    // 64 KiB, whatever the read splits: deterministic, and the same limit Redis documents.
    let mut long = b"nosuch ".to_vec();
    long.resize(70 * 1024, b'a');
    long.extend_from_slice(b"\r\n");
    let mut c = case("inline line over 64 KiB with its newline", &long);
    c.marker = false;
    c.waits = true;
    let (direct, proxied) = both(c).await;
    assert!(
        matches!(&direct, Outcome::Waiting(r) if r.starts_with("-ERR unknown command 'nosuch'")),
        "{direct:?}"
    );
    assert_eq!(
        proxied,
        Outcome::Closed("-ERR Protocol error: too big inline request\r\n".into())
    );
}

/// The listener counters of the proxy's read/write endpoint.
pub(crate) fn main_listener(proxy: &TestProxy) -> ListenerSnapshot {
    proxy
        .proxy
        .stats
        .snapshot()
        .listeners
        .into_iter()
        .find(|l| l.name == "main")
        .expect("the main listener's stats")
}

/// Reads until the peer closes (true) or `within` passes (false); replies are discarded.
pub(crate) async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + scaled(within);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends a command and returns its reply (bounded).
pub(crate) async fn roundtrip(s: &mut TcpStream, cmd: &[u8]) -> String {
    s.write_all(cmd).await.expect("write");
    crate::harness::redis::read_replies(s, 1)
        .await
        .pop()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_silently_like_redis_timeout() {
    // The proxy's backend has no `timeout`: Redis would close the proxy's idle backend
    // connections too.
    let redis = RedisServer::start().await;
    let redis_with_timeout = RedisServer::start_with("timeout 1\n").await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()])
        .with(|c| {
            c.client_timeout_secs = 1;
            // The health checks must not give up on the server busy with the script below.
            c.backend.connect_timeout_ms = 5000;
        })
        .start(0)
        .await;
    for addr in [redis_with_timeout.addr(), proxy.addr().to_string()] {
        let mut idle = TcpStream::connect(&addr).await.expect("connect");
        assert_eq!(roundtrip(&mut idle, b"PING\r\n").await, "+PONG");
        // Redis checks in its cron, so allow a few seconds; nothing is sent before the close.
        let mut got = Vec::new();
        let read = tokio::time::timeout(scaled(Duration::from_secs(5)), idle.read_to_end(&mut got));
        assert!(
            matches!(read.await, Ok(Ok(0))),
            "{addr}: the idle client is closed"
        );
        assert!(got.is_empty(), "{addr}: closed without a reply: {got:?}");
    }
    assert_eq!(main_listener(&proxy).idle_timeouts, 1);

    // A client waiting for a reply is not idle: a script that keeps the server busy for 2 s
    // (twice the timeout) still gets its answer through the proxy.
    let mut busy = TcpStream::connect(proxy.addr()).await.expect("connect");
    let script =
        "local s = redis.call('TIME')[1] while redis.call('TIME')[1] - s < 2 do end return 1";
    let eval = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n",
        script.len()
    );
    assert_eq!(roundtrip(&mut busy, eval.as_bytes()).await, ":1");
    assert!(closed_within(&mut busy, Duration::from_secs(5)).await);
    assert_eq!(main_listener(&proxy).idle_timeouts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_max_clients_gets_redis_error_and_eof_and_the_slot_frees() {
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()])
        .with(|c| c.max_clients = 2)
        .start(0)
        .await;
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
    for s in [&mut a, &mut b] {
        assert_eq!(roundtrip(s, b"PING\r\n").await, "+PONG");
    }
    // The third is accepted, told so in Redis's words, and closed (never left in the backlog).
    let mut third = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut got = Vec::new();
    let read = tokio::time::timeout(scaled(Duration::from_secs(5)), third.read_to_end(&mut got));
    assert!(
        matches!(read.await, Ok(Ok(_))),
        "the third client is closed"
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    assert_eq!(main_listener(&proxy).rejected_connections, 1);
    let (_, metrics) = crate::stats_http::get(proxy.stats_addr(), "/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("haproxy_rs_listener_rejected_connections_total{")
                && l.contains("main")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    // The two admitted clients are still served.
    assert_eq!(roundtrip(&mut b, b"PING\r\n").await, "+PONG");

    // Once one of them leaves, a new client is served.
    drop(a);
    eventually!(Duration::from_secs(5), {
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"PING\r\n").await.expect("write");
        let mut buf = [0u8; 64];
        matches!(c.read(&mut buf).await, Ok(n) if buf.get(..n) == Some(&b"+PONG\r\n"[..]))
    });
    assert_eq!(roundtrip(&mut b, b"PING\r\n").await, "+PONG");
}

/// Sets the key `big` to `len` bytes, directly on `redis`.
pub(crate) async fn set_big(redis: &RedisServer, len: usize) {
    let mut setter = redis.client().await;
    let () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'v'; len])
        .query_async(&mut setter)
        .await
        .expect("SET big");
}

/// Resident memory of this process (the proxy runs in it), from /proc/self/status.
pub(crate) fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected_at_the_output_buffer_limit() {
    const VALUE: usize = 1 << 20;
    const LIMIT: usize = 8 << 20;
    const PIPELINE: usize = 32;
    const GETS: usize = 1000;
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()])
        .with(|c| {
            c.client_output_buffer_limit_bytes = LIMIT;
            c.max_pipeline = PIPELINE;
        })
        .start(0)
        .await;
    set_big(&redis, VALUE).await;

    // A client that reads gets a pipeline of the big value (more than the limit in all).
    let mut reader = TcpStream::connect(proxy.addr()).await.expect("connect");
    reader
        .write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(4))
        .await
        .expect("write");
    let replies = crate::harness::redis::read_replies(&mut reader, 4).await;
    assert!(replies.iter().all(|r| r.len() > VALUE), "4 whole values");

    // 1000 GETs of 1 MiB (1 GiB of replies) that the client never reads.
    let rss_before = rss_bytes();
    let mut sink = TcpStream::connect(proxy.addr()).await.expect("connect");
    sink.write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(GETS))
        .await
        .expect("write the pipeline");
    crate::eventually!(
        Duration::from_secs(20),
        {
            // The peak is recorded when the session has ended, just after the disconnection.
            let l = main_listener(&proxy);
            l.output_buffer_limit_disconnections == 1 && l.output_buffer_peak_bytes > 0
        },
        "the client is disconnected: {:?}",
        main_listener(&proxy)
    );
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let peak = main_listener(&proxy).output_buffer_peak_bytes as usize;
    // Behind the limit, at most the replies of one pipeline's worth of requests arrive at once.
    let bound = LIMIT + PIPELINE * (VALUE + 64);
    assert!(
        (LIMIT..=bound).contains(&peak),
        "peak backlog {peak} bytes, bound {bound}"
    );
    // RSS covers the whole test binary (other tests run alongside), so the bound is loose; the
    // peak above is the exact measure. Unbounded, it would be the whole GiB.
    assert!(
        rss_growth < 512 << 20,
        "the proxy's memory grew by {rss_growth} bytes for 1 GiB of unread replies"
    );
    assert!(
        closed_within(&mut sink, Duration::from_secs(5)).await,
        "the connection is closed"
    );
    // Other clients are unaffected.
    assert_eq!(roundtrip(&mut reader, b"PING\r\n").await, "+PONG");
}

/// The cluster-mode session has its own loop: the same two limits there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_closes_idle_clients_and_ones_that_do_not_read() {
    const VALUE: usize = 1 << 20;
    const LIMIT: usize = 8 << 20;
    const PIPELINE: usize = 32;
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| {
            c.client_timeout_secs = 1;
            c.client_output_buffer_limit_bytes = LIMIT;
            c.max_pipeline = PIPELINE;
        })
        .start_cluster()
        .await;
    let mut idle = TcpStream::connect(proxy.addr()).await.expect("connect");
    let set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${VALUE}\r\n");
    let mut request = set.into_bytes();
    request.resize(request.len() + VALUE, b'v');
    request.extend_from_slice(b"\r\n");
    assert_eq!(roundtrip(&mut idle, &request).await, "+OK");
    let mut got = Vec::new();
    let read = tokio::time::timeout(scaled(Duration::from_secs(5)), idle.read_to_end(&mut got));
    assert!(matches!(read.await, Ok(Ok(0))), "the idle client is closed");
    assert_eq!(main_listener(&proxy).idle_timeouts, 1);

    let mut sink = TcpStream::connect(proxy.addr()).await.expect("connect");
    sink.write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000))
        .await
        .expect("write the pipeline");
    crate::eventually!(
        Duration::from_secs(20),
        {
            // The peak is recorded when the session has ended, just after the disconnection.
            let l = main_listener(&proxy);
            l.output_buffer_limit_disconnections == 1 && l.output_buffer_peak_bytes > 0
        },
        "the client is disconnected: {:?}",
        main_listener(&proxy)
    );
    let peak = main_listener(&proxy).output_buffer_peak_bytes as usize;
    let bound = LIMIT + PIPELINE * (VALUE + 64);
    assert!(
        (LIMIT..=bound).contains(&peak),
        "peak backlog {peak} bytes, bound {bound}"
    );
    assert!(closed_within(&mut sink, Duration::from_secs(5)).await);
}

/// Over TLS the session writes through the TLS session (and flushes what it holds): the same
/// limits hold for a TLS client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_get_the_same_idle_timeout_and_output_buffer_limit() {
    use crate::harness::tls::{exchange, tls_connect, Pki};
    const VALUE: usize = 1 << 20;
    const LIMIT: usize = 8 << 20;
    let pki = Pki::new();
    let redis = RedisServer::start().await;
    let mut cfg = haproxy_rs::config::Config {
        servers: vec![redis.addr()],
        client_timeout_secs: 1,
        client_output_buffer_limit_bytes: LIMIT,
        max_pipeline: 32,
        ..haproxy_rs::config::Config::default()
    };
    cfg.tls = Some(haproxy_rs::config::TlsConfig {
        cert_file: pki.file("server.pem"),
        key_file: pki.file("server.key"),
        ca_file: None,
        client_auth: false,
        handshake_timeout_ms: 2000,
    });
    let proxy = ProxyBuilder::from_config(cfg).start(0).await;
    let addr = proxy.addr().to_string();
    let mut idle = tls_connect(&addr, pki.client_config(None))
        .await
        .expect("TLS handshake");
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${VALUE}\r\n").into_bytes();
    set.resize(set.len() + VALUE, b'v');
    set.extend_from_slice(b"\r\n");
    let reply = exchange(&mut idle, &set, 5).await.expect("SET over TLS");
    assert_eq!(reply, b"+OK\r\n");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(scaled(Duration::from_secs(5)), idle.read_to_end(&mut rest));
    assert!(
        matches!(read.await, Ok(Ok(_)) | Ok(Err(_))),
        "the idle TLS client is closed"
    );
    assert!(rest.is_empty(), "closed without a reply: {rest:?}");
    assert_eq!(main_listener(&proxy).idle_timeouts, 1);

    let mut sink = tls_connect(&addr, pki.client_config(None))
        .await
        .expect("TLS handshake");
    sink.write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000))
        .await
        .expect("write the pipeline");
    sink.flush().await.expect("flush the pipeline");
    crate::eventually!(
        Duration::from_secs(20),
        {
            // The peak is recorded when the session has ended, just after the disconnection.
            let l = main_listener(&proxy);
            l.output_buffer_limit_disconnections == 1 && l.output_buffer_peak_bytes > 0
        },
        "the TLS client is disconnected: {:?}",
        main_listener(&proxy)
    );
    let peak = main_listener(&proxy).output_buffer_peak_bytes as usize;
    assert!(peak <= LIMIT + 32 * (VALUE + 64), "peak backlog {peak}");
}
