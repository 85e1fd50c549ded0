//! nodenet's transport boundary: authenticated, frame-oriented edges to peers named by
//! [`NodeId`].
//!
//! A [`Transport`] dials a peer at an address and proves the peer is the NodeId it expected;
//! it also accepts edges that peers open. Every frame that arrives on any edge surfaces on one
//! event stream ([`Transport::poll_event`], or [`next_event`]) together with the [`Conn`] it
//! came on. There is no separate accept: a new inbound edge first shows up with its first
//! frame. A closed edge surfaces once as [`Event::Closed`].
//!
//! Two implementations ship, and both pass the same [`contract`] suite:
//!
//! - [`mem`]: an in-memory [`mem::Hub`] for deterministic tests on tokio's paused clock, with
//!   partitions and seeded per-link models (loss, delay, jitter, reordering, MTU).
//! - [`quic`]: quinn and rustls on one UDP socket, with the reference's certificate
//!   extension binding each peer to its NodeId, and inbound caps enforced before any
//!   per-connection state exists.
//!
//! # Sending borrows
//!
//! [`Conn::send`] copies the frame into a pooled [`Packet`] and queues it; it never blocks
//! and never takes ownership, so a caller can retry the same buffer on another edge (local
//! repair) or fan one buffer out to several. A full queue is an immediate
//! [`SendError::QueueFull`]. A frame that cannot be written within the send deadline tears the
//! edge down, as a dead edge should.
//!
//! # Capabilities
//!
//! [`Transport`] is only what every transport does: dial, events, close, counters. What only
//! some can do is a capability trait of its own, which a transport hands out through an
//! `as_*` method that returns `None` unless it overrides it: [`Punch`]
//! ([`Transport::as_punch`]), [`Relay`], [`Birthday`], [`Media`] and [`Streams`]. A
//! transport with none of them still carries a node: routed frames and direct edges work;
//! media and streams fail with their typed "unsupported" error, and the node neither
//! relays nor plays a birthday punch without the capability for it. Both shipped
//! transports have all five. Inbound media sessions and streams surface on the event stream as
//! [`Event::Media`] and [`Event::Stream`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use nodenet_kad::NodeId;
pub use nodenet_wire::Addr;

mod conn;
pub mod contract;
pub mod media;
pub mod mem;
mod packet;
pub mod quic;
mod stats;
pub mod stream;

pub use media::{MediaError, MediaPacket, MediaSession, MediaStats};
pub use stream::{IncomingStream, RecvStream, Refusal, SendStream, StreamError};

pub use conn::{Conn, ConnId};
pub(crate) use conn::{ConnSet, Events};
#[cfg(feature = "packet-debug")]
pub use packet::outstanding;
pub use packet::{MAX_MEDIA_PACKET_LEN, MAX_PACKET_LEN, Packet, PacketTooLarge, SizeClass};
pub(crate) use stats::Counters;
pub use stats::{TRANSPORT_COUNTERS, TransportStats};

/// Frames an edge's send queue holds before [`Conn::send`] reports [`SendError::QueueFull`].
pub const SEND_QUEUE_LEN: usize = 64;

/// Queue slots [`Conn::send_bulk`] leaves free for frames that cannot wait.
pub const BULK_HEADROOM: usize = 16;

/// A boxed future, as the object-safe trait returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The transport boundary: dial, accept, and one stream of events from every edge.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// This node's identity, as peers authenticate it.
    fn local_id(&self) -> NodeId;

    /// The address peers dial to reach this node.
    fn local_addr(&self) -> Addr;

    /// Opens an edge to the node `remote` at `addr`. Succeeds only once the peer has proved it
    /// is `remote`; otherwise [`DialError::IdentityMismatch`].
    fn dial(&self, remote: NodeId, addr: &Addr) -> BoxFuture<'static, Result<Conn, DialError>>;

    /// The next event from any edge: `Ready(None)` once the transport is closed.
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>>;

    /// Closes every edge and ends the event stream.
    fn close(&self);

    /// Counters of what the transport did and refused.
    fn stats(&self) -> TransportStats;

    /// True when addresses are IP `host:port` literals, so callers can account by subnet.
    fn is_ip(&self) -> bool;

    /// This transport's punch datagrams, if it has them ([`Punch`]).
    fn as_punch(&self) -> Option<&dyn Punch> {
        None
    }

    /// This transport's volunteer relay sessions, if it has them ([`Relay`]).
    fn as_relay(&self) -> Option<&dyn Relay> {
        None
    }

    /// This transport's birthday sockets, if it has them ([`Birthday`]).
    fn as_birthday(&self) -> Option<&dyn Birthday> {
        None
    }

    /// This transport's media sessions, if it has them ([`Media`]).
    fn as_media(&self) -> Option<&dyn Media> {
        None
    }

    /// This transport's application streams, if it has them ([`Streams`]).
    fn as_streams(&self) -> Option<&dyn Streams> {
        None
    }
}

