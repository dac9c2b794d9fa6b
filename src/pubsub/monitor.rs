//! `MONITOR`: the client watches the servers' command streams through connections of its own.
//!
//! In Sentinel and static mode that is the master; in cluster mode every master, their lines
//! merged as they come. The client gets one `+OK`, then every line the servers send; what it
//! sends afterwards goes to the (first) server, as on a direct connection, after the users'
//! rules. A broken connection (a failover) closes the client, as the server's own end would.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{Link, LinkEvent};
use super::mode::{ClientIo, Exit, SessionParts};
use crate::backend::Backend;
use crate::client::acl;
use crate::client::backlog::{must_write, write_or_flush};
use crate::client::reply::{backend_error, input_error, Close};
use crate::resp::{error_reply, status_reply, Request, RequestParser};

/// Frames queued from the links towards the loop.
const EVENT_QUEUE: usize = 64;

/// Serves a client that sent `MONITOR` (`first`) until it goes away: `servers` are watched.
pub async fn serve(
    parts: SessionParts<'_>,
    io: ClientIo<'_>,
    servers: Vec<Arc<Backend>>,
    first: Request,
    shutdown: &CancellationToken,
) -> Exit {
    let ClientIo {
        rd,
        wr,
        inbuf,
        out,
        parser,
        backlog,
    } = io;
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let mut links = match open_links(&parts, servers, &first, events_tx).await {
        Ok(links) => links,
        Err(reply) => {
            out.extend_from_slice(&reply);
            return Exit::Unsubscribed;
        }
    };
    // Each server answers MONITOR with +OK; the client gets the first one only.
    let mut oks_to_drop = links.len() - 1;
    let mut closing = false;
    loop {
        let unwritten = out.len();
        if !closing {
            match forward_requests(&parts, parser, inbuf, out, &mut links).await {
                Forwarded::All => {}
                Forwarded::Closing => closing = true,
                Forwarded::Close => return Exit::Close,
            }
        }
        if backlog.over_limit(parts.stats, unwritten, out.len()) {
            return Exit::Close;
        }
        if backlog.write_now(wr, out).is_err() {
            return Exit::Close;
        }
        if closing && out.is_empty() && !wr.needs_flush() {
            return Exit::Close;
        }
        // Every complete request has been sent on above: what is left in `inbuf` is an
        // incomplete one, read whole however large (client_query_buffer_limit bounds it).
        let can_read = !closing;
        let writing = must_write(wr, out);
        tokio::select! {
            r = write_or_flush(wr, out), if writing => match r {
                Ok(n) => backlog.written(out, n),
                Err(_) => return Exit::Close,
            },
            Some((id, frames)) = events.recv() => {
                let Some(frames) = frames else {
                    tracing::debug!("a MONITOR connection ended: closing its client");
                    return Exit::Close;
                };
                for f in frames {
                    if id != 0 && oks_to_drop > 0 && f.starts_with(b"+OK") {
                        oks_to_drop -= 1;
                        continue;
                    }
                    out.extend_from_slice(&f);
                }
            }
            r = rd.read_buf(inbuf), if can_read => match r {
                Ok(0) | Err(_) => return Exit::Close,
                Ok(_) => backlog.active(),
            },
            _ = backlog.evicted() => return Exit::Close,
            _ = shutdown.cancelled() => return Exit::Close,
        }
    }
}

/// What became of the client's requests while monitoring.
enum Forwarded {
    /// Every complete request was sent on (or refused).
    All,
    /// `QUIT` (or a protocol error to be answered): nothing more is read.
    Closing,
    /// The client must go now.
    Close,
}

/// Opens a link to each server and sends `MONITOR` on it; the client's error if one fails, or
/// there is no server to watch.
async fn open_links(
    parts: &SessionParts<'_>,
    servers: Vec<Arc<Backend>>,
    first: &Request,
    events_tx: mpsc::Sender<LinkEvent>,
) -> Result<Vec<Link>, Bytes> {
    let mut links = Vec::new();
    for (i, backend) in servers.into_iter().enumerate() {
        let id = i as u64;
        let addr = backend.addr().to_string();
        let link = Link::open(
            id,
            backend,
            parts.protocol,
            &parts.ctx.pinned,
            events_tx.clone(),
        )
        .await;
        let mut link = link.map_err(|e| backend_error(&e, &addr).0)?;
        if link.write(first.raw()).await.is_err() {
            return Err(error_reply(&format!(
                "ERR haproxy-rs: connection to {addr} was lost"
            )));
        }
        links.push(link);
    }
    if links.is_empty() {
        return Err(error_reply(
            "TRYAGAIN haproxy-rs: no master right now (failover in progress); not executed",
        ));
    }
    Ok(links)
}

/// Sends the client's complete requests on the first link (the monitored server answers
/// them), after the users' rules; `QUIT` is answered here.
async fn forward_requests(
    parts: &SessionParts<'_>,
    parser: &mut RequestParser,
    inbuf: &mut BytesMut,
    out: &mut BytesMut,
    links: &mut [Link],
) -> Forwarded {
    loop {
        parser.set_unauthenticated(!parts.auth.authenticated());
        let req = match parser.next(inbuf) {
            Ok(Some(r)) => r,
            Ok(None) => return Forwarded::All,
            Err(e) => {
                let (reply, close) = input_error(parts.stats, &e);
                if close == Close::Now {
                    return Forwarded::Close;
                }
                parts.stats.error(&reply);
                out.extend_from_slice(&reply);
                return if close == Close::AfterReply {
                    Forwarded::Closing
                } else {
                    Forwarded::All
                };
            }
        };
        parts.stats.command();
        let commands = parts.ctx.commands.load();
        if let Some(refused) = acl::check(&parts.ctx.security, parts.auth, &commands, &req) {
            out.extend_from_slice(&refused);
            continue;
        }
        if req.name().eq_ignore_ascii_case(b"quit") {
            out.extend_from_slice(&status_reply("OK"));
            return Forwarded::Closing;
        }
        let sent = match links.first_mut() {
            Some(l) => l.write(req.raw()).await.is_ok(),
            None => false,
        };
        if !sent {
            return Forwarded::Close;
        }
    }
}
