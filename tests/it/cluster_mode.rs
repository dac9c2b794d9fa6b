//! Cluster mode (issue 5, "Redis Cluster behind the same endpoint"): a client without cluster
//! support talks to one proxy endpoint in front of a real cluster of three masters and three
//! replicas. Requests go to the master of their slot, multi-key commands split by slot where
//! Redis allows it, cluster-wide commands reach every master, replicas serve eventual reads, and
//! resharding and a master's death cost latency, not errors.

use std::collections::{HashMap, HashSet};

use haproxy_rs::router::slotmap::SlotMap;
use redis::AsyncCommands;

use crate::harness::cluster::keys_on_every_master;
use crate::harness::proxy::{ProxyBuilder, TestProxy};
use crate::harness::redis::read_replies;
use crate::harness::{Cluster, RedisServer};

mod pinned;
mod redirected;
mod under_load;

/// Redis Cluster's own refusal of a multi-key command over several slots, as the client reads it.
const CROSSSLOT: &str = "-CROSSSLOT Keys in request don't hash to the same slot";

/// A cluster of three masters with one replica each, and a proxy (from `builder`) whose map has
/// all of it.
async fn cluster_and_proxy(
    builder: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
) -> (Cluster, TestProxy) {
    let cluster = Cluster::start(3, 1).await;
    let proxy = builder(ProxyBuilder::cluster(&cluster))
        .start_cluster()
        .await;
    (cluster, proxy)
}

/// Sends every command in one write on a new connection to the proxy; the raw replies, in order.
async fn raw(proxy: &TestProxy, commands: &[Vec<String>]) -> Vec<String> {
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(&haproxy_rs::resp::encode_command(c));
    }
    tokio::io::AsyncWriteExt::write_all(&mut s, &out)
        .await
        .unwrap();
    read_replies(&mut s, commands.len()).await
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A bulk string as [`read_replies`] shows it.
fn bulk(v: &str) -> String {
    format!("${}\r\n{v}", v.len())
}

