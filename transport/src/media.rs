//! Media sessions: a call's real-time channel beside the overlay edge.
//!
//! A [`MediaSession`] is its own connection to one peer (over QUIC: a second connection with
//! ALPN `nodenet-media/1` from the same socket, so it rides the NAT mapping or relay pin the
//! edge already proved). It carries two kinds of traffic, both as media frames
//! `channel(1) | payload` ([`MediaFrame`]):
//!
//! - **datagrams** ([`MediaSession::send_datagram`]): unreliable, at most [`MAX_DATAGRAM`]
//!   bytes, never blocking: a full send ring of [`SEND_RING`] is
//!   [`MediaError::Backpressure`], counted;
//! - **messages** ([`MediaSession::send_message`]): reliable, at most [`MAX_MESSAGE`] bytes,
//!   one stream each so no message waits behind another; a write stalled past
//!   [`MESSAGE_STALL`] abandons that message, never the session.
//!
//! Channels 0–15 are the core's: sending on one is [`MediaError::ReservedChannel`], and one
//! received is dropped and counted. Everything received is metered by a per-session
//! [`MediaBudget`] (by default 20 Mbit/s and 4,000 packets/s) before it is queued; excess is
//! dropped and counted in [`MediaStats`]. Full receive queues drop the newest item.
//!
//! A session's fate is its own: the overlay edge may churn underneath without touching it,
//! and a dead path closes it after [`IDLE_TIMEOUT`] ([`MediaSession::closed`] resolves).
//! Dropping every handle closes it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nodenet_kad::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::{Addr, BoxFuture, CloseReason, DialError, Direction};

mod budget;
mod frame;

use budget::Bucket;
pub use budget::MediaBudget;
pub use frame::{BadMediaFrame, MediaFrame};

/// Largest datagram payload (the frame adds the channel byte).
pub const MAX_DATAGRAM: usize = 1200;
/// Largest message payload.
pub const MAX_MESSAGE: usize = 65_536;
/// The first channel an application may use; below it, the core's.
pub const FIRST_APP_CHANNEL: u8 = 16;
/// Datagrams waiting to be sent, at most.
pub const SEND_RING: usize = 64;
/// Received datagrams waiting for the application, at most.
pub const DATAGRAM_QUEUE: usize = 256;
/// Received messages waiting for the application, at most.
pub const MESSAGE_QUEUE: usize = 32;
/// How long one message's write may stall before that message is abandoned.
pub const MESSAGE_STALL: Duration = Duration::from_secs(1);
/// How long an inbound message may take to arrive whole.
pub const MESSAGE_READ_BOUND: Duration = Duration::from_secs(5);
/// A session with no traffic (keep-alives included) for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The dialer's keep-alive interval, while a session exists.
pub const KEEPALIVE: Duration = Duration::from_secs(3);
/// Application close code of a session the callee refused.
pub const CLOSE_REFUSED: u32 = 1;
/// Stream reset code of a message abandoned after a stall.
pub const STREAM_STALLED: u32 = 1;

/// What one session sent, received and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaStats {
    /// Datagrams handed to the path.
    pub tx_datagrams: u64,
    /// Datagrams refused because the send ring was full ([`MediaError::Backpressure`]).
    pub tx_dropped_queue: u64,
    /// Datagrams the path refused (too large for it, or the session closing).
    pub tx_dropped_send: u64,
    /// Messages written whole.
    pub tx_messages: u64,
    /// Messages abandoned after a stalled write.
    pub tx_dropped_stall: u64,
    /// Datagrams queued for the application.
    pub rx_datagrams: u64,
    /// Datagrams and messages over the receive budget, dropped.
    pub rx_dropped_budget: u64,
    /// Datagrams and messages on a reserved channel, dropped.
    pub rx_dropped_reserved: u64,
    /// Datagrams dropped because the application's queue was full.
    pub rx_dropped_queue: u64,
    /// Messages queued for the application.
    pub rx_messages: u64,
    /// Messages dropped: the queue was full, or the message was malformed, too long or
    /// too slow to arrive.
    pub rx_dropped_messages: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tx_datagrams: AtomicU64,
    tx_dropped_queue: AtomicU64,
    tx_dropped_send: AtomicU64,
    tx_messages: AtomicU64,
    tx_dropped_stall: AtomicU64,
    rx_datagrams: AtomicU64,
    rx_dropped_budget: AtomicU64,
    rx_dropped_reserved: AtomicU64,
    rx_dropped_queue: AtomicU64,
    rx_messages: AtomicU64,
    rx_dropped_messages: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> MediaStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MediaStats {
            tx_datagrams: g(&self.tx_datagrams),
            tx_dropped_queue: g(&self.tx_dropped_queue),
            tx_dropped_send: g(&self.tx_dropped_send),
            tx_messages: g(&self.tx_messages),
            tx_dropped_stall: g(&self.tx_dropped_stall),
            rx_datagrams: g(&self.rx_datagrams),
            rx_dropped_budget: g(&self.rx_dropped_budget),
            rx_dropped_reserved: g(&self.rx_dropped_reserved),
            rx_dropped_queue: g(&self.rx_dropped_queue),
            rx_messages: g(&self.rx_messages),
            rx_dropped_messages: g(&self.rx_dropped_messages),
        }
    }
}

