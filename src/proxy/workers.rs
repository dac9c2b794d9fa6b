//! Session threads: each runs a single-threaded runtime that owns its clients and its own backend
//! connections, so a request goes from client to backend and back without crossing threads.
//!
//! Why not one multi-threaded runtime: measured on two cores, a session woken on one thread by a
//! backend connection running on the other costs a futex wake-up and cache traffic per request,
//! and work stealing splits the backend batches; one thread per core used about a quarter less CPU
//! per request at pipeline 1. Listeners accept on the main runtime and hand each connection to the
//! next thread in turn.

use std::future::Future;
use std::pin::Pin;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Work for a session thread: builds the session future inside that thread's runtime, given the
/// thread's index (each thread has its own backend connections: see `Backend::pool`).
pub type Job = Box<dyn FnOnce(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The session threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Ends the threads (their runtimes drop whatever still runs on them).
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` session threads (at least one). Jobs run on `tracker`.
    ///
    /// # Errors
    /// A thread or runtime that cannot be created.
    pub fn start(n: usize, tracker: &TaskTracker) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for index in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let tracker = tracker.clone();
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("haproxy-rs-w{index}"))
                .spawn(move || {
                    runtime.block_on(serve_jobs(rx, tracker, stop, index));
                })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            senders,
            threads,
            stop,
        })
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Runs `job` on thread `n % len`. Returns false when the threads have stopped.
    pub fn submit(&self, n: usize, job: Job) -> bool {
        let i = n % self.senders.len().max(1);
        self.senders.get(i).is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Ends the threads; tasks still running on them are dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        // Join only when called from outside the threads (a thread cannot join itself).
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

async fn serve_jobs(
    mut rx: mpsc::UnboundedReceiver<Job>,
    tracker: TaskTracker,
    stop: CancellationToken,
    index: usize,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            job = rx.recv() => match job {
                Some(job) => { tracker.spawn(job(index)); }
                None => break,
            },
        }
    }
    stop.cancelled().await;
}
