//! The replies of a Sentinel/static-mode client's batches: collected in order, with the
//! proxy's own probe taken out, durability checked, and an error for each request a backend did
//! not answer.

use bytes::BytesMut;

use super::dispatcher::Dispatcher;
use super::queue::{Batch, Pending};
use crate::backend::pinned::wait_probe_refused;
use crate::backend::{Backend, BackendError, BatchReply};
use crate::client::reply::backend_error;
use crate::resp::{error_reply, is_error_reply, RequestLimits, RequestParser};

impl Dispatcher {
    /// Moves every reply that is already known, from the front of the queue, into `out`.
    pub fn collect(&mut self, out: &mut BytesMut) {
        loop {
            match self.queue.front() {
                Some(Pending::Ready(_)) => {
                    if let Some(Pending::Ready(b)) = self.queue.pop_front() {
                        // The proxy's own answers: refusals (read-only, policy, ACL...) included.
                        if is_error_reply(&b) {
                            self.stats.error(&b);
                        }
                        out.extend_from_slice(&b);
                    }
                }
                Some(Pending::Waiting { .. }) => {
                    let Some(reply) = self.queue.try_front_reply() else {
                        return;
                    };
                    if let Some(Pending::Waiting { batch, backend, .. }) = self.queue.pop_front() {
                        self.finish(batch, &backend, reply, out);
                    }
                }
                Some(Pending::Held(_) | Pending::Deferred(..)) | None => return,
            }
        }
    }

    /// Writes a dispatch's replies into `out`: the frames, then an error for each request the
    /// backend did not answer. A batch the backend refused unsent is held instead.
    pub(super) fn finish(
        &mut self,
        mut batch: Batch,
        backend: &Backend,
        mut reply: BatchReply,
        out: &mut BytesMut,
    ) {
        if reply.frames.is_empty() && matches!(reply.error, Some(BackendError::Unavailable)) {
            return self.hold(batch, true);
        }
        // The probe before a WAIT answered first; the client only sees WAIT's reply.
        let swallowed = batch.swallow.min(reply.frames.len());
        let refused = reply
            .frames
            .drain(..swallowed)
            .find_map(|f| wait_probe_refused(&f, "PUBLISH __haproxy-rs:wait"));
        if let (Some(refused), Some(wait)) = (refused, reply.frames.first_mut()) {
            *wait = refused;
        }
        if batch.waited {
            self.check_durability(&batch, &mut reply);
        }
        if batch.writes > 0 {
            check_replicas_in_sync(self.ctx.min_replicas, &batch, backend, &mut reply);
        }
        let count = batch.replies();
        if let Some(r) = &batch.replace_last {
            if reply.frames.len() == count {
                if let Some(last) = reply.frames.last_mut() {
                    *last = r.clone();
                }
            }
        }
        self.writes_done(batch.writes);
        if let Some(scan) = batch.scan {
            self.tag_scan_reply(scan, backend, &mut reply);
        }
        let answered = reply.frames.len().min(count);
        for frame in reply.frames.iter().take(count) {
            if is_error_reply(frame) {
                self.stats.error(frame);
            }
            out.extend_from_slice(frame);
        }
        if answered < count {
            let error = reply.error.unwrap_or(BackendError::ConnectionLost);
            if let Some(tail) = resendable_tail(&batch, answered, &error) {
                // Reads only: safe to run again. Held at the front (they keep their place) and
                // routed again as held requests are, so they may go to another server.
                tracing::debug!(backend.addr = backend.addr(), error = %error, requests = tail.count, "reads sent again");
                return self.hold(tail, true);
            }
            tracing::debug!(backend.addr = backend.addr(), error = %error, "request failed");
            let (bytes, _) = backend_error(&error, backend.addr());
            for _ in answered..count {
                self.stats.error(&bytes);
                out.extend_from_slice(&bytes);
            }
        } else if let Some(conn) = batch.recycle.take() {
            // A blocking command answered: its connection is as fresh (and no longer where the
            // client waits, before another client can take it).
            if let Some(c) = &self.client {
                c.set_blocked_on(None);
            }
            conn.recycle();
        }
    }

    /// Unless the `WAIT` after the batch confirmed enough replicas, each write's reply becomes an
    /// error (the client must not count on it).
    fn check_durability(&self, batch: &Batch, reply: &mut BatchReply) {
        let Some(d) = self.ctx.durability.as_ref() else {
            return;
        };
        // None: the connection failed before WAIT answered.
        let confirmed = reply.confirmed;
        if confirmed.is_some_and(|n| n >= i64::from(d.replicas)) {
            return;
        }
        let error = match confirmed {
            Some(n) => error_reply(&format!(
                "ERR haproxy-rs: the write reached the master but only {n} of {} replicas confirmed it within {} ms (write_durability); it may be lost in a failover",
                d.replicas, d.timeout_ms
            )),
            None => error_reply("ERR haproxy-rs: the write was not confirmed by the replicas (write_durability): the connection was lost; its outcome is unknown"),
        };
        for (frame, write) in reply.frames.iter_mut().zip(&batch.write_mask) {
            if *write && !is_error_reply(frame) {
                *frame = error.clone();
            }
        }
    }
}

/// With `min_replicas_to_ack`, each write's reply becomes an error unless the master had that
/// many replicas in sync at its last health check: what it acknowledged may exist on it alone.
fn check_replicas_in_sync(
    min: Option<(u32, u64)>,
    batch: &Batch,
    master: &Backend,
    reply: &mut BatchReply,
) {
    let Some((want, max_lag)) = min else {
        return;
    };
    let in_sync = master.health().replicas_in_sync(max_lag);
    if in_sync >= want as usize {
        return;
    }
    let error = error_reply(&format!(
        "NOREPLICAS haproxy-rs: the write reached the master, but only {in_sync} of the {want} replicas min_replicas_to_ack asks for were in sync (lag <= {max_lag} s); it may be lost in a failover"
    ));
    for (frame, write) in reply.frames.iter_mut().zip(&batch.write_mask) {
        if *write && !is_error_reply(frame) {
            *frame = error.clone();
        }
    }
}

/// The requests of `batch` after the first `answered`, as a batch to send again, when that is
/// safe: only reads (a lost write may have run), on a shared connection, never sent again
/// before, and lost with their connection (not a server that stopped answering: that one is
/// busy, and the read would only wait again).
fn resendable_tail(batch: &Batch, answered: usize, error: &BackendError) -> Option<Batch> {
    let lost = matches!(
        error,
        BackendError::ConnectionLost | BackendError::Closed | BackendError::Io(_)
    );
    if !lost
        || batch.writes > 0
        || batch.pinned
        || batch.resent
        || batch.swallow > 0
        || batch.replace_last.is_some()
    {
        return None;
    }
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut raw = BytesMut::from(&batch.raw[..]);
    let mut tail = BytesMut::new();
    let mut count = 0;
    let mut seen = 0;
    while let Ok(Some(req)) = parser.next(&mut raw) {
        if seen >= answered {
            tail.extend_from_slice(req.raw());
            count += 1;
        }
        seen += 1;
    }
    (count == batch.count.saturating_sub(answered)).then(|| Batch {
        raw: tail.freeze(),
        count,
        writes: 0,
        since: batch.since,
        write_mask: Vec::new(),
        waited: false,
        pinned: false,
        db: batch.db,
        replace_last: None,
        swallow: 0,
        recycle: None,
        resent: true,
        scan: batch.scan,
    })
}
