//! The client side: listeners accept connections, one [`session::Session`] task serves each
//! client in every mode, with the mode's [`dispatch::Dispatcher`].
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod client_cmds;
pub mod dispatch;
pub mod listener;
pub mod session;

pub mod workers;