/// A received datagram or message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPacket {
    /// Its channel (16–255).
    pub channel: u8,
    /// Its payload.
    pub payload: Bytes,
    /// When it arrived (stamped before it was queued).
    pub received: Instant,
}

/// Why a media operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The peer does not speak the media protocol (it predates it, or turned it off).
    #[error("the peer does not support media sessions")]
    Unsupported,
    /// The session is closed.
    #[error("media session closed")]
    Closed,
    /// The datagram send ring is full: the path is slower than the sender.
    #[error("media send queue full")]
    Backpressure,
    /// Channels below 16 are the core's.
    #[error("channel {0} is reserved for the core (applications use 16-255)")]
    ReservedChannel(u8),
    /// A datagram or message over its size limit.
    #[error("{kind} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// "datagram" or "message".
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message's write stalled past [`MESSAGE_STALL`]; that message was abandoned.
    #[error("message write stalled past {0:?}; the message was abandoned")]
    Stalled(Duration),
    /// The peer refused the session (no consent, or its caps are full).
    #[error("the peer refused the media session")]
    Refused,
    /// The session's connection could not be opened.
    #[error("opening the media connection: {0}")]
    Dial(DialError),
}

/// The path under a session: what the QUIC and in-memory transports provide.
pub(crate) trait MediaLink: Send + Sync + fmt::Debug + 'static {
    /// Sends one datagram frame; resolves once the path has taken it (waiting for room).
    fn send_datagram(&self, frame: Bytes) -> BoxFuture<'static, Result<(), ()>>;
    /// Sends one message frame whole, or fails ([`MediaError::Stalled`] after a stall).
    fn send_message(&self, frame: Bytes) -> BoxFuture<'static, Result<(), MediaError>>;
    /// Closes the path with an application code.
    fn close(&self, code: u32);
}

/// One end of a media session. Cheap to clone; dropping the last clone closes it.
#[derive(Clone)]
pub struct MediaSession(Arc<Handle>);

/// Closes the session when the application lets go of it.
struct Handle(Arc<Session>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close_with(0, CloseReason::Local);
    }
}

/// The shared state of a session: the link, the queues, the budget and the counters. The
/// transport's receive tasks hold it; the application holds [`MediaSession`].
pub(crate) struct Session {
    remote: NodeId,
    remote_key: Option<[u8; 32]>,
    remote_addr: Addr,
    direction: Direction,
    link: Box<dyn MediaLink>,
    ring: mpsc::Sender<Bytes>,
    counters: Counters,
    budget: Mutex<(Bucket, Bucket)>,
    /// The receive queues' senders, dropped at close so the application's streams end.
    queues: Mutex<Option<Queues>>,
    datagrams_rx: Mutex<Option<mpsc::Receiver<MediaPacket>>>,
    messages_rx: Mutex<Option<mpsc::Receiver<MediaPacket>>>,
    closed: watch::Sender<Option<CloseReason>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaSession")
            .field("remote", &self.remote.short())
            .field("remote_addr", &self.remote_addr)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.0.fmt(f)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Queues {
    datagrams: mpsc::Sender<MediaPacket>,
    messages: mpsc::Sender<MediaPacket>,
}

/// Who is at the other end of a new session, and how it was reached.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) key: Option<[u8; 32]>,
    pub(crate) addr: Addr,
    pub(crate) direction: Direction,
}

impl Session {
    /// A session over `link`, with its send pump running. Must be called within a tokio
    /// runtime.
    pub(crate) fn start(peer: Peer, link: Box<dyn MediaLink>, budget: MediaBudget) -> Arc<Self> {
        let (ring, ring_rx) = mpsc::channel(SEND_RING);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (messages_tx, messages_rx) = mpsc::channel(MESSAGE_QUEUE);
        let session = Arc::new(Self {
            remote: peer.id,
            remote_key: peer.key,
            remote_addr: peer.addr,
            direction: peer.direction,
            link,
            ring,
            counters: Counters::default(),
            budget: Mutex::new((Bucket::new(budget.bytes), Bucket::new(budget.packets))),
            queues: Mutex::new(Some(Queues {
                datagrams: datagrams_tx,
                messages: messages_tx,
            })),
            datagrams_rx: Mutex::new(Some(datagrams_rx)),
            messages_rx: Mutex::new(Some(messages_rx)),
            closed: watch::Sender::new(None),
        });
        tokio::spawn(pump(Arc::downgrade(&session), ring_rx));
        session
    }

