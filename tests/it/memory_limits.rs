//! Bounded client memory, as Redis bounds it (issue 12, part 3): the query buffer of each
//! client, the cluster-mode transaction queue, and the replies waiting for all clients together.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::eventually::scaled;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::{Cluster, RedisServer};
use crate::limits::{closed_within, main_listener, roundtrip, rss_bytes, set_big};
use haproxy_rs::config::ByteSize;

const QUERY_LIMIT: u64 = 1 << 20;
/// Sent at a client that the proxy should have closed long before: unbounded, the proxy would
/// hold all of it.
const STREAMED: usize = 256 << 20;

/// Writes `head`, then filler bytes (`chunk` again and again) until `STREAMED` bytes or the
/// proxy closes; returns what the client read back and how much it sent.
async fn stream_until_closed(s: &mut TcpStream, head: &[u8], chunk: &[u8]) -> (Vec<u8>, usize) {
    let mut sent = 0;
    if s.write_all(head).await.is_ok() {
        sent += head.len();
        let filler = chunk.repeat((64 << 10) / chunk.len());
        while sent < STREAMED {
            let write = tokio::time::timeout(scaled(Duration::from_secs(10)), s.write_all(&filler));
            match write.await {
                Ok(Ok(())) => sent += filler.len(),
                // Closed (reset), or the proxy stopped reading.
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + scaled(Duration::from_secs(5));
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (got, sent)
}

/// Checks that `/stats.json` (`json_field`) and `/metrics` (`metric`) show `want` for the
/// main listener.
async fn assert_published(proxy: &TestProxy, json_field: &str, metric: &str, want: u64) {
    let (_, json) = crate::stats_http::get(proxy.stats_addr(), "/stats.json").await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let from_json = v["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "main"))
        .and_then(|l| l[json_field].as_u64());
    assert_eq!(from_json, Some(want), "{json_field} in /stats.json: {json}");
    let (_, metrics) = crate::stats_http::get(proxy.stats_addr(), "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("haproxy_rs_{metric}{{")) && l.contains("\"main\""))
        .unwrap_or_else(|| panic!("{metric} in /metrics: {metrics}"));
    assert!(line.ends_with(&format!(" {want}")), "{line}");
}

/// Sends `head` then `chunk` over and over at `proxy`: the client must be closed without a
/// reply once its incomplete request passes the limit, the proxy's memory must not follow
/// what was sent, and the counter must show it.
async fn assert_query_buffer_limit(proxy: &TestProxy, head: &[u8], chunk: &[u8]) {
    let mut other = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(roundtrip(&mut other, b"PING\r\n").await, "+PONG");
    let rss_before = rss_bytes();
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (got, sent) = stream_until_closed(&mut s, head, chunk).await;
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    eprintln!("query buffer limit: sent {sent} bytes before the close, RSS grew by {rss_growth}");
    assert!(
        got.is_empty(),
        "closed without a reply, got {:?}",
        String::from_utf8_lossy(&got)
    );
    // The exact bound: the proxy cannot hold more than it was sent, and it closed the client
    // after the limit plus what the sockets' buffers take (a few MiB on loopback). Unbounded,
    // it takes all of STREAMED.
    assert!(
        sent < 32 << 20,
        "the proxy closed the client only after {sent} bytes"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "closed"
    );
    // RSS is the whole test binary's, and other tests run alongside (+143 MiB seen from them
    // under `cargo test`): only a loose check, which an unbounded buffer still fails, as it
    // holds all of STREAMED at this point.
    assert!(
        rss_growth < STREAMED as u64,
        "the proxy's memory grew by {rss_growth} bytes for a {QUERY_LIMIT}-byte limit"
    );
    crate::eventually!(
        Duration::from_secs(5),
        main_listener(proxy).query_buffer_limit_disconnections == 1,
        "counted: {:?}",
        main_listener(proxy)
    );
    assert_published(
        proxy,
        "query_buffer_limit_disconnections",
        "listener_query_buffer_limit_disconnections_total",
        1,
    )
    .await;
    // The other client is unaffected.
    assert_eq!(roundtrip(&mut other, b"PING\r\n").await, "+PONG");
}

/// A declared bulk within `proto-max-bulk-len` (512 MiB, so that limit does not trip) whose
/// bytes never end: Redis's query buffer limit closes it, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_bulk_past_client_query_buffer_limit_is_closed_without_a_reply() {
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()])
        .with(|c| c.client_query_buffer_limit = ByteSize(QUERY_LIMIT))
        .start(0)
        .await;
    assert_query_buffer_limit(&proxy, b"*1\r\n$536870912\r\n", b"x").await;
}

/// The cluster-mode session shares the parser, and so the limit: here a multibulk of
/// `INT_MAX` small arguments that never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_closes_a_client_whose_endless_multibulk_passes_the_query_buffer_limit() {
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.client_query_buffer_limit = ByteSize(QUERY_LIMIT))
        .start_cluster()
        .await;
    assert_query_buffer_limit(&proxy, b"*2147483647\r\n", b"$1\r\na\r\n").await;
}

