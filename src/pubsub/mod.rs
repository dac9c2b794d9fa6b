//! Pub/Sub: a subscribed client's channels, kept on backend connections of its own.
//!
//! A client's first `SUBSCRIBE`/`PSUBSCRIBE`/`SSUBSCRIBE` puts its session into subscriber mode
//! ([`serve`]) once its earlier replies are out. The proxy keeps the client's subscriptions
//! ([`Subscriptions`]) and places each on a backend *link*: classic channels and patterns on
//! the master (in cluster mode, on one master: `PUBLISH` reaches every node), shard channels on
//! their slot's master. Messages are passed through as the server sends them. The client's
//! confirmations are the proxy's own, sent once the servers have confirmed, so their counts
//! are the client's totals whatever the links, and a failover changes nothing the client sees:
//! when the master changes or a link breaks, the subscriptions are made again on the new
//! master (messages published during the switch are lost, as with Redis itself). In cluster
//! mode, subscriptions that can receive keyspace notifications go to every master
//! ([`keyspace`]): each node publishes its own keys' events only.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod keyspace;
mod link;
pub mod locate;
mod mode;
pub mod monitor;
mod redirect;

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::Protocol;

pub use locate::Locate;
pub use mode::{serve, ClientIo, Exit, SessionParts};

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `SUBSCRIBE channel`.
    Channel,
    /// `PSUBSCRIBE pattern`.
    Pattern,
    /// `SSUBSCRIBE shardchannel` (Redis 7).
    Shard,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Channel, Kind::Pattern, Kind::Shard];

    /// The command (and confirmation) name.
    pub fn verb(self, subscribe: bool) -> &'static str {
        match (self, subscribe) {
            (Kind::Channel, true) => "subscribe",
            (Kind::Channel, false) => "unsubscribe",
            (Kind::Pattern, true) => "psubscribe",
            (Kind::Pattern, false) => "punsubscribe",
            (Kind::Shard, true) => "ssubscribe",
            (Kind::Shard, false) => "sunsubscribe",
        }
    }

    /// The kind and direction of a pub/sub command or confirmation name.
    pub fn of_verb(name: &[u8]) -> Option<(Kind, bool)> {
        Kind::ALL.into_iter().find_map(|k| {
            [true, false]
                .into_iter()
                .find(|&s| name.eq_ignore_ascii_case(k.verb(s).as_bytes()))
                .map(|s| (k, s))
        })
    }
}

/// A set of channels, patterns and shard channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard: BTreeSet<Bytes>,
}

impl Subscriptions {
    /// The names of one kind.
    pub fn of(&self, kind: Kind) -> &BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// Adds a name; false when it was there already.
    pub fn insert(&mut self, kind: Kind, name: Bytes) -> bool {
        self.of_mut(kind).insert(name)
    }

    /// Removes a name; false when it was not there.
    pub fn remove(&mut self, kind: Kind, name: &[u8]) -> bool {
        self.of_mut(kind).remove(name)
    }

    /// Whether a name is there.
    pub fn contains(&self, kind: Kind, name: &[u8]) -> bool {
        self.of(kind).contains(name)
    }

    /// Every subscription of every kind.
    pub fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard.len()
    }

    /// The count Redis 7.0 puts in a confirmation of `kind`: channels and patterns together, or
    /// the shard channels.
    pub fn count_for(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.of(Kind::Shard).len(),
            Kind::Channel | Kind::Pattern => {
                self.of(Kind::Channel).len() + self.of(Kind::Pattern).len()
            }
        }
    }

    /// Every `(kind, name)`.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, &Bytes)> {
        Kind::ALL
            .into_iter()
            .flat_map(move |k| self.of(k).iter().map(move |n| (k, n)))
    }

    /// Applies a client's `(P|S)(UN)SUBSCRIBE names...` and returns the confirmations Redis
    /// would send for it: one per name, or, for an unsubscribe without names, one per
    /// subscription of that kind (one with a nil name when there is none).
    pub fn apply(
        &mut self,
        kind: Kind,
        subscribe: bool,
        names: &[Bytes],
        protocol: Protocol,
    ) -> Vec<Bytes> {
        let verb = kind.verb(subscribe);
        let names: Vec<Bytes> = if !subscribe && names.is_empty() {
            self.of(kind).iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            return vec![confirmation(protocol, verb, None, self.count_for(kind))];
        }
        names
            .into_iter()
            .map(|name| {
                if subscribe {
                    self.insert(kind, name.clone());
                } else {
                    self.remove(kind, &name);
                }
                confirmation(protocol, verb, Some(&name), self.count_for(kind))
            })
            .collect()
    }
}

