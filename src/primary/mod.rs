//! Sentinel and static mode: one master and its replicas. Writes go to the master and are held
//! while there is none (a failover); reads go to replicas under the read policy and
//! read-your-writes; transactions and blocking commands run on a connection of the client's own.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod dispatcher;
mod every_server;
mod hold;
pub mod locate;
mod pinned;
mod queue;
mod reply;
mod scan;

pub use dispatcher::{Dispatcher, Progress};
pub use locate::MasterLocator;