/// `MULTI`, `cmds`, `EXEC` in one write; the replies of all of them, as raw frames.
async fn transaction(s: &mut TcpStream, cmds: &[Vec<String>]) -> Vec<String> {
    let mut wire = haproxy_rs::resp::encode_command(&["MULTI"]).to_vec();
    for c in cmds {
        wire.extend_from_slice(&haproxy_rs::resp::encode_command(c));
    }
    wire.extend_from_slice(&haproxy_rs::resp::encode_command(&["EXEC"]));
    s.write_all(&wire).await.expect("write the transaction");
    crate::harness::redis::read_replies(s, cmds.len() + 2).await
}

fn sets(prefix: &str, n: usize, value: &str) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| vec!["SET".into(), format!("{{tx}}{prefix}:{i}"), value.into()])
        .collect()
}

/// The proxy queues a cluster-mode transaction itself: past `cluster.max_multi_commands` or
/// `cluster.max_multi_bytes` the command gets an error, `EXEC` answers `-EXECABORT` and nothing
/// of the transaction reaches a node, as Redis aborts on a command that fails to queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_transaction_past_its_bounds_aborts_and_nothing_of_it_runs() {
    const COMMANDS: usize = 10;
    const BYTES: u64 = 64 << 10;
    let cluster = Cluster::start(3, 0).await;
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| {
            let cluster = c.cluster.as_mut().expect("cluster mode");
            cluster.max_multi_commands = COMMANDS;
            cluster.max_multi_bytes = ByteSize(BYTES);
        })
        .start_cluster()
        .await;
    let map = cluster.slot_map().await;
    let node = cluster.owner(&map, "{tx}");
    let mut direct = node.client().await;
    let exists = |prefix: &'static str, n: usize| {
        let keys: Vec<String> = (0..n).map(|i| format!("{{tx}}{prefix}:{i}")).collect();
        redis::cmd("EXISTS").arg(keys).to_owned()
    };
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");

    // At the bound: it runs whole.
    let replies = transaction(&mut s, &sets("under", COMMANDS, "v")).await;
    assert_eq!(replies.first().map(String::as_str), Some("+OK"));
    assert!(
        replies[1..=COMMANDS].iter().all(|r| r == "+QUEUED"),
        "{replies:?}"
    );
    assert!(replies[COMMANDS + 1].starts_with("*10"), "{replies:?}");
    let n: usize = exists("under", COMMANDS)
        .query_async(&mut direct)
        .await
        .expect("EXISTS");
    assert_eq!(n, COMMANDS);

    // One command too many.
    let replies = transaction(&mut s, &sets("count", COMMANDS + 2, "v")).await;
    assert_eq!(
        replies[COMMANDS + 1],
        format!("-ERR haproxy-rs: transaction too large (cluster.max_multi_commands = {COMMANDS}); EXEC will abort")
    );
    assert_eq!(
        replies[COMMANDS + 2],
        "+QUEUED",
        "later commands queue, as in Redis"
    );
    assert_eq!(
        replies.last().map(String::as_str),
        Some("-EXECABORT Transaction discarded because of previous errors.")
    );
    let n: usize = exists("count", COMMANDS + 2)
        .query_async(&mut direct)
        .await
        .expect("EXISTS");
    assert_eq!(n, 0, "nothing of the aborted transaction ran");

    // Too many bytes: two values of 40 KiB against 64 KiB.
    let big = "b".repeat(40 << 10);
    let replies = transaction(&mut s, &sets("bytes", 2, &big)).await;
    assert_eq!(replies[1], "+QUEUED");
    assert_eq!(
        replies[2],
        format!("-ERR haproxy-rs: transaction too large (cluster.max_multi_bytes = {BYTES}); EXEC will abort")
    );
    assert_eq!(
        replies[3],
        "-EXECABORT Transaction discarded because of previous errors."
    );
    let n: usize = exists("bytes", 2)
        .query_async(&mut direct)
        .await
        .expect("EXISTS");
    assert_eq!(n, 0);

    // The connection goes on, and so do transactions under the bounds.
    let replies = transaction(&mut s, &sets("after", 2, "v")).await;
    assert!(replies[3].starts_with("*2"), "{replies:?}");
    assert_eq!(main_listener(&proxy).transactions_too_large, 2);
    assert_published(
        &proxy,
        "transactions_too_large",
        "listener_transactions_too_large_total",
        2,
    )
    .await;
}

