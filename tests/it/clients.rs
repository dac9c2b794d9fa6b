//! Real clients work through the proxy unchanged: redis-cli, redis-benchmark, Python's `redis`.

use std::process::Command;

use crate::harness::proxy::ProxyBuilder;
use crate::harness::RedisServer;

/// Runs `cmd`; its stdout, or a panic with both outputs when it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("client runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_redis_benchmark_and_python_work_through_the_proxy() {
    let master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let proxy = ProxyBuilder::servers(vec![master.addr(), replica.addr()])
        .start(1)
        .await;
    let port = proxy.addr().port().to_string();

    let cli = |args: &[&str]| {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &port]).args(args);
        run(&mut c).trim().to_string()
    };
    assert_eq!(cli(&["SET", "cli", "hello"]), "OK");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    // One redis-cli connection reads its own write (commands from stdin share the connection).
    let mut piped = Command::new("sh");
    piped.args([
        "-c",
        &format!("printf 'SET cli2 v2\\nGET cli2\\n' | redis-cli -h 127.0.0.1 -p {port}"),
    ]);
    assert_eq!(
        run(&mut piped).split_whitespace().collect::<Vec<_>>(),
        ["OK", "v2"]
    );

    let bench = tokio::task::spawn_blocking({
        let port = port.clone();
        move || {
            run(Command::new("redis-benchmark").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "20",
                "-n",
                "5000",
                "-P",
                "4",
                "-t",
                "set,get,incr,lpush",
                "-q",
                "--csv",
            ]))
        }
    })
    .await
    .unwrap();
    assert!(
        bench.contains("\"SET\"") && bench.contains("\"GET\""),
        "{bench}"
    );
    assert!(!bench.to_lowercase().contains("error"), "{bench}");
    assert!(master.commandstats("set").await >= 5000);

    // redis-py 5+ says HELLO on connect (RESP3 by default in recent versions): both protocols.
    let script = r#"
import sys, redis
for proto in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=proto)
    assert r.ping()
    r.set("py", "1")
    assert r.get("py") == b"1"
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"py{i}", i)
        p.get(f"py{i}")
    res = p.execute()
    assert res[1::2] == [str(i).encode() for i in range(100)], res[:6]
    assert r.mget("py1", "py2", "missing") == [b"1", b"2", None]
    r.hset("h", mapping={"a": "1"})
    assert r.hgetall("h") == {b"a": b"1"}
    r.close()
print("python ok")
"#;
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("python3").args(["-c", script, &port]))
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "python ok");
}
