//! Sentinel/static mode: replies come back in request order whatever path each request took
//! (a replica, the master, held for a master, the client's pinned connection), and a request
//! reaches its server only once what must run before it has run.

use std::time::Duration;

use super::eventual;
use crate::router::hold_expired_reply;
use crate::router::scan::scan_server_gone_reply;
use crate::testkit::client::render;
use crate::testkit::server::{echo, Action};
use crate::testkit::{FakeRedis, Gate, Rig};

#[tokio::test(start_paused = true)]
async fn held_writes_then_a_transaction_waiting_for_a_master_answer_in_request_order() {
    let m = FakeRedis::scripted("m", |call| match call.line().as_str() {
        // Slow, so a transaction that did not wait for it would reach the master first.
        "SET b 1" => Action::Delay(Duration::from_millis(30), echo("m", call).reply()),
        _ => echo("m", call),
    });
    let r1 = FakeRedis::start("r1");
    let rig = Rig::primary(&eventual());
    rig.publish(None, &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[
        &["GET", "a"],
        &["SET", "b", "1"],
        &["GET", "c"],
        &["MULTI"],
        &["SET", "d", "2"],
        &["EXEC"],
        &["GET", "e"],
    ])
    .await;
    assert_eq!(c.replies(1).await, ["r1:GET a"]);
    // No master: the rest waits, and nothing reaches a server.
    c.assert_silent(Duration::from_millis(50)).await;
    assert_eq!(m.connections(), 0);
    assert_eq!(r1.lines(), ["GET a"]);

    rig.publish(Some(&m), &[&r1]);
    assert_eq!(
        c.replies(6).await,
        [
            "m:SET b 1",
            // Held behind a write, it goes with it to the master.
            "m:GET c",
            "+OK",
            "+QUEUED",
            "[m:SET d 2]",
            "r1:GET e",
        ]
    );
    assert_eq!(m.lines(), ["SET b 1", "GET c", "MULTI", "SET d 2", "EXEC"]);
    let (set, multi) = (m.call("SET b 1").unwrap(), m.call("MULTI").unwrap());
    assert_ne!(
        set.conn, multi.conn,
        "the transaction has a connection of its own"
    );
    assert!(
        multi.at >= set.at + Duration::from_millis(30),
        "MULTI reached the master before the held write before it was answered"
    );
    let exec = m.call("EXEC").unwrap();
    assert!(r1.call("GET e").unwrap().at >= exec.at);
}

#[tokio::test(start_paused = true)]
async fn a_transaction_after_shared_requests_waits_for_their_replies_and_later_requests_for_exec() {
    let m = FakeRedis::scripted("m", |call| match call.line().as_str() {
        "SET b 1" => Action::Delay(Duration::from_millis(20), echo("m", call).reply()),
        _ => echo("m", call),
    });
    let r1 = FakeRedis::scripted("r1", |call| match call.line().as_str() {
        "GET a" => Action::Delay(Duration::from_millis(40), echo("r1", call).reply()),
        _ => echo("r1", call),
    });
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m), &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[
        &["GET", "a"],
        &["SET", "b", "1"],
        &["MULTI"],
        &["INCR", "n"],
        &["EXEC"],
        &["GET", "c"],
        &["SET", "d", "2"],
    ])
    .await;
    assert_eq!(
        c.replies(7).await,
        [
            "r1:GET a",
            "m:SET b 1",
            "+OK",
            "+QUEUED",
            "[m:INCR n]",
            "r1:GET c",
            "m:SET d 2"
        ]
    );
    let at = |server: &FakeRedis, line: &str| server.call(line).expect(line).at;
    let start = at(&r1, "GET a");
    // The pinned batch went once both shared replies were in (the slower one at 40 ms) ...
    assert!(at(&m, "MULTI") >= start + Duration::from_millis(40));
    // ... and the shared requests after EXEC once it was answered.
    assert!(at(&r1, "GET c") >= at(&m, "EXEC"));
    assert!(at(&m, "SET d 2") >= at(&m, "EXEC"));
    assert_ne!(
        m.call("SET b 1").unwrap().conn,
        m.call("MULTI").unwrap().conn
    );
    assert_eq!(
        m.call("SET d 2").unwrap().conn,
        m.call("SET b 1").unwrap().conn
    );
}

#[tokio::test(start_paused = true)]
async fn held_requests_get_tryagain_in_order_once_hold_ms_has_passed() {
    let mut cfg = eventual();
    cfg.failover.hold_ms = 500;
    let r1 = FakeRedis::start("r1");
    let rig = Rig::primary(&cfg);
    rig.publish(None, &[&r1]);
    let mut c = rig.client();
    let started = tokio::time::Instant::now();
    let wall = std::time::Instant::now();
    c.pipeline(&[
        &["GET", "a"],
        &["SET", "b", "1"],
        &["GET", "c"],
        &["SET", "d", "2"],
    ])
    .await;
    assert_eq!(c.replies(1).await, ["r1:GET a"]);
    c.assert_silent(Duration::from_millis(400)).await;
    let tryagain = render(&hold_expired_reply(Duration::from_millis(500)));
    assert_eq!(c.replies(3).await, [tryagain.as_str(); 3]);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(600)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(r1.lines(), ["GET a"], "nothing held was sent anywhere");
    assert!(
        wall.elapsed() < Duration::from_secs(2),
        "paused time, no real waiting"
    );
    // The session goes on: with a master, writes go through.
    let m = FakeRedis::start("m");
    rig.publish(Some(&m), &[&r1]);
    assert_eq!(c.call(&["SET", "e", "3"]).await, "m:SET e 3");
}

