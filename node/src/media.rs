//! Media sessions for calls: [`Node::open_media`] and the inbound admission gates.
//!
//! A session is its own connection beside the overlay edge, opened toward the address the
//! live edge runs over (so it rides the path connect found: the NAT mapping, the punched
//! hole or the relay). Its fate is its own: edge churn never touches it, and a dead path
//! ends it through the transport's idle timeout.
//!
//! An inbound session passes the gates of [`nodenet_proto::admission`] in order, each refusal
//! counted: the peer's proof of work, the session caps ([`MAX_MEDIA_SESSIONS`] in all,
//! [`MAX_MEDIA_PER_PEER`] per NodeId; looked at, not yet taken), then the application's consent
//! hook ([`Builder::media_consent`], which refuses everything when unset), and last the slot
//! is taken. So the hook is never asked about a call the caps would refuse. An accepted
//! session waits on [`Node::inbound_media`] (at most [`INBOUND_MEDIA_QUEUE`]; past that it is
//! refused).
//!
//! [`Builder::media_consent`]: crate::Builder::media_consent

use nodenet_kad::NodeId;
use std::sync::{Arc, Mutex};

use nodenet_proto::admission::{Attempt, Caps, Gate, Slots, admit};
use nodenet_transport::{MediaError, MediaSession};
use nodenet_wire::Addr;
use tokio::sync::mpsc;

use crate::driver::{Node, lock};
use crate::streams::Slot;
use crate::{ConnectError, OpenMediaError};

/// Inbound media sessions live at once, from all peers.
pub const MAX_MEDIA_SESSIONS: usize = 16;
/// Inbound media sessions live at once from one NodeId.
pub const MAX_MEDIA_PER_PEER: usize = 4;
/// Accepted sessions waiting for the application.
pub const INBOUND_MEDIA_QUEUE: usize = 8;

/// The application's consent hook: true takes the call.
pub type ConsentHook = Box<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// Why [`Node::edge_addr`] has no address.
pub(crate) enum EdgeAddrError {
    /// There was no edge and connecting failed.
    Connect(ConnectError),
    /// The edge came up but closed before we could use it.
    EdgeClosed,
}

/// The node's media state.
pub(crate) struct Media {
    pub(crate) consent: Option<ConsentHook>,
    pub(crate) slots: Arc<Mutex<Slots>>,
    pub(crate) inbound_tx: mpsc::Sender<MediaSession>,
    pub(crate) inbound_rx: Mutex<Option<mpsc::Receiver<MediaSession>>>,
}

impl Media {
    pub(crate) fn new(consent: Option<ConsentHook>) -> Self {
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_MEDIA_QUEUE);
        Self {
            consent,
            slots: Arc::new(Mutex::new(Slots::new(Caps {
                total: MAX_MEDIA_SESSIONS,
                per_peer: MAX_MEDIA_PER_PEER,
            }))),
            inbound_tx,
            inbound_rx: Mutex::new(Some(inbound_rx)),
        }
    }
}

impl Node {
    /// Opens a media session to `target` for a call: connects first if we hold no edge to
    /// it, then opens the session over the edge's path. Several sessions to one peer are
    /// allowed (make-before-break). The callee's consent comes after the connection: a
    /// refused session ends at once, and [`MediaSession::closed`] says
    /// [`nodenet_transport::CloseReason::Refused`].
    ///
    /// # Errors
    /// [`OpenMediaError::Connect`] when there was no edge and [`Node::connect`] failed;
    /// [`OpenMediaError::EdgeClosed`] when the edge closed in between;
    /// [`OpenMediaError::Session`] when the session could not open over the edge's path (the
    /// peer lacks media support, or its address did not answer).
    pub async fn open_media(&self, target: NodeId) -> Result<MediaSession, OpenMediaError> {
        // A transport without media says so before any connect is spent on it.
        let Some(media) = self.0.transport.as_media() else {
            let error = MediaError::Unsupported;
            return Err(OpenMediaError::Session { target, error });
        };
        let addr = self.edge_addr(target).await.map_err(|e| match e {
            EdgeAddrError::Connect(c) => OpenMediaError::Connect(c),
            EdgeAddrError::EdgeClosed => OpenMediaError::EdgeClosed(target),
        })?;
        match media.open_media(target, &addr).await {
            Ok(session) => {
                lock(&self.0.core).stats_mut().media_opened += 1;
                // A call that dies of its path says the edge may be dead too: ping it now
                // rather than at the next keep-alive.
                let (node, closed) = (self.clone(), session.closed());
                self.spawn_owned(async move {
                    if closed.await == nodenet_transport::CloseReason::Lost {
                        node.ping(&target);
                    }
                });
                Ok(session)
            }
            Err(error) => {
                if matches!(error, MediaError::Dial(_)) {
                    // The edge's own address did not answer: make sure the edge still lives
                    // (the reference's coupling of call and edge liveness).
                    self.ping(&target);
                }
                Err(OpenMediaError::Session { target, error })
            }
        }
    }

