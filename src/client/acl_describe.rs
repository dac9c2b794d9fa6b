//! Users as a Redis server describes them (`ACL LIST`, `ACL GETUSER`), read into the rules the
//! proxy enforces.

use std::collections::HashMap;

use super::acl::Rules;
use super::acl_rules::{CommandRules, KeyRules};
use crate::resp::Value;

/// The value of `key` in a user's description, shaped as `ACL GETUSER`'s reply (a flat array).
pub(super) fn field<'v>(getuser: &'v Value, key: &str) -> Option<&'v Value> {
    let items = getuser.as_array()?;
    items
        .chunks(2)
        .find(|kv| kv.first().and_then(Value::as_str) == Some(key))
        .and_then(|kv| kv.get(1))
}

/// A field as words: Redis 7 writes `keys`, `channels` and `commands` as one string, Redis 6
/// `keys` and `channels` as arrays.
pub(super) fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(str::split_whitespace)
            .map(str::to_string)
            .collect(),
        other => other
            .as_str()
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// `ACL LIST`'s lines (`user app on #<sha256> ~app:* resetchannels &news:* -@all +get (~x +set)`)
/// as `ACL GETUSER` would describe each user, by name.
pub(super) fn acl_list_users(list: &Value) -> HashMap<String, Value> {
    let mut users = HashMap::new();
    for line in list.as_array().unwrap_or_default() {
        let Some(line) = line.as_str() else { continue };
        let mut tokens = line.split_whitespace();
        let (Some("user"), Some(name)) = (tokens.next(), tokens.next()) else {
            continue;
        };
        let mut fields: [Vec<&str>; 5] = Default::default();
        let [flags, passwords, commands, keys, channels] = &mut fields;
        // A selector `(~x +set)` spans tokens: each is kept whole, as its text.
        let mut selectors: Vec<String> = Vec::new();
        let mut selector: Option<Vec<&str>> = None;
        for t in tokens {
            if let Some(open) = selector.as_mut() {
                open.push(t);
                if t.ends_with(')') {
                    selectors.push(open.join(" "));
                    selector = None;
                }
                continue;
            }
            match t.as_bytes().first() {
                Some(b'(') if !t.ends_with(')') => selector = Some(vec![t]),
                Some(b'(') => selectors.push(t.to_string()),
                Some(b'#') => passwords.push(t.get(1..).unwrap_or_default()),
                Some(b'~' | b'%') => keys.push(t),
                Some(b'&') => channels.push(t),
                Some(b'+' | b'-') => commands.push(t),
                _ if t == "resetchannels" || t == "resetkeys" => {}
                _ if t == "allcommands" || t == "nocommands" => commands.push(t),
                _ => flags.push(t),
            }
        }
        if let Some(open) = selector {
            selectors.push(open.join(" "));
        }
        let bulk = |s: &str| Value::Bulk(bytes::Bytes::copy_from_slice(s.as_bytes()));
        let array = |items: &[&str]| Value::Array(items.iter().map(|s| bulk(s)).collect());
        let v = Value::Array(vec![
            bulk("flags"),
            array(flags),
            bulk("passwords"),
            array(passwords),
            bulk("commands"),
            bulk(&commands.join(" ")),
            bulk("keys"),
            bulk(&keys.join(" ")),
            bulk("channels"),
            bulk(&channels.join(" ")),
            bulk("selectors"),
            Value::Array(selectors.iter().map(|s| bulk(s)).collect()),
        ]);
        users.insert(name.to_string(), v);
    }
    users
}