/// Clients that pipeline big `GET`s and never read pile up replies in the proxy; past
/// `max_output_bytes_total` the largest are disconnected first, until the total is under it,
/// while a client with a smaller backlog and one that reads keep working (Redis 7's
/// `maxmemory-clients` evicts the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_output_bytes_total_the_largest_backlogs_are_disconnected_first() {
    const VALUE: usize = 256 << 10;
    const TOTAL: u64 = 32 << 20;
    const MEDIUM_GETS: usize = 32; // 8 MiB: under the total, never the largest
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()])
        .with(|c| c.max_output_bytes_total = haproxy_rs::config::MemoryLimit::Bytes(TOTAL))
        .start(0)
        .await;
    set_big(&redis, VALUE).await;
    let get_big = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    let mut small = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(roundtrip(&mut small, b"SET small 1\r\n").await, "+OK");

    let mut medium = TcpStream::connect(proxy.addr()).await.expect("connect");
    medium
        .write_all(&get_big.repeat(MEDIUM_GETS))
        .await
        .expect("write the medium pipeline");
    // 1000 GETs each (250 MiB, under the per-client limit of 256 MiB): only the total stops them.
    let mut big = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        s.write_all(&get_big.repeat(1000))
            .await
            .expect("write the big pipeline");
        big.push(s);
    }
    crate::eventually!(
        Duration::from_secs(20),
        {
            // The small client keeps working meanwhile.
            assert_eq!(roundtrip(&mut small, b"GET small\r\n").await, "$1\r\n1");
            main_listener(&proxy).output_total_limit_disconnections == 2
        },
        "both big clients are disconnected: {:?}",
        main_listener(&proxy)
    );
    for s in &mut big {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a big client is closed"
        );
    }
    // The medium client was never the largest: it is served whole once it reads.
    let replies = crate::harness::redis::read_replies(&mut medium, MEDIUM_GETS).await;
    assert_eq!(replies.len(), MEDIUM_GETS);
    assert!(replies.iter().all(|r| r.len() > VALUE), "whole values");
    assert_eq!(roundtrip(&mut medium, b"PING\r\n").await, "+PONG");
    assert_eq!(roundtrip(&mut small, b"PING\r\n").await, "+PONG");
    let l = main_listener(&proxy);
    assert_eq!(
        l.output_buffer_limit_disconnections, 0,
        "the per-client limit never tripped"
    );
    assert_eq!(l.output_total_limit_disconnections, 2);
    assert_published(
        &proxy,
        "output_total_limit_disconnections",
        "listener_output_total_limit_disconnections_total",
        2,
    )
    .await;
    // Every backlog is accounted for again once the clients are gone.
    drop(medium);
    drop(small);
    let budget = proxy.proxy.output_budget.as_ref().expect("a budget");
    crate::eventually!(
        Duration::from_secs(5),
        budget.total() == 0,
        "total {}",
        budget.total()
    );
}

/// Subscriber mode reads requests ahead of the one it works on only up to 64 KiB, but one
/// request larger than that must still be read whole (it stalled forever before: the read-ahead
/// cap was its only bound; `client_query_buffer_limit` bounds it now). Redis answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_client_can_send_one_command_larger_than_the_read_ahead() {
    const CHANNELS: usize = 10_000; // about 200 KiB of SUBSCRIBE
    let redis = RedisServer::start().await;
    let proxy = ProxyBuilder::servers(vec![redis.addr()]).start(0).await;
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let first = roundtrip(&mut s, b"SUBSCRIBE first\r\n").await;
    assert!(first.ends_with(":1"), "{first}");
    let mut args = vec!["SUBSCRIBE".to_string()];
    args.extend((0..CHANNELS).map(|i| format!("channel-{i:06}")));
    s.write_all(&haproxy_rs::resp::encode_command(&args))
        .await
        .expect("write the SUBSCRIBE");
    let confirmations = crate::harness::redis::read_replies(&mut s, CHANNELS).await;
    assert_eq!(confirmations.len(), CHANNELS);
    assert!(
        confirmations
            .last()
            .is_some_and(|c| c.ends_with(&format!(":{}", CHANNELS + 1))),
        "{:?}",
        confirmations.last()
    );
}
