//! Moving a slot range from one master to another by hand, in the steps of the Redis Cluster
//! specification ("Cluster live reconfiguration"), so a test can act between the steps: while
//! the slots are migrating, a node answers `ASK` for a key it does not have; once they have
//! moved, the old owner answers `MOVED`.

use std::ops::RangeInclusive;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::cluster::Cluster;
use super::redis::RedisServer;

/// How long the nodes may take to agree on the new owner after the last step.
const AGREE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys asked for and moved per `MIGRATE`.
const BATCH: usize = 100;

/// A migration of `slots` from `from` to `to` that has begun.
pub struct SlotMigration<'a> {
    cluster: &'a Cluster,
    from: &'a RedisServer,
    to: &'a RedisServer,
    to_id: String,
    slots: RangeInclusive<u16>,
}

impl<'a> SlotMigration<'a> {
    /// Steps 1 and 2: `CLUSTER SETSLOT <slot> IMPORTING` on `to`, then `MIGRATING` on `from`, for
    /// every slot of `slots` (which `from` must serve). From here on `from` answers `ASK` for
    /// the keys of these slots it does not have.
    ///
    /// # Panics
    /// When a node refuses a step.
    pub async fn begin(
        cluster: &'a Cluster,
        from: &'a RedisServer,
        to: &'a RedisServer,
        slots: RangeInclusive<u16>,
    ) -> SlotMigration<'a> {
        let from_id = from.node_id().await;
        let to_id = to.node_id().await;
        setslot(to, &slots, &["IMPORTING", &from_id]).await;
        setslot(from, &slots, &["MIGRATING", &to_id]).await;
        SlotMigration {
            cluster,
            from,
            to,
            to_id,
            slots,
        }
    }

    /// Step 3: `MIGRATE` every key of the slots from `from` to `to`; returns how many moved.
    ///
    /// # Panics
    /// When a node refuses a step.
    pub async fn move_keys(&self) -> usize {
        let mut c = self.from.client().await;
        let (host, port) = ("127.0.0.1", self.to.port());
        let mut moved = 0;
        for slot in self.slots.clone() {
            loop {
                let keys: Vec<String> = redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(BATCH)
                    .query_async(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("GETKEYSINSLOT {slot}: {e}"));
                if keys.is_empty() {
                    break;
                }
                let () = redis::cmd("MIGRATE")
                    .arg(host)
                    .arg(port)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("MIGRATE of slot {slot}: {e}"));
                moved += keys.len();
            }
        }
        moved
    }

    /// Step 4: `CLUSTER SETSLOT <slot> NODE <to>` on `to` (which bumps its config epoch so the
    /// change wins), on `from`, then on every other master; waits until every node says so.
    ///
    /// # Panics
    /// When a node refuses a step or the nodes do not agree in time.
    pub async fn finish(self) {
        let node = ["NODE", self.to_id.as_str()];
        setslot(self.to, &self.slots, &node).await;
        setslot(self.from, &self.slots, &node).await;
        for m in self.cluster.masters().await {
            if m.addr() != self.to.addr() && m.addr() != self.from.addr() {
                setslot(m, &self.slots, &node).await;
            }
        }
        crate::eventually!(
            AGREE_TIMEOUT,
            self.cluster
                .all_agree(self.slots.clone(), &self.to.addr())
                .await,
            "every node says {} serves slots {:?}",
            self.to.addr(),
            self.slots
        );
    }
}

/// `CLUSTER SETSLOT <slot> <args...>` on `node` for every slot of `slots`, in one pipeline.
async fn setslot(node: &RedisServer, slots: &RangeInclusive<u16>, args: &[&str]) {
    let mut c: MultiplexedConnection = node.client().await;
    let mut pipe = redis::pipe();
    for slot in slots.clone() {
        pipe.cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(args)
            .ignore();
    }
    let () = pipe
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT .. {args:?} on {}: {e}", node.addr()));
}
