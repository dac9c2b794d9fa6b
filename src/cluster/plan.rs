//! Where a request goes in a cluster: one slot's node, several (a multi-key command split by
//! slot), every master, or nowhere (the proxy answers).

use std::net::SocketAddr;

use bytes::Bytes;

use super::merge::{Combine, SCAN_NODES};
use crate::resp::{
    bulk_reply, encode_command, error_reply, int_reply, CommandFlags, CommandInfo, CommandTable,
    Request,
};
use crate::router::slot::{key_slot, SLOTS};

/// Redis Cluster's own error for keys in different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answered by the proxy.
    Reply(Bytes),
    /// The whole request to the node serving this slot.
    Slot(u16),
    /// A keyless command any master can answer (`INFO`, `ECHO`, `EVAL` without keys).
    AnyMaster,
    /// One sub-request per slot, combined into one reply.
    Split {
        /// `(slot, request)`, in the order the slots first appear.
        parts: Vec<(u16, Bytes)>,
        /// How the replies combine.
        combine: Combine,
    },
    /// The request as it is to every master.
    AllMasters(Combine),
    /// `SCAN` of master number `node` (in first-slot order) from `cursor`; `raw` is the request
    /// with the node's own cursor.
    Scan {
        /// Which master.
        node: u64,
        /// The request to send it.
        raw: Bytes,
        /// The call starts that master's iteration (its cursor is 0), so the masters after it
        /// may be scanned from their start in the same call.
        start: bool,
        /// The call's `COUNT` (Redis's default 10): how many keys one call gathers before the
        /// next master waits for the next call.
        count: u64,
    },
}

/// What the planner knows about the proxy and the cluster.
#[derive(Debug, Clone, Copy)]
pub struct PlanEnv {
    /// The proxy's address as this client reached it (for `CLUSTER SLOTS`/`NODES`).
    pub me: SocketAddr,
    /// Slots the cluster serves now.
    pub slots_served: usize,
    /// The client speaks RESP3 (`CLUSTER SHARDS` answers maps then).
    pub resp3: bool,
}

/// Plans `req`, a command the proxy forwards (the session has answered `PING`, `AUTH`, `HELLO`
/// and refused the unsupported ones already).
pub fn plan(commands: &CommandTable, req: &Request, env: &PlanEnv) -> Plan {
    plan_info(commands, commands.lookup(req), req, env)
}

/// [`plan`] with the request's command-table entry looked up already.
pub fn plan_info(
    commands: &CommandTable,
    info: Option<&CommandInfo>,
    req: &Request,
    env: &PlanEnv,
) -> Plan {
    if let Some(key) = info.and_then(|i| single_key(i, req)) {
        return Plan::Slot(key_slot(key));
    }
    let lowered;
    let name = match info {
        Some(i) => i.name.as_str(),
        None => {
            lowered = String::from_utf8_lossy(req.name()).to_lowercase();
            lowered.as_str()
        }
    };
    if name == "cluster" || name.starts_with("cluster|") {
        return cluster_command(req, env);
    }
    let keys = commands.keys(req);
    if keys.is_empty() {
        return keyless(name, req);
    }
    let first = key_slot(keys.first().copied().unwrap_or_default());
    if keys.iter().all(|k| key_slot(k) == first) {
        return Plan::Slot(first);
    }
    match name {
        "mget" => split_keys(req, true),
        "del" | "unlink" | "exists" | "touch" => split_keys(req, false),
        "mset" if req.argc() % 2 == 1 => split_pairs(req),
        // Arity errors come from Redis itself, before any slot check.
        "mset" => Plan::Slot(first),
        _ => Plan::Reply(error_reply(CROSSSLOT)),
    }
}

/// The key of a command that has exactly one (`GET k`, `SET k v`, `HSET k f v`...): the common
/// case, found without collecting the keys.
fn single_key<'r>(info: &CommandInfo, req: &'r Request) -> Option<&'r [u8]> {
    let first = usize::try_from(info.first_key).ok().filter(|&f| f > 0)?;
    let only_one =
        info.last_key == info.first_key || (info.last_key == -1 && req.argc() == first + 1);
    if !only_one || info.flags.contains(CommandFlags::MOVABLE_KEYS) {
        return None;
    }
    req.arg(first)
}

