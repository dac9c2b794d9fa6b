//! `[auth] mode = "backend"` (the default behind a password-protected backend): clients log in as
//! they did against Redis, checked by the master itself, and are held to the master's own ACL
//! rules. Each test sends the same byte streams directly and through the proxy and compares the
//! replies, in static, Sentinel and cluster mode.

use std::time::Duration;

use haproxy_rs::config::{AuthMode, Config, MaskedString};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer, Topology};
use crate::security::{query, raw};
use crate::stats_http::stats_json;

/// The servers' password (Redis `requirepass`, the proxy's `--password`).
const PASSWORD: &str = "s3cret";

/// `app`: strings and other data types on `app:*`, channels `news:*`, nothing dangerous (nor
/// `@slow` `ACL WHOAMI`).
const APP: &[&str] = &[
    "ACL",
    "SETUSER",
    "app",
    "on",
    ">app-pw",
    "~app:*",
    "&news:*",
    "+@read",
    "+@write",
    "+@pubsub",
    "-@dangerous",
];

async fn acl(server: &RedisServer, args: &[&str]) {
    let mut c = server.client().await;
    let _: () = query(&mut c, args).await.expect("ACL SETUSER");
}

/// A server with `requirepass` and the `app` user, and a static-mode proxy given only
/// `--password`: no `[auth]` at all.
async fn protected_server() -> (RedisServer, TestProxy) {
    let server = RedisServer::start().await;
    acl(&server, APP).await;
    acl(&server, &["CONFIG", "SET", "requirepass", PASSWORD]).await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| c.backend.password = Some(MaskedString::new(PASSWORD)))
        .start(0)
        .await;
    (server, proxy)
}

/// Replies to `script` on one connection straight to `server` and through `proxy`.
async fn both(
    server: &str,
    proxy: std::net::SocketAddr,
    script: &[&[&str]],
) -> (Vec<String>, Vec<String>) {
    let direct = raw(server.parse().expect("addr"), script).await;
    (direct, raw(proxy, script).await)
}

