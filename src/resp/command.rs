//! The command table routing uses: arity, flags and key positions per command and subcommand.

use std::collections::HashMap;
use std::ops::BitOr;

use super::command_table::BUILTIN;
use super::request::Request;
use super::value::Value;

/// Command flags as reported by `COMMAND` (a bit set).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug, Hash)]
pub struct CommandFlags(u32);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl CommandFlags {
            $($(#[$doc])* pub const $name: CommandFlags = CommandFlags(1 << $bit);)*

            /// The flag named `name` in `COMMAND` output (`"write"`, `"movablekeys"`...); empty if unknown.
            pub fn from_name(name: &[u8]) -> CommandFlags {
                $(if name.eq_ignore_ascii_case($text.as_bytes()) {
                    return Self::$name;
                })*
                CommandFlags(0)
            }
        }
    };
}

flags! {
    /// May modify data.
    WRITE = 0, "write";
    /// Only reads data.
    READONLY = 1, "readonly";
    /// May use more memory (refused when over maxmemory).
    DENYOOM = 2, "denyoom";
    /// Administrative command.
    ADMIN = 3, "admin";
    /// Pub/Sub command.
    PUBSUB = 4, "pubsub";
    /// Not allowed in scripts.
    NOSCRIPT = 5, "noscript";
    /// Allowed while the server is loading its dataset.
    LOADING = 6, "loading";
    /// Allowed on a replica with stale data.
    STALE = 7, "stale";
    /// O(1) or O(log N) command.
    FAST = 8, "fast";
    /// May replicate even when not a write (e.g. `PUBLISH`).
    MAY_REPLICATE = 9, "may_replicate";
    /// Not allowed inside `MULTI`.
    NO_MULTI = 10, "no_multi";
    /// Key positions depend on the arguments (first/last/step are not enough).
    MOVABLE_KEYS = 11, "movablekeys";
    /// May block the client (Redis 7 flag; from the `@blocking` ACL category on Redis 6).
    BLOCKING = 12, "blocking";
    /// Allowed before authentication.
    NO_AUTH = 13, "no_auth";
    /// May run while a script is busy.
    ALLOW_BUSY = 14, "allow_busy";
    /// Does not require keys even though it may take some.
    NO_MANDATORY_KEYS = 15, "no_mandatory_keys";
    /// Refused during async loading.
    NO_ASYNC_LOADING = 16, "no_async_loading";
    /// Not shown in MONITOR.
    SKIP_MONITOR = 17, "skip_monitor";
    /// Not logged in the slowlog.
    SKIP_SLOWLOG = 18, "skip_slowlog";
    /// Allowed on an importing slot after `ASKING` (cluster).
    ASKING = 19, "asking";
    /// Output is random (Redis 6 flag).
    RANDOM = 20, "random";
    /// Output sorted in scripts (Redis 6 flag).
    SORT_FOR_SCRIPT = 21, "sort_for_script";
}

impl CommandFlags {
    /// Whether every flag in `other` is set.
    pub fn contains(self, other: CommandFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for CommandFlags {
    type Output = CommandFlags;
    fn bitor(self, rhs: CommandFlags) -> CommandFlags {
        CommandFlags(self.0 | rhs.0)
    }
}

/// One command (or subcommand) as described by `COMMAND`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lower-case name; `"container|sub"` for subcommands (`"config|get"`).
    pub name: String,
    /// Redis arity: exact argc if positive, minimum argc if negative (the name counts).
    pub arity: i32,
    /// Flags.
    pub flags: CommandFlags,
    /// Index of the first key argument, 0 if none.
    pub first_key: i32,
    /// Index of the last key argument; negative counts from the end (-1 = last argument).
    pub last_key: i32,
    /// Distance between key arguments.
    pub step: i32,
    /// The ACL categories (bit `i` is [`ACL_CATEGORIES`]`[i]`), from the server's `COMMAND`
    /// or the built-in table; `None` from a server that does not report them (before Redis 6).
    pub acl_categories: Option<u32>,
}

/// Redis 7.0's ACL categories (`ACL CAT`), in the bit order of [`CommandInfo::acl_categories`].
pub const ACL_CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// The bits of these categories (`@write` or `write`); unknown names are left out.
fn category_bits<'a>(names: impl Iterator<Item = &'a [u8]>) -> u32 {
    names
        .filter_map(|c| acl_category_bit(c.strip_prefix(b"@").unwrap_or(c)))
        .fold(0, |acc, bit| acc | bit)
}

