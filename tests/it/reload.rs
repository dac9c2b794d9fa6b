//! Reloading the config without dropping anyone (issue 15 part 2), with the real binary: `SIGHUP`
//! and `POST /reload` read the file again and apply what can change live to new and connected
//! clients alike (those keep their connections and transactions); a config that does not validate
//! is refused whole; what needs a restart is reported and left as it runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::eventually;
use crate::harness::ports::free_port;
use crate::harness::{RedisServer, Topology};
use crate::restart::Binary;
use crate::security::send;
use crate::stats_http::{request, stats_json};

const TOKEN: &str = "reload-test-token-0123456789";

/// The config's lines after the listeners and the server: the admin token, then `extra`.
fn lines(extra: &str) -> String {
    format!("admin_token = \"{TOKEN}\"\n{extra}")
}

fn start(server: &RedisServer, extra: &str) -> Binary {
    Binary::spawn(
        &server.addr(),
        (free_port(), free_port()),
        &lines(extra),
        &[],
    )
}

/// Writes the config file again with `extra` (and the same admin token).
fn rewrite(proxy: &Binary, extra: &str) {
    proxy.rewrite_config(&lines(extra));
}

/// `POST /reload` with the admin token: (status, body).
async fn post_reload(stats: SocketAddr) -> (u16, String) {
    let host = format!("Host: {stats}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, _, body) = request(stats, "POST", "/reload", &[&host, &auth]).await;
    (status, body)
}

/// `POST /reload`, which must apply exactly `changed` and leave nothing for a restart.
async fn reload_applies(stats: SocketAddr, changed: &[&str]) {
    let (status, body) = post_reload(stats).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(outcome["changed"], serde_json::json!(changed), "{body}");
    assert_eq!(outcome["needs_restart"], serde_json::json!([]), "{body}");
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(send(&mut s, &[&["PING"]]).await, ["+PONG"]);
    s
}

/// How many reloads the stats say were applied.
async fn applied(stats: SocketAddr) -> u64 {
    stats_json(stats).await["reloads"]["applied_total"]
        .as_u64()
        .unwrap_or(0)
}

const KEYS_REFUSED: &str =
    "-ERR haproxy-rs: 'KEYS' is refused by the command policy (commands.deny)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_command_policy_to_new_and_connected_clients() {
    let server = RedisServer::start().await;
    let proxy = start(&server, "");
    proxy.wait_healthy().await;
    let mut connected = connect(proxy.addr).await;
    assert_eq!(send(&mut connected, &[&["KEYS", "nothing*"]]).await, ["*0"]);
    // A transaction open across the reload is kept and runs.
    let mut in_multi = connect(proxy.addr).await;
    assert_eq!(
        send(&mut in_multi, &[&["MULTI"], &["SET", "reload:tx", "1"]]).await,
        ["+OK", "+QUEUED"]
    );

    rewrite(&proxy, "[commands]\ndeny = [\"keys\"]\n");
    proxy.sighup();
    eventually!(
        Duration::from_secs(10),
        applied(proxy.stats).await == 1,
        "the reload is applied; log: {}",
        proxy.log()
    );

    let mut new = connect(proxy.addr).await;
    assert_eq!(send(&mut new, &[&["KEYS", "*"]]).await, [KEYS_REFUSED]);
    // The connected client keeps its connection and gets the new policy at its next command.
    assert_eq!(
        send(&mut connected, &[&["KEYS", "*"]]).await,
        [KEYS_REFUSED]
    );
    assert_eq!(send(&mut connected, &[&["PING"]]).await, ["+PONG"]);
    assert_eq!(send(&mut in_multi, &[&["EXEC"]]).await, ["*1\r\n+OK"]);
    let stats = stats_json(proxy.stats).await;
    let last = &stats["reloads"]["last"];
    assert_eq!(last["outcome"], "applied", "{stats}");
    assert_eq!(last["changed"], serde_json::json!(["commands"]), "{stats}");
    assert_eq!(last["needs_restart"], serde_json::json!([]), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_validate_is_refused_whole() {
    let server = RedisServer::start().await;
    let proxy = start(&server, "client_timeout_secs = 0\n");
    proxy.wait_healthy().await;
    let mut connected = connect(proxy.addr).await;

    // A change that would apply live, beside one that does not validate: neither is applied.
    rewrite(
        &proxy,
        "client_timeout_secs = 1\n[commands]\ndeny = [\"keys\", \"flush all\"]\n",
    );
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 422, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(outcome["outcome"], "refused", "{body}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("commands.deny") && error.contains("flush all"),
        "{body}"
    );

    assert_eq!(send(&mut connected, &[&["KEYS", "nothing*"]]).await, ["*0"]);
    let mut new = connect(proxy.addr).await;
    assert_eq!(send(&mut new, &[&["KEYS", "nothing*"]]).await, ["*0"]);
    // The timeout was not applied either: an idle client stays past it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(send(&mut new, &[&["PING"]]).await, ["+PONG"]);

    let (_, metrics) = crate::stats_http::get(proxy.stats, "/metrics").await;
    assert!(
        metrics.contains("haproxy_rs_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("haproxy_rs_config_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    let (_, page) = crate::stats_http::get(proxy.stats, "/").await;
    assert!(page.contains("REFUSED"), "the page shows the refusal");

    // Fixed, the same file applies.
    rewrite(
        &proxy,
        "client_timeout_secs = 1\n[commands]\ndeny = [\"keys\"]\n",
    );
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send(&mut new, &[&["KEYS", "*"]]).await, [KEYS_REFUSED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_reported_and_left_as_they_run() {
    let server = RedisServer::start().await;
    let proxy = start(&server, "");
    proxy.wait_healthy().await;
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The base config names `listen` already (a second one would not parse): the new address
    // is a read-only endpoint's, which needs a restart as well.
    rewrite(
        &proxy,
        &format!("read_listen = \"{elsewhere}\"\nmax_pipeline = 64\n"),
    );
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        outcome["changed"],
        serde_json::json!(["max_pipeline"]),
        "{body}"
    );
    assert_eq!(
        outcome["needs_restart"],
        serde_json::json!(["read_listen"]),
        "{body}"
    );
    assert!(
        TcpStream::connect(elsewhere).await.is_err(),
        "nothing listens there before a restart"
    );
    let _ = connect(proxy.addr).await;
    let (_, metrics) = crate::stats_http::get(proxy.stats, "/metrics").await;
    assert!(
        metrics.contains("haproxy_rs_config_restart_pending 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_needs_the_admin_token() {
    let server = RedisServer::start().await;
    let proxy = start(&server, "");
    proxy.wait_healthy().await;
    let host = format!("Host: {}", proxy.stats);
    let (status, _, body) = request(proxy.stats, "POST", "/reload", &[&host]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(applied(proxy.stats).await, 0);
    assert_eq!(stats_json(proxy.stats).await["reloads"]["refused_total"], 0);
}

/// The sentinels the stats page shows links to.
async fn linked_sentinels(stats: SocketAddr) -> Vec<String> {
    let json = stats_json(stats).await;
    let mut addrs: Vec<String> = json["sentinels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["addr"].as_str().map(str::to_owned))
        .collect();
    addrs.sort();
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_proxy_to_other_sentinels_without_a_fence() {
    let topo = Topology::start(1, 3).await;
    let addrs = topo.sentinel_addrs();
    let sentinel = |list: &[String]| {
        let quoted: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[sentinel]\naddrs = [{}]\nmaster_name = \"{}\"\n",
            quoted.join(", "),
            topo.master_name()
        )
    };
    let ports = (free_port(), free_port());
    let proxy = Binary::spawn_with("", ports, &lines(&sentinel(&addrs[..1])), &[]);
    proxy.wait_healthy().await;
    assert_eq!(linked_sentinels(proxy.stats).await, addrs[..1]);

    rewrite(&proxy, &sentinel(&addrs[1..]));
    reload_applies(proxy.stats, &["sentinel.addrs"]).await;
    let mut expected = addrs[1..].to_vec();
    expected.sort();
    eventually!(
        Duration::from_secs(10),
        linked_sentinels(proxy.stats).await == expected,
        "the links follow the new list"
    );

    // The sentinel the proxy followed before hangs: with the old list that is every sentinel,
    // and writes would be fenced after sentinel_loss_fence_ms (2 s).
    topo.sentinels[0].stop();
    let mut client = connect(proxy.addr).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        let key = format!("reload:sentinels:{n}");
        assert_eq!(send(&mut client, &[&["SET", &key, "1"]]).await, ["+OK"]);
        let stats = stats_json(proxy.stats).await;
        assert!(stats["writes_fenced"].is_null(), "writes fenced: {stats}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    topo.sentinels[0].cont();
}

/// A TLS client's `PING` through `addr` with `pki`'s CA: `+PONG`, or why not.
async fn tls_ping(addr: SocketAddr, pki: &crate::harness::tls::Pki) -> std::io::Result<String> {
    let mut s =
        crate::harness::tls::tls_connect(&addr.to_string(), pki.client_config(None)).await?;
    let reply = crate::harness::tls::exchange(&mut s, b"PING\r\n", 7).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_renewed_certificate_to_new_clients() {
    use crate::harness::tls::Pki;
    let server = RedisServer::start().await;
    let (old, renewed) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let install = |pki: &Pki| {
        std::fs::copy(pki.path("server.pem"), &cert).expect("copy the certificate");
        std::fs::copy(pki.path("server.key"), &key).expect("copy the key");
    };
    install(&old);
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let proxy = start(&server, &tls);
    proxy.wait_healthy().await;
    let mut connected =
        crate::harness::tls::tls_connect(&proxy.addr.to_string(), old.client_config(None))
            .await
            .expect("TLS with the first certificate");
    assert!(
        tls_ping(proxy.addr, &renewed).await.is_err(),
        "not trusted yet"
    );

    // The same file names, new contents: the config is unchanged, the files are not.
    install(&renewed);
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        outcome["changed"],
        serde_json::json!(["tls (certificate files)"]),
        "{body}"
    );
    assert_eq!(
        tls_ping(proxy.addr, &renewed).await.ok().as_deref(),
        Some("+PONG\r\n")
    );
    assert!(
        tls_ping(proxy.addr, &old).await.is_err(),
        "the old certificate is gone"
    );
    // A connection made before the reload keeps its session.
    let reply = crate::harness::tls::exchange(&mut connected, b"PING\r\n", 7).await;
    assert_eq!(reply.ok().as_deref(), Some(&b"+PONG\r\n"[..]));

    // A key that does not fit the certificate refuses the reload; the renewed one stays.
    std::fs::copy(old.path("server.key"), &key).expect("copy a wrong key");
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("tls.key_file"), "{body}");
    assert_eq!(
        tls_ping(proxy.addr, &renewed).await.ok().as_deref(),
        Some("+PONG\r\n")
    );
}

/// A client's protocol error: the proxy answers it, logs it at debug level, and closes.
async fn protocol_error(addr: SocketAddr) {
    let reply = crate::security::until_closed(addr, b"*1\r\n$x\r\n").await;
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
}

const DEBUG_LINE: &str = "client protocol error";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_log_filter_of_the_file() {
    let server = RedisServer::start().await;
    let backend = format!("servers = [\"{}\"]\n", server.addr());
    let ports = (free_port(), free_port());
    // No `--log` and no HAPROXY_RS_LOG: the file's filter counts.
    let proxy = Binary::spawn_logging(&backend, ports, &lines("log = \"info\"\n"), None, &[]);
    proxy.wait_healthy().await;
    protocol_error(proxy.addr).await;
    assert!(!proxy.log().contains(DEBUG_LINE), "{}", proxy.log());

    rewrite(&proxy, "log = \"haproxy_rs=debug\"\n");
    reload_applies(proxy.stats, &["log"]).await;
    protocol_error(proxy.addr).await;
    eventually!(
        Duration::from_secs(10),
        proxy.log().contains(DEBUG_LINE),
        "a debug-level line after the reload; log: {}",
        proxy.log()
    );

    // A filter that does not parse refuses the reload, naming the key; the filter stays.
    rewrite(&proxy, "log = \"haproxy_rs=loud\"\n");
    let (status, body) = post_reload(proxy.stats).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("`log`"), "{body}");
    let before = proxy.log().matches(DEBUG_LINE).count();
    protocol_error(proxy.addr).await;
    eventually!(
        Duration::from_secs(10),
        proxy.log().matches(DEBUG_LINE).count() > before,
        "still at debug level; log: {}",
        proxy.log()
    );
}

/// `SENTINEL REPLICAS <name>` on `sentinel`: the replicas' `ip:port`.
async fn sentinel_replicas(sentinel: &crate::harness::Sentinel, name: &str) -> Vec<String> {
    let mut c = sentinel.client().await;
    let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("REPLICAS")
        .arg(name)
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    replicas
        .iter()
        .filter_map(|r| Some(format!("{}:{}", r.get("ip")?, r.get("port")?)))
        .collect()
}

async fn get(server: &RedisServer, key: &str) -> Option<String> {
    crate::security::query(&mut server.client().await, &["GET", key])
        .await
        .expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_naming_another_master_group_moves_writes_and_reads_to_it() {
    let topo = Topology::start(1, 1).await;
    // A second group under the same sentinel: a master and its replica.
    let other = RedisServer::start().await;
    let other_replica = RedisServer::start_replica_of(&other).await;
    let sentinel = &topo.sentinels[0];
    let mut admin = sentinel.client().await;
    let monitored: String = redis::cmd("SENTINEL")
        .arg("MONITOR")
        .arg("other")
        .arg("127.0.0.1")
        .arg(other.port())
        .arg(1)
        .query_async(&mut admin)
        .await
        .expect("SENTINEL MONITOR");
    assert_eq!(monitored, "OK");
    eventually!(
        Duration::from_secs(20),
        sentinel_replicas(sentinel, "other").await == [other_replica.addr()],
        "the sentinel lists the other group's replica"
    );
    let config = |name: &str| {
        lines(&format!(
            "[sentinel]\naddrs = [\"{}\"]\nmaster_name = \"{name}\"\n",
            sentinel.addr()
        ))
    };
    let proxy = Binary::spawn_with(
        "",
        (free_port(), free_port()),
        &config(topo.master_name()),
        &[],
    );
    proxy.wait_healthy().await;
    let mut client = connect(proxy.addr).await;
    let set = |v: &'static str| [["SET", "group:key", v]];
    assert_eq!(send(&mut client, &[&set("one")[0]]).await, ["+OK"]);
    assert_eq!(get(&topo.master, "group:key").await.as_deref(), Some("one"));
    let old_reads = topo.replicas[0].commandstats("get").await;

    proxy.rewrite_config(&config("other"));
    reload_applies(proxy.stats, &["sentinel.master_name"]).await;
    eventually!(
        Duration::from_secs(10),
        {
            let stats = stats_json(proxy.stats).await;
            stats["master_name"] == "other" && stats["master"] == other.addr()
        },
        "the stats name the other group and its master; log: {}",
        proxy.log()
    );
    let (_, metrics) = crate::stats_http::get(proxy.stats, "/metrics").await;
    assert!(metrics.contains("master_name=\"other\""), "{metrics}");

    // The client connected before the reload writes to the other group's master now.
    assert_eq!(send(&mut client, &[&set("two")[0]]).await, ["+OK"]);
    assert_eq!(get(&other, "group:key").await.as_deref(), Some("two"));
    assert_eq!(get(&topo.master, "group:key").await.as_deref(), Some("one"));
    // Reads go to the other group's replica, none to the first group's.
    let mut reader = connect(proxy.addr).await;
    eventually!(
        Duration::from_secs(10),
        {
            send(&mut reader, &[&["GET", "group:key"]]).await;
            other_replica.commandstats("get").await > 0
        },
        "a read reaches the other group's replica"
    );
    assert_eq!(topo.replicas[0].commandstats("get").await, old_reads);
}

/// The addresses of the backends the stats page shows.
async fn listed_backends(stats: SocketAddr) -> Vec<String> {
    let json = stats_json(stats).await;
    json["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["addr"].as_str().map(str::to_owned))
        .collect()
}

/// How many clients `server` has (this query's own connection included).
async fn connected_clients(server: &RedisServer) -> String {
    crate::harness::redis::info_field(&server.info("clients").await, "connected_clients")
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_other_static_servers_routes_to_them_and_lets_the_old_go() {
    let (old, new) = (RedisServer::start().await, RedisServer::start().await);
    let extra = "stats_forget_after_secs = 1\n";
    let servers = |s: &RedisServer| format!("servers = [\"{}\"]\n{extra}", s.addr());
    let proxy = Binary::spawn_with("", (free_port(), free_port()), &lines(&servers(&old)), &[]);
    proxy.wait_healthy().await;
    let mut client = connect(proxy.addr).await;
    assert_eq!(
        send(&mut client, &[&["SET", "static:key", "one"]]).await,
        ["+OK"]
    );
    assert_eq!(get(&old, "static:key").await.as_deref(), Some("one"));

    proxy.rewrite_config(&lines(&servers(&new)));
    reload_applies(proxy.stats, &["servers"]).await;
    eventually!(
        Duration::from_secs(10),
        stats_json(proxy.stats).await["master"] == new.addr(),
        "the new server is the master; log: {}",
        proxy.log()
    );
    assert_eq!(
        send(&mut client, &[&["SET", "static:key", "two"]]).await,
        ["+OK"]
    );
    assert_eq!(get(&new, "static:key").await.as_deref(), Some("two"));
    assert_eq!(get(&old, "static:key").await.as_deref(), Some("one"));
    // The old server leaves the page after stats_forget_after_secs, and its health checks and
    // connections end.
    eventually!(
        Duration::from_secs(10),
        listed_backends(proxy.stats).await == [new.addr()],
        "only the new server is listed"
    );
    eventually!(
        Duration::from_secs(10),
        connected_clients(&old).await == "1",
        "the proxy's connections to the old server are closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_other_cluster_seeds_learns_the_slot_map_from_them() {
    let cluster = crate::harness::Cluster::start(3, 0).await;
    let seeds = |addrs: &[String]| {
        let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        lines(&format!("[cluster]\nseeds = [{}]\n", quoted.join(", ")))
    };
    // A seed nobody listens on: the proxy starts without a slot map.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let proxy = Binary::spawn_with("", (free_port(), free_port()), &seeds(&[nowhere]), &[]);
    eventually!(
        Duration::from_secs(10),
        crate::restart::healthz(proxy.stats).await.map(|(s, _)| s) == Some(503),
        "the proxy answers, without a slot map; log: {}",
        proxy.log()
    );

    proxy.rewrite_config(&seeds(&cluster.addrs()[1..2]));
    reload_applies(proxy.stats, &["cluster.seeds"]).await;
    proxy.wait_healthy().await;
    let mut client = connect(proxy.addr).await;
    assert_eq!(
        send(&mut client, &[&["SET", "seeds:key", "v"]]).await,
        ["+OK"]
    );
    let map = cluster.slot_map().await;
    assert_eq!(
        get(cluster.owner(&map, "seeds:key"), "seeds:key")
            .await
            .as_deref(),
        Some("v")
    );
}