/// What every mode must answer as Redis does: the app user's logins and refusals.
const REFUSALS: &[&[&str]] = &[
    &["AUTH", "app", "wrong"],
    &["AUTH", "nosuch", "app-pw"],
    &["HELLO", "3", "AUTH", "app", "wrong"],
    &["AUTH", "app", "app-pw"],
    &["ACL", "WHOAMI"],
    &["GET", "other"],
    &["FLUSHALL"],
    &["PUBLISH", "other", "m"],
    &["SUBSCRIBE", "news:1", "other"],
    &["CONFIG", "GET", "maxmemory"],
    &["AUTH", "app", "wrong"],
    &["ACL", "WHOAMI"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_alone_requires_auth_and_acl_users_keep_their_rules() {
    let (server, proxy) = protected_server().await;
    let before_auth: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["GET", "k"],
        &["PING"],
        &["GET"],
        &["AUTH", "wrong"],
        &["HELLO", "3"],
        &["AUTH", PASSWORD],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["ACL", "WHOAMI"],
    ];
    let (direct, proxied) = both(&server.addr(), proxy.addr(), before_auth).await;
    assert_eq!(direct[0], "-NOAUTH Authentication required.");
    assert_eq!(direct[7], "+OK");
    assert_eq!(proxied, direct);

    let (direct, proxied) = both(&server.addr(), proxy.addr(), REFUSALS).await;
    assert!(direct[5].starts_with("-NOPERM"), "{direct:?}");
    assert_eq!(proxied, direct);

    let app: &[&[&str]] = &[
        &["AUTH", "app", "app-pw"],
        &["SET", "app:1", "x"],
        &["GET", "app:1"],
        &["PUBLISH", "news:1", "m"],
        &["MSET", "app:1", "y", "other", "z"],
    ];
    let (direct, proxied) = both(&server.addr(), proxy.addr(), app).await;
    assert_eq!(direct[1], "+OK");
    assert_eq!(proxied, direct);

    // Counted as Redis's acl_access_denied_*: 5 failed logins, 4 commands (FLUSHALL, CONFIG GET,
    // ACL WHOAMI twice), 2 keys, 2 channels.
    let metrics = crate::stats_http::get(proxy.stats_addr(), "/metrics")
        .await
        .1;
    let denied = |reason: &str| {
        let series = format!("haproxy_rs_acl_access_denied_total{{reason=\"{reason}\"}}");
        crate::stats_http::metric(&metrics, &series)
    };
    let counts = ["auth", "cmd", "key", "channel"].map(denied);
    assert_eq!(
        counts,
        [Some(5.0), Some(4.0), Some(2.0), Some(2.0)],
        "{metrics}"
    );

    // Redis's smaller limits before authentication: the same error, then the connection closes.
    let mut many = b"*20\r\n".to_vec();
    for _ in 0..20 {
        many.extend_from_slice(b"$1\r\nx\r\n");
    }
    for addr in [server.addr().parse().expect("addr"), proxy.addr()] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&many).await.unwrap();
        let reply = read_replies(&mut s, 1).await;
        assert_eq!(
            reply,
            ["-ERR Protocol error: unauthenticated multibulk length"],
            "{addr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_removed_on_the_server_is_enforced_by_the_proxy() {
    let (server, proxy) = protected_server().await;
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@{}/", proxy.addr());
    let mut app = redis::Client::open(url("app", "app-pw"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = query(&mut app, &["SET", "app:1", "v"]).await.unwrap();

    // Through the proxy, as an administrator would: it takes effect at once.
    let mut admin = redis::Client::open(url("default", PASSWORD))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = query(&mut admin, &["ACL", "SETUSER", "app", "-set"])
        .await
        .unwrap();
    crate::eventually!(
        Duration::from_secs(5),
        query::<()>(&mut app, &["SET", "app:1", "v"])
            .await
            .is_err_and(|e| e
                .to_string()
                .contains("no permissions to run the 'set' command")),
        "SET refused once the server's rules say so"
    );
    let _: String = query(&mut app, &["GET", "app:1"]).await.unwrap();

    // Straight on the server, behind the proxy's back: within a refresh.
    let mut direct = server.client().await;
    let _: () = query(&mut direct, &["AUTH", PASSWORD]).await.unwrap();
    let _: () = query(&mut direct, &["ACL", "SETUSER", "app", "-get"])
        .await
        .unwrap();
    crate::eventually!(
        Duration::from_secs(15),
        query::<String>(&mut app, &["GET", "app:1"])
            .await
            .is_err_and(|e| e.to_string().contains("'get' command")),
        "GET refused after ACL SETUSER on the server"
    );
    // A password changed on the server: the old one no longer logs in.
    let _: () = query(
        &mut direct,
        &["ACL", "SETUSER", "app", "resetpass", ">new-pw"],
    )
    .await
    .unwrap();
    let replies = raw(
        proxy.addr(),
        &[&["AUTH", "app", "app-pw"], &["AUTH", "app", "new-pw"]],
    )
    .await;
    assert_eq!(
        replies,
        [
            "-WRONGPASS invalid username-password pair or user is disabled.",
            "+OK"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_uses_the_masters_users_before_and_after_a_failover() {
    let topo = Topology::builder().replicas(2).sentinels(3).start().await;
    for s in topo.servers() {
        acl(s, APP).await;
    }
    // A user only the replicas have: it logs in once one of them is the master.
    let old = topo.current_master_addr().await;
    for s in topo.servers().filter(|s| s.addr() != old) {
        acl(
            s,
            &["ACL", "SETUSER", "late", "on", ">late-pw", "~*", "+@all"],
        )
        .await;
    }
    let proxy = ProxyBuilder::sentinel(&topo)
        .with(|c: &mut Config| c.auth.mode = Some(AuthMode::Backend))
        .start(2)
        .await;
    // The servers' default user is `nopass`: without AUTH a client is that user, as directly.
    let open: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["ACL", "WHOAMI"],
        &["AUTH", "late", "late-pw"],
    ];
    crate::eventually!(
        Duration::from_secs(10),
        raw(proxy.addr(), open).await == raw(old.parse().unwrap(), open).await,
        "the open default user as directly"
    );
    let (direct, proxied) = both(&old, proxy.addr(), REFUSALS).await;
    assert_eq!(proxied, direct);

    let new = topo.failover().await;
    assert_ne!(new, old);
    crate::eventually!(
        Duration::from_secs(20),
        raw(proxy.addr(), &[&["AUTH", "late", "late-pw"]]).await == ["+OK"],
        "the new master's users apply"
    );
    let (direct, proxied) = both(&new, proxy.addr(), REFUSALS).await;
    assert_eq!(proxied, direct);
    let app = raw(
        proxy.addr(),
        &[&["AUTH", "app", "app-pw"], &["SET", "app:after", "1"]],
    )
    .await;
    assert_eq!(app, ["+OK", "+OK"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_holds_clients_to_the_nodes_users() {
    let cluster = Cluster::start(3, 0).await;
    for n in &cluster.nodes {
        acl(n, APP).await;
    }
    let proxy = ProxyBuilder::cluster(&cluster)
        .with(|c| c.auth.mode = Some(AuthMode::Backend))
        .start_cluster()
        .await;
    // Redis checks ACLs before redirecting: any node answers these as the proxy must.
    let node = cluster.nodes[0].addr();
    let (direct, proxied) = both(&node, proxy.addr(), REFUSALS).await;
    assert!(
        direct.iter().any(|r| r.starts_with("-NOPERM")),
        "{direct:?}"
    );
    assert_eq!(proxied, direct);
    // The user's keys on every master, split by slot.
    let mut script: Vec<Vec<String>> = vec![vec!["AUTH".into(), "app".into(), "app-pw".into()]];
    for i in 0..12 {
        script.push(vec!["SET".into(), format!("app:{i}"), i.to_string()]);
    }
    script.push(vec![
        "MSET".into(),
        "app:a".into(),
        "1".into(),
        "other".into(),
        "2".into(),
    ]);
    let script: Vec<Vec<&str>> = script
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let script: Vec<&[&str]> = script.iter().map(Vec::as_slice).collect();
    let replies = raw(proxy.addr(), &script).await;
    assert!(replies[..13].iter().all(|r| r == "+OK"), "{replies:?}");
    assert_eq!(
        replies[13],
        "-NOPERM this user has no permissions to access one of the keys used as arguments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_proxy_in_front_of_a_protected_backend_is_shown_in_red() {
    let server = RedisServer::start().await;
    acl(&server, &["CONFIG", "SET", "requirepass", PASSWORD]).await;
    let proxy = ProxyBuilder::servers(vec![server.addr()])
        .with(|c| {
            c.backend.password = Some(MaskedString::new(PASSWORD));
            c.auth.mode = Some(AuthMode::None);
        })
        .start(0)
        .await;
    assert_eq!(raw(proxy.addr(), &[&["SET", "k", "v"]]).await, ["+OK"]);
    let v = stats_json(proxy.stats_addr()).await;
    assert_eq!(v["auth"]["mode"], "none");
    assert_eq!(v["auth"]["open"], true);
    let page = crate::stats_http::get(proxy.stats_addr(), "/").await.1;
    assert!(
        page.contains("<span class=\"bad\">none: clients need no password"),
        "{page}"
    );
}
