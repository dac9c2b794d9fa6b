//! `CLIENT TRACKING on REDIRECT id`: one client's invalidations delivered to another.
//!
//! The id a client names is the proxy's (`CLIENT ID` through the proxy), which no server knows.
//! So on each server a tracking client's link goes to, a [`Relay`] connection subscribes to
//! `__redis__:invalidate`, the link's tracking redirects to the relay's own id there, and what the
//! relay receives is handed to the named client's session ([`ClientEntry::invalidate`]), which
//! passes it on as Redis would ([`invalidation_frame`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::AbortHandle;

use crate::backend::{Backend, BackendError, ControlConn, Protocol};
use crate::client::registry::{ClientEntry, Clients, Invalidation};
use crate::resp::{encode_command, error_reply, Request, Value};

/// The channel Redis sends redirected invalidations on to a RESP2 client.
const CHANNEL: &[u8] = b"__redis__:invalidate";

/// A client's `CLIENT TRACKING ...`, as sent to each server with the `REDIRECT` it names there.
#[derive(Debug, Clone)]
pub struct Tracking {
    args: Vec<Bytes>,
    /// Where the `REDIRECT` id is among `args`, and the proxy client it names (kept even if it
    /// goes away: Redis's tracking then redirects nowhere).
    redirect: Option<(usize, Arc<ClientEntry>)>,
}

impl Tracking {
    /// Reads `CLIENT TRACKING on|off [options]`, checking what only the proxy can: the
    /// `REDIRECT` id names one of its clients. The options are read in order as Redis does, so
    /// the first bad one gets Redis's error; the rest is the server's to check.
    ///
    /// # Errors
    /// Redis's error reply.
    pub fn parse(req: &Request, clients: &Clients) -> Result<Tracking, Bytes> {
        let args: Vec<Bytes> = req.args().map(Bytes::copy_from_slice).collect();
        let mut redirect = None;
        let mut j = 3;
        while let Some(arg) = args.get(j) {
            let more = j + 1 < args.len();
            match arg.to_ascii_lowercase().as_slice() {
                b"redirect" if more => {
                    if redirect.is_some() {
                        return Err(error_reply(
                            "ERR A client can only redirect to a single other client",
                        ));
                    }
                    let id = args
                        .get(j + 1)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|a| a.parse::<i64>().ok())
                        .ok_or_else(|| {
                            error_reply("ERR value is not an integer or out of range")
                        })?;
                    let known = u64::try_from(id).ok().and_then(|id| clients.get(id));
                    let Some(target) = known else {
                        return Err(error_reply(
                            "ERR The client ID you want redirect to does not exist",
                        ));
                    };
                    redirect = Some((j + 1, target));
                    j += 2;
                }
                b"prefix" if more => j += 2,
                b"bcast" | b"optin" | b"optout" | b"noloop" => j += 1,
                _ => return Err(error_reply("ERR syntax error")),
            }
        }
        Ok(Tracking { args, redirect })
    }

    /// Whether it turns tracking on.
    pub fn on(&self) -> bool {
        self.args
            .get(2)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"on"))
    }

    /// The proxy client invalidations are redirected to, if any.
    pub fn redirect(&self) -> Option<&Arc<ClientEntry>> {
        self.redirect.as_ref().map(|(_, target)| target)
    }

    /// The command for a server whose relay has id `relay` there. Without a relay (`off`, which
    /// opens none), the `REDIRECT` is left out: the id it names is the proxy's, which the server
    /// would refuse.
    pub fn command(&self, relay: Option<i64>) -> Bytes {
        let Some((at, _)) = &self.redirect else {
            return encode_command(&self.args);
        };
        let relay = relay.map(|r| Bytes::from(r.to_string()));
        let args: Vec<&Bytes> = self
            .args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match &relay {
                Some(relay) if i == *at => Some(relay),
                None if i + 1 == *at || i == *at => None,
                _ => Some(a),
            })
            .collect();
        encode_command(&args)
    }
}

