//! What comes from the subscription links: messages, confirmations, replies, redirections, and
//! the ticks that follow the topology.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::super::link::LinkEvent;
use super::super::redirect::show_redirect;
use super::super::{classify_frame, keyspace, Incoming, Kind};
use super::{Redirect, Subscriber, MAX_REDIRECTS};
use crate::backend::BackendError;
use crate::client::reply::backend_error;
use crate::resp::redirect::{reaction, Reaction};

/// What a frame from a link does to the current command.
#[derive(Default)]
struct Answer {
    /// How many of the replies it waits for this gives.
    answered: usize,
    /// The command's reply.
    reply: Option<Bytes>,
    /// `CLIENT TRACKING off` was confirmed.
    tracking_off: bool,
}

impl Subscriber<'_> {
    /// Frames from a link, or its end.
    pub(super) async fn event(&mut self, (id, frames): LinkEvent, out: &mut BytesMut) {
        let Some(frames) = frames else {
            self.lost(id);
            self.place(self.current_tag()).await;
            return self.try_complete(out);
        };
        for frame in frames {
            self.frame(id, frame, out);
        }
        if let Some(r) = self.redirect.take() {
            self.follow(r, out).await;
        }
    }

    /// Sends the current command again where its node redirected it (cluster mode): the client
    /// gets the answer, never the `-MOVED`/`-ASK`, as from the ordinary session.
    async fn follow(&mut self, r: Redirect, out: &mut BytesMut) {
        let Some(tag) = self.current_tag() else {
            return;
        };
        if !r.ask {
            self.parts.locator.suspect();
        }
        let Some(backend) = self.parts.locator.node(&r.addr) else {
            return;
        };
        let sent = match self.link_index(&backend).await {
            Ok(i) => match self.links.get_mut(i) {
                Some(link) => link
                    .command(r.raw, tag, r.ask)
                    .await
                    .map_err(|_| Some(link.id)),
                None => Err(None),
            },
            Err(e) => {
                if let Some(c) = &mut self.current {
                    c.awaiting = 0;
                    c.replies = vec![backend_error(&e, &r.addr).0];
                }
                Ok(())
            }
        };
        if let Err(Some(id)) = sent {
            self.lost(id);
            self.place(Some(tag)).await;
        }
        self.try_complete(out);
    }

    /// One frame from link `id`.
    fn frame(&mut self, id: u64, frame: Bytes, out: &mut BytesMut) {
        let Some(li) = self.links.iter().position(|l| l.id == id) else {
            return; // a link closed since
        };
        let answer = match classify_frame(&frame, self.parts.protocol) {
            Incoming::Message if self.copy_from_elsewhere(li, &frame) => return,
            Incoming::Message => {
                // Behind a (un)subscribe's confirmations; a command's reply comes after the
                // messages its server sent before it (a client's PUBLISH to itself: message,
                // then `:1`, as from Redis).
                if self.current.as_ref().is_some_and(|c| c.confirms) {
                    self.held_bytes += frame.len();
                    self.held.push_back(frame);
                } else {
                    out.extend_from_slice(&frame);
                }
                return;
            }
            Incoming::Confirmation {
                kind,
                subscribe,
                name,
            } => Answer {
                answered: self.confirmation(li, kind, subscribe, name),
                ..Answer::default()
            },
            Incoming::Reply => self.reply(li, frame),
        };
        if answer.tracking_off {
            // Over on the other servers too.
            self.stop_tracking(None);
        }
        if let Some(c) = &mut self.current {
            c.awaiting = c.awaiting.saturating_sub(answer.answered);
            if let Some(r) = answer.reply {
                c.replies = vec![r];
            }
        }
        self.try_complete(out);
    }

    /// Whether `frame`, a message on link `li`, is another master's copy of an ordinary message
    /// that the home link delivers too (through a pattern placed on every master).
    fn copy_from_elsewhere(&self, li: usize, frame: &[u8]) -> bool {
        let (Some(home), Some(link)) = (&self.home, self.links.get(li)) else {
            return false;
        };
        link.addr() != home && keyspace::broadcast_copy(frame)
    }

    /// A (un)subscribe confirmation on link `li`: how many of the current command's it answers.
    fn confirmation(
        &mut self,
        li: usize,
        kind: Kind,
        subscribe: bool,
        name: Option<Bytes>,
    ) -> usize {
        let current = self.current_tag();
        let Some(link) = self.links.get_mut(li) else {
            return 0;
        };
        match link.ops.front_mut() {
            // Redis confirms the names of a command in their order: the one due must match,
            // or a shard channel's unsolicited `sunsubscribe` (its slot moved) arriving
            // while the client's own `SUNSUBSCRIBE` is pending would be taken for its
            // confirmation, and the moved channel would not be placed again.
            Some(op)
                if op.confirms
                    && op.kind == kind
                    && op.subscribe == subscribe
                    && name.as_ref().is_none_or(|n| op.due() == Some(n)) =>
            {
                op.remaining = op.remaining.saturating_sub(1);
                let answered = usize::from(op.tag.is_some() && op.tag == current);
                if op.remaining == 0 {
                    link.ops.pop_front();
                }
                answered
            }
            _ => {
                // Unasked: Redis 7 unsubscribes a shard channel whose slot moved away.
                if let (false, Some(n)) = (subscribe, name) {
                    link.requested.remove(kind, &n);
                }
                self.parts.locator.suspect();
                self.unplaced = true;
                self.retry_at = Instant::now();
                0
            }
        }
    }

    /// A reply (not a confirmation) on link `li`: to a command, or an error instead of a
    /// (un)subscribe's confirmations.
    fn reply(&mut self, li: usize, frame: Bytes) -> Answer {
        let current = self.current_tag();
        let redirects = self.current.as_ref().map_or(0, |c| c.redirects);
        let Some(link) = self.links.get_mut(li) else {
            return Answer::default();
        };
        let mut answer = Answer::default();
        match link.ops.pop_front() {
            Some(op) if !op.confirms => {
                if op.tag.is_none() || op.tag != current {
                    return answer;
                }
                match (reaction(&frame), op.raw) {
                    (Reaction::Moved(addr) | Reaction::Ask(addr), Some(raw))
                        if redirects < MAX_REDIRECTS && self.parts.locator.cluster() =>
                    {
                        let ask = matches!(reaction(&frame), Reaction::Ask(_));
                        self.redirect = Some(Redirect {
                            addr: addr.to_string(),
                            ask,
                            raw,
                        });
                        if let Some(c) = &mut self.current {
                            c.redirects += 1;
                        }
                    }
                    _ => {
                        answer.answered = 1;
                        let switch = self.current.as_mut().and_then(|c| c.tracking.take());
                        if let Some(t) = switch {
                            if frame.starts_with(b"+OK") {
                                let on = t.on();
                                link.tracking = on;
                                self.tracking = on.then_some(t);
                                self.tracking_addr = on.then(|| link.addr().to_string());
                                answer.tracking_off = !on;
                            }
                            if !link.tracking {
                                link.relay = None;
                            }
                        }
                        let shown = self.current.as_ref().and_then(|c| c.shows_redirect);
                        answer.reply = Some(match shown {
                            Some(id) => show_redirect(&frame, id),
                            None => frame,
                        });
                    }
                }
            }
            Some(op) => {
                // An error instead of confirmations (`MOVED` for a shard channel on a stale
                // map, an ACL refusal): nothing of that command was subscribed.
                tracing::debug!(backend.addr = link.addr(), reply = ?frame, "subscription refused");
                if op.tag.is_some() && op.tag == current {
                    answer.answered = op.remaining;
                }
                for n in op.names {
                    if op.subscribe {
                        link.requested.remove(op.kind, &n);
                    } else {
                        link.requested.insert(op.kind, n);
                    }
                }
                self.parts.locator.suspect();
                self.unplaced = true;
                self.retry_at = Instant::now() + self.retry_backoff;
            }
            None => tracing::debug!(
                backend.addr = link.addr(),
                "unexpected reply on a subscription link"
            ),
        }
        answer
    }

    /// The link (id, server) of a RESP3 client's command unanswered for the server's
    /// `command_timeout_ms`: it is given up, as the ordinary session's connection would be, and
    /// the client told the outcome is unknown; its subscriptions are placed again.
    fn timed_out(&self) -> Option<(u64, String)> {
        let c = self
            .current
            .as_ref()
            .filter(|c| !c.confirms && c.awaiting > 0)?;
        let waited = c.since.elapsed();
        self.links
            .iter()
            .find(|l| {
                waited > l.backend.command_timeout()
                    && l.ops.iter().any(|o| !o.confirms && o.tag == Some(c.tag))
            })
            .map(|l| (l.id, l.addr().to_string()))
    }

    /// Follows the topology: places the subscriptions again when it changed, or when some have
    /// no server and it is time to try again.
    pub(super) async fn tick(&mut self, out: &mut BytesMut) {
        if let Some((id, addr)) = self.timed_out() {
            self.lost(id);
            if let Some(c) = &mut self.current {
                c.replies = vec![backend_error(&BackendError::Timeout, &addr).0];
            }
            self.place(self.current_tag()).await;
        }
        let changed = self.parts.locator.generation() != self.seen;
        if changed || (self.unplaced && Instant::now() >= self.retry_at) {
            self.place(self.current_tag()).await;
        }
        self.try_complete(out);
    }
}
