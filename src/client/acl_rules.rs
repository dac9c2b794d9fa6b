//! The ACL subset the proxy enforces itself: command rules (`+@all`, `-@dangerous`, `+get`,
//! `-config|set`) and key patterns (`~app:*`), matched as Redis 7.0 matches them.
//!
//! Backend connections are shared by every client, so a user's rights cannot be left to Redis:
//! the proxy checks each command and its keys before sending it.

use crate::resp::{acl_category_bit, CommandFlags, CommandInfo};

/// The ACL categories the proxy knows. Redis 7.0 derives most from command flags; `@dangerous`
/// and `@admin` add a few commands by name (checked against `ACL CAT` of Redis 7.0.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Every command, unknown ones included.
    All,
    /// `readonly` flag (except the `_RO` script commands, which are `@scripting`).
    Read,
    /// `write` flag.
    Write,
    /// `admin` flag, plus `LASTSAVE` and `ROLE`.
    Admin,
    /// `@admin` plus commands that may be slow or destructive (`FLUSHALL`, `KEYS`, `SORT`...).
    Dangerous,
    /// `fast` flag.
    Fast,
    /// Not `fast`.
    Slow,
    /// `blocking` flag.
    Blocking,
    /// `pubsub` flag.
    Pubsub,
    /// Another of Redis's categories (`@string`, `@geo`, `@keyspace`...; its bit in
    /// [`CommandInfo::acl_categories`]): known only from the server's `COMMAND` table.
    Server(u32),
}

/// `@dangerous` commands without the `admin` flag (Redis 7.0.15 `ACL CAT dangerous`).
const DANGEROUS_NOT_ADMIN: &[&str] = &[
    "flushall",
    "flushdb",
    "info",
    "keys",
    "lastsave",
    "migrate",
    "restore",
    "restore-asking",
    "role",
    "sort",
    "sort_ro",
    "swapdb",
];

/// Category names accepted in rules, for error messages.
pub const CATEGORY_NAMES: &str =
    "@all, @read, @write, @admin, @dangerous, @fast, @slow, @blocking, @pubsub";

impl Category {
    fn from_name(name: &str) -> Option<Category> {
        Some(match name.to_ascii_lowercase().as_str() {
            "all" => Category::All,
            "read" => Category::Read,
            "write" => Category::Write,
            "admin" => Category::Admin,
            "dangerous" => Category::Dangerous,
            "fast" => Category::Fast,
            "slow" => Category::Slow,
            "blocking" => Category::Blocking,
            "pubsub" => Category::Pubsub,
            _ => return None,
        })
    }

    /// Any of Redis 7.0's categories, as the server names them in `ACL GETUSER`.
    fn from_server_name(name: &str) -> Option<Category> {
        Category::from_name(name)
            .or_else(|| acl_category_bit(name.as_bytes()).map(Category::Server))
    }

    /// Whether the command is in this category (`None`: a command the table does not know).
    /// The table's categories decide (Redis's own, from `COMMAND` or the built-in 7.0 table);
    /// without them (a server before Redis 6) the first nine are derived from flags.
    fn contains(self, info: Option<&CommandInfo>) -> bool {
        let Some(info) = info else {
            return self == Category::All;
        };
        if let (Some(bits), Some(bit)) = (info.acl_categories, self.bit()) {
            return bits & bit != 0;
        }
        let f = info.flags;
        let name = info.name.as_str();
        match self {
            Category::All => true,
            Category::Read => {
                f.contains(CommandFlags::READONLY)
                    && !matches!(name, "eval_ro" | "evalsha_ro" | "fcall_ro")
            }
            Category::Write => f.contains(CommandFlags::WRITE),
            Category::Admin => {
                f.contains(CommandFlags::ADMIN) || matches!(name, "lastsave" | "role")
            }
            Category::Dangerous => {
                f.contains(CommandFlags::ADMIN) || DANGEROUS_NOT_ADMIN.contains(&name)
            }
            Category::Fast => f.contains(CommandFlags::FAST),
            Category::Slow => !f.contains(CommandFlags::FAST),
            Category::Blocking => f.contains(CommandFlags::BLOCKING),
            Category::Pubsub => f.contains(CommandFlags::PUBSUB),
            Category::Server(_) => false,
        }
    }

