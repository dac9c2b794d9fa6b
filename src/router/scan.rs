//! `SCAN`-family cursors in Sentinel and static mode: a cursor means something only on the server
//! that returned it (each server hashes keys with its own seed), so the proxy's cursor names that
//! server too, `server_cursor * SCAN_SERVERS + server`, and every call of an iteration goes
//! back to it, whatever its role now (after a planned failover the old master still has every key).

use bytes::Bytes;

use crate::resp::{bulk_reply, encode_command, error_reply, CommandInfo, Request};

/// Servers a cursor can name (10 bits of it).
pub const SCAN_SERVERS: u64 = 1024;

/// One call of a `SCAN`, `SSCAN`, `HSCAN` or `ZSCAN` iteration.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanCall {
    /// Cursor 0: a new iteration, on whichever server the read goes to.
    Start,
    /// The server the proxy's cursor names, and the request with that server's own cursor.
    Continue {
        /// The server's number (see [`SCAN_SERVERS`]).
        server: u64,
        /// The request as that server must see it.
        raw: Bytes,
    },
}

/// The error a call of an iteration gets once its server has been missing from the topology for
/// `failover_hold` (its cursor means nothing anywhere else).
pub fn scan_server_gone_reply(held: std::time::Duration) -> Bytes {
    error_reply(&format!(
        "TRYAGAIN haproxy-rs: the server this SCAN cursor came from has not been in the topology for {:.1}s; start the iteration again from cursor 0 (the command was not executed)",
        held.as_secs_f64()
    ))
}

/// `Some` for a `SCAN`-family request: where its cursor leads, or Redis's error for a bad one.
pub fn scan_call(info: Option<&CommandInfo>, req: &Request) -> Option<Result<ScanCall, Bytes>> {
    let at = match info?.name.as_str() {
        "scan" => 1,
        "sscan" | "hscan" | "zscan" => 2,
        _ => return None,
    };
    let cursor = req.arg(at)?; // arity: Redis words the error
    let Some(cursor) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Some(Err(error_reply("ERR invalid cursor")));
    };
    if cursor == 0 {
        return Some(Ok(ScanCall::Start));
    }
    let inner = (cursor / SCAN_SERVERS).to_string();
    let args: Vec<&[u8]> = req
        .args()
        .enumerate()
        .map(|(i, a)| if i == at { inner.as_bytes() } else { a })
        .collect();
    Some(Ok(ScanCall::Continue {
        server: cursor % SCAN_SERVERS,
        raw: encode_command(&args),
    }))
}

/// `reply` (`[cursor, elements]` from server number `server`) with the proxy's cursor; other
/// replies (errors) as they are.
pub fn tag_reply(reply: &Bytes, server: u64) -> Bytes {
    let Some((cursor, rest)) = split_cursor(reply) else {
        return reply.clone();
    };
    let tagged = if cursor == 0 {
        0
    } else {
        match tagged_cursor(cursor, server, SCAN_SERVERS) {
            Ok(c) => c,
            Err(reply) => return reply,
        }
    };
    let cursor = bulk_reply(tagged.to_string().as_bytes());
    let mut out = Vec::with_capacity(4 + cursor.len() + rest.len());
    out.extend_from_slice(b"*2\r\n");
    out.extend_from_slice(&cursor);
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// The proxy's cursor for server number `server` of `servers` at that server's `cursor`, or the
/// error for a cursor too large to carry the number (shared with cluster mode's masters).
pub fn tagged_cursor(cursor: u64, server: u64, servers: u64) -> Result<u64, Bytes> {
    cursor
        .checked_mul(servers)
        .and_then(|c| c.checked_add(server))
        .ok_or_else(|| {
            error_reply("ERR haproxy-rs: the server's SCAN cursor is too large to forward")
        })
}

/// The cursor of a `*2\r\n$<n>\r\n<cursor>\r\n...` reply and what follows it.
fn split_cursor(reply: &[u8]) -> Option<(u64, &[u8])> {
    let rest = reply.strip_prefix(b"*2\r\n$")?;
    let len_end = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(rest.get(..len_end)?)
        .ok()?
        .parse()
        .ok()?;
    let body = rest.get(len_end + 2..)?;
    let cursor = std::str::from_utf8(body.get(..len)?).ok()?.parse().ok()?;
    Some((cursor, body.get(len + 2..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::CommandTable;

    fn call(args: &[&str]) -> Option<Result<ScanCall, Bytes>> {
        let req = Request::from_args(args);
        scan_call(CommandTable::builtin().lookup(&req), &req)
    }

    #[test]
    fn the_proxys_cursor_names_the_server_and_carries_its_cursor() {
        assert_eq!(
            call(&["SCAN", "0", "COUNT", "10"]),
            Some(Ok(ScanCall::Start))
        );
        let c = (17 * SCAN_SERVERS + 3).to_string();
        assert_eq!(
            call(&["SSCAN", "set", &c, "MATCH", "a*"]),
            Some(Ok(ScanCall::Continue {
                server: 3,
                raw: encode_command(&["SSCAN", "set", "17", "MATCH", "a*"]),
            }))
        );
        assert_eq!(call(&["GET", "k"]), None);
        assert_eq!(
            call(&["HSCAN", "h", "x"]),
            Some(Err(error_reply("ERR invalid cursor")))
        );
    }

    #[test]
    fn a_reply_cursor_is_tagged_with_its_server_and_the_end_stays_zero() {
        let reply = Bytes::from_static(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n");
        let tagged = tag_reply(&reply, 5);
        let want = format!("*2\r\n$5\r\n{}\r\n*1\r\n$1\r\na\r\n", 17 * SCAN_SERVERS + 5);
        assert_eq!(tagged, Bytes::from(want));
        let end = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n");
        assert_eq!(tag_reply(&end, 5), end);
        let err = Bytes::from_static(b"-WRONGTYPE x\r\n");
        assert_eq!(tag_reply(&err, 5), err);
        let huge = format!("*2\r\n$20\r\n{}\r\n*0\r\n", u64::MAX);
        assert!(tag_reply(&Bytes::from(huge), 1).starts_with(b"-ERR"));
    }
}