/// Hole punching: a datagram from the socket peers see us at.
pub trait Punch: Send + Sync {
    /// Sends one punch datagram toward `addr` from the socket peers see us at: it opens our
    /// NAT's mapping (and filter) toward that address so the peer's packets can come in. Best
    /// effort, like any UDP datagram; refused for an address no peer can be at.
    fn punch(&self, addr: &Addr) -> Result<(), PunchError>;
}

/// Volunteer relaying: packets carried unread between two fresh endpoints.
pub trait Relay: Send + Sync {
    /// Opens a volunteer relay session: a fresh endpoint for the caller and one for the
    /// callee, between which packets are carried unread (end-to-end encryption stays between
    /// the peers). Returns (caller's endpoint, callee's endpoint); the session ends by itself
    /// when idle. [`RelayError::Busy`] when every session slot is taken.
    fn relay(&self) -> Result<(Addr, Addr), RelayError>;
}

/// Birthday punching of a symmetric NAT: many sockets on one side, many ports on the other.
pub trait Birthday: Send + Sync {
    /// The hard side of a birthday punch (we sit behind a symmetric NAT): opens
    /// `params.sockets` fresh sockets, sends `probe` from each toward `easy` (the peer's
    /// confirmed mapping) at `params.ttl`, waits for that same `probe` to come back from
    /// exactly `easy` on one of them, and dials `remote` at `easy` from that socket; the
    /// others close. Within `params.timeout`, or [`BirthdayError::Timeout`].
    fn birthday_hard(
        &self,
        remote: NodeId,
        easy: &Addr,
        probe: &[u8],
        params: BirthdayParams,
    ) -> BoxFuture<'static, Result<Conn, BirthdayError>>;

    /// The easy side of a birthday punch: sends `probe` from our one socket to distinct
    /// random ports of `host` (the hard side's public IP), `params.probe_rate` a second, at
    /// most `params.max_probes`; resolves with the number sent. Drop it to stop early.
    fn birthday_easy(
        &self,
        host: &str,
        probe: &[u8],
        params: BirthdayParams,
    ) -> BoxFuture<'static, Result<u32, BirthdayError>>;
}

/// Media sessions: unreliable, encrypted datagrams beside the edge.
pub trait Media: Send + Sync {
    /// Opens a media session to `remote` at `addr` (the address its live edge runs over, so
    /// the session rides the same path): a connection of its own, authenticated as `remote`.
    /// [`MediaError::Unsupported`] if the peer has no media.
    fn open_media(
        &self,
        remote: NodeId,
        addr: &Addr,
    ) -> BoxFuture<'static, Result<MediaSession, MediaError>>;
}

/// Application streams: reliable, flow-controlled byte pipes beside the edge.
pub trait Streams: Send + Sync {
    /// Opens a stream to `remote` at `addr` (the address its live edge runs over) for the
    /// application `protocol`, and waits for the peer's answer. Over QUIC it rides a
    /// connection of its own, authenticated as `remote`. [`StreamError::Unsupported`] if the
    /// peer has no streams.
    fn open_stream(
        &self,
        remote: NodeId,
        addr: &Addr,
        protocol: &str,
    ) -> BoxFuture<'static, Result<(SendStream, RecvStream), StreamError>>;
}

/// The shape of one birthday attempt (see [`Birthday::birthday_hard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BirthdayParams {
    /// Sockets the hard side opens.
    pub sockets: usize,
    /// TTL of the hard side's probes.
    pub ttl: u32,
    /// Probes the easy side sends per second.
    pub probe_rate: u32,
    /// Probes the easy side sends at most.
    pub max_probes: u32,
    /// How long the hard side waits for a probe.
    pub timeout: std::time::Duration,
}

