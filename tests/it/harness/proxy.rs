//! The proxy under test, run in-process on loopback port 0 (rathole, mini-redis `start_server`).

use std::net::SocketAddr;
use std::time::Duration;

use haproxy_rs::config::{Config, ReadConsistency};
use haproxy_rs::Proxy;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::cluster::Cluster;
use super::sentinel::Topology;

/// How long the proxy may take to learn a topology.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds a proxy config for a test.
pub struct ProxyBuilder {
    cfg: Config,
}

impl ProxyBuilder {
    /// Sentinel mode, pointed at every sentinel of `topo`.
    pub fn sentinel(topo: &Topology) -> Self {
        Self::from_config(Config::for_sentinels(
            topo.sentinel_addrs(),
            topo.master_name(),
        ))
    }

    /// Cluster mode, seeded with every node of `cluster`.
    pub fn cluster(cluster: &Cluster) -> Self {
        Self::from_config(Config::for_cluster(cluster.addrs()))
    }

    /// Static mode over these servers.
    pub fn servers(addrs: Vec<String>) -> Self {
        Self::from_config(Config {
            servers: addrs,
            ..Config::default()
        })
    }

    /// Any config; the listeners are moved to loopback port 0.
    pub fn from_config(mut cfg: Config) -> Self {
        cfg.listen = "127.0.0.1:0".into();
        cfg.read_listen = Some("127.0.0.1:0".into());
        cfg.stats = Some("127.0.0.1:0".into());
        cfg.backend.health_interval_ms = 50;
        cfg.sentinel
            .iter_mut()
            .for_each(|s| s.reconcile_interval_ms = 500);
        ProxyBuilder { cfg }
    }

    /// Reads go to replicas even right after the client's own writes.
    pub fn eventual(mut self) -> Self {
        self.cfg.routing.read_consistency = ReadConsistency::Eventual;
        self
    }

    /// Edits the config.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// Starts the proxy and waits until it knows a master and `replicas` replicas serve reads (in
    /// cluster mode: until its slot map serves every slot).
    pub async fn start(self, replicas: usize) -> TestProxy {
        // `HAPROXY_RS_TEST_LOG=haproxy_rs=debug cargo test ... -- --nocapture` shows the proxy's log.
        if let Ok(filter) = std::env::var("HAPROXY_RS_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let token = CancellationToken::new();
        let proxy = haproxy_rs::start(self.cfg, token.clone())
            .await
            .expect("proxy starts");
        let p = TestProxy { proxy, token };
        p.wait_ready(replicas).await;
        p
    }
}

/// A running proxy; stopped on drop.
pub struct TestProxy {
    /// The proxy handle.
    pub proxy: Proxy,
    token: CancellationToken,
}

impl TestProxy {
    /// Read/write endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }
    /// Read-only endpoint.
    pub fn read_addr(&self) -> SocketAddr {
        self.proxy.read_addr.expect("read listener configured")
    }
    /// Stats page.
    pub fn stats_addr(&self) -> SocketAddr {
        self.proxy.stats_addr.expect("stats configured")
    }
    /// A client of the read/write endpoint.
    pub async fn client(&self) -> MultiplexedConnection {
        super::redis::connect(&self.addr().to_string())
            .await
            .expect("connect to proxy")
    }
    /// A client of the read-only endpoint.
    pub async fn read_client(&self) -> MultiplexedConnection {
        super::redis::connect(&self.read_addr().to_string())
            .await
            .expect("connect to proxy read endpoint")
    }
    /// The master the proxy routes writes to.
    pub fn master(&self) -> Option<String> {
        self.proxy
            .table
            .load()
            .master
            .as_ref()
            .map(|b| b.addr().to_string())
    }
    /// Replicas that currently serve reads.
    pub fn readable_replicas(&self) -> usize {
        self.proxy
            .table
            .load()
            .replicas
            .iter()
            .filter(|r| r.health.serves_reads())
            .count()
    }
    /// Waits until a master is known and `replicas` replicas serve reads; in cluster mode, until
    /// the slot map serves every slot.
    pub async fn wait_ready(&self, replicas: usize) {
        if let Some(cluster) = &self.proxy.cluster {
            crate::eventually!(
                READY_TIMEOUT,
                cluster.map().slots.served() == 16384,
                "proxy's slot map serves all 16384 slots"
            );
            return;
        }
        crate::eventually!(
            READY_TIMEOUT,
            self.master().is_some() && self.readable_replicas() >= replicas,
            "proxy knows a master and {replicas} readable replicas"
        );
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
