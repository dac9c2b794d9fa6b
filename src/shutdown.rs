//! Graceful shutdown: stop accepting, answer what is in flight, let idle clients go, close what
//! is left when the grace (`shutdown_grace_ms`) ends, then stop the backends.
//!
//! Two tokens: the *drain* token (the one [`crate::start`] takes) starts it: listeners stop
//! accepting, `/healthz` answers 503, sessions finish what they have; the *hard stop* token ends
//! the grace: every client still connected is closed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long sessions closed at the end of the grace get to go (they only drop their sockets).
pub const HARD_STOP: Duration = Duration::from_secs(1);

/// Once `drain` is cancelled, waits `grace` (less if `hard` is cancelled meanwhile), then cancels
/// `hard`: the clients still connected are closed.
pub async fn hard_stop_after(drain: CancellationToken, grace: Duration, hard: CancellationToken) {
    tokio::select! {
        () = drain.cancelled() => {}
        () = hard.cancelled() => return,
    }
    tokio::select! {
        () = tokio::time::sleep(grace) => {}
        () = hard.cancelled() => return,
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutdown grace over: closing the clients still connected"
    );
    hard.cancel();
}

/// Waits for SIGINT or SIGTERM, then cancels `token`.
pub async fn on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new clients, draining the connected ones");
    token.cancel();
}

/// Closes `tracker` and waits for its tasks, at most `grace`; returns false if some were still running.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(grace, tracker.wait()).await.is_ok()
}
