//! A real Redis Cluster on loopback: `masters` masters with `replicas` replicas each, created with
//! `redis-cli --cluster create`; every node is a [`RedisServer`], killed on drop.

use std::time::Duration;

use futures_util::future::join_all;
use haproxy_rs::backend::{ControlConn, Credentials};
use haproxy_rs::router::slotmap::SlotMap;

use super::ports;
use super::redis::{info_field, RedisServer};

/// How long the cluster may take to agree that every slot is served.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The nodes of a running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Every node, masters and replicas, in creation order (`redis-cli` makes the first
    /// `masters` of them masters).
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts the nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    ///
    /// # Panics
    /// When `redis-cli --cluster create` fails or the cluster does not settle in time.
    pub async fn start(masters: usize, replicas: usize) -> Cluster {
        let n = masters * (1 + replicas);
        // Each node's cluster bus gets its own port from the registry (not port + 10000, which
        // could land in the ephemeral range or on another test's port).
        let nodes = join_all((0..n).map(|_| {
            let bus = ports::free_port();
            // `repl-ping-replica-period 1`: a node lists a replica in `CLUSTER SLOTS` only once
            // the replica's offset is non-zero, which on an idle master takes the first
            // replication PING (10 s by default); one second makes a cluster ready in ~3 s.
            let extra = format!(
                "cluster-enabled yes\ncluster-config-file nodes.conf\n\
                 cluster-node-timeout 2000\ncluster-port {bus}\n\
                 repl-ping-replica-period 1\n"
            );
            async move { RedisServer::start_with(&extra).await }
        }))
        .await;
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(node.addr());
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let out = tokio::time::timeout(READY_TIMEOUT, cmd.output())
            .await
            .expect("redis-cli --cluster create finishes")
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        crate::eventually!(
            READY_TIMEOUT,
            cluster.all_ok().await,
            "every node of the cluster reports cluster_state:ok with 16384 slots"
        );
        crate::eventually!(
            READY_TIMEOUT,
            cluster.all_see_replicas(replicas).await,
            "every node's CLUSTER SLOTS lists {replicas} replica(s) for each range"
        );
        cluster
    }

    /// Whether every node's `CLUSTER SLOTS` covers all slots with `replicas` replicas per range.
    pub async fn all_see_replicas(&self, replicas: usize) -> bool {
        for node in &self.nodes {
            let Some(map) = node.slot_map().await else {
                return false;
            };
            let complete = map.served() == 16384
                && (0..16384u16)
                    .step_by(97)
                    .all(|s| map.owners(s).is_some_and(|o| o.replicas.len() == replicas));
            if !complete {
                return false;
            }
        }
        true
    }

    /// Whether every node says the cluster is ok and all slots are assigned.
    pub async fn all_ok(&self) -> bool {
        for node in &self.nodes {
            let info = node.cluster_info().await;
            if info_field(&info, "cluster_state").as_deref() != Some("ok")
                || info_field(&info, "cluster_slots_assigned").as_deref() != Some("16384")
            {
                return false;
            }
        }
        true
    }

    /// Addresses of the nodes, for seeding a client or the proxy.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// The nodes that are masters right now (by `ROLE`).
    pub async fn masters(&self) -> Vec<&RedisServer> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if node.role().await == "master" {
                out.push(node);
            }
        }
        out
    }
}

impl RedisServer {
    /// This node's `CLUSTER SLOTS`, parsed by the proxy's own [`SlotMap`].
    pub async fn slot_map(&self) -> Option<SlotMap> {
        let mut c = ControlConn::connect(
            &self.addr(),
            &Credentials::default(),
            Duration::from_secs(5),
        )
        .await
        .ok()?;
        let reply = c.call(&["CLUSTER", "SLOTS"]).await.ok()?;
        SlotMap::from_cluster_slots(&reply).ok()
    }

    /// `CLUSTER INFO` as text (empty if the node does not answer).
    pub async fn cluster_info(&self) -> String {
        let Ok(mut c) = super::redis::connect(&self.addr()).await else {
            return String::new();
        };
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut c)
            .await
            .unwrap_or_default()
    }
}
