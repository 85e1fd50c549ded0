//! Edge handles ([`Conn`]), the set of a transport's live edges, and its event queue.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use nodenet_kad::NodeId;
use tokio::sync::{mpsc, watch};

use crate::{
    Addr, BULK_HEADROOM, CloseReason, Counters, Direction, Event, Packet, SEND_QUEUE_LEN,
    SendError, Unsent,
};

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