    /// The category's bit in [`CommandInfo::acl_categories`] (`None` for `@all`).
    fn bit(self) -> Option<u32> {
        let name: &[u8] = match self {
            Category::All => return None,
            Category::Server(bit) => return Some(bit),
            Category::Read => b"read",
            Category::Write => b"write",
            Category::Admin => b"admin",
            Category::Dangerous => b"dangerous",
            Category::Fast => b"fast",
            Category::Slow => b"slow",
            Category::Blocking => b"blocking",
            Category::Pubsub => b"pubsub",
        };
        acl_category_bit(name)
    }
}

/// What one rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Category(Category),
    /// A command (`"config"`: every subcommand too) or one subcommand (`"config|get"`).
    Command(String),
}

/// One `+...` / `-...` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    target: Target,
}

/// A user's command rules, applied in order from "nothing allowed": the last rule that names a
/// command decides (the same result as Redis setting and clearing its command bits in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRules {
    rules: Vec<Rule>,
}

impl CommandRules {
    /// Parses rules such as `+@all`, `-@dangerous`, `+get`, `-config|set`, `allcommands`.
    ///
    /// # Errors
    /// A message naming the rule that is not understood.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<CommandRules, String> {
        Self::parse_with(rules, Category::from_name)
    }

    /// Parses the rules a server describes (`ACL GETUSER`), where every Redis 7.0 category may
    /// appear.
    ///
    /// # Errors
    /// A message naming the rule that is not understood.
    pub fn parse_server<S: AsRef<str>>(rules: &[S]) -> Result<CommandRules, String> {
        Self::parse_with(rules, Category::from_server_name)
    }

    /// Whether a rule names a category only the server's `COMMAND` table knows the members of.
    pub fn needs_server_categories(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.target, Target::Category(Category::Server(_))))
    }

    fn parse_with<S: AsRef<str>>(
        rules: &[S],
        category: fn(&str) -> Option<Category>,
    ) -> Result<CommandRules, String> {
        let mut out = Vec::with_capacity(rules.len());
        for raw in rules {
            let raw = raw.as_ref();
            let (allow, rest) = match raw.to_ascii_lowercase().as_str() {
                "allcommands" => (true, "@all".to_string()),
                "nocommands" => (false, "@all".to_string()),
                r => match (r.strip_prefix('+'), r.strip_prefix('-')) {
                    (Some(x), _) => (true, x.to_string()),
                    (_, Some(x)) => (false, x.to_string()),
                    _ => {
                        return Err(format!(
                            "rule {raw:?} must start with + or - (or be allcommands/nocommands)"
                        ))
                    }
                },
            };
            let target = match rest.strip_prefix('@') {
                Some(cat) => Target::Category(category(cat).ok_or_else(|| {
                    format!("unknown category in {raw:?}; known: {CATEGORY_NAMES}")
                })?),
                None if valid_command_name(&rest) => Target::Command(rest),
                None => return Err(format!("{raw:?} does not name a command")),
            };
            out.push(Rule { allow, target });
        }
        Ok(CommandRules { rules: out })
    }

    /// Whether every command is allowed (the rules end as `+@all` did).
    pub fn allows_everything(&self) -> bool {
        match self
            .rules
            .iter()
            .rposition(|r| r.target == Target::Category(Category::All))
        {
            Some(i) => {
                self.rules.get(i).is_some_and(|r| r.allow)
                    && self.rules.iter().skip(i + 1).all(|r| r.allow)
            }
            None => false,
        }
    }

    /// Whether the command `name` (lower case, `"config|get"` for a subcommand; `info` from the
    /// command table, `None` when unknown) is allowed.
    pub fn allows(&self, name: &str, info: Option<&CommandInfo>) -> bool {
        let parent = name.split_once('|').map_or(name, |(p, _)| p);
        self.rules
            .iter()
            .rev()
            .find(|r| match &r.target {
                Target::Category(c) => c.contains(info),
                Target::Command(c) => c == name || c == parent,
            })
            .is_some_and(|r| r.allow)
    }
}