/// The rules `ACL GETUSER` describes, or rules refusing everything, naming the first rule the
/// proxy cannot enforce (read- or write-only key patterns `%R~`/`%W~`, selectors).
pub fn rules_from_getuser(name: &str, getuser: &Value) -> Rules {
    let cannot = |rule: &str, what: &str| {
        Rules::refused(format!(
            "haproxy-rs cannot enforce the rule '{rule}' of user '{name}' ({what}); its commands are refused"
        ))
    };
    let flags = field(getuser, "flags").map(words).unwrap_or_default();
    let commands = field(getuser, "commands").map(words).unwrap_or_default();
    let mut keys = field(getuser, "keys").map(words).unwrap_or_default();
    let mut channels = field(getuser, "channels").map(words).unwrap_or_default();
    // Redis 6 says "allkeys"/"allchannels"/"allcommands" in the flags.
    for f in &flags {
        match f.as_str() {
            "allkeys" => keys.push("~*".into()),
            "allchannels" => channels.push("&*".into()),
            _ => {}
        }
    }
    let selectors = field(getuser, "selectors").and_then(Value::as_array);
    if let Some(first) = selectors.and_then(<[Value]>::first) {
        let shown = match first {
            Value::Array(_) => {
                let mut parts = Vec::new();
                for k in ["commands", "keys", "channels"] {
                    parts.extend(field(first, k).map(words).unwrap_or_default());
                }
                format!("({})", parts.join(" "))
            }
            other => other.as_str().unwrap_or("(...)").to_string(),
        };
        return cannot(&shown, "selectors");
    }
    let mut key_patterns = Vec::with_capacity(keys.len());
    for k in &keys {
        match k.strip_prefix('%') {
            Some(rest) => match rest.split_once('~') {
                Some((perm, pat)) if perm.eq_ignore_ascii_case("RW") => {
                    key_patterns.push(format!("~{pat}"));
                }
                _ => return cannot(k, "read-only or write-only key patterns"),
            },
            None => key_patterns.push(k.clone()),
        }
    }
    let commands = match CommandRules::parse_server(&commands) {
        Ok(c) => c,
        Err(e) => return cannot(&commands.join(" "), &e),
    };
    let keys = match KeyRules::parse(&key_patterns) {
        Ok(k) => k,
        Err(e) => return cannot(&keys.join(" "), &e),
    };
    let channels = match KeyRules::parse_channels(&channels) {
        Ok(c) => c,
        Err(e) => return cannot(&channels.join(" "), &e),
    };
    Rules::new(commands, keys, channels)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn getuser(commands: &str, keys: &str, channels: &str, selectors: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![]),
            bulk("commands"),
            bulk(commands),
            bulk("keys"),
            bulk(keys),
            bulk("channels"),
            bulk(channels),
            bulk("selectors"),
            Value::Array(selectors),
        ])
    }

    #[test]
    fn redis_7_descriptions_become_rules() {
        let everything = rules_from_getuser("default", &getuser("+@all", "~*", "&*", vec![]));
        assert_eq!(everything, Rules::everything());
        let app = rules_from_getuser(
            "app",
            &getuser(
                "-@all +@string +@keyspace -keys +config|get",
                "~app:* %RW~both:*",
                "&news:*",
                vec![],
            ),
        );
        assert_eq!(
            app,
            Rules::new(
                CommandRules::parse_server(&[
                    "-@all",
                    "+@string",
                    "+@keyspace",
                    "-keys",
                    "+config|get"
                ])
                .unwrap(),
                KeyRules::parse(&["~app:*", "~both:*"]).unwrap(),
                KeyRules::parse_channels(&["&news:*"]).unwrap(),
            )
        );
        let none = rules_from_getuser("n", &getuser("-@all", "", "", vec![]));
        assert_eq!(
            none,
            Rules::new(
                CommandRules::parse_server(&["-@all"]).unwrap(),
                KeyRules::Patterns(vec![]),
                KeyRules::Patterns(vec![]),
            )
        );
    }

    #[test]
    fn rules_the_proxy_cannot_enforce_refuse_everything_and_say_which() {
        let read_only_keys =
            rules_from_getuser("app", &getuser("+@all", "~a:* %R~ro:*", "", vec![]));
        assert_eq!(
            read_only_keys,
            Rules::refused("haproxy-rs cannot enforce the rule '%R~ro:*' of user 'app' (read-only or write-only key patterns); its commands are refused".into())
        );
        let selector = Value::Array(vec![
            bulk("commands"),
            bulk("-@all +get"),
            bulk("keys"),
            bulk("~foo*"),
            bulk("channels"),
            bulk(""),
        ]);
        let sel = rules_from_getuser("sel", &getuser("-@all", "~*", "", vec![selector]));
        let text = format!("{sel:?}");
        assert!(
            text.contains("'(-@all +get ~foo*)'") && text.contains("selectors"),
            "{text}"
        );
    }

    #[test]
    fn acl_list_lines_read_as_getuser_describes_them() {
        let list = Value::Array(vec![
            bulk("user app on #05547dd1 ~key:* ~bench:* resetchannels &news:* -@all +@string -keys +config|get"),
            bulk("user default on nopass ~* &* +@all"),
            bulk("user sel off #2d71 ~* resetchannels -@all (~foo* resetchannels &ch -@all +get) (~bar* +set)"),
        ]);
        let users = acl_list_users(&list);
        assert_eq!(
            rules_from_getuser("app", &users["app"]),
            rules_from_getuser(
                "app",
                &getuser(
                    "-@all +@string -keys +config|get",
                    "~key:* ~bench:*",
                    "&news:*",
                    vec![]
                )
            )
        );
        assert_eq!(
            rules_from_getuser("default", &users["default"]),
            Rules::everything()
        );
        assert_eq!(
            words(field(&users["default"], "flags").unwrap()),
            ["on", "nopass"]
        );
        assert_eq!(
            words(field(&users["app"], "passwords").unwrap()),
            ["05547dd1"]
        );
        let sel = format!("{:?}", rules_from_getuser("sel", &users["sel"]));
        assert!(
            sel.contains("'(~foo* resetchannels &ch -@all +get)'"),
            "{sel}"
        );
        assert_eq!(words(field(&users["sel"], "flags").unwrap()), ["off"]);
    }

    #[test]
    fn redis_6_flags_and_arrays_are_understood() {
        let v = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on"), bulk("allkeys"), bulk("allchannels")]),
            bulk("passwords"),
            Value::Array(vec![]),
            bulk("commands"),
            bulk("+@all"),
            bulk("keys"),
            Value::Array(vec![]),
            bulk("channels"),
            Value::Array(vec![]),
        ]);
        assert_eq!(rules_from_getuser("u", &v), Rules::everything());
    }
}
