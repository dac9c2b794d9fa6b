//! Admin actions on the stats listener need the admin token (issue 12, "Safe by default"):
//! `POST /switchover` fails the master over only with `Authorization: Bearer <admin_token>`,
//! never from another origin's page; the read-only `GET`s need nothing.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::proxy::{ProxyBuilder, TestProxy, ADMIN_TOKEN};
use crate::harness::Topology;
use crate::stats_http::request;

/// What shows whether a failover happened: Sentinel's master address and its config epoch,
/// and the proxy's master.
async fn failover_state(topo: &Topology, proxy: &TestProxy) -> (Option<String>, String, String) {
    let s = &topo.sentinels[0];
    let epoch = s.master_field("config-epoch").await.unwrap_or_default();
    (proxy.master(), topo.current_master_addr().await, epoch)
}

/// `POST /switchover` with these header lines besides `Host`; (status, head, body).
async fn post_switchover(addr: SocketAddr, headers: &[&str]) -> (u16, String, String) {
    let host = format!("Host: {addr}");
    let mut all = vec![host.as_str()];
    all.extend_from_slice(headers);
    request(addr, "POST", "/switchover", &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_without_an_admin_token_configured_is_refused_and_nothing_fails_over() {
    let topo = Topology::start(1, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo).start(1).await;
    let before = failover_state(&topo, &proxy).await;
    assert_eq!(before.0.as_deref(), Some(topo.master.addr().as_str()));

    let addr = proxy.stats_addr();
    for headers in [&[][..], &["Authorization: Bearer anything"]] {
        let (status, _, body) = post_switchover(addr, headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        for name in ["admin_token", "--admin-token", "HAPROXY_RS_ADMIN_TOKEN"] {
            assert!(body.contains(name), "says how to enable actions: {body}");
        }
    }
    let (status, body) = haproxy_rs::cli::post_switchover(&addr.to_string(), Some(ADMIN_TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(failover_state(&topo, &proxy).await, before, "no failover");
    assert_eq!(proxy.proxy.stats.snapshot().failovers_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_needs_the_admin_token_and_the_listeners_own_origin() {
    let topo = Topology::start(1, 1).await;
    let proxy = ProxyBuilder::sentinel(&topo)
        .admin_token(ADMIN_TOKEN)
        .start(1)
        .await;
    let old = topo.master.addr();
    let before = failover_state(&topo, &proxy).await;
    assert_eq!(before.0.as_deref(), Some(old.as_str()));
    let addr = proxy.stats_addr();

    // The read-only endpoints need no token.
    for path in ["/", "/stats.json", "/metrics", "/healthz"] {
        let (status, _, body) = request(addr, "GET", path, &["Host: test"]).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }

    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let wrong = format!("Authorization: Bearer {ADMIN_TOKEN}x");
    let cases: [(&str, Vec<&str>, u16); 5] = [
        ("no Authorization", vec![], 401),
        ("a wrong token", vec![wrong.as_str()], 401),
        (
            "Basic credentials",
            vec!["Authorization: Basic dGVzdDp0ZXN0"],
            401,
        ),
        (
            "a foreign Origin",
            vec![bearer.as_str(), "Origin: http://evil.example"],
            403,
        ),
        (
            "Sec-Fetch-Site: cross-site",
            vec![bearer.as_str(), "Sec-Fetch-Site: cross-site"],
            403,
        ),
    ];
    for (what, headers, want) in &cases {
        let (status, head, body) = post_switchover(addr, headers).await;
        assert_eq!(status, *want, "{what}: {body}");
        let challenged = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("www-authenticate: bearer"));
        assert_eq!(challenged, *want == 401, "{what}: {head}");
        assert_eq!(
            failover_state(&topo, &proxy).await,
            before,
            "{what}: no failover"
        );
    }
    let (status, body) = haproxy_rs::cli::post_switchover(&addr.to_string(), None)
        .await
        .unwrap();
    assert_eq!(status, 401, "the CLI without a token: {body}");
    assert_eq!(failover_state(&topo, &proxy).await, before);
    assert_eq!(proxy.proxy.stats.snapshot().failovers_total, 0);

    // The right token, from the listener's own page (or without Origin, as the CLI sends it).
    let own = format!("Origin: http://{addr}");
    let (status, _, body) = post_switchover(addr, &[bearer.as_str(), own.as_str()]).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let new = report["new_master"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(new, old, "{body}");
    crate::eventually!(
        Duration::from_secs(5),
        proxy.master().as_deref() == Some(new.as_str()),
        "the proxy writes to {new}"
    );
    let after = failover_state(&topo, &proxy).await;
    assert_ne!(after.2, before.2, "Sentinel's config epoch moved on");
}