/// A command name or `name|subcommand`, as written in rules and in `[commands]` lists.
pub fn valid_command_name(s: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
    };
    match s.split_once('|') {
        Some((p, sub)) => ok_part(p) && ok_part(sub),
        None => ok_part(s),
    }
}

/// Key (or channel) patterns: every key of a command must match one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRules {
    /// `~*` or `allkeys`.
    All,
    /// Glob patterns (Redis `stringmatchlen`: `*`, `?`, `[a-z]`, `[^x]`, `\` escapes).
    Patterns(Vec<Vec<u8>>),
}

impl KeyRules {
    /// Parses `~pattern` entries (and `allkeys`).
    ///
    /// # Errors
    /// A message naming the entry that does not start with `~`.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<KeyRules, String> {
        Self::parse_with(keys, '~', "allkeys", "key")
    }

    /// Parses `&pattern` channel entries (and `allchannels`).
    ///
    /// # Errors
    /// A message naming the entry that does not start with `&`.
    pub fn parse_channels<S: AsRef<str>>(channels: &[S]) -> Result<KeyRules, String> {
        Self::parse_with(channels, '&', "allchannels", "channel")
    }

    fn parse_with<S: AsRef<str>>(
        items: &[S],
        prefix: char,
        all: &str,
        what: &str,
    ) -> Result<KeyRules, String> {
        let mut patterns = Vec::with_capacity(items.len());
        for raw in items {
            let raw = raw.as_ref();
            let pattern = if raw.eq_ignore_ascii_case(all) {
                "*"
            } else {
                raw.strip_prefix(prefix).ok_or_else(|| {
                    format!("{what} pattern {raw:?} must start with {prefix} (or be {all})")
                })?
            };
            if pattern == "*" {
                return Ok(KeyRules::All);
            }
            patterns.push(pattern.as_bytes().to_vec());
        }
        Ok(KeyRules::Patterns(patterns))
    }

    /// Whether `key` may be used.
    pub fn allows(&self, key: &[u8]) -> bool {
        match self {
            KeyRules::All => true,
            KeyRules::Patterns(ps) => ps.iter().any(|p| glob_match(p, key)),
        }
    }

    /// Whether the pattern itself is listed (`PSUBSCRIBE`: Redis compares patterns literally).
    pub fn allows_literal(&self, pattern: &[u8]) -> bool {
        match self {
            KeyRules::All => true,
            KeyRules::Patterns(ps) => ps.iter().any(|p| p.as_slice() == pattern),
        }
    }
}

