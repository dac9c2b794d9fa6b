//! TLS on both legs: clients to the proxy (`[tls]`, with and without client certificates) and
//! the proxy to a real `redis-server` that speaks TLS only (`[backend] tls`).
//!
//! Clients: a raw tokio-rustls client sending RESP, and `redis-cli --tls` (the Rust `redis`
//! crate's rustls feature would pull a second crypto provider into the build).

use std::time::Duration;

use haproxy_rs::config::{Config, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::tls::{exchange, tls_connect, Pki, TlsRedis};
use crate::harness::{ports, MASTER_NAME};

/// A static-mode proxy in front of `redis`, TLS to it, and TLS to clients (`client_auth` on or off).
async fn tls_proxy(pki: &Pki, redis: &TlsRedis, client_auth: bool) -> TestProxy {
    let mut cfg = Config {
        servers: vec![redis.addr()],
        ..Config::default()
    };
    cfg.backend.tls = true;
    cfg.backend.tls_ca_file = Some(pki.file("ca.pem"));
    cfg.tls = Some(TlsConfig {
        cert_file: pki.file("server.pem"),
        key_file: pki.file("server.key"),
        ca_file: client_auth.then(|| pki.file("ca.pem")),
        client_auth,
        handshake_timeout_ms: 2000,
    });
    ProxyBuilder::from_config(cfg).start(0).await
}

async fn redis_cli(
    port: u16,
    pki: &Pki,
    cert: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    // Bounded: a TLS problem must fail the test, not hang it.
    // tokio's Command: the proxy's accept loop runs on this test's runtime.
    let mut c = Command::new("timeout");
    c.args(["10", "redis-cli", "--tls", "--cacert", &pki.file("ca.pem")]);
    if let Some(name) = cert {
        c.args(["--cert", &pki.file(&format!("{name}.pem"))]);
        c.args(["--key", &pki.file(&format!("{name}.key"))]);
    }
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    c.args(args);
    c.output().await.expect("run redis-cli")
}

const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";

#[tokio::test]
async fn commands_work_over_tls_on_both_legs() {
    let pki = Pki::new();
    // TLS only: the backend has no plaintext port, so every reply below crossed TLS twice.
    let redis = TlsRedis::start(&pki, false).await;
    let proxy = tls_proxy(&pki, &redis, false).await;

    let mut c = tls_connect(&proxy.addr().to_string(), pki.client_config(None))
        .await
        .expect("TLS handshake with the proxy");
    let reply = exchange(&mut c, SET, 5).await.expect("SET over TLS");
    assert_eq!(reply, b"+OK\r\n");
    let reply = exchange(&mut c, GET, 11).await.expect("GET over TLS");
    assert_eq!(reply, b"$5\r\nvalue\r\n");
    // A pipeline larger than one TLS record.
    let big = "x".repeat(40_000);
    let set_big = format!(
        "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{big}\r\n",
        big.len()
    );
    let mut pipeline = Vec::new();
    for _ in 0..10 {
        pipeline.extend_from_slice(set_big.as_bytes());
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    let one = format!("+OK\r\n${}\r\n{big}\r\n", big.len());
    let reply = exchange(&mut c, &pipeline, one.len() * 10)
        .await
        .expect("pipeline over TLS");
    assert_eq!(reply, one.repeat(10).as_bytes());

    // A transaction runs on a connection pinned to the client, over TLS too.
    let multi =
        b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nt\r\n$1\r\n1\r\n*1\r\n$4\r\nEXEC\r\n";
    let expected = b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n";
    let reply = exchange(&mut c, multi, expected.len())
        .await
        .expect("MULTI/EXEC over TLS");
    assert_eq!(reply, expected);

    // A client that half-closes TCP without TLS's close_notify still gets its replies, as over TCP.
    let mut h = tls_connect(&proxy.addr().to_string(), pki.client_config(None))
        .await
        .expect("TLS handshake with the proxy");
    h.write_all(&[SET, GET].concat()).await.expect("write");
    h.flush().await.expect("flush");
    h.get_mut().0.shutdown().await.expect("TCP half-close");
    let mut replies = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), h.read_to_end(&mut replies)).await;
    assert_eq!(replies, b"+OK\r\n$5\r\nvalue\r\n");

    // The read-only endpoint speaks TLS too.
    let mut r = tls_connect(&proxy.read_addr().to_string(), pki.client_config(None))
        .await
        .expect("TLS handshake with the read endpoint");
    let reply = exchange(&mut r, GET, 11)
        .await
        .expect("GET on the read endpoint");
    assert_eq!(reply, b"$5\r\nvalue\r\n");

    let out = redis_cli(proxy.addr().port(), &pki, None, &["SET", "cli", "42"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let out = redis_cli(proxy.addr().port(), &pki, None, &["GET", "cli"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
    // And the write reached the TLS-only server.
    let out = redis_cli(redis.port(), &pki, Some("client"), &["GET", "cli"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
}

#[tokio::test]
async fn plaintext_client_on_the_tls_port_is_closed() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false).await;
    let proxy = tls_proxy(&pki, &redis, false).await;

    let mut plain = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("TCP connect");
    // Whatever comes back (a TLS alert at most) is no RESP reply, and the connection ends.
    let reply = exchange(&mut plain, b"PING\r\n", usize::MAX).await;
    let bytes = reply.unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("PONG"),
        "plaintext PING answered: {bytes:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the proxy kept a plaintext client open");

    // A silent client is closed after the handshake timeout (2 s here).
    let mut silent = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("TCP connect");
    let closed = tokio::time::timeout(Duration::from_secs(6), silent.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a client that never started the handshake was kept open"
    );

    // TLS clients still get served meanwhile.
    let mut c = tls_connect(&proxy.addr().to_string(), pki.client_config(None))
        .await
        .expect("TLS handshake");
    assert_eq!(
        exchange(&mut c, b"PING\r\n", 7).await.unwrap(),
        b"+PONG\r\n"
    );
}

#[tokio::test]
async fn client_certificates_are_required_with_client_auth() {
    let pki = Pki::new();
    // The backend asks the proxy for a certificate too; the proxy has none configured, so this
    // server does not (tls-auth-clients no) — see `backend_client_certificate_is_presented`.
    let redis = TlsRedis::start(&pki, false).await;
    let proxy = tls_proxy(&pki, &redis, true).await;
    let addr = proxy.addr().to_string();

    let mut ok = tls_connect(&addr, pki.client_config(Some("client")))
        .await
        .expect("TLS handshake with a client certificate");
    assert_eq!(
        exchange(&mut ok, b"PING\r\n", 7).await.unwrap(),
        b"+PONG\r\n"
    );

    // With TLS 1.3 the client finishes its side before the server checks the certificate:
    // the refusal shows on the first exchange.
    for (what, cert) in [
        ("no certificate", None),
        ("a foreign CA's", Some("stranger")),
    ] {
        let refused = match tls_connect(&addr, pki.client_config(cert)).await {
            Err(_) => true,
            Ok(mut s) => match exchange(&mut s, b"PING\r\n", 7).await {
                Err(_) => true,
                Ok(reply) => reply.is_empty(),
            },
        };
        assert!(refused, "a client with {what} certificate was served");
    }

    let out = redis_cli(proxy.addr().port(), &pki, Some("client"), &["PING"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{out:?}"
    );
    let out = redis_cli(proxy.addr().port(), &pki, None, &["PING"]).await;
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{out:?}"
    );
}

#[tokio::test]
async fn backend_client_certificate_is_presented() {
    let pki = Pki::new();
    // tls-auth-clients yes: the server refuses connections without a certificate from its CA.
    let redis = TlsRedis::start(&pki, true).await;
    let mut cfg = Config {
        servers: vec![redis.addr()],
        ..Config::default()
    };
    cfg.backend.tls = true;
    cfg.backend.tls_ca_file = Some(pki.file("ca.pem"));
    cfg.backend.tls_cert_file = Some(pki.file("client.pem"));
    cfg.backend.tls_key_file = Some(pki.file("client.key"));
    // Plaintext clients: the two legs are configured independently.
    let proxy = ProxyBuilder::from_config(cfg).start(0).await;
    let mut c = crate::harness::redis::connect(&proxy.addr().to_string())
        .await
        .expect("plaintext client");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .expect("SET through the proxy");
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .expect("GET");
    assert_eq!(v, "v");
}

#[tokio::test]
async fn backend_with_the_wrong_name_is_not_trusted() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false).await;
    let mut cfg = Config {
        servers: vec![redis.addr()],
        ..Config::default()
    };
    cfg.backend.tls = true;
    cfg.backend.tls_ca_file = Some(pki.file("ca.pem"));
    cfg.backend.tls_server_name = Some("redis.example.com".into());
    let proxy = ProxyBuilder::from_config(cfg).launch().await;
    let mut c = crate::harness::redis::connect(&proxy.addr().to_string())
        .await
        .expect("plaintext client");
    let log = redis.dir().join("server.log");
    crate::eventually!(
        Duration::from_secs(5),
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("Error accepting a client connection")),
        "the proxy aborted a TLS handshake with {}",
        redis.addr()
    );
    let r: redis::RedisResult<String> = redis::cmd("GET").arg("k").query_async(&mut c).await;
    assert!(
        r.is_err(),
        "served through a server whose certificate names another host: {r:?}"
    );
    assert!(
        proxy.master().is_none(),
        "the health check trusted the server"
    );
}

