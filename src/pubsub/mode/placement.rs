//! Placement: the links a subscribed client's subscriptions live on, opened, brought in line
//! with the topology, and given up.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{Subscriber, MAX_RETRY, TICK};
use crate::backend::{Backend, BackendError};
use crate::client::reply::backend_error;
use crate::pubsub::keyspace;
use crate::pubsub::link::Link;
use crate::pubsub::{Kind, Subscriptions};
use crate::router::slot::key_slot;

impl Subscriber<'_> {
    /// The link to `backend`, opened if there is none.
    pub(super) async fn link_index(
        &mut self,
        backend: &Arc<Backend>,
    ) -> Result<usize, BackendError> {
        if let Some(i) = self.links.iter().position(|l| l.addr() == backend.addr()) {
            return Ok(i);
        }
        self.next_link += 1;
        let link = Link::open(
            self.next_link,
            backend.clone(),
            self.parts.protocol,
            &self.parts.ctx.pinned,
            self.events_tx.clone(),
        )
        .await;
        match link {
            Ok(link) => {
                self.links.push(link);
                Ok(self.links.len() - 1)
            }
            Err(e) => {
                tracing::debug!(backend.addr = backend.addr(), error = %e, "subscription link failed");
                self.avoid = Some(backend.addr().to_string());
                self.parts.locator.suspect();
                Err(e)
            }
        }
    }

    /// Brings the links in line with the client's subscriptions and the topology: each
    /// subscription on the server the locator names (or where it is, while it names none);
    /// links left with nothing are closed. The servers' answers count for request `tag`.
    pub(super) async fn place(&mut self, tag: Option<u64>) {
        self.seen = self.parts.locator.generation();
        let (wanted, mut unplaced) = self.wanted();
        // Servers that need a link first: opened in the background, so that a server that
        // does not answer (connect_timeout_ms) holds up neither the client's other requests nor
        // its messages; what goes there is placed once the link is up.
        for (backend, _) in &wanted {
            if !self.links.iter().any(|l| l.addr() == backend.addr()) {
                self.open_link(backend);
                unplaced = true;
            }
        }
        let (sent, broken) = self.send_changes(&wanted, tag).await;
        if tag.is_some() && tag == self.current_tag() {
            if let Some(c) = &mut self.current {
                c.awaiting += sent;
            }
        }
        for id in broken {
            self.lost(id);
            unplaced = true;
        }
        self.links.retain(|l| !l.idle());
        self.unplaced = unplaced;
        if unplaced {
            self.retry_at = Instant::now() + self.retry_backoff;
            self.retry_backoff = (self.retry_backoff * 2).min(MAX_RETRY);
        } else {
            self.retry_backoff = TICK;
            self.avoid = None;
        }
    }

    /// Where each subscription should be now, per server; true when some have no server. Sets
    /// [`Self::home`], the link that delivers ordinary messages through patterns placed on every
    /// master.
    fn wanted(&mut self) -> (Vec<(Arc<Backend>, Subscriptions)>, bool) {
        let locator = self.parts.locator;
        let sources = locator.event_sources().filter(|s| !s.is_empty());
        let everywhere =
            |kind: Kind, name: &[u8]| sources.is_some() && keyspace::receives_events(kind, name);
        // Where the patterns are (in cluster mode channels may be on other masters), else the
        // channels.
        let holding = |kind: Kind| {
            self.links.iter().find(|l| {
                l.requested
                    .iter()
                    .any(|(k, n)| k == kind && !everywhere(k, n))
            })
        };
        let classic_now = holding(Kind::Pattern)
            .or_else(|| holding(Kind::Channel))
            .map(|l| l.addr().to_string());
        let classic = locator.classic(classic_now.as_deref(), self.avoid.as_deref());
        self.home = sources
            .as_ref()
            .and(classic.as_ref())
            .map(|b| b.addr().to_string());
        let mut wanted: Vec<(Arc<Backend>, Subscriptions)> = Vec::new();
        let mut unplaced = false;
        for (kind, name) in self.subs.iter() {
            if let Some(all) = sources.as_ref().filter(|_| everywhere(kind, name)) {
                for backend in all {
                    want(&mut wanted, backend, kind, name);
                }
                continue;
            }
            // The link it is on now, if any.
            let current = self.links.iter().find(|l| l.requested.contains(kind, name));
            let target = match kind {
                Kind::Shard => locator.shard(key_slot(name)),
                Kind::Channel => locator
                    .channel(name, current.map(|l| l.addr()))
                    .or_else(|| classic.clone()),
                Kind::Pattern => classic.clone(),
            };
            let target = target.or_else(|| current.map(|l| l.backend.clone()));
            match target {
                Some(backend) => want(&mut wanted, &backend, kind, name),
                None => unplaced = true,
            }
        }
        (wanted, unplaced)
    }

    /// Sends each link the (un)subscribes that bring it to what is `wanted` of it: how many
    /// confirmations to expect, and the links that broke meanwhile.
    async fn send_changes(
        &mut self,
        wanted: &[(Arc<Backend>, Subscriptions)],
        tag: Option<u64>,
    ) -> (usize, Vec<u64>) {
        let empty = Subscriptions::default();
        let mut broken = Vec::new();
        let mut sent = 0;
        for link in &mut self.links {
            let want = wanted
                .iter()
                .find(|(b, _)| b.addr() == link.addr())
                .map_or(&empty, |(_, s)| s);
            for kind in Kind::ALL {
                let drop: Vec<Bytes> = link
                    .requested
                    .of(kind)
                    .difference(want.of(kind))
                    .cloned()
                    .collect();
                let add: Vec<Bytes> = want
                    .of(kind)
                    .difference(link.requested.of(kind))
                    .cloned()
                    .collect();
                let n = drop.len() + add.len();
                let ok = link.change(kind, false, drop, tag).await.is_ok()
                    && link.change(kind, true, add, tag).await.is_ok();
                if !ok {
                    broken.push(link.id);
                    break;
                }
                sent += n;
            }
        }
        (sent, broken)
    }

    /// Starts opening a link to `backend` unless one is being opened already; the outcome comes
    /// back to [`Self::opened`].
    pub(super) fn open_link(&mut self, backend: &Arc<Backend>) {
        let addr = backend.addr().to_string();
        if self.opening.contains(&addr) {
            return;
        }
        self.next_link += 1;
        let (id, backend, protocol) = (self.next_link, backend.clone(), self.parts.protocol);
        let (limit, events) = (self.parts.ctx.pinned.clone(), self.events_tx.clone());
        let done = self.opened_tx.clone();
        self.opening.push(addr.clone());
        // A client gone meanwhile: the send fails and the link is dropped, closing it.
        tokio::spawn(async move {
            let link = Link::open(id, backend, protocol, &limit, events).await;
            let _ = done.send((addr, link)).await;
        });
    }

    /// A link opened in the background is up (its subscriptions are placed now), or failed (tried
    /// again after the backoff).
    pub(super) async fn opened(
        &mut self,
        addr: String,
        link: Result<Link, BackendError>,
        out: &mut BytesMut,
    ) {
        self.opening.retain(|a| *a != addr);
        match link {
            // A command opened one meanwhile: that one is kept.
            Ok(_) if self.links.iter().any(|l| l.addr() == addr) => {}
            Ok(link) => {
                self.links.push(link);
                self.place(self.current_tag()).await;
            }
            Err(e) => {
                tracing::debug!(backend.addr = %addr, error = %e, "subscription link failed");
                self.avoid = Some(addr);
                self.parts.locator.suspect();
                self.unplaced = true;
            }
        }
        self.try_complete(out);
    }

    /// A link broke: what it owed the current request is owed no more (a command's outcome is
    /// unknown), and its subscriptions are to be placed again.
    pub(super) fn lost(&mut self, id: u64) {
        let Some(i) = self.links.iter().position(|l| l.id == id) else {
            return;
        };
        let link = self.links.swap_remove(i);
        tracing::debug!(backend.addr = link.addr(), "subscription link lost");
        if link.tracking {
            // What the client cached through it is no longer tracked.
            self.drop_cache();
        }
        self.avoid = Some(link.addr().to_string());
        self.parts.locator.suspect();
        let tag = self.current_tag();
        for op in &link.ops {
            if op.tag.is_some() && op.tag == tag {
                if let Some(c) = &mut self.current {
                    c.awaiting = c.awaiting.saturating_sub(op.remaining);
                    if !op.confirms {
                        c.replies =
                            vec![backend_error(&BackendError::ConnectionLost, link.addr()).0];
                    }
                }
            }
        }
        self.unplaced = true;
        self.retry_at = Instant::now();
    }
}

/// Adds `(kind, name)` to what is wanted of `backend`.
fn want(
    wanted: &mut Vec<(Arc<Backend>, Subscriptions)>,
    backend: &Arc<Backend>,
    kind: Kind,
    name: &Bytes,
) {
    let entry = match wanted.iter().position(|(b, _)| b.addr() == backend.addr()) {
        Some(i) => wanted.get_mut(i),
        None => {
            wanted.push((backend.clone(), Subscriptions::default()));
            wanted.last_mut()
        }
    };
    if let Some((_, set)) = entry {
        set.insert(kind, name.clone());
    }
}
