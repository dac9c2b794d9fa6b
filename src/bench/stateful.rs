//! Workloads that keep state between commands or replies: transactions (MULTI/EXEC), streams (an XADD
//! producer; consumers in a group doing XREADGROUP, XACK and XAUTOCLAIM of idle messages) and pub/sub.
//!
//! Roles by connection number: in `stream` and `pubsub` runs even connections produce (XADD, PUBLISH) and
//! odd ones consume, so a run needs at least two connections.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::workload::{number_value, push_command, value_number};
use crate::resp::{parse_value, Value};

/// The stream of the `stream` workload.
pub const STREAM_KEY: &str = "bench:stream";
/// Its consumer group.
pub const STREAM_GROUP: &str = "bench";
/// Approximate length the producers trim the stream to.
const STREAM_MAXLEN: &str = "100000";
/// Messages asked for per XREADGROUP / XAUTOCLAIM.
const STREAM_COUNT: &str = "10";
/// Every this many consumer commands, one is an XAUTOCLAIM of messages idle for [`CLAIM_IDLE_MS`].
const CLAIM_EVERY: u64 = 20;
/// Idle time after which another consumer's pending message is claimed.
const CLAIM_IDLE_MS: &str = "1000";
/// Channels of the `pubsub` workload.
pub const PUBSUB_CHANNELS: usize = 8;

/// Whether connection `client` consumes (stream consumer, pub/sub subscriber) rather than produces.
pub fn is_consumer(client: usize) -> bool {
    client % 2 == 1
}

/// The name of pub/sub channel `i`.
pub fn channel(i: usize) -> String {
    format!("bench:chan:{i}")
}

/// `MULTI`, `n` SETs of `keys`, `EXEC`: `n + 2` replies.
pub fn push_transaction(out: &mut BytesMut, keys: &[&[u8]], value: &[u8]) -> u32 {
    push_command(out, &[b"MULTI"]);
    for k in keys {
        push_command(out, &[b"SET", k, value]);
    }
    push_command(out, &[b"EXEC"]);
    keys.len() as u32 + 2
}

/// `XADD bench:stream MAXLEN ~ 100000 * v <value>`.
pub fn push_xadd(out: &mut BytesMut, value: &[u8]) {
    push_command(
        out,
        &[
            b"XADD",
            STREAM_KEY.as_bytes(),
            b"MAXLEN",
            b"~",
            STREAM_MAXLEN.as_bytes(),
            b"*",
            b"v",
            value,
        ],
    );
}

/// A stream consumer: what it must acknowledge, and when to claim idle messages.
#[derive(Debug)]
pub struct StreamConsumer {
    name: String,
    to_ack: Vec<Bytes>,
    sent: u64,
}

impl StreamConsumer {
    /// Consumer `c<client>` of the group.
    pub fn new(client: usize) -> Self {
        StreamConsumer {
            name: format!("c{client}"),
            to_ack: Vec::new(),
            sent: 0,
        }
    }

    /// Appends the consumer's next command: XACK of what it read, else XAUTOCLAIM now and then, else
    /// XREADGROUP. Returns whether the reply carries message ids (to hand to [`StreamConsumer::on_reply`]).
    pub fn next(&mut self, out: &mut BytesMut) -> bool {
        self.sent += 1;
        if !self.to_ack.is_empty() {
            let mut args: Vec<&[u8]> =
                vec![b"XACK", STREAM_KEY.as_bytes(), STREAM_GROUP.as_bytes()];
            args.extend(self.to_ack.iter().map(|b| &b[..]));
            push_command(out, &args);
            self.to_ack.clear();
            return false;
        }
        let (group, name) = (STREAM_GROUP.as_bytes(), self.name.as_bytes());
        if self.sent % CLAIM_EVERY == 0 {
            push_command(
                out,
                &[
                    b"XAUTOCLAIM",
                    STREAM_KEY.as_bytes(),
                    group,
                    name,
                    CLAIM_IDLE_MS.as_bytes(),
                    b"0-0",
                    b"COUNT",
                    STREAM_COUNT.as_bytes(),
                ],
            );
        } else {
            push_command(
                out,
                &[
                    b"XREADGROUP",
                    b"GROUP",
                    group,
                    name,
                    b"COUNT",
                    STREAM_COUNT.as_bytes(),
                    b"STREAMS",
                    STREAM_KEY.as_bytes(),
                    b">",
                ],
            );
        }
        true
    }

