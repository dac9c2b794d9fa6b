//! One reply from the replies of a command's parts: a multi-key command split by slot, or a
//! command sent to every master.

use bytes::{BufMut, Bytes, BytesMut};

use crate::client::fanout::config_set_reply;
use crate::resp::{error_reply, int_reply, is_error_reply, status_reply, ReplyScanner};

/// Masters a `SCAN` cursor can address: the proxy's cursor is `node_cursor * SCAN_NODES + node`.
pub const SCAN_NODES: u64 = 1024;

/// How the parts' replies make the client's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Combine {
    /// One part: its reply as it is.
    First,
    /// `MGET` split by slot: element `j` of the reply is element `order[j].1` of part `order[j].0`.
    Gather(Vec<(u32, u32)>),
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `DBSIZE`: the integers added up.
    Sum,
    /// `MSET`: `+OK` once every part said so.
    AllOk,
    /// Sent to every master (`FLUSHALL`, `SCRIPT LOAD`): the first error, else the first reply.
    Same,
    /// `CONFIG SET` on every master: `+OK` when each said so, else the error naming the nodes
    /// that refused ([`config_set_reply`]; without their names, as `Same`).
    ConfigSet,
    /// `KEYS`: the arrays one after another.
    Concat,
    /// `PUBSUB NUMPAT`: the largest integer.
    Max,
    /// `PUBSUB CHANNELS`: the arrays one after another, each element once.
    Union,
    /// `PUBSUB NUMSUB`: `[name, count, ...]` arrays with the same names, the counts added up.
    SumPairs,
    /// `SCRIPT EXISTS`: element-wise minimum (1 only when every master has the script).
    AllHave,
    /// `RANDOMKEY`: the first reply that is not nil.
    FirstNonNil,
    /// `INFO`: the first master's text, with its `# Keyspace` section the whole cluster's (each
    /// database's `keys` and `expires` added up, `avg_ttl` weighted by them).
    Info,
    /// `SCAN` on masters `node`, `node + 1`, ... of `nodes` (part `i` on master `node + i`):
    /// their keys one after another while each master finished its iteration in the call and
    /// fewer than `count` keys came, and the cursor rewritten to address the proxy's cursor.
    Scan {
        /// The first master scanned.
        node: u64,
        /// How many masters there are.
        nodes: u64,
        /// The call's `COUNT`.
        count: u64,
    },
}

/// `CONFIG SET`'s reply ([`Combine::ConfigSet`]) from its parts' replies and the nodes that gave
/// them (`nodes[i]` answered `parts[i]`; `None`: the part reached no node): an error names the
/// nodes that refused.
pub fn config_set_named(parts: &[Bytes], nodes: &[Option<&str>]) -> Bytes {
    let named: Vec<(String, Bytes)> = parts
        .iter()
        .zip(nodes)
        .map(|(p, n)| (n.unwrap_or("an unreachable master").to_string(), p.clone()))
        .collect();
    config_set_reply(&named)
}

