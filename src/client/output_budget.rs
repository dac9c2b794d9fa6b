//! `max_output_bytes_total`: the reply bytes waiting for all clients together (Redis 7's
//! `maxmemory-clients`, for output buffers). Past it, the clients with the largest output
//! buffers are told to close, largest first, until the total is back under the limit; small
//! clients keep working.
//!
//! Design, and why it is this simple:
//! - One [`OutputBudget`] per proxy (the limit is on the process's memory, so it spans the
//!   session threads): an atomic total, and a registry behind a `std::sync::Mutex` that is
//!   never held across `.await` (it guards a few vector operations).
//! - Each session owns an [`OutputShare`]. It counts its buffer in [`GRANULE`] steps, rounded
//!   down: a client whose replies go out as they come (nearly every client, nearly always)
//!   never touches the shared total at all, and one that piles up replies touches it once per
//!   16 KiB. The total undercounts by less than one granule per client.
//! - Only clients holding at least one granule are in the registry (registered and left when
//!   they cross that threshold): they are the only candidates, so a small client is never
//!   disconnected. The lock is taken on those crossings, at a client's end, and when the
//!   total is over the limit: never on the per-command path.
//! - The session that pushes the total over the limit picks whom to close, under the lock:
//!   each chosen client's [`CancellationToken`] is cancelled (its session's `select!` has an
//!   arm on it, so a client that never reads is woken to close) and its bytes are counted as
//!   already freed (`evicting`) until it has closed, so a second pass, from another thread,
//!   does not close more clients for the same bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// A client's output counts in steps of this many bytes (rounded down).
pub const GRANULE: usize = 16 << 10;

/// The limit and what counts against it, for all sessions of the proxy.
#[derive(Debug)]
pub struct OutputBudget {
    limit: usize,
    /// Bytes every share accounts for now (multiples of [`GRANULE`]).
    total: AtomicUsize,
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// The clients holding at least one granule: the candidates.
    clients: Vec<Arc<ShareState>>,
    /// Bytes of clients told to close that have not closed yet.
    evicting: usize,
}

/// What the registry knows of one client.
#[derive(Debug, Default)]
struct ShareState {
    /// The bytes the client accounts for now.
    bytes: AtomicUsize,
    /// Cancelled when the client is to be disconnected.
    evict: CancellationToken,
    /// The bytes counted in `evicting` for it (set under the registry's lock).
    evicting: AtomicUsize,
}

// The atomics are `Relaxed`: the total is a statistic compared with a limit, and the registry's
// decisions are made under its lock; a reading a moment old only shifts one decision by a
// granule.

impl OutputBudget {
    /// A budget of `limit` bytes (`None` for 0: no limit, nothing is counted).
    pub fn new(limit: usize) -> Option<Arc<OutputBudget>> {
        (limit > 0).then(|| {
            Arc::new(OutputBudget {
                limit,
                total: AtomicUsize::new(0),
                registry: Mutex::new(Registry::default()),
            })
        })
    }

    /// The bytes counted now, all clients together.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The guarded sections cannot leave the registry half-changed: poisoning is ignored.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The total is over the limit: tells the largest clients to close until what they hold
    /// brings it back under.
    fn enforce(&self) {
        let mut reg = self.lock();
        let counted = self.total().saturating_sub(reg.evicting);
        let Some(over) = counted.checked_sub(self.limit).filter(|&o| o > 0) else {
            return;
        };
        let sizes: Vec<usize> = reg
            .clients
            .iter()
            .map(|c| c.bytes.load(Ordering::Relaxed))
            .collect();
        let mut chosen = choose(&sizes, over);
        // Removed from the highest index down, so the indexes left stay valid.
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        for i in chosen {
            if i >= reg.clients.len() {
                continue;
            }
            let client = reg.clients.swap_remove(i);
            let bytes = sizes.get(i).copied().unwrap_or(0);
            client.evicting.store(bytes, Ordering::Relaxed);
            reg.evicting += bytes;
            client.evict.cancel();
        }
        tracing::debug!(
            total = counted,
            limit = self.limit,
            "max_output_bytes_total reached: disconnecting the clients with the largest output buffers"
        );
    }
}

/// Which of the clients holding `sizes` bytes to disconnect, largest first, to free at least
/// `over` bytes (all of them if they hold less): indexes into `sizes`.
fn choose(sizes: &[usize], over: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes.get(i).copied().unwrap_or(0)));
    let mut freed = 0usize;
    let mut chosen = Vec::new();
    for i in order {
        if freed >= over {
            break;
        }
        let size = sizes.get(i).copied().unwrap_or(0);
        if size == 0 {
            break;
        }
        freed += size;
        chosen.push(i);
    }
    chosen
}

/// One session's part of the budget.
#[derive(Debug, Default)]
pub struct OutputShare {
    budget: Option<Arc<OutputBudget>>,
    state: Arc<ShareState>,
    /// What this share adds to the total now (what `state.bytes` says).
    accounted: usize,
    registered: bool,
}

