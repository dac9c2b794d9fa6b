//! Command flags (`COMMAND`'s flag names as a bit set) and Redis 7.0's ACL categories.

use std::ops::BitOr;

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

/// Redis 7.0's ACL categories (`ACL CAT`), in the bit order of
/// [`CommandInfo::acl_categories`](super::CommandInfo::acl_categories).
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
pub(super) fn category_bits<'a>(names: impl Iterator<Item = &'a [u8]>) -> u32 {
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
