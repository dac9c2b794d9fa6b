//! Requests held while there is no master to send them to: in order, within
//! `failover.max_held_bytes`, routed again as the table changes, `-TRYAGAIN` after `hold_ms`.

use super::dispatcher::Dispatcher;
use super::queue::{Batch, Pending, ScanBatch};
use crate::router::scan::scan_server_gone_reply;
use crate::router::{hold_expired_reply, hold_full_reply, Route, RoutingTable};

impl Dispatcher {
    /// Holds a batch (at the front of the queue when `front`), or refuses it at once when the
    /// held bytes would pass `max_held_bytes`.
    pub(super) fn hold(&mut self, batch: Batch, front: bool) {
        let max = self.ctx.max_held_bytes;
        if self.ctx.holds.try_hold(batch.raw.len(), batch.count, max) {
            if front {
                self.queue.push_front(Pending::Held(batch));
            } else {
                self.queue.push_back(Pending::Held(batch));
            }
        } else {
            self.fail_batch(batch, hold_full_reply(), front);
        }
    }

    /// Routes held requests again, in order: sent on when there is a master, answered
    /// `-TRYAGAIN` once held for `failover.hold_ms` (or at once when `expire_all`).
    pub(super) async fn release_held(&mut self, expire_all: bool) {
        if self.queue.held() == 0 {
            return;
        }
        let table = self.ctx.table.load_full();
        let entries = self.queue.take_all();
        for entry in entries {
            match entry {
                Pending::Held(batch) => self.release(batch, &table, expire_all).await,
                other => {
                    self.flush().await;
                    self.queue.push_back(other);
                }
            }
        }
        self.flush().await;
    }

    async fn release(&mut self, batch: Batch, table: &RoutingTable, expire_all: bool) {
        let (bytes, count) = (batch.raw.len(), batch.count);
        let waited = batch.since.elapsed();
        if expire_all || waited >= self.ctx.hold {
            self.ctx.holds.leave(bytes, count, false);
            tracing::debug!(
                requests = count,
                waited_ms = waited.as_millis() as u64,
                "held requests expired"
            );
            let reply = match batch.scan {
                Some(ScanBatch::Continue(_)) => scan_server_gone_reply(waited),
                _ => hold_expired_reply(waited),
            };
            return self.fail_batch(batch, reply, false);
        }
        let write = batch.writes > 0;
        let route_to = if self.queue.held() > 0 {
            Route::Hold // keep the order behind a batch that is still held
        } else if let Some(ScanBatch::Continue(server)) = batch.scan {
            self.scan_route(server)
        } else {
            let need = self.read_need(write, table);
            self.route(table, write, need)
        };
        match route_to {
            Route::To(b) => {
                self.ctx.holds.leave(bytes, count, true);
                self.dispatch(batch, b).await;
            }
            Route::Hold => {
                self.queue.push_back(Pending::Held(batch));
            }
            Route::Error(reply) => {
                self.ctx.holds.leave(bytes, count, false);
                self.fail_batch(batch, reply, false);
            }
        }
    }

    /// Gives back the budget of requests still held when the session ends.
    pub(super) fn drop_held(&mut self) {
        for entry in self.queue.take_all() {
            if let Pending::Held(b) = entry {
                self.ctx.holds.leave(b.raw.len(), b.count, false);
            }
        }
    }
}
