//! Streams: [`Node::open_stream`] and [`Node::accept_streams`], and the inbound admission
//! gates.
//!
//! A stream rides its own connection beside the overlay edge, opened toward the address the
//! live edge runs over (so it takes the path connect found: direct, punched or relayed), with
//! its own congestion control: bulk data never queues behind the frames this node forwards.
//!
//! An inbound stream passes these gates in order, each refusal counted in [`Stats`]: the
//! peer's proof of work ([`Refusal::Refused`], `dropped_stream_sub_pow`), a live listener for
//! its protocol ([`Refusal::NoHandler`], `dropped_stream_no_handler`: nothing is accepted by
//! default), the application's hook ([`Builder::stream_admission`]; [`Refusal::Refused`],
//! `dropped_stream_refused`), the caps ([`MAX_STREAMS`] live in all, [`MAX_STREAMS_PER_PEER`]
//! per NodeId) and the listener's queue ([`STREAM_QUEUE`]) ([`Refusal::Busy`],
//! `dropped_stream_cap`). A stream holds its slot until both its halves are dropped.
//!
//! [`Stats`]: crate::Stats
//! [`Builder::stream_admission`]: crate::Builder::stream_admission

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use nodenet_kad::NodeId;
use nodenet_proto::admission::{Attempt, Caps, Gate, Slots, admit};
use nodenet_transport::stream::check_protocol;
use nodenet_transport::{IncomingStream, RecvStream, Refusal, SendStream, StreamError};
use tokio::sync::mpsc;

use crate::driver::{Node, lock};
use crate::media::EdgeAddrError;
use crate::{ListenError, OpenStreamError};

/// Inbound streams live at once, from all peers.
pub const MAX_STREAMS: usize = 256;
/// Inbound streams live at once from one NodeId.
pub const MAX_STREAMS_PER_PEER: usize = 16;
/// Accepted streams waiting for [`StreamListener::accept`], per listener; past that a
/// stream is refused as busy.
pub const STREAM_QUEUE: usize = 16;

/// The application's stream admission hook: given the peer and the protocol, true lets the
/// stream through to its listener.
pub type StreamHook = Box<dyn Fn(&NodeId, &str) -> bool + Send + Sync>;

type Listeners = Mutex<HashMap<String, mpsc::Sender<(SendStream, RecvStream)>>>;

/// One live admission's place under the caps (an inbound stream's or media session's), given
/// back when it drops: when both halves of the stream are gone, or the session's watcher ends
/// (also when the node aborts it at shutdown).
pub(crate) struct Slot {
    pub(crate) slots: Weak<Mutex<Slots>>,
    pub(crate) peer: NodeId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.upgrade() {
            lock(&slots).give_back(self.peer);
        }
    }
}

/// The node's stream state.
pub(crate) struct Streams {
    hook: Option<StreamHook>,
    slots: Arc<Mutex<Slots>>,
    listeners: Arc<Listeners>,
}

impl Streams {
    pub(crate) fn new(hook: Option<StreamHook>) -> Self {
        Self {
            hook,
            slots: Arc::new(Mutex::new(Slots::new(Caps {
                total: MAX_STREAMS,
                per_peer: MAX_STREAMS_PER_PEER,
            }))),
            listeners: Arc::default(),
        }
    }

    /// Inbound streams holding a slot now.
    pub(crate) fn live(&self) -> usize {
        lock(&self.slots).live()
    }

    /// Drops every listener's sender: each `accept` returns `None` once its queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.listeners).clear();
    }
}

impl Node {
    /// Opens a bidirectional stream to `target` for the application `protocol` (1 to 64
    /// bytes of printable ASCII, e.g. `"myapp/1"`): connects first if we hold no edge to it,
    /// then opens the stream over the edge's path and waits for the peer to accept it.
    ///
    /// The stream is reliable, ordered and flow-controlled, and end-to-end encrypted between
    /// the two nodes (a relay on the path carries ciphertext). Write with
    /// [`SendStream::write_all`] (or tokio's `AsyncWriteExt`), end with
    /// [`SendStream::finish`]; read with [`RecvStream::read`] / `AsyncReadExt`. A slow
    /// reader slows the writer; nothing written is dropped; a reset, a stop or a dead path
    /// is an error at both ends (see [`nodenet_transport::stream`]).
    ///
    /// ```no_run
    /// # async fn f(node: nodenet::Node, peer: nodenet::NodeId) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut send, mut recv) = node.open_stream(peer, "echo/1").await?;
    /// send.write_all(b"ping").await?;
    /// send.finish().await?; // the peer's transport holds every byte
    /// let reply = recv.read_to_end(1024).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`OpenStreamError::BadProtocol`] for a name a peer could not receive;
    /// [`OpenStreamError::Connect`] when there was no edge and [`Node::connect`] failed;
    /// [`OpenStreamError::EdgeClosed`] when the edge closed in between;
    /// [`OpenStreamError::Stream`] when the peer refused it ([`StreamError::Refused`] with
    /// the [`Refusal`]), lacks the extension ([`StreamError::Unsupported`]: the Go reference),
    /// did not answer ([`StreamError::Timeout`]), or its address did not answer.
    pub async fn open_stream(
        &self,
        target: NodeId,
        protocol: &str,
    ) -> Result<(SendStream, RecvStream), OpenStreamError> {
        check_protocol(protocol)?;
        // A transport without streams says so before any connect is spent on it.
        let Some(streams) = self.0.transport.as_streams() else {
            let error = StreamError::Unsupported;
            return Err(OpenStreamError::Stream { target, error });
        };
        let addr = self.edge_addr(target).await.map_err(|e| match e {
            EdgeAddrError::Connect(c) => OpenStreamError::Connect(c),
            EdgeAddrError::EdgeClosed => OpenStreamError::EdgeClosed(target),
        })?;
        match streams.open_stream(target, &addr, protocol).await {
            Ok(halves) => {
                lock(&self.0.core).stats_mut().streams_opened += 1;
                Ok(halves)
            }
            Err(error) => {
                if matches!(error, StreamError::Dial(_) | StreamError::Timeout(_)) {
                    // The edge's own address did not answer: make sure the edge still lives.
                    self.ping(&target);
                }
                Err(OpenStreamError::Stream { target, error })
            }
        }
    }

