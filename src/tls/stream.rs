//! The stream both legs of the proxy use: plain TCP or TLS over TCP, one enum so the plaintext
//! path costs a `match` per read or write (no boxing, no dynamic dispatch). Unit tests add a
//! third kind, an in-memory pipe (`Memory`, compiled only under `cfg(test)`: the proxy's own
//! build has exactly the two).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A connection to a client or a server.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP, the default.
    Plain(TcpStream),
    /// TLS (client or server side). Boxed once per connection: the TLS state is large, and the
    /// plaintext variant should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
    /// An in-memory pipe to a test's client or scripted server (`crate::testkit`).
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

impl Stream {
    /// The TCP socket underneath (`None` for a test's in-memory pipe).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            #[cfg(test)]
            Stream::Memory(_) => None,
        }
    }

    /// The peer's address (of the TCP connection).
    ///
    /// # Errors
    /// As `TcpStream::peer_addr`; `NotConnected` for an in-memory pipe.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().ok_or_else(no_socket)?.peer_addr()
    }

    /// The local address (of the TCP connection).
    ///
    /// # Errors
    /// As `TcpStream::local_addr`; `NotConnected` for an in-memory pipe.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().ok_or_else(no_socket)?.local_addr()
    }

    /// Splits into halves that can be read and written from concurrent branches of one `select!`.
    /// TCP splits without a lock (`TcpStream::into_split`); a TLS session is one state machine
    /// for both directions, so its halves share it behind a mutex held only inside one poll.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let shared = Shared(Arc::new(Mutex::new(s)));
                (ReadHalf::Tls(shared.clone()), WriteHalf::Tls(shared))
            }
            #[cfg(test)]
            Stream::Memory(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Memory(r), WriteHalf::Memory(w))
            }
        }
    }
}

/// What an in-memory pipe answers when asked for its socket addresses.
fn no_socket() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "an in-memory stream has no socket",
    )
}

/// A TLS stream shared by its two halves.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Box<TlsStream<TcpStream>>>>);

impl Shared {
    fn with<R>(&self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(Pin::new(&mut **guard))
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(Shared),
    /// A test's in-memory pipe.
    #[cfg(test)]
    Memory(tokio::io::ReadHalf<tokio::io::DuplexStream>),
}

impl ReadHalf {
    /// Makes the connection close with a reset instead of a FIN handshake (for a server that may
    /// be stopped); failures are ignored.
    pub fn set_linger_zero(&self) {
        let set = |s: &TcpStream| {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        };
        match self {
            ReadHalf::Plain(r) => set(r.as_ref()),
            ReadHalf::Tls(t) => t.with(|s| set(s.get_ref().0)),
            #[cfg(test)]
            ReadHalf::Memory(_) => {}
        }
    }
}

/// The writing half of a [`Stream`].
///
/// A TLS write can return having only encrypted its bytes into the session's buffer (the socket
/// would block); they reach the socket on a later write or on `flush`. So a writer that stops
/// writing must flush: after `write_all`, or while [`needs_flush`](Self::needs_flush).
#[derive(Debug)]
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(Shared),
    /// A test's in-memory pipe.
    #[cfg(test)]
    Memory(tokio::io::WriteHalf<tokio::io::DuplexStream>),
}

impl WriteHalf {
    /// `write_all`, then `flush` (a no-op for TCP).
    ///
    /// # Errors
    /// The write or flush failing.
    pub async fn write_all_flush(&mut self, buf: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.write_all(buf).await?;
        self.flush().await
    }

    /// Whether written bytes wait in the TLS session for the socket (never for plain TCP).
    pub fn needs_flush(&self) -> bool {
        match self {
            WriteHalf::Plain(_) => false,
            WriteHalf::Tls(t) => t.with(|s| s.get_ref().1.wants_write()),
            #[cfg(test)]
            WriteHalf::Memory(_) => false,
        }
    }
}

macro_rules! forward_read {
    ($ty:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => read_tls(s, cx, buf),
                    #[cfg(test)]
                    $ty::Memory(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! forward_write {
    ($ty:ident) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => write_tls(s, cx, buf),
                    #[cfg(test)]
                    $ty::Memory(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $ty::Tls(s) => write_vectored_tls(s, cx, bufs),
                    #[cfg(test)]
                    $ty::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Plain(s) => s.is_write_vectored(),
                    $ty::Tls(_) => true,
                    #[cfg(test)]
                    $ty::Memory(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => flush_tls(s, cx),
                    #[cfg(test)]
                    $ty::Memory(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => shutdown_tls(s, cx),
                    #[cfg(test)]
                    $ty::Memory(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(Stream);
forward_write!(Stream);
forward_read!(ReadHalf);
forward_write!(WriteHalf);

/// Lets the macros treat a whole TLS stream and a shared half alike.
trait TlsAccess {
    fn with<R>(&mut self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> R) -> R;
}

impl TlsAccess for Box<TlsStream<TcpStream>> {
    fn with<R>(&mut self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> R) -> R {
        f(Pin::new(&mut **self))
    }
}

impl TlsAccess for Shared {
    fn with<R>(&mut self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> R) -> R {
        Shared::with(self, f)
    }
}

/// A peer that closes without TLS's `close_notify` (redis-cli, most Redis clients) reads as an
/// ordinary end of stream, as it would over TCP: the session then still answers what it read.
/// RESP frames carry their own lengths, so a truncated one is seen as such by the parser.
fn read_tls(
    s: &mut impl TlsAccess,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    match s.with(|t| t.poll_read(cx, buf)) {
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
        other => other,
    }
}

fn write_tls(s: &mut impl TlsAccess, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    s.with(|t| t.poll_write(cx, buf))
}

fn write_vectored_tls(
    s: &mut impl TlsAccess,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    s.with(|t| t.poll_write_vectored(cx, bufs))
}

fn flush_tls(s: &mut impl TlsAccess, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    s.with(|t| t.poll_flush(cx))
}

fn shutdown_tls(s: &mut impl TlsAccess, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    s.with(|t| t.poll_shutdown(cx))
}