/// Builds the client's reply from the parts' replies (one per part, in part order).
pub fn combine(how: &Combine, parts: &[Bytes]) -> Bytes {
    if let Combine::First = how {
        return parts.first().cloned().unwrap_or_else(no_reply);
    }
    if let Some(err) = parts.iter().find(|p| is_error_reply(p)) {
        // A SCAN's later parts count only when the call reaches them.
        if !matches!(how, Combine::FirstNonNil | Combine::Scan { .. }) {
            return err.clone();
        }
    }
    match how {
        Combine::First => parts.first().cloned().unwrap_or_else(no_reply),
        Combine::Gather(order) => gather(order, parts),
        Combine::Sum => fold_integers(parts, i64::saturating_add),
        Combine::Max => fold_integers(parts, i64::max),
        Combine::AllOk => status_reply("OK"),
        Combine::Same | Combine::ConfigSet => parts.first().cloned().unwrap_or_else(no_reply),
        Combine::Concat => {
            let mut all = Vec::new();
            for p in parts {
                match elements(p) {
                    Some(e) => all.extend(e),
                    None => return unexpected(p),
                }
            }
            array(&all)
        }
        Combine::Union => {
            let (mut all, mut seen) = (Vec::new(), std::collections::HashSet::new());
            for p in parts {
                match elements(p) {
                    Some(e) => all.extend(e.into_iter().filter(|f| seen.insert(f.clone()))),
                    None => return unexpected(p),
                }
            }
            array(&all)
        }
        Combine::SumPairs => sum_pairs(parts),
        Combine::AllHave => {
            let mut flags: Option<Vec<i64>> = None;
            for p in parts {
                let Some(values) = elements(p)
                    .and_then(|e| e.iter().map(|f| integer(f)).collect::<Option<Vec<i64>>>())
                else {
                    return unexpected(p);
                };
                flags = Some(match flags {
                    None => values,
                    Some(f) => f.iter().zip(&values).map(|(a, b)| *a.min(b)).collect(),
                });
            }
            let frames: Vec<Bytes> = flags
                .unwrap_or_default()
                .into_iter()
                .map(int_reply)
                .collect();
            array(&frames)
        }
        Combine::FirstNonNil => parts
            .iter()
            .find(|p| !is_nil(p) && !is_error_reply(p))
            .or_else(|| parts.iter().find(|p| is_error_reply(p)))
            .or_else(|| parts.first())
            .cloned()
            .unwrap_or_else(no_reply),
        Combine::Scan { node, nodes, count } => scan(*node, *nodes, *count, parts),
        Combine::Info => info(parts),
    }
}

/// The parts' integer replies folded with `f` from 0, or the first part that is not one.
fn fold_integers(parts: &[Bytes], f: fn(i64, i64) -> i64) -> Bytes {
    let mut acc: i64 = 0;
    for p in parts {
        match integer(p) {
            Some(n) => acc = f(acc, n),
            None => return unexpected(p),
        }
    }
    int_reply(acc)
}

fn sum_pairs(parts: &[Bytes]) -> Bytes {
    // The names are the request's, in its order, on every master.
    let mut totals: Vec<(Bytes, i64)> = Vec::new();
    for p in parts {
        let Some(e) = elements(p).filter(|e| e.len() % 2 == 0) else {
            return unexpected(p);
        };
        for (i, pair) in e.chunks(2).enumerate() {
            let (Some(name), Some(n)) = (pair.first(), pair.get(1).and_then(|n| integer(n))) else {
                return unexpected(p);
            };
            match totals.get_mut(i) {
                Some((k, total)) if k == name => *total = total.saturating_add(n),
                Some(_) => return unexpected(p),
                None => totals.push((name.clone(), n)),
            }
        }
    }
    let frames: Vec<Bytes> = totals
        .into_iter()
        .flat_map(|(name, n)| [name, int_reply(n)])
        .collect();
    array(&frames)
}

