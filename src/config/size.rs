//! Memory sizes in the config: bytes as an integer, or a string with Redis's units (`"64mb"`,
//! `"1gb"`); a limit of the machine's memory also takes a percentage (`"25%"`).

use serde::Deserialize;

/// A number of bytes: `1048576`, `"1mb"`, `"1gb"` (Redis's `memtoull` units: `k`/`m`/`g` are
/// powers of 1000, `kb`/`mb`/`gb` powers of 1024, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeText")]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize` (saturating on a 32-bit target).
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A limit on memory: a number of bytes as [`ByteSize`] (0: no limit), or a share of the
/// machine's memory, `"25%"` (of `MemTotal` in `/proc/meminfo`, or of the cgroup's
/// `memory.max` when that is lower, as in a container).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeText")]
pub enum MemoryLimit {
    /// This many bytes; 0: off.
    Bytes(u64),
    /// This percentage (1 to 100) of the machine's memory.
    Percent(u8),
}

impl MemoryLimit {
    /// The limit in bytes, given the machine's memory (`None`: unknown, then a percentage is
    /// no limit, 0).
    pub fn resolve(self, memory: Option<u64>) -> usize {
        let bytes = match self {
            MemoryLimit::Bytes(b) => b,
            MemoryLimit::Percent(p) => memory.map_or(0, |m| m.saturating_mul(u64::from(p)) / 100),
        };
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
}

/// The memory this process may use: `MemTotal`, or the cgroup v2 `memory.max` when lower.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        .saturating_mul(1024);
    // "max" (no limit) does not parse: MemTotal stands.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// What the TOML holds: an integer or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Int(u64),
    Text(String),
}

/// Redis `memtoull`: digits then an optional unit.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000 * 1000,
        "mb" => 1 << 20,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

const SIZE_FORMS: &str = "bytes as an integer, or a string like \"64mb\" or \"1gb\"";

impl TryFrom<SizeText> for ByteSize {
    type Error = String;
    fn try_from(v: SizeText) -> Result<Self, Self::Error> {
        match v {
            SizeText::Int(n) => Ok(ByteSize(n)),
            SizeText::Text(s) => parse_size(&s)
                .map(ByteSize)
                .ok_or_else(|| format!("expected {SIZE_FORMS}, got {s:?}")),
        }
    }
}

impl TryFrom<SizeText> for MemoryLimit {
    type Error = String;
    fn try_from(v: SizeText) -> Result<Self, Self::Error> {
        let bad = |s: &str| {
            format!("expected {SIZE_FORMS}, or a share of memory like \"25%\", got {s:?}")
        };
        match v {
            SizeText::Int(n) => Ok(MemoryLimit::Bytes(n)),
            SizeText::Text(s) => match s.trim().strip_suffix('%') {
                Some(p) => match p.trim().parse::<u8>() {
                    Ok(p) if (1..=100).contains(&p) => Ok(MemoryLimit::Percent(p)),
                    _ => Err(bad(&s)),
                },
                None => parse_size(&s)
                    .map(MemoryLimit::Bytes)
                    .ok_or_else(|| bad(&s)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_redis_units() {
        let parse = |s: &str| ByteSize::try_from(SizeText::Text(s.into())).map(|b| b.0);
        assert_eq!(parse("1gb"), Ok(1 << 30));
        assert_eq!(parse("64MB"), Ok(64 << 20));
        assert_eq!(parse("512kb"), Ok(512 << 10));
        assert_eq!(parse("1k"), Ok(1000));
        assert_eq!(parse("100"), Ok(100));
        assert!(parse("1 tb").is_err() && parse("mb").is_err() && parse("-1").is_err());
        assert_eq!(ByteSize::try_from(SizeText::Int(7)).map(|b| b.0), Ok(7));
    }

    #[test]
    fn memory_limits_take_bytes_or_a_share_of_memory() {
        let parse = |s: &str| MemoryLimit::try_from(SizeText::Text(s.into()));
        assert_eq!(parse("25%"), Ok(MemoryLimit::Percent(25)));
        assert_eq!(parse("2gb"), Ok(MemoryLimit::Bytes(2 << 30)));
        assert!(parse("0%").is_err() && parse("101%").is_err() && parse("x%").is_err());
        assert_eq!(MemoryLimit::Percent(25).resolve(Some(8 << 30)), 2 << 30);
        assert_eq!(
            MemoryLimit::Percent(25).resolve(None),
            0,
            "unknown memory: off"
        );
        assert_eq!(MemoryLimit::Bytes(5).resolve(None), 5);
        assert!(
            machine_memory().is_some_and(|m| m > 0),
            "Linux has /proc/meminfo"
        );
    }
}
