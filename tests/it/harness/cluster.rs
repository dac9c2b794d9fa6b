//! A real Redis Cluster on loopback: `masters` masters with `replicas` replicas each, created with
//! `redis-cli --cluster create`; every node is a [`RedisServer`], killed on drop.

use std::ops::RangeInclusive;
use std::time::Duration;

use futures_util::future::join_all;
use haproxy_rs::backend::{ControlConn, Credentials};
use haproxy_rs::router::slot::key_slot;
use haproxy_rs::router::slotmap::SlotMap;

use super::eventually::Deadline;
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
    /// Masters at creation.
    pub master_count: usize,
    /// Replicas of each master at creation.
    pub replicas_per_master: usize,
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
        let cluster = Cluster {
            nodes,
            master_count: masters,
            replicas_per_master: replicas,
        };
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

    /// The node listening on `addr`.
    ///
    /// # Panics
    /// When no node of the cluster has that address.
    pub fn node(&self, addr: &str) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    /// The slot map as the cluster itself reports it (not as the proxy sees it): `CLUSTER SLOTS`
    /// of the first running node whose map covers every slot.
    ///
    /// # Panics
    /// When no node answers with a complete map within 10 s.
    pub async fn slot_map(&self) -> SlotMap {
        let deadline = Deadline::after(Duration::from_secs(10));
        loop {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Some(map) = node.slot_map().await.filter(|m| m.served() == 16384) {
                    return map;
                }
            }
            assert!(
                !deadline.expired(),
                "no node of the cluster reports a complete slot map"
            );
            deadline.tick().await;
        }
    }

    /// The master serving `key` according to `map`.
    ///
    /// # Panics
    /// When `map` does not serve the key's slot.
    pub fn owner(&self, map: &SlotMap, key: &str) -> &RedisServer {
        let owners = map
            .owners(key_slot(key.as_bytes()))
            .unwrap_or_else(|| panic!("no master serves {key:?}"));
        self.node(&owners.master)
    }

    /// Whether every running node's `CLUSTER SLOTS` names `master` for every slot of `slots`.
    pub async fn all_agree(&self, slots: RangeInclusive<u16>, master: &str) -> bool {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let Some(map) = node.slot_map().await else {
                return false;
            };
            if !slots
                .clone()
                .all(|s| map.owners(s).is_some_and(|o| o.master == master))
            {
                return false;
            }
        }
        true
    }

    /// The keys of `keys` whose value on the master serving them (by `map`) is not the key
    /// itself, which is what [`WriteLoad`](super::load::WriteLoad) writes: missing or wrong.
    pub async fn keys_not_holding_themselves(&self, map: &SlotMap, keys: &[String]) -> Vec<String> {
        let mut by_owner: Vec<(String, Vec<&String>)> = Vec::new();
        for k in keys {
            let master = self.owner(map, k).addr();
            match by_owner.iter_mut().find(|(m, _)| *m == master) {
                Some((_, ks)) => ks.push(k),
                None => by_owner.push((master, vec![k])),
            }
        }
        let mut bad = Vec::new();
        for (master, ks) in by_owner {
            let mut c = self.node(&master).client().await;
            for chunk in ks.chunks(500) {
                let mut pipe = redis::pipe();
                for k in chunk {
                    pipe.get(k.as_str());
                }
                let values: Vec<Option<String>> = pipe
                    .query_async(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("GET pipeline on {master}: {e}"));
                bad.extend(
                    chunk
                        .iter()
                        .zip(values)
                        .filter(|(k, v)| v.as_deref() != Some(k.as_str()))
                        .map(|(k, _)| (*k).clone()),
                );
            }
        }
        bad
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

/// How many slots `map` gives to `master`.
pub fn slot_count(map: &SlotMap, master: &str) -> usize {
    (0..16384u16)
        .filter(|&s| map.owners(s).is_some_and(|o| o.master == master))
        .count()
}

/// Keys `<prefix>:<i>` for i = 0, 1, ..., picked so that each master of `map` serves
/// `per_master` of them, in turns: the first keys are on distinct masters, and no two keys
/// share a slot.
///
/// # Panics
/// When `map` does not serve every slot.
pub fn keys_on_every_master(map: &SlotMap, prefix: &str, per_master: usize) -> Vec<String> {
    let masters = map.masters();
    let mut found: Vec<Vec<String>> = vec![Vec::new(); masters.len()];
    let mut slots = std::collections::HashSet::new();
    for i in 0.. {
        if found.iter().all(|f| f.len() >= per_master) {
            break;
        }
        let key = format!("{prefix}:{i}");
        let slot = key_slot(key.as_bytes());
        let owner = &map
            .owners(slot)
            .unwrap_or_else(|| panic!("slot {slot} is not served"))
            .master;
        let m = masters
            .iter()
            .position(|m| m == owner)
            .expect("an owner is one of the masters");
        if found[m].len() < per_master && slots.insert(slot) {
            found[m].push(key);
        }
    }
    (0..per_master)
        .flat_map(|j| found.iter().map(move |f| f[j].clone()))
        .collect()
}

impl RedisServer {
    /// `CLUSTER MYID`.
    pub async fn node_id(&self) -> String {
        let mut c = self.client().await;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {}: {e}", self.addr()))
    }

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
