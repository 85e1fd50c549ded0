//! nodenet's decision core, sans-IO, and a discrete-event simulator that runs it.
//!
//! [`Core`] holds the tables and every rule of the protocol that it owns; inputs are method
//! calls that carry the time ([`Now`]), outputs are return values and [`Action`]s the driver
//! drains with [`Core::poll_action`]. Nothing here opens a socket, starts a task or reads a
//! clock (the crate's `clippy.toml` forbids it, and tokio and quinn are not dependencies), so
//! the same core runs under the `nodenet` crate's tokio driver and under [`sim`], which runs
//! 10,000-node overlays on two cores.
//!
//! [`admission`] decides what a peer may open beside the overlay (media, streams);
//! [`connect::Cascade`] runs one connect attempt (rendezvous, direct, punch, relay);
//! [`punch`] times the punch datagrams the core queues.
//!
//! Applications use the `nodenet` crate, which re-exports what they need from here.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod birthday;
pub mod connect;
/// The decision core. Its extra `pub` items (hidden from the docs) are the driver's.
#[doc(hidden)]
pub mod core;
mod error;
pub mod links;
pub mod punch;
pub mod relays;
mod rng;
pub mod sim;
mod stats;
pub mod upgrade;
pub mod vote;

pub use crate::core::{
    Action, AdmissionHook, Core, CoreConfig, Delivery, EdgeRefusal, Handled, INBOUND_HEADROOM,
    MAX_BOOTSTRAP, MAX_DIAL_ADDRS, MAX_DIALS_IN_FLIGHT, MAX_PUNCH_CANDIDATES, Maintenance,
    NON_ANCHOR_DIAL_TIMEOUT, NodeEvent, Now, OriginateError, RelayOpened, Via,
};
pub use error::{MAX_ROUTED_PAYLOAD, ROUTED_OVERHEAD, SendError};
pub use rng::CoreRng;
pub use stats::{COUNTERS, Stats};
