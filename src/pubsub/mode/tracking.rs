//! Client-side caching in subscriber mode: `CLIENT TRACKING` and its companions, the relays
//! that carry a `REDIRECT`, and what the client is told when its cache can no longer be vouched
//! for.

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::super::redirect::{invalidation_frame, Relay, Tracking};
use super::{Exit, Subscriber};
use crate::backend::{BackendError, Protocol};
use crate::client::registry::{ClientEntry, Invalidation};
use crate::resp::{int_reply, CommandTable, Request};

/// `invalidate` with a null key list: the client drops everything it caches (Redis sends it on
/// `FLUSHALL`; the proxy, when the server the cache came from is left behind).
const INVALIDATE_ALL: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// Invalidations redirected to this client (`CLIENT TRACKING ... REDIRECT` of others) come to
/// its session while it is in subscriber mode.
pub(super) struct TakesInvalidations<'e>(&'e ClientEntry);

impl<'e> TakesInvalidations<'e> {
    pub(super) fn new(entry: &'e ClientEntry, to: mpsc::Sender<Invalidation>) -> Self {
        entry.take_invalidations(Some(to));
        TakesInvalidations(entry)
    }
}

impl Drop for TakesInvalidations<'_> {
    fn drop(&mut self) {
        self.0.take_invalidations(None);
    }
}

impl Subscriber<'_> {
    /// `CLIENT TRACKING`/`CACHING`/`TRACKINGINFO`/`GETREDIR`: `Some` when `name` is one of them
    /// (with what [`Self::request`] returns).
    pub(super) async fn tracking_command(
        &mut self,
        name: &str,
        commands: &CommandTable,
        req: &Request,
        out: &mut BytesMut,
    ) -> Option<Option<Exit>> {
        let redirect = self
            .tracking
            .as_ref()
            .and_then(Tracking::redirect)
            .map(|t| t.id);
        match name {
            "client|tracking" => match Tracking::parse(req, &self.parts.ctx.clients) {
                Ok(t) => Some(self.forward(commands, req, Some(t), out).await),
                Err(e) => {
                    self.parts.stats.error(&e);
                    out.extend_from_slice(&e);
                    Some(None)
                }
            },
            "client|getredir" if req.argc() == 2 && redirect.is_some() => {
                out.extend_from_slice(&int_reply(
                    redirect.map_or(0, |id| i64::try_from(id).unwrap_or(i64::MAX)),
                ));
                Some(None)
            }
            "client|trackinginfo" => {
                let exit = self.forward(commands, req, None, out).await;
                if let Some(c) = &mut self.current {
                    c.shows_redirect = redirect;
                }
                Some(exit)
            }
            "client|caching" | "client|getredir" => {
                Some(self.forward(commands, req, None, out).await)
            }
            _ => None,
        }
    }

    /// Tracking ends on every link but the one to `keep`; a link left carrying and owing nothing
    /// closes (subscriptions keep theirs open, tracking on the server until then).
    pub(super) fn stop_tracking(&mut self, keep: Option<&str>) {
        for l in self.links.iter_mut().filter(|l| Some(l.addr()) != keep) {
            l.tracking = false;
            l.relay = None;
        }
        self.links.retain(|l| !l.idle());
    }

    /// What the client cached is no longer tracked: it is told to drop everything, where its
    /// invalidations go (a RESP2 client without `REDIRECT` gets none, from Redis either).
    pub(super) fn drop_cache(&mut self) {
        match self.tracking.as_ref().and_then(Tracking::redirect) {
            Some(target) => target.invalidate(None),
            None if self.parts.protocol == Protocol::Resp3 => {
                self.notices.push(Bytes::from_static(INVALIDATE_ALL));
            }
            None => {}
        }
    }

    /// Makes sure link `idx` has a live relay when `tracking` redirects (its tracking is sent
    /// again when the relay it redirected to broke).
    pub(super) async fn relay_for(
        &mut self,
        idx: usize,
        tracking: Option<&Tracking>,
    ) -> Result<(), BackendError> {
        let Some(target) = tracking.and_then(Tracking::redirect) else {
            return Ok(());
        };
        let Some(link) = self.links.get_mut(idx) else {
            return Ok(());
        };
        if link.relay.as_ref().is_some_and(|r| !r.broken()) {
            return Ok(());
        }
        if link.relay.take().is_some() && link.tracking {
            // On again below, redirecting to the new relay; off first, as Redis refuses
            // prefixes that overlap those in force.
            link.internal(b"*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$3\r\noff\r\n")
                .await?;
            link.tracking = false;
        }
        link.relay = Some(Relay::open(&link.backend, target.clone()).await?);
        Ok(())
    }

    /// An invalidation redirected to this client: passed on as Redis would (a RESP2 client gets
    /// it only while subscribed), after the confirmations being waited for.
    pub(super) fn invalidation(&mut self, keys: Invalidation, out: &mut BytesMut) {
        let keys = if self.parts.entry.lost_invalidations() {
            None
        } else {
            keys
        };
        if self.parts.protocol == Protocol::Resp2 && self.subs.total() == 0 {
            return;
        }
        let frame = invalidation_frame(&keys, self.parts.protocol);
        if self.current.as_ref().is_some_and(|c| c.confirms) {
            self.held_bytes += frame.len();
            self.held.push_back(frame);
        } else {
            out.extend_from_slice(&frame);
        }
    }

    /// With tracking on, commands going to another server than before (a failover moved the
    /// master): the client's cache may hold what the old one had, so it is told to drop all.
    pub(super) fn follow_tracking(&mut self, addr: &str) {
        if self.tracking.is_none() || self.parts.locator.cluster() {
            return;
        }
        if self.tracking_addr.as_deref().is_some_and(|a| a != addr) {
            self.drop_cache();
            self.stop_tracking(Some(addr));
        }
        self.tracking_addr = Some(addr.to_string());
    }
}