/// The bit of ACL category `name` (without `@`, any case), if Redis 7.0 has it.
pub fn acl_category_bit(name: &[u8]) -> Option<u32> {
    ACL_CATEGORIES
        .iter()
        .position(|c| c.as_bytes().eq_ignore_ascii_case(name))
        .map(|i| 1 << i)
}

/// A malformed `COMMAND` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTableError {
    /// The reply (or an entry's subcommand list) was not an array.
    #[error("COMMAND reply is not an array")]
    NotAnArray,
    /// Entry `index` of the reply is malformed.
    #[error("COMMAND entry {index}: {reason}")]
    BadEntry {
        /// Position of the entry in the reply.
        index: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Command name -> [`CommandInfo`], including subcommands.
#[derive(Clone, Debug)]
pub struct CommandTable {
    entries: Vec<CommandInfo>,
    index: HashMap<Box<[u8]>, usize>,
    /// Whether `entries[i]` is a container with subcommands (`CONFIG`, `CLIENT`...).
    has_subcommands: Vec<bool>,
}

/// Longest `name|subcommand` looked up; longer names cannot be Redis commands.
const MAX_NAME: usize = 64;

impl CommandTable {
    /// Redis 7.0's `COMMAND` output with subcommands, generated by `scripts/gen-command-table.sh`.
    pub fn builtin() -> Self {
        Self::from_infos(BUILTIN.iter().map(
            |&(name, arity, flags, first_key, last_key, step, categories)| CommandInfo {
                name: name.to_owned(),
                arity,
                flags: flags.iter().fold(CommandFlags::default(), |acc, f| {
                    acc | CommandFlags::from_name(f.as_bytes())
                }),
                first_key,
                last_key,
                step,
                acl_categories: Some(category_bits(categories.iter().map(|c| c.as_bytes()))),
            },
        ))
    }

    /// Builds a table from a live `COMMAND` reply (Redis 6 and 7 formats; RESP2 or RESP3).
    ///
    /// # Errors
    /// [`CommandTableError`] if the reply or one of its entries does not have the documented shape.
    pub fn from_command_reply(v: &Value) -> Result<Self, CommandTableError> {
        let list = v.as_array().ok_or(CommandTableError::NotAnArray)?;
        let mut infos = Vec::with_capacity(list.len().min(1024));
        for (index, entry) in list.iter().enumerate() {
            let fields = entry.as_array().ok_or(CommandTableError::BadEntry {
                index,
                reason: "not an array",
            })?;
            infos.push(
                parse_entry(fields)
                    .map_err(|reason| CommandTableError::BadEntry { index, reason })?,
            );
            // Redis 7: subcommands at index 9, in the same format.
            if let Some(subs) = fields.get(9) {
                let subs = subs.as_array().ok_or(CommandTableError::NotAnArray)?;
                for sub in subs {
                    let sub = sub.as_array().ok_or(CommandTableError::BadEntry {
                        index,
                        reason: "subcommand not an array",
                    })?;
                    infos.push(
                        parse_entry(sub)
                            .map_err(|reason| CommandTableError::BadEntry { index, reason })?,
                    );
                }
            }
        }
        Ok(Self::from_infos(infos))
    }

    fn from_infos(infos: impl IntoIterator<Item = CommandInfo>) -> Self {
        let entries: Vec<CommandInfo> = infos.into_iter().collect();
        let index: HashMap<Box<[u8]>, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, info)| (info.name.as_bytes().into(), i))
            .collect();
        let mut has_subcommands = vec![false; entries.len()];
        for info in &entries {
            if let Some((parent, _)) = info.name.split_once('|') {
                if let Some(slot) = index
                    .get(parent.as_bytes())
                    .and_then(|&i| has_subcommands.get_mut(i))
                {
                    *slot = true;
                }
            }
        }
        Self {
            entries,
            index,
            has_subcommands,
        }
    }

    /// The entry for `req`, case-insensitively; for a container command (`CONFIG`, `CLIENT`, `XINFO`...)
    /// the subcommand's entry (`"client|setname"`) when there is one, else the container's.
    ///
    /// Allocation-free: names are lower-cased into a stack buffer.
    pub fn lookup(&self, req: &Request) -> Option<&CommandInfo> {
        let mut buf = [0u8; MAX_NAME];
        let name = req.name();
        let parent_len = lower_into(&mut buf, 0, name)?;
        let &i = self.index.get(buf.get(..parent_len)?)?;
        if self.has_subcommands.get(i) == Some(&true) {
            if let Some(sub) = req.arg(1) {
                let full = buf
                    .get_mut(parent_len)
                    .map(|b| *b = b'|')
                    .and_then(|()| lower_into(&mut buf, parent_len + 1, sub));
                if let Some(&j) = full.and_then(|end| self.index.get(buf.get(..end)?)) {
                    return self.entries.get(j);
                }
            }
        }
        self.entries.get(i)
    }

    /// The entry named `name` (lower-case, `"config|get"` for subcommands).
    pub fn get(&self, name: &str) -> Option<&CommandInfo> {
        self.index
            .get(name.as_bytes())
            .and_then(|&i| self.entries.get(i))
    }

    /// The key arguments of `req`, from first/last/step (negative last counts from the end), plus the
    /// argument-dependent keys of the common `movablekeys` commands (EVAL/FCALL, Z*STORE, *MPOP, XREAD, SORT).
    pub fn keys<'a>(&self, req: &'a Request) -> Vec<&'a [u8]> {
        let Some(info) = self.lookup(req) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let argc = req.argc() as i64;
        let first = i64::from(info.first_key);
        if first > 0 {
            let last = match i64::from(info.last_key) {
                l if l < 0 => argc + l,
                l => l,
            }
            .min(argc - 1);
            let step = usize::try_from(info.step).unwrap_or(1).max(1);
            let mut i = first;
            while i <= last {
                out.extend(usize::try_from(i).ok().and_then(|i| req.arg(i)));
                i += step as i64;
            }
        }
        if info.flags.contains(CommandFlags::MOVABLE_KEYS) {
            movable_keys(info.name.as_str(), req, &mut out);
        }
        out
    }

    /// Number of entries, subcommands included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = &CommandInfo> {
        self.entries.iter()
    }
}

