//! Snapshots for the renderers' tests: one of everything in Sentinel mode, and cluster mode.

use std::time::Duration;

use super::{ClusterNodeSnapshot, ClusterView, Role, Snapshot, Stats};

/// A snapshot with one of everything, and hostile names.
pub(crate) fn sample() -> Snapshot {
    let stats = Stats::new("sentinel", Some("my<master>"));
    let l = stats.listener("main <script>", "127.0.0.1:6380".parse().expect("addr"));
    l.connection_opened();
    l.command();
    let get = crate::resp::CommandTable::builtin();
    let mut timer = super::ReplyTimer::default();
    timer.read(std::time::Instant::now(), get.get("get"));
    timer.answered(0, b"-ERR some error\r\n", &l);
    let m = stats.backend("127.0.0.1:6391");
    m.set_role(Role::Master);
    m.set_up(true);
    m.record(Duration::from_micros(250), true);
    let r = stats.backend("127.0.0.1:6392");
    r.set_role(Role::Replica);
    r.set_up(false);
    r.set_replication(4242, false);
    stats.backend("bad\"host\\\n:1");
    let s = stats.sentinel("127.0.0.1:26379");
    s.set_connected(true);
    s.event("+switch-master");
    stats.record_failover(Some("127.0.0.1:6392"), "127.0.0.1:6391", "+switch-master");
    stats.set_master(Some("127.0.0.1:6391"));
    stats.snapshot()
}

/// Cluster mode: three masters (one with its slots in ten ranges), three replicas (one with
/// a hostile name), a listener, the nodes as backends, and some of every counter.
pub(crate) fn cluster_sample() -> Snapshot {
    let stats = Stats::new("cluster", None);
    stats.listener("main", "127.0.0.1:6379".parse().expect("addr"));
    let node = |addr: &str, master: Option<&str>, slots: usize, ranges: &str| {
        stats.backend(addr);
        ClusterNodeSnapshot {
            addr: addr.into(),
            role: if master.is_some() {
                "replica"
            } else {
                "master"
            }
            .into(),
            master: master.map(str::to_owned),
            slots,
            ranges: ranges.into(),
        }
    };
    let fragmented =
        "10923-10950 10951 10952-10960 10961 10962 10963 10964 10965 10966-10970 10971-16383";
    let nodes = vec![
        node("127.0.0.1:7001", None, 5461, "0-5460"),
        node("127.0.0.1:7002", None, 5462, "5461-10922"),
        node("127.0.0.1:7003", None, 5461, fragmented),
        node("127.0.0.1:7004", Some("127.0.0.1:7001"), 5461, "0-5460"),
        node("127.0.0.1:7005", Some("127.0.0.1:7002"), 5462, "5461-10922"),
        node("<node>:7006", Some("127.0.0.1:7003"), 5461, fragmented),
    ];
    let c = stats.cluster();
    c.refreshed(Some(ClusterView {
        slots_served: 16384,
        nodes,
        source: Some("127.0.0.1:7001".into()),
        changed_ms: None,
    }));
    for _ in 0..6 {
        c.refreshed(None);
    }
    c.refresh_failed();
    c.moved();
    c.moved();
    c.ask();
    for _ in 0..3 {
        c.retried();
    }
    c.retries_exhausted();
    for _ in 0..4 {
        c.split();
    }
    let mut snap = stats.snapshot();
    // The rate depends on how long the test took; fix it.
    if let Some(c) = snap.cluster.as_mut() {
        c.redirections_per_sec = 1.5;
    }
    snap
}
