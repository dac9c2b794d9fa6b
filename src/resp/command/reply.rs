//! Reading a live `COMMAND` reply (Redis 6 and 7 formats) into a [`CommandTable`].

use super::flags::{acl_category_bit, category_bits};
use super::{CommandFlags, CommandInfo, CommandTable};
use crate::resp::value::Value;

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

impl CommandTable {
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
        stats_slot: super::COMMAND_STATS_OTHER,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use bytes::Bytes;

    use super::*;
    use crate::resp::command::tests::{keys, req};

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
