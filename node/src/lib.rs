//! nodenet: find a route to any node by its identity alone, and talk to it.
//!
//! A [`Node`] is its [`NodeId`] (the BLAKE2b-256 of its public key, with proof-of-work). It
//! joins a Kademlia overlay, keeps its tables alive, forwards other nodes' traffic, and sends
//! and receives messages addressed by NodeId only, with no server in the middle, NAT'd nodes
//! included. This crate is the one an application depends on: it re-exports what a program
//! needs ([`Identity`], [`Contact`], [`Addr`], the QUIC and in-memory transports).
//!
//! # Quick start
//!
//! ```
//! use nodenet::{Node, mint_identity};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two nodes on this machine; on a network, bind 0.0.0.0:PORT and share `contact()`s.
//! let alice = Node::builder(mint_identity(16)?).min_difficulty(16).bind("127.0.0.1:0".parse()?).await?;
//! let bob = Node::builder(mint_identity(16)?).min_difficulty(16).bind("127.0.0.1:0".parse()?).await?;
//! let mut inbox = bob.deliveries()?;
//!
//! alice.dial(bob.contact()).await?; // or bootstrap(contacts) then joined(timeout)
//! alice.send(bob.id(), b"hello")?; // routed by NodeId; Ok means queued, not delivered
//! let hello = inbox.recv().await.ok_or("bob shut down")?;
//! assert_eq!((hello.originator, &hello.payload[..]), (alice.id(), &b"hello"[..]));
//! # Ok(()) }
//! ```
//!
//! # Ways to send, and what each promises
//!
//! | method | path | max payload | ordered | reliable | `Ok` means |
//! |---|---|---|---|---|---|
//! | [`Node::send`] | routed, three copies down disjoint first hops | [`MAX_ROUTED_PAYLOAD`] | no | no (best effort, nothing acknowledges) | queued locally |
//! | [`Node::send_sealed`] | routed, end-to-end encrypted and signed | [`MAX_SEALED_PLAINTEXT`] | no | no | sealed and queued |
//! | [`Node::send_direct`], [`Connection::send`] | one edge, direct or relayed (a relay carries ciphertext it cannot read), after [`Node::connect`] | [`MAX_DIRECT_PAYLOAD`] | per edge; an edge replaced mid-stream (a relayed one upgraded to a punched one) may reorder the frames around the switch | over the edge, yes; but the receiver's deliveries queue drops what it has no room for (counted), and a frame queued as its edge dies is lost | queued on the edge; waits for room there |
//! | [`Node::open_media`] | a separate QUIC session for calls | see [`MediaSession`] | no | datagrams no, messages yes | the session is open (the callee may still refuse it) |
//! | [`Node::open_stream`] | a QUIC stream on its own connection over the edge's path (direct, punched or relayed) | unbounded (a byte stream) | yes | yes, flow-controlled: a slow reader slows the writer, nothing is dropped, an early end is an error at both ends | the peer accepted it; [`SendStream::finish`] `Ok` means the peer holds every byte |
//!
//! Everything addressed to a node arrives on one queue, [`Node::deliveries`], in arrival
//! order; when the application does not keep up, new payloads are dropped and counted in
//! [`Stats::dropped_deliver_full`]. The copies of one routed message are filtered at the
//! receiver (by signature, over the last 8,192 to 16,384 routed messages it saw; counted in
//! [`Stats::dropped_duplicate`]), so the application sees it once. A sealed message arrives
//! as [`Via::Routed`] like a plain one: [`Node::open_sealed`] tells them apart (a plain
//! payload fails with an [`OpenError`]).
//!
//! # Errors
//!
//! Each operation has its own error type, naming what was wrong with the numbers that matter:
//! [`SendError`], [`ConnectError`], [`DirectSendError`], [`SealError`], [`OpenError`],
//! [`OpenMediaError`], [`OpenStreamError`], [`ListenError`], [`StreamError`], [`JoinError`], [`DialNodeError`], [`BuildError`], [`AlreadyTaken`].
//! Every one converts into [`Error`] for code that passes them all up with `?`.
//!
//! # Tests and simulations
//!
//! [`mem::Hub`] is an in-memory network (with link, partition and NAT models): give each node
//! `hub.transport_for(&identity, name)` through [`Builder::transport`] and run many nodes in one
//! test on tokio's paused clock. [`sim`] runs the decision core alone, with no tokio at all.
//!
//! # Inside
//!
//! The node is a sans-IO decision [`Core`] (every rule of the protocol, driven by method
//! calls with the time) plus this crate's tokio driver, which owns the transport, the timers
//! and the application's channels.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod birthday;
mod connect;
mod driver;
mod error;
mod media;
mod sends;
mod setup;
mod streams;
pub mod testing;

