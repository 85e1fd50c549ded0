//! The tokio driver: owns the transport, the timers and the application's channels, and feeds
//! the [`Core`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_nat::NatType;
use nodenet_rendezvous::{Coordinates, NONCE_LEN as RDV_NONCE_LEN};
use nodenet_routing::{Contact, Time};
use nodenet_transport::{Conn, Event, Packet, SendError as ConnSendError, Transport, next_event};
use nodenet_wire::{Addr, FrameType};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::core::{
    Action, Attested, Core, CoreConfig, Delivery, EdgeRefusal, Handled, Maintenance, NodeEvent,
    Now, RelayOpened, small_frame,
};
use crate::{AlreadyTaken, DialNodeError, JoinError, SendError, Stats};
use nodenet_proto::CoreRng;
use nodenet_proto::links::{Crossed, LinkId, LinkPath, keep_new};

mod builder;
mod edges;
mod frames;

pub use builder::Builder;

/// Default depth of the deliveries queue.
pub const DEFAULT_DELIVERY_BUFFER: usize = 64;

/// How long the losing connection of a crossed dial keeps delivering before we close it.
const DUPLICATE_GRACE: Duration = Duration::from_secs(5);

/// Time [`Node::dial`] gives each address of a contact.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time a rendezvous waits for its answer.
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The payloads addressed to a node, in arrival order (from [`Node::deliveries`]).
#[derive(Debug)]
pub struct Deliveries(mpsc::Receiver<Delivery>);

impl Deliveries {
    /// The next delivery, waiting for one. It waits for ever once the node has shut down while
    /// any handle to it lives: pair it with [`Node::shutdown`] in a `select!`, or drop every
    /// `Node` to end it with `None`.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.0.recv().await
    }

    /// A delivery if one is queued now.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.0.try_recv().ok()
    }

    /// The tokio receiver underneath (for `select!` loops or stream adapters).
    pub fn into_inner(self) -> mpsc::Receiver<Delivery> {
        self.0
    }
}

/// Why a node could not be built or bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// [`Builder::build`] without [`Builder::transport`] (or use [`Builder::bind`]).
    #[error("no transport: call Builder::transport, or Builder::bind to bind QUIC")]
    NoTransport,
    /// [`Builder::bind`] after [`Builder::transport`]: which one should the node use?
    #[error("Builder::bind makes its own transport, but Builder::transport already set one")]
    TransportAlreadySet,
    /// The transport was made for another identity.
    #[error("the transport authenticates as {transport}, but the node's identity is {identity}")]
    IdentityMismatch {
        /// The builder's identity.
        identity: NodeId,
        /// Who the transport proves to peers.
        transport: NodeId,
    },
    /// Our own NodeId misses the proof-of-work difficulty we demand of peers.
    #[error(
        "our NodeId has {bits} leading zero bits but min_difficulty is {required}: mint an \
         identity at that difficulty"
    )]
    OwnDifficulty {
        /// Leading zero bits of our NodeId.
        bits: u32,
        /// The difficulty set with [`Builder::min_difficulty`].
        required: u32,
    },
    /// Not within a tokio runtime.
    #[error("Builder::bind must be called within a tokio runtime")]
    NoRuntime,
    /// The QUIC socket could not be bound.
    #[error(transparent)]
    Bind(nodenet_transport::quic::BindError),
}

/// A running (or ready to run) nodenet node. Cheap to clone.
#[derive(Clone)]
pub struct Node(pub(crate) Arc<Shared>);

