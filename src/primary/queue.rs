//! The reply queue of a Sentinel/static-mode client: one slot per reply or batch of replies, in
//! request order, whatever state each is in (answered, sent, held for a master, deferred behind
//! another connection).
//!
//! The counts the session acts on (held batches, deferred batches, requests not answered yet)
//! are kept by the queue itself as entries come and go, so they cannot drift from its contents
//! (nor wrap below zero); debug builds recount them after every change.

use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError, BatchReply, Pinned};

/// Requests for one backend, sent (or to be sent) as one dispatch.
pub(super) struct Batch {
    /// The requests, back to back, as they go on the wire.
    pub raw: Bytes,
    /// How many requests `raw` holds (the proxy's own included: see `swallow`).
    pub count: usize,
    /// How many of them write.
    pub writes: u32,
    /// When the first of them was parsed.
    pub since: Instant,
    /// Which requests are writes, kept only with `write_durability`.
    pub write_mask: Vec<bool>,
    /// Sent as durable: its replies come with the confirmation of the `WAIT` written after it.
    pub waited: bool,
    /// Sent on the client's pinned connection.
    pub pinned: bool,
    /// The database the client had selected when it sent these requests.
    pub db: u8,
    /// The last request's reply is replaced by this (an `EXEC` sent as `DISCARD`).
    pub replace_last: Option<Bytes>,
    /// Leading requests of the proxy's own (the probe before `WAIT`), counted in `count`, whose
    /// replies the client does not get.
    pub swallow: usize,
    /// The pinned connection of a blocking command or `WAIT`, recycled once the batch is answered
    /// whole (dropped with the batch if the client leaves first, which closes it).
    pub recycle: Option<Pinned>,
    /// Sent again already (reads whose connection was lost): never a second time.
    pub resent: bool,
    /// One call of a `SCAN`-family iteration, whose reply's cursor names the server.
    pub scan: Option<ScanBatch>,
}

/// A batch of one `SCAN`-family call (see [`crate::router::scan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanBatch {
    /// Cursor 0: wherever the read goes.
    Start,
    /// Only to the server this number names (held, resent: still there).
    Continue(u64),
}

impl Batch {
    /// One request of the client's, `writes` 0 or 1, in database `db`.
    pub fn single(raw: Bytes, writes: u32, db: u8) -> Batch {
        Batch {
            raw,
            count: 1,
            writes,
            since: Instant::now(),
            write_mask: Vec::new(),
            waited: false,
            pinned: false,
            db,
            replace_last: None,
            swallow: 0,
            recycle: None,
            resent: true,
            scan: None,
        }
    }

    /// How many of the requests are the client's (each gets a reply).
    pub fn replies(&self) -> usize {
        self.count.saturating_sub(self.swallow)
    }
}

/// Where a batch goes.
pub(super) enum Target {
    /// A shared connection of this server.
    Backend(Arc<Backend>),
    /// Nowhere yet: held until there is a master.
    Hold,
    /// The client's own connection (a transaction, a blocking command).
    Pinned(Pinned),
}

impl Target {
    /// The client's own connection.
    pub fn pinned(&self) -> bool {
        matches!(self, Target::Pinned(_))
    }
}

/// A reply slot, in request order.
pub(super) enum Pending {
    /// Known already (local answers, refusals, errors): one reply.
    Ready(Bytes),
    /// Sent to a backend; the replies come through `rx`.
    Waiting {
        /// Where the replies come.
        rx: oneshot::Receiver<BatchReply>,
        /// What was sent.
        batch: Batch,
        /// To whom (for the error text if it fails).
        backend: Arc<Backend>,
    },
    /// Waiting for a master (its bytes count against `max_held_bytes`).
    Held(Batch),
    /// Not sent yet: it goes to another connection than the requests before it (the client's
    /// pinned one, or back to the shared ones), so it waits until they are answered.
    Deferred(Batch, Target),
}

impl Pending {
    /// How many replies the client gets from this slot.
    fn replies(&self) -> usize {
        match self {
            Pending::Ready(_) => 1,
            Pending::Waiting { batch, .. } | Pending::Held(batch) | Pending::Deferred(batch, _) => {
                batch.replies()
            }
        }
    }
}

/// The reply slots in request order, with their counts.
#[derive(Default)]
pub(super) struct ReplyQueue {
    entries: VecDeque<Pending>,
    /// `Held` entries.
    held: usize,
    /// `Deferred` entries.
    deferred: usize,
    /// Replies the entries will give the client.
    requests: usize,
}

impl ReplyQueue {
    /// Appends a slot.
    pub fn push_back(&mut self, entry: Pending) {
        self.count_in(&entry);
        self.entries.push_back(entry);
        self.check();
    }

    /// Puts a slot first (a batch the backend refused unsent goes back where it was).
    pub fn push_front(&mut self, entry: Pending) {
        self.count_in(&entry);
        self.entries.push_front(entry);
        self.check();
    }

    /// Takes the first slot.
    pub fn pop_front(&mut self) -> Option<Pending> {
        let entry = self.entries.pop_front()?;
        self.count_out(&entry);
        self.check();
        Some(entry)
    }

    /// The first slot.
    pub fn front(&self) -> Option<&Pending> {
        self.entries.front()
    }

