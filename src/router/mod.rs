//! Routing: what kind of command a request is, and which server it goes to.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod consistency;
pub mod scan;
pub mod server;
pub mod slot;
pub mod slotmap;
pub mod table;

use std::sync::Arc;

use bytes::Bytes;

pub use consistency::{ReadNeed, ReadYourWrites, ReplicationClock};
pub use server::{ReplicaLink, Role, Server, ServerHealth};
pub use table::{Fence, RoutingTable};

use crate::config::ReadPolicy;
use crate::resp::{
    bulk_reply, error_reply, status_reply, CommandFlags, CommandInfo, CommandTable, Request,
};

/// What a request is, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Read-only: may go to a replica.
    Read,
    /// Writes, unknown and everything else: the master.
    Write,
    /// The proxy answers it itself with this reply.
    Local(Bytes),
    /// `QUIT`: `+OK`, then close.
    Quit,
    /// `AUTH`: checked by the session against the backend password.
    Auth,
    /// `HELLO`: answered by the session, which may switch to RESP3 connections.
    Hello,
    /// Refused with this error reply; the connection stays open.
    Reject(Bytes),
    /// Needs a backend connection of the client's own (a transaction or a blocking command).
    Pin(Pin),
    /// `SELECT db`: the session's later requests use connections in that database.
    Select(u8),
    /// About the client's own connection (`CLIENT SETNAME`, `RESET`, ...): the session answers.
    Conn(ConnCmd),
    /// `(P|S)SUBSCRIBE`, the unsubscribes, `CLIENT TRACKING` and `MONITOR`: the session goes
    /// into subscriber (or monitor) mode.
    PubSub,
}

/// Commands about the client's connection, answered by the session from its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCmd {
    /// `CLIENT SETNAME name`.
    SetName,
    /// `CLIENT GETNAME`.
    GetName,
    /// `CLIENT ID`.
    Id,
    /// `CLIENT INFO`.
    Info,
    /// `CLIENT LIST`: the proxy's clients.
    List,
    /// `CLIENT KILL`: ends sessions of the proxy's clients.
    Kill,
    /// `CLIENT REPLY ON|OFF|SKIP`.
    Reply,
    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: another client of the proxy.
    Unblock,
    /// `CLIENT PAUSE timeout [WRITE|ALL]`: the proxy's clients.
    Pause,
    /// `CLIENT UNPAUSE`.
    Unpause,
    /// `CLIENT NO-EVICT`/`NO-TOUCH on|off`: accepted (they would apply to a shared connection).
    Accepted,
    /// `RESET`.
    Reset,
    /// `CLIENT GETREDIR`/`TRACKINGINFO`/`CACHING` of a client without tracking (with it, its
    /// tracking connection answers them).
    NotTracking,
}

impl ConnCmd {
    /// About other clients of the proxy, or the session's replies: answered by the proxy even in
    /// a transaction's place (never queued for a server, where they would act on the proxy's
    /// connections).
    pub fn proxy_wide(self) -> bool {
        matches!(
            self,
            ConnCmd::Kill | ConnCmd::Reply | ConnCmd::Unblock | ConnCmd::Pause | ConnCmd::Unpause
        )
    }
}

/// Databases a client may `SELECT` (Redis's default `databases 16`).
pub const DATABASES: usize = 16;

/// The database of `SELECT db`, or Redis's own error for a bad one.
fn select_db(req: &Request) -> Result<u8, Bytes> {
    if req.argc() != 2 {
        return Err(error_reply(
            "ERR wrong number of arguments for 'select' command",
        ));
    }
    let n = req
        .arg(1)
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<i64>().ok())
        .ok_or_else(|| error_reply("ERR value is not an integer or out of range"))?;
    u8::try_from(n)
        .ok()
        .filter(|&db| usize::from(db) < DATABASES)
        .ok_or_else(|| error_reply("ERR DB index is out of range"))
}

