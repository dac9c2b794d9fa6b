//! Which node serves each of the 16384 slots of a Redis Cluster, from a `CLUSTER SLOTS` reply.

use super::slot::SLOTS;
use crate::resp::Value;

/// The nodes of one slot range: the master first, then its replicas (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOwners {
    /// Serves writes (and reads under the `master` policy).
    pub master: String,
    /// May serve reads (`READONLY` connections).
    pub replicas: Vec<String>,
}

/// An immutable slot map; a new one is built whole on every refresh (`MOVED`, periodic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// The distinct owner sets, indexed by `slots`.
    owners: Vec<SlotOwners>,
    /// For every slot, an index into `owners` (`u16::MAX`: not served).
    slots: Vec<u16>,
}

/// A `CLUSTER SLOTS` reply that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad CLUSTER SLOTS reply: {0}")]
pub struct SlotMapError(&'static str);

const UNSERVED: u16 = u16::MAX;

impl SlotMap {
    /// Parses `CLUSTER SLOTS`: `[[start, end, [ip, port, id, ...], [replica...]...], ...]`.
    ///
    /// # Errors
    /// [`SlotMapError`] for a reply of another shape or a range outside 0..16384.
    pub fn from_cluster_slots(reply: &Value) -> Result<SlotMap, SlotMapError> {
        let ranges = reply.as_array().ok_or(SlotMapError("not an array"))?;
        let mut map = SlotMap {
            owners: Vec::new(),
            slots: vec![UNSERVED; usize::from(SLOTS)],
        };
        for range in ranges {
            let fields = range.as_array().ok_or(SlotMapError("range not an array"))?;
            let (Some(start), Some(end)) = (
                fields.first().and_then(Value::as_int),
                fields.get(1).and_then(Value::as_int),
            ) else {
                return Err(SlotMapError("range without start and end"));
            };
            if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end)
            {
                return Err(SlotMapError("slot range out of bounds"));
            }
            let mut nodes = fields.iter().skip(2).map(node_addr);
            let master = nodes
                .next()
                .flatten()
                .ok_or(SlotMapError("range without a master"))?;
            let replicas = nodes.flatten().collect();
            let owners = SlotOwners { master, replicas };
            let index = match map.owners.iter().position(|o| *o == owners) {
                Some(i) => i,
                None => {
                    map.owners.push(owners);
                    map.owners.len() - 1
                }
            };
            let index = u16::try_from(index).map_err(|_| SlotMapError("too many ranges"))?;
            for slot in start..=end {
                if let Some(s) = usize::try_from(slot)
                    .ok()
                    .and_then(|s| map.slots.get_mut(s))
                {
                    *s = index;
                }
            }
        }
        Ok(map)
    }

    /// Who serves `slot`, if anyone.
    pub fn owners(&self, slot: u16) -> Option<&SlotOwners> {
        let index = *self.slots.get(usize::from(slot))?;
        self.owners.get(usize::from(index))
    }

    /// Which owner set (an index into [`owner_sets`](Self::owner_sets)) serves `slot`.
    pub fn owner_index(&self, slot: u16) -> Option<usize> {
        let index = *self.slots.get(usize::from(slot))?;
        (index != UNSERVED).then_some(usize::from(index))
    }

    /// The distinct owner sets (master and replicas), in first-seen order.
    pub fn owner_sets(&self) -> &[SlotOwners] {
        &self.owners
    }

    /// The slot ranges of owner set `index`, in order, as `(first, last)`.
    pub fn ranges_of(&self, index: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &i) in (0u16..).zip(self.slots.iter()) {
            if usize::from(i) != index || i == UNSERVED {
                continue;
            }
            match out.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => out.push((slot, slot)),
            }
        }
        out
    }

    /// Slots served by some node (16384 when the cluster is complete).
    pub fn served(&self) -> usize {
        self.slots.iter().filter(|&&i| i != UNSERVED).count()
    }

    /// Every distinct master.
    pub fn masters(&self) -> Vec<&str> {
        let mut m: Vec<&str> = self.owners.iter().map(|o| o.master.as_str()).collect();
        m.sort_unstable();
        m.dedup();
        m
    }
}

/// `[ip, port, id, ...]` as `ip:port` (`[ip]:port` for IPv6); `None` for an entry without them,
/// or whose endpoint is unknown (`NULL`, or `?` while a hostname has not spread yet).
fn node_addr(node: &Value) -> Option<String> {
    let fields = node.as_array()?;
    let ip = fields.first()?.as_str()?;
    let port = fields.get(1)?.as_int()?;
    if ip.is_empty() || ip == "?" || !(1..=65535).contains(&port) {
        return None;
    }
    if ip.contains(':') {
        Some(format!("[{ip}]:{port}"))
    } else {
        Some(format!("{ip}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn node(ip: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Bulk(Bytes::from(ip.to_string())),
            Value::Int(port),
            Value::Bulk(Bytes::from_static(b"id")),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut v = vec![Value::Int(start), Value::Int(end)];
        v.extend(nodes);
        Value::Array(v)
    }

    #[test]
    fn three_masters_cover_every_slot() {
        let reply = Value::Array(vec![
            range(
                0,
                5460,
                vec![node("10.0.0.1", 7000), node("10.0.0.4", 7003)],
            ),
            range(
                5461,
                10922,
                vec![node("10.0.0.2", 7001), node("10.0.0.5", 7004)],
            ),
            range(10923, 16383, vec![node("10.0.0.3", 7002)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply).unwrap();
        assert_eq!(map.served(), 16384);
        assert_eq!(map.owners(0).unwrap().master, "10.0.0.1:7000");
        assert_eq!(map.owners(5460).unwrap().replicas, ["10.0.0.4:7003"]);
        assert_eq!(map.owners(5461).unwrap().master, "10.0.0.2:7001");
        assert!(map.owners(16383).unwrap().replicas.is_empty());
        assert_eq!(map.masters().len(), 3);
        assert_eq!(map.owner_index(5461), Some(1));
        assert_eq!(map.owner_sets()[1].master, "10.0.0.2:7001");
        assert_eq!(map.ranges_of(1), [(5461, 10922)]);
    }

    #[test]
    fn ipv6_and_unknown_endpoints() {
        let reply = Value::Array(vec![
            range(0, 9, vec![node("::1", 7000), node("?", 7001)]),
            range(10, 19, vec![node("", 7002)]),
        ]);
        // A range whose master has no usable endpoint makes the reply unusable as a whole.
        assert!(SlotMap::from_cluster_slots(&reply).is_err());
        let reply = Value::Array(vec![range(0, 9, vec![node("::1", 7000), node("?", 7001)])]);
        let map = SlotMap::from_cluster_slots(&reply).unwrap();
        assert_eq!(map.owners(0).unwrap().master, "[::1]:7000");
        assert!(
            map.owners(0).unwrap().replicas.is_empty(),
            "the `?` replica is skipped"
        );
    }

    #[test]
    fn gaps_and_bad_replies() {
        let partial = Value::Array(vec![range(0, 99, vec![node("a", 1)])]);
        let map = SlotMap::from_cluster_slots(&partial).unwrap();
        assert_eq!(map.served(), 100);
        assert!(map.owners(100).is_none());
        for bad in [
            Value::Int(1),
            Value::Array(vec![range(0, 16384, vec![node("a", 1)])]),
            Value::Array(vec![range(10, 5, vec![node("a", 1)])]),
            Value::Array(vec![range(0, 1, vec![])]),
        ] {
            assert!(SlotMap::from_cluster_slots(&bad).is_err(), "{bad:?}");
        }
    }
}
