//! Zero-downtime upgrade on one host: the running proxy hands its listening sockets to a new
//! process over a Unix socket (`SCM_RIGHTS`, as HAProxy's `-x`), and drains once the new one
//! serves on them.
//!
//! Why hand the sockets over rather than bind a second one with `SO_REUSEPORT`: with two sockets
//! the kernel spreads new connections over both queues, and the connections waiting in the old
//! one's queue when it closes are reset. One socket shared by both processes has one queue: what
//! the old process does not accept any more, the new one does, and nobody is refused.
//!
//! The exchange, one line each way (the new process asks, the old answers):
//! 1. new: `takeover 1`; old: `listeners <role> ...` with one socket per role attached (roles:
//!    `main`, `read`, `stats`, in the order of the attached sockets);
//! 2. new (serving on them now): `stop`; old: stops accepting, begins its drain (as on
//!    `SIGTERM`, its stats listener closes at once: the new process serves it), answers `ok`.
//!
//! A new process that hangs up before `stop` leaves the old one as it was.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// The protocol's first line.
const HELLO: &str = "takeover 1";
/// Longest line either side sends.
const MAX_LINE: usize = 256;
/// Most sockets handed over (one per role).
const MAX_SOCKETS: usize = 3;
/// How long one step of the exchange may take (the new process starting between them has
/// [`STOP_WAIT`]).
const STEP: Duration = Duration::from_secs(5);
/// How long the old process waits for `stop` after handing its sockets over.
const STOP_WAIT: Duration = Duration::from_secs(120);

/// What can go wrong in a takeover.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The other side said something unexpected.
    #[error("unexpected answer from the running proxy: {0:?}")]
    Protocol(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> UpgradeError {
    move |source| UpgradeError::Io { what, source }
}

/// A listening socket's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `listen`.
    Main,
    /// `read_listen`.
    Read,
    /// `stats`.
    Stats,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Read => "read",
            Role::Stats => "stats",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Main, Role::Read, Role::Stats]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Listening sockets received from the running proxy, by role.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(Role, std::net::TcpListener)>,
}

impl Inherited {
    /// The socket of `role`, if it listens on `addr` (a listener whose address changed in the
    /// new config is bound anew; the old one closes with the old process).
    pub fn take(&mut self, role: Role, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let i = self
            .sockets
            .iter()
            .position(|(r, s)| *r == role && s.local_addr().ok() == Some(addr))?;
        let (_, socket) = self.sockets.swap_remove(i);
        Some(socket)
    }

    /// The roles received and not taken.
    pub fn left(&self) -> Vec<(Role, Option<SocketAddr>)> {
        self.sockets
            .iter()
            .map(|(r, s)| (*r, s.local_addr().ok()))
            .collect()
    }
}

/// The new process's side: connected to the running proxy, its sockets received.
#[derive(Debug)]
pub struct Takeover {
    stream: StdUnixStream,
}

impl Takeover {
    /// Asks the proxy serving `path` for its listening sockets.
    ///
    /// # Errors
    /// Nobody answers at `path`, or the answer is not the protocol's.
    pub fn connect(path: &Path) -> Result<(Takeover, Inherited), UpgradeError> {
        let mut stream = StdUnixStream::connect(path).map_err(io("cannot connect"))?;
        stream
            .set_read_timeout(Some(STEP))
            .map_err(io("socket options"))?;
        writeln!(stream, "{HELLO}").map_err(io("cannot ask for the listeners"))?;
        let mut text = [0u8; MAX_LINE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut text)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| io("cannot receive the listeners")(e.into()))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let line = String::from_utf8_lossy(text.get(..got.bytes).unwrap_or_default());
        let line = line.trim_end();
        let roles: Option<Vec<Role>> = line
            .strip_prefix("listeners")
            .map(|rest| rest.split_whitespace().map(Role::parse).collect())
            .and_then(|r: Option<Vec<Role>>| r);
        let Some(roles) = roles.filter(|r| r.len() == fds.len()) else {
            return Err(UpgradeError::Protocol(line.to_string()));
        };
        let mut sockets = Vec::new();
        for (role, fd) in roles.into_iter().zip(fds) {
            let socket = std::net::TcpListener::from(fd);
            socket.set_nonblocking(true).map_err(io("socket options"))?;
            sockets.push((role, socket));
        }
        Ok((Takeover { stream }, Inherited { sockets }))
    }

    /// Tells the old proxy to stop accepting and drain (this process serves on the sockets
    /// now); returns once it has stopped accepting.
    ///
    /// # Errors
    /// The old proxy did not confirm.
    pub fn finish(mut self) -> Result<(), UpgradeError> {
        writeln!(self.stream, "stop").map_err(io("cannot tell the old proxy to stop"))?;
        let mut answer = [0u8; MAX_LINE];
        let mut n = 0;
        while n < answer.len() && !answer.get(..n).unwrap_or_default().contains(&b'\n') {
            let buf = answer.get_mut(n..).unwrap_or_default();
            match self.stream.read(buf).map_err(io("no answer to stop"))? {
                0 => break,
                k => n += k,
            }
        }
        let answer = String::from_utf8_lossy(answer.get(..n).unwrap_or_default()).into_owned();
        if answer.trim_end() == "ok" {
            Ok(())
        } else {
            Err(UpgradeError::Protocol(answer))
        }
    }
}

/// The running proxy's side: its Unix socket and copies of its listening sockets.
#[derive(Debug)]
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    /// The inode of the socket file this process made (a later one's replaces it).
    inode: u64,
    sockets: Vec<(Role, OwnedFd)>,
}