#[tokio::test(start_paused = true)]
async fn a_transaction_still_waiting_for_a_master_when_hold_ms_passes_is_refused_whole() {
    let mut cfg = eventual();
    cfg.failover.hold_ms = 300;
    let rig = Rig::primary(&cfg);
    let mut c = rig.client();
    c.pipeline(&[&["MULTI"], &["SET", "a", "1"], &["EXEC"], &["PING"]])
        .await;
    let replies = c.replies(4).await;
    assert!(
        replies[0].starts_with("-TRYAGAIN haproxy-rs: no connection to the master"),
        "{replies:?}"
    );
    assert!(replies[1].starts_with("-TRYAGAIN haproxy-rs: the transaction could not start"));
    assert_eq!(
        replies[2..],
        [
            "-EXECABORT Transaction discarded because of previous errors.",
            "+PONG"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_refused_for_max_held_bytes_keeps_its_place_behind_the_held_ones() {
    let mut cfg = eventual();
    cfg.failover.max_held_bytes = 64;
    let m = FakeRedis::start("m");
    let rig = Rig::primary(&cfg);
    let mut c = rig.client();
    c.pipeline(&[&["SET", "a", "1"]]).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let big = "v".repeat(64);
    c.pipeline(&[&["SET", "b", &big], &["GET", "c"]]).await;
    c.assert_silent(Duration::from_millis(50)).await;
    rig.publish(Some(&m), &[]);
    let full = render(&crate::router::hold_full_reply());
    assert_eq!(c.replies(3).await, ["m:SET a 1", &full, &full]);
    assert_eq!(m.lines(), ["SET a 1"]);
}

#[tokio::test(start_paused = true)]
async fn a_write_held_behind_a_blocking_command_is_not_overtaken_by_a_later_write() {
    let gate = Gate::new();
    let m1 = {
        let gate = gate.clone();
        FakeRedis::scripted("m1", move |call| match call.name().as_str() {
            "BLPOP" => Action::Hold(gate.clone(), echo("m1", call).reply()),
            _ => echo("m1", call),
        })
    };
    let m2 = FakeRedis::start("m2");
    let r1 = FakeRedis::start("r1");
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m1), &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[&["BLPOP", "q", "0"]]).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    // A failover starts while the client is blocked: its next write waits for a master ...
    rig.publish(None, &[&r1]);
    c.pipeline(&[&["SET", "b", "1"]]).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    // ... there is one again, and the client writes once more.
    rig.publish(Some(&m2), &[&r1]);
    c.pipeline(&[&["SET", "f", "2"]]).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    gate.open();
    assert_eq!(
        c.replies(3).await,
        ["m1:BLPOP q 0", "m2:SET b 1", "m2:SET f 2"]
    );
    assert_eq!(
        m2.lines(),
        ["SET b 1", "SET f 2"],
        "the writes ran out of order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_scan_whose_server_left_the_topology_is_told_to_start_again() {
    let mut cfg = eventual();
    cfg.failover.hold_ms = 300;
    let m = FakeRedis::start("m");
    let r1 = FakeRedis::scripted("r1", |call| {
        if call.line().starts_with("SCAN") {
            Action::Reply(bytes::Bytes::from_static(b"*2\r\n$2\r\n17\r\n*0\r\n"))
        } else {
            echo("r1", call)
        }
    });
    let rig = Rig::primary(&cfg);
    rig.publish(Some(&m), &[&r1]);
    let mut c = rig.client();
    let first = c.call(&["SCAN", "0"]).await;
    let cursor = first
        .trim_start_matches('[')
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_ne!(cursor, "17", "the cursor names its server: {first}");
    // The replica leaves the topology mid-iteration: the next call waits for it, then is told
    // to start again (not that there is no master: there is one).
    rig.publish(Some(&m), &[]);
    rig.retain_backends(&[&m]);
    c.pipeline(&[&["SCAN", &cursor]]).await;
    c.assert_silent(Duration::from_millis(250)).await;
    let gone = render(&scan_server_gone_reply(Duration::from_millis(300)));
    assert_eq!(c.replies(1).await, [gone]);
    assert_eq!(r1.lines(), ["SCAN 0"]);
    assert!(
        m.lines().is_empty(),
        "nothing went to the master: {:?}",
        m.lines()
    );
}
