//! The differential harness: the same byte streams to a lone `redis-server` and through the proxy
//! in front of a Sentinel-managed master and replica, and the same replies back.
//!
//! A case is a list of steps, each on one of its connections; a step's commands go in one write,
//! followed by `ECHO` of a marker, and its replies are read up to the marker's: so a step whose
//! replies Redis suppresses (`CLIENT REPLY OFF`/`SKIP`) still ends. Each step waits for the one
//! before it, as services that hand work to each other do. Cases stay away from what legitimately
//! differs (client ids, addresses, server names, timings).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::harness::proxy::ProxyBuilder;
use crate::harness::{RedisServer, Topology};

/// The marker that ends every step.
const MARKER: &str = "__step_done__";

/// One step: on connection `conn` (0, 1, ...) of the case, these commands.
type Step<'a> = (usize, &'a [&'a [&'a str]]);

/// The replies of one side, step by step, each step's replies as raw frames.
type Transcript = Vec<Vec<String>>;

/// Reads frames from `s` until the marker's reply; the frames before it.
async fn read_step(s: &mut TcpStream) -> Vec<String> {
    let marker = format!("${}\r\n{MARKER}", MARKER.len());
    let mut scanner = haproxy_rs::resp::ReplyScanner::new(100_000);
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    let read = async {
        loop {
            while let Some(f) = scanner.next(&mut buf).expect("a well-formed reply") {
                let frame = String::from_utf8_lossy(&f).trim_end().to_string();
                if frame == marker {
                    return;
                }
                frames.push(frame);
            }
            if s.read_buf(&mut buf).await.expect("read") == 0 {
                frames.push("(connection closed)".into());
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a step's replies within 20 s");
    frames
}

/// Plays `steps` against `addr`, one fresh connection per connection index.
async fn play(addr: impl ToSocketAddrs + Copy, steps: &[Step<'_>]) -> Transcript {
    let conns = steps.iter().map(|(c, _)| c + 1).max().unwrap_or(0);
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let mut out = Vec::new();
    for (conn, commands) in steps {
        let s = &mut streams[*conn];
        let mut bytes = Vec::new();
        for c in commands.iter() {
            bytes.extend_from_slice(&haproxy_rs::resp::encode_command(c));
        }
        bytes.extend_from_slice(&haproxy_rs::resp::encode_command(&["ECHO", MARKER]));
        s.write_all(&bytes).await.expect("write");
        out.push(read_step(s).await);
    }
    out
}

/// Both sides: a lone server, and a proxy in front of a master with one replica that reads may go
/// to.
struct Sides {
    direct: RedisServer,
    _topo: Topology,
    proxy: crate::harness::proxy::TestProxy,
}

impl Sides {
    async fn start() -> Sides {
        let direct = RedisServer::start().await;
        let topo = Topology::builder().replicas(1).sentinels(1).start().await;
        let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
        Sides {
            direct,
            _topo: topo,
            proxy,
        }
    }

    /// Plays `steps` on both sides and asserts the same replies.
    async fn same(&self, case: &str, steps: &[Step<'_>]) {
        self.same_after(case, 0, steps).await;
    }

    /// As [`Sides::same`], for the steps after the first `setup` ones, whose replies may differ
    /// (`HELLO` names the server and the client's id).
    async fn same_after(&self, case: &str, setup: usize, steps: &[Step<'_>]) {
        let want = play(self.direct.addr().as_str(), steps).await;
        let got = play(self.proxy.addr(), steps).await;
        for (i, (w, g)) in want.iter().zip(&got).enumerate().skip(setup) {
            assert_eq!(
                g, w,
                "{case}, step {i} {:?}: through the proxy (left) and from Redis (right)",
                steps[i].1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_byte_streams_get_the_same_replies_as_from_redis() {
    let sides = Sides::start().await;
    sides
        .same(
            "plain commands and their errors",
            &[(
                0,
                &[
                    &["SET", "k", "v"],
                    &["GET", "k"],
                    &["GET"],
                    &["LPUSH", "k", "x"],
                    &["EXEC"],
                    &["DISCARD"],
                    &["INCR", "k"],
                    &["NOSUCHCOMMAND", "a"],
                ],
            )],
        )
        .await;
    sides
        .same(
            "a reply nested as deep as Lua makes it",
            &[(
                0,
                &[
                    &[
                        "EVAL",
                        "local a = {}; local b = {a}; a[1] = b; return a",
                        "0",
                    ],
                    &["PING"],
                ],
            )],
        )
        .await;
    sides
        .same(
            "a transaction with a queued error",
            &[(
                0,
                &[
                    &["MULTI"],
                    &["SET", "t", "1"],
                    &["INCR"],
                    &["EXEC"],
                    &["GET", "t"],
                ],
            )],
        )
        .await;
    sides
        .same_after(
            "RESP3 nulls, from the servers and from the proxy itself",
            1,
            &[
                (0, &[&["HELLO", "3"]]),
                (
                    0,
                    &[
                        &["CLIENT", "GETNAME"],
                        &["GET", "missing"],
                        &["HGETALL", "missing"],
                        &["CLIENT", "SETNAME", "diff"],
                        &["CLIENT", "GETNAME"],
                    ],
                ),
            ],
        )
        .await;
    sides
        .same(
            "commands Redis never queues in a transaction (issue 14)",
            &[(
                0,
                &[
                    &["MULTI"],
                    &["SET", "nm", "1"],
                    &["SHUTDOWN", "NOSAVE"],
                    &["EXEC"],
                    &["MULTI"],
                    &["SAVE"],
                    &["EXEC"],
                    &["GET", "nm"],
                ],
            )],
        )
        .await;
    sides
        .same(
            "CLIENT REPLY OFF, SKIP and ON, pipelined over reads, writes, errors, local answers, a transaction and blocking commands",
            &[
                (
                    0,
                    &[
                        &["SET", "r:a", "1"],
                        &["CLIENT", "REPLY", "OFF"],
                        &["SET", "r:b", "2"],
                        &["GET", "r:a"],
                        &["GET"],
                        &["NOSUCHCOMMAND"],
                        &["PING"],
                        &["CLIENT", "SETNAME", "quiet"],
                        &["CLIENT", "REPLY", "SKIP"],
                        &["CLIENT", "REPLY", "maybe"],
                        &["CLIENT", "REPLY", "ON"],
                        &["GET", "r:b"],
                        &["CLIENT", "GETNAME"],
                    ],
                ),
                (
                    0,
                    &[
                        &["CLIENT", "REPLY", "SKIP"],
                        &["SET", "r:c", "3"],
                        &["GET", "r:c"],
                        &["CLIENT", "REPLY", "SKIP"],
                        &["GET"],
                        &["PING", "after"],
                        &["CLIENT", "REPLY", "SKIP"],
                        &["CLIENT", "REPLY", "ON"],
                        &["CLIENT", "REPLY"],
                    ],
                ),
                (
                    0,
                    &[
                        &["CLIENT", "REPLY", "OFF"],
                        &["MULTI"],
                        &["SET", "r:d", "4"],
                        &["INCR", "r:n"],
                        &["EXEC"],
                        &["RPUSH", "r:q", "x"],
                        &["BLPOP", "r:q", "0"],
                        &["WAIT", "0", "0"],
                        &["GET", "r:d"],
                        &["CLIENT", "REPLY", "ON"],
                        &["GET", "r:d"],
                        &["LRANGE", "r:q", "0", "-1"],
                    ],
                ),
                (1, &[&["GET", "r:c"], &["CLIENT", "REPLY", "SKIP"], &["GET", "r:n"]]),
            ],
        )
        .await;
    sides
        .same(
            "client-side caching commands without tracking, and the tracking options Redis refuses (issue 14)",
            &[(
                0,
                &[
                    &["CLIENT", "GETREDIR"],
                    &["CLIENT", "TRACKINGINFO"],
                    &["CLIENT", "CACHING", "yes"],
                    &["CLIENT", "CACHING"],
                    &["CLIENT", "TRACKING", "on", "REDIRECT", "987654"],
                    &["CLIENT", "TRACKING", "on", "REDIRECT", "nan"],
                    &["CLIENT", "TRACKING", "on", "SOMEDAY"],
                    &["CLIENT", "TRACKING", "on", "REDIRECT"],
                    &["CLIENT", "GETREDIR"],
                ],
            )],
        )
        .await;
    sides
        .same(
            "a setting changed by one client, seen by another's reads; a function loaded by one, called read-only by another (issue 14)",
            &[
                (
                    0,
                    &[
                        &["CONFIG", "SET", "hash-max-listpack-entries", "1"],
                        &["HSET", "enc:h", "a", "1", "b", "2"],
                    ],
                ),
                (1, &[&["OBJECT", "ENCODING", "enc:h"], &["CONFIG", "GET", "hash-max-listpack-entries"]]),
                (
                    0,
                    &[
                        &["CONFIG", "SET", "hash-max-listpack-entries", "128"],
                        &[
                            "FUNCTION",
                            "LOAD",
                            "#!lua name=difflib\nredis.register_function{function_name='diffget', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}",
                        ],
                        &["SET", "fk", "v"],
                    ],
                ),
                (1, &[&["FCALL_RO", "diffget", "1", "fk"]]),
                (0, &[&["FUNCTION", "DELETE", "difflib"]]),
            ],
        )
        .await;
}