/// A confirmation frame: `[verb, name, count]`, an array in RESP2 and a push in RESP3.
pub fn confirmation(protocol: Protocol, verb: &str, name: Option<&[u8]>, count: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + name.map_or(0, <[u8]>::len));
    out.put_slice(if protocol == Protocol::Resp3 {
        b">3\r\n"
    } else {
        b"*3\r\n"
    });
    put_bulk(&mut out, verb.as_bytes());
    match (name, protocol) {
        (Some(n), _) => put_bulk(&mut out, n),
        (None, Protocol::Resp3) => out.put_slice(b"_\r\n"),
        (None, Protocol::Resp2) => out.put_slice(b"$-1\r\n"),
    }
    out.put_slice(format!(":{count}\r\n").as_bytes());
    out.freeze()
}

/// `PING [message]` from a subscribed RESP2 client: `["pong", message]`, as Redis answers it.
pub fn resp2_pong(message: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(b"*2\r\n");
    put_bulk(&mut out, b"pong");
    put_bulk(&mut out, message.unwrap_or_default());
    out.freeze()
}

fn put_bulk(out: &mut BytesMut, b: &[u8]) {
    out.put_slice(format!("${}\r\n", b.len()).as_bytes());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// What a frame from a subscription link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `message`, `pmessage` or `smessage`: passed to the client.
    Message,
    /// A server's confirmation of a (un)subscribe, with the name it is about (nil: none).
    Confirmation {
        /// Channel, pattern or shard channel.
        kind: Kind,
        /// A subscribe (else an unsubscribe).
        subscribe: bool,
        /// What it is about; `None` for Redis's nil (nothing was subscribed).
        name: Option<Bytes>,
    },
    /// The reply to a command (a RESP3 client may send any command while subscribed).
    Reply,
}

/// Classifies a frame read from a link speaking `protocol`. In RESP3 pub/sub frames are pushes
/// (`>`); in RESP2 they are arrays, and a RESP2 link gets no other command that could answer
/// with an array.
pub fn classify_frame(frame: &[u8], protocol: Protocol) -> Incoming {
    let pushed = match frame.first() {
        Some(b'>') => true,
        Some(b'*') => protocol == Protocol::Resp2,
        _ => false,
    };
    if !pushed {
        return Incoming::Reply;
    }
    let mut elems = Elements::new(frame);
    let Some(Some(first)) = elems.next() else {
        return Incoming::Reply;
    };
    // `invalidate`: client-side caching (`CLIENT TRACKING`, RESP3), passed on like a message.
    if matches!(
        &first[..],
        b"message" | b"pmessage" | b"smessage" | b"invalidate"
    ) {
        return Incoming::Message;
    }
    match Kind::of_verb(&first) {
        Some((kind, subscribe)) => Incoming::Confirmation {
            kind,
            subscribe,
            name: elems.next().flatten(),
        },
        None => Incoming::Reply,
    }
}

/// The leading bulk-string elements of an array or push frame (`None` for a nil element).
struct Elements<'f> {
    rest: &'f [u8],
    left: usize,
}

impl<'f> Elements<'f> {
    fn new(frame: &'f [u8]) -> Elements<'f> {
        let (count, rest) = header(frame.get(1..).unwrap_or_default()).unwrap_or((0, &[]));
        Elements {
            rest,
            left: usize::try_from(count).unwrap_or(0),
        }
    }
}

impl Iterator for Elements<'_> {
    type Item = Option<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.rest.first() {
            Some(b'$') => {
                let (len, rest) = header(self.rest.get(1..)?)?;
                let Ok(len) = usize::try_from(len) else {
                    self.rest = rest;
                    return Some(None);
                };
                let body = rest.get(..len)?;
                self.rest = rest.get(len + 2..)?;
                Some(Some(Bytes::copy_from_slice(body)))
            }
            Some(b'_') => {
                self.rest = self.rest.get(3..)?;
                Some(None)
            }
            _ => None,
        }
    }
}

