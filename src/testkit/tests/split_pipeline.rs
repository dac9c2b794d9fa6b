//! A pipeline cut at any byte gives the replies it gives whole: for every split point `i`, a new
//! client writes `bytes[..i]`, lets the session take it in, then writes `bytes[i..]`.

use std::time::Duration;

use super::{eventual, key_in};
use crate::testkit::client::encode;
use crate::testkit::{FakeRedis, Rig, TestClient};

/// Every cut of `bytes` against the whole, on fresh clients of `rig`; `n` replies each.
async fn every_cut_answers_as_whole(rig: &Rig, bytes: &[u8], n: usize) -> Vec<String> {
    let mut whole = rig.client();
    whole.send(bytes).await;
    let expected = whole.replies(n).await;
    for i in 1..bytes.len() {
        let mut c: TestClient = rig.client();
        c.send(&bytes[..i]).await;
        // The session reads and dispatches what is complete of the first part.
        tokio::time::sleep(Duration::from_millis(1)).await;
        c.send(&bytes[i..]).await;
        assert_eq!(
            c.replies(n).await,
            expected,
            "cut at byte {i} of {}",
            bytes.len()
        );
    }
    expected
}

/// Requests of every shape: multibulk and inline, a value holding CRLF, a local answer, a
/// transaction, a split command (`MGET` across slots in cluster mode), an empty value.
fn mixed(keys: [&str; 2]) -> Vec<u8> {
    let [k1, k2] = keys;
    let mut bytes = encode(&[
        &["SET", k1, "a\r\nb"],
        &["GET", k2],
        &["PING"],
        &["MULTI"],
        &["INCR", k1],
        &["EXEC"],
    ]);
    bytes.extend_from_slice(format!("GET {k1}\r\n").as_bytes());
    bytes.extend_from_slice(&encode(&[&["MGET", k1, k2], &["SET", k2, ""]]));
    bytes
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_cut_at_any_byte_answers_as_whole_in_sentinel_mode() {
    let m = FakeRedis::start("m");
    let r1 = FakeRedis::start("r1");
    let rig = Rig::primary(&eventual());
    rig.publish(Some(&m), &[&r1]);
    let bytes = mixed(["x", "y"]);
    let replies = every_cut_answers_as_whole(&rig, &bytes, 9).await;
    assert_eq!(
        replies,
        [
            "m:SET x a\r\nb",
            "r1:GET y",
            "+PONG",
            "+OK",
            "+QUEUED",
            "[m:INCR x]",
            "r1:GET x",
            "[r1:x, r1:y]",
            "m:SET y "
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_cut_at_any_byte_answers_as_whole_in_cluster_mode() {
    let a = FakeRedis::start("a");
    let b = FakeRedis::start("b");
    let rig = Rig::cluster(&eventual());
    rig.publish_slots(&[(0, 8191, &a, &[]), (8192, 16383, &b, &[])]);
    let (k1, k2) = (key_in(0, 8191, &[]), key_in(8192, 16383, &[]));
    let bytes = mixed([&k1, &k2]);
    let replies = every_cut_answers_as_whole(&rig, &bytes, 9).await;
    assert_eq!(
        replies,
        [
            format!("a:SET {k1} a\r\nb"),
            format!("b:GET {k2}"),
            "+PONG".into(),
            "+OK".into(),
            "+QUEUED".into(),
            format!("[a:INCR {k1}]"),
            format!("a:GET {k1}"),
            // Split by slot, joined in key order.
            format!("[a:{k1}, b:{k2}]"),
            format!("b:SET {k2} "),
        ]
    );
}
