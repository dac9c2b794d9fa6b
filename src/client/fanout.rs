//! One reply for a command sent to several servers, as both modes answer it: `SCRIPT KILL` and
//! `FUNCTION KILL` on a new connection to each server (a shared one may wait behind the very
//! script to kill), and `CONFIG SET`'s replies combined so that a refusal names its servers.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, BackendError};
use crate::resp::{error_reply, is_error_reply, status_reply, Value};

/// Sends `args` (`SCRIPT KILL`, `FUNCTION KILL`) to each of `servers` on a new connection of its
/// own, all at once; one reply for them all, as [`kill_reply`] words it.
pub async fn kill_on_each(servers: &[Arc<Backend>], args: &[Bytes]) -> Bytes {
    let calls = servers
        .iter()
        .map(|backend| async move { backend.control().await?.call(args).await });
    let replies: Vec<Bytes> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| match r {
            Ok(Value::Status(s)) => status_reply(&String::from_utf8_lossy(&s)),
            Ok(Value::Error(e)) => error_reply(&String::from_utf8_lossy(&e)),
            Ok(_) => error_reply("ERR haproxy-rs: an unexpected reply"),
            Err(e) => no_reply(Some(e)),
        })
        .collect();
    kill_reply(&replies)
}

/// `SCRIPT KILL`/`FUNCTION KILL` on every server: `+OK` if one killed its script, else an
/// `UNKILLABLE` (a script that wrote), else `NOTBUSY` (none ran), else the first error.
pub fn kill_reply(replies: &[Bytes]) -> Bytes {
    let starts = |p: &[u8]| replies.iter().find(|r| r.starts_with(p)).cloned();
    starts(b"+OK")
        .or_else(|| starts(b"-UNKILLABLE"))
        .or_else(|| starts(b"-NOTBUSY"))
        .or_else(|| replies.first().cloned())
        .unwrap_or_else(|| error_reply("ERR haproxy-rs: no server to send it to"))
}

/// What a server that gave no reply counts as among the others' replies.
pub fn no_reply(error: Option<BackendError>) -> Bytes {
    let why = error.map_or_else(|| "the connection was lost".to_string(), |e| e.to_string());
    error_reply(&format!("ERR no reply: {why}"))
}

/// `CONFIG SET`'s one reply for the servers' replies (`(address, reply)`, in the order asked):
/// `+OK` when each said so; the error when every server gave the same one (an unknown
/// parameter, a bad value: Redis's own words); else the servers that refused, with their errors.
pub fn config_set_reply(replies: &[(String, Bytes)]) -> Bytes {
    if replies.iter().all(|(_, r)| !is_error_reply(r)) {
        return status_reply("OK");
    }
    if let Some((_, first)) = replies.first() {
        if replies.iter().all(|(_, r)| r == first) {
            return first.clone();
        }
    }
    let failed: Vec<String> = replies
        .iter()
        .filter(|(_, r)| is_error_reply(r))
        .map(|(addr, r)| {
            let text = String::from_utf8_lossy(r.get(1..).unwrap_or_default());
            format!("{addr} ({})", text.trim_end())
        })
        .collect();
    error_reply(&format!("ERR CONFIG SET failed on {}", failed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(addr: &str, reply: &'static [u8]) -> (String, Bytes) {
        (addr.to_string(), Bytes::from_static(reply))
    }

    #[test]
    fn config_set_is_ok_only_when_every_server_said_so() {
        assert_eq!(
            config_set_reply(&[r("m", b"+OK\r\n"), r("r", b"+OK\r\n")]),
            status_reply("OK")
        );
        let unknown = b"-ERR Unknown option or number of arguments for CONFIG SET - 'x'\r\n";
        assert_eq!(
            config_set_reply(&[r("m", unknown), r("r", unknown)]),
            Bytes::from_static(unknown),
            "the same refusal everywhere: Redis's own words"
        );
        assert_eq!(
            config_set_reply(&[
                r("m", b"+OK\r\n"),
                r("r1", b"-ERR nope\r\n"),
                r("r2", b"+OK\r\n")
            ]),
            error_reply("ERR CONFIG SET failed on r1 (ERR nope)")
        );
    }

    #[test]
    fn a_kill_answers_ok_then_unkillable_then_notbusy() {
        let b = Bytes::from_static;
        let notbusy = b(b"-NOTBUSY No scripts in execution right now.\r\n");
        let unkillable = b(b"-UNKILLABLE Sorry the script already executed write commands\r\n");
        let lost = no_reply(None);
        assert_eq!(
            kill_reply(&[notbusy.clone(), unkillable.clone(), status_reply("OK")]),
            status_reply("OK")
        );
        assert_eq!(
            kill_reply(&[lost.clone(), notbusy.clone(), unkillable.clone()]),
            unkillable
        );
        assert_eq!(kill_reply(&[lost.clone(), notbusy.clone()]), notbusy);
        assert_eq!(kill_reply(std::slice::from_ref(&lost)), lost);
        assert!(is_error_reply(&kill_reply(&[])));
    }
}