/// `MGET`/`DEL`-like: every argument is a key. `gather` for MGET (values back in key order),
/// else the integer replies are added.
fn split_keys(req: &Request, gather: bool) -> Plan {
    let name = req.name();
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    let mut order = Vec::new();
    for key in req.args().skip(1) {
        let slot = key_slot(key);
        let part = match groups.iter().position(|(s, _)| *s == slot) {
            Some(p) => p,
            None => {
                groups.push((slot, vec![name]));
                groups.len() - 1
            }
        };
        if let Some((_, args)) = groups.get_mut(part) {
            args.push(key);
            order.push((part as u32, (args.len() - 2) as u32));
        }
    }
    let combine = if gather {
        Combine::Gather(order)
    } else {
        Combine::Sum
    };
    Plan::Split {
        parts: groups
            .into_iter()
            .map(|(slot, args)| (slot, encode_command(&args)))
            .collect(),
        combine,
    }
}

/// `MSET k v k v ...` split by slot; `+OK` once every part is.
fn split_pairs(req: &Request) -> Plan {
    let name = req.name();
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    let args: Vec<&[u8]> = req.args().skip(1).collect();
    for pair in args.chunks(2) {
        let (Some(&k), Some(&v)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let slot = key_slot(k);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, a)) => a.extend([k, v]),
            None => groups.push((slot, vec![name, k, v])),
        }
    }
    Plan::Split {
        parts: groups
            .into_iter()
            .map(|(slot, args)| (slot, encode_command(&args)))
            .collect(),
        combine: Combine::AllOk,
    }
}

/// Whether `INFO`'s sections include the keyspace (no section, `all`, `everything`, `default`,
/// `keyspace`).
fn info_has_keyspace(req: &Request) -> bool {
    req.argc() == 1
        || (1..req.argc()).any(|i| {
            req.arg(i).is_some_and(|a| {
                [&b"keyspace"[..], b"all", b"everything", b"default"]
                    .iter()
                    .any(|s| a.eq_ignore_ascii_case(s))
            })
        })
}

fn keyless(name: &str, req: &Request) -> Plan {
    match name {
        "dbsize" => Plan::AllMasters(Combine::Sum),
        "keys" => Plan::AllMasters(Combine::Concat),
        "randomkey" => Plan::AllMasters(Combine::FirstNonNil),
        "flushall" | "flushdb" | "script|load" | "script|flush" | "function|load"
        | "function|flush" | "function|delete" | "function|restore" => {
            Plan::AllMasters(Combine::Same)
        }
        "config|set" => Plan::AllMasters(Combine::ConfigSet),
        // Where the proxy subscribes its clients to the channel (see `ClusterLocator`), as a
        // cluster client does: the reply counts them.
        "publish" if req.argc() == 3 => Plan::Slot(key_slot(req.arg(1).unwrap_or_default())),
        // Each node counts its own subscribers: the cluster's are every master's.
        "pubsub|numsub" | "pubsub|shardnumsub" => Plan::AllMasters(Combine::SumPairs),
        // Patterns that can match keyspace notifications are on every master (see
        // `ClusterLocator`), the rest on one: the largest count counts each pattern once.
        "pubsub|numpat" => Plan::AllMasters(Combine::Max),
        "pubsub|channels" | "pubsub|shardchannels" => Plan::AllMasters(Combine::Union),
        // The whole cluster's keyspace (a one-node view of it would count one master's keys).
        "info" if info_has_keyspace(req) => Plan::AllMasters(Combine::Info),
        // Redis Cluster does not spread ACL changes: every master gets them, as a cluster
        // client sends them.
        "acl|setuser" | "acl|deluser" => Plan::AllMasters(Combine::Same),
        "script|exists" => Plan::AllMasters(Combine::AllHave),
        "scan" => scan(req),
        _ => Plan::AnyMaster,
    }
}

/// `SCAN cursor [MATCH ..] [COUNT ..] [TYPE ..]`: the proxy's cursor names the master and that
/// master's own cursor.
fn scan(req: &Request) -> Plan {
    let cursor = req
        .arg(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok());
    let Some(cursor) = cursor else {
        return Plan::Reply(error_reply("ERR invalid cursor"));
    };
    let (inner, node) = (cursor / SCAN_NODES, cursor % SCAN_NODES);
    let start = inner == 0;
    let inner = inner.to_string();
    let mut args: Vec<&[u8]> = req.args().collect();
    if let Some(c) = args.get_mut(1) {
        *c = inner.as_bytes();
    }
    Plan::Scan {
        node,
        raw: encode_command(&args),
        start,
        count: scan_count(req),
    }
}

/// A `SCAN`'s `COUNT` (the last one given, as Redis reads it), 10 without one or when it does
/// not parse (the masters then answer Redis's error).
fn scan_count(req: &Request) -> u64 {
    let args: Vec<&[u8]> = req.args().collect();
    let mut count = 10;
    let mut i = 2;
    while let (Some(opt), Some(value)) = (args.get(i), args.get(i + 1)) {
        if opt.eq_ignore_ascii_case(b"count") {
            if let Some(n) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                count = n;
            }
        }
        i += 2;
    }
    count
}