/// The commands that run on a connection pinned to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `MULTI`: pins until `EXEC`/`DISCARD`.
    Multi,
    /// `EXEC`: ends the transaction.
    Exec,
    /// `DISCARD`: ends the transaction.
    Discard,
    /// `WATCH`: pins until the transaction ends or `UNWATCH`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
    /// A blocking command (`BLPOP`, `XREAD ... BLOCK`, ...): pinned for its own length.
    Blocking,
    /// `WAIT numreplicas timeout`: pinned for its own length, like a blocking command, after a
    /// probe that makes the connection's write offset cover the client's earlier writes.
    Wait,
}

/// Whether `req` is `CLIENT TRACKING ...`.
pub fn is_tracking(req: &Request) -> bool {
    req.name().eq_ignore_ascii_case(b"client")
        && req
            .arg(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"tracking"))
}

/// Commands that would change the state of a shared backend connection. Each is refused with an
/// error naming it until sessions own backend connections for them.
const CONNECTION_STATE: &[&str] = &["sync", "psync", "readonly", "readwrite"];

fn unsupported(name: &str, why: &str) -> Class {
    Class::Reject(error_reply(&format!(
        "ERR haproxy-rs does not support '{}' yet: {why}",
        name.replace('|', " ").to_uppercase()
    )))
}

/// Redis's refusal of a command it never queues in a transaction (`no_multi`: `SHUTDOWN`,
/// `SAVE`, `SYNC`, ...), which it checks before the ACL: the proxy's policy says the same
/// only after it.
pub fn refused_in_transaction(info: Option<&CommandInfo>) -> Option<Bytes> {
    info.filter(|i| i.flags.contains(CommandFlags::NO_MULTI))
        .map(|_| error_reply("ERR Command not allowed inside a transaction"))
}

/// Classifies a request by the command table (the backend's own `COMMAND` flags).
pub fn classify(commands: &CommandTable, req: &Request) -> Class {
    classify_info(commands.lookup(req), req)
}

/// [`classify`] with the request's command-table entry looked up already.
pub fn classify_info(info: Option<&CommandInfo>, req: &Request) -> Class {
    let Some(info) = info else {
        return Class::Write; // unknown (module or newer command): the master decides
    };
    match info.name.as_str() {
        "ping" => match req.argc() {
            1 => Class::Local(status_reply("PONG")),
            2 => Class::Local(bulk_reply(req.arg(1).unwrap_or_default())),
            _ => Class::Write, // let Redis word the arity error
        },
        "quit" => Class::Quit,
        "auth" => Class::Auth,
        "hello" => Class::Hello,
        "select" => match select_db(req) {
            Ok(db) => Class::Select(db),
            Err(reply) => Class::Reject(reply),
        },
        // Clients announce their library name (Redis 7.2+); on a shared connection it would only
        // mislabel the proxy's connection, and on 7.0 it is unknown: accept it here.
        "client|setinfo" => Class::Local(status_reply("OK")),
        "client"
            if req
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"setinfo")) =>
        {
            Class::Local(status_reply("OK"))
        }
        "multi" => Class::Pin(Pin::Multi),
        "exec" => Class::Pin(Pin::Exec),
        "discard" => Class::Pin(Pin::Discard),
        "watch" => Class::Pin(Pin::Watch),
        "unwatch" => Class::Pin(Pin::Unwatch),
        "wait" => Class::Pin(Pin::Wait),
        "client|setname" => Class::Conn(ConnCmd::SetName),
        "client|getname" => Class::Conn(ConnCmd::GetName),
        "client|id" => Class::Conn(ConnCmd::Id),
        "client|getredir" | "client|trackinginfo" | "client|caching" => {
            Class::Conn(ConnCmd::NotTracking)
        }
        "client|info" => Class::Conn(ConnCmd::Info),
        "client|list" => Class::Conn(ConnCmd::List),
        "client|kill" => Class::Conn(ConnCmd::Kill),
        "client|reply" => Class::Conn(ConnCmd::Reply),
        "client|unblock" => Class::Conn(ConnCmd::Unblock),
        "client|pause" => Class::Conn(ConnCmd::Pause),
        "client|unpause" => Class::Conn(ConnCmd::Unpause),
        "client|no-evict" | "client|no-touch" => Class::Conn(ConnCmd::Accepted),
        "reset" => Class::Conn(ConnCmd::Reset),
        // A shared connection may be waiting behind the very script to kill: a connection of
        // the client's own, as for a blocking command.
        "script|kill" | "function|kill" => Class::Pin(Pin::Blocking),
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
        | "sunsubscribe" | "monitor" => Class::PubSub,
        // RESP3 client-side caching runs on connections of the client's own, as pub/sub does.
        "client|tracking" => Class::PubSub,
        name if CONNECTION_STATE.contains(&name) => unsupported(
            name,
            "it would change the state of a shared backend connection",
        ),
        "xread" | "xreadgroup" if has_block_arg(req) => Class::Pin(Pin::Blocking),
        "xread" | "xreadgroup" => by_flags(info.flags),
        _ if info.flags.contains(CommandFlags::BLOCKING) => Class::Pin(Pin::Blocking),
        _ => by_flags(info.flags),
    }
}

