//! What a session knows of its client's connection, for the `CLIENT` subcommands it answers
//! itself (`SETNAME`, `GETNAME`, `ID`, `INFO`, `LIST`, `NO-EVICT`, `NO-TOUCH`).

use bytes::Bytes;

use super::acl::Security;
use super::registry::{list_filter, parse_i64, ClientEntry, Clients, Kill};
use crate::backend::Protocol;
use crate::resp::{
    bulk_reply, error_reply, int_reply, nil_reply, null_reply, status_reply, Request,
};
use crate::router::ConnCmd;

/// Redis's refusal of a client name (`CLIENT SETNAME`, `HELLO ... SETNAME`).
pub const BAD_CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Whether Redis accepts `name` as a client name: printable ASCII without spaces (or empty,
/// which removes the name).
pub fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// What the session keeps of its client's connection for the answers here (the rest of what
/// `CLIENT LIST` shows is in the client's [`ClientEntry`]).
#[derive(Debug)]
pub struct ClientState {
    /// The id `CLIENT ID` and `HELLO` report.
    pub id: u64,
    /// Set by `CLIENT SETNAME` (or `HELLO ... SETNAME`).
    pub name: Option<Bytes>,
}

impl ClientState {
    /// A new client number `id`.
    pub fn new(id: u64) -> ClientState {
        ClientState { id, name: None }
    }

    /// Answers `cmd` (`SETNAME`, `GETNAME`, `ID`, `INFO`, `LIST`, `NO-EVICT`/`NO-TOUCH`); `entry`
    /// is this client's in `clients`, up to date.
    pub fn answer(
        &mut self,
        cmd: ConnCmd,
        req: &Request,
        protocol: Protocol,
        clients: &Clients,
        entry: &ClientEntry,
    ) -> Bytes {
        match cmd {
            ConnCmd::SetName => match (req.argc(), req.arg(2)) {
                (3, Some(name)) if valid_client_name(name) => {
                    self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                    entry.state().name.clone_from(&self.name);
                    status_reply("OK")
                }
                (3, Some(_)) => error_reply(BAD_CLIENT_NAME),
                _ => arity("client|setname"),
            },
            ConnCmd::GetName if req.argc() == 2 => match &self.name {
                Some(n) => bulk_reply(n),
                None if protocol == Protocol::Resp3 => null_reply(),
                None => nil_reply(),
            },
            ConnCmd::GetName => arity("client|getname"),
            ConnCmd::Id if req.argc() == 2 => int_reply(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ConnCmd::Id => arity("client|id"),
            ConnCmd::Info if req.argc() == 2 => {
                let mut line = String::new();
                entry.line(&mut line);
                bulk_reply(line.as_bytes())
            }
            ConnCmd::Info => arity("client|info"),
            ConnCmd::List => match list_filter(req.args().skip(2)) {
                Ok(filter) => bulk_reply(clients.list(&filter).as_bytes()),
                Err(e) => error_reply(&e),
            },
            ConnCmd::Accepted => match req.arg(2).map(|a| a.to_ascii_lowercase()) {
                Some(a) if req.argc() == 3 && (a == b"on" || a == b"off") => status_reply("OK"),
                _ => error_reply("ERR syntax error"),
            },
            // The session's own (they end sessions, or change its replies): see `kill` for KILL.
            ConnCmd::Reset => status_reply("RESET"),
            ConnCmd::Kill | ConnCmd::Reply | ConnCmd::Unblock => error_reply("ERR syntax error"),
            ConnCmd::Pause => match pause_args(req) {
                Ok((all, timeout)) => {
                    let now = tokio::time::Instant::now();
                    // A timeout past any real end (Redis takes up to LLONG_MAX ms): 30 years.
                    let until = now
                        .checked_add(timeout)
                        .unwrap_or(now + std::time::Duration::from_secs(30 * 365 * 86_400));
                    clients.pause(all, until);
                    status_reply("OK")
                }
                Err(e) => e,
            },
            ConnCmd::Unpause if req.argc() == 2 => {
                clients.unpause();
                status_reply("OK")
            }
            ConnCmd::Unpause => arity("client|unpause"),
            ConnCmd::NotTracking => not_tracking(req, protocol),
        }
    }

    /// `CLIENT KILL ...` from this client: the reply, and whether this client was killed too (it
    /// is closed once the reply is out, as Redis does).
    pub fn kill(&self, req: &Request, clients: &Clients, security: &Security) -> (Bytes, bool) {
        if req.argc() < 3 {
            return (arity("client|kill"), false);
        }
        let args: Vec<&[u8]> = req.args().skip(2).collect();
        let kill = match Kill::parse(&args, |u| security.knows_user(u)) {
            Ok(k) => k,
            Err(e) => return (error_reply(&e), false),
        };
        let (killed, me) = clients.kill(&kill, self.id);
        let reply = match (kill.old_form, killed) {
            (true, 0) => error_reply("ERR No such client"),
            (true, _) => status_reply("OK"),
            (false, n) => int_reply(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        (reply, me)
    }
}

/// `CLIENT GETREDIR`/`TRACKINGINFO`/`CACHING` from a client without tracking, as Redis answers.
fn not_tracking(req: &Request, protocol: Protocol) -> Bytes {
    let sub = req.arg(1).unwrap_or_default().to_ascii_lowercase();
    match (sub.as_slice(), req.argc()) {
        (b"getredir", 2) => int_reply(-1),
        (b"trackinginfo", 2) => {
            // A map with `flags` a set in RESP3; flat in RESP2.
            let (map, set): (&[u8], &[u8]) = match protocol {
                Protocol::Resp3 => (b"%3", b"~1"),
                Protocol::Resp2 => (b"*6", b"*1"),
            };
            let reply = [
                map,
                b"\r\n$5\r\nflags\r\n",
                set,
                b"\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
            ];
            Bytes::from(reply.concat())
        }
        (b"caching", 3) => error_reply(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ),
        _ => arity(&format!("client|{}", String::from_utf8_lossy(&sub))),
    }
}

/// `CLIENT PAUSE timeout [WRITE|ALL]`: (`ALL`, how long), or Redis 7.0's error.
fn pause_args(req: &Request) -> Result<(bool, std::time::Duration), Bytes> {
    let all =
        match (req.argc(), req.arg(3)) {
            (0..=2, _) => return Err(arity("client|pause")),
            (3, _) => true,
            (4, Some(m)) if m.eq_ignore_ascii_case(b"write") => false,
            (4, Some(m)) if m.eq_ignore_ascii_case(b"all") => true,
            (4, _) => return Err(error_reply("ERR CLIENT PAUSE mode must be WRITE or ALL")),
            _ => return Err(error_reply(
                "ERR unknown subcommand or wrong number of arguments for 'pause'. Try CLIENT HELP.",
            )),
        };
    let ms = req
        .arg(2)
        .and_then(parse_i64)
        .ok_or_else(|| error_reply("ERR timeout is not an integer or out of range"))?;
    let ms = u64::try_from(ms).map_err(|_| error_reply("ERR timeout is negative"))?;
    Ok((all, std::time::Duration::from_millis(ms)))
}

/// Redis's arity error for `name` (`client|kill`).
pub fn arity(name: &str) -> Bytes {
    error_reply(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(c: &mut ClientState, cmd: ConnCmd, args: &[&str]) -> Bytes {
        let clients = Clients::new(tokio_util::sync::CancellationToken::new());
        let entry = clients.register(c.id);
        entry.state().db = 3;
        c.answer(
            cmd,
            &Request::from_args(args),
            Protocol::Resp2,
            &clients,
            &entry,
        )
    }

    #[test]
    fn names_ids_and_info() {
        let mut c = ClientState::new(42);
        assert_eq!(
            ask(&mut c, ConnCmd::GetName, &["CLIENT", "GETNAME"]),
            nil_reply()
        );
        assert_eq!(
            ask(&mut c, ConnCmd::SetName, &["CLIENT", "SETNAME", "worker-1"]),
            status_reply("OK")
        );
        assert_eq!(
            ask(&mut c, ConnCmd::GetName, &["CLIENT", "GETNAME"]),
            bulk_reply(b"worker-1")
        );
        assert!(ask(&mut c, ConnCmd::SetName, &["CLIENT", "SETNAME", "a b"])
            .starts_with(b"-ERR Client names cannot contain spaces"));
        assert_eq!(ask(&mut c, ConnCmd::Id, &["CLIENT", "ID"]), int_reply(42));
        let info = ask(&mut c, ConnCmd::Info, &["CLIENT", "INFO"]);
        let text = String::from_utf8_lossy(&info);
        assert!(text.contains("id=42 ") && text.contains(" db=3 "), "{text}");
        assert_eq!(
            ask(&mut c, ConnCmd::Accepted, &["CLIENT", "NO-EVICT", "on"]),
            status_reply("OK")
        );
        assert!(
            ask(&mut c, ConnCmd::Accepted, &["CLIENT", "NO-EVICT", "maybe"]).starts_with(b"-ERR")
        );
        assert_eq!(
            ask(&mut c, ConnCmd::SetName, &["CLIENT", "SETNAME", ""]),
            status_reply("OK")
        );
        assert_eq!(
            ask(&mut c, ConnCmd::GetName, &["CLIENT", "GETNAME"]),
            nil_reply()
        );
    }
}