    /// Collects the message ids of an XREADGROUP or XAUTOCLAIM reply for the next XACK.
    pub fn on_reply(&mut self, raw: Bytes) {
        if let Ok(v) = parse_value(raw) {
            self.to_ack.extend(message_ids(&v));
        }
    }

    /// Ids waiting to be acknowledged.
    pub fn unacked(&self) -> usize {
        self.to_ack.len()
    }
}

/// Message ids in an XREADGROUP reply (`[[stream, [[id, fields], ...]]]`, RESP3: a map) or an XAUTOCLAIM
/// reply (`[cursor, [[id, fields], ...], deleted]`).
pub fn message_ids(v: &Value) -> Vec<Bytes> {
    let entries = |list: &Value| -> Vec<Bytes> {
        list.as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match e.as_array() {
                Some([Value::Bulk(id), ..]) => Some(id.clone()),
                _ => None,
            })
            .collect()
    };
    match v.as_array() {
        // XAUTOCLAIM: cursor (a bulk string) first.
        Some([Value::Bulk(_), list, ..]) => entries(list),
        // XREADGROUP, RESP2: one [stream, entries] pair per stream.
        Some(streams) if streams.iter().all(|s| s.as_array().is_some()) => streams
            .iter()
            .filter_map(|s| match s.as_array() {
                Some([_, list]) => Some(entries(list)),
                _ => None,
            })
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Microseconds from `epoch` to `at`, negative when `at` is earlier.
pub fn micros_since(epoch: Instant, at: Instant) -> i64 {
    match at.checked_duration_since(epoch) {
        Some(d) => d.as_micros() as i64,
        None => -(epoch.duration_since(at).as_micros() as i64),
    }
}

/// A pub/sub message: microseconds since `epoch` at publication, then padding up to `size`.
pub fn stamp(epoch: Instant, size: usize) -> Vec<u8> {
    number_value(micros_since(epoch, Instant::now()), size)
}

/// The publication time in a message written by [`stamp`], in microseconds since the epoch.
pub fn stamp_of(msg: &[u8]) -> Option<i64> {
    value_number(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::from(s.to_string()))
    }

    fn entry(id: &str) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk("v"), bulk("x")])])
    }

    #[test]
    fn ids_come_out_of_xreadgroup_and_xautoclaim_replies() {
        let read = Value::Array(vec![Value::Array(vec![
            bulk(STREAM_KEY),
            Value::Array(vec![entry("1-0"), entry("1-1")]),
        ])]);
        assert_eq!(
            message_ids(&read),
            vec![Bytes::from("1-0"), Bytes::from("1-1")]
        );
        let claim = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("2-0")]),
            Value::Array(vec![]),
        ]);
        assert_eq!(message_ids(&claim), vec![Bytes::from("2-0")]);
        assert!(message_ids(&Value::Nil).is_empty());
    }

    #[test]
    fn consumers_ack_what_they_read_and_claim_now_and_then() {
        let mut c = StreamConsumer::new(1);
        let mut out = BytesMut::new();
        assert!(c.next(&mut out));
        assert!(out.starts_with(b"*9\r\n$10\r\nXREADGROUP"));
        let reply = crate::resp::encode_command(&["x"]); // any non-stream reply: nothing to ack
        c.on_reply(reply);
        assert_eq!(c.unacked(), 0);
        c.to_ack.push(Bytes::from("1-0"));
        out.clear();
        assert!(!c.next(&mut out));
        assert!(out.windows(4).any(|w| w == b"XACK"));
        let claims = (0..40)
            .filter(|_| {
                out.clear();
                c.next(&mut out);
                out.windows(10).any(|w| w == b"XAUTOCLAIM")
            })
            .count();
        assert_eq!(claims, 2);
    }

    #[test]
    fn stamps_round_trip_and_transactions_count_replies() {
        let epoch = Instant::now();
        let s = stamp(epoch, 16);
        assert_eq!(s.len(), 16);
        assert!(stamp_of(&s).is_some_and(|us| (0..1_000_000).contains(&us)));
        let mut out = BytesMut::new();
        assert_eq!(push_transaction(&mut out, &[b"a", b"b"], b"v"), 4);
        assert!(out.starts_with(b"*1\r\n$5\r\nMULTI\r\n"));
        assert!(out.ends_with(b"*1\r\n$4\r\nEXEC\r\n"));
        assert!(is_consumer(1) && !is_consumer(2));
        assert_eq!(channel(3), "bench:chan:3");
    }
}
