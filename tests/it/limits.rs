//! Limits, Redis-style (issue 6, part 6): malformed input compared byte for byte with a real
//! redis-server 7.0, the idle client timeout and the client output buffer limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::eventually::scaled;
use crate::harness::proxy::ProxyBuilder;
use crate::harness::{Cluster, RedisServer};

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
        QUIET
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
    let both =
        |c: Case| async move { tokio::join!(observe(redis_addr, &c), observe(proxy_addr, &c)) };

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