/// A header line's number and what follows its CRLF.
fn header(b: &[u8]) -> Option<(i64, &[u8])> {
    let end = b.iter().position(|&c| c == b'\r')?;
    let n = std::str::from_utf8(b.get(..end)?).ok()?.parse().ok()?;
    Some((n, b.get(end + 2..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn confirmations_count_channels_and_patterns_together_and_shards_apart() {
        let mut s = Subscriptions::default();
        let r2 = Protocol::Resp2;
        assert_eq!(
            s.apply(Kind::Channel, true, &[b("a"), b("b")], r2),
            vec![
                b("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
                b("*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
            ]
        );
        assert_eq!(
            s.apply(Kind::Pattern, true, &[b("n*")], r2),
            vec![b("*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n")]
        );
        assert_eq!(
            s.apply(Kind::Shard, true, &[b("s")], Protocol::Resp3),
            vec![b(">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n")]
        );
        // A name subscribed twice counts once.
        assert_eq!(
            s.apply(Kind::Channel, true, &[b("a")], r2),
            vec![b("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:3\r\n")]
        );
        assert_eq!(s.total(), 4);
        // Without names: every channel, in order.
        assert_eq!(
            s.apply(Kind::Channel, false, &[], r2),
            vec![
                b("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n"),
                b("*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n")
            ]
        );
        // None left: one confirmation with a nil name.
        assert_eq!(
            s.apply(Kind::Channel, false, &[], r2),
            vec![b("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n")]
        );
        assert_eq!(
            s.apply(Kind::Pattern, false, &[], Protocol::Resp3),
            vec![b(">3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n")]
        );
        // Unsubscribing a name never subscribed is confirmed too.
        assert_eq!(
            s.apply(Kind::Shard, false, &[b("x")], r2),
            vec![b("*3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:1\r\n")]
        );
        assert_eq!(s.total(), 1);
    }

    #[test]
    fn frames_are_told_apart() {
        let r2 = Protocol::Resp2;
        let r3 = Protocol::Resp3;
        assert_eq!(
            classify_frame(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n", r2),
            Incoming::Message
        );
        assert_eq!(
            classify_frame(
                b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$0\r\n\r\n",
                r3
            ),
            Incoming::Message
        );
        assert_eq!(
            classify_frame(b">3\r\n$9\r\nSUBSCRIBE\r\n$3\r\nabc\r\n:1\r\n", r3),
            Incoming::Confirmation {
                kind: Kind::Channel,
                subscribe: true,
                name: Some(b("abc"))
            }
        );
        assert_eq!(
            classify_frame(b"*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n", r2),
            Incoming::Confirmation {
                kind: Kind::Shard,
                subscribe: false,
                name: None
            }
        );
        // Client-side caching's invalidations pass through like messages.
        assert_eq!(
            classify_frame(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", r3),
            Incoming::Message
        );
        // In RESP3 an array is a command's reply, even one that looks like a message.
        assert_eq!(
            classify_frame(b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n", r3),
            Incoming::Reply
        );
        assert_eq!(classify_frame(b"+PONG\r\n", r3), Incoming::Reply);
        assert_eq!(classify_frame(b"*", r2), Incoming::Reply);
        assert_eq!(classify_frame(b"*2\r\n$9\r\nsubscr", r2), Incoming::Reply);
    }

    #[test]
    fn verbs_parse_either_case() {
        assert_eq!(Kind::of_verb(b"PSUBSCRIBE"), Some((Kind::Pattern, true)));
        assert_eq!(Kind::of_verb(b"sunsubscribe"), Some((Kind::Shard, false)));
        assert_eq!(Kind::of_verb(b"publish"), None);
        assert_eq!(
            resp2_pong(Some(b"hi")),
            b("*2\r\n$4\r\npong\r\n$2\r\nhi\r\n")
        );
        assert_eq!(resp2_pong(None), b("*2\r\n$4\r\npong\r\n$0\r\n\r\n"));
    }
}