/// Redis's glob matching (`stringmatchlen`, case-sensitive): `*`, `?`, `[...]` with ranges and
/// `^` negation, `\` escaping the next character. Linear backtracking on the last `*` only, so
/// no pattern makes it exponential.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let c = s.get(i).copied().unwrap_or(0);
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class_match(pattern, p, c),
            Some(b'\\') if p + 1 < pattern.len() => (pattern.get(p + 1) == Some(&c)).then_some(2),
            Some(&pc) => (pc == c).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(n), _) => {
                p += n;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&b| b == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == b'['`; the class's length on a match.
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(j) {
            // An unterminated class ends at the pattern's end, as in Redis.
            None => break,
            Some(b']') => {
                j += 1;
                break;
            }
            Some(b'\\') if j + 1 < pattern.len() => {
                matched |= pattern.get(j + 1) == Some(&c);
                j += 2;
            }
            Some(&lo) if pattern.get(j + 1) == Some(&b'-') && j + 2 < pattern.len() => {
                let hi = pattern.get(j + 2).copied().unwrap_or(lo);
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                matched |= (lo..=hi).contains(&c);
                j += 3;
            }
            Some(&x) => {
                matched |= x == c;
                j += 1;
            }
        }
    }
    (matched != negate).then_some(j - p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::CommandTable;

    fn allows(rules: &[&str], name: &str) -> bool {
        let t = CommandTable::builtin();
        CommandRules::parse(rules)
            .unwrap()
            .allows(name, t.get(name))
    }

    #[test]
    fn rules_apply_in_order_from_nothing_allowed() {
        assert!(!allows(&[], "get"));
        assert!(allows(&["+@all"], "get"));
        assert!(allows(&["allcommands"], "nosuchmodulecmd"));
        assert!(!allows(&["+@all", "-@dangerous"], "flushall"));
        assert!(!allows(&["+@all", "-@dangerous"], "keys"));
        assert!(!allows(&["+@all", "-@dangerous"], "config|set"));
        assert!(allows(&["+@all", "-@dangerous"], "get"));
        assert!(allows(
            &["+@all", "-@dangerous", "+config|get"],
            "config|get"
        ));
        assert!(!allows(
            &["+@all", "-@dangerous", "+config|get"],
            "config|set"
        ));
        assert!(allows(&["-config|get", "+config"], "config|get"));
        assert!(!allows(&["+@all", "-flushall"], "flushall"));
        assert!(allows(&["+@read"], "get"));
        assert!(!allows(&["+@read"], "set"));
        assert!(!allows(&["+@read"], "eval_ro"));
        assert!(allows(&["+@write"], "set"));
        assert!(allows(&["+@read", "+set"], "set"));
        assert!(!allows(&["+@read"], "nosuchmodulecmd"));
        assert!(allows(&["+@admin"], "role"));
        assert!(allows(&["+@fast"], "get") && !allows(&["+@slow"], "get"));
        assert!(allows(&["+@blocking"], "blpop"));
        assert!(allows(&["+@pubsub"], "publish"));
        assert!(!allows(&["+@all", "nocommands"], "get"));
    }

    #[test]
    fn allows_everything_only_when_nothing_is_taken_away() {
        let p = |r: &[&str]| CommandRules::parse(r).unwrap().allows_everything();
        assert!(p(&["+@all"]));
        assert!(p(&["-get", "+@all"]));
        assert!(p(&["+@all", "+get"]));
        assert!(!p(&["+@all", "-get"]));
        assert!(!p(&["+@read"]));
        assert!(!p(&[]));
    }

    #[test]
    fn bad_rules_are_named() {
        let e = CommandRules::parse(&["get"]).unwrap_err();
        assert!(e.contains("\"get\""), "{e}");
        let e = CommandRules::parse(&["+@nosuch"]).unwrap_err();
        assert!(e.contains("@dangerous"), "{e}");
        assert!(CommandRules::parse(&["+get set"]).is_err());
        assert!(CommandRules::parse(&["+"]).is_err());
        assert!(CommandRules::parse(&["+a|b|c"]).is_err());
        assert!(KeyRules::parse(&["app:*"]).is_err());
    }

    #[test]
    fn key_patterns() {
        let k = KeyRules::parse(&["~app:*", "~tmp?"]).unwrap();
        assert!(k.allows(b"app:1") && k.allows(b"app:") && k.allows(b"tmp1"));
        assert!(!k.allows(b"other") && !k.allows(b"tmp12") && !k.allows(b"APP:1"));
        assert_eq!(KeyRules::parse(&["~a", "~*"]).unwrap(), KeyRules::All);
        assert_eq!(KeyRules::parse(&["allkeys"]).unwrap(), KeyRules::All);
        assert!(!KeyRules::parse::<&str>(&[]).unwrap().allows(b"a"));
        let c = KeyRules::parse_channels(&["&news:*"]).unwrap();
        assert!(c.allows(b"news:1") && !c.allows(b"other"));
        assert!(c.allows_literal(b"news:*") && !c.allows_literal(b"news:1*"));
        assert_eq!(
            KeyRules::parse_channels(&["allchannels"]).unwrap(),
            KeyRules::All
        );
        assert!(KeyRules::parse_channels(&["~news"]).is_err());
    }

    #[test]
    fn glob_matches_like_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*", "") && m("*", "abc") && m("a*c", "abbbc") && m("a*c", "ac"));
        assert!(!m("a*c", "abcd") && m("a*c*", "abcd"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo") && !m("h[a-c]llo", "hdllo"));
        assert!(m("h[c-a]llo", "hbllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*a*a*a*a*a*a*b", &"a".repeat(40).replace("aaaa", "aaab")));
        assert!(!m("*a*a*a*a*a*a*a*a*b", &"a".repeat(10_000)));
        assert!(m("[abc", "a"));
    }
}
