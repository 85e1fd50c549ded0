//! nodenet: find a route to any node by its identity alone.
//!
//! A [`Node`] joins a Kademlia overlay over a [`Transport`] (QUIC in production, the
//! in-memory hub in tests), keeps its tables alive, forwards other nodes' traffic, and sends
//! and receives messages addressed by [`NodeId`]:
//!
//! ```no_run
//! # async fn demo(identity: nodenet_identity::Identity, transport: std::sync::Arc<dyn nodenet_transport::Transport>, peer: nodenet_kad::NodeId, bootstrap: nodenet_routing::Contact) -> Result<(), nodenet::Error> {
//! use nodenet::Node;
//!
//! let node = Node::builder(identity, transport).min_difficulty(16).build();
//! node.bootstrap(vec![bootstrap]);
//! node.spawn();
//! node.send(peer, b"hi")?; // routed multi-hop; never blocks
//! let mut inbox = node.deliveries().expect("taken once");
//! while let Some(d) = inbox.recv().await {
//!     println!("{} says {:?}", d.originator, d.payload);
//! }
//! # Ok(()) }
//! ```
//!
//! The node is a sans-IO decision [`Core`] (every rule of the protocol, driven by method
//! calls with the time) plus this crate's tokio driver, which owns the transport, the timers
//! and the application's channels. The same core runs in the discrete-event simulator of the
//! benchmarks.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod birthday;
mod connect;
mod core;
mod driver;
mod media;
mod rng;
pub mod sim;
mod stats;

#[cfg(test)]
mod lifecycle_tests;

pub use connect::{
    Connection, DIRECT_DIAL_TIMEOUT, PUNCH_TIMEOUT, Path, RELAYS_TRIED, Step, StepError, Strategy,
    UPGRADE_AFTER,
};
pub use core::{
    Action, AdmissionHook, Core, CoreConfig, Delivery, EdgeRefusal, Handled, MAX_DIAL_ADDRS,
    MAX_DIALS_IN_FLIGHT, MAX_PUNCH_CANDIDATES, Maintenance, NON_ANCHOR_DIAL_TIMEOUT, NodeEvent,
    Now, OriginateError, Via,
};
pub use driver::{Builder, DEFAULT_DELIVERY_BUFFER, DEFAULT_RENDEZVOUS_TIMEOUT, Node};
pub use media::{ConsentHook, INBOUND_MEDIA_QUEUE, MAX_MEDIA_PER_PEER, MAX_MEDIA_SESSIONS};
pub use nodenet_kad::NodeId;
pub use nodenet_nat::NatType;
pub use nodenet_nat::birthday::BirthdayConfig;
pub use nodenet_rendezvous::{Coordinates, OpenError, Opened};
pub use nodenet_routing::Contact;
pub use nodenet_transport::Transport;
pub use nodenet_transport::media::{MediaBudget, MediaPacket, MediaStats};
pub use nodenet_transport::{MediaError, MediaSession};
pub use rng::CoreRng;
pub use stats::{COUNTERS, Stats};

/// What a node operation can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live edge to launch a message from.
    #[error("no live edge to launch from")]
    Unroutable,
    /// The message does not fit one frame (64 KiB).
    #[error("message of {len} bytes does not fit one {max}-byte frame")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A peer did not meet the proof-of-work difficulty.
    #[error("the peer does not meet the proof-of-work difficulty")]
    PowUnmet,
    /// The edge admission policy refused the peer.
    #[error("refused by the edge admission policy")]
    EdgeRefused,
    /// The node has shut down.
    #[error("the node has shut down")]
    Closed,
    /// The target is this node.
    #[error("the target is this node itself")]
    SelfTarget,
    /// Reaching the target failed at `step`.
    #[error("connect to {target}: {step} failed: {error}")]
    Connect {
        /// The NodeId we tried to reach.
        target: NodeId,
        /// The step that failed (the last one tried).
        step: Step,
        /// Why.
        error: StepError,
    },
    /// No direct edge to the peer (it closed).
    #[error("no direct edge to {0}")]
    NotConnected(NodeId),
    /// The target's X25519 key cannot be sealed to.
    #[error("the target's X25519 key is unusable")]
    BadKey,
    /// A sealed box did not open.
    #[error("sealed box: {0}")]
    Sealed(OpenError),
    /// A media session to `target` could not be opened.
    #[error("media session to {target}: {error}")]
    Media {
        /// The peer.
        target: NodeId,
        /// Why.
        error: MediaError,
    },
}

impl From<OriginateError> for Error {
    fn from(e: OriginateError) -> Self {
        match e {
            OriginateError::Unroutable | OriginateError::Busy => Self::Unroutable,
            OriginateError::FrameTooLarge { len, max } => Self::FrameTooLarge { len, max },
        }
    }
}
