//! In-memory connections for unit tests: a [`MemoryListener`] registered under an address gets
//! every connection [`super::connect_stream`] opens to it, as one end of a
//! `tokio::io::duplex` pipe, so the backend code above the stream (handshake, pipelining,
//! pinned connections, health checks) runs unchanged against a scripted server
//! (`crate::testkit`).
//!
//! A process-wide registry rather than a connector passed down: the in-memory stream exists only
//! under `cfg(test)`, so a connector in the proxy's own build could open nothing but TCP, and
//! the registry compiles out of it whole. Tests run in parallel, so every listener takes an
//! address of its own ([`MemoryListener::bind`] picks one).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::tls::Stream;

/// The host every in-memory address has: such an address never goes to TCP (nor to DNS), so a
/// test whose server is gone sees a refusal, not a stray connection to a real port.
pub const HOST: &str = "fake";

/// Bytes a pipe buffers each way before the writer waits (a socket's buffers, roughly).
const PIPE_BYTES: usize = 64 * 1024;

static LISTENERS: LazyLock<Mutex<HashMap<String, mpsc::UnboundedSender<DuplexStream>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The accepting side of an in-memory address; dropping it unregisters the address (connects
/// to it are refused from then on).
#[derive(Debug)]
pub struct MemoryListener {
    addr: String,
    rx: mpsc::UnboundedReceiver<DuplexStream>,
}

impl MemoryListener {
    /// Registers a new address, `fake-<n>:6379`, unique in the process.
    pub fn bind() -> MemoryListener {
        let addr = format!("{HOST}-{}:6379", NEXT.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        lock().insert(addr.clone(), tx);
        MemoryListener { addr, rx }
    }

    /// The address connections reach it by.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server end of the next connection; `None` once unregistered.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.rx.recv().await
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        lock().remove(&self.addr);
    }
}

/// A connection to `addr` if it is an in-memory address (`None`: a real one, for TCP).
pub(crate) fn connect(addr: &str) -> Option<io::Result<Stream>> {
    if !addr
        .strip_prefix(HOST)
        .is_some_and(|rest| rest.starts_with('-'))
    {
        return None;
    }
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "no in-memory listener");
    let listeners = lock();
    let Some(tx) = listeners.get(addr) else {
        return Some(Err(refused()));
    };
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    Some(match tx.send(server) {
        Ok(()) => Ok(Stream::Memory(client)),
        Err(_) => Err(refused()),
    })
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, mpsc::UnboundedSender<DuplexStream>>> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner())
}

mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::backend::connect_stream;

    #[tokio::test]
    async fn connect_stream_reaches_a_memory_listener_until_it_is_dropped() {
        let mut listener = MemoryListener::bind();
        let addr = listener.addr().to_string();
        let timeout = std::time::Duration::from_secs(1);
        let mut client = connect_stream(&addr, None, timeout).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        client.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0; 6];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"PING\r\n");
        assert!(client.peer_addr().is_err(), "no socket behind it");
        drop(listener);
        assert!(connect_stream(&addr, None, timeout).await.is_err());
        // Another in-memory address that nobody listens on is refused, never tried over TCP.
        assert!(connect("fake-0:6379").unwrap().is_err());
        assert!(connect("127.0.0.1:6379").is_none());
    }
}