/// A finished dial: the contact, and the edge if it came up.
type DialResult = (Contact, Result<Conn, ()>);

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) conns: Mutex<HashMap<NodeId, Conn>>,
    deliveries_tx: mpsc::Sender<Delivery>,
    deliveries_rx: Mutex<Option<mpsc::Receiver<Delivery>>>,
    dials_tx: mpsc::Sender<DialResult>,
    dials_rx: Mutex<Option<mpsc::Receiver<DialResult>>>,
    shutdown: watch::Sender<bool>,
    pub(crate) start: Instant,
    /// The event loop's timer deadline (ns since `start`), and its wake-up for a core
    /// deadline that an input outside the loop brought closer (see [`Node::drain`]).
    deadline: AtomicU64,
    wake: Notify,
    /// Open rendezvous requests: nonce → the caller waiting for the answer.
    pub(crate) waiters: Mutex<HashMap<[u8; RDV_NONCE_LEN], oneshot::Sender<Coordinates>>>,
    pub(crate) rendezvous_timeout: Duration,
    pub(crate) direct_dial_timeout: Duration,
    /// Watchers of [`Node::events`].
    events: broadcast::Sender<NodeEvent>,
    /// Open hole-punch requests: nonce → the caller waiting for the ConnectAck (the peer's
    /// candidates, and whether it holds its punch for our Sync).
    pub(crate) punch_waiters: Mutex<HashMap<Nonce, oneshot::Sender<PunchAnswer>>>,
    /// Open relay requests: nonce → the caller waiting for its grant.
    pub(crate) relay_waiters: Mutex<HashMap<[u8; nodenet_nat::NONCE_LEN], RelayWaiting>>,
    /// Inbound media admission.
    pub(crate) media: crate::media::Media,
    /// Stream listeners and inbound stream admission.
    pub(crate) streams: crate::streams::Streams,
    /// Whether, as a relay, we attest each side's host to the other.
    attest: bool,
    /// Every task the node starts (dials, drains, upgrades,
    /// birthday attempts, media admission): [`Node::shutdown`] ends them all, so nothing
    /// outlives the node or keeps its state alive.
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// A hole-punch or relay request's nonce.
pub(crate) type Nonce = [u8; nodenet_nat::NONCE_LEN];

/// A ConnectAck's news.
#[derive(Debug)]
pub(crate) struct PunchAnswer {
    /// The peer's candidates.
    pub(crate) addrs: Vec<Addr>,
    /// Its flags (timed, birthday, hard).
    pub(crate) flags: u8,
    /// A hard peer's public host.
    pub(crate) public: Option<Addr>,
}

/// The caller waiting for an open relay request's grant (the address to dial, and the
/// relay's attestation, if any); the core checks who grants.
pub(crate) type RelayWaiting = oneshot::Sender<(Addr, Option<Attested>)>;

/// Events a watcher of [`Node::events`] may fall behind by before it misses some.
const EVENT_BUFFER: usize = 1024;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The core's name for a connection.
pub(crate) fn link(c: &Conn) -> LinkId {
    LinkId(c.id().0)
}

impl Node {
    /// A builder for a node with `identity`; finish with [`Builder::bind`] (QUIC) or
    /// [`Builder::transport`] + [`Builder::build`].
    pub fn builder(identity: Identity) -> Builder {
        Builder {
            identity,
            events: broadcast::channel(EVENT_BUFFER).0,
            transport: None,
            quic: nodenet_transport::quic::QuicConfig::default(),
            config: CoreConfig::default(),
            delivery_buffer: DEFAULT_DELIVERY_BUFFER,
            admission: None,
            seed: None,
            advertise_set: false,
            subnets: None,
            rendezvous_timeout: DEFAULT_RENDEZVOUS_TIMEOUT,
            direct_dial_timeout: crate::DIRECT_DIAL_TIMEOUT,
            media_consent: None,
            stream_admission: None,
            birthday: nodenet_nat::birthday::BirthdayConfig::default(),
            attest: true,
        }
    }

    /// Our NodeId.
    pub fn id(&self) -> NodeId {
        lock(&self.0.core).id()
    }

    /// Our contact as `<nodeid-hex>@ip:port`, the form [`crate::parse_contact`] reads, for the
    /// first address we advertise; `None` when we advertise none (bound to a wildcard
    /// address, or behind NAT: hand out this machine's reachable IP with our port instead).
    pub fn contact_string(&self) -> Option<String> {
        let c = self.contact();
        c.addrs.first().map(|a| format!("{}@{}", c.id, a.endpoint))
    }

    /// The address the node's transport is bound to (for QUIC, the UDP socket's, which may
    /// be a wildcard such as `0.0.0.0:4242`: not an address to hand out as is).
    pub fn local_addr(&self) -> Addr {
        self.0.transport.local_addr()
    }

    /// How others reach us: our NodeId and the addresses we advertise (plus our reflexive
    /// address once neighbours confirm it is our own). Empty addresses for a node that cannot
    /// be dialed.
    pub fn contact(&self) -> Contact {
        let core = lock(&self.0.core);
        Contact::new(core.id(), core.coordinates())
    }