/// `CLUSTER ...`: the proxy presents itself as a one-node cluster serving every slot, so a
/// client that asks stays on the proxy; `KEYSLOT` is computed here, the per-slot questions go to
/// the slot's node.
fn cluster_command(req: &Request, env: &PlanEnv) -> Plan {
    let sub = req
        .arg(1)
        .map(|s| String::from_utf8_lossy(s).to_lowercase())
        .unwrap_or_default();
    let id = node_id(env.me);
    let (ip, port) = (env.me.ip().to_string(), env.me.port());
    match sub.as_str() {
        "keyslot" if req.argc() == 3 => {
            Plan::Reply(int_reply(i64::from(key_slot(req.arg(2).unwrap_or_default()))))
        }
        "countkeysinslot" | "getkeysinslot" => {
            match req
                .arg(2)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|s| *s < SLOTS)
            {
                Some(slot) => Plan::Slot(slot),
                None => Plan::Reply(error_reply("ERR Invalid slot")),
            }
        }
        "myid" => Plan::Reply(bulk_reply(id.as_bytes())),
        "info" => {
            let ok = env.slots_served == usize::from(SLOTS);
            let text = format!(
                "cluster_state:{}\r\ncluster_slots_assigned:{n}\r\ncluster_slots_ok:{n}\r\n\
                 cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\n\
                 cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
                if ok { "ok" } else { "fail" },
                n = env.slots_served
            );
            Plan::Reply(bulk_reply(text.as_bytes()))
        }
        "slots" => {
            let mut out = Vec::new();
            out.extend_from_slice(b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n");
            out.extend_from_slice(&bulk_reply(ip.as_bytes()));
            out.extend_from_slice(&int_reply(i64::from(port)));
            out.extend_from_slice(&bulk_reply(id.as_bytes()));
            Plan::Reply(Bytes::from(out))
        }
        "nodes" => {
            let line = format!("{id} {ip}:{port}@0 myself,master - 0 0 1 connected 0-16383\n");
            Plan::Reply(bulk_reply(line.as_bytes()))
        }
        "shards" => Plan::Reply(shards(&id, &ip, port, env.resp3)),
        // A one-node cluster has no links to other nodes.
        "links" => Plan::Reply(Bytes::from_static(b"*0\r\n")),
        _ => Plan::Reply(error_reply(&format!(
            "ERR haproxy-rs: CLUSTER {} is not available through the proxy (it presents the cluster as one node)",
            sub.to_uppercase()
        ))),
    }
}

/// `CLUSTER SHARDS` of the one-node cluster the proxy presents, in Redis 7.0's shape: one shard
/// serving every slot, whose only node is the proxy.
fn shards(id: &str, ip: &str, port: u16, resp3: bool) -> Bytes {
    let map = |pairs: usize| match resp3 {
        true => format!("%{pairs}\r\n"),
        false => format!("*{}\r\n", pairs * 2),
    };
    let mut out = String::from("*1\r\n");
    out.push_str(&map(2));
    out.push_str("$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n");
    out.push_str(&map(7));
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    for (field, value) in [
        ("id", bulk(id)),
        ("port", format!(":{port}\r\n")),
        ("ip", bulk(ip)),
        ("endpoint", bulk(ip)),
        ("role", bulk("master")),
        ("replication-offset", ":0\r\n".to_string()),
        ("health", bulk("online")),
    ] {
        out.push_str(&bulk(field));
        out.push_str(&value);
    }
    Bytes::from(out)
}

