//! What a session knows of its client's connection, for the `CLIENT` subcommands it answers
//! itself (`SETNAME`, `GETNAME`, `ID`, `INFO`, `NO-EVICT`, `NO-TOUCH`).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

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

/// The client's connection as `CLIENT INFO` describes it.
#[derive(Debug)]
pub struct ClientState {
    /// The id `CLIENT ID` and `HELLO` report.
    pub id: u64,
    /// Set by `CLIENT SETNAME` (or `HELLO ... SETNAME`).
    pub name: Option<Bytes>,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The proxy's address the client connected to.
    pub local: Option<SocketAddr>,
    since: Instant,
}

impl ClientState {
    /// A new client number `id`.
    pub fn new(id: u64) -> ClientState {
        ClientState {
            id,
            name: None,
            peer: None,
            local: None,
            since: Instant::now(),
        }
    }

    /// Answers `cmd` (anything but `RESET`, which the session does); `db`, `protocol` and
    /// `multi` (inside `MULTI`) describe the session for `CLIENT INFO`.
    pub fn answer(
        &mut self,
        cmd: ConnCmd,
        req: &Request,
        db: u8,
        protocol: Protocol,
        multi: bool,
    ) -> Bytes {
        match cmd {
            ConnCmd::SetName => match (req.argc(), req.arg(2)) {
                (3, Some(name)) if valid_client_name(name) => {
                    self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
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
                bulk_reply(self.info_line(db, protocol, multi).as_bytes())
            }
            ConnCmd::Info => arity("client|info"),
            ConnCmd::Accepted => match req.arg(2).map(|a| a.to_ascii_lowercase()) {
                Some(a) if req.argc() == 3 && (a == b"on" || a == b"off") => status_reply("OK"),
                _ => error_reply("ERR syntax error"),
            },
            ConnCmd::Reset => status_reply("RESET"),
        }
    }

    /// One `CLIENT LIST` line, as Redis 7.0 writes it (memory figures are the proxy's business
    /// and read 0).
    fn info_line(&self, db: u8, protocol: Protocol, multi: bool) -> String {
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} fd=0 name={name} age={} idle=0 flags={} db={db} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={}\n",
            self.id,
            addr(self.peer),
            addr(self.local),
            self.since.elapsed().as_secs(),
            if multi { "x" } else { "N" },
            if multi { 0 } else { -1 },
            if protocol == Protocol::Resp3 { 3 } else { 2 },
        )
    }
}

fn arity(name: &str) -> Bytes {
    error_reply(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(c: &mut ClientState, cmd: ConnCmd, args: &[&str]) -> Bytes {
        c.answer(cmd, &Request::from_args(args), 3, Protocol::Resp2, false)
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
        assert!(
            text.contains("id=42 ") && text.contains("name=worker-1 ") && text.contains(" db=3 "),
            "{text}"
        );
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
