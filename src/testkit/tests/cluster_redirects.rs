//! Cluster mode: `MOVED` and `ASK` for one request in the middle of a pipeline are followed,
//! and the pipeline's replies stay in request order.

use super::key_in;
use crate::router::slot::key_slot;
use crate::testkit::server::{ask, echo, moved};
use crate::testkit::{FakeRedis, Mode, Rig};

#[tokio::test(start_paused = true)]
async fn moved_and_ask_in_the_middle_of_a_pipeline_are_followed_in_request_order() {
    let k_a1 = key_in(0, 8191, &[]);
    let k_moved = key_in(0, 8191, &[&k_a1]);
    let k_ask = key_in(0, 8191, &[&k_a1, &k_moved]);
    let k_a2 = key_in(0, 8191, &[&k_a1, &k_moved, &k_ask]);
    let k_b = key_in(8192, 16383, &[]);
    assert_ne!(key_slot(k_moved.as_bytes()), key_slot(k_ask.as_bytes()));
    let b = FakeRedis::start("b");
    let a = {
        let (b_addr, k_moved, k_ask) = (b.addr().to_string(), k_moved.clone(), k_ask.clone());
        FakeRedis::scripted("a", move |call| {
            let key = call.arg(1);
            let slot = key_slot(key.as_bytes());
            if key == k_moved {
                moved(slot, &b_addr)
            } else if key == k_ask {
                ask(slot, &b_addr)
            } else {
                echo("a", call)
            }
        })
    };
    let rig = Rig::cluster(&super::eventual());
    rig.publish_slots(&[(0, 8191, &a, &[]), (8192, 16383, &b, &[])]);
    let mut c = rig.client();
    c.pipeline(&[
        &["SET", &k_a1, "1"],
        &["GET", &k_moved],
        &["GET", &k_b],
        &["SET", &k_ask, "2"],
        &["GET", &k_a2],
    ])
    .await;
    assert_eq!(
        c.replies(5).await,
        [
            format!("a:SET {k_a1} 1"),
            format!("b:GET {k_moved}"),
            format!("b:GET {k_b}"),
            format!("b:SET {k_ask} 2"),
            format!("a:GET {k_a2}"),
        ]
    );
    assert_eq!(
        a.lines(),
        [
            format!("SET {k_a1} 1"),
            format!("GET {k_moved}"),
            format!("SET {k_ask} 2"),
            format!("GET {k_a2}"),
        ]
    );
    // The redirected requests follow the first round, the ASKed one right after ASKING, the
    // MOVED one without it.
    assert_eq!(
        b.lines(),
        [
            format!("GET {k_b}"),
            format!("GET {k_moved}"),
            "ASKING".to_string(),
            format!("SET {k_ask} 2"),
        ]
    );
    let Mode::Cluster(state) = &rig.mode else {
        unreachable!("a cluster rig")
    };
    // ASK marks the slot as migrating (its reads go to the master until the next refresh).
    assert!(state.slot_migrating(key_slot(k_ask.as_bytes())));
    assert!(!state.slot_migrating(key_slot(k_moved.as_bytes())));
}

#[tokio::test(start_paused = true)]
async fn a_request_for_an_unserved_slot_gets_clusterdown_in_its_place_once_the_retry_window_passes()
{
    let mut cfg = super::eventual();
    cfg.cluster = Some(crate::config::ClusterConfig {
        retry_window_ms: 1000,
        ..Default::default()
    });
    let a = FakeRedis::start("a");
    let rig = Rig::cluster(&cfg);
    rig.publish_slots(&[(0, 8191, &a, &[])]);
    let (k1, k2) = (key_in(0, 8191, &[]), key_in(8192, 16383, &[]));
    let mut c = rig.client();
    let started = tokio::time::Instant::now();
    c.pipeline(&[&["GET", &k1], &["GET", &k2], &["SET", &k1, "2"]])
        .await;
    assert_eq!(
        c.replies(3).await,
        [
            format!("a:GET {k1}"),
            "-CLUSTERDOWN Hash slot not served".to_string(),
            format!("a:SET {k1} 2"),
        ]
    );
    let waited = started.elapsed();
    assert!(
        (std::time::Duration::from_millis(1000)..std::time::Duration::from_millis(1300))
            .contains(&waited),
        "{waited:?}"
    );
}