/// Each master of `map` with its first replica.
fn pairs<'c>(cluster: &'c Cluster, map: &SlotMap) -> Vec<(&'c RedisServer, &'c RedisServer)> {
    let mut out: Vec<(&RedisServer, &RedisServer)> = Vec::new();
    for o in map.owner_sets() {
        if out.iter().all(|(m, _)| m.addr() != o.master) {
            let replica = o.replicas.first().expect("every master has a replica");
            out.push((cluster.node(&o.master), cluster.node(replica)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_commands_go_straight_to_the_master_of_their_slot() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let mut c = proxy.client().await;
    let keys: Vec<String> = (0..300).map(|i| format!("route:{i}")).collect();
    for k in &keys {
        let () = c.set(k, format!("v-{k}")).await.unwrap();
    }

    // The cluster's own map, not the proxy's, says where each key must be.
    let map = cluster.slot_map().await;
    let mut by_owner: HashMap<String, Vec<&String>> = HashMap::new();
    for k in &keys {
        by_owner
            .entry(cluster.owner(&map, k).addr())
            .or_default()
            .push(k);
    }
    assert_eq!(by_owner.len(), 3, "300 keys fall on every master");
    for (addr, owned) in &by_owner {
        let master = cluster.node(addr);
        let mut direct = master.client().await;
        for k in owned {
            // A plain connection: a key anywhere else would be a MOVED error here.
            let v: Option<String> = direct.get(*k).await.unwrap();
            assert_eq!(v, Some(format!("v-{k}")), "{k} on its master {addr}");
        }
        assert_eq!(
            master.commandstats("set").await,
            owned.len() as u64,
            "master {addr} ran exactly the SETs of its keys, each once"
        );
    }
    for k in keys.iter().step_by(7) {
        let v: Option<String> = c.get(k).await.unwrap();
        assert_eq!(v, Some(format!("v-{k}")), "{k} through the proxy");
    }
    let stats = proxy.cluster_stats();
    assert_eq!(
        (stats.moved, stats.ask),
        (0, 0),
        "the proxy's map was right the first time: no redirection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_slot_commands_split_by_slot_and_merge_in_request_order() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let map = cluster.slot_map().await;
    // Six keys in six slots, two on each master.
    let keys = keys_on_every_master(&map, "multi", 2);
    let mut c = proxy.client().await;
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let () = c.mset(&pairs).await.unwrap();
    for k in &keys {
        let mut direct = cluster.owner(&map, k).client().await;
        let v: Option<String> = direct.get(k).await.unwrap();
        assert_eq!(v, Some(format!("v-{k}")), "MSET put {k} on its master");
    }

    // MGET: the request's order, a missing key in the middle, a key asked twice.
    let missing = "multi:missing".to_string();
    let mut asked = keys.clone();
    asked.insert(2, missing.clone());
    asked.push(keys[0].clone());
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&asked)
        .query_async(&mut c)
        .await
        .unwrap();
    let want: Vec<Option<String>> = asked
        .iter()
        .map(|k| (*k != missing).then(|| format!("v-{k}")))
        .collect();
    assert_eq!(got, want);

    // The counts add up over the parts; EXISTS counts a repeated key twice, as Redis does.
    let n: i64 = redis::cmd("EXISTS")
        .arg(&asked)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 7, "EXISTS of six keys, one twice, and a missing one");
    let n: i64 = redis::cmd("TOUCH")
        .arg(&keys)
        .arg(&missing)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 6);
    let n: i64 = redis::cmd("DEL")
        .arg(&keys[0..2])
        .arg(&missing)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("UNLINK")
        .arg(&keys[2..5])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1, "only {} is left", keys[5]);
    assert_eq!(
        proxy.cluster_stats().split_commands,
        7,
        "MSET, MGET, EXISTS, TOUCH, DEL, UNLINK, EXISTS were split"
    );

    // What Redis would refuse over several slots, the proxy refuses the same way; nothing is written.
    let (k0, k1, k5) = (keys[0].as_str(), keys[1].as_str(), keys[5].as_str());
    let replies = raw(
        &proxy,
        &[
            cmd(&["MSETNX", k0, "a", k1, "b"]),
            cmd(&["RENAME", k5, k0]),
            cmd(&["EXISTS", k0, k1]),
            cmd(&["EXISTS", k5]),
            // With a hash tag, the keys share a slot and MSETNX works.
            cmd(&["MSETNX", "{u}a", "1", "{u}b", "2"]),
            cmd(&["MSETNX", "{u}a", "3", "{u}c", "4"]),
            cmd(&["MGET", "{u}a", "{u}b", "{u}c"]),
        ],
    )
    .await;
    let want = [
        CROSSSLOT.to_string(),
        CROSSSLOT.to_string(),
        ":0".into(),
        ":1".into(),
        ":1".into(),
        ":0".into(),
        format!("*3\r\n{}\r\n{}\r\n$-1", bulk("1"), bulk("2")),
    ];
    assert_eq!(replies, want);
    let owner = cluster.owner(&map, "{u}a");
    let v: Option<String> = owner.client().await.get("{u}b").await.unwrap();
    assert_eq!(v.as_deref(), Some("2"), "{{u}}b is on {}", owner.addr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_300_commands_over_every_master_comes_back_in_request_order() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let mut model: HashMap<String, String> = HashMap::new();
    let mut counters: HashMap<String, i64> = HashMap::new();
    let (mut commands, mut want) = (Vec::new(), Vec::new());
    let mut touched = Vec::new();
    let value = |model: &HashMap<String, String>, k: &str| {
        model.get(k).map_or_else(|| "$-1".to_string(), |v| bulk(v))
    };
    // 400-byte values: the pipeline (~35 KB) reaches the proxy in several reads, so its
    // replies come from several chunks in flight at once.
    let pad = "x".repeat(400);
    for i in 0..300i64 {
        match i % 4 {
            0 => {
                let (k, v) = (format!("pipe:{i}"), format!("v{i}-{pad}"));
                commands.push(cmd(&["SET", &k, &v]));
                want.push("+OK".to_string());
                model.insert(k.clone(), v);
                touched.push(k);
            }
            1 => {
                let k = format!("pipe:{}", i - 1);
                commands.push(cmd(&["GET", &k]));
                want.push(value(&model, &k));
            }
            2 => {
                let k = format!("ctr:{}", (i / 4) % 5);
                let n = counters.entry(k.clone()).or_default();
                *n += 1;
                commands.push(cmd(&["INCR", &k]));
                want.push(format!(":{n}"));
                touched.push(k);
            }
            _ => {
                let ks: Vec<String> = [3, 7, 11]
                    .iter()
                    .map(|d| format!("pipe:{}", i - d))
                    .collect();
                let mut c = vec!["MGET".to_string()];
                c.extend(ks.iter().cloned());
                commands.push(c);
                let vs: Vec<String> = ks.iter().map(|k| value(&model, k)).collect();
                want.push(format!("*3\r\n{}", vs.join("\r\n")));
            }
        }
    }
    let map = cluster.slot_map().await;
    let masters: HashSet<String> = touched
        .iter()
        .map(|k| cluster.owner(&map, k).addr())
        .collect();
    assert_eq!(masters.len(), 3, "the pipeline spans every master");

    let replies = raw(&proxy, &commands).await;
    assert_eq!(replies.len(), want.len());
    for (i, (got, want)) in replies.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "reply {i} to {:?}", commands[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_commands_cover_every_master() {
    let (cluster, proxy) = cluster_and_proxy(|b| b).await;
    let mut c = proxy.client().await;
    let keys: Vec<String> = (0..1000).map(|i| format!("wide:{i}")).collect();
    for chunk in keys.chunks(100) {
        let pairs: Vec<(&String, &String)> = chunk.iter().map(|k| (k, k)).collect();
        let () = c.mset(&pairs).await.unwrap();
    }
    let map = cluster.slot_map().await;
    let masters: Vec<&RedisServer> = map.masters().iter().map(|a| cluster.node(a)).collect();
    let mut direct_sizes = Vec::new();
    for m in &masters {
        let n: i64 = redis::cmd("DBSIZE")
            .query_async(&mut m.client().await)
            .await
            .unwrap();
        direct_sizes.push(n);
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(dbsize, 1000);
    assert_eq!(direct_sizes.iter().sum::<i64>(), 1000, "{direct_sizes:?}");
    assert!(direct_sizes.iter().all(|&n| n > 0), "{direct_sizes:?}");
    // INFO's keyspace is the cluster's (monitoring reads `db0:keys=`), with the other sections.
    for section in [None, Some("keyspace")] {
        let mut info = redis::cmd("INFO");
        if let Some(s) = section {
            info.arg(s);
        }
        let text: String = info.query_async(&mut c).await.unwrap();
        assert!(
            text.contains("db0:keys=1000,expires=0,avg_ttl=0"),
            "{section:?}: {text}"
        );
        assert_eq!(
            section.is_none(),
            text.contains("redis_version:"),
            "{section:?}"
        );
    }
    // ACL changes reach every master (Redis Cluster does not spread them).
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", "wide-user", "on", ">pw", "+get", "~*"])
        .query_async(&mut c)
        .await
        .unwrap();
    for m in &masters {
        let users = acl_users(m).await;
        assert!(
            users.contains(&"wide-user".to_string()),
            "{}: {users:?}",
            m.addr()
        );
    }
    let deleted: i64 = redis::cmd("ACL")
        .arg(&["DELUSER", "wide-user"])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    for m in &masters {
        let users = acl_users(m).await;
        assert!(
            !users.contains(&"wide-user".to_string()),
            "{}: {users:?}",
            m.addr()
        );
    }

    // SCAN, with the cursor each reply returns, until 0: every key exactly once.
    let (mut cursor, mut seen, mut calls) = ("0".to_string(), Vec::new(), 0);
    loop {
        let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("COUNT")
            .arg(50)
            .query_async(&mut c)
            .await
            .unwrap();
        seen.extend(batch);
        calls += 1;
        assert!(calls < 1000, "SCAN does not end (cursor {next})");
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "SCAN returned a key twice");
    assert_eq!(unique, keys.iter().collect(), "SCAN returned every key");
    assert!(calls > 3, "the scan went over several calls ({calls})");
    // A call whose COUNT covers every master's keys gets them all and ends the scan, as one
    // server's SCAN does for a small database (clients that scan "each node" once rely on it).
    for pattern in ["*", "wide:1*"] {
        let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(100_000)
            .query_async(&mut c)
            .await
            .unwrap();
        let batch: HashSet<&String> = batch.iter().collect();
        let wanted: HashSet<&String> = keys
            .iter()
            .filter(|k| pattern == "*" || k.starts_with("wide:1"))
            .collect();
        assert_eq!((next.as_str(), batch), ("0", wanted), "MATCH {pattern}");
    }

    let mut all: Vec<String> = c.keys("*").await.unwrap();
    all.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(all, sorted, "KEYS * returns every key once");

    // The proxy presents itself as a one-node cluster that serves every slot.
    type Slots = Vec<(i64, i64, (String, u16, String))>;
    let slots: Slots = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let (first, last, (ip, port, _)) = &slots[0];
    assert_eq!((*first, *last), (0, 16383));
    assert_eq!(format!("{ip}:{port}"), proxy.addr().to_string());
    // CLUSTER SHARDS: one shard with every slot, its node the proxy, with a node's fields.
    let shards: redis::Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(&mut c)
        .await
        .unwrap();
    let direct: redis::Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(&mut masters[0].client().await)
        .await
        .unwrap();
    let node_fields = |shards: &redis::Value| -> Vec<Vec<(String, String)>> {
        let redis::Value::Array(shards) = shards else {
            panic!("{shards:?}")
        };
        shards
            .iter()
            .flat_map(|shard| {
                let redis::Value::Array(fields) = shard else {
                    panic!("{shard:?}")
                };
                let Some(redis::Value::Array(nodes)) = fields.get(3) else {
                    panic!("{fields:?}")
                };
                nodes.iter().map(|n| {
                    let pairs: Vec<(String, redis::Value)> =
                        redis::from_redis_value(n.clone()).unwrap();
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                        .collect()
                })
            })
            .collect()
    };
    let ours = node_fields(&shards);
    assert_eq!(ours.len(), 1, "{shards:?}");
    let names = |n: &[(String, String)]| n.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ours[0]),
        names(&node_fields(&direct)[0]),
        "{shards:?}"
    );
    let value = |k: &str| ours[0].iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(
        format!("{}:{}", value("ip"), value("port")),
        proxy.addr().to_string()
    );
    assert_eq!(value("role"), "master");
    let redis::Value::Array(shard) = &shards else {
        panic!()
    };
    let slots: Vec<i64> = match &shard[0] {
        redis::Value::Array(f) => redis::from_redis_value(f[1].clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(slots, [0, 16383]);
    let links: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("LINKS")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(links.is_empty(), "{links:?}");
    let mut node = masters[0].client().await;
    for key in ["wide:1", "{u}x", "foo{}{bar}", ""] {
        let via_proxy: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let direct: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node)
            .await
            .unwrap();
        assert_eq!(via_proxy, direct, "CLUSTER KEYSLOT {key:?}");
    }

    // A script loaded through the proxy is on every master, so EVALSHA works for any key.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .query_async(&mut c)
        .await
        .unwrap();
    for m in &masters {
        let have: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query_async(&mut m.client().await)
            .await
            .unwrap();
        assert_eq!(have, [true], "SCRIPT LOAD reached {}", m.addr());
    }
    for k in keys_on_every_master(&map, "script", 1) {
        let ok: String = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(&k)
            .arg("s")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(ok, "OK");
        let v: Option<String> = cluster
            .owner(&map, &k)
            .client()
            .await
            .get(&k)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("s"), "EVALSHA set {k} on its master");
    }

    let () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    for m in &masters {
        let n: i64 = redis::cmd("DBSIZE")
            .query_async(&mut m.client().await)
            .await
            .unwrap();
        assert_eq!(n, 0, "FLUSHALL emptied {}", m.addr());
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(dbsize, 0);
}

/// `ACL USERS` of one node, asked directly.
async fn acl_users(node: &RedisServer) -> Vec<String> {
    redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut node.client().await)
        .await
        .unwrap()
}

/// The lines of `INFO commandstats` whose command was refused (`rejected_calls`) or failed
/// (`failed_calls`) at least once.
fn refused_commands(info: &str) -> Vec<String> {
    let count = |v: &str, name: &str| -> u64 {
        v.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter(|l| {
            l.split_once(':').is_some_and(|(name, v)| {
                name.starts_with("cmdstat_")
                    && count(v, "rejected_calls") + count(v, "failed_calls") > 0
            })
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_reads_go_to_replicas_and_writes_never_do() {
    let (cluster, proxy) = cluster_and_proxy(ProxyBuilder::eventual).await;
    let map = cluster.slot_map().await;
    let pairs = pairs(&cluster, &map);
    let per_master = 20;
    let keys = keys_on_every_master(&map, "replica", per_master);
    let mut before = Vec::new();
    for (m, r) in &pairs {
        before.push((
            m.commandstats("set").await,
            r.commandstats("get").await,
            // `redis-cli --cluster create` leaves a failed CLUSTER REPLICATE behind.
            refused_commands(&r.info("commandstats").await),
        ));
    }

    let mut c = proxy.client().await;
    for k in &keys {
        let () = c.set(k, k).await.unwrap();
    }
    // The replicas have every write before the reads (eventual reads may otherwise miss them).
    for (m, r) in &pairs {
        r.wait_caught_up(m).await;
    }
    for k in &keys {
        let v: Option<String> = c.get(k).await.unwrap();
        assert_eq!(v.as_deref(), Some(k.as_str()), "GET {k}");
    }
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        got.iter()
            .zip(&keys)
            .all(|(v, k)| v.as_deref() == Some(k.as_str())),
        "MGET over replicas: {got:?}"
    );

    for ((m, r), (sets, gets, refused_before)) in pairs.iter().zip(before) {
        let n = per_master as u64;
        assert_eq!(
            m.commandstats("set").await - sets,
            n,
            "master {} ran its SETs",
            m.addr()
        );
        assert_eq!(
            r.commandstats("get").await - gets,
            n,
            "replica {} served the GETs of its master's keys",
            r.addr()
        );
        assert_eq!(
            m.commandstats("get").await,
            0,
            "no GET reached master {}",
            m.addr()
        );
        // Split by slot, the MGET is one part per key (no two keys share a slot).
        assert_eq!(
            r.commandstats("mget").await,
            n,
            "replica {} served its MGET parts",
            r.addr()
        );
        assert_eq!(
            m.commandstats("mget").await,
            0,
            "no MGET part reached master {}",
            m.addr()
        );
        // A write sent to a READONLY replica is refused with MOVED, which Redis counts as a
        // rejected call; replicated writes count as calls, so calls alone cannot tell.
        assert_eq!(
            refused_commands(&r.info("commandstats").await),
            refused_before,
            "replica {} refused no command of the test",
            r.addr()
        );
    }
    assert_eq!(
        proxy.cluster_stats().moved,
        0,
        "no write bounced off a replica"
    );
}
