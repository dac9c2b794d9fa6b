//! The proxy under test, run in-process on loopback port 0 (rathole, mini-redis `start_server`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use haproxy_rs::cluster::ClusterMap;
use haproxy_rs::config::{Config, ReadConsistency};
use haproxy_rs::stats::ClusterSnapshot;
use haproxy_rs::Proxy;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::cluster::Cluster;
use super::sentinel::Topology;

/// The admin token of the tests that run admin actions ([`ProxyBuilder::admin_token`]).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long the proxy may take to learn a topology.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds a proxy config for a test.
pub struct ProxyBuilder {
    cfg: Config,
    /// Cluster mode: (masters, replicas per master) the proxy must know before it is ready.
    cluster_shape: Option<(usize, usize)>,
}

impl ProxyBuilder {
    /// Sentinel mode, pointed at every sentinel of `topo`.
    pub fn sentinel(topo: &Topology) -> Self {
        Self::from_config(Config::for_sentinels(
            topo.sentinel_addrs(),
            topo.master_name(),
        ))
    }

    /// Static mode over these servers.
    pub fn servers(addrs: Vec<String>) -> Self {
        Self::from_config(Config {
            servers: addrs,
            ..Config::default()
        })
    }

    /// Cluster mode, seeded with every node of `cluster`; [`start_cluster`](Self::start_cluster)
    /// waits until the proxy's map has the cluster's masters and replicas.
    pub fn cluster(cluster: &Cluster) -> Self {
        let mut b = Self::from_config(Config::for_cluster(cluster.addrs()));
        b.cluster_shape = Some((cluster.master_count, cluster.replicas_per_master));
        b
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
        ProxyBuilder {
            cfg,
            cluster_shape: None,
        }
    }

    /// Reads go to replicas even right after the client's own writes.
    pub fn eventual(mut self) -> Self {
        self.cfg.routing.read_consistency = ReadConsistency::Eventual;
        self
    }

    /// Cluster mode: the slot map is fetched again only on `MOVED` (and unreachable nodes), not
    /// periodically, so a test sees the proxy learn of a moved slot from the redirection itself.
    pub fn refresh_only_on_moved(self) -> Self {
        self.with(|c| {
            if let Some(cluster) = c.cluster.as_mut() {
                cluster.refresh_interval_ms = 600_000;
            }
        })
    }

    /// Sets the admin token admin actions on the stats listener need.
    pub fn admin_token(self, token: &str) -> Self {
        self.with(|c| c.admin_token = Some(haproxy_rs::config::MaskedString::new(token)))
    }

    /// Edits the config.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// Starts the proxy and waits until it knows a master and `replicas` replicas serve reads (in
    /// cluster mode: until its slot map serves every slot).
    pub async fn start(self, replicas: usize) -> TestProxy {
        let p = self.launch().await;
        p.wait_ready(replicas).await;
        p
    }

    /// Starts a cluster-mode proxy (see [`cluster`](Self::cluster)) and waits until its map
    /// serves every slot, with the cluster's masters and their replicas.
    ///
    /// # Panics
    /// When the builder was not made by [`cluster`](Self::cluster).
    pub async fn start_cluster(self) -> TestProxy {
        let (masters, replicas) = self
            .cluster_shape
            .expect("start_cluster needs ProxyBuilder::cluster");
        let p = self.launch().await;
        p.wait_cluster_ready(masters, replicas).await;
        p
    }

    /// Starts the proxy without waiting for any topology.
    pub async fn launch(self) -> TestProxy {
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
        TestProxy { proxy, token }
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

impl TestProxy {
    /// Cluster mode's current slot map.
    ///
    /// # Panics
    /// When the proxy is not in cluster mode.
    pub fn cluster_map(&self) -> Arc<ClusterMap> {
        self.proxy
            .cluster
            .as_ref()
            .expect("the proxy runs in cluster mode")
            .map()
    }

    /// Cluster mode's counters and map, as the stats page shows them.
    ///
    /// # Panics
    /// When the proxy is not in cluster mode.
    pub fn cluster_stats(&self) -> ClusterSnapshot {
        self.proxy
            .stats
            .snapshot()
            .cluster
            .expect("the proxy runs in cluster mode")
    }

    /// `(role, slots)` of node `addr` on the stats page's cluster view, if it is listed there.
    pub fn cluster_node(&self, addr: &str) -> Option<(String, usize)> {
        self.cluster_stats()
            .view
            .nodes
            .into_iter()
            .find(|n| n.addr == addr)
            .map(|n| (n.role, n.slots))
    }

    /// The keys of `keys` that do not read back as themselves through the proxy (`MGET`, which
    /// a cluster-mode proxy splits by slot), as [`WriteLoad`](super::load::WriteLoad) wrote them.
    /// The client writes first so that, read-your-writes, its reads go to the masters: a
    /// replica a few milliseconds behind is not what this checks.
    pub async fn keys_not_reading_back(&self, keys: &[String]) -> Vec<String> {
        let mut c = self.client().await;
        let () = redis::cmd("SET")
            .arg("reader:marker")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("SET through the proxy");
        let mut bad = Vec::new();
        for chunk in keys.chunks(200) {
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut c)
                .await
                .expect("MGET through the proxy");
            bad.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter(|(k, v)| v.as_deref() != Some(k.as_str()))
                    .map(|(k, _)| k.clone()),
            );
        }
        bad
    }

    /// Whether the proxy's map serves every slot from `masters` masters, each range with
    /// `replicas` replicas.
    pub fn cluster_ready(&self, masters: usize, replicas: usize) -> bool {
        let map = self.cluster_map();
        map.slots.served() == 16384
            && map.masters().len() == masters
            && map
                .slots
                .owner_sets()
                .iter()
                .all(|o| o.replicas.len() == replicas)
    }

    /// Waits until [`cluster_ready`](Self::cluster_ready).
    pub async fn wait_cluster_ready(&self, masters: usize, replicas: usize) {
        crate::eventually!(
            READY_TIMEOUT,
            self.cluster_ready(masters, replicas),
            "the proxy's map serves 16384 slots from {masters} masters with {replicas} replica(s) each: {:?}",
            self.cluster_stats().view
        );
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