#[cfg(test)]
mod lifecycle_tests;

/// The README's library quick start, compiled and run as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeQuickStart;

pub use connect::{
    ATTESTATIONS_NEEDED, Connection, DIRECT_DIAL_TIMEOUT, PUNCH_TIMEOUT, Path, RELAYS_TRIED, Step,
    StepError, Strategy, UPGRADE_AFTER,
};
pub use driver::{
    BuildError, Builder, DEFAULT_DELIVERY_BUFFER, DEFAULT_RENDEZVOUS_TIMEOUT, DIAL_TIMEOUT,
    Deliveries, Node,
};
pub use error::{
    AlreadyTaken, ConnectError, DialNodeError, DirectSendError, Error, JoinError, ListenError,
    OpenMediaError, OpenStreamError, SealError, SendError,
};
pub use media::{
    ConsentHook, INBOUND_MEDIA_QUEUE, InboundMedia, MAX_MEDIA_PER_PEER, MAX_MEDIA_SESSIONS,
};
pub use nodenet_identity::{Identity, SEED_LEN};
pub use nodenet_identity::{SeedFileError, read_seed_file, write_seed_file};
pub use nodenet_kad::{NodeId, ParseIdError};
pub use nodenet_nat::NatType;
pub use nodenet_nat::birthday::BirthdayConfig;
pub use nodenet_pow::SolveError;
/// The decision core (`nodenet-proto`), for the driver's paths `crate::core::…`.
pub(crate) use nodenet_proto::core;
pub use nodenet_proto::sim;
pub use nodenet_proto::{
    Action, AdmissionHook, COUNTERS, Core, CoreConfig, CoreRng, Delivery, EdgeRefusal, Handled,
    INBOUND_HEADROOM, MAX_BOOTSTRAP, MAX_DIAL_ADDRS, MAX_DIALS_IN_FLIGHT, MAX_PUNCH_CANDIDATES,
    Maintenance, NON_ANCHOR_DIAL_TIMEOUT, NodeEvent, Now, OriginateError, RelayOpened, Stats, Via,
};
pub use nodenet_rendezvous::{Coordinates, OpenError, Opened};
pub use nodenet_routing::Contact;
pub use nodenet_routing::control::Caps;
pub use nodenet_transport::Transport;
pub use nodenet_transport::media::{MediaBudget, MediaPacket, MediaStats};
pub use nodenet_transport::mem;
pub use nodenet_transport::quic::{BindError as QuicBindError, QuicConfig, QuicTransport};
pub use nodenet_transport::stream::{BadProtocol, MAX_PROTOCOL};
pub use nodenet_transport::{DialError, TransportStats};
pub use nodenet_transport::{MediaError, MediaSession};
pub use nodenet_transport::{RecvStream, Refusal, SendStream, StreamError};
pub use nodenet_wire::Addr;
pub use setup::{ContactError, mint_identity, parse_contact, quic_addr};
pub use streams::{MAX_STREAMS, MAX_STREAMS_PER_PEER, STREAM_QUEUE, StreamHook, StreamListener};

pub use nodenet_proto::MAX_ROUTED_PAYLOAD;
/// The largest payload [`Node::send_direct`] and [`Connection::send`] carry: one 64 KiB frame
/// less its 5-byte header.
pub const MAX_DIRECT_PAYLOAD: usize = nodenet_transport::MAX_PACKET_LEN - 5;
/// The largest plaintext [`Node::send_sealed`] carries: [`MAX_ROUTED_PAYLOAD`] less the sealed
/// box's 155 bytes (ephemeral key, recipient key, time, length, tag, signature).
pub const MAX_SEALED_PLAINTEXT: usize = MAX_ROUTED_PAYLOAD - 155;