/// Lower-cases `src` into `buf[at..]`, returning the end offset; `None` if it does not fit.
fn lower_into(buf: &mut [u8], at: usize, src: &[u8]) -> Option<usize> {
    let end = at.checked_add(src.len())?;
    let dst = buf.get_mut(at..end)?;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_ascii_lowercase();
    }
    Some(end)
}

/// Keys whose position depends on the arguments (Redis `getkeys_proc` for the common commands).
fn movable_keys<'a>(name: &str, req: &'a Request, out: &mut Vec<&'a [u8]>) {
    let numkeys_at = match name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => 2,
        "zunionstore" | "zinterstore" | "zdiffstore" | "blmpop" | "bzmpop" => 2,
        "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => 1,
        "xread" | "xreadgroup" => {
            let args: Vec<&[u8]> = req.args().collect();
            if let Some(pos) = args.iter().position(|a| a.eq_ignore_ascii_case(b"streams")) {
                let rest = args.get(pos + 1..).unwrap_or_default();
                out.extend(rest.iter().take(rest.len() / 2));
            }
            return;
        }
        "sort" | "sort_ro" => {
            let args: Vec<&[u8]> = req.args().collect();
            if let Some(pos) = args.iter().position(|a| a.eq_ignore_ascii_case(b"store")) {
                out.extend(args.get(pos + 1));
            }
            return;
        }
        _ => return,
    };
    let Some(n) = req
        .arg(numkeys_at)
        .and_then(super::string2ll)
        .and_then(|n| usize::try_from(n).ok())
    else {
        return;
    };
    out.extend((numkeys_at + 1..).take(n).map_while(|i| req.arg(i)));
}

