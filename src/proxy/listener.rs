//! Accept loop: a shared client limit, backoff on accept errors, one session task per client.
//!
//! A client past `max_clients` is accepted, told `-ERR max number of clients reached` and closed
//! in the accept loop itself, as Redis does: one non-blocking write, no session, so a flood of
//! refused clients costs the loop a bounded amount of work each (and none waits in the kernel's
//! backlog, where it would look connected).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dispatch::Dispatcher;
use super::session::Session;
use super::workers::{Job, Workers};
use crate::backend::tune_socket;
use crate::client::live::LiveContext;
use crate::cluster::ClusterState;
use crate::router::Endpoint;
use crate::stats::ListenerStats;
use crate::tls::{ServerTls, Stream};

/// Session ids, process-wide, from 1 as Redis's (0 is no client to `CLIENT KILL ID`); they also
/// spread sessions over backend connection slots.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What a client past `max_clients` reads before the close (Redis's own words).
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Everything one accept loop needs.
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// Main or read-only.
    pub endpoint: Endpoint,
    /// Shared state, replaced by reloads.
    pub live: Arc<LiveContext>,
    /// Cluster mode: sessions route by slot over this instead of the routing table.
    pub cluster: Option<Arc<ClusterState>>,
    /// This listener's counters.
    pub stats: Arc<ListenerStats>,
    /// Client slots shared by all listeners (`max_clients`).
    pub clients: Arc<Semaphore>,
    /// The session threads that serve accepted clients.
    pub workers: Arc<Workers>,
    /// TLS on this listener (`[tls]`); the handshake runs in the session thread.
    pub tls: Option<Arc<ServerTls>>,
}

impl Listener {
    /// A client slot for the client just accepted; without one (`max_clients` connected) the
    /// client gets Redis's error and is closed when `stream` drops.
    fn admit(&self, stream: &TcpStream) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.clients.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.stats.rejected();
        tracing::debug!("client refused: max_clients reached");
        // Best effort, as Redis: one write that fits any socket buffer. A TLS client has not
        // done its handshake, so it gets nothing but the close (Redis does the same).
        if self.tls.is_none() {
            let _ = stream.try_write(MAX_CLIENTS_REACHED);
        }
        None
    }

    /// Accepts until `shutdown`; sessions run on the session threads and finish their in-flight
    /// requests.
    pub async fn serve(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(1);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.socket.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(1);
                    a
                }
                Err(e) => {
                    // Typically EMFILE: wait for sessions to end instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Some(permit) = self.admit(&stream) else {
                continue;
            };
            tune_socket(&stream);
            // Deregistered here, registered again in the session thread's runtime.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand the connection to a session thread");
                    continue;
                }
            };
            let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
            let job = self.session_job(id, stream, peer, permit, &shutdown);
            if !self.workers.submit(id as usize, job) {
                break;
            }
        }
    }

    /// Client `id`'s session, with the mode's dispatcher, as a job for a session thread: it
    /// registers the connection there, does the TLS handshake, and runs the session.
    fn session_job(
        &self,
        id: u64,
        stream: std::net::TcpStream,
        peer: std::net::SocketAddr,
        permit: OwnedSemaphorePermit,
        shutdown: &CancellationToken,
    ) -> Job {
        let (ctx, generation) = self.live.load();
        let (endpoint, stats) = (self.endpoint, self.stats.clone());
        let dispatch = match &self.cluster {
            Some(state) => Dispatcher::Cluster(Box::new(crate::cluster::Dispatcher::new(
                ctx.clone(),
                state.clone(),
                endpoint,
                stats.clone(),
                id,
            ))),
            None => Dispatcher::Primary(Box::new(crate::primary::Dispatcher::new(
                ctx.clone(),
                endpoint,
                stats.clone(),
                id,
            ))),
        };
        let session =
            Session::new(ctx, stats.clone(), id, dispatch).following(self.live.clone(), generation);
        let token = shutdown.clone();
        let tls = self.tls.clone();
        let span = tracing::debug_span!("session", client.addr = %peer, session.id = id);
        Box::new(move |worker| {
            Box::pin(
                async move {
                    let _permit = permit;
                    let stream = match TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register the connection");
                            return;
                        }
                    };
                    let stream = match tls {
                        None => Stream::Plain(stream),
                        // Here, not in the accept loop: a slow or silent client only holds its
                        // own slot, for at most the handshake timeout.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                        },
                    };
                    stats.connection_opened();
                    session.run(stream, token, worker).await;
                    stats.connection_closed();
                }
                .instrument(span),
            )
        })
    }
}