/// A stable 40-hex-digit node id for the proxy's address.
fn node_id(me: SocketAddr) -> String {
    let ip: u128 = match me.ip() {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    };
    format!("{:0>40}", format!("{:x}{:04x}", ip, me.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::merge::combine;

    fn env() -> PlanEnv {
        PlanEnv {
            me: "127.0.0.1:6379".parse().unwrap(),
            slots_served: 16384,
            resp3: false,
        }
    }

    fn p(args: &[&str]) -> Plan {
        plan(&CommandTable::builtin(), &Request::from_args(args), &env())
    }

    #[test]
    fn single_slot_commands_go_to_their_slot() {
        assert_eq!(p(&["GET", "foo"]), Plan::Slot(key_slot(b"foo")));
        assert_eq!(
            p(&["MGET", "{u}a", "{u}b"]),
            Plan::Slot(key_slot(b"u")),
            "hash tags keep a multi-key command whole"
        );
        assert_eq!(
            p(&["EVAL", "return 1", "1", "k"]),
            Plan::Slot(key_slot(b"k"))
        );
        assert_eq!(p(&["EVAL", "return 1", "0"]), Plan::AnyMaster);
        assert_eq!(p(&["INFO", "server"]), Plan::AnyMaster);
        assert_eq!(p(&["INFO"]), Plan::AllMasters(Combine::Info));
        assert_eq!(p(&["INFO", "KEYSPACE"]), Plan::AllMasters(Combine::Info));
    }

    #[test]
    fn cross_slot_multi_key_commands_split_or_fail() {
        let Plan::Split {
            parts,
            combine: how,
        } = p(&["MGET", "a", "b", "c"])
        else {
            panic!("MGET splits");
        };
        assert_eq!(parts.len(), 3, "a, b and c hash to three slots");
        let replies: Vec<Bytes> = parts
            .iter()
            .map(|(_, raw)| {
                let key = String::from_utf8_lossy(&raw[raw.len() - 3..raw.len() - 2]).to_string();
                Bytes::from(format!("*1\r\n$1\r\n{}\r\n", key.to_uppercase()))
            })
            .collect();
        assert_eq!(
            combine(&how, &replies),
            Bytes::from("*3\r\n$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n")
        );
        let Plan::Split {
            parts,
            combine: how,
        } = p(&["MSET", "a", "1", "b", "2", "{a}x", "3"])
        else {
            panic!("MSET splits");
        };
        assert_eq!(how, Combine::AllOk);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].1,
            encode_command(&["MSET", "a", "1", "{a}x", "3"]),
            "same-slot pairs travel together"
        );
        assert!(matches!(
            p(&["DEL", "a", "b"]),
            Plan::Split {
                combine: Combine::Sum,
                ..
            }
        ));
        for cmd in [
            &["MSETNX", "a", "1", "b", "2"][..],
            &["RENAME", "a", "b"],
            &["SUNIONSTORE", "a", "b", "c"],
            &["EVAL", "return 1", "2", "a", "b"],
        ] {
            assert_eq!(p(cmd), Plan::Reply(error_reply(CROSSSLOT)), "{cmd:?}");
        }
    }

    #[test]
    fn cluster_wide_and_cluster_commands() {
        assert_eq!(p(&["DBSIZE"]), Plan::AllMasters(Combine::Sum));
        assert_eq!(p(&["KEYS", "*"]), Plan::AllMasters(Combine::Concat));
        assert_eq!(
            p(&["SCRIPT", "LOAD", "return 1"]),
            Plan::AllMasters(Combine::Same)
        );
        assert_eq!(p(&["FLUSHALL"]), Plan::AllMasters(Combine::Same));
        assert_eq!(
            p(&["CONFIG", "SET", "maxmemory", "0"]),
            Plan::AllMasters(Combine::ConfigSet)
        );
        let Plan::Scan {
            node,
            raw,
            start,
            count,
        } = p(&["SCAN", &(5 * SCAN_NODES + 2).to_string(), "COUNT", "9"])
        else {
            panic!("SCAN");
        };
        assert_eq!((node, start, count), (2, false, 9));
        assert_eq!(raw, encode_command(&["SCAN", "5", "COUNT", "9"]));
        let Plan::Scan { start, count, .. } = p(&["SCAN", "3", "MATCH", "a*", "type", "set"])
        else {
            panic!("SCAN");
        };
        assert_eq!((start, count), (true, 10));
        assert_eq!(
            p(&["SCAN", "x"]),
            Plan::Reply(error_reply("ERR invalid cursor"))
        );
        assert_eq!(
            p(&["CLUSTER", "KEYSLOT", "foo"]),
            Plan::Reply(int_reply(12182))
        );
        let Plan::Reply(slots) = p(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS");
        };
        let v = crate::resp::parse_value(slots).unwrap();
        let map = crate::router::slotmap::SlotMap::from_cluster_slots(&v).unwrap();
        assert_eq!(map.served(), 16384);
        assert_eq!(map.masters(), ["127.0.0.1:6379"]);
        let Plan::Reply(info) = p(&["cluster", "info"]) else {
            panic!("CLUSTER INFO");
        };
        assert!(String::from_utf8_lossy(&info).contains("cluster_state:ok"));
        assert!(matches!(p(&["CLUSTER", "FAILOVER"]), Plan::Reply(e) if e.starts_with(b"-ERR")));
        assert_eq!(node_id(env().me).len(), 40);
    }
}
