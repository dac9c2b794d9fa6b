//! A cluster-mode transaction being queued: the proxy keeps the commands between `MULTI` and
//! `EXEC` and sends them whole at `EXEC` to the slot's master, so their memory is the proxy's
//! and is bounded here (`cluster.max_multi_commands`, `cluster.max_multi_bytes`).
//!
//! Sentinel and static mode need no such bound: there `MULTI` pins a connection to the master
//! and every queued command streams to it as it arrives (within `max_pipeline`), so the server
//! holds the queue, as it does for a direct client.

use bytes::{Bytes, BytesMut};

use crate::resp::error_reply;

/// The bounds on one transaction's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLimits {
    /// `cluster.max_multi_commands`.
    pub max_commands: usize,
    /// `cluster.max_multi_bytes`.
    pub max_bytes: usize,
}

impl Default for TxLimits {
    fn default() -> Self {
        TxLimits {
            max_commands: 100_000,
            max_bytes: 512 << 20,
        }
    }
}

/// What [`Tx::push`] did with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued (or, in a transaction that already failed, answered `+QUEUED` and dropped).
    Queued,
    /// Refused for the bound it would pass (the client's error reply); the transaction is
    /// failed now, and this is the first time: count it.
    TooLarge(Bytes),
}

/// A transaction being queued. Once a command fails to queue (refused, `CROSSSLOT`, too large)
/// `EXEC` answers `-EXECABORT`, and later commands are not kept: they will never run (Redis's
/// `queueMultiCommand` does the same, so a client pipelining into an aborted transaction costs
/// nothing).
#[derive(Debug, Default)]
pub struct Tx {
    queued: BytesMut,
    count: usize,
    slot: Option<u16>,
    failed: bool,
}

impl Tx {
    /// Whether a command of `slot` may join: the transaction takes the slot of its first keyed
    /// command, and every later one must hash there too.
    pub fn takes_slot(&mut self, slot: u16) -> bool {
        match self.slot {
            Some(s) => s == slot,
            None => {
                self.slot = Some(slot);
                true
            }
        }
    }

    /// A command failed to queue: `EXEC` will abort. What was queued is let go at once.
    pub fn fail(&mut self) {
        self.failed = true;
        self.queued = BytesMut::new();
    }

    /// Queues `raw` unless it would pass `limits`.
    pub fn push(&mut self, raw: &[u8], limits: TxLimits) -> Push {
        if self.failed {
            return Push::Queued;
        }
        let reply = if self.count >= limits.max_commands {
            too_large("cluster.max_multi_commands", limits.max_commands)
        } else if self.queued.len().saturating_add(raw.len()) > limits.max_bytes {
            too_large("cluster.max_multi_bytes", limits.max_bytes)
        } else {
            self.queued.extend_from_slice(raw);
            self.count += 1;
            return Push::Queued;
        };
        self.fail();
        Push::TooLarge(reply)
    }

    /// Bytes held for the transaction (they count against the client's query buffer limit).
    pub fn bytes(&self) -> usize {
        self.queued.len()
    }

    /// At `EXEC`: the slot, the queued commands and how many, or `None` when the transaction
    /// failed (`-EXECABORT`).
    pub fn into_exec(self) -> Option<(Option<u16>, Bytes, usize)> {
        debug_assert!(!self.failed || self.queued.is_empty());
        (!self.failed).then(|| (self.slot, self.queued.freeze(), self.count))
    }
}

fn too_large(key: &str, max: usize) -> Bytes {
    error_reply(&format!(
        "ERR haproxy-rs: transaction too large ({key} = {max}); EXEC will abort"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TxLimits = TxLimits {
        max_commands: 3,
        max_bytes: 10,
    };

    #[test]
    fn the_command_past_a_bound_fails_the_transaction_once_and_nothing_more_is_kept() {
        let mut tx = Tx::default();
        assert_eq!(tx.push(b"aaa", LIMITS), Push::Queued);
        assert_eq!(tx.push(b"bbb", LIMITS), Push::Queued);
        assert_eq!(tx.push(b"ccc", LIMITS), Push::Queued);
        let Push::TooLarge(reply) = tx.push(b"d", LIMITS) else {
            panic!("a fourth command passes max_commands");
        };
        assert_eq!(
            &reply[..],
            b"-ERR haproxy-rs: transaction too large (cluster.max_multi_commands = 3); EXEC will abort\r\n"
        );
        assert_eq!(tx.bytes(), 0, "the queue is let go");
        assert_eq!(tx.push(b"e", LIMITS), Push::Queued, "counted once");
        assert_eq!(tx.bytes(), 0);
        assert!(tx.into_exec().is_none(), "EXEC aborts");
    }

    #[test]
    fn bytes_are_bounded_and_a_transaction_under_both_bounds_runs_whole() {
        let mut tx = Tx::default();
        assert_eq!(tx.push(b"0123456789", LIMITS), Push::Queued, "at the bound");
        assert!(
            matches!(tx.push(b"x", LIMITS), Push::TooLarge(r) if r.ends_with(b"(cluster.max_multi_bytes = 10); EXEC will abort\r\n"))
        );
        let mut tx = Tx::default();
        assert!(tx.takes_slot(7) && tx.takes_slot(7) && !tx.takes_slot(8));
        assert_eq!(tx.push(b"ab", LIMITS), Push::Queued);
        assert_eq!(tx.push(b"cd", LIMITS), Push::Queued);
        let (slot, queued, count) = tx.into_exec().expect("runs");
        assert_eq!((slot, &queued[..], count), (Some(7), &b"abcd"[..], 2));
    }

    #[test]
    fn a_failed_command_aborts_and_frees_the_queue() {
        let mut tx = Tx::default();
        assert_eq!(tx.push(b"abc", LIMITS), Push::Queued);
        tx.fail();
        assert_eq!(tx.bytes(), 0);
        assert_eq!(tx.push(b"abc", LIMITS), Push::Queued);
        assert!(tx.into_exec().is_none());
    }
}
