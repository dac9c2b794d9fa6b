//! Where a request goes in `bench --cluster`: the master of its keys' slot, or one part per slot
//! for `MGET` and `MSET`.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};

use crate::bench::workload::{push_command, WorkloadKind};
use crate::resp::{CommandTable, Request};
use crate::router::slot::key_slot;

/// Key positions of every command (built once; the generator's commands are looked up in it).
static COMMANDS: LazyLock<CommandTable> = LazyLock::new(CommandTable::builtin);

/// Whether `bench --cluster` can send workload `kind`: single-key commands, `PING`, and `MGET`/`MSET`
/// (split by slot). Transactions, streams and pub/sub need one connection for the whole exchange.
pub fn supports(kind: WorkloadKind) -> bool {
    matches!(
        kind,
        WorkloadKind::Set
            | WorkloadKind::Get
            | WorkloadKind::Mixed
            | WorkloadKind::Mget
            | WorkloadKind::Mset
            | WorkloadKind::Incr
            | WorkloadKind::Ping
    )
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No key: any master answers.
    AnyMaster,
    /// The whole request to the master of this slot.
    Slot(u16),
    /// One sub-request per slot, `(slot, encoded command)`, in the order the slots first appear.
    Split(Vec<(u16, Bytes)>),
    /// Keys in several slots of a command that cannot be split (Redis would answer `CROSSSLOT`).
    CrossSlot,
}

/// Routes `req` by the slots of its keys, splitting `MGET` and `MSET` by slot.
pub fn route(req: &Request) -> Route {
    let keys = COMMANDS.keys(req);
    let Some(first) = keys.first().map(|k| key_slot(k)) else {
        return Route::AnyMaster;
    };
    if keys.iter().skip(1).all(|k| key_slot(k) == first) {
        return Route::Slot(first);
    }
    let name = req.name();
    if name.eq_ignore_ascii_case(b"MGET") {
        Route::Split(split(req, 1))
    } else if name.eq_ignore_ascii_case(b"MSET") && req.argc() % 2 == 1 {
        Route::Split(split(req, 2))
    } else {
        Route::CrossSlot
    }
}

/// The arguments after the name in groups of `per` (key first), gathered by the key's slot into one
/// command per slot with the same name.
fn split(req: &Request, per: usize) -> Vec<(u16, Bytes)> {
    let name = req.name();
    let args: Vec<&[u8]> = req.args().skip(1).collect();
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    for chunk in args.chunks(per) {
        let Some(key) = chunk.first() else { continue };
        let slot = key_slot(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, g)) => g.extend_from_slice(chunk),
            None => {
                let mut g = vec![name];
                g.extend_from_slice(chunk);
                groups.push((slot, g));
            }
        }
    }
    groups
        .into_iter()
        .map(|(slot, g)| {
            let mut out = BytesMut::new();
            push_command(&mut out, &g);
            (slot, out.freeze())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{RequestLimits, RequestParser};

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    /// Two keys in different slots, and one sharing the first's slot through a hash tag.
    const A: &str = "key:000000000001";
    const B: &str = "key:000000000002";
    const A_TAGGED: &str = "{key:000000000001}x";

    fn args_of(raw: &Bytes) -> Vec<String> {
        let mut buf = BytesMut::from(&raw[..]);
        let r = RequestParser::new(RequestLimits::default())
            .next(&mut buf)
            .unwrap()
            .unwrap();
        r.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn single_key_and_keyless_commands_go_to_one_node() {
        assert_ne!(key_slot(A.as_bytes()), key_slot(B.as_bytes()));
        assert_eq!(key_slot(A.as_bytes()), key_slot(A_TAGGED.as_bytes()));
        assert_eq!(
            route(&req(&["SET", A, "v"])),
            Route::Slot(key_slot(A.as_bytes()))
        );
        assert_eq!(
            route(&req(&["get", B])),
            Route::Slot(key_slot(B.as_bytes()))
        );
        assert_eq!(route(&req(&["PING"])), Route::AnyMaster);
        assert_eq!(
            route(&req(&["MGET", A, A_TAGGED])),
            Route::Slot(key_slot(A.as_bytes())),
            "one slot: no split"
        );
    }

    #[test]
    fn mget_and_mset_split_by_slot_in_first_seen_order() {
        let Route::Split(parts) = route(&req(&["MGET", A, B, A_TAGGED])) else {
            panic!("MGET over two slots splits");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, key_slot(A.as_bytes()));
        assert_eq!(args_of(&parts[0].1), ["MGET", A, A_TAGGED]);
        assert_eq!(args_of(&parts[1].1), ["MGET", B]);

        let Route::Split(parts) = route(&req(&["mset", A, "1", B, "2", A_TAGGED, "3"])) else {
            panic!("MSET over two slots splits");
        };
        assert_eq!(args_of(&parts[0].1), ["mset", A, "1", A_TAGGED, "3"]);
        assert_eq!(args_of(&parts[1].1), ["mset", B, "2"]);
        assert_eq!(parts[1].0, key_slot(B.as_bytes()));
    }

    #[test]
    fn unsplittable_multi_key_commands_are_crossslot() {
        assert_eq!(route(&req(&["DEL", A, B])), Route::CrossSlot);
        assert_eq!(route(&req(&["MSET", A, "1", B])), Route::CrossSlot);
    }
}
