//! What a node's error reply asks of the proxy: follow `MOVED` or `ASK`, try again later, or
//! nothing (the error is the answer).

/// How the proxy reacts to a node's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction<'a> {
    /// A normal reply (or an error that is the command's answer): give it to the client.
    Answer,
    /// `-MOVED <slot> <host:port>`: the slot lives there now; the map is stale.
    Moved(&'a str),
    /// `-ASK <slot> <host:port>`: this key is being migrated there; send `ASKING` + the command.
    Ask(&'a str),
    /// `-TRYAGAIN`, `-CLUSTERDOWN`, `-LOADING`, `-MASTERDOWN`: the cluster is reconfiguring;
    /// the command was not executed, so it is sent again after a pause.
    Later,
}

/// Reads a reply frame (RESP2 `-...\r\n`; RESP3 blob errors are never redirections).
pub fn reaction(frame: &[u8]) -> Reaction<'_> {
    let Some(body) = frame.strip_prefix(b"-") else {
        return Reaction::Answer;
    };
    let line = body.strip_suffix(b"\r\n").unwrap_or(body);
    let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (word, rest) = line.split_at(word_end);
    match word {
        b"MOVED" | b"ASK" => {
            // " <slot> <addr>"
            let addr = rest
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|a| std::str::from_utf8(a).ok())
                .filter(|a| {
                    a.rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                });
            match (word, addr) {
                (b"MOVED", Some(a)) => Reaction::Moved(a),
                (b"ASK", Some(a)) => Reaction::Ask(a),
                _ => Reaction::Answer,
            }
        }
        b"TRYAGAIN" | b"CLUSTERDOWN" | b"LOADING" | b"MASTERDOWN" => Reaction::Later,
        _ => Reaction::Answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_and_transient_errors() {
        assert_eq!(
            reaction(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Reaction::Moved("127.0.0.1:6381")
        );
        assert_eq!(
            reaction(b"-ASK 3999 127.0.0.1:6382\r\n"),
            Reaction::Ask("127.0.0.1:6382")
        );
        assert_eq!(
            reaction(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Reaction::Later
        );
        assert_eq!(
            reaction(b"-CLUSTERDOWN The cluster is down\r\n"),
            Reaction::Later
        );
        assert_eq!(reaction(b"-ERR unknown command\r\n"), Reaction::Answer);
        assert_eq!(reaction(b"+OK\r\n"), Reaction::Answer);
        assert_eq!(reaction(b"-MOVED garbage\r\n"), Reaction::Answer);
        assert_eq!(
            reaction(b"-MOVED 1 :6381\r\n"),
            Reaction::Answer,
            "an endpoint without a host (unknown-endpoint) is not followed"
        );
        assert_eq!(reaction(b"$5\r\nMOVED\r\n"), Reaction::Answer);
    }
}