    /// Takes every slot, in order (to be pushed back one by one).
    pub fn take_all(&mut self) -> VecDeque<Pending> {
        self.held = 0;
        self.deferred = 0;
        self.requests = 0;
        std::mem::take(&mut self.entries)
    }

    /// The last slot, to hand it the pinned connection its reply should recycle.
    pub fn back_batch(&mut self) -> Option<&mut Batch> {
        match self.entries.back_mut() {
            Some(Pending::Waiting { batch, .. }) if batch.pinned => Some(batch),
            Some(Pending::Deferred(batch, Target::Pinned(_))) => Some(batch),
            _ => None,
        }
    }

    /// Whether a slot before the ones to come is still unanswered.
    pub fn outstanding(&self) -> bool {
        self.entries.iter().any(|p| !matches!(p, Pending::Ready(_)))
    }

    /// Whether the client waits for a reply on its own connection.
    pub fn waits_pinned(&self) -> bool {
        self.entries
            .iter()
            .any(|p| matches!(p, Pending::Waiting { batch, .. } if batch.pinned))
    }

    /// `Held` slots.
    pub fn held(&self) -> usize {
        self.held
    }

    /// `Deferred` slots.
    pub fn deferred(&self) -> usize {
        self.deferred
    }

    /// Replies still to come from the slots.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// No slot.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first slot's replies if they have come, without waiting: `None` when the first slot
    /// is not one waiting for a backend, or its replies have not come yet.
    pub fn try_front_reply(&mut self) -> Option<BatchReply> {
        match self.entries.front_mut() {
            Some(Pending::Waiting { rx, .. }) => match rx.try_recv() {
                Ok(r) => Some(r),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Some(BatchReply::failed(BackendError::ConnectionLost))
                }
            },
            _ => None,
        }
    }

    /// Waits for the replies of the first slot (never resolves when it is not waiting for a
    /// backend). Cancel-safe: the receiver stays in the slot.
    pub async fn front_reply(&mut self) -> BatchReply {
        match self.entries.front_mut() {
            Some(Pending::Waiting { rx, .. }) => rx
                .await
                .unwrap_or_else(|_| BatchReply::failed(BackendError::ConnectionLost)),
            _ => std::future::pending().await,
        }
    }

    fn count_in(&mut self, entry: &Pending) {
        match entry {
            Pending::Held(_) => self.held += 1,
            Pending::Deferred(..) => self.deferred += 1,
            _ => {}
        }
        self.requests += entry.replies();
    }

    fn count_out(&mut self, entry: &Pending) {
        // Never below zero: every entry taken out was counted in.
        match entry {
            Pending::Held(_) => self.held = self.held.saturating_sub(1),
            Pending::Deferred(..) => self.deferred = self.deferred.saturating_sub(1),
            _ => {}
        }
        self.requests = self.requests.saturating_sub(entry.replies());
    }

    /// Debug builds: the counts match the entries.
    fn check(&self) {
        if cfg!(debug_assertions) {
            let held = self
                .entries
                .iter()
                .filter(|p| matches!(p, Pending::Held(_)))
                .count();
            let deferred = self
                .entries
                .iter()
                .filter(|p| matches!(p, Pending::Deferred(..)))
                .count();
            let requests: usize = self.entries.iter().map(Pending::replies).sum();
            debug_assert_eq!(self.held, held, "held count");
            debug_assert_eq!(self.deferred, deferred, "deferred count");
            debug_assert_eq!(self.requests, requests, "request count");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(count: usize, swallow: usize) -> Batch {
        Batch {
            raw: Bytes::new(),
            count,
            writes: 0,
            since: Instant::now(),
            write_mask: Vec::new(),
            waited: false,
            pinned: false,
            db: 0,
            replace_last: None,
            swallow,
            recycle: None,
            resent: false,
            scan: None,
        }
    }

    #[test]
    fn counts_follow_the_entries_through_every_change() {
        let mut q = ReplyQueue::default();
        q.push_back(Pending::Ready(Bytes::from_static(b"+OK\r\n")));
        q.push_back(Pending::Held(batch(3, 0)));
        q.push_back(Pending::Deferred(batch(2, 1), Target::Hold));
        assert_eq!((q.held(), q.deferred(), q.requests()), (1, 1, 5));
        q.push_front(Pending::Held(batch(4, 0)));
        assert_eq!((q.held(), q.deferred(), q.requests()), (2, 1, 9));
        assert!(matches!(q.pop_front(), Some(Pending::Held(_))));
        assert!(matches!(q.pop_front(), Some(Pending::Ready(_))));
        assert_eq!((q.held(), q.deferred(), q.requests()), (1, 1, 4));
        let rest = q.take_all();
        assert_eq!(rest.len(), 2);
        assert_eq!((q.held(), q.deferred(), q.requests()), (0, 0, 0));
        assert!(q.pop_front().is_none());
        assert_eq!(q.requests(), 0, "an empty queue stays at zero");
    }

    #[test]
    fn a_batch_with_only_the_proxys_requests_gives_no_reply() {
        assert_eq!(batch(1, 1).replies(), 0);
        assert_eq!(batch(0, 1).replies(), 0, "never below zero");
    }
}