    /// The address our edge to `target` runs over, connecting first if we hold none: where a
    /// connection beside the edge (media, a stream) goes to ride the same path.
    pub(crate) async fn edge_addr(&self, target: NodeId) -> Result<Addr, EdgeAddrError> {
        if target == self.id() {
            return Err(EdgeAddrError::Connect(ConnectError::SelfTarget));
        }
        if self.is_closed() {
            return Err(EdgeAddrError::Connect(ConnectError::Closed));
        }
        let conn = match self.conn_to(&target) {
            Some(c) => c,
            None => {
                self.connect(target).await.map_err(EdgeAddrError::Connect)?;
                self.conn_to(&target).ok_or(EdgeAddrError::EdgeClosed)?
            }
        };
        Ok(conn.remote_addr())
    }

    /// An out-of-schedule ping of our edge to `peer`, if we hold one.
    pub(crate) fn ping(&self, peer: &NodeId) {
        let ping = crate::core::small_frame(nodenet_wire::FrameType::PING, &[]);
        let _ = self.send_to(peer, &ping);
    }

    /// Calls to us: inbound media sessions that passed the gates (proof of work, room under
    /// the caps, [`Builder::media_consent`](crate::Builder::media_consent)), queued up to
    /// [`INBOUND_MEDIA_QUEUE`]; past that a call is refused. Keep a session to accept it,
    /// [`MediaSession::refuse`] or drop it to refuse. One consumer: the first call takes it.
    ///
    /// # Errors
    /// [`AlreadyTaken`](crate::AlreadyTaken) on every later call.
    pub fn inbound_media(&self) -> Result<InboundMedia, crate::AlreadyTaken> {
        lock(&self.0.media.inbound_rx)
            .take()
            .map(InboundMedia)
            .ok_or(crate::AlreadyTaken("inbound_media"))
    }

    /// A peer opened a session to us: the gates of [`nodenet_proto::admission`] (proof of
    /// work, room under the caps, consent), then the queue.
    pub(crate) fn on_media(&self, session: MediaSession) {
        let peer = session.remote_id();
        let attempt = Attempt {
            peer,
            difficulty: lock(&self.0.core).difficulty(),
        };
        let consent = self.0.media.consent.as_ref();
        // The consent hook is the handler too: without one, every call is refused by it (and
        // counted as a consent refusal, not a missing handler).
        let verdict = admit(
            attempt,
            Some(()),
            |p| consent.is_some_and(|allow| allow(p)),
            || lock(&self.0.media.slots),
        );
        if let Err(gate) = verdict {
            let mut core = lock(&self.0.core);
            let stats = core.stats_mut();
            match gate {
                Gate::SubPow => stats.dropped_media_sub_pow += 1,
                Gate::OverCap => stats.dropped_media_cap += 1,
                Gate::NoHandler | Gate::Refused => stats.dropped_media_consent += 1,
            }
            drop(core);
            session.refuse();
            return;
        }
        // The slot is held until the session ends, or the node aborts the watcher at shutdown.
        let slot = Slot {
            slots: Arc::downgrade(&self.0.media.slots),
            peer,
        };
        let closed = session.closed();
        self.spawn_owned(async move {
            closed.await;
            drop(slot);
        });
        match self.0.media.inbound_tx.try_send(session) {
            Ok(()) => lock(&self.0.core).stats_mut().media_accepted += 1,
            Err(e) => {
                let session = e.into_inner();
                lock(&self.0.core).stats_mut().dropped_media_cap += 1;
                session.refuse();
            }
        }
    }
}

/// Calls to a node, in arrival order (from [`Node::inbound_media`]).
#[derive(Debug)]
pub struct InboundMedia(mpsc::Receiver<MediaSession>);

impl InboundMedia {
    /// The next call, waiting for one; `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<MediaSession> {
        self.0.recv().await
    }

    /// A call if one is queued now.
    pub fn try_recv(&mut self) -> Option<MediaSession> {
        self.0.try_recv().ok()
    }
}
