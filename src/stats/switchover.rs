//! What `POST /switchover` asks for and what it hears back. The stats listener owns this
//! exchange; the Sentinel-mode topology task (`topology::switchover`) serves it, so the
//! listener needs nothing from the layers above.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// What a switchover did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
