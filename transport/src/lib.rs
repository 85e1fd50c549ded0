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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use nodenet_kad::NodeId;
pub use nodenet_wire::Addr;
use tokio::sync::{mpsc, watch};

pub mod contract;
pub mod media;
pub mod mem;
mod packet;
pub mod quic;
mod stats;
pub mod stream;

pub use media::{MediaError, MediaPacket, MediaSession, MediaStats};
pub use stream::{IncomingStream, RecvStream, Refusal, SendStream, StreamError};

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

/// An identifier of an edge, unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A handle to one edge. Cheap to clone; every clone is the same edge.
#[derive(Clone)]
pub struct Conn(Arc<ConnInner>);

struct ConnInner {
    id: ConnId,
    remote_id: NodeId,
    /// Changes when the peer's packets start arriving from elsewhere (a NAT rebinding).
    remote_addr: std::sync::Mutex<Addr>,
    remote_key: Option<[u8; 32]>,
    direction: Direction,
    queue: mpsc::Sender<Packet>,
    closed: watch::Sender<Option<CloseReason>>,
    counters: Arc<Counters>,
}

impl Conn {
    /// Creates an edge handle and the receiving end of its send queue, for a transport's
    /// pump task.
    pub(crate) fn new(
        remote_id: NodeId,
        remote_addr: Addr,
        remote_key: Option<[u8; 32]>,
        direction: Direction,
        counters: Arc<Counters>,
    ) -> (Self, mpsc::Receiver<Packet>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (queue, rx) = mpsc::channel(SEND_QUEUE_LEN);
        let (closed, _) = watch::channel(None);
        let inner = ConnInner {
            id: ConnId(NEXT.fetch_add(1, Ordering::Relaxed)),
            remote_id,
            remote_addr: std::sync::Mutex::new(remote_addr),
            remote_key,
            direction,
            queue,
            closed,
            counters,
        };
        (Self(Arc::new(inner)), rx)
    }

    /// The edge's process-unique id.
    pub fn id(&self) -> ConnId {
        self.0.id
    }

    /// The peer's NodeId, authenticated by the transport.
    pub fn remote_id(&self) -> NodeId {
        self.0.remote_id
    }

    /// The peer's address as this side observes it now (for reflexive-address reports): it
    /// follows the peer when its packets start arriving from elsewhere.
    pub fn remote_addr(&self) -> Addr {
        self.with_remote_addr(Addr::clone)
    }