    /// The transport's counters: dials, inbound caps, QUIC Retries, relay sessions, ...
    pub fn transport_stats(&self) -> nodenet_transport::TransportStats {
        self.0.transport.stats()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        lock(&self.0.core).stats()
    }

    /// The peers we hold live edges with.
    pub fn edges(&self) -> Vec<NodeId> {
        lock(&self.0.core).edges().iter().map(|e| e.id).collect()
    }

    /// Outbound live edges (what the connectivity floor counts).
    pub fn outbound_edges(&self) -> usize {
        lock(&self.0.core).edges().outbound()
    }

    /// Live edges that run through a volunteer relay (a punch may still replace them).
    pub fn relayed_edges(&self) -> usize {
        let ids: Vec<LinkId> = lock(&self.0.conns).values().map(link).collect();
        lock(&self.0.core).links().count_relayed(ids)
    }

    /// Contacts in the knowledge table.
    pub fn known(&self) -> usize {
        lock(&self.0.core).knowledge().len()
    }

    /// Our address as our neighbours see it, once at least three of them, from at least two
    /// subnets when they have subnets, agree (see [`nodenet_nat::reflexive`]).
    pub fn reflexive(&self) -> Option<Addr> {
        lock(&self.0.core).reflexive().cloned()
    }

    /// What the node concludes about the NAT in front of it: public when the confirmed
    /// address is one of this host's own, cone when it is another, symmetric when the
    /// neighbours disagree, unknown before enough of them have reported.
    pub fn nat_type(&self) -> NatType {
        lock(&self.0.core).nat_type()
    }

    /// A snapshot of the knowledge table: every contact we know, with its keys, capabilities
    /// and addresses as last learned.
    pub fn contacts(&self) -> Vec<Contact> {
        lock(&self.0.core).knowledge().iter().cloned().collect()
    }

