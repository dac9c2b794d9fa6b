//! Deterministic unit tests of the client session and its dispatchers: both legs in memory (the
//! client on a `tokio::io::duplex` pipe, the servers scripted behind `backend::memory`), run
//! under paused time, each in milliseconds. They cover what real servers will not do on cue:
//! `MOVED`/`ASK` for one key, replies held or delayed, a server that dies mid-batch, a pipeline
//! cut at any byte. The real-process tests in `tests/it` stay the judge of everything else.
//!
//! - [`server`]: the scripted Redis ([`FakeRedis`]).
//! - [`rig`]: the shared context and topology a session runs against ([`Rig`]).
//! - [`client`]: the test's end of the client connection ([`TestClient`]).
//! - [`start_session`]: the one place a session is started, so a change of the session's
//!   constructor changes one function.

pub mod client;
pub mod rig;
pub mod server;

mod tests;

pub use client::TestClient;
pub use rig::{Mode, Rig};
pub use server::{FakeRedis, Gate};

use tokio::io::DuplexStream;

use crate::proxy::dispatch::Dispatcher;
use crate::proxy::session::Session;
use crate::router::Endpoint;
use crate::tls::Stream;

/// Bytes the client's pipe buffers each way.
const CLIENT_PIPE_BYTES: usize = 256 * 1024;

/// Starts a session for client `id` on `endpoint` of `rig`, on the test's runtime, and returns
/// the client's end of its connection. The seam to the session's constructor: only this
/// function names it.
pub fn start_session(rig: &Rig, endpoint: Endpoint, id: u64) -> DuplexStream {
    let (client, server) = tokio::io::duplex(CLIENT_PIPE_BYTES);
    let (ctx, stats) = (rig.ctx.clone(), rig.listener.clone());
    let dispatch = match &rig.mode {
        Mode::Primary => Dispatcher::Primary(Box::new(crate::primary::Dispatcher::new(
            ctx.clone(),
            endpoint,
            stats.clone(),
            id,
        ))),
        Mode::Cluster(state) => Dispatcher::Cluster(Box::new(crate::cluster::Dispatcher::new(
            ctx.clone(),
            state.clone(),
            endpoint,
            stats.clone(),
            id,
        ))),
    };
    let session = Session::new(ctx, stats, id, dispatch);
    tokio::spawn(session.run(Stream::Memory(server), rig.shutdown.clone(), 0));
    client
}
