//! The context new sessions start with, replaced whole by a reload (`crate::reload`). A session
//! running on an older one takes the new one between requests, once nothing of its own depends on
//! the old one (see `Session::adopt_reload`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::ProxyContext;

/// The current [`ProxyContext`] and how many times it was replaced.
pub struct LiveContext {
    current: ArcSwap<ProxyContext>,
    generation: AtomicU64,
}

impl LiveContext {
    /// Starts with `ctx`, generation 0.
    pub fn new(ctx: Arc<ProxyContext>) -> Arc<LiveContext> {
        Arc::new(LiveContext {
            current: ArcSwap::new(ctx),
            generation: AtomicU64::new(0),
        })
    }

    /// The context now, with its generation.
    pub fn load(&self) -> (Arc<ProxyContext>, u64) {
        // The generation is read first: a replacement racing with this load is seen as a newer
        // generation on the next call, never missed.
        let generation = self.generation.load(Ordering::Acquire);
        (self.current.load_full(), generation)
    }

    /// The number of replacements so far: a session compares it with the one it runs on, which
    /// costs one atomic load per turn.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces the context.
    pub fn store(&self, ctx: Arc<ProxyContext>) {
        self.current.store(ctx);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for LiveContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveContext")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}