    /// A new watcher of the node's events (edges up and down). Each watcher gets every event
    /// from now on ([`Builder::subscribe`] watches from the start); one that falls more than 1,024 events behind misses the oldest and is told
    /// so by `RecvError::Lagged` (the node never waits for a watcher).
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.0.events.subscribe()
    }

    /// The payloads addressed to us: routed messages ([`Node::send`], [`Node::send_sealed`])
    /// and direct ones ([`Node::send_direct`], [`Connection::send`](crate::Connection::send)),
    /// one queue in arrival order. Its depth is [`Builder::delivery_buffer`]: while it is full,
    /// new payloads are dropped and counted in [`Stats::dropped_deliver_full`] (read it
    /// promptly). One consumer: the first call takes it.
    ///
    /// # Errors
    /// [`AlreadyTaken`] on every later call.
    pub fn deliveries(&self) -> Result<Deliveries, AlreadyTaken> {
        lock(&self.0.deliveries_rx)
            .take()
            .map(Deliveries)
            .ok_or(AlreadyTaken("deliveries"))
    }

    /// Entry points into the overlay. A contact needs a NodeId and an address; its key is
    /// learned from the authenticated handshake, so this works at any difficulty.
    ///
    /// Returns at once: the dials run in the background (and maintenance keeps redialing
    /// bootstrap contacts while the node has too few edges). Await [`Node::joined`] before the
    /// first [`Node::send`], or use [`Node::dial`] to know whether one contact answered.
    pub fn bootstrap(&self, contacts: Vec<Contact>) {
        let now = self.now();
        let mut core = lock(&self.0.core);
        core.bootstrap(contacts);
        self.drain(&mut core, now);
    }

    /// Waits until the node holds at least one live edge, so [`Node::send`] and
    /// [`Node::connect`] have somewhere to route; returns at once if it already does. The node
    /// must be running ([`Node::spawn`], or [`Builder::bind`] which starts it).
    ///
    /// An edge counts once it is up. A peer whose [`Builder::min_difficulty`] our identity
    /// misses takes the connection and then drops it, so `joined` (and [`Node::dial`]) can
    /// return `Ok` for an edge that is gone a moment later ([`crate::NodeEvent::EdgeDown`]; the peer
    /// counts it in [`Stats::dropped_sub_pow`](crate::Stats::dropped_sub_pow)): mint the
    /// identity at the network's difficulty.
    ///
    /// # Errors
    /// [`JoinError::Timeout`] if no edge came up within `timeout` (are the bootstrap contacts
    /// reachable, and do they meet our difficulty?); [`JoinError::Closed`] after shutdown.
    pub async fn joined(&self, timeout: Duration) -> Result<(), JoinError> {
        if self.is_closed() {
            return Err(JoinError::Closed);
        }
        // Subscribe first, then look: an edge that comes up in between is seen either way.
        let mut events = self.events();
        if !lock(&self.0.core).edges().is_empty() {
            return Ok(());
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::EdgeUp { .. }) => return Ok(()),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !lock(&self.0.core).edges().is_empty() {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(JoinError::Closed),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(JoinError::Timeout { waited: timeout }))
    }

    /// Opens an edge to `contact` now and waits for it: each of its addresses (at most
    /// [`crate::MAX_DIAL_ADDRS`]) in turn, [`DIAL_TIMEOUT`] each. `Ok` once the peer proved
    /// its NodeId and the edge is admitted (or one was already up). The contact is also kept
    /// as a bootstrap contact. For a node known only by its NodeId use [`Node::connect`].
    ///
    /// # Errors
    /// [`DialNodeError::SelfTarget`] for our own NodeId; [`DialNodeError::NoAddresses`] for
    /// a contact without one; [`DialNodeError::Unreachable`] with the last address's failure
    /// when none answered as that NodeId; [`DialNodeError::Refused`] when our own admission
    /// rules refused the edge; [`DialNodeError::Closed`] after shutdown.
    pub async fn dial(&self, contact: Contact) -> Result<(), DialNodeError> {
        let target = contact.id;
        if target == self.id() {
            return Err(DialNodeError::SelfTarget);
        }
        if self.conn_to(&target).is_some() {
            return Ok(());
        }
        if self.is_closed() {
            return Err(DialNodeError::Closed);
        }
        if contact.addrs.is_empty() {
            return Err(DialNodeError::NoAddresses { target });
        }
        let mut last = nodenet_transport::DialError::Timeout;
        for addr in contact.addrs.iter().take(crate::MAX_DIAL_ADDRS) {
            let conn = match tokio::time::timeout(DIAL_TIMEOUT, self.0.transport.dial(target, addr))
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    last = e;
                    continue;
                }
                Err(_) => {
                    last = nodenet_transport::DialError::Timeout;
                    continue;
                }
            };
            let now = self.now();
            let mut core = lock(&self.0.core);
            let admitted = self.admit(&mut core, now, &conn);
            if matches!(admitted, Ok(()) | Err(EdgeRefusal::Duplicate)) {
                // Reached: worth redialing when the node finds itself alone.
                core.remember_bootstrap(&contact);
            }
            self.drain(&mut core, now);
            return match admitted {
                Ok(()) | Err(EdgeRefusal::Duplicate) => Ok(()),
                Err(reason) => Err(DialNodeError::Refused { target, reason }),
            };
        }
        Err(DialNodeError::Unreachable {
            target,
            error: last,
        })
    }

    /// Sends `payload` to `target` over the overlay: up to three copies down disjoint first
    /// hops. Never blocks. Best effort: nothing acknowledges it; `Ok` means queued on our
    /// edges, and a message to our own NodeId goes straight to our [`Node::deliveries`].
    ///
    /// # Errors
    /// [`SendError::TooLarge`] over [`MAX_ROUTED_PAYLOAD`](crate::MAX_ROUTED_PAYLOAD);
    /// [`SendError::Unroutable`] while the node holds no edge (await [`Node::joined`] first);
    /// [`SendError::Closed`] after shutdown.
    pub fn send(&self, target: NodeId, payload: &[u8]) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if payload.len() > crate::MAX_ROUTED_PAYLOAD {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: crate::MAX_ROUTED_PAYLOAD,
            });
        }
        let now = self.now();
        let mut core = lock(&self.0.core);
        if target == core.id() {
            // A message to ourselves is delivered locally, best effort like any other: a full
            // queue drops it and counts.
            let d = Delivery {
                originator: target,
                payload: payload.to_vec(),
                via: crate::Via::Routed,
                hops: 0,
            };
            let handed = self.0.deliveries_tx.try_send(d).is_ok();
            core.count_delivery(handed);
            return Ok(());
        }
        core.originate(now, FrameType::ROUTE, target, payload)?;
        self.drain(&mut core, now);
        Ok(())
    }

    /// Looks `target` up: a signed query routed toward it, answered by the closest reachable
    /// node with the contacts it knows near `target`, which we fold into our table.
    pub fn lookup(&self, target: NodeId) {
        let now = self.now();
        let mut core = lock(&self.0.core);
        core.lookup(now, target);
        self.drain(&mut core, now);
    }

    /// Starts the node's event loop on the current tokio runtime.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move { node.run().await })
    }

    /// Runs the event loop until [`Node::shutdown`] or the transport closes.
    pub async fn run(&self) {
        let Some(mut dials) = lock(&self.0.dials_rx).take() else {
            return;
        };
        let mut shutdown = self.0.shutdown.subscribe();
        // One timer, at the core's word: maintenance ticks, self-lookup follow-ups, punch
        // volleys and held punches.
        let timer = tokio::time::sleep_until(self.0.start);
        tokio::pin!(timer);
        loop {
            // Stored under the core's lock, which `drain` holds when it compares: an input
            // outside the loop that brings the deadline closer sees this value, never an
            // older one, and wakes us.
            let due_ns = {
                let core = lock(&self.0.core);
                let due = core.poll_timeout().0;
                self.0.deadline.store(due, Ordering::Release);
                due
            };
            let due = self.0.start + Duration::from_nanos(due_ns);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            // Biased, with the rare events first: a steady stream of inbound frames must not
            // starve maintenance or finished dials.
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                // A deadline brought closer outside the loop: read it again.
                () = self.0.wake.notified() => {}
                () = &mut timer => {
                    let now = self.now();
                    let mut core = lock(&self.0.core);
                    core.handle_timeout(now);
                    self.drain(&mut core, now);
                }
                Some((contact, result)) = dials.recv() => self.on_dialed(contact, result),
                ev = next_event(&*self.0.transport) => match ev {
                    Some(Event::Frame { conn, packet }) => self.on_frame(&conn, packet),
                    Some(Event::Closed { conn, .. }) => self.on_closed(&conn),
                    Some(Event::Media(session)) => self.on_media(session),
                    Some(Event::Stream(incoming)) => self.on_stream(incoming),
                    Some(_) => {}
                    None => break,
                },
            }
        }
    }

    /// Leaves gracefully: a Leave on every edge (so neighbours replace us at once instead of
    /// waiting out a timeout), then closes the edges and the transport, stops the loop and
    /// ends every task the node started. When it returns, nothing of the node runs any more:
    /// once the application drops its handles, all of the node's memory is freed.
    ///
    /// Call it from the application's own task, not from a callback the node runs.
    pub async fn shutdown(&self) {
        self.0.shutdown.send_replace(true);
        // Taken under the lock that `spawn_owned` checks the flag under: a task is either in
        // this set (and ended here) or never started.
        let mut tasks = std::mem::take(&mut *lock(&self.0.tasks));
        tasks.shutdown().await;
        // Listeners see the end (`accept` returns `None`); queued streams are reset.
        self.0.streams.close();
        let conns: Vec<Conn> = lock(&self.0.conns).drain().map(|(_, c)| c).collect();
        let leave = small_frame(FrameType::LEAVE, &[]);
        for c in &conns {
            let _ = c.send(&leave);
            // A local close still delivers what was queued before it.
            c.close();
        }
        for c in &conns {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.closed()).await;
        }
        // Nobody may dial a node that has left.
        self.0.transport.close();
    }

    /// Starts `task` as one of the node's own: [`Node::shutdown`] ends it. After shutdown
    /// it is dropped without running.
    pub(crate) fn spawn_owned<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.0.tasks);
        if self.is_closed() {
            return;
        }
        // Finished tasks are reaped as new ones start, so the set holds only live ones
        // (and the few that ended since the last start).
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    pub(crate) fn now(&self) -> Now {
        let mono = Time(u64::try_from(self.0.start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Now { mono, unix_ns }
    }
}
