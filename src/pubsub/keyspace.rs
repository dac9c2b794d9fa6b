//! Keyspace notifications: which subscriptions are to them. A Redis Cluster node publishes the
//! events of its own keys only (`__keyspace@<db>__:<key>`, `__keyevent@<db>__:<event>`), where
//! an ordinary `PUBLISH` reaches every node; so in cluster mode a subscription that can receive
//! events goes to every master, and a copy of an ordinary message that it brings from a second
//! master is dropped.

use super::{Elements, Kind};

/// The channel names keyspace notifications are published on start with one of these.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// Whether `name`, a channel, is one keyspace notifications are published on.
pub fn is_event_channel(name: &[u8]) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether a subscription of `kind` to `name` can receive keyspace notifications: an event
/// channel, or a pattern that can match one (`__key*`, `*`, `__keyevent@0__:*`...). Shard
/// channels never do (Redis publishes events as ordinary messages).
pub fn receives_events(kind: Kind, name: &[u8]) -> bool {
    match kind {
        Kind::Channel => is_event_channel(name),
        Kind::Pattern => PREFIXES.iter().any(|p| may_match_with_prefix(name, p)),
        Kind::Shard => false,
    }
}

/// Whether `frame` (a `pmessage`) came through a pattern placed on every master for an ordinary
/// channel, which every node delivers: a copy, when it comes from another link than the one
/// that delivers such messages.
pub fn broadcast_copy(frame: &[u8]) -> bool {
    let mut elems = Elements::new(frame);
    let (Some(Some(kind)), Some(Some(pattern)), Some(Some(channel))) =
        (elems.next(), elems.next(), elems.next())
    else {
        return false;
    };
    &kind[..] == b"pmessage"
        && receives_events(Kind::Pattern, &pattern)
        && !is_event_channel(&channel)
}

/// Whether glob `pattern` (Redis's: `*`, `?`, `[...]` with `^` and ranges, `\` escapes) can match
/// some string that starts with `prefix`. In doubt (a class left open), yes: a pattern placed on
/// every master for nothing costs links, one left on one master misses events.
fn may_match_with_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let mut p = 0;
    for &c in prefix {
        match pattern.get(p) {
            None => return false,
            Some(b'*') => return true,
            Some(b'?') => p += 1,
            Some(b'[') => match class(pattern, p + 1, c) {
                Some((true, next)) => p = next,
                Some((false, _)) => return false,
                None => return true,
            },
            Some(b'\\') if p + 1 < pattern.len() => {
                if pattern.get(p + 1) != Some(&c) {
                    return false;
                }
                p += 2;
            }
            Some(&lit) => {
                if lit != c {
                    return false;
                }
                p += 1;
            }
        }
    }
    true
}

/// The class opened just before `start`: whether it matches `c`, and where the pattern goes on
/// after its `]`; `None` when it is never closed.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    loop {
        match (pattern.get(i)?, pattern.get(i + 1), pattern.get(i + 2)) {
            (b'\\', Some(&e), _) => {
                matched |= e == c;
                i += 2;
            }
            (b']', _, _) => return Some((matched != negated, i + 1)),
            (&a, Some(b'-'), Some(&b)) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            (&a, _, _) => {
                matched |= a == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_can_match_an_event_channel() {
        for p in [
            "*",
            "__key*",
            "__keyevent@0__:*",
            "__keyspace@*__:user:*",
            "__key?????@*",
            "__key[se][pv]*",
            "[_]_keyspace@0__:k",
            "\\_\\_keyevent@*",
            "__keyspace@",
            "__key[^x]*",
            "__key[a-z]*",
            "__key[",
        ] {
            assert!(receives_events(Kind::Pattern, p.as_bytes()), "{p}");
        }
        for p in [
            "news.*",
            "__key",
            "__keys",
            "_[^_]*",
            "__key[xy]*",
            "__key[^se]*",
            "?",
            "",
        ] {
            assert!(!receives_events(Kind::Pattern, p.as_bytes()), "{p}");
        }
        assert!(receives_events(Kind::Channel, b"__keyspace@0__:k"));
        assert!(receives_events(Kind::Channel, b"__keyevent@3__:del"));
        assert!(!receives_events(Kind::Channel, b"__key*"));
        assert!(!receives_events(Kind::Shard, b"__keyspace@0__:k"));
    }

    #[test]
    fn copies_are_ordinary_messages_through_event_patterns() {
        let plain = b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$5\r\nplain\r\n$2\r\nhi\r\n";
        assert!(broadcast_copy(plain));
        let resp3 = b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$5\r\nplain\r\n$2\r\nhi\r\n";
        assert!(broadcast_copy(resp3));
        let event = b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n";
        assert!(!broadcast_copy(event), "each master emits its own events");
        let other = b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnx\r\n$2\r\nhi\r\n";
        assert!(!broadcast_copy(other), "a pattern on one master only");
        let message = b"*3\r\n$7\r\nmessage\r\n$5\r\nplain\r\n$2\r\nhi\r\n";
        assert!(!broadcast_copy(message));
    }
}
