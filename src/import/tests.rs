//! The translator, mapping by mapping; every TOML it writes is loaded with the proxy's loader.

use super::*;

const CLASSIC: &str = include_str!("../../tests/fixtures/haproxy/sentinel-role-master.cfg");
const CHART: &str = include_str!("../../tests/fixtures/haproxy/redis-ha-chart.cfg");
const AUTH: &str = include_str!("../../tests/fixtures/haproxy/auth-and-unsupported.cfg");

fn run(text: &str, opts: &Options) -> (Translation, Config) {
    let t = translate(text, opts).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::from_toml(&t.toml, "test").unwrap_or_else(|e| panic!("{e}\n{}", t.toml));
    crate::check_config(&cfg).unwrap();
    (t, cfg)
}

fn static_mode(text: &str) -> (Translation, Config) {
    run(text, &Options::default())
}

fn lost_lines(t: &Translation) -> Vec<usize> {
    t.untranslated().map(|n| n.line).collect()
}

/// A minimal write backend with the role check, around `extra` lines of the frontend side.
fn with_master(front: &str, back: &str) -> String {
    format!(
        "frontend w\n  bind :6379\n{front}  default_backend m\nbackend m\n  option tcp-check\n  tcp-check send info\\ replication\\r\\n\n  tcp-check expect string role:master\n{back}  server a 10.0.0.1:6379 check\n"
    )
}

#[test]
fn the_classic_config_becomes_endpoints_servers_and_timeouts() {
    let (t, cfg) = static_mode(CLASSIC);
    assert_eq!(cfg.listen, "0.0.0.0:6379");
    assert_eq!(cfg.read_listen.as_deref(), Some("0.0.0.0:6380"));
    assert_eq!(cfg.stats.as_deref(), Some("0.0.0.0:8404"));
    assert_eq!(
        cfg.servers,
        ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"],
        "both backends' servers, once each"
    );
    assert!(cfg.sentinel.is_none());
    assert_eq!(cfg.client_timeout_secs, 30);
    assert_eq!(cfg.max_clients, 4096);
    assert_eq!(cfg.backend.connect_timeout_ms, 3000);
    assert_eq!(cfg.backend.command_timeout_ms, 30_000);
    assert_eq!(cfg.backend.health_interval_ms, 1000);
    assert_eq!(lost_lines(&t), [18, 60], "timeout check, stats refresh");
    assert!(t.advice.iter().any(|a| a.contains("--sentinel")));
    assert!(t.toml.contains("# NOTE: static servers mode"));
    assert!(t.toml.contains("#   line 18: timeout check 2s: "));
    assert!(!t.holds_secret);
}

