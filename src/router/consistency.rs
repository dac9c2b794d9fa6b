//! Read-your-writes: after a client writes, its reads go to the master until a replica has
//! replicated past that write, judged by replication offsets; and the same for every client's
//! acknowledged writes at once (`read_consistency = "acknowledged-writes"`).
//!
//! Offsets are only learned by polling (`INFO replication`), so a write's offset is bounded from
//! above: any master poll that *started* after the write's reply arrived saw an offset at least as
//! high (Redis appends to the replication stream before it sends the reply). Until such a poll has
//! finished the client reads from the master; afterwards from a replica whose offset reached it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The master's replication offset as seen by the health checks, with poll sequence numbers.
#[derive(Debug, Default)]
pub struct ReplicationClock {
    started: AtomicU64,
    done_seq: AtomicU64,
    done_offset: AtomicU64,
    /// The poll whose offset covers every write acknowledged so far (0: none yet).
    acknowledged_seq: AtomicU64,
}

impl ReplicationClock {
    /// A master poll begins; returns its sequence number.
    pub fn begin(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Poll `seq` finished and saw `offset`.
    pub fn complete(&self, seq: u64, offset: u64) {
        // Offset first, then the sequence: a reader that sees the sequence sees this offset or a
        // later (higher) one, which only makes it more careful.
        self.done_offset.fetch_max(offset, Ordering::AcqRel);
        self.done_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The sequence number of the next poll to start.
    pub fn next_seq(&self) -> u64 {
        self.started.load(Ordering::Acquire) + 1
    }

    /// A write was acknowledged to its client (before the client sees the reply): every read
    /// from now on must see it.
    pub fn acknowledged(&self) {
        self.acknowledged_seq
            .fetch_max(self.next_seq(), Ordering::AcqRel);
    }

    /// What any read needs to see every acknowledged write: the master until a poll that began
    /// after the latest one has finished, then a replica at or past the offset it saw.
    pub fn acknowledged_need(&self) -> ReadNeed {
        match self.acknowledged_seq.load(Ordering::Acquire) {
            0 => ReadNeed::Any,
            seq => self
                .offset_after(seq)
                .map_or(ReadNeed::Master, ReadNeed::Offset),
        }
    }

    /// The offset seen by poll `seq` or a later one, once one has finished.
    pub fn offset_after(&self, seq: u64) -> Option<u64> {
        (self.done_seq.load(Ordering::Acquire) >= seq)
            .then(|| self.done_offset.load(Ordering::Acquire))
    }
}

/// What a session's next read needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadNeed {
    /// Any healthy replica will do.
    Any,
    /// A replica at or past this offset.
    Offset(u64),
    /// Only the master has the client's writes for sure.
    Master,
}

impl ReadNeed {
    /// The stricter of two needs.
    pub fn and(self, other: ReadNeed) -> ReadNeed {
        match (self, other) {
            (ReadNeed::Master, _) | (_, ReadNeed::Master) => ReadNeed::Master,
            (ReadNeed::Offset(a), ReadNeed::Offset(b)) => ReadNeed::Offset(a.max(b)),
            (ReadNeed::Offset(o), ReadNeed::Any) | (ReadNeed::Any, ReadNeed::Offset(o)) => {
                ReadNeed::Offset(o)
            }
            (ReadNeed::Any, ReadNeed::Any) => ReadNeed::Any,
        }
    }
}

/// One session's read-your-writes state.
#[derive(Debug, Default)]
pub struct ReadYourWrites {
    writes_in_flight: u32,
    need_seq: Option<u64>,
    need_offset: Option<u64>,
}

impl ReadYourWrites {
    /// A write was sent to the master.
    pub fn write_sent(&mut self) {
        self.writes_in_flight = self.writes_in_flight.saturating_add(1);
    }

    /// A write's reply came back.
    pub fn write_done(&mut self, clock: &ReplicationClock) {
        self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
        self.need_seq = Some(clock.next_seq());
        self.need_offset = None;
    }

    /// What the next read needs.
    pub fn need(&mut self, clock: &ReplicationClock) -> ReadNeed {
        if self.writes_in_flight > 0 {
            return ReadNeed::Master;
        }
        if let Some(seq) = self.need_seq {
            match clock.offset_after(seq) {
                Some(o) => {
                    self.need_offset = Some(o);
                    self.need_seq = None;
                }
                None => return ReadNeed::Master,
            }
        }
        self.need_offset.map_or(ReadNeed::Any, ReadNeed::Offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_writes_means_any_replica() {
        let clock = ReplicationClock::default();
        assert_eq!(ReadYourWrites::default().need(&clock), ReadNeed::Any);
    }

    #[test]
    fn write_in_flight_pins_reads_to_master() {
        let clock = ReplicationClock::default();
        let mut rw = ReadYourWrites::default();
        rw.write_sent();
        assert_eq!(rw.need(&clock), ReadNeed::Master);
    }

    #[test]
    fn only_a_poll_started_after_the_reply_releases_reads() {
        let clock = ReplicationClock::default();
        let mut rw = ReadYourWrites::default();
        let early = clock.begin(); // started before the write's reply
        rw.write_sent();
        rw.write_done(&clock);
        clock.complete(early, 100);
        assert_eq!(
            rw.need(&clock),
            ReadNeed::Master,
            "an earlier poll proves nothing"
        );
        let later = clock.begin();
        assert_eq!(rw.need(&clock), ReadNeed::Master, "not finished yet");
        clock.complete(later, 150);
        assert_eq!(rw.need(&clock), ReadNeed::Offset(150));
        assert_eq!(rw.need(&clock), ReadNeed::Offset(150));
    }

    #[test]
    fn another_clients_acknowledged_write_holds_every_read_to_it() {
        let clock = ReplicationClock::default();
        assert_eq!(clock.acknowledged_need(), ReadNeed::Any);
        let early = clock.begin();
        clock.acknowledged();
        clock.complete(early, 100);
        assert_eq!(
            clock.acknowledged_need(),
            ReadNeed::Master,
            "an earlier poll proves nothing"
        );
        let later = clock.begin();
        clock.complete(later, 150);
        assert_eq!(clock.acknowledged_need(), ReadNeed::Offset(150));
        assert_eq!(
            ReadNeed::Offset(150).and(ReadNeed::Offset(90)),
            ReadNeed::Offset(150)
        );
        assert_eq!(ReadNeed::Any.and(ReadNeed::Master), ReadNeed::Master);
    }

    #[test]
    fn a_new_write_replaces_the_old_requirement() {
        let clock = ReplicationClock::default();
        let mut rw = ReadYourWrites::default();
        rw.write_sent();
        rw.write_done(&clock);
        let s = clock.begin();
        clock.complete(s, 10);
        assert_eq!(rw.need(&clock), ReadNeed::Offset(10));
        rw.write_sent();
        rw.write_done(&clock);
        assert_eq!(rw.need(&clock), ReadNeed::Master);
    }
}