fn gather(order: &[(u32, u32)], parts: &[Bytes]) -> Bytes {
    let mut split = Vec::with_capacity(parts.len());
    for p in parts {
        match elements(p) {
            Some(e) => split.push(e),
            None => return unexpected(p),
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for &(part, index) in order {
        match split.get(part as usize).and_then(|e| e.get(index as usize)) {
            Some(f) => out.push(f.clone()),
            None => return error_reply("ERR haproxy-rs: a node's MGET reply was too short"),
        }
    }
    array(&out)
}

fn scan(node: u64, nodes: u64, count: u64, parts: &[Bytes]) -> Bytes {
    let mut keys = Vec::new();
    for (at, p) in (node..).zip(parts) {
        if is_error_reply(p) {
            return p.clone();
        }
        let Some(fields) = elements(p).filter(|f| f.len() == 2) else {
            return unexpected(p);
        };
        let (Some(cursor), Some(batch)) = (fields.first(), fields.get(1).and_then(elements)) else {
            return unexpected(p);
        };
        let Some(inner) = bulk_text(cursor).and_then(|c| c.parse::<u64>().ok()) else {
            return unexpected(p);
        };
        keys.extend(batch);
        let next = if inner != 0 {
            match crate::router::scan::tagged_cursor(inner, at, SCAN_NODES) {
                Ok(c) => c,
                Err(reply) => return reply,
            }
        } else if at + 1 >= nodes {
            // The last master is done: so is the whole scan.
            0
        } else if (keys.len() as u64) < count && at + 1 < node + parts.len() as u64 {
            // This master is done and the call wants more: the next one, from its start.
            continue;
        } else {
            at + 1
        };
        let cursor = crate::resp::bulk_reply(next.to_string().as_bytes());
        return array(&[cursor, array(&keys)]);
    }
    no_reply()
}

/// Splits an array reply (`*<n>`, RESP3 sets `~` too) into its element frames.
pub fn elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    if !matches!(frame.first(), Some(b'*' | b'~')) {
        return None;
    }
    let header_end = frame.iter().position(|&b| b == b'\n')?;
    let count = std::str::from_utf8(frame.get(1..header_end.checked_sub(1)?)?)
        .ok()?
        .parse::<i64>()
        .ok()?;
    let mut rest = BytesMut::from(frame.get(header_end + 1..)?);
    let mut scanner = ReplyScanner::new(64);
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(4096));
    for _ in 0..count.max(0) {
        out.push(scanner.next(&mut rest).ok()??);
    }
    Some(out)
}