fn by_flags(flags: CommandFlags) -> Class {
    if flags.contains(CommandFlags::READONLY) && !flags.contains(CommandFlags::WRITE) {
        Class::Read
    } else {
        Class::Write
    }
}

fn has_block_arg(req: &Request) -> bool {
    req.args().any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// Which listener a session came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Read/write: writes to the master, reads by policy.
    Main,
    /// Read-only: reads to replicas, writes refused.
    ReadOnly,
}

/// Where one request goes: `B` is what the caller resolved the server to (its connections).
#[derive(Debug)]
pub enum Route<B> {
    /// To this server.
    To(B),
    /// It needs the master and there is none to write to right now (a failover is under way, the
    /// master is unknown, or its backend was let go): the session holds it and routes it again
    /// when the table changes.
    Hold,
    /// Answered with this error.
    Error(Bytes),
}

/// The error a held request gets once it has waited `failover_hold` for a master.
pub fn hold_expired_reply(held: std::time::Duration) -> Bytes {
    error_reply(&format!(
        "TRYAGAIN haproxy-rs: no master to write to for {:.1}s (failover in progress or master unreachable); the command was not executed",
        held.as_secs_f64()
    ))
}

/// The error a request gets when holding it would exceed `max_held_bytes`.
pub fn hold_full_reply() -> Bytes {
    error_reply("TRYAGAIN haproxy-rs: too many requests held for the failover (max_held_bytes); the command was not executed")
}

/// The read policy in force on `endpoint`: the read-only endpoint exists to serve reads from
/// replicas (HAProxy's `:6380` replica backend), so there `read_policy = "master"` means
/// `"prefer-replica"`; the main endpoint follows the setting. The same in every mode.
pub fn read_policy(endpoint: Endpoint, configured: ReadPolicy) -> ReadPolicy {
    match (endpoint, configured) {
        (Endpoint::ReadOnly, ReadPolicy::Master) => ReadPolicy::PreferReplica,
        (_, policy) => policy,
    }
}

/// Routes a read or write. `need` is the session's read-your-writes requirement (`Any` when off).
/// `resolve` turns a server into what the caller sends to (its connections); a server it
/// resolves to nothing (its backend was let go) is treated as down: no master (held), or not a
/// replica to read from.
pub fn route<'t, B>(
    table: &'t RoutingTable,
    endpoint: Endpoint,
    policy: ReadPolicy,
    write: bool,
    need: ReadNeed,
    cursor: &mut usize,
    mut resolve: impl FnMut(&'t Arc<Server>) -> Option<B>,
) -> Route<B> {
    if write {
        if endpoint == Endpoint::ReadOnly {
            return Route::Error(error_reply(
                "READONLY You can't write against a read only replica.",
            ));
        }
        return master(table, resolve);
    }
    let min_offset = match need {
        ReadNeed::Any => None,
        ReadNeed::Offset(o) => Some(o),
        ReadNeed::Master => return master(table, resolve),
    };
    match policy {
        ReadPolicy::Master => master(table, resolve),
        ReadPolicy::PreferReplica => match table.pick_replica(min_offset, cursor, &mut resolve) {
            Some(r) => Route::To(r),
            None => master(table, resolve),
        },
        ReadPolicy::Replica => match table.pick_replica(min_offset, cursor, &mut resolve) {
            Some(r) => Route::To(r),
            None if min_offset.is_some() => master(table, resolve),
            None => Route::Error(error_reply(
                "ERR haproxy-rs: no healthy replica (read_policy = \"replica\")",
            )),
        },
    }
}