#[test]
fn sentinel_flags_make_a_sentinel_config() {
    let opts = Options {
        sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
        master_name: Some("cache".into()),
        source: "haproxy.cfg".into(),
    };
    let (t, cfg) = run(CLASSIC, &opts);
    let s = cfg.sentinel.unwrap();
    assert_eq!(s.addrs, ["10.0.0.1:26379", "10.0.0.2:26379"]);
    assert_eq!(s.master_name, "cache");
    assert!(cfg.servers.is_empty());
    assert!(!t.advice.iter().any(|a| a.contains("static servers")));
    let server_note = t.notes.iter().find(|n| n.line == 37).unwrap();
    assert_eq!(server_note.kind, NoteKind::NotNeeded);
    assert!(t.toml.starts_with(
        "# haproxy-rs config written by `haproxy-rs import-haproxy` from haproxy.cfg."
    ));
    let err = translate(
        CLASSIC,
        &Options {
            sentinels: opts.sentinels,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("--master-name"), "{err}");
}

#[test]
fn the_redis_ha_chart_gives_its_sentinels_and_the_password_variable() {
    let (t, cfg) = static_mode(CHART);
    let s = cfg.sentinel.unwrap();
    assert_eq!(
        s.addrs,
        ["10.96.0.10:26379", "10.96.0.11:26379", "10.96.0.12:26379"]
    );
    assert_eq!(s.master_name, "mymaster");
    assert_eq!(
        cfg.backend.password, None,
        "an environment password is not written"
    );
    assert!(!t.holds_secret);
    assert!(t
        .advice
        .iter()
        .any(|a| a.contains("REDIS_PASSWORD") && a.contains("${AUTH}")));
    assert_eq!(
        cfg.stats.as_deref(),
        Some("0.0.0.0:9101"),
        "the exporter's port"
    );
    assert_eq!(cfg.client_timeout_secs, 330);
    // timeout check; the health listen, its bind, mode and monitor-uri; the AUTH; use-server.
    assert_eq!(lost_lines(&t), [8, 10, 11, 12, 13, 46, 54]);
    let monitor = t.untranslated().find(|n| n.line == 13).unwrap();
    assert!(monitor.reason.contains("/healthz"));
}

#[test]
fn auth_limits_and_what_is_not_redis_are_reported() {
    let (t, cfg) = static_mode(AUTH);
    assert_eq!(
        cfg.backend.password.as_ref().map(|p| p.expose()),
        Some("s3cr\"et")
    );
    assert_eq!(cfg.backend.username.as_deref(), Some("app"));
    assert!(t.holds_secret);
    assert!(t.advice.iter().any(|a| a.contains("holds the password")));
    assert_eq!(cfg.listen, "127.0.0.1:6379");
    assert_eq!(cfg.read_listen, None);
    assert_eq!(
        cfg.max_clients, 2000,
        "the listen's maxconn, under the global one"
    );
    assert_eq!(cfg.threads, 4);
    assert_eq!(cfg.shutdown_grace_ms, 30_000);
    assert_eq!(cfg.backend.health_interval_ms, 500, "from default-server");
    assert_eq!(cfg.stats.as_deref(), Some("127.0.0.1:8404"));
    let lost = lost_lines(&t);
    for line in [7, 19, 20, 27, 31, 37, 41, 48, 57] {
        assert!(lost.contains(&line), "line {line} in {lost:?}");
    }
    assert!(!lost.contains(&4), "the global maxconn is covered");
    let backup = t.notes.iter().find(|n| n.line == 29).unwrap();
    assert_eq!(backup.kind, NoteKind::NotNeeded);
    for n in &t.notes {
        assert!(
            !n.text.contains("s3cr") && !n.text.contains("hunter2"),
            "{n}"
        );
    }
    let comments: String = t.toml.lines().filter(|l| l.starts_with('#')).collect();
    assert!(!comments.contains("s3cr") && !comments.contains("hunter2"));
}

#[test]
fn bind_tls_becomes_the_tls_table() {
    let text = with_master(
        "",
        "",
    )
    .replace(
        "bind :6379\n",
        "bind :6379 ssl crt /etc/haproxy/redis.pem ca-file /etc/haproxy/ca.pem verify required alpn h2\n",
    );
    let (t, cfg) = static_mode(&text);
    let tls = cfg.tls.unwrap();
    assert_eq!(tls.cert_file, "/etc/haproxy/redis.pem");
    assert_eq!(tls.key_file, "/etc/haproxy/redis.pem");
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/haproxy/ca.pem"));
    assert!(tls.client_auth);
    let alpn = t.untranslated().find(|n| n.line == 2).unwrap();
    assert!(alpn.reason.contains("`alpn h2`"), "{alpn}");
    let (t, cfg) = static_mode(&text.replace(" crt /etc/haproxy/redis.pem", ""));
    assert!(cfg.tls.is_none());
    assert!(t
        .untranslated()
        .any(|n| n.reason.contains("without a `crt`")));
}

#[test]
fn server_tls_with_its_ca_becomes_backend_tls() {
    let text = with_master("", "").replace(
        "server a 10.0.0.1:6379 check\n",
        "server a 10.0.0.1:6379 check ssl verify required ca-file /ca.pem\n",
    );
    let (_, cfg) = static_mode(&text);
    assert!(cfg.backend.tls);
    assert_eq!(cfg.backend.tls_ca_file.as_deref(), Some("/ca.pem"));
    let text = with_master("", "").replace("check\n", "check ssl verify none\n");
    let (t, cfg) = static_mode(&text);
    assert!(!cfg.backend.tls);
    assert!(t.untranslated().any(|n| n.reason.contains("tls_ca_file")));
}

#[test]
fn timeouts_are_converted_and_kept_in_range() {
    let text = format!(
        "defaults\n  timeout connect 5ms\n  timeout server 0\n  timeout client 1500ms\n{}",
        with_master("", "")
    );
    let (t, cfg) = static_mode(&text);
    assert_eq!(cfg.backend.connect_timeout_ms, 10, "raised to the least");
    assert_eq!(cfg.backend.command_timeout_ms, 3_600_000, "none: the most");
    assert_eq!(cfg.client_timeout_secs, 2, "rounded up to seconds");
    assert!(t.toml.contains("(raised to haproxy-rs's least, 10)"));
    // A frontend's own setting wins over the defaults'.
    let text = format!(
        "defaults\n  timeout client 10s\n{}",
        with_master("  timeout client 20s\n", "")
    );
    assert_eq!(static_mode(&text).1.client_timeout_secs, 20);
}

#[test]
fn a_read_frontend_without_a_role_check_over_the_same_servers_is_read_listen() {
    let text = format!(
        "{}frontend r\n  bind :6380\n  default_backend all\nbackend all\n  balance leastconn\n  option redis-check\n  server a 10.0.0.1:6379 check\n",
        with_master("", "")
    );
    let (_, cfg) = static_mode(&text);
    assert_eq!(cfg.read_listen.as_deref(), Some("0.0.0.0:6380"));
    // Over other servers it is another service, not translated.
    let other = text.replace(
        "redis-check\n  server a 10.0.0.1:6379",
        "redis-check\n  server a 10.9.9.9:6379",
    );
    let (t, cfg) = static_mode(&other);
    assert_eq!(cfg.read_listen, None);
    assert!(lost_lines(&t).contains(&9), "the other frontend's header");
}

#[test]
fn listen_sections_and_prometheus_frontends_are_read() {
    let text = "listen redis\n  bind :6379\n  option tcp-check\n  tcp-check expect string role:master\n  server a 10.0.0.1:6379 check\nfrontend prom\n  mode http\n  bind :8405\n  http-request use-service prometheus-exporter if { path /metrics }\n";
    let (t, cfg) = static_mode(text);
    assert_eq!(cfg.listen, "0.0.0.0:6379");
    assert_eq!(cfg.stats.as_deref(), Some("0.0.0.0:8405"));
    assert!(lost_lines(&t).is_empty(), "{:?}", t.notes);
    // With a stats page too, the exporter's frontend is not needed on a port of its own.
    let both = format!("{text}listen stats\n  mode http\n  bind :8404\n  stats enable\n");
    let (t, cfg) = static_mode(&both);
    assert_eq!(cfg.stats.as_deref(), Some("0.0.0.0:8404"));
    assert!(t
        .untranslated()
        .any(|n| n.line == 6 && n.reason.contains("/metrics")));
}

#[test]
fn without_a_stats_page_the_default_is_written_and_said() {
    let (_, cfg) = static_mode(&with_master("", ""));
    assert_eq!(cfg.stats.as_deref(), Some("0.0.0.0:8404"));
}

#[test]
fn a_file_without_a_redis_frontend_or_with_bad_syntax_is_refused_with_the_line() {
    let err = translate(
        "frontend web\n  mode http\n  bind :80\n  default_backend b\nbackend b\n  mode http\n  server a 1.1.1.1:80\n",
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Shape(_)), "{err}");
    let err = translate("global\n  log \"/dev/log local0\n", &Options::default()).unwrap_err();
    assert_eq!(err.to_string(), "line 2: unmatched quote");
}

#[test]
fn other_credentials_and_conditional_blocks_are_untranslated() {
    let text = format!(
        "{}frontend r\n  bind :6380\n  default_backend s\nbackend s\n  tcp-check send AUTH\\ other\\r\\n\n  tcp-check expect string role:slave\n.if defined(EXTRA)\n  server b 10.0.0.2:6379 check\n.endif\n",
        with_master("", "  tcp-check send AUTH\\ one\\r\\n\n")
    );
    let (t, cfg) = static_mode(&text);
    assert_eq!(
        cfg.backend.password.as_ref().map(|p| p.expose()),
        Some("one")
    );
    let other = t.untranslated().find(|n| n.line == 14).unwrap();
    assert!(other.reason.contains("other credentials"), "{other}");
    assert_eq!(other.text, "tcp-check send AUTH ****");
    let lost = lost_lines(&t);
    for line in [16, 17, 18] {
        assert!(lost.contains(&line), "line {line} in {lost:?}");
    }
}