impl OutputShare {
    /// A share of `budget` (none: nothing is counted, and the client is never told to close).
    pub fn new(budget: Option<Arc<OutputBudget>>) -> OutputShare {
        OutputShare {
            budget,
            state: Arc::default(),
            accounted: 0,
            registered: false,
        }
    }

    /// The client now has `bytes` of replies waiting. True when it is to close (it has been
    /// chosen, now or before, to bring the total under the limit).
    pub fn set(&mut self, bytes: usize) -> bool {
        let now = bytes - bytes % GRANULE;
        let Some(budget) = self.budget.as_deref() else {
            return false;
        };
        if now == self.accounted {
            return false;
        }
        let grew = now > self.accounted;
        let total = if grew {
            let add = now - self.accounted;
            budget.total.fetch_add(add, Ordering::Relaxed) + add
        } else {
            budget
                .total
                .fetch_sub(self.accounted - now, Ordering::Relaxed)
        };
        self.accounted = now;
        self.state.bytes.store(now, Ordering::Relaxed);
        let join = now > 0;
        if join != self.registered {
            register(budget, &self.state, join);
            self.registered = join;
        }
        if grew && total > budget.limit {
            budget.enforce();
        }
        self.evicted()
    }

    /// Whether the client has been told to close.
    pub fn evicted(&self) -> bool {
        self.state.evict.is_cancelled()
    }

    /// Resolves when the client is told to close (never without a budget).
    pub async fn closing(&self) {
        if self.budget.is_some() {
            self.state.evict.cancelled().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Enters `state` into the registry of `budget`, or takes it out.
fn register(budget: &OutputBudget, state: &Arc<ShareState>, join: bool) {
    let mut reg = budget.lock();
    if join {
        // Cancelled under this lock only: a client chosen already never comes back.
        if !state.evict.is_cancelled() {
            reg.clients.push(state.clone());
        }
    } else {
        reg.clients.retain(|c| !Arc::ptr_eq(c, state));
    }
}

impl Drop for OutputShare {
    fn drop(&mut self) {
        let Some(budget) = self.budget.take() else {
            return;
        };
        budget.total.fetch_sub(self.accounted, Ordering::Relaxed);
        let evicted = self.evicted();
        if self.registered || evicted {
            let mut reg = budget.lock();
            reg.clients.retain(|c| !Arc::ptr_eq(c, &self.state));
            if evicted {
                let bytes = self.state.evicting.load(Ordering::Relaxed);
                reg.evicting = reg.evicting.saturating_sub(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_clients_are_chosen_until_enough_is_freed() {
        assert_eq!(choose(&[10, 50, 20, 5], 60), vec![1, 2]);
        assert_eq!(choose(&[10, 50, 20, 5], 50), vec![1]);
        assert_eq!(choose(&[10, 50, 20, 5], 1), vec![1]);
        assert_eq!(choose(&[10, 50, 20, 5], 0), Vec::<usize>::new());
        assert_eq!(
            choose(&[3, 0, 4], 100),
            vec![2, 0],
            "all that hold something"
        );
        assert_eq!(choose(&[], 100), Vec::<usize>::new());
    }

    #[test]
    fn clients_over_the_total_are_told_to_close_largest_first_and_small_ones_never() {
        let budget = OutputBudget::new(10 * GRANULE);
        let mut small = OutputShare::new(budget.clone());
        let mut big = OutputShare::new(budget.clone());
        let mut bigger = OutputShare::new(budget.clone());
        assert!(!small.set(GRANULE - 1), "under a granule: not even counted");
        assert!(!big.set(4 * GRANULE));
        assert!(!bigger.set(6 * GRANULE), "at the limit");
        let b = budget.as_ref().unwrap();
        assert_eq!(b.total(), 10 * GRANULE);
        // One more granule: the largest client goes, and only it.
        assert!(!big.set(5 * GRANULE), "big is not the largest");
        assert!(bigger.evicted() && !big.evicted() && !small.evicted());
        // Its bytes count as freed until it closes: growing again closes nobody else.
        assert!(!big.set(5 * GRANULE + 100));
        assert!(!big.evicted());
        drop(bigger);
        assert_eq!(b.total(), 5 * GRANULE);
        assert_eq!(b.lock().evicting, 0);
        // Draining leaves the registry; the total follows the buffers down.
        assert!(!big.set(0));
        assert_eq!(b.total(), 0);
        assert!(b.lock().clients.is_empty());
    }

    #[test]
    fn a_client_that_pushes_the_total_over_alone_closes_itself() {
        let budget = OutputBudget::new(4 * GRANULE);
        let mut a = OutputShare::new(budget.clone());
        assert!(a.set(5 * GRANULE));
        // Once chosen it never registers again, even after draining and refilling.
        a.set(0);
        a.set(2 * GRANULE);
        assert!(a.evicted());
        assert!(budget.as_ref().unwrap().lock().clients.is_empty());
        let mut off = OutputShare::new(OutputBudget::new(0));
        assert!(!off.set(usize::MAX / 2), "no budget: never");
    }
}
