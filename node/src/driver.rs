//! The tokio driver: owns the transport, the timers and the application's channels, and feeds
//! the [`Core`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_nat::NatType;
use nodenet_rendezvous::{Coordinates, NONCE_LEN as RDV_NONCE_LEN, ReplayCache};
use nodenet_routing::{Contact, Time};
use nodenet_transport::{
    Conn, ConnId, Event, Packet, SendError as ConnSendError, Transport, next_event,
};
use nodenet_wire::{Addr, FrameType};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::core::{
    Action, Attested, Core, CoreConfig, Delivery, EdgeRefusal, Handled, Maintenance, NodeEvent,
    Now, small_frame,
};
use crate::{AlreadyTaken, DialNodeError, JoinError, SendError, Stats};
use nodenet_proto::CoreRng;

/// Default depth of the deliveries queue.
pub const DEFAULT_DELIVERY_BUFFER: usize = 64;

/// How long the losing connection of a crossed dial keeps delivering before we close it.
const DUPLICATE_GRACE: Duration = Duration::from_secs(5);
/// Losing connections draining at once, at most (more are closed at once).
const MAX_DRAINING: usize = 64;

/// Time [`Node::dial`] gives each address of a contact.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time a rendezvous waits for its answer.
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Node`]: [`Builder::bind`] binds QUIC for it and starts it; [`Builder::build`]
/// takes a transport of your own ([`Builder::transport`], e.g. the in-memory hub's).
pub struct Builder {
    identity: Identity,
    events: broadcast::Sender<NodeEvent>,
    transport: Option<Arc<dyn Transport>>,
    quic: nodenet_transport::quic::QuicConfig,
    config: CoreConfig,
    delivery_buffer: usize,
    admission: Option<crate::core::AdmissionHook>,
    seed: Option<u64>,
    advertise_set: bool,
    subnets: Option<bool>,
    rendezvous_timeout: Duration,
    direct_dial_timeout: Duration,
    media_consent: Option<crate::media::ConsentHook>,
    stream_admission: Option<crate::streams::StreamHook>,
    birthday: nodenet_nat::birthday::BirthdayConfig,
    attest: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("id", &self.identity.node_id())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Proof-of-work difficulty enforced on every peer and originator (0, the default, is off).
    pub fn min_difficulty(mut self, bits: u32) -> Self {
        self.config.difficulty = bits;
        self
    }

    /// Which peers may call us: an inbound media session from a peer the hook refuses is
    /// closed as refused. Unset (the default), every call is refused. The hook runs on the
    /// node's event path, so keep it quick; it is asked only once the peer's proof of work
    /// passed and the caps have room for the call.
    pub fn media_consent(
        mut self,
        allow: impl Fn(&NodeId) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.media_consent = Some(Box::new(allow));
        self
    }

    /// Which inbound streams may reach their listener, by peer and protocol: a stream the
    /// hook refuses is refused ([`Refusal::Refused`](nodenet_transport::Refusal::Refused))
    /// and counted in [`Stats::dropped_stream_refused`](crate::Stats::dropped_stream_refused).
    /// Unset (the default), every stream of a protocol with a live
    /// [`Node::accept_streams`] listener is let through (within the caps).
    pub fn stream_admission(
        mut self,
        allow: impl Fn(&NodeId, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.stream_admission = Some(Box::new(allow));
        self
    }

    /// How birthday punches (symmetric ↔ cone NATs) are shaped and rate-limited.
    pub fn birthday(mut self, config: nodenet_nat::birthday::BirthdayConfig) -> Self {
        self.birthday = config;
        self
    }

    /// Volunteer as a relay.
    pub fn relay(mut self, on: bool) -> Self {
        self.config.relay = on;
        self
    }

    /// As a relay, tell each side of a pair where we see the other (on by default): the
    /// attestation a birthday punch needs before it probes a host. Off, the relay's frames
    /// are the reference's, byte for byte, and the pairs it carries stay relayed when only a
    /// birthday punch would join them.
    pub fn relay_attestation(mut self, on: bool) -> Self {
        self.attest = on;
        self
    }

    /// A local policy on which peers may hold an edge with us (not a security boundary: anyone
    /// can still route messages to us through others).
    pub fn edge_admission(mut self, allow: impl Fn(&NodeId) -> bool + Send + 'static) -> Self {
        self.admission = Some(Box::new(allow));
        self
    }

    /// Depth of the deliveries queue (default 64); a full queue drops and counts.
    pub fn delivery_buffer(mut self, n: usize) -> Self {
        self.delivery_buffer = n.max(1);
        self
    }

    /// Maintenance timers.
    pub fn maintenance(mut self, m: Maintenance) -> Self {
        self.config.maintenance = m;
        self
    }

    /// Addresses to advertise for ourselves (default: the transport's). Empty for a node that
    /// cannot be dialed (behind NAT): it dials out and still routes over those edges.
    pub fn advertise(mut self, addrs: Vec<Addr>) -> Self {
        self.config.advertise = addrs;
        self.advertise_set = true;
        self
    }

    /// Turns subnet accounting on or off: the caps on knowledge entries and preferred live
    /// edges per /24 (IPv4) or /64 (IPv6) that keep one network from filling our table. On by
    /// default for an IP transport, except one bound to a loopback address: every peer it
    /// can reach shares its one subnet, so the caps would only cripple it.
    pub fn subnet_accounting(mut self, on: bool) -> Self {
        self.subnets = Some(on);
        self
    }

    /// Time hole-punches (default on): our Connect asks the peer to hold its punch until our
    /// Sync, sent when its ack arrives, and we punch half the measured round trip later, so
    /// both first datagrams leave together; a peer's such request is honoured. Off, we
    /// behave as the reference: the target punches as soon as the Connect arrives.
    pub fn timed_punch(mut self, on: bool) -> Self {
        self.config.timed_punch = on;
        self
    }

    /// Inbound edges accepted at most (default 256).
    pub fn max_inbound_edges(mut self, n: usize) -> Self {
        self.config.max_inbound_edges = n;
        self
    }

    /// How long `rendezvous` (and so `connect` to a node we hold no edge with) waits for a
    /// verified answer (default 10 s): connecting to an offline NodeId fails after this.
    pub fn rendezvous_timeout(mut self, t: Duration) -> Self {
        self.rendezvous_timeout = t;
        self
    }

    /// How long `connect` gives each direct dial (default [`crate::DIRECT_DIAL_TIMEOUT`]).
    pub fn direct_dial_timeout(mut self, t: Duration) -> Self {
        self.direct_dial_timeout = t;
        self
    }

    /// Makes the node's nonces and random lookups a fixed function of `seed`, for tests that
    /// want repeatable runs. **Never on a real network**: whoever guesses the seed predicts
    /// every nonce, and the answers the node accepts rest on them. By default the node's
    /// generator is keyed from the operating system ([`crate::CoreRng::from_os`]).
    pub fn deterministic_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A watcher of the node's events from its very start, before [`Builder::bind`] starts
    /// it: what [`Node::events`] gives, without the window between start and subscribing.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The transport to run over instead of binding QUIC: an in-memory hub's for tests and
    /// simulations, or one you bound yourself. It must have been made for this builder's
    /// identity ([`Builder::build`] checks).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Settings of the QUIC transport [`Builder::bind`] makes (inbound caps, timers, media).
    pub fn quic_config(mut self, config: nodenet_transport::quic::QuicConfig) -> Self {
        self.quic = config;
        self
    }

    /// Binds a QUIC transport for this identity at `addr` (e.g. `0.0.0.0:4242`, or port 0 for
    /// any), builds the node over it and starts it ([`Node::spawn`]). Must be called within a
    /// tokio runtime. To watch events from the start, take [`Builder::subscribe`] before.
    ///
    /// # Errors
    /// [`BuildError::NoRuntime`] outside a tokio runtime, [`BuildError::Bind`] if the socket
    /// cannot be bound, [`BuildError::OwnDifficulty`] (see [`Builder::build`]), and
    /// [`BuildError::TransportAlreadySet`] if [`Builder::transport`] was called.
    pub async fn bind(mut self, addr: std::net::SocketAddr) -> Result<Node, BuildError> {
        if self.transport.is_some() {
            return Err(BuildError::TransportAlreadySet);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let quic = nodenet_transport::quic::QuicTransport::bind(
            &self.identity,
            addr,
            std::mem::take(&mut self.quic),
        )
        .map_err(BuildError::Bind)?;
        self.transport = Some(Arc::new(quic));
        let node = self.build()?;
        node.spawn();
        Ok(node)
    }

    /// Builds the node over the transport given with [`Builder::transport`]. Nothing runs
    /// until [`Node::spawn`], so [`Node::events`] subscribed before it misses nothing.
    ///
    /// # Errors
    /// [`BuildError::NoTransport`] without one; [`BuildError::IdentityMismatch`] when the
    /// transport authenticates as another NodeId than the identity (peers would see one node,
    /// the overlay another); [`BuildError::OwnDifficulty`] when our own NodeId misses the
    /// difficulty we demand of peers (every peer that enforces it would refuse us).
    pub fn build(self) -> Result<Node, BuildError> {
        let Some(transport) = self.transport else {
            return Err(BuildError::NoTransport);
        };
        let id = self.identity.node_id();
        if transport.local_id() != id {
            return Err(BuildError::IdentityMismatch {
                identity: id,
                transport: transport.local_id(),
            });
        }
        let bits = nodenet_pow::leading_zero_bits(&id);
        if bits < self.config.difficulty {
            return Err(BuildError::OwnDifficulty {
                bits,
                required: self.config.difficulty,
            });
        }
        let mut config = self.config;
        if !self.advertise_set {
            // A wildcard bind (0.0.0.0, ::) is no address anyone can dial: advertise nothing,
            // and peers learn ours from the edges they see (and the reflexive address).
            let local = transport.local_addr();
            let wildcard = local
                .endpoint
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified());
            config.advertise = if wildcard { Vec::new() } else { vec![local] };
        }
        let local = transport.local_addr();
        let loopback = local
            .as_ref()
            .endpoint
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        config.ip = transport.is_ip();
        config.subnets = self
            .subnets
            .unwrap_or_else(|| transport.is_ip() && !loopback);
        let maintenance_tick = config.maintenance.tick;
        let rng = self
            .seed
            .map_or_else(CoreRng::from_os, CoreRng::deterministic);
        let mut core = Core::new(self.identity, config, rng);
        if let Some(a) = self.admission {
            core.set_admission(a);
        }
        let (deliveries_tx, deliveries_rx) = mpsc::channel(self.delivery_buffer);
        let (dials_tx, dials_rx) = mpsc::channel(256);
        let (shutdown, _) = watch::channel(false);
        let events = self.events;
        Ok(Node(Arc::new(Shared {
            core: Mutex::new(core),
            transport,
            conns: Mutex::new(HashMap::new()),
            deliveries_tx,
            deliveries_rx: Mutex::new(Some(deliveries_rx)),
            dials_tx,
            dials_rx: Mutex::new(Some(dials_rx)),
            shutdown,
            start: Instant::now(),
            tick: maintenance_tick,
            waiters: Mutex::new(HashMap::new()),
            boxes: Mutex::new(ReplayCache::new()),
            rendezvous_timeout: self.rendezvous_timeout,
            direct_dial_timeout: self.direct_dial_timeout,
            draining: Mutex::new(HashSet::new()),
            events,
            punch_waiters: Mutex::new(HashMap::new()),
            punch_bursts: std::sync::atomic::AtomicUsize::new(0),
            held_punches: Mutex::new(HashMap::new()),
            relay_waiters: Mutex::new(HashMap::new()),
            relayed: Mutex::new(HashMap::new()),
            punched: Mutex::new(HashSet::new()),
            media: crate::media::Media::new(self.media_consent),
            streams: crate::streams::Streams::new(self.stream_admission),
            birthday: Mutex::new(nodenet_nat::birthday::Limits::new(self.birthday)),
            relay_binds: Mutex::new(Vec::new()),
            attested: Mutex::new(HashMap::new()),
            attestation_lookups: Mutex::new(HashSet::new()),
            trusted: Mutex::new(HashMap::new()),
            attest: self.attest,
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        })))
    }
}

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
    tick: Duration,
    /// Open rendezvous requests: nonce → the caller waiting for the answer.
    pub(crate) waiters: Mutex<HashMap<[u8; RDV_NONCE_LEN], oneshot::Sender<Coordinates>>>,
    /// Sealed boxes opened recently (replay protection).
    pub(crate) boxes: Mutex<ReplayCache>,
    pub(crate) rendezvous_timeout: Duration,
    pub(crate) direct_dial_timeout: Duration,
    /// Losing connections of crossed dials, still delivering for a grace period.
    draining: Mutex<HashSet<ConnId>>,
    /// Watchers of [`Node::events`].
    events: broadcast::Sender<NodeEvent>,
    /// Open hole-punch requests: nonce → the caller waiting for the ConnectAck (the peer's
    /// candidates, and whether it holds its punch for our Sync).
    pub(crate) punch_waiters: Mutex<HashMap<Nonce, oneshot::Sender<PunchAnswer>>>,
    /// Punch bursts running.
    punch_bursts: std::sync::atomic::AtomicUsize,
    /// Punches held for a peer's Sync: nonce → (the peer, the release).
    held_punches: Mutex<HashMap<Nonce, (NodeId, oneshot::Sender<()>)>>,
    /// Open relay requests: nonce → (the relay asked, the caller waiting for its grant).
    pub(crate) relay_waiters: Mutex<HashMap<[u8; nodenet_nat::NONCE_LEN], RelayWaiting>>,
    /// Our connections that run through a relay (a direct one replaces them).
    /// Our edges that run through a relay, and the relay carrying each (the one we asked,
    /// or the one that bound the peer to us).
    pub(crate) relayed: Mutex<HashMap<ConnId, NodeId>>,
    /// Our connections that a hole-punch of ours opened (reported as punched, not direct).
    pub(crate) punched: Mutex<HashSet<ConnId>>,
    /// Inbound media admission.
    pub(crate) media: crate::media::Media,
    /// Stream listeners and inbound stream admission.
    pub(crate) streams: crate::streams::Streams,
    /// Birthday punching's limits.
    pub(crate) birthday: Mutex<nodenet_nat::birthday::Limits>,
    /// Relay sessions bound to us (RelayBind): the relay's callee-side address, and until
    /// when a caller may come in from it.
    relay_binds: Mutex<Vec<(Addr, NodeId, Instant)>>,
    /// Where a relay that *we* asked (a RelayGrant of ours) sees the peer at the other end of
    /// our connection: the host (port 0). A birthday punch probes only that host. An entry
    /// lives as long as its connection.
    pub(crate) attested: Mutex<HashMap<ConnId, Addr>>,
    /// Peers whose host we are asking relays about now (one lookup per peer, a few at once).
    pub(crate) attestation_lookups: Mutex<HashSet<NodeId>>,
    /// What the relays' vote decided for a relayed edge (asked once per edge).
    pub(crate) trusted: Mutex<HashMap<ConnId, Option<Addr>>>,
    /// Whether, as a relay, we attest each side's host to the other.
    attest: bool,
    /// Every task the node starts (dials, punch bursts, held punches, drains, upgrades,
    /// birthday attempts, media admission): [`Node::shutdown`] ends them all, so nothing
    /// outlives the node or keeps its state alive.
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// How long after a RelayBind an inbound edge from its address counts as relayed.
const RELAY_BIND_TTL: Duration = Duration::from_secs(30);
/// RelayBinds remembered at once.
const MAX_RELAY_BINDS: usize = 64;

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

/// An open relay request: the relay asked, and the caller waiting for its grant (the
/// address to dial, and the relay's attestation, if any).
pub(crate) type RelayWaiting = (NodeId, oneshot::Sender<(Addr, Option<Attested>)>);

/// Volleys in a punch burst.
pub(crate) const PUNCH_VOLLEYS: usize = 5;
/// Time between two volleys.
pub(crate) use nodenet_proto::connect::PUNCH_INTERVAL;
/// Punch bursts running at once at most.
const MAX_PUNCH_BURSTS: usize = 32;
/// How long a timed punch waits for the peer's Sync before it goes anyway.
pub(crate) const SYNC_WAIT: Duration = Duration::from_secs(2);

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
        let ids: Vec<ConnId> = lock(&self.0.conns).values().map(Conn::id).collect();
        let relayed = lock(&self.0.relayed);
        ids.iter().filter(|id| relayed.contains_key(id)).count()
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
        let mut tick = tokio::time::interval(self.0.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased, with the rare events first: a steady stream of inbound frames must not
            // starve maintenance or finished dials.
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tick.tick() => {
                    let now = self.now();
                    let mut core = lock(&self.0.core);
                    core.on_tick(now);
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

    pub(crate) fn on_frame(&self, conn: &Conn, mut packet: Packet) {
        let now = self.now();
        let peer = conn.remote_id();
        let mut core = lock(&self.0.core);
        if !self.is_registered(conn) && !self.is_draining(conn) {
            match self.admit(&mut core, now, conn) {
                Ok(()) => {}
                // The loser of a crossed dial (now draining): its frames are the authenticated
                // peer's and are handled.
                Err(EdgeRefusal::Duplicate) => {}
                Err(_) => return,
            }
        }
        match conn.with_remote_addr(|from| core.on_frame(now, peer, from, &mut packet)) {
            Handled::Forward(candidates) => {
                // Local repair: the packet the frame arrived in (its TTL patched in place) is
                // offered to each candidate in turn and handed back on refusal, so it is never
                // copied. A busy edge is only skipped; a closed one is dead.
                for next in candidates.as_slice() {
                    let Some(edge) = lock(&self.0.conns).get(next).cloned() else {
                        core.on_send_failed(now, next);
                        continue;
                    };
                    match edge.send_packet(packet) {
                        Ok(()) => break,
                        Err(unsent) => {
                            if unsent.error == ConnSendError::QueueFull {
                                core.count_queue_full();
                            } else {
                                core.on_send_failed(now, next);
                            }
                            packet = unsent.packet;
                        }
                    }
                }
            }
            Handled::Deliver(d) => {
                core.count_delivery(self.0.deliveries_tx.try_send(d).is_ok());
            }
            Handled::Rendezvous { nonce, coordinates } => {
                if let Some(waiter) = lock(&self.0.waiters).remove(&nonce) {
                    let _ = waiter.send(coordinates);
                }
            }
            Handled::PunchRequested {
                peer,
                addrs,
                hold: None,
            } => self.punch_burst(Some(peer), addrs),
            Handled::PunchRequested {
                peer,
                addrs,
                hold: Some(nonce),
            } => self.hold_punch(peer, nonce, addrs),
            Handled::PunchSync { peer, nonce } => {
                let mut held = lock(&self.0.held_punches);
                if held.get(&nonce).is_some_and(|(p, _)| *p == peer) {
                    if let Some((_, release)) = held.remove(&nonce) {
                        let _ = release.send(());
                    }
                }
            }
            Handled::RelayBind { addr } => {
                // The caller will come in from this address: that edge runs through the
                // relay, though we did not ask for it.
                {
                    let mut binds = lock(&self.0.relay_binds);
                    let t = Instant::now();
                    binds.retain(|(_, _, until)| *until > t);
                    if binds.len() < MAX_RELAY_BINDS {
                        binds.push((addr.clone(), peer, t + RELAY_BIND_TTL));
                    }
                }
                self.punch_burst(None, vec![addr]);
            }
            Handled::RelayRequested {
                from,
                nonce,
                target,
            } => self.open_relay(&mut core, from, nonce, target),
            Handled::RelayGranted {
                from,
                nonce,
                addr,
                attest,
            } => {
                let mut waiters = lock(&self.0.relay_waiters);
                if waiters.get(&nonce).is_some_and(|(relay, _)| *relay == from) {
                    if let Some((_, waiter)) = waiters.remove(&nonce) {
                        let _ = waiter.send((addr, attest));
                    }
                }
            }
            Handled::PunchAck {
                nonce,
                addrs,
                flags,
                public,
            } => {
                if let Some(waiter) = lock(&self.0.punch_waiters).remove(&nonce) {
                    let _ = waiter.send(PunchAnswer {
                        addrs,
                        flags,
                        public,
                    });
                }
            }
            Handled::BirthdayRequested {
                peer,
                nonce,
                addrs,
                public,
            } => self.on_birthday_request(&mut core, now, peer, nonce, addrs, public),
            Handled::Done => {}
        }
        self.drain(&mut core, now);
    }

    /// Opens a relay session for `from` toward `target`: the caller's side goes to `from` in a
    /// RelayGrant, the callee's side to `target` in a RelayBind (it punches toward it).
    fn open_relay(
        &self,
        core: &mut Core,
        from: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        target: NodeId,
    ) {
        let Ok((caller, callee)) = self.0.transport.relay() else {
            return;
        };
        let (caller, callee) = (self.dialable(caller, core), self.dialable(callee, core));
        // Where our own edges see each side: each learns the other's host from us.
        let (seen_target, seen_from) = if self.0.attest {
            (self.seen_host(&target), self.seen_host(&from))
        } else {
            (None, None)
        };
        let grant = nodenet_nat::RelayGrant {
            nonce,
            addr: caller.as_ref(),
            attest: seen_target.as_ref().map(|h| nodenet_nat::Attestation {
                peer: target,
                host: h.as_ref(),
            }),
        }
        .encode();
        let bind = nodenet_nat::RelayBind {
            addr: callee.as_ref(),
            attest: seen_from.as_ref().map(|h| nodenet_nat::Attestation {
                peer: from,
                host: h.as_ref(),
            }),
        }
        .encode();
        let (Ok(grant), Ok(bind)) = (grant, bind) else {
            return;
        };
        let _ = self.send_to(&target, &small_frame(FrameType::RELAY_BIND, &bind));
        let _ = self.send_to(&from, &small_frame(FrameType::RELAY_GRANT, &grant));
        core.count_relay_granted();
    }

    /// The host (as an address with port 0) our edge to `peer` comes from, unless that edge
    /// runs through a relay itself (we would vouch for the relay's host).
    fn seen_host(&self, peer: &NodeId) -> Option<Addr> {
        let conn = self.conn_to(peer).filter(|c| !self.is_relayed(c))?;
        conn.with_remote_addr(|a| {
            nodenet_nat::birthday::host_of(&a.endpoint)
                .map(|host| Addr::new(a.net.clone(), format!("{host}:0")))
        })
    }

    /// A relay endpoint bound on a wildcard IP, given the IP peers reach us at instead.
    fn dialable(&self, addr: Addr, core: &Core) -> Addr {
        let Ok(sa) = addr.endpoint.parse::<std::net::SocketAddr>() else {
            return addr;
        };
        if !sa.ip().is_unspecified() {
            return addr;
        }
        let ip = core
            .coordinates()
            .iter()
            .chain(core.reflexive())
            .find_map(|a| a.endpoint.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        match ip {
            Some(ip) => Addr::new(
                addr.net,
                std::net::SocketAddr::new(ip, sa.port()).to_string(),
            ),
            None => addr,
        }
    }

    /// A timed punch: toward `addrs` when `peer`'s Sync for `nonce` arrives, or after
    /// [`SYNC_WAIT`] without one. Past [`MAX_PUNCH_BURSTS`] held punches, it goes at once.
    fn hold_punch(&self, peer: NodeId, nonce: [u8; nodenet_nat::NONCE_LEN], addrs: Vec<Addr>) {
        let (tx, rx) = oneshot::channel();
        {
            let mut held = lock(&self.0.held_punches);
            if held.len() >= MAX_PUNCH_BURSTS || held.contains_key(&nonce) {
                drop(held);
                return self.punch_burst(Some(peer), addrs);
            }
            held.insert(nonce, (peer, tx));
        }
        let node = self.clone();
        self.spawn_owned(async move {
            let _ = tokio::time::timeout(SYNC_WAIT, rx).await;
            lock(&node.0.held_punches).remove(&nonce);
            node.punch_burst(Some(peer), addrs);
        });
    }

    /// Punches toward `addrs` in [`PUNCH_VOLLEYS`] volleys [`PUNCH_INTERVAL`] apart, in the
    /// background; at most [`MAX_PUNCH_BURSTS`] bursts run at once (the rest are dropped).
    pub(crate) fn punch_burst(&self, peer: Option<NodeId>, addrs: Vec<Addr>) {
        if addrs.is_empty() {
            return;
        }
        let running = &self.0.punch_bursts;
        if running.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= MAX_PUNCH_BURSTS {
            running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return;
        }
        let node = self.clone();
        // An edge that exists already (a relayed one being upgraded) does not end the burst;
        // a new one does.
        let before = peer.and_then(|p| self.conn_to(&p)).map(|c| c.id());
        self.spawn_owned(async move {
            for volley in 0..PUNCH_VOLLEYS {
                if volley > 0 {
                    tokio::time::sleep(PUNCH_INTERVAL).await;
                }
                let now = peer.and_then(|p| node.conn_to(&p)).map(|c| c.id());
                if now.is_some() && now != before {
                    break;
                }
                for a in &addrs {
                    // Best effort: a refused address is simply not punched.
                    let _ = node.0.transport.punch(a);
                }
            }
            node.0
                .punch_bursts
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }

    fn is_draining(&self, conn: &Conn) -> bool {
        lock(&self.0.draining).contains(&conn.id())
    }

    /// The loser of a crossed dial: its dialer switches to the winner and closes it, and what
    /// it queued on it before that must still arrive, so it stays readable; it is closed after
    /// a grace period in case its dialer never does.
    fn drain_duplicate(&self, conn: &Conn) {
        let mut draining = lock(&self.0.draining);
        if draining.len() >= MAX_DRAINING {
            conn.close();
            return;
        }
        draining.insert(conn.id());
        drop(draining);
        let node = self.clone();
        let conn = conn.clone();
        self.spawn_owned(async move {
            let _ = tokio::time::timeout(DUPLICATE_GRACE, conn.closed()).await;
            conn.close();
            lock(&node.0.draining).remove(&conn.id());
        });
    }

    /// The registered, open connection to `peer`.
    pub(crate) fn conn_to(&self, peer: &NodeId) -> Option<Conn> {
        lock(&self.0.conns)
            .get(peer)
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Closes our edge to `peer`, if we hold one (the peer sees it close). The overlay may
    /// link the two again later, as it would any pair.
    pub fn disconnect(&self, peer: &NodeId) -> bool {
        let held = lock(&self.0.conns).contains_key(peer);
        self.close_edge(peer);
        held
    }

    /// Closes the edge to `peer`, if any.
    pub(crate) fn close_edge(&self, peer: &NodeId) {
        let conn = lock(&self.0.conns).remove(peer);
        if let Some(c) = conn {
            c.close();
            let now = self.now();
            let mut core = lock(&self.0.core);
            core.on_edge_down(now, peer);
            self.drain(&mut core, now);
        }
    }

    /// True once [`Node::shutdown`] ran.
    pub(crate) fn is_closed(&self) -> bool {
        *self.0.shutdown.borrow()
    }

    fn is_registered(&self, conn: &Conn) -> bool {
        lock(&self.0.conns)
            .get(&conn.remote_id())
            .is_some_and(|c| c == conn)
    }

    /// Admits a new edge (or refuses and closes it). With two connections to one peer (both
    /// sides dialed at once), both sides keep the one dialed by the smaller NodeId; a
    /// connection that is already closed, or one the same side dialed before, is simply
    /// replaced by the new one.
    pub(crate) fn admit(&self, core: &mut Core, now: Now, conn: &Conn) -> Result<(), EdgeRefusal> {
        // A frame queued before its edge closed, or a dial that completed as its connection
        // died: nothing may bring a dead connection back (its Closed event may already have
        // been handled, and nothing would ever take it down again).
        if conn.is_closed() {
            return Err(EdgeRefusal::Closed);
        }
        let peer = conn.remote_id();
        if conn.direction() == nodenet_transport::Direction::Inbound {
            let from = conn.remote_addr();
            let t = Instant::now();
            let bound = lock(&self.0.relay_binds)
                .iter()
                .find(|(a, _, until)| *a == from && *until > t)
                .map(|(_, relay, _)| *relay);
            if let Some(relay) = bound {
                lock(&self.0.relayed).insert(conn.id(), relay);
            }
        }
        let existing = lock(&self.0.conns).get(&peer).cloned();
        if let Some(old) = existing {
            let dialer = |c: &Conn| match c.direction() {
                nodenet_transport::Direction::Outbound => core.id(),
                _ => c.remote_id(),
            };
            let (new_dialer, old_dialer) = (dialer(conn), dialer(&old));
            // A direct connection beats one through a relay, whoever dialed.
            let (new_relayed, old_relayed) = (self.is_relayed(conn), self.is_relayed(&old));
            let wins = if new_relayed == old_relayed {
                new_dialer <= old_dialer
            } else {
                old_relayed
            };
            if old.is_closed() || wins {
                lock(&self.0.conns).insert(peer, conn.clone());
                core.set_edge_relayed(&peer, self.is_relayed(conn));
                if !old.is_closed() {
                    self.drain_duplicate(&old);
                }
                return Ok(());
            }
            self.drain_duplicate(conn);
            return Err(EdgeRefusal::Duplicate);
        }
        match core.on_edge_up(
            now,
            peer,
            conn.remote_key(),
            conn.direction() == nodenet_transport::Direction::Outbound,
            &conn.remote_addr(),
        ) {
            Ok(()) => {
                lock(&self.0.conns).insert(peer, conn.clone());
                core.set_edge_relayed(&peer, self.is_relayed(conn));
                Ok(())
            }
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// The host the relay carrying our edge to `peer` attested, if that edge is relayed and
    /// the relay did.
    pub(crate) fn attested_host(&self, peer: &NodeId) -> Option<Addr> {
        let conn = self.conn_to(peer)?;
        lock(&self.0.attested).get(&conn.id()).cloned()
    }

    /// True for a connection of ours that runs through a relay.
    pub(crate) fn is_relayed(&self, conn: &Conn) -> bool {
        lock(&self.0.relayed).contains_key(&conn.id())
    }

    /// The relay carrying our edge to `peer`, if that edge is relayed.
    pub(crate) fn carrier_of(&self, peer: &NodeId) -> Option<NodeId> {
        let conn = self.conn_to(peer)?;
        lock(&self.0.relayed).get(&conn.id()).copied()
    }

    fn on_closed(&self, conn: &Conn) {
        lock(&self.0.relayed).remove(&conn.id());
        lock(&self.0.attested).remove(&conn.id());
        lock(&self.0.trusted).remove(&conn.id());
        lock(&self.0.punched).remove(&conn.id());
        let peer = conn.remote_id();
        let mut conns = lock(&self.0.conns);
        if conns.get(&peer).is_some_and(|c| c == conn) {
            conns.remove(&peer);
            drop(conns);
            let now = self.now();
            let mut core = lock(&self.0.core);
            core.on_edge_down(now, &peer);
            self.drain(&mut core, now);
        }
    }

    fn on_dialed(&self, contact: Contact, result: Result<Conn, ()>) {
        let now = self.now();
        let mut core = lock(&self.0.core);
        core.on_dial_finished(&contact.id);
        match result {
            Ok(conn) => {
                let _ = self.admit(&mut core, now, &conn);
            }
            Err(()) => core.on_dial_failed(now, &contact.id),
        }
        self.drain(&mut core, now);
    }

    pub(crate) fn send_to(&self, peer: &NodeId, frame: &[u8]) -> Result<(), ConnSendError> {
        lock(&self.0.conns)
            .get(peer)
            .ok_or(ConnSendError::ConnClosed)?
            .send(frame)
    }

    /// Carries out the core's queued actions.
    pub(crate) fn drain(&self, core: &mut Core, now: Now) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Send { to, frame } => match self.send_to(&to, &frame) {
                    Ok(()) => {}
                    Err(ConnSendError::QueueFull) => core.count_queue_full(),
                    Err(_) if core.edges().contains(&to) => core.on_send_failed(now, &to),
                    Err(_) => {}
                },
                Action::SendAny { to, frame } => {
                    for peer in to {
                        if self.send_to(&peer, &frame).is_ok() {
                            break;
                        }
                    }
                }
                Action::Dial { contact, timeout } => self.dial_in_background(contact, timeout),
                Action::Notify(event) => {
                    // No watcher is fine.
                    let _ = self.0.events.send(event);
                }
                Action::Close(peer) => {
                    if let Some(c) = lock(&self.0.conns).remove(&peer) {
                        c.close();
                    }
                }
                Action::CheckOwnIp { addr } => {
                    // An IP is the host's own exactly when a socket can bind to it.
                    let own = addr
                        .endpoint
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|a| std::net::UdpSocket::bind((a.ip(), 0)).is_ok());
                    core.on_own_ip(&addr, own);
                }
            }
        }
    }

    fn dial_in_background(&self, contact: Contact, timeout: Duration) {
        let transport = self.0.transport.clone();
        let tx = self.0.dials_tx.clone();
        self.spawn_owned(async move {
            let mut result = Err(());
            for addr in &contact.addrs {
                if let Ok(Ok(conn)) =
                    tokio::time::timeout(timeout, transport.dial(contact.id, addr)).await
                {
                    result = Ok(conn);
                    break;
                }
            }
            let _ = tx.send((contact, result)).await;
        });
    }
}