/// Why a birthday attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BirthdayError {
    /// This transport cannot do it.
    #[error("this transport cannot punch by the birthday technique")]
    Unsupported,
    /// An address that is not a literal one this transport can use.
    #[error("cannot probe {0}: not a usable literal address")]
    BadAddr(String),
    /// No probe arrived in time.
    #[error("no probe arrived in time")]
    Timeout,
    /// Sockets could not be opened or used.
    #[error("birthday sockets: {0}")]
    Io(String),
    /// A probe arrived, but the dial through its socket failed.
    #[error("dial through the probed socket: {0}")]
    Dial(DialError),
}

/// Why [`Relay::relay`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// This transport cannot relay.
    #[error("this transport cannot relay")]
    Unsupported,
    /// Every session slot is taken.
    #[error("relay busy: every session slot is taken")]
    Busy,
    /// The session's sockets could not be opened.
    #[error("relay sockets: {0}")]
    Io(String),
}

/// Why [`Punch::punch`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// Not a reachable literal address (loopback, multicast, a hostname, ...).
    #[error("cannot punch toward {addr}: {why}")]
    BadAddr {
        /// The address.
        addr: Addr,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The socket refused the datagram.
    #[error("punch datagram not sent: {0}")]
    Io(String),
    /// This transport is closed.
    #[error("transport closed")]
    Closed,
}

/// Waits for the next event of `transport` (see [`Transport::poll_event`]).
pub async fn next_event<T: Transport + ?Sized>(transport: &T) -> Option<Event> {
    std::future::poll_fn(|cx| transport.poll_event(cx)).await
}

/// What a transport reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A frame arrived. The packet is the receiver's to release.
    Frame {
        /// The edge it came on; its `remote_id` is authenticated.
        conn: Conn,
        /// The frame's bytes.
        packet: Packet,
    },
    /// An edge closed. Reported once per edge, after its last frame.
    Closed {
        /// The edge.
        conn: Conn,
        /// Why.
        reason: CloseReason,
    },
    /// A peer opened a media session to us. Whoever takes it decides: keep the handle to
    /// accept, [`MediaSession::refuse`] to refuse (dropping it closes it too).
    Media(MediaSession),
    /// A peer opened a stream to us: [`IncomingStream::accept`] or
    /// [`IncomingStream::refuse`] it (dropping it refuses it).
    Stream(IncomingStream),
}

/// Who opened an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

/// Why an edge closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Conn::close`] on this side.
    Local,
    /// The peer closed it.
    Remote,
    /// The transport was closed.
    TransportClosed,
    /// A frame could not be written within the send deadline.
    SendTimeout,
    /// An inbound edge sent nothing within the first-frame timeout.
    FirstFrameTimeout,
    /// The peer broke the framing (e.g. a frame over 64 KiB).
    ProtocolViolation,
    /// The connection failed underneath (idle timeout, network error).
    Lost,
    /// The peer refused it (a media session without consent, or over its caps).
    Refused,
}

/// Why [`Conn::send`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The edge is closed.
    #[error("edge closed")]
    ConnClosed,
    /// The edge's send queue is full: the peer or the path is slower than the sender.
    #[error("edge send queue full")]
    QueueFull,
    /// The frame is larger than one packet (64 KiB).
    #[error("frame of {len} bytes exceeds the {MAX_PACKET_LEN}-byte packet")]
    TooLarge {
        /// The frame's length.
        len: usize,
    },
}

/// A packet [`Conn::send_packet`] could not queue, handed back with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
#[non_exhaustive]
pub struct Unsent {
    /// Why it was refused.
    pub error: SendError,
    /// The packet, untouched.
    pub packet: Packet,
}

/// Why a dial failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Nothing answered at the address, or the path is partitioned.
    #[error("no route to {0}")]
    NoRoute(Addr),
    /// The peer authenticated as a different NodeId than the one dialed.
    #[error("peer at the address is {actual}, not {expected}")]
    IdentityMismatch {
        /// The NodeId dialed.
        expected: NodeId,
        /// The NodeId the peer proved.
        actual: NodeId,
    },
    /// The address is not one this transport can dial.
    #[error("cannot dial {addr}: {why}")]
    BadAddr {
        /// The address.
        addr: Addr,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The peer refused the connection (for example, its inbound caps are full).
    #[error("peer refused the connection")]
    Refused,
    /// The handshake failed (bad certificate, protocol mismatch, ...).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The dial did not complete in time.
    #[error("dial timed out")]
    Timeout,
    /// This transport is closed.
    #[error("transport closed")]
    Closed,
}