    /// The application's handle (the transport keeps only `Arc<Session>`).
    pub(crate) fn handle(self: &Arc<Self>) -> MediaSession {
        MediaSession(Arc::new(Handle(self.clone())))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Marks the session closed for `reason` (the first reason sticks); the link is closed
    /// with `code`.
    pub(crate) fn close_with(&self, code: u32, reason: CloseReason) {
        let first = self.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
        if first {
            lock(&self.queues).take();
            self.link.close(code);
        }
    }

    /// The path ended underneath (`reason` from the transport's view).
    pub(crate) fn ended(&self, reason: CloseReason) {
        self.close_with(0, reason);
    }

    /// Charges the budget `bytes` bytes and `packets` packets, all or nothing.
    fn charge(&self, bytes: usize, packets: usize) -> bool {
        let mut b = lock(&self.budget);
        let (bytes, packets) = (bytes as f64, packets as f64);
        if b.0.has(bytes) && b.1.has(packets) {
            b.0.take(bytes);
            b.1.take(packets);
            true
        } else {
            false
        }
    }

    /// A datagram frame arrived: it pays its bytes and one packet, is checked, then queued
    /// (or dropped and counted).
    pub(crate) fn on_datagram(&self, frame: Bytes) {
        self.receive(
            frame,
            1,
            |q| &q.datagrams,
            |c| (&c.rx_datagrams, &c.rx_dropped_queue),
        );
    }

    /// A message stream opened: it pays one packet token now (false: refuse the stream).
    pub(crate) fn admit_message(&self) -> bool {
        if self.charge(0, 1) {
            true
        } else {
            inc(&self.counters.rx_dropped_budget);
            false
        }
    }

    /// A message arrived whole: it pays its bytes (its packet was paid at admission), is
    /// checked, then queued.
    pub(crate) fn on_message(&self, frame: Bytes) {
        self.receive(
            frame,
            0,
            |q| &q.messages,
            |c| (&c.rx_messages, &c.rx_dropped_messages),
        );
    }

    /// Charges `frame`, checks its channel and queues it; `counts` picks the (queued,
    /// dropped) counters of its queue.
    fn receive(
        &self,
        frame: Bytes,
        packets: usize,
        queue: impl Fn(&Queues) -> &mpsc::Sender<MediaPacket>,
        counts: impl Fn(&Counters) -> (&AtomicU64, &AtomicU64),
    ) {
        let received = Instant::now();
        if !self.charge(frame.len(), packets) {
            inc(&self.counters.rx_dropped_budget);
            return;
        }
        let Some(packet) = self.packet(frame, received) else {
            return;
        };
        let queued = lock(&self.queues)
            .as_ref()
            .map(|q| queue(q).try_send(packet).is_ok());
        let (ok, dropped) = counts(&self.counters);
        match queued {
            Some(true) => inc(ok),
            Some(false) => inc(dropped),
            None => {}
        }
    }

    /// A message that could not be read (too long, malformed, too slow): counted.
    pub(crate) fn message_failed(&self) {
        inc(&self.counters.rx_dropped_messages);
    }

    fn packet(&self, frame: Bytes, received: Instant) -> Option<MediaPacket> {
        let Ok(f) = MediaFrame::decode(&frame) else {
            inc(&self.counters.rx_dropped_messages);
            return None;
        };
        if f.channel < FIRST_APP_CHANNEL {
            inc(&self.counters.rx_dropped_reserved);
            return None;
        }
        Some(MediaPacket {
            channel: f.channel,
            payload: frame.slice(1..),
            received,
        })
    }
}

/// Drains the send ring into the link, one datagram at a time, until the session closes.
async fn pump(session: std::sync::Weak<Session>, mut ring: mpsc::Receiver<Bytes>) {
    let Some(mut closed) = session.upgrade().map(|s| s.closed.subscribe()) else {
        return;
    };
    loop {
        let frame = tokio::select! {
            f = ring.recv() => f,
            _ = closed.wait_for(Option::is_some) => None,
        };
        let Some(frame) = frame else {
            return;
        };
        let Some(s) = session.upgrade() else {
            return;
        };
        let send = s.link.send_datagram(frame);
        // Not holding the session while the path is busy: a dropped handle still closes it.
        let counters_of = Arc::downgrade(&s);
        drop(s);
        let result = send.await;
        let Some(s) = counters_of.upgrade() else {
            return;
        };
        match result {
            Ok(()) => inc(&s.counters.tx_datagrams),
            Err(()) => inc(&s.counters.tx_dropped_send),
        }
    }
}

fn check(channel: u8, len: usize, kind: &'static str, max: usize) -> Result<(), MediaError> {
    if channel < FIRST_APP_CHANNEL {
        return Err(MediaError::ReservedChannel(channel));
    }
    if len > max {
        return Err(MediaError::TooLarge { kind, len, max });
    }
    Ok(())
}

fn frame(channel: u8, payload: &[u8]) -> Bytes {
    Bytes::from(MediaFrame { channel, payload }.encode())
}

impl MediaSession {
    fn session(&self) -> &Session {
        &self.0.0
    }

