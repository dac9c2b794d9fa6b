//! What `POST /switchover` asks for and what it hears back. The stats listener owns this
//! exchange; the Sentinel-mode topology task (`topology::switchover`) serves it, so the
//! listener needs nothing from the layers above.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What a switchover did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchoverReport {
    /// The master before.
    pub old_master: String,
    /// The master after.
    pub new_master: String,
    /// How long writes were held, from the fence to their release.
    pub writes_held_ms: u64,
    /// How long the replicas took to catch up with the master.
    pub catch_up_ms: u64,
}

impl std::fmt::Display for SwitchoverReport {
    /// One sentence: `switched 10.0.0.1:6379 -> 10.0.0.2:6379, writes held 1.18 s, replicas
    /// caught up in 1 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "switched {} -> {}, writes held {:.2} s, replicas caught up in {} ms",
            self.old_master,
            self.new_master,
            self.writes_held_ms as f64 / 1000.0,
            self.catch_up_ms
        )
    }
}

/// The outcome the requester gets: the report, or why it did not happen.
pub type SwitchoverResult = Result<SwitchoverReport, String>;

/// One request, with where its outcome goes.
#[derive(Debug)]
pub struct SwitchoverRequest {
    /// Gets the outcome once the writes are released (or the switchover is given up).
    pub reply: oneshot::Sender<SwitchoverResult>,
}

/// The sending side, given to the admin endpoint.
pub type SwitchoverSender = mpsc::UnboundedSender<SwitchoverRequest>;

#[cfg(test)]
mod tests {
    use super::SwitchoverReport;

    #[test]
    fn a_report_reads_as_one_sentence() {
        let report = SwitchoverReport {
            old_master: "10.0.0.1:6379".into(),
            new_master: "10.0.0.2:6379".into(),
            writes_held_ms: 1180,
            catch_up_ms: 1,
        };
        assert_eq!(
            report.to_string(),
            "switched 10.0.0.1:6379 -> 10.0.0.2:6379, writes held 1.18 s, replicas caught up in 1 ms"
        );
    }
}
