//! Redis Cluster key slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The slot of `key`, with Redis's hash-tag rule: when the key has a `{...}` with at least one byte
/// between the first `{` and the next `}`, only that part is hashed (redis-protocol's
/// `redis_keyslot`, as the design asks, rather than our own CRC table).
pub fn key_slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
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