    /// Accepts inbound streams of `protocol`: until the listener is dropped, streams that
    /// pass the gates (proof of work, [`Builder::stream_admission`], [`MAX_STREAMS`] and
    /// [`MAX_STREAMS_PER_PEER`]) are accepted and queued on it (at most [`STREAM_QUEUE`];
    /// past that they are refused as busy). Streams of a protocol nobody listens for are
    /// refused with [`Refusal::NoHandler`].
    ///
    /// ```no_run
    /// # async fn f(node: nodenet::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut echo = node.accept_streams("echo/1")?;
    /// while let Some((mut send, mut recv)) = echo.accept().await {
    ///     tokio::spawn(async move {
    ///         let mut buf = vec![0; 64 * 1024];
    ///         while let Ok(Some(n)) = recv.read(&mut buf).await {
    ///             if send.write_all(&buf[..n]).await.is_err() {
    ///                 return;
    ///             }
    ///         }
    ///         let _ = send.finish().await;
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`Builder::stream_admission`]: crate::Builder::stream_admission
    ///
    /// # Errors
    /// [`ListenError::BadProtocol`] for a name no peer could send;
    /// [`ListenError::AlreadyListening`] while another listener for it lives.
    pub fn accept_streams(&self, protocol: &str) -> Result<StreamListener, ListenError> {
        check_protocol(protocol)?;
        let listeners = &self.0.streams.listeners;
        let mut map = lock(listeners);
        if map.get(protocol).is_some_and(|tx| !tx.is_closed()) {
            return Err(ListenError::AlreadyListening(protocol.to_owned()));
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        map.insert(protocol.to_owned(), tx);
        Ok(StreamListener {
            protocol: protocol.to_owned(),
            rx,
            listeners: Arc::downgrade(listeners),
        })
    }

    /// Inbound streams live now: accepted and not yet dropped at both halves (at most
    /// [`MAX_STREAMS`]).
    pub fn inbound_streams(&self) -> usize {
        self.0.streams.live()
    }

    /// A peer opened a stream to us: the gates, then the listener's queue.
    pub(crate) fn on_stream(&self, incoming: IncomingStream) {
        let peer = incoming.remote_id();
        let streams = &self.0.streams;
        let listener = lock(&streams.listeners)
            .get(incoming.protocol())
            .filter(|tx| !tx.is_closed())
            .cloned();
        let attempt = Attempt {
            peer,
            difficulty: lock(&self.0.core).difficulty(),
        };
        let verdict = admit(
            attempt,
            listener,
            |p| {
                streams
                    .hook
                    .as_ref()
                    .is_none_or(|allow| allow(p, incoming.protocol()))
            },
            || lock(&streams.slots),
        );
        let count = |c: fn(&mut crate::Stats)| c(lock(&self.0.core).stats_mut());
        let listener = match verdict {
            Ok(listener) => listener,
            Err(gate) => {
                let (counter, refusal): (fn(&mut crate::Stats), _) = match gate {
                    Gate::SubPow => (|s| s.dropped_stream_sub_pow += 1, Refusal::Refused),
                    Gate::Refused => (|s| s.dropped_stream_refused += 1, Refusal::Refused),
                    Gate::OverCap => (|s| s.dropped_stream_cap += 1, Refusal::Busy),
                    Gate::NoHandler => (|s| s.dropped_stream_no_handler += 1, Refusal::NoHandler),
                };
                count(counter);
                return incoming.refuse(refusal);
            }
        };
        // Held from here on: given back when it drops, on every path below.
        let slot = Slot {
            slots: Arc::downgrade(&streams.slots),
            peer,
        };
        let Ok(permit) = listener.try_reserve_owned() else {
            count(|s| s.dropped_stream_cap += 1);
            return incoming.refuse(Refusal::Busy);
        };
        let node = self.clone();
        self.spawn_owned(async move {
            let Ok((mut send, mut recv)) = incoming.accept().await else {
                return;
            };
            let slot: nodenet_transport::stream::Token = Arc::new(slot);
            send.hold(slot.clone());
            recv.hold(slot);
            permit.send((send, recv));
            lock(&node.0.core).stats_mut().streams_accepted += 1;
        });
    }
}

/// Inbound streams of one protocol, accepted and in arrival order (from
/// [`Node::accept_streams`]). Dropping it stops accepting: later streams of the protocol
/// are refused with [`Refusal::NoHandler`], and queued ones are reset.
#[derive(Debug)]
pub struct StreamListener {
    protocol: String,
    rx: mpsc::Receiver<(SendStream, RecvStream)>,
    listeners: Weak<Listeners>,
}

impl StreamListener {
    /// The next stream, waiting for one; `None` once the node has shut down. Each half knows
    /// its peer ([`SendStream::remote_id`]).
    pub async fn accept(&mut self) -> Option<(SendStream, RecvStream)> {
        self.rx.recv().await
    }

    /// The protocol it accepts.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        self.rx.close();
        if let Some(listeners) = self.listeners.upgrade() {
            let mut map = lock(&listeners);
            if map.get(&self.protocol).is_some_and(mpsc::Sender::is_closed) {
                map.remove(&self.protocol);
            }
        }
    }
}
