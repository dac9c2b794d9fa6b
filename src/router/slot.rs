//! Redis Cluster key slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The slot of `key`, with Redis's hash-tag rule: when the key has a `{...}` with at least one byte
/// between the first `{` and the next `}`, only that part is hashed (redis-protocol's
/// `redis_keyslot`, as the design asks, rather than our own CRC table).
pub fn key_slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// Numbers tried for [`slot_tag`]; every slot has one below this (a test checks it).
const TAG_SEARCH: u32 = 1_000_000;

/// A hash tag that lands in `slot`: the smallest number `n` with `key_slot("{n}") == slot`, so
/// a key of the proxy's own (`...{n}`) can be put in any slot. The table is computed once, on
/// first use (a few hundred thousand CRC16s).
pub fn slot_tag(slot: u16) -> Option<u32> {
    static TAGS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        use std::fmt::Write;
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut digits = String::with_capacity(10);
        for n in 0..TAG_SEARCH {
            digits.clear();
            let _ = write!(digits, "{n}");
            if let Some(t) = tags.get_mut(usize::from(key_slot(digits.as_bytes()))) {
                if *t == u32::MAX {
                    *t = n;
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
        }
        tags
    });
    tags.get(usize::from(slot))
        .copied()
        .filter(|&t| t != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_spec() {
        // CRC16/XMODEM("123456789") = 0x31C3, the spec's check value.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        // redis-cli cluster keyslot 8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ -> 5458 (redis-protocol's doc).
        assert_eq!(key_slot(b"8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ"), 5458);
        assert!(key_slot(b"") < SLOTS);
    }

    #[test]
    fn every_slot_has_a_tag_that_lands_in_it() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot).unwrap_or_else(|| panic!("no tag for slot {slot}"));
            assert_eq!(
                key_slot(format!("__haproxy-rs:wait:{{{tag}}}").as_bytes()),
                slot
            );
        }
        assert_eq!(slot_tag(SLOTS), None);
    }

    #[test]
    fn hash_tags_follow_the_spec_examples() {
        // From the Redis Cluster specification, "Hash tags".
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "empty tag: whole key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert!(key_slot(b"{") < SLOTS, "a lone brace hashes the whole key");
    }
}