fn parse_entry(fields: &[Value]) -> Result<CommandInfo, &'static str> {
    let name = fields
        .first()
        .and_then(Value::as_str)
        .ok_or("name is not a string")?
        .to_ascii_lowercase();
    let int = |i: usize, what: &'static str| -> Result<i32, &'static str> {
        fields
            .get(i)
            .and_then(Value::as_int)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or(what)
    };
    let mut flags = fields
        .get(2)
        .and_then(Value::as_array)
        .ok_or("flags are not an array")?
        .iter()
        .filter_map(Value::as_bytes)
        .fold(CommandFlags::default(), |acc, f| {
            acc | CommandFlags::from_name(f)
        });
    // Redis 6 has no "blocking" flag, only the @blocking ACL category (index 6).
    let acl_categories = fields
        .get(6)
        .and_then(Value::as_array)
        .map(|cats| category_bits(cats.iter().filter_map(Value::as_bytes)));
    let blocking = acl_categories
        .and_then(|bits| acl_category_bit(b"blocking").map(|b| bits & b != 0))
        .unwrap_or(false);
    if blocking {
        flags = flags | CommandFlags::BLOCKING;
    }
    Ok(CommandInfo {
        name,
        arity: int(1, "arity is not an integer")?,
        flags,
        first_key: int(3, "first key is not an integer")?,
        last_key: int(4, "last key is not an integer")?,
        step: int(5, "step is not an integer")?,
        acl_categories,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use bytes::Bytes;

    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    fn keys<'a>(t: &CommandTable, r: &'a Request) -> Vec<&'a str> {
        t.keys(r)
            .into_iter()
            .map(|k| std::str::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn builtin_has_the_acl_categories_of_redis_7() {
        let t = CommandTable::builtin();
        let cats = |name: &str| {
            let bits = t.get(name).unwrap().acl_categories.unwrap();
            ACL_CATEGORIES
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, c)| *c)
                .collect::<Vec<_>>()
        };
        assert_eq!(cats("get"), ["read", "string", "fast"]);
        assert_eq!(cats("config|get"), ["admin", "slow", "dangerous"]);
        assert_eq!(cats("geoadd"), ["write", "geo", "slow"]);
    }

    #[test]
    fn builtin_has_redis_7_commands_and_subcommands() {
        let t = CommandTable::builtin();
        assert!(t.len() > 300, "{}", t.len());
        let get = t.get("get").unwrap();
        assert!(get
            .flags
            .contains(CommandFlags::READONLY | CommandFlags::FAST));
        assert!(!get.flags.contains(CommandFlags::WRITE));
        assert!(t.get("set").unwrap().flags.contains(CommandFlags::WRITE));
        assert!(t
            .get("blpop")
            .unwrap()
            .flags
            .contains(CommandFlags::BLOCKING));
        assert!(t
            .get("subscribe")
            .unwrap()
            .flags
            .contains(CommandFlags::PUBSUB));
        assert_eq!(t.get("client|setname").unwrap().arity, 3);
    }

    #[test]
    fn lookup_is_case_insensitive_and_finds_subcommands() {
        let t = CommandTable::builtin();
        assert_eq!(t.lookup(&req(&["gEt", "k"])).unwrap().name, "get");
        assert_eq!(
            t.lookup(&req(&["CLIENT", "SetName", "x"])).unwrap().name,
            "client|setname"
        );
        assert_eq!(
            t.lookup(&req(&["config", "GET", "x"])).unwrap().name,
            "config|get"
        );
        assert_eq!(
            t.lookup(&req(&["CLIENT", "nosuch"])).unwrap().name,
            "client"
        );
        assert_eq!(t.lookup(&req(&["CLIENT"])).unwrap().name, "client");
        assert!(t.lookup(&req(&["nosuchcommand"])).is_none());
        assert!(t.lookup(&req(&[&"x".repeat(200)])).is_none());
        assert!(t.lookup(&Request::from_args::<&str>(&[])).is_none());
        let long_sub = "y".repeat(200);
        assert_eq!(
            t.lookup(&req(&["client", &long_sub])).unwrap().name,
            "client"
        );
    }

    #[test]
    fn keys_follow_first_last_step() {
        let t = CommandTable::builtin();
        assert_eq!(keys(&t, &req(&["GET", "a"])), ["a"]);
        assert_eq!(keys(&t, &req(&["MSET", "a", "1", "b", "2"])), ["a", "b"]);
        assert_eq!(keys(&t, &req(&["DEL", "a", "b", "c"])), ["a", "b", "c"]);
        assert_eq!(keys(&t, &req(&["BLPOP", "a", "b", "0"])), ["a", "b"]);
        assert_eq!(keys(&t, &req(&["XINFO", "STREAM", "s"])), ["s"]);
        assert!(keys(&t, &req(&["PING"])).is_empty());
        assert!(keys(&t, &req(&["MSET"])).is_empty());
    }

    #[test]
    fn keys_of_movable_key_commands() {
        let t = CommandTable::builtin();
        assert_eq!(
            keys(&t, &req(&["EVAL", "s", "2", "a", "b", "x"])),
            ["a", "b"]
        );
        assert_eq!(keys(&t, &req(&["EVAL", "s", "5", "a"])), ["a"]);
        assert_eq!(
            keys(&t, &req(&["ZUNIONSTORE", "d", "2", "a", "b"])),
            ["d", "a", "b"]
        );
        assert_eq!(
            keys(&t, &req(&["LMPOP", "2", "a", "b", "LEFT"])),
            ["a", "b"]
        );
        assert_eq!(
            keys(
                &t,
                &req(&["XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0"])
            ),
            ["s1", "s2"]
        );
        assert_eq!(keys(&t, &req(&["SORT", "l", "STORE", "d"])), ["l", "d"]);
    }

    fn s(x: &str) -> Value {
        Value::Status(Bytes::copy_from_slice(x.as_bytes()))
    }

    fn b(x: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(x.as_bytes()))
    }

    fn arr(v: Vec<Value>) -> Value {
        Value::Array(v)
    }

    #[test]
    fn parses_a_redis_7_command_reply() {
        let get = arr(vec![
            b("get"),
            Value::Int(2),
            arr(vec![s("readonly"), s("fast")]),
            Value::Int(1),
            Value::Int(1),
            Value::Int(1),
            arr(vec![s("@read")]),
            arr(vec![]),
            arr(vec![]),
            arr(vec![]),
        ]);
        let setname = arr(vec![
            b("client|setname"),
            Value::Int(3),
            arr(vec![s("noscript")]),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
        ]);
        let client = arr(vec![
            b("CLIENT"),
            Value::Int(-2),
            arr(vec![]),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            arr(vec![]),
            arr(vec![]),
            arr(vec![]),
            arr(vec![setname]),
        ]);
        let t = CommandTable::from_command_reply(&arr(vec![get, client])).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.get("get").unwrap().flags.contains(CommandFlags::READONLY));
        assert_eq!(
            t.lookup(&req(&["client", "SETNAME", "n"])).unwrap().arity,
            3
        );
        assert_eq!(t.lookup(&req(&["client", "list"])).unwrap().name, "client");
    }

    #[test]
    fn parses_a_redis_6_command_reply() {
        let blpop = arr(vec![
            b("blpop"),
            Value::Int(-3),
            arr(vec![s("write"), s("noscript")]),
            Value::Int(1),
            Value::Int(-2),
            Value::Int(1),
            arr(vec![s("@write"), s("@list"), s("@slow"), s("@blocking")]),
        ]);
        let t = CommandTable::from_command_reply(&arr(vec![blpop])).unwrap();
        let info = t.get("blpop").unwrap();
        assert!(info
            .flags
            .contains(CommandFlags::BLOCKING | CommandFlags::WRITE));
        assert_eq!(info.last_key, -2);
        assert_eq!(keys(&t, &req(&["BLPOP", "a", "b", "0"])), ["a", "b"]);
    }

    #[test]
    fn rejects_malformed_command_replies() {
        assert_eq!(
            CommandTable::from_command_reply(&Value::Nil).unwrap_err(),
            CommandTableError::NotAnArray
        );
        let bad = arr(vec![arr(vec![b("get"), b("two")])]);
        assert!(matches!(
            CommandTable::from_command_reply(&bad),
            Err(CommandTableError::BadEntry { index: 0, .. })
        ));
    }
}
