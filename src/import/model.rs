//! The proxies of an HAProxy file (frontends, backends, listens) with the defaults in force for
//! each, their settings looked up as HAProxy looks them up, and their server lines.

use super::parse::{Line, Section, SectionKind};

/// A frontend, backend or listen section and the defaults section it inherits from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Proxy<'a> {
    /// Its section.
    pub section: &'a Section,
    /// The defaults in force: the one it names (`from NAME`), else the last one above it.
    pub defaults: Option<&'a Section>,
}

/// Every frontend, backend and listen section, in file order.
pub(super) fn proxies(sections: &[Section]) -> Vec<Proxy<'_>> {
    let mut out = Vec::new();
    let mut last_defaults: Option<&Section> = None;
    for s in sections {
        match s.kind {
            SectionKind::Defaults => last_defaults = Some(s),
            SectionKind::Frontend | SectionKind::Backend | SectionKind::Listen => {
                let named = (s.header.word(2) == "from").then(|| s.header.word(3));
                let defaults = match named {
                    Some(name) => sections.iter().find(|d| {
                        d.kind == SectionKind::Defaults && d.name.as_deref() == Some(name)
                    }),
                    None => last_defaults,
                };
                out.push(Proxy {
                    section: s,
                    defaults,
                });
            }
            _ => {}
        }
    }
    out
}

/// Whether `line`'s first words are `keyword`.
pub(super) fn starts(line: &Line, keyword: &[&str]) -> bool {
    keyword.len() <= line.words.len()
        && keyword
            .iter()
            .zip(&line.words)
            .all(|(k, w)| w.text.eq_ignore_ascii_case(k))
}

impl<'a> Proxy<'a> {
    /// The section's name.
    pub fn name(&self) -> &'a str {
        self.section.name.as_deref().unwrap_or("")
    }

    /// A frontend or a listen.
    pub fn is_frontend(&self) -> bool {
        matches!(
            self.section.kind,
            SectionKind::Frontend | SectionKind::Listen
        )
    }

    /// A backend or a listen.
    pub fn is_backend(&self) -> bool {
        matches!(
            self.section.kind,
            SectionKind::Backend | SectionKind::Listen
        )
    }

    /// Its own lines that start with `keyword`.
    pub fn own(&self, keyword: &[&str]) -> Vec<&'a Line> {
        self.section
            .body
            .iter()
            .filter(|l| starts(l, keyword))
            .collect()
    }

    /// The line that sets `keyword` for this proxy: its own last one, else the defaults' last.
    pub fn setting(&self, keyword: &[&str]) -> Option<&'a Line> {
        let last = |s: &'a Section| s.body.iter().rev().find(|l| starts(l, keyword));
        last(self.section).or_else(|| self.defaults.and_then(last))
    }

    /// `mode tcp` or `mode http` (HAProxy's default is tcp).
    pub fn is_http(&self) -> bool {
        self.setting(&["mode"])
            .is_some_and(|l| l.word(1).eq_ignore_ascii_case("http"))
    }
}

/// A `server` line with its address split.
#[derive(Debug, Clone)]
pub(super) struct Server<'a> {
    /// The line.
    pub line: &'a Line,
    /// `host:port`, or why the address cannot be used.
    pub addr: Result<String, String>,
}

/// The server lines of a backend.
pub(super) fn servers<'a>(backend: &Proxy<'a>) -> Vec<Server<'a>> {
    backend
        .own(&["server"])
        .into_iter()
        .map(|line| Server {
            line,
            addr: server_addr(line.words.get(2).map(|w| (w.text.as_str(), w.env))),
        })
        .collect()
}

/// A server address as haproxy-rs takes it, `host:port`.
fn server_addr(word: Option<(&str, bool)>) -> Result<String, String> {
    let Some((text, env)) = word else {
        return Err("no address".into());
    };
    if env {
        return Err(format!(
            "the address {text} is an environment variable: write the server's address"
        ));
    }
    let text = text
        .strip_prefix("ipv4@")
        .or_else(|| text.strip_prefix("ipv6@"))
        .unwrap_or(text);
    if text.contains('@') || text.starts_with('/') {
        return Err(format!("{text} is not a TCP address"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text} has no port (HAProxy would use the client's destination port): add it"
        ));
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        format!("{text} has a port haproxy-rs cannot use (a single port is needed)")
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "*" {
        return Err(format!("{text} has no host"));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// A `bind` address as haproxy-rs listens on it, or why it cannot be.
pub(super) fn bind_addr(word: &str, env: bool) -> Result<String, String> {
    if env {
        return Err("the address is an environment variable: write it out".into());
    }
    let (v6, text) = match word.split_once('@') {
        Some(("ipv4", rest)) => (false, rest),
        Some(("ipv6", rest)) => (true, rest),
        Some((family, _)) => return Err(format!("`{family}@` sockets are not supported")),
        None if word.starts_with('/') => return Err("Unix sockets are not supported".into()),
        None => (false, word),
    };
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("no port".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?}: one port is needed (no ranges)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match host {
        "" | "*" if v6 => format!("[::]:{port}"),
        "" | "*" => format!("0.0.0.0:{port}"),
        h if h.contains(':') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    };
    crate::config::parse_listen_addr(&addr)?;
    Ok(addr)
}

/// HAProxy's time format (`10s`, `1m`, `500`: ms by default) in milliseconds.
pub(super) fn millis(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "us" => n.div_ceil(1000),
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_become_listen_addresses() {
        assert_eq!(bind_addr("*:6379", false).unwrap(), "0.0.0.0:6379");
        assert_eq!(bind_addr(":6380", false).unwrap(), "0.0.0.0:6380");
        assert_eq!(bind_addr("10.0.0.1:6379", false).unwrap(), "10.0.0.1:6379");
        assert_eq!(bind_addr(":::6379", false).unwrap(), "[::]:6379");
        assert_eq!(bind_addr("ipv6@:6379", false).unwrap(), "[::]:6379");
        assert_eq!(bind_addr("[::1]:6379", false).unwrap(), "[::1]:6379");
        assert!(bind_addr("unix@/run/r.sock", false).is_err());
        assert!(bind_addr("/run/r.sock", false).is_err());
        assert!(bind_addr(":6379-6380", false).is_err());
        assert!(bind_addr("${ADDR}:6379", true).is_err());
        assert!(bind_addr("redis.example:6379", false).is_err());
    }

    #[test]
    fn server_addresses_need_a_host_and_a_port() {
        let a = |s: &str| server_addr(Some((s, false)));
        assert_eq!(a("10.0.0.1:6379").unwrap(), "10.0.0.1:6379");
        assert_eq!(a("redis-0.redis:6379").unwrap(), "redis-0.redis:6379");
        assert_eq!(a("ipv6@::1:6379").unwrap(), "[::1]:6379");
        assert!(a("10.0.0.1").unwrap_err().contains("no port"));
        assert!(a("10.0.0.1:0").is_err());
        assert!(server_addr(Some(("${R}:6379", true))).is_err());
        assert!(server_addr(None).is_err());
    }

    #[test]
    fn times_read_as_haproxy_reads_them() {
        assert_eq!(millis("4s"), Some(4000));
        assert_eq!(millis("500"), Some(500));
        assert_eq!(millis("250ms"), Some(250));
        assert_eq!(millis("1m"), Some(60_000));
        assert_eq!(millis("2d"), Some(172_800_000));
        assert_eq!(millis("1500us"), Some(2));
        assert_eq!(millis("0"), Some(0));
        assert_eq!(millis("10x"), None);
        assert_eq!(millis("s"), None);
    }
}