#[tokio::test]
async fn a_bad_certificate_file_stops_the_start_with_its_key() {
    let pki = Pki::new();
    let mut cfg = Config {
        servers: vec!["127.0.0.1:1".into()],
        listen: "127.0.0.1:0".into(),
        stats: None,
        ..Config::default()
    };
    cfg.tls = Some(TlsConfig {
        cert_file: pki.file("missing.pem"),
        key_file: pki.file("server.key"),
        ..TlsConfig::default()
    });
    let Err(e) = haproxy_rs::start(cfg, tokio_util::sync::CancellationToken::new()).await else {
        panic!("started with a missing certificate");
    };
    assert!(e.to_string().contains("tls.cert_file"), "{e}");
}

#[tokio::test]
async fn sentinel_mode_over_tls_to_sentinels_and_servers() {
    let pki = Pki::new();
    let master = TlsRedis::start(&pki, false).await;
    let sentinel = TlsRedis::start_sentinel(&pki, &master).await;
    let mut cfg = Config::for_sentinels(vec![sentinel.addr()], MASTER_NAME);
    if let Some(s) = cfg.sentinel.as_mut() {
        s.tls = true;
        s.tls_ca_file = Some(pki.file("ca.pem"));
    }
    cfg.backend.tls = true;
    cfg.backend.tls_ca_file = Some(pki.file("ca.pem"));
    // The master is learnt from the sentinel (over TLS), then checked and used over TLS.
    let proxy = ProxyBuilder::from_config(cfg).start(0).await;
    assert_eq!(proxy.master().as_deref(), Some(master.addr().as_str()));
    let mut c = crate::harness::redis::connect(&proxy.addr().to_string())
        .await
        .expect("plaintext client");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .expect("SET through the proxy");
    let out = redis_cli(master.port(), &pki, None, &["GET", "k"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v", "{out:?}");
}

#[tokio::test]
async fn cluster_mode_over_tls_to_every_node() {
    let pki = Pki::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let bus = ports::free_port();
        let extra = format!(
            "save \"\"\nappendonly no\ntls-auth-clients no\ntls-cluster yes\n\
             cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n\
             cluster-port {bus}\n"
        );
        nodes.push(TlsRedis::start_with(&pki, &extra).await);
    }
    let addrs: Vec<String> = nodes.iter().map(TlsRedis::addr).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = redis_cli(nodes[0].port(), &pki, None, &create).await;
    assert!(out.status.success(), "redis-cli --cluster create: {out:?}");
    for node in &nodes {
        crate::eventually!(
            Duration::from_secs(15),
            String::from_utf8_lossy(
                &redis_cli(node.port(), &pki, None, &["CLUSTER", "INFO"])
                    .await
                    .stdout
            )
            .contains("cluster_state:ok"),
            "node {} reports cluster_state:ok",
            node.addr()
        );
    }
    let mut cfg = Config::for_cluster(addrs);
    cfg.backend.tls = true;
    cfg.backend.tls_ca_file = Some(pki.file("ca.pem"));
    // Ready once the slot map, fetched over TLS, serves all 16384 slots.
    let proxy = ProxyBuilder::from_config(cfg).start(0).await;
    let mut c = crate::harness::redis::connect(&proxy.addr().to_string())
        .await
        .expect("plaintext client");
    // Keys on every node: the split parts go to three TLS connections.
    let keys: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg(k);
    }
    let () = mset
        .query_async(&mut c)
        .await
        .expect("MSET through the proxy");
    let values: Vec<String> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .expect("MGET through the proxy");
    assert_eq!(values, keys);
}
