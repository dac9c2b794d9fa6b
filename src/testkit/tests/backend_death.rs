//! A server that dies mid-batch: the requests it answered keep their replies, the rest get the
//! proxy's "outcome unknown" error (reads are sent again, once in Sentinel mode, within the
//! retry window in cluster mode), and the session goes on serving.

use std::time::Duration;

use super::{eventual, key_in, lost};
use crate::backend::BackendError;
use crate::client::reply::backend_error;
use crate::testkit::client::render;
use crate::testkit::server::{echo, Action};
use crate::testkit::{FakeRedis, Rig};

/// A server that answers its first connection's first `k` requests, then closes it; later
/// connections are served.
fn dies_after(name: &'static str, k: usize) -> FakeRedis {
    FakeRedis::scripted(name, move |call| {
        if call.conn == 0 && call.seq >= k {
            Action::Close
        } else {
            echo(name, call)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_master_dying_mid_batch_answers_what_it_ran_and_errors_the_rest_in_sentinel_mode() {
    let m = dies_after("m", 2);
    let r1 = FakeRedis::start("r1");
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m), &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[
        &["SET", "a", "1"],
        &["SET", "b", "2"],
        &["SET", "c", "3"],
        &["INCR", "d"],
        &["SET", "e", "5"],
    ])
    .await;
    let lost = lost(m.addr());
    assert_eq!(
        c.replies(5).await,
        ["m:SET a 1", "m:SET b 2", &lost, &lost, &lost].map(String::from)
    );
    // The session is usable, on a new connection to the master.
    assert_eq!(c.call(&["SET", "f", "6"]).await, "m:SET f 6");
    assert_eq!(c.call(&["GET", "f"]).await, "r1:GET f");
    assert_eq!(m.connections(), 2);
    assert_eq!(m.call("SET f 6").unwrap().conn, 1);
    // Set up again, as the first one was.
    assert_eq!(
        m.handshakes(),
        [
            "0: CLIENT SETNAME haproxy-rs",
            "1: CLIENT SETNAME haproxy-rs"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_dying_mid_batch_has_its_unanswered_reads_sent_again_in_sentinel_mode() {
    let m = FakeRedis::start("m");
    let r1 = dies_after("r1", 1);
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m), &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[&["GET", "a"], &["GET", "b"], &["GET", "c"]])
        .await;
    // A read is safe to run again, as in cluster mode: the two unanswered ones went again, on a
    // new connection, in order.
    assert_eq!(
        c.replies(3).await,
        ["r1:GET a", "r1:GET b", "r1:GET c"].map(String::from)
    );
    let again: Vec<(usize, String)> = r1
        .calls()
        .into_iter()
        .filter(|c| c.conn == 1)
        .map(|c| (c.seq, c.line()))
        .collect();
    assert_eq!(
        again
            .iter()
            .map(|(_, l)| l.as_str())
            .take(2)
            .collect::<Vec<_>>(),
        ["GET b", "GET c"]
    );
    assert_eq!(c.call(&["GET", "d"]).await, "r1:GET d");
}

#[tokio::test(start_paused = true)]
async fn reads_lost_twice_get_the_outcome_unknown_error() {
    let m = FakeRedis::start("m");
    // Every connection dies after its first request: the resent reads die too.
    let r1 = FakeRedis::scripted("r1", |call| {
        if call.seq >= 1 {
            Action::Close
        } else {
            echo("r1", call)
        }
    });
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m), &[&r1]);
    let mut c = rig.client();
    c.pipeline(&[&["GET", "a"], &["GET", "b"], &["GET", "c"]])
        .await;
    let lost = lost(r1.addr());
    assert_eq!(
        c.replies(3).await,
        ["r1:GET a", "r1:GET b", &lost].map(String::from)
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_dying_mid_batch_errors_its_writes_and_sends_its_reads_again_in_cluster_mode() {
    let a = dies_after("a", 2);
    let b = FakeRedis::start("b");
    let rig = Rig::cluster(&eventual());
    rig.publish_slots(&[(0, 8191, &a, &[]), (8192, 16383, &b, &[])]);
    let k: Vec<String> = (0..5).fold(Vec::new(), |mut ks, _| {
        let taken: Vec<&str> = ks.iter().map(String::as_str).collect();
        let next = key_in(0, 8191, &taken);
        ks.push(next);
        ks
    });
    let mut c = rig.client();
    c.pipeline(&[
        &["SET", &k[0], "1"],
        &["SET", &k[1], "2"],
        &["SET", &k[2], "3"],
        &["GET", &k[3]],
        &["SET", &k[4], "5"],
    ])
    .await;
    let lost = lost(a.addr());
    assert_eq!(
        c.replies(5).await,
        [
            format!("a:SET {} 1", k[0]),
            format!("a:SET {} 2", k[1]),
            lost.clone(),
            // A read is safe to send again: it went on the new connection.
            format!("a:GET {}", k[3]),
            lost,
        ]
    );
    let get = a.call(&format!("GET {}", k[3])).unwrap();
    assert_eq!((get.conn, get.seq), (1, 0));
    assert_eq!(
        c.call(&["SET", &k[4], "6"]).await,
        format!("a:SET {} 6", k[4])
    );
}

#[tokio::test(start_paused = true)]
async fn a_master_stalling_mid_batch_is_given_up_after_command_timeout_and_says_so() {
    let mut cfg = eventual();
    cfg.backend.command_timeout_ms = 2000;
    let m = FakeRedis::scripted("m", |call| match (call.conn, call.seq) {
        (0, 1) => Action::Stall,
        _ => echo("m", call),
    });
    let rig = Rig::primary(&cfg);
    rig.publish(Some(&m), &[]);
    let mut c = rig.client();
    let started = tokio::time::Instant::now();
    c.pipeline(&[&["SET", "a", "1"], &["SET", "b", "2"], &["SET", "c", "3"]])
        .await;
    let (timeout, _) = backend_error(&BackendError::Timeout, m.addr());
    let timeout = render(&timeout);
    assert_eq!(
        c.replies(3).await,
        ["m:SET a 1", &timeout, &timeout].map(String::from)
    );
    // Checked every 250 ms, and one tick more: the server is asked on a new connection whether
    // it is busy running a script (a stalled one is not).
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(2000)..=Duration::from_millis(2500)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(c.call(&["SET", "d", "4"]).await, "m:SET d 4");
    // A new connection (the one in between asked whether it was busy).
    assert_eq!(m.call("SET d 4").unwrap().conn, 2);
}