fn master<'t, B>(
    table: &'t RoutingTable,
    mut resolve: impl FnMut(&'t Arc<Server>) -> Option<B>,
) -> Route<B> {
    match &table.master {
        Some(m) if table.fence.is_none() => resolve(m).map_or(Route::Hold, Route::To),
        _ => Route::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(args: &[&str]) -> Class {
        classify(&CommandTable::builtin(), &Request::from_args(args))
    }

    #[test]
    fn reads_writes_and_unknowns() {
        assert_eq!(class(&["GET", "k"]), Class::Read);
        assert_eq!(class(&["mget", "a", "b"]), Class::Read);
        assert_eq!(class(&["SET", "k", "v"]), Class::Write);
        assert_eq!(class(&["EVAL_RO", "return 1", "0"]), Class::Read);
        assert_eq!(class(&["EVAL", "return 1", "0"]), Class::Write);
        assert_eq!(
            class(&["MODULE.CMD", "x"]),
            Class::Write,
            "unknown goes to the master"
        );
        assert_eq!(class(&["XREAD", "STREAMS", "s", "0"]), Class::Read);
        assert_eq!(class(&["SUBSCRIBE", "c"]), Class::PubSub);
        assert_eq!(class(&["sunsubscribe"]), Class::PubSub);
        assert_eq!(class(&["MONITOR"]), Class::PubSub);
    }

    #[test]
    fn local_answers() {
        assert_eq!(class(&["PING"]), Class::Local(status_reply("PONG")));
        assert_eq!(class(&["ping", "hi"]), Class::Local(bulk_reply(b"hi")));
        assert_eq!(class(&["SELECT", "0"]), Class::Select(0));
        assert_eq!(class(&["select", "15"]), Class::Select(15));
        assert_eq!(
            class(&["SELECT", "16"]),
            Class::Reject(error_reply("ERR DB index is out of range"))
        );
        assert_eq!(
            class(&["SELECT", "x"]),
            Class::Reject(error_reply("ERR value is not an integer or out of range"))
        );
        assert_eq!(class(&["QUIT"]), Class::Quit);
        assert_eq!(class(&["auth", "pw"]), Class::Auth);
        assert_eq!(
            class(&["CLIENT", "SETINFO", "LIB-NAME", "x"]),
            Class::Local(status_reply("OK"))
        );
    }

    #[test]
    fn transactions_and_blocking_commands_pin_a_connection() {
        assert_eq!(class(&["MULTI"]), Class::Pin(Pin::Multi));
        assert_eq!(class(&["exec"]), Class::Pin(Pin::Exec));
        assert_eq!(class(&["DISCARD"]), Class::Pin(Pin::Discard));
        assert_eq!(class(&["WATCH", "k"]), Class::Pin(Pin::Watch));
        assert_eq!(class(&["UNWATCH"]), Class::Pin(Pin::Unwatch));
        assert_eq!(class(&["BLPOP", "q", "0"]), Class::Pin(Pin::Blocking));
        assert_eq!(class(&["BZPOPMIN", "z", "1"]), Class::Pin(Pin::Blocking));
        assert_eq!(
            class(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            Class::Pin(Pin::Blocking)
        );
        assert_eq!(class(&["XREAD", "STREAMS", "s", "0"]), Class::Read);
        assert_eq!(class(&["WAIT", "1", "0"]), Class::Pin(Pin::Wait));
        // Redis 7.2+: the master answers (or refuses it as unknown), like any unknown command.
        assert_eq!(class(&["WAITAOF", "1", "0", "0"]), Class::Write);
    }

    #[test]
    fn connection_state_commands_are_refused() {
        for args in [&["READONLY"][..], &["SYNC"]] {
            match class(args) {
                Class::Reject(b) => {
                    assert!(
                        b.starts_with(b"-ERR haproxy-rs does not support"),
                        "{args:?}"
                    )
                }
                other => panic!("{args:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn writes_without_a_master_are_held_and_the_read_endpoint_refuses_writes() {
        let t = RoutingTable::default();
        let mut cursor = 0;
        for (write, need) in [(true, ReadNeed::Any), (false, ReadNeed::Master)] {
            let r = route(
                &t,
                Endpoint::Main,
                ReadPolicy::PreferReplica,
                write,
                need,
                &mut cursor,
                Some,
            );
            assert!(matches!(r, Route::Hold), "{r:?}");
        }
        let fenced = RoutingTable {
            fence: Some(Fence {
                since: std::time::Instant::now(),
                cause: "test".into(),
            }),
            ..RoutingTable::default()
        };
        let r = route(
            &fenced,
            Endpoint::Main,
            ReadPolicy::Master,
            false,
            ReadNeed::Any,
            &mut cursor,
            Some,
        );
        assert!(matches!(r, Route::Hold), "{r:?}");
        match route(
            &t,
            Endpoint::ReadOnly,
            ReadPolicy::PreferReplica,
            true,
            ReadNeed::Any,
            &mut cursor,
            Some,
        ) {
            Route::Error(b) => assert!(b.starts_with(b"-READONLY")),
            other => panic!("{other:?}"),
        }
        match route(
            &t,
            Endpoint::Main,
            ReadPolicy::Replica,
            false,
            ReadNeed::Any,
            &mut cursor,
            Some,
        ) {
            Route::Error(b) => assert!(b.starts_with(b"-ERR haproxy-rs: no healthy replica")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_that_resolves_to_nothing_is_routed_around_as_a_down_one() {
        let server = |addr: &str, role| {
            let s = Server::new(addr, 0);
            s.health.set_checked(role, 0, true);
            Arc::new(s)
        };
        let t = RoutingTable {
            master: Some(server("m:1", Role::Master)),
            replicas: vec![server("r:1", Role::Replica), server("r:2", Role::Replica)],
            ..RoutingTable::default()
        };
        let addr = |r: Route<&Arc<Server>>| match r {
            Route::To(s) => s.addr().to_string(),
            other => format!("{other:?}"),
        };
        let mut cursor = 0;
        let read = |cursor: &mut usize, policy, gone: &[&str]| {
            addr(route(
                &t,
                Endpoint::Main,
                policy,
                false,
                ReadNeed::Any,
                cursor,
                |s| (!gone.contains(&s.addr())).then_some(s),
            ))
        };
        // The replica let go is skipped, every time.
        for _ in 0..4 {
            assert_eq!(read(&mut cursor, ReadPolicy::Replica, &["r:1"]), "r:2");
        }
        // No replica left: the master reads (prefer-replica), or the read is refused.
        let gone = ["r:1", "r:2"];
        assert_eq!(read(&mut cursor, ReadPolicy::PreferReplica, &gone), "m:1");
        assert!(read(&mut cursor, ReadPolicy::Replica, &gone).starts_with("Error"));
        // A master let go is no master: writes are held.
        let write = route(
            &t,
            Endpoint::Main,
            ReadPolicy::Master,
            true,
            ReadNeed::Any,
            &mut cursor,
            |s| (s.addr() != "m:1").then_some(s),
        );
        assert!(matches!(write, Route::Hold), "{write:?}");
    }
}