    /// Runs `f` on the peer's current address without copying it.
    pub fn with_remote_addr<R>(&self, f: impl FnOnce(&Addr) -> R) -> R {
        f(&self
            .0
            .remote_addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Records that the peer's packets now arrive from `addr`.
    pub(crate) fn set_remote_addr(&self, addr: Addr) {
        *self
            .0
            .remote_addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addr;
    }

    /// The peer's Ed25519 key, when the transport authenticated one (QUIC always does; the
    /// in-memory hub does for transports made from an identity). Its hash is `remote_id`.
    pub fn remote_key(&self) -> Option<[u8; 32]> {
        self.0.remote_key
    }

    /// Who opened the edge.
    pub fn direction(&self) -> Direction {
        self.0.direction
    }

    /// Queues a copy of `frame` for sending. Never blocks; the caller keeps `frame`.
    pub fn send(&self, frame: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::ConnClosed);
        }
        let packet = Packet::copy_from(frame).map_err(|e| SendError::TooLarge { len: e.len })?;
        self.0.queue.try_send(packet).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.0
                    .counters
                    .send_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                SendError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => SendError::ConnClosed,
        })
    }

    /// Queues `packet` itself, without a copy: for a frame that is already in a pooled
    /// packet, such as one being forwarded from the packet it arrived in. A refused packet is
    /// handed back in [`Unsent`], so the caller can offer the same buffer to another edge
    /// (local repair) and nothing is copied however many edges refuse it.
    pub fn send_packet(&self, packet: Packet) -> Result<(), Unsent> {
        if self.is_closed() {
            return Err(Unsent {
                error: SendError::ConnClosed,
                packet,
            });
        }
        self.0.queue.try_send(packet).map_err(|e| match e {
            mpsc::error::TrySendError::Full(packet) => {
                self.0
                    .counters
                    .send_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                Unsent {
                    error: SendError::QueueFull,
                    packet,
                }
            }
            mpsc::error::TrySendError::Closed(packet) => Unsent {
                error: SendError::ConnClosed,
                packet,
            },
        })
    }

    /// Like [`Conn::send`], but waits for room in the edge's queue instead of failing with
    /// [`SendError::QueueFull`]: for bulk senders. The frame is still copied before this
    /// returns, and cancelling the future sends nothing.
    pub async fn send_wait(&self, frame: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::ConnClosed);
        }
        let packet = Packet::copy_from(frame).map_err(|e| SendError::TooLarge { len: e.len })?;
        let permit = self
            .0
            .queue
            .reserve()
            .await
            .map_err(|_| SendError::ConnClosed)?;
        permit.send(packet);
        Ok(())
    }

    /// Like [`Conn::send_wait`], but for bulk transfers: waits until the edge's queue has
    /// room for this frame *and* [`BULK_HEADROOM`] more, so frames sent with [`Conn::send`]
    /// (routed and control traffic, which never wait) still find room on an edge that a bulk
    /// transfer keeps busy.
    pub async fn send_bulk(&self, frame: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::ConnClosed);
        }
        let packet = Packet::copy_from(frame).map_err(|e| SendError::TooLarge { len: e.len })?;
        let mut permits = self
            .0
            .queue
            .reserve_many(BULK_HEADROOM + 1)
            .await
            .map_err(|_| SendError::ConnClosed)?;
        if let Some(permit) = permits.next() {
            permit.send(packet);
        }
        // The other permits return to the queue as they drop.
        Ok(())
    }

    /// Closes the edge. Idempotent; the peer sees it close too.
    pub fn close(&self) {
        self.mark_closed(CloseReason::Local);
    }

    /// True once the edge is closed, from either side.
    pub fn is_closed(&self) -> bool {
        self.0.closed.borrow().is_some()
    }

    /// Why the edge closed, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.0.closed.borrow()
    }

    /// Resolves when the edge closes, with the reason.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.0.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(CloseReason::Lost),
            // The sender lives in `self`, so it cannot be dropped while we wait.
            Err(_) => CloseReason::Lost,
        }
    }

    /// Records the first close reason; later calls keep the first. True if this call closed it.
    pub(crate) fn mark_closed(&self, reason: CloseReason) -> bool {
        self.0.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        })
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.0.id.0)
            .field("remote", &self.0.remote_id.short())
            .field("addr", &self.remote_addr())
            .field("direction", &self.0.direction)
            .finish()
    }
}

impl PartialEq for Conn {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Conn {}

impl std::hash::Hash for Conn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// The live edges of one transport, so closing the transport can close them all.
#[derive(Debug, Default)]
pub(crate) struct ConnSet(std::sync::Mutex<std::collections::HashMap<ConnId, Conn>>);

impl ConnSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ConnId, Conn>> {
        // Only plain data is behind this lock; a panic elsewhere cannot leave it half-updated.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, conn: &Conn) {
        self.lock().insert(conn.id(), conn.clone());
    }

    pub(crate) fn remove(&self, conn: &Conn) {
        self.lock().remove(&conn.id());
    }

    /// Closes every edge with [`CloseReason::TransportClosed`].
    pub(crate) fn close_all(&self) {
        let conns: Vec<Conn> = self.lock().drain().map(|(_, c)| c).collect();
        for c in conns {
            c.mark_closed(CloseReason::TransportClosed);
        }
    }
}

/// The event queue a transport's tasks feed and its owner drains.
#[derive(Debug)]
pub(crate) struct Events {
    tx: mpsc::Sender<Event>,
    rx: std::sync::Mutex<mpsc::Receiver<Event>>,
    closed: watch::Sender<bool>,
}

impl Events {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: std::sync::Mutex::new(rx),
            closed: watch::channel(false).0,
        }
    }

    /// Delivers an event, waiting for room (backpressure reaches the edge that sent it).
    /// Returns false once the transport is closed.
    pub(crate) async fn push(&self, event: Event) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut closed = self.closed.subscribe();
        tokio::select! {
            sent = self.tx.send(event) => sent.is_ok(),
            _ = closed.wait_for(|c| *c) => false,
        }
    }

    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.is_closed() {
            return Poll::Ready(None);
        }
        match self.rx.lock() {
            Ok(mut rx) => rx.poll_recv(cx),
            Err(_) => Poll::Ready(None),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        if let Ok(mut rx) = self.rx.lock() {
            rx.close();
            // Release whatever was queued.
            while rx.try_recv().is_ok() {}
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}
