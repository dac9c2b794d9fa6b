//! The few shared connections of one backend; a client session sticks to one of them.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{run_conn, Dispatch, Protocol};
use super::{BackendError, ConnSettings};
use crate::stats::BackendStats;

/// Requests queued per connection before senders wait (backpressure towards clients).
const QUEUE_DEPTH: usize = 4096;

/// Handles to a backend's connection actors.
#[derive(Debug)]
pub struct BackendPool {
    conns: Vec<mpsc::Sender<Dispatch>>,
}

impl BackendPool {
    /// Starts `settings.connections` connection actors for `addr`, in database `db`.
    pub fn spawn(
        addr: &str,
        settings: Arc<ConnSettings>,
        stats: Arc<BackendStats>,
        token: CancellationToken,
        tracker: &TaskTracker,
        protocol: Protocol,
        db: u8,
    ) -> BackendPool {
        let addr: Arc<str> = Arc::from(addr);
        let conns = (0..settings.connections.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                tracker.spawn(run_conn(
                    addr.clone(),
                    settings.clone(),
                    protocol,
                    db,
                    rx,
                    stats.clone(),
                    token.clone(),
                ));
                tx
            })
            .collect();
        BackendPool { conns }
    }

    /// Queues a request on connection `slot % connections`. A session always uses the same slot,
    /// so its requests to one backend run in the order it sent them.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the backend has been retired (the request was not sent).
    pub async fn send(&self, slot: usize, dispatch: Dispatch) -> Result<(), BackendError> {
        let n = self.conns.len().max(1);
        match self.conns.get(slot % n) {
            Some(tx) => tx
                .send(dispatch)
                .await
                .map_err(|_| BackendError::Unavailable),
            None => Err(BackendError::Unavailable),
        }
    }
}