    /// The peer, as its handshake proved it.
    pub fn remote_id(&self) -> NodeId {
        self.session().remote
    }

    /// The peer's Ed25519 key, when the transport learned it.
    pub fn remote_key(&self) -> Option<[u8; 32]> {
        self.session().remote_key
    }

    /// Where the peer is, as this side's path sees it.
    pub fn remote_addr(&self) -> &Addr {
        &self.session().remote_addr
    }

    /// Whether we opened the session or the peer did.
    pub fn direction(&self) -> Direction {
        self.session().direction
    }

    /// Queues one datagram on `channel` (16–255); never waits. A full send ring is
    /// [`MediaError::Backpressure`] (counted in [`MediaStats::tx_dropped_queue`]): the caller
    /// drops the frame or lowers its rate.
    pub fn send_datagram(&self, channel: u8, payload: &[u8]) -> Result<(), MediaError> {
        check(channel, payload.len(), "datagram", MAX_DATAGRAM)?;
        let s = self.session();
        if s.is_closed() {
            return Err(MediaError::Closed);
        }
        match s.ring.try_send(frame(channel, payload)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                inc(&s.counters.tx_dropped_queue);
                Err(MediaError::Backpressure)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(MediaError::Closed),
        }
    }

    /// Sends one message on `channel` (16–255), reliably, on a stream of its own. A write
    /// stalled past [`MESSAGE_STALL`] abandons this message ([`MediaError::Stalled`]); the
    /// session goes on.
    pub async fn send_message(&self, channel: u8, payload: &[u8]) -> Result<(), MediaError> {
        check(channel, payload.len(), "message", MAX_MESSAGE)?;
        let s = self.session();
        if s.is_closed() {
            return Err(MediaError::Closed);
        }
        let result = s.link.send_message(frame(channel, payload)).await;
        match &result {
            Ok(()) => inc(&s.counters.tx_messages),
            Err(MediaError::Stalled(_)) => inc(&s.counters.tx_dropped_stall),
            Err(_) => {}
        }
        result
    }

    /// The received datagrams, each stamped with its arrival time; the stream ends once the
    /// session is closed and what was queued is read. Taken once: later calls return `None`.
    pub fn datagrams(&self) -> Option<mpsc::Receiver<MediaPacket>> {
        lock(&self.session().datagrams_rx).take()
    }

    /// The received messages; ends like [`MediaSession::datagrams`]. Taken once: later calls
    /// return `None`.
    pub fn messages(&self) -> Option<mpsc::Receiver<MediaPacket>> {
        lock(&self.session().messages_rx).take()
    }

    /// Resolves when the session closes, with why. The future does not hold the session
    /// open: a watcher may outlive every handle.
    pub fn closed(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let mut rx = self.session().closed.subscribe();
        async move {
            let reason = match rx.wait_for(Option::is_some).await {
                Ok(r) => *r,
                Err(_) => None,
            };
            reason.unwrap_or(CloseReason::Local)
        }
    }

    /// True once the session is closed.
    pub fn is_closed(&self) -> bool {
        self.session().is_closed()
    }

    /// Closes the session (the peer sees it end).
    pub fn close(&self) {
        self.session().close_with(0, CloseReason::Local);
    }

    /// Refuses an inbound session: closes it with [`CLOSE_REFUSED`], so the caller learns
    /// [`MediaError::Refused`].
    pub fn refuse(&self) {
        self.session().close_with(CLOSE_REFUSED, CloseReason::Local);
    }

    /// What this session sent, received and dropped.
    pub fn stats(&self) -> MediaStats {
        self.session().counters.snapshot()
    }
}

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing {
    #![allow(clippy::panic, reason = "fuzz targets report by panicking")]
    use super::MediaFrame;

    /// The media frame decoder: never panics; what decodes re-encodes to the same bytes, and
    /// only the empty input fails.
    pub fn media_frame(data: &[u8]) {
        match MediaFrame::decode(data) {
            Ok(f) => assert_eq!(f.encode(), data),
            Err(_) => assert!(data.is_empty()),
        }
    }
}