impl Offer {
    /// Listens at `path` (mode 0600: whoever connects can take the proxy's ports), replacing
    /// what is there atomically: a proxy that took over from the one listening there takes its
    /// place for the next upgrade. `sockets` are the listening sockets to hand over.
    ///
    /// # Errors
    /// The socket cannot be made at `path`.
    pub fn bind(path: &Path, sockets: Vec<(Role, OwnedFd)>) -> Result<Offer, UpgradeError> {
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}", std::process::id()));
        let temp = PathBuf::from(temp);
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp).map_err(io("cannot make the upgrade socket"))?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .map_err(io("cannot make the upgrade socket private"))?;
        std::fs::rename(&temp, path).map_err(io("cannot put the upgrade socket in place"))?;
        let inode = std::fs::metadata(path)
            .map_err(io("cannot read the upgrade socket"))?
            .ino();
        Ok(Offer {
            listener,
            path: path.to_path_buf(),
            inode,
            sockets,
        })
    }

    /// Hands the sockets to the first new process that asks and then says `stop`: `stats_stop`
    /// and `drain` are cancelled then (the proxy stops accepting and drains). Ends there, or
    /// when `drain` is cancelled otherwise; the socket file is removed if it is still this one's.
    pub async fn serve(self, drain: CancellationToken, stats_stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = drain.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.hand_over(stream, &drain, &stats_stop).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "takeover abandoned; serving on"),
            }
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// One new process: true once it has taken over (this proxy drains now).
    async fn hand_over(
        &self,
        stream: UnixStream,
        drain: &CancellationToken,
        stats_stop: &CancellationToken,
    ) -> Result<bool, UpgradeError> {
        let mut stream = BufReader::new(stream);
        if read_line(&mut stream, STEP).await?.as_deref() != Some(HELLO) {
            return Ok(false);
        }
        let roles: Vec<&str> = self.sockets.iter().map(|(r, _)| r.as_str()).collect();
        let line = format!("listeners {}\n", roles.join(" "));
        let fds: Vec<_> = self.sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
        let socket = stream.get_ref();
        socket
            .async_io(Interest::WRITABLE, || {
                let mut space =
                    [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                control.push(SendAncillaryMessage::ScmRights(&fds));
                rustix::net::sendmsg(
                    socket,
                    &[IoSlice::new(line.as_bytes())],
                    &mut control,
                    SendFlags::empty(),
                )
                .map_err(std::io::Error::from)
            })
            .await
            .map_err(io("cannot send the listeners"))?;
        tracing::info!(listeners = %roles.join(" "), "upgrade: listening sockets handed to a new process");
        if read_line(&mut stream, STOP_WAIT).await?.as_deref() != Some("stop") {
            tracing::warn!("upgrade: the new process went away before taking over");
            return Ok(false);
        }
        // The new process accepts on the same sockets already: stop accepting, then drain.
        stats_stop.cancel();
        drain.cancel();
        tracing::info!("upgrade: taken over by a new process; draining");
        let _ = stream.get_mut().write_all(b"ok\n").await;
        Ok(true)
    }
}

/// One line (at most [`MAX_LINE`] bytes) within `within`; `None` at EOF.
async fn read_line(
    stream: &mut BufReader<UnixStream>,
    within: Duration,
) -> Result<Option<String>, UpgradeError> {
    let mut buf = Vec::new();
    let mut limited = tokio::io::AsyncReadExt::take(&mut *stream, MAX_LINE as u64);
    let read = limited.read_until(b'\n', &mut buf);
    match tokio::time::timeout(within, read).await {
        Err(_) => Err(UpgradeError::Protocol("no line in time".to_string())),
        Ok(Err(e)) => Err(io("cannot read")(e)),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) => Ok(Some(String::from_utf8_lossy(&buf).trim_end().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_process_gets_the_sockets_and_the_old_one_drains_only_on_stop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("u.sock");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let copy = listener.as_fd().try_clone_to_owned().expect("dup");
        let offer = Offer::bind(&path, vec![(Role::Main, copy)]).expect("offer");
        let (drain, stats_stop) = (CancellationToken::new(), CancellationToken::new());
        let served = tokio::spawn(offer.serve(drain.clone(), stats_stop.clone()));

        // A process that hangs up before `stop` changes nothing.
        let p = path.clone();
        let (first, mut inherited) = tokio::task::spawn_blocking(move || Takeover::connect(&p))
            .await
            .expect("no panic")
            .expect("takeover");
        assert!(inherited.take(Role::Read, addr).is_none());
        assert!(inherited.take(Role::Main, addr).is_some());
        drop(first);
        let p = path.clone();
        let (second, mut inherited) = tokio::task::spawn_blocking(move || Takeover::connect(&p))
            .await
            .expect("no panic")
            .expect("a second takeover");
        assert!(!drain.is_cancelled());
        // The socket received is the same one: a client queued on it is accepted through it.
        let socket = inherited.take(Role::Main, addr).expect("the main socket");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let socket = tokio::net::TcpListener::from_std(socket).expect("register");
        socket.accept().await.expect("accepted through the copy");
        drop(listener);

        tokio::task::spawn_blocking(move || second.finish())
            .await
            .expect("no panic")
            .expect("the old side confirms");
        assert!(drain.is_cancelled() && stats_stop.is_cancelled());
        served.await.expect("serve ends");
        // The socket file was the old side's own: removed.
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_newer_socket_at_the_path_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("u.sock");
        let old = Offer::bind(&path, Vec::new()).expect("old offer");
        let new = Offer::bind(&path, Vec::new()).expect("new offer, in place of the old");
        let drain = CancellationToken::new();
        drain.cancel();
        old.serve(drain.clone(), CancellationToken::new()).await;
        assert!(path.exists(), "the new one's socket stays");
        new.serve(drain, CancellationToken::new()).await;
        assert!(!path.exists());
        assert!(Takeover::connect(&path).is_err());
    }
}
