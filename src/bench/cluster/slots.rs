//! The slot map of `bench --cluster`: `CLUSTER SLOTS` from a seed, each slot's master, and
//! `MOVED` redirects.

use std::time::Duration;

use crate::bench::conn::{Auth, Conn, ConnError};
use crate::resp::Value;
use crate::router::slot::SLOTS;
use crate::router::slotmap::SlotMap;

/// The masters of a slot map, and for every slot the index of its master among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masters {
    /// Every distinct master, `host:port`, sorted.
    pub addrs: Vec<String>,
    /// For every slot, an index into `addrs` (`u16::MAX`: not served).
    slot_node: Vec<u16>,
}

impl Masters {
    /// The masters of `map`.
    pub fn of(map: &SlotMap) -> Masters {
        let addrs: Vec<String> = map.masters().into_iter().map(str::to_string).collect();
        // Owner set -> master index, so the per-slot pass below is a lookup.
        let of_set: Vec<u16> = map
            .owner_sets()
            .iter()
            .map(|o| {
                addrs
                    .iter()
                    .position(|a| *a == o.master)
                    .and_then(|i| u16::try_from(i).ok())
                    .unwrap_or(u16::MAX)
            })
            .collect();
        let slot_node = (0..SLOTS)
            .map(|s| {
                map.owner_index(s)
                    .and_then(|i| of_set.get(i).copied())
                    .unwrap_or(u16::MAX)
            })
            .collect();
        Masters { addrs, slot_node }
    }

    /// Points `slot` at master `node` (a `MOVED` redirect).
    pub fn assign(&mut self, slot: u16, node: usize) {
        if let (Some(s), Ok(n)) = (
            self.slot_node.get_mut(usize::from(slot)),
            u16::try_from(node),
        ) {
            *s = n;
        }
    }

    /// The index of master `addr`, if it is one.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }

    /// The index of the master serving `slot`, if any.
    pub fn node(&self, slot: u16) -> Option<usize> {
        match self.slot_node.get(usize::from(slot)) {
            Some(&i) if i != u16::MAX => Some(usize::from(i)),
            _ => None,
        }
    }
}

/// The slot and node of a `-MOVED <slot> <host:port>` reply.
pub fn parse_moved(raw: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(raw.strip_prefix(b"-MOVED ")?).ok()?;
    let mut words = text.split_ascii_whitespace();
    let slot = words.next()?.parse::<u16>().ok().filter(|&s| s < SLOTS)?;
    Some((slot, words.next()?.to_string()))
}

/// Asks the nodes in `seeds`, in order, for `CLUSTER SLOTS`; the first map that names a master wins.
///
/// # Errors
/// Every node failed or answered something else; the last failure is returned.
pub async fn fetch_slot_map(
    seeds: &[String],
    auth: &Auth,
    timeout: Duration,
) -> Result<SlotMap, ConnError> {
    let mut last = ConnError::Reply("ERR bench --cluster needs a seed HOST:PORT".into());
    for seed in seeds {
        let reply = match Conn::connect(seed, auth, timeout).await {
            Ok(mut c) => c.call_ok(&["CLUSTER", "SLOTS"]).await,
            Err(e) => Err(e),
        };
        let map = reply.and_then(|v| parse_slots(seed, &v));
        match map {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn parse_slots(seed: &str, reply: &Value) -> Result<SlotMap, ConnError> {
    let map = SlotMap::from_cluster_slots(reply)
        .map_err(|e| ConnError::Reply(format!("CLUSTERDOWN {seed}: {e}")))?;
    if map.masters().is_empty() {
        return Err(ConnError::Reply(format!(
            "CLUSTERDOWN {seed} serves no slot (not a cluster, or not set up yet)"
        )));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::bench::cluster::supports;
    use crate::bench::workload::WorkloadKind;

    fn node(port: i64) -> Value {
        Value::Array(vec![
            Value::Bulk(Bytes::from_static(b"127.0.0.1")),
            Value::Int(port),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut v = vec![Value::Int(start), Value::Int(end)];
        v.extend(nodes);
        Value::Array(v)
    }

    #[test]
    fn masters_index_every_slot() {
        // The same master owns two ranges; replicas are not masters.
        let reply = Value::Array(vec![
            range(0, 99, vec![node(7002), node(7005)]),
            range(100, 8191, vec![node(7001), node(7004)]),
            range(8192, 16000, vec![node(7002), node(7005)]),
        ]);
        let m = Masters::of(&SlotMap::from_cluster_slots(&reply).unwrap());
        assert_eq!(m.addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(m.node(0), Some(1));
        assert_eq!(m.node(100), Some(0));
        assert_eq!(m.node(16000), Some(1));
        assert_eq!(m.node(16001), None, "unserved");
        assert_eq!(m.node(SLOTS), None, "out of range");
    }

    #[test]
    fn moved_replies_name_the_slot_and_node() {
        assert_eq!(
            parse_moved(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some((3999, "127.0.0.1:6381".to_string()))
        );
        assert_eq!(parse_moved(b"-MOVED 16384 127.0.0.1:6381\r\n"), None);
        assert_eq!(parse_moved(b"-ASK 3999 127.0.0.1:6381\r\n"), None);
        assert_eq!(parse_moved(b"-MOVED 3999\r\n"), None);
        let reply = Value::Array(vec![
            range(0, 8191, vec![node(7001)]),
            range(8192, 16383, vec![node(7002)]),
        ]);
        let mut m = Masters::of(&SlotMap::from_cluster_slots(&reply).unwrap());
        m.assign(5, m.index_of("127.0.0.1:7002").unwrap());
        assert_eq!((m.node(5), m.node(6)), (Some(1), Some(0)));
        assert_eq!(m.index_of("127.0.0.1:7003"), None);
    }

    #[test]
    fn a_slot_map_without_masters_is_refused() {
        assert!(parse_slots("s", &Value::Array(vec![])).is_err());
        assert!(parse_slots("s", &Value::Int(1)).is_err());
        let one = Value::Array(vec![range(0, 16383, vec![node(7000)])]);
        assert_eq!(parse_slots("s", &one).unwrap().served(), 16384);
        assert!(supports(WorkloadKind::Mixed) && !supports(WorkloadKind::Tx));
    }
}