fn array(items: &[Bytes]) -> Bytes {
    let len: usize = items.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(len + 16);
    out.put_u8(b'*');
    out.put_slice(items.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    for i in items {
        out.put_slice(i);
    }
    out.freeze()
}

fn integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

fn bulk_text(frame: &[u8]) -> Option<&str> {
    let rest = frame.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let body = rest.get(nl + 1..)?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()
}

fn is_nil(frame: &[u8]) -> bool {
    frame == b"$-1\r\n" || frame == b"*-1\r\n" || frame == b"_\r\n"
}

fn unexpected(frame: &Bytes) -> Bytes {
    tracing::debug!(reply = %String::from_utf8_lossy(frame), "unexpected reply shape from a node");
    error_reply("ERR haproxy-rs: a node sent a reply of an unexpected type")
}

fn no_reply() -> Bytes {
    error_reply("ERR haproxy-rs: no reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn mget_parts_come_back_in_key_order() {
        // keys a(part 0), b(part 1), c(part 0)
        let parts = [b("*2\r\n$1\r\nA\r\n$-1\r\n"), b("*1\r\n$1\r\nB\r\n")];
        let how = Combine::Gather(vec![(0, 0), (1, 0), (0, 1)]);
        assert_eq!(
            combine(&how, &parts),
            b("*3\r\n$1\r\nA\r\n$1\r\nB\r\n$-1\r\n")
        );
    }

    #[test]
    fn sums_oks_and_errors() {
        assert_eq!(
            combine(&Combine::Sum, &[b(":2\r\n"), b(":3\r\n")]),
            b(":5\r\n")
        );
        assert_eq!(
            combine(&Combine::AllOk, &[b("+OK\r\n"), b("+OK\r\n")]),
            b("+OK\r\n")
        );
        let err = b("-WRONGTYPE x\r\n");
        assert_eq!(combine(&Combine::Sum, &[b(":2\r\n"), err.clone()]), err);
        assert_eq!(combine(&Combine::AllOk, &[b("+OK\r\n"), err.clone()]), err);
        assert!(is_error_reply(&combine(&Combine::Sum, &[b("+OK\r\n")])));
    }

    #[test]
    fn config_set_names_the_nodes_that_refused() {
        let (ok, no) = (b("+OK\r\n"), b("-NOPERM no\r\n"));
        let parts = [ok.clone(), no.clone(), no];
        let nodes = [Some("a:1"), Some("b:2"), None];
        assert_eq!(
            config_set_named(&parts, &nodes),
            error_reply(
                "ERR CONFIG SET failed on b:2 (NOPERM no), an unreachable master (NOPERM no)"
            )
        );
        assert_eq!(
            config_set_named(&[ok.clone(), ok], &nodes),
            status_reply("OK")
        );
        assert_eq!(
            combine(&Combine::ConfigSet, &[b("+OK\r\n"), b("-ERR x\r\n")]),
            b("-ERR x\r\n"),
            "without the nodes: the first error"
        );
    }

    #[test]
    fn keys_script_exists_and_randomkey() {
        let parts = [b("*1\r\n$1\r\na\r\n"), b("*0\r\n"), b("*1\r\n$1\r\nb\r\n")];
        assert_eq!(
            combine(&Combine::Concat, &parts),
            b("*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        );
        let exists = [b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:1\r\n:0\r\n")];
        assert_eq!(combine(&Combine::AllHave, &exists), b("*2\r\n:1\r\n:0\r\n"));
        let random = [b("$-1\r\n"), b("$1\r\nk\r\n")];
        assert_eq!(combine(&Combine::FirstNonNil, &random), b("$1\r\nk\r\n"));
        assert_eq!(
            combine(&Combine::FirstNonNil, &[b("$-1\r\n")]),
            b("$-1\r\n")
        );
    }

    #[test]
    fn scan_cursor_addresses_the_node() {
        let reply = b("*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n");
        let out = combine(
            &Combine::Scan {
                node: 2,
                nodes: 3,
                count: 10,
            },
            &[reply],
        );
        let c = 17 * SCAN_NODES + 2;
        assert_eq!(
            out,
            b(&format!(
                "*2\r\n${}\r\n{c}\r\n*1\r\n$1\r\nk\r\n",
                c.to_string().len()
            ))
        );
        // A finished node moves on to the next one, the last one ends the scan.
        let done = b("*2\r\n$1\r\n0\r\n*0\r\n");
        assert_eq!(
            combine(
                &Combine::Scan {
                    node: 0,
                    nodes: 3,
                    count: 10
                },
                std::slice::from_ref(&done)
            ),
            b("*2\r\n$1\r\n1\r\n*0\r\n")
        );
        assert_eq!(
            combine(
                &Combine::Scan {
                    node: 2,
                    nodes: 3,
                    count: 10
                },
                &[done]
            ),
            b("*2\r\n$1\r\n0\r\n*0\r\n")
        );
    }

    #[test]
    fn pubsub_counts_add_up_over_the_masters() {
        let numsub = [
            b("*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n"),
            b("*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:3\r\n"),
        ];
        assert_eq!(
            combine(&Combine::SumPairs, &numsub),
            b("*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:3\r\n")
        );
        assert_eq!(
            combine(&Combine::Max, &[b(":3\r\n"), b(":2\r\n")]),
            b(":3\r\n")
        );
        let channels = [
            b("*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            b("*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ];
        assert_eq!(
            combine(&Combine::Union, &channels),
            b("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
        );
    }

    #[test]
    fn a_scan_call_runs_on_into_the_next_masters_while_it_wants_keys() {
        let scan = |count, parts: &[Bytes]| {
            combine(
                &Combine::Scan {
                    node: 1,
                    nodes: 4,
                    count,
                },
                parts,
            )
        };
        let one = |cursor: &str, key: &str| {
            b(&format!(
                "*2\r\n${}\r\n{cursor}\r\n*1\r\n${}\r\n{key}\r\n",
                cursor.len(),
                key.len()
            ))
        };
        let (done_a, done_b, done_c) = (one("0", "a"), one("0", "b"), one("0", "c"));
        // Masters 1, 2 and 3 finish: every key, and the scan is over.
        assert_eq!(
            scan(10, &[done_a.clone(), done_b.clone(), done_c]),
            b("*2\r\n$1\r\n0\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
        );
        // COUNT 2 reached after master 2: the next call starts master 3.
        let err = b("-ERR down\r\n");
        assert_eq!(
            scan(2, &[done_a.clone(), done_b.clone(), err.clone()]),
            b("*2\r\n$1\r\n3\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        );
        // Master 2 has more: its cursor, with the keys so far.
        let c = 7 * SCAN_NODES + 2;
        assert_eq!(
            scan(10, &[done_a.clone(), one("7", "b"), err.clone()]),
            b(&format!(
                "*2\r\n${}\r\n{c}\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                c.to_string().len()
            ))
        );
        // A master the call reaches answers an error: the client gets it.
        assert_eq!(scan(10, &[done_a, err.clone(), done_b]), err);
    }
}

/// The text of a bulk (`$`) or verbatim (`=`, `txt:`) string reply, and how to encode it back.
fn info_text(reply: &[u8]) -> Option<(bool, &str)> {
    let verbatim = match reply.first()? {
        b'$' => false,
        b'=' => true,
        _ => return None,
    };
    let start = reply.windows(2).position(|w| w == b"\r\n")? + 2;
    let body = reply.get(start..reply.len().checked_sub(2)?)?;
    let body = if verbatim { body.get(4..)? } else { body };
    Some((verbatim, std::str::from_utf8(body).ok()?))
}

/// [`Combine::Info`].
fn info(parts: &[Bytes]) -> Bytes {
    let Some(first) = parts.first() else {
        return no_reply();
    };
    let Some((verbatim, text)) = info_text(first) else {
        return first.clone();
    };
    let Some(at) = text.find("# Keyspace\r\n") else {
        return first.clone();
    };
    // db -> (keys, expires, avg_ttl weighted by expires)
    let mut dbs: std::collections::BTreeMap<u32, (u64, u64, u128)> = Default::default();
    for part in parts {
        let Some((_, t)) = info_text(part) else {
            continue;
        };
        let Some(i) = t.find("# Keyspace\r\n") else {
            continue;
        };
        let section = t[i..].split("\r\n\r\n").next().unwrap_or_default();
        for line in section.lines().skip(1) {
            let Some((db, fields)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let e = dbs.entry(n).or_default();
            e.0 += field("keys");
            e.1 += field("expires");
            e.2 += u128::from(field("avg_ttl")) * u128::from(field("expires"));
        }
    }
    let mut section = String::from("# Keyspace\r\n");
    for (db, (keys, expires, ttl)) in &dbs {
        let avg = if *expires > 0 {
            ttl / u128::from(*expires)
        } else {
            0
        };
        section.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
        ));
    }
    let rest = &text[at..];
    let after = rest.find("\r\n\r\n").map_or("", |j| &rest[j + 2..]);
    let merged = format!("{}{section}{after}", &text[..at]);
    if verbatim {
        let body = format!("txt:{merged}");
        Bytes::from(format!("={}\r\n{body}\r\n", body.len()))
    } else {
        Bytes::from(format!("${}\r\n{merged}\r\n", merged.len()))
    }
}

#[cfg(test)]
mod info_tests {
    use super::*;

    fn bulk(s: &str) -> Bytes {
        Bytes::from(format!("${}\r\n{s}\r\n", s.len()))
    }

    #[test]
    fn info_adds_up_every_masters_keyspace() {
        let a = bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=100\r\n");
        let b = bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=300\r\n");
        let c = bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\n");
        let merged = combine(&Combine::Info, &[c, a, b]);
        assert_eq!(
            merged,
            bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=200\r\n")
        );
        // Sections after the keyspace stay; a reply without one is the first master's.
        let d = bulk("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n\r\n# Other\r\nx:1\r\n");
        assert_eq!(
            combine(&Combine::Info, &[d.clone(), d]),
            bulk("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n\r\n# Other\r\nx:1\r\n")
        );
        let server = bulk("# Server\r\nredis_version:7.0.15\r\n");
        assert_eq!(
            combine(&Combine::Info, std::slice::from_ref(&server)),
            server
        );
    }

    #[test]
    fn resp3_info_stays_a_verbatim_string() {
        let v = |s: &str| Bytes::from(format!("={}\r\ntxt:{s}\r\n", s.len() + 4));
        let a = v("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n");
        assert_eq!(
            combine(&Combine::Info, &[a.clone(), a]),
            v("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n")
        );
    }
}
