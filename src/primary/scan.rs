//! `SCAN`-family iterations in Sentinel and static mode: each call alone in its batch, a new
//! iteration routed as any read, the next calls to the server the cursor names (see
//! [`crate::router::scan`]).

use std::sync::Arc;

use bytes::Bytes;

use super::dispatcher::Dispatcher;
use super::queue::{ScanBatch, Target};
use crate::backend::{Backend, BatchReply};
use crate::resp::{error_reply, Request};
use crate::router::scan::{tag_reply, ScanCall};
use crate::router::{Route, RoutingTable};

impl Dispatcher {
    /// Sends one `SCAN`-family call (not in a transaction).
    pub(super) async fn scan(
        &mut self,
        call: Result<ScanCall, Bytes>,
        req: Request,
        table: &RoutingTable,
    ) {
        let (target, raw, scan) = match call {
            Err(reply) => return self.push_ready(reply).await,
            Ok(ScanCall::Start) => {
                let need = self.read_need(false, table);
                let target = match self.route(table, false, need) {
                    Route::To(b) => Target::Backend(b),
                    Route::Hold => Target::Hold,
                    Route::Error(reply) => return self.push_ready(reply).await,
                };
                (target, req.into_raw(), ScanBatch::Start)
            }
            Ok(ScanCall::Continue { server, raw }) => match self.scan_route(server) {
                Route::To(b) => (Target::Backend(b), raw, ScanBatch::Continue(server)),
                Route::Hold => (Target::Hold, raw, ScanBatch::Continue(server)),
                Route::Error(reply) => return self.push_ready(reply).await,
            },
        };
        self.open_alone(target, raw, scan).await;
    }

    /// Where a call of an iteration goes: its server, wherever the topology put it; held
    /// while the topology does not have it (`failover.hold_ms` at most).
    pub(super) fn scan_route(&self, server: u64) -> Route<Arc<Backend>> {
        match self.ctx.backends.by_scan_number(server) {
            Ok(Some(b)) => Route::To(b),
            Ok(None) => Route::Hold,
            Err(reply) => Route::Error(reply),
        }
    }

    /// Gives the reply's cursor the number of the server that answered.
    pub(super) fn tag_scan_reply(
        &self,
        scan: ScanBatch,
        backend: &Backend,
        reply: &mut BatchReply,
    ) {
        let number = match scan {
            ScanBatch::Continue(n) => Some(n),
            ScanBatch::Start => self.ctx.backends.scan_number(backend.addr()),
        };
        if let Some(first) = reply.frames.first_mut() {
            *first = match number {
                Some(n) => tag_reply(first, n),
                None => error_reply(
                    "ERR haproxy-rs: too many servers for SCAN cursors to name; start the iteration again",
                ),
            };
        }
    }
}