/// A connection subscribed to `__redis__:invalidate` on one server, for one tracking client's
/// link there: what it receives goes to the client the tracking redirects to. Closed when
/// dropped.
pub struct Relay {
    /// Its id on the server, which the link's `REDIRECT` names.
    pub server_id: i64,
    task: AbortHandle,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Opens a relay on `backend` for `target`.
    ///
    /// # Errors
    /// The connection's, or [`BackendError::Unavailable`] when the server answers `CLIENT ID`
    /// or `SUBSCRIBE` with something else.
    pub async fn open(backend: &Backend, target: Arc<ClientEntry>) -> Result<Relay, BackendError> {
        let mut conn = backend.control().await?;
        let Value::Int(server_id) = conn.call(&["CLIENT", "ID"]).await? else {
            return Err(BackendError::Unavailable);
        };
        if let Value::Error(_) = conn.call(&[b"SUBSCRIBE".as_slice(), CHANNEL]).await? {
            return Err(BackendError::Unavailable);
        }
        let task = tokio::spawn(relay(conn, target)).abort_handle();
        Ok(Relay { server_id, task })
    }

    /// Whether its connection is gone (the tracking on its server redirects nowhere now).
    pub fn broken(&self) -> bool {
        self.task.is_finished()
    }
}

/// Passes on what the relay connection receives; when it breaks, the target is told to drop
/// everything (invalidations may have been missed).
async fn relay(mut conn: ControlConn, target: Arc<ClientEntry>) {
    loop {
        match conn.read_value().await {
            Ok(Value::Array(parts)) => {
                if let [Value::Bulk(kind), Value::Bulk(channel), keys] = parts.as_slice() {
                    if kind.eq_ignore_ascii_case(b"message") && channel.as_ref() == CHANNEL {
                        target.invalidate(match keys {
                            Value::Array(keys) => Some(
                                keys.iter()
                                    .filter_map(|k| match k {
                                        Value::Bulk(k) => Some(k.clone()),
                                        _ => None,
                                    })
                                    .collect(),
                            ),
                            _ => None,
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "invalidation relay lost");
                target.invalidate(None);
                return;
            }
        }
    }
}

/// An invalidation as Redis sends it to a redirect target speaking `protocol`: an `invalidate`
/// push in RESP3, a `message` of `__redis__:invalidate` in RESP2.
pub fn invalidation_frame(keys: &Invalidation, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::new();
    match protocol {
        Protocol::Resp3 => out.put_slice(b">2\r\n$10\r\ninvalidate\r\n"),
        Protocol::Resp2 => {
            out.put_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n");
        }
    }
    match (keys, protocol) {
        (Some(keys), _) => out.put_slice(&encode_command(keys)),
        (None, Protocol::Resp3) => out.put_slice(b"_\r\n"),
        (None, Protocol::Resp2) => out.put_slice(b"$-1\r\n"),
    }
    out.freeze()
}

/// `CLIENT TRACKINGINFO`'s reply with the `redirect` the server reports replaced by `id` (the
/// proxy client's; the server's names the relay).
pub fn show_redirect(reply: &[u8], id: u64) -> Bytes {
    const FIELD: &[u8] = b"$8\r\nredirect\r\n:";
    let Some(at) = reply.windows(FIELD.len()).position(|w| w == FIELD) else {
        return Bytes::copy_from_slice(reply);
    };
    let start = at + FIELD.len();
    let Some(len) = reply
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\r'))
    else {
        return Bytes::copy_from_slice(reply);
    };
    let mut out = BytesMut::with_capacity(reply.len() + 20);
    out.put_slice(reply.get(..start).unwrap_or_default());
    out.put_slice(id.to_string().as_bytes());
    out.put_slice(reply.get(start + len..).unwrap_or_default());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackinginfo_names_the_proxy_client() {
        let resp2 = b"*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:17\r\n$8\r\nprefixes\r\n*0\r\n";
        assert_eq!(
            show_redirect(resp2, 4096).as_ref(),
            b"*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:4096\r\n$8\r\nprefixes\r\n*0\r\n"
        );
        assert_eq!(show_redirect(b"-ERR x\r\n", 3).as_ref(), b"-ERR x\r\n");
    }

    #[test]
    fn invalidations_take_the_target_protocol() {
        let keys = Some(vec![Bytes::from_static(b"k")]);
        assert_eq!(
            invalidation_frame(&keys, Protocol::Resp2).as_ref(),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            invalidation_frame(&None, Protocol::Resp3).as_ref(),
            b">2\r\n$10\r\ninvalidate\r\n_\r\n"
        );
    }
}
