//! A subscription link: one backend connection of a subscribed client's own, to one server.
//!
//! A reader task passes each frame the server sends to the client's subscriber loop, tagged
//! with the link's id; the loop writes the link's commands itself. The loop knows what the link
//! was asked ([`Link::requested`]) and which answers it still owes ([`Link::ops`]), in order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::redirect::Relay;
use super::{Kind, Subscriptions};
use crate::backend::{Backend, BackendError, Protocol};
use crate::resp::{encode_command, ReplyScanner};
use crate::tls::WriteHalf;

/// Frames handed over at once, in bytes (a batch is closed by the frame that passes it).
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What a link's reader reports: the frames of one read, or `None` once the connection has
/// ended.
pub type LinkEvent = (u64, Option<Vec<Bytes>>);

/// Answers a link owes, in the order its commands were written.
#[derive(Debug)]
pub struct Op {
    /// Confirmations still to come (a (un)subscribe), or 1 for a command's reply.
    pub remaining: usize,
    /// A (un)subscribe, answered by confirmations; else a command, answered by one reply.
    pub confirms: bool,
    /// The client request waiting for it, if any (else the proxy's own: a resubscription).
    pub tag: Option<u64>,
    /// A (un)subscribe's kind, direction and names.
    pub kind: Kind,
    pub subscribe: bool,
    pub names: Vec<Bytes>,
    /// A client command's bytes, sent again if the server redirects it (`MOVED`, `ASK`).
    pub raw: Option<Bytes>,
}

impl Op {
    /// The name the server confirms next (it confirms a command's names in their order).
    pub fn due(&self) -> Option<&Bytes> {
        let answered = self.names.len().checked_sub(self.remaining)?;
        self.names.get(answered)
    }

    /// A command's, answered by one reply.
    fn reply(tag: Option<u64>, raw: Option<Bytes>) -> Op {
        Op {
            remaining: 1,
            confirms: false,
            tag,
            kind: Kind::Channel,
            subscribe: false,
            names: Vec::new(),
            raw,
        }
    }
}

/// One backend connection carrying subscriptions.
pub struct Link {
    /// Names this link's events.
    pub id: u64,
    /// The server.
    pub backend: Arc<Backend>,
    /// What the server has been asked to be subscribed to.
    pub requested: Subscriptions,
    /// Answers still to come.
    pub ops: VecDeque<Op>,
    /// `CLIENT TRACKING on` was sent here (the client caches what it reads through this link):
    /// the link stays open while tracking is on.
    pub tracking: bool,
    /// Where the tracking here redirects to (`CLIENT TRACKING ... REDIRECT`).
    pub relay: Option<Relay>,
    wr: WriteHalf,
    reader: AbortHandle,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The read half goes with the task; the connection closes, and with it the server's
        // subscriptions.
        self.reader.abort();
        self.backend.stats.connection_closed();
    }
}

impl Link {
    /// Opens a link to `backend` speaking `protocol`; its frames go to `events`. Takes one of
    /// `limit`'s permits (`backend.max_pinned_connections`).
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when every permit is taken, or the connection's error.
    pub async fn open(
        id: u64,
        backend: Arc<Backend>,
        protocol: Protocol,
        limit: &Arc<Semaphore>,
        events: mpsc::Sender<LinkEvent>,
    ) -> Result<Link, BackendError> {
        let permit = limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| BackendError::Unavailable)?;
        let stream = backend.connect_dedicated(protocol).await?;
        let (rd, wr) = stream.into_split();
        let reader = tokio::spawn(read_frames(id, rd, events)).abort_handle();
        backend.stats.connection_opened();
        Ok(Link {
            id,
            backend,
            requested: Subscriptions::default(),
            ops: VecDeque::new(),
            tracking: false,
            relay: None,
            wr,
            reader,
            _permit: permit,
        })
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        self.backend.addr()
    }

    /// Asks the server to (un)subscribe `names` of `kind`, for request `tag`.
    ///
    /// # Errors
    /// The write failed: the link is unusable.
    pub async fn change(
        &mut self,
        kind: Kind,
        subscribe: bool,
        names: Vec<Bytes>,
        tag: Option<u64>,
    ) -> std::io::Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Bytes> = Vec::with_capacity(names.len() + 1);
        args.push(Bytes::from_static(kind.verb(subscribe).as_bytes()));
        for n in &names {
            if subscribe {
                self.requested.insert(kind, n.clone());
            } else {
                self.requested.remove(kind, n);
            }
            args.push(n.clone());
        }
        self.ops.push_back(Op {
            remaining: names.len(),
            confirms: true,
            tag,
            kind,
            subscribe,
            names,
            raw: None,
        });
        self.wr.write_all_flush(&encode_command(&args)).await
    }

    /// Sends a client's command, answered by one reply; after `ASKING` (whose `+OK` answers
    /// no request) when `asking`, for a key an `-ASK` sent here.
    ///
    /// # Errors
    /// The write failed: the link is unusable.
    pub async fn command(&mut self, raw: Bytes, tag: u64, asking: bool) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        if asking {
            self.ops.push_back(Op::reply(None, None));
            out.extend_from_slice(&encode_command(&["ASKING"]));
        }
        out.extend_from_slice(&raw);
        self.ops.push_back(Op::reply(Some(tag), Some(raw)));
        self.wr.write_all_flush(&out).await
    }

    /// Sends a command of the proxy's own (turning tracking on here); its reply is dropped.
    ///
    /// # Errors
    /// The write failed: the link is unusable.
    pub async fn internal(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.ops.push_back(Op::reply(None, None));
        self.wr.write_all_flush(raw).await
    }

    /// Writes raw bytes, expecting no particular answer (`MONITOR` mode).
    ///
    /// # Errors
    /// The write failed: the link is unusable.
    pub async fn write(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.wr.write_all_flush(raw).await
    }

    /// Whether the link carries nothing and owes nothing: it can be closed.
    pub fn idle(&self) -> bool {
        self.requested.total() == 0 && self.ops.is_empty() && !self.tracking
    }
}

async fn read_frames(id: u64, mut rd: crate::tls::ReadHalf, events: mpsc::Sender<LinkEvent>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(crate::resp::reply::MAX_REPLY_DEPTH);
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "subscription link read failed");
                break;
            }
        }
        let mut frames = Vec::new();
        let mut bytes = 0;
        loop {
            match scanner.next(&mut buf) {
                Ok(Some(frame)) => {
                    bytes += frame.len();
                    frames.push(frame);
                    // Batches stay small, so the loop can stop at the client's output limit.
                    if bytes >= MAX_BATCH_BYTES {
                        if events
                            .send((id, Some(std::mem::take(&mut frames))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        bytes = 0;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "subscription link sent an invalid reply");
                    let _ = events.send((id, None)).await;
                    return;
                }
            }
        }
        // A full channel holds the server back (its own output limit applies).
        if !frames.is_empty() && events.send((id, Some(frames))).await.is_err() {
            return;
        }
    }
    let _ = events.send((id, None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_due_is_the_first_one_not_confirmed_yet() {
        let mut op = Op {
            remaining: 2,
            confirms: true,
            tag: None,
            kind: Kind::Shard,
            subscribe: false,
            names: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            raw: None,
        };
        assert_eq!(op.due().map(|n| &n[..]), Some(&b"a"[..]));
        op.remaining = 1;
        assert_eq!(op.due().map(|n| &n[..]), Some(&b"b"[..]));
        op.remaining = 0;
        assert_eq!(op.due(), None);
        assert_eq!(Op::reply(Some(1), None).due(), None);
    }
}
