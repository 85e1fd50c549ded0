//! The node's decision core: sans-IO.
//!
//! [`Core`] owns the tables and every rule of the protocol, and nothing else: no socket, no
//! task, no clock, no randomness of its own. Inputs arrive as method calls with the time
//! ([`Now`]); outputs are return values and [`Action`]s queued for the driver
//! ([`Core::poll_action`]). The tokio driver of the `nodenet` crate and the
//! discrete-event simulator ([`crate::sim`]) drive the same core.
//!
//! Inputs: [`Core::on_edge_up`], [`Core::on_edge_down`], [`Core::on_frame`],
//! [`Core::on_dial_failed`], [`Core::on_tick`], and the application's [`Core::originate`] and
//! [`Core::bootstrap`]. After each, drain [`Core::poll_action`] until it returns `None`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use nodenet_identity::{Identity, derive_id};
use nodenet_kad::NodeId;
use nodenet_nat::{NatType, Reflexive};
use nodenet_rendezvous::{Coordinates, Hello, NONCE_LEN as RDV_NONCE_LEN, Reply};
use nodenet_routing::control::{self, Contact, NONCE_LEN};
use nodenet_routing::msg::{self, MAX_HOPS, MsgFields, MsgRef};
use nodenet_routing::{
    Candidates, Caps, Decision, DropReason, Edges, KMIN, Knowledge, Observed, Phase, SubnetKey,
    Time, TokenBucket, decide, first_hops, handlers, id_in_bucket,
};
use nodenet_wire::{Addr, Frame, FrameType, MAX_PACKET_LEN, Writer};

use crate::Stats;
use crate::connect::RelayCandidate;
use crate::relays::RelayHints;
use crate::rng::CoreRng;

/// The time, as the core sees it: the driver's monotonic clock and the wall clock (for the
/// `sent` field of envelopes and their freshness window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Time,
    /// Unix time in nanoseconds.
    pub unix_ns: i64,
}

/// Maintenance timers. The defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Maintenance {
    /// How often maintenance runs.
    pub tick: Duration,
    /// A sibling edge idle this long gets a ping.
    pub keepalive_sibling: Duration,
    /// A finger edge idle this long gets a ping.
    pub keepalive_finger: Duration,
    /// A sibling edge idle this long is dead.
    pub dead_sibling: Duration,
    /// A finger edge idle this long is dead.
    pub dead_finger: Duration,
    /// How often to look up our own id (finds our neighbourhood).
    pub self_lookup: Duration,
    /// How often to ask siblings for theirs.
    pub sibling_exchange: Duration,
    /// How often to look for a stale bucket to refresh.
    pub refresh_check: Duration,
    /// A bucket not refreshed for this long is stale.
    pub bucket_stale: Duration,
    /// Time a dial may take.
    pub dial_timeout: Duration,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            keepalive_sibling: Duration::from_secs(15),
            keepalive_finger: Duration::from_secs(25),
            dead_sibling: Duration::from_secs(45),
            dead_finger: Duration::from_secs(75),
            self_lookup: Duration::from_secs(60),
            sibling_exchange: Duration::from_secs(30),
            refresh_check: Duration::from_secs(60),
            bucket_stale: Duration::from_secs(15 * 60),
            dial_timeout: Duration::from_secs(10),
        }
    }
}

impl Maintenance {
    /// Timers scaled down by `factor` (for tests and simulations that want convergence in
    /// fewer simulated seconds). The bucket-staleness threshold scales too.
    pub fn scaled(factor: u32) -> Self {
        let d = Self::default();
        let f = factor.max(1);
        Self {
            tick: d.tick / f,
            keepalive_sibling: d.keepalive_sibling / f,
            keepalive_finger: d.keepalive_finger / f,
            dead_sibling: d.dead_sibling / f,
            dead_finger: d.dead_finger / f,
            self_lookup: d.self_lookup / f,
            sibling_exchange: d.sibling_exchange / f,
            refresh_check: d.refresh_check / f,
            bucket_stale: d.bucket_stale / f,
            dial_timeout: d.dial_timeout,
        }
    }
}

/// The core's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Proof-of-work difficulty enforced on peers and originators (0 = off).
    pub difficulty: u32,
    /// Inbound edges accepted at most.
    pub max_inbound_edges: usize,
    /// Volunteer as a relay (advertised as a capability).
    pub relay: bool,
    /// Maintenance timers.
    pub maintenance: Maintenance,
    /// Addresses to advertise for ourselves.
    pub advertise: Vec<Addr>,
    /// Account live edges and knowledge by IP subnet (the diversity caps apply).
    pub subnets: bool,
    /// The transport is IP: reflexive reports must be reachable literal addresses.
    pub ip: bool,
    /// Time hole-punches by a Sync ([`nodenet_nat::FLAG_TIMED`]): ask for it in our
    /// Connects, and honour it in a peer's.
    pub timed_punch: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            difficulty: 0,
            max_inbound_edges: 256,
            relay: false,
            maintenance: Maintenance::default(),
            advertise: Vec::new(),
            subnets: false,
            ip: false,
            timed_punch: true,
        }
    }
}

/// Something the driver must do. Deliberately exhaustive (not `#[non_exhaustive]`): a driver
/// must handle every action, so a new one is a compile error in each driver rather than
/// silently ignored. The price is that adding a variant is a breaking change of this crate,
/// which is why the core is `#[doc(hidden)]` and versioned with the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `frame` on the edge to `to`.
    Send {
        /// The peer.
        to: NodeId,
        /// A whole frame.
        frame: Vec<u8>,
    },
    /// Send `frame` on the first edge in `to` that accepts it.
    SendAny {
        /// Candidate edges, best first.
        to: Vec<NodeId>,
        /// A whole frame.
        frame: Vec<u8>,
    },
    /// Open an edge to this contact: its addresses one after the other, `timeout` each
    /// (at most [`MAX_DIAL_ADDRS`] addresses).
    Dial {
        /// Whom to dial, and where.
        contact: Contact,
        /// The time each address gets.
        timeout: Duration,
    },
    /// Close the edge to this peer.
    Close(NodeId),
    /// Tell the application (nothing to do on the network).
    Notify(NodeEvent),
    /// Our neighbours agree we are seen at `addr` (an IP `host:port`): ask the host whether
    /// that IP is one of its own (a public node, not one behind NAT), and answer with
    /// [`Core::on_own_ip`]. Until then the core treats the address as not its own.
    CheckOwnIp {
        /// The corroborated reflexive address.
        addr: Addr,
    },
}

/// A change in the node's state an application may want to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// An edge came up and was admitted.
    EdgeUp {
        /// The authenticated peer.
        peer: NodeId,
        /// We dialed it.
        outbound: bool,
    },
    /// An edge went down (closed, dead, or left).
    EdgeDown {
        /// The peer.
        peer: NodeId,
    },
}

/// How a payload reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Routed over the overlay (`send`).
    Routed,
    /// Over a direct edge (an App frame).
    Direct,
}

/// A payload for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it: for routed messages the signature-verified originator, for direct ones the
    /// authenticated peer.
    pub originator: NodeId,
    /// The payload.
    pub payload: Vec<u8>,
    /// How it came.
    pub via: Via,
    /// Overlay hops a routed message took (1: the originator held an edge to us); 0 for a
    /// direct frame or a message to ourselves.
    pub hops: u8,
}

/// What [`Core::on_frame`] decided for a frame.
#[derive(Debug)]
pub enum Handled {
    /// Send the frame (its TTL already patched in place) to the first of these edges that
    /// accepts it; tell [`Core::on_send_failed`] about each that does not.
    Forward(Candidates),
    /// Hand this to the application, then report the outcome with [`Core::count_delivery`].
    Deliver(Delivery),
    /// A verified rendezvous answer to the request with this nonce.
    Rendezvous {
        /// The request's nonce.
        nonce: [u8; RDV_NONCE_LEN],
        /// What the target told us, verified against its NodeId.
        coordinates: Coordinates,
    },
    /// A peer asks us to punch toward it (a verified Connect): send it punch datagrams at
    /// these addresses now; our ConnectAck is already queued.
    PunchRequested {
        /// The peer that will dial us.
        peer: NodeId,
        /// Where to punch (filtered and capped at [`MAX_PUNCH_CANDIDATES`]).
        addrs: Vec<Addr>,
        /// A timed punch: hold it until the peer's Sync with this nonce (or a timeout).
        hold: Option<[u8; nodenet_nat::NONCE_LEN]>,
    },
    /// The Sync of a timed punch: release the held punch with this nonce, if `peer` asked
    /// for it.
    PunchSync {
        /// The peer that sent the Sync.
        peer: NodeId,
        /// Its Connect's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
    },
    /// The answer to our Connect with this nonce: where the peer may be dialed.
    PunchAck {
        /// Our Connect's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The peer's candidate addresses (unsigned hints, bound to it by the envelope).
        addrs: Vec<Addr>,
        /// The ack's flags ([`nodenet_nat::FLAG_TIMED`]: the peer holds its punch until our
        /// Sync; [`nodenet_nat::FLAG_BIRTHDAY`]: it agrees to a birthday punch).
        flags: u8,
        /// With [`nodenet_nat::FLAG_HARD`]: the peer's public host (port 0).
        public: Option<Addr>,
    },
    /// A peer asks for a birthday punch (a verified Connect with
    /// [`nodenet_nat::FLAG_BIRTHDAY`]); not answered yet: the driver decides.
    BirthdayRequested {
        /// The peer.
        peer: NodeId,
        /// Its Connect's nonce (the attempt's token).
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// Where an easy peer is reached (its confirmed mapping), filtered.
        addrs: Vec<Addr>,
        /// A hard peer's public host (port 0).
        public: Option<Addr>,
    },
    /// A peer asks us, a volunteer relay, to carry a connection to `target` (which we hold an
    /// edge to): open a session, grant the caller its side and bind the target to the other.
    RelayRequested {
        /// The caller.
        from: NodeId,
        /// Its request's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The peer it wants to reach.
        target: NodeId,
    },
    /// A relay granted our request: dial the target at `addr`.
    RelayGranted {
        /// The relay that answered.
        from: NodeId,
        /// Our request's nonce.
        nonce: [u8; nodenet_nat::NONCE_LEN],
        /// The relay's caller-side address.
        addr: Addr,
        /// The relay's word on where it sees a peer (the target, if it is honest).
        attest: Option<Attested>,
    },
    /// A relay bound a caller to us: punch toward its callee-side address so its packets
    /// get through our NAT. The address is on the relay's own host (checked).
    RelayBind {
        /// Where to punch.
        addr: Addr,
    },
    /// Nothing more to do (answered through actions, absorbed, or dropped and counted).
    Done,
}

/// Addresses punched toward or dialed at most for one hole-punch.
pub const MAX_PUNCH_CANDIDATES: usize = 8;

/// A relay's attestation, owned: the peer it names and where the relay sees it (port 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The peer the relay vouches for.
    pub peer: NodeId,
    /// Its host, as an address with port 0.
    pub host: Addr,
}

impl From<nodenet_nat::Attestation<'_>> for Attested {
    fn from(a: nodenet_nat::Attestation<'_>) -> Self {
        Self {
            peer: a.peer,
            host: a.host.to_owned_addr(),
        }
    }
}

/// Why an edge was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeRefusal {
    /// The peer's NodeId does not meet the difficulty.
    #[error("peer does not meet the proof-of-work difficulty")]
    PowUnmet,
    /// The application's admission hook said no.
    #[error("refused by the edge admission policy")]
    Refused,
    /// Too many inbound edges.
    #[error("inbound edge cap reached")]
    InboundFull,
    /// An edge to this peer is already up.
    #[error("an edge to this peer is already up")]
    Duplicate,
    /// The connection closed before it could be admitted (a late frame of an edge already
    /// gone, or a dial that finished as its connection died).
    #[error("the connection is already closed")]
    Closed,
}

/// Why a message could not be originated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginateError {
    /// No live edge to launch from.
    #[error("no live edge to launch from")]
    Unroutable,
    /// Too many requests of this kind are outstanding.
    #[error("too many requests outstanding")]
    Busy,
    /// The message does not fit one frame.
    #[error("a frame of {len} bytes exceeds the {max}-byte packet")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The packet limit.
        max: usize,
    },
}

/// Per-originator limiter on work-generating queries, keyed by the signature-verified
/// originator (a flood spread across edges still lands in one bucket).
#[derive(Debug, Default)]
struct OriginLimiter {
    buckets: HashMap<NodeId, TokenBucket>,
}

const ORIGIN_RATE: f64 = 16.0;
const ORIGIN_BURST: f64 = 32.0;
const ORIGIN_TABLE: usize = 4096;

impl OriginLimiter {
    fn allow(&mut self, who: NodeId, now: Time) -> bool {
        if !self.buckets.contains_key(&who) && self.buckets.len() >= ORIGIN_TABLE {
            self.evict(now);
        }
        self.buckets
            .entry(who)
            .or_insert_with(|| TokenBucket::new(ORIGIN_RATE, ORIGIN_BURST, now))
            .allow(now)
    }

    /// Drops fully refilled buckets; if none, the single fullest one. Never the whole table.
    fn evict(&mut self, now: Time) {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| b.tokens(now) < ORIGIN_BURST);
        if self.buckets.len() == before {
            let fullest = self
                .buckets
                .iter_mut()
                .map(|(id, b)| (*id, b.tokens(now)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(id, _)| id);
            if let Some(id) = fullest {
                self.buckets.remove(&id);
            }
        }
    }
}

/// Message ids already delivered: two generations, so memory is bounded and recent ids are
/// always remembered.
#[derive(Debug, Default)]
struct Seen {
    current: HashSet<[u8; 16]>,
    previous: HashSet<[u8; 16]>,
}

const SEEN_GENERATION: usize = 8192;

impl Seen {
    /// True if `key` is new (and remembers it).
    fn insert(&mut self, key: [u8; 16]) -> bool {
        if self.current.contains(&key) || self.previous.contains(&key) {
            return false;
        }
        if self.current.len() >= SEEN_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
        true
    }
}

#[derive(Debug)]
struct Backoff {
    until: Time,
    delay: Duration,
    failures: u32,
}

/// Coverage lookups per refresh check.
pub(crate) const COVERAGE_LOOKUPS: usize = 3;
/// Buckets deeper than this are empty in any overlay below ~2^20 nodes; not worth probing.
const COVERAGE_DEPTH: usize = 24;

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const NONCE_TTL: Duration = Duration::from_secs(30);
/// How long a lookup's breadcrumb lasts (its answer arrives well within this).
const CRUMB_TTL: Duration = Duration::from_secs(10);
/// Breadcrumbs kept per generation (two generations at most).
const CRUMB_GENERATION: usize = 4096;

/// Why the core dials a contact (it decides the timeout and whether the in-flight cap applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialKind {
    /// One of the operator's bootstrap contacts.
    Bootstrap,
    /// Filling the table toward the connectivity floor.
    Fill,
    /// Checking an incumbent whose bucket a newcomer wants into.
    Probe,
}

/// Breadcrumbs of forwarded lookups, bounded: two generations of [`CRUMB_GENERATION`].
#[derive(Debug, Default)]
struct Crumbs {
    current: HashMap<(NodeId, [u8; NONCE_LEN]), (NodeId, Time)>,
    previous: HashMap<(NodeId, [u8; NONCE_LEN]), (NodeId, Time)>,
}

impl Crumbs {
    /// Plants a crumb unless a live one is already there whose edge is still up (`up`): the
    /// first copy of a request to pass wins, so a peer that replays a genuine request over
    /// its own edge cannot redirect the answers to itself, nor pin the crumb by replaying and
    /// leaving.
    fn insert(
        &mut self,
        key: (NodeId, [u8; NONCE_LEN]),
        from: NodeId,
        now: Time,
        up: impl Fn(&NodeId) -> bool,
    ) {
        if self.get(&key, now).is_some_and(|held| up(&held)) {
            return;
        }
        if self.current.len() >= CRUMB_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, (from, now.after(CRUMB_TTL)));
    }

    fn get(&self, key: &(NodeId, [u8; NONCE_LEN]), now: Time) -> Option<NodeId> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .filter(|(_, exp)| *exp > now)
            .map(|(id, _)| *id)
    }
}

/// Whether a routed frame of `ty` is a request (true) or an answer (false) that retraces
/// one, and the key its breadcrumb is kept under (the first bytes of its nonce); `None` for
/// other frames or a payload too short to carry one.
fn crumb_of(ty: FrameType, payload: &[u8]) -> Option<(bool, [u8; NONCE_LEN])> {
    let request = match ty {
        FrameType::LOOKUP | FrameType::HELLO | FrameType::CONNECT => true,
        FrameType::NEIGHBORS | FrameType::REPLY | FrameType::CONNECT_ACK => false,
        _ => return None,
    };
    let nonce: &[u8] = match ty {
        FrameType::HELLO => &Hello::decode(payload).ok()?.nonce,
        FrameType::REPLY => &Reply::decode(payload).ok()?.nonce,
        // Lookup, Neighbors, Connect and ConnectAck payloads start with their nonce.
        _ => payload,
    };
    let key = <[u8; NONCE_LEN]>::try_from(nonce.get(..NONCE_LEN)?).ok()?;
    Some((request, key))
}

/// Bootstrap contacts [`Core::remember_bootstrap`] keeps at most.
pub const MAX_BOOTSTRAP: usize = 64;

/// Maintenance dials in flight at most: what a Neighbors answer's contacts (and their
/// eviction probes) can make us start at once.
pub const MAX_DIALS_IN_FLIGHT: usize = 8;
/// Addresses a maintenance dial tries at most; a contact's others are cut.
pub const MAX_DIAL_ADDRS: usize = 4;
/// The time each address of a maintenance dial gets (the reference's short direct-dial
/// timeout); bootstrap contacts and probes of our table's incumbents get
/// [`Maintenance::dial_timeout`]. A peer's claim that a contact is a public anchor earns it
/// nothing: the claim is unverified.
pub const NON_ANCHOR_DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a rendezvous request waits for its answer.
const RENDEZVOUS_TTL: Duration = Duration::from_secs(30);
const PENDING_MAX: usize = 1024;

/// The application's edge admission hook: true admits the peer.
pub type AdmissionHook = Box<dyn Fn(&NodeId) -> bool + Send>;

/// The decision core of one node.
pub struct Core {
    identity: Identity,
    id: NodeId,
    config: CoreConfig,
    knowledge: Knowledge,
    edges: Edges,
    stats: Stats,
    actions: VecDeque<Action>,
    seen: Seen,
    pending: HashMap<[u8; NONCE_LEN], Time>,
    /// The edge each recent lookup came in on, by (originator, nonce): its answer goes back
    /// that way.
    crumbs: Crumbs,
    /// Our rendezvous requests: nonce → (target, expiry, answered).
    rendezvous: HashMap<[u8; RDV_NONCE_LEN], (NodeId, Time, bool)>,
    limiter: OriginLimiter,
    rng: CoreRng,
    bootstrap: Vec<Contact>,
    dialing: HashSet<NodeId>,
    backoff: HashMap<NodeId, Backoff>,
    admission: Option<AdmissionHook>,
    next_self_lookup: Time,
    next_sibling_exchange: Time,
    next_refresh: Time,
    /// What our neighbours report of our address.
    reflexive: Reflexive,
    /// The confirmed reflexive address, and whether it is our own.
    confirmed: Option<(Addr, bool)>,
    /// Edges that run through a relay (the host says so): their reports of our address are
    /// about the relay.
    relayed_edges: HashSet<NodeId>,
    /// Our open Connect requests: nonce → (peer, expiry).
    punches: HashMap<[u8; nodenet_nat::NONCE_LEN], (NodeId, Time)>,
    /// Our relay lookups and the relays near their targets they found.
    relay_hints: RelayHints,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("edges", &self.edges.len())
            .field("knowledge", &self.knowledge.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core for `identity`; `rng` makes its nonces and refresh targets
    /// ([`CoreRng::from_os`] for a real node).
    pub fn new(identity: Identity, config: CoreConfig, rng: CoreRng) -> Self {
        let id = identity.node_id();
        Self {
            knowledge: {
                let mut k = Knowledge::new(id, config.difficulty);
                k.set_subnet_accounting(config.subnets);
                k
            },
            edges: Edges::new(id),
            identity,
            id,
            config,
            stats: Stats::default(),
            actions: VecDeque::new(),
            seen: Seen::default(),
            pending: HashMap::new(),
            rendezvous: HashMap::new(),
            crumbs: Crumbs::default(),
            limiter: OriginLimiter::default(),
            rng,
            bootstrap: Vec::new(),
            dialing: HashSet::new(),
            backoff: HashMap::new(),
            admission: None,
            next_self_lookup: Time(0),
            next_sibling_exchange: Time(0),
            next_refresh: Time(0),
            reflexive: Reflexive::new(),
            confirmed: None,
            relayed_edges: HashSet::new(),
            punches: HashMap::new(),
            relay_hints: RelayHints::default(),
        }
    }

    /// Installs the application's edge admission hook (local policy, not a security boundary).
    pub fn set_admission(&mut self, hook: AdmissionHook) {
        self.admission = Some(hook);
    }

    /// Our NodeId.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counts what became of a [`Handled::Deliver`] (or of a message to ourselves the driver
    /// delivered locally): `handed` when the application's queue took it, else it was dropped
    /// on a full queue. The core never counts a delivery itself, so `delivered` only ever
    /// counts payloads the application received, and no counter goes down.
    pub fn count_delivery(&mut self, handed: bool) {
        if handed {
            self.stats.delivered += 1;
        } else {
            self.stats.dropped_deliver_full += 1;
        }
    }

    /// The live edges.
    pub fn edges(&self) -> &Edges {
        &self.edges
    }

    /// The knowledge table.
    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// Our address as our neighbours see it, once corroborated (see [`nodenet_nat::reflexive`]).
    pub fn reflexive(&self) -> Option<&Addr> {
        self.confirmed.as_ref().map(|(a, _)| a)
    }

    /// What the neighbours' reports say about the NAT in front of us.
    pub fn nat_type(&self) -> NatType {
        let own = self.confirmed.as_ref().is_some_and(|(_, own)| *own);
        self.reflexive.nat_type(|_| own)
    }

    /// Re-reads the confirmed reflexive address after the reports changed, and decides once
    /// whether it is our own. Whether an IP is the host's is a question for the host, not the
    /// core: when only that is left to decide, the core asks with [`Action::CheckOwnIp`].
    fn refresh_reflexive(&mut self) {
        let now = self.reflexive.confirmed().cloned();
        if now.as_ref() != self.confirmed.as_ref().map(|(a, _)| a) {
            self.confirmed = now.map(|a| {
                let own = match self.reflexive_could_be_own(&a) {
                    Some(own) => own,
                    None => {
                        self.actions
                            .push_back(Action::CheckOwnIp { addr: a.clone() });
                        false
                    }
                };
                (a, own)
            });
        }
    }

    /// The host's answer to [`Action::CheckOwnIp`]: whether `addr`'s IP is one of its own.
    /// An answer about an address no longer confirmed is ignored.
    pub fn on_own_ip(&mut self, addr: &Addr, own: bool) {
        if let Some((confirmed, is_own)) = &mut self.confirmed {
            if confirmed == addr {
                *is_own = own;
            }
        }
    }

    /// Says whether our edge to `peer` now runs through a relay (the host knows: it dialed
    /// the relay's socket, or a relay bound the connection to us). Over a relayed edge the
    /// peer sees the relay, not us: its reports of our address are dropped, and one it made
    /// before is withdrawn. Forgotten when the edge goes down.
    pub fn set_edge_relayed(&mut self, peer: &NodeId, relayed: bool) {
        if !self.edges.contains(peer) {
            return;
        }
        if relayed {
            if self.relayed_edges.insert(*peer) {
                self.forget_reporter(peer);
            }
        } else {
            self.relayed_edges.remove(peer);
        }
    }

    /// Forgets what our edge to `peer` told us (it went down, or was reaped as dead): its
    /// report of our address, and whether it ran through a relay.
    fn forget_edge(&mut self, peer: &NodeId) {
        self.relayed_edges.remove(peer);
        self.forget_reporter(peer);
    }

    /// Withdraws `peer`'s report of our address.
    fn forget_reporter(&mut self, peer: &NodeId) {
        self.reflexive.remove(peer);
        self.refresh_reflexive();
    }

    /// The addresses a peer may dial us at directly (our self-contact and Reply): what we
    /// advertise, and our confirmed reflexive address when it is our own (public, e.g. bound
    /// to a wildcard address). Behind NAT the reflexive address filters whoever we have not
    /// sent to, so it is offered only for a punch ([`Core::punch_coordinates`]).
    pub fn coordinates(&self) -> Vec<Addr> {
        let mut out = self.config.advertise.clone();
        if let Some((r, true)) = &self.confirmed {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// The addresses we give a peer that punches toward us (Connect, ConnectAck): what we
    /// advertise, then our confirmed reflexive address.
    pub fn punch_coordinates(&self) -> Vec<Addr> {
        let mut out = self.config.advertise.clone();
        if let Some((r, _)) = &self.confirmed {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out.truncate(nodenet_nat::MAX_CONNECT_ADDRS);
        out
    }

    /// Whether a confirmed reflexive address is this node's own, as far as the core can
    /// tell: off IP, when we advertise it; on IP, not unless it is on the port we advertise (or
    /// any port when we advertise nothing), and then only the host knows (`None`) whether
    /// the IP is one of its own.
    fn reflexive_could_be_own(&self, r: &Addr) -> Option<bool> {
        if !self.config.ip {
            return Some(self.config.advertise.contains(r));
        }
        let Ok(seen) = r.endpoint.parse::<std::net::SocketAddr>() else {
            return Some(false);
        };
        let port_ok = self.config.advertise.is_empty()
            || self.config.advertise.iter().any(|a| {
                a.endpoint
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|a| a.port() == seen.port())
            });
        if port_ok { None } else { Some(false) }
    }

    /// The next action for the driver.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Keeps `contact`, one the application dialed and reached, as a bootstrap contact (one
    /// entry per NodeId, its latest addresses; at most [`MAX_BOOTSTRAP`]; its capabilities
    /// are not taken on trust).
    pub fn remember_bootstrap(&mut self, contact: &Contact) {
        if contact.id == self.id {
            return;
        }
        let mut contact = contact.clone();
        contact.caps = Caps::default();
        if let Some(held) = self.bootstrap.iter_mut().find(|b| b.id == contact.id) {
            *held = contact;
        } else if self.bootstrap.len() < MAX_BOOTSTRAP {
            self.bootstrap.push(contact);
        }
    }

    /// Entry points into the overlay, known by NodeId and address only: their keys are learned
    /// from the authenticated handshake when the edge comes up, so bootstrapping works at any
    /// difficulty. Dials them at once.
    pub fn bootstrap(&mut self, contacts: Vec<Contact>) {
        self.bootstrap
            .extend(contacts.iter().filter(|c| c.id != self.id).cloned());
        for c in contacts {
            self.dial(c, DialKind::Bootstrap);
        }
    }

    /// An edge came up (dialed by us when `outbound`). Applies admission: PoW on the
    /// authenticated NodeId, the application's hook, the inbound cap, one edge per peer.
    pub fn on_edge_up(
        &mut self,
        now: Now,
        peer: NodeId,
        key: Option<[u8; 32]>,
        outbound: bool,
        addr: &Addr,
    ) -> Result<(), EdgeRefusal> {
        self.dialing.remove(&peer);
        if self.config.difficulty > 0 && !nodenet_pow::verify(&peer, self.config.difficulty) {
            self.stats.dropped_sub_pow += 1;
            return Err(EdgeRefusal::PowUnmet);
        }
        if self.admission.as_ref().is_some_and(|allow| !allow(&peer)) {
            self.stats.dropped_edge_refused += 1;
            return Err(EdgeRefusal::Refused);
        }
        if self.edges.contains(&peer) {
            self.stats.dropped_dup_inbound += 1;
            return Err(EdgeRefusal::Duplicate);
        }
        let inbound = self.edges.len() - self.edges.outbound();
        if !outbound && inbound >= self.config.max_inbound_edges {
            self.stats.dropped_inbound_full += 1;
            return Err(EdgeRefusal::InboundFull);
        }
        let subnet = self
            .config
            .subnets
            .then(|| SubnetKey::of_addr(addr.as_ref()))
            .flatten();
        self.edges.add(peer, outbound, subnet, now.mono);
        self.backoff.remove(&peer);
        self.stats.edges_up += 1;
        self.actions
            .push_back(Action::Notify(NodeEvent::EdgeUp { peer, outbound }));
        // The key comes from the handshake, so a bootstrap contact (NodeId and address only)
        // is bound here, and passes knowledge admission at any difficulty.
        let caps = self.bootstrap_caps(&peer);
        let contact = Contact {
            id: peer,
            ed_pub: key.filter(|k| derive_id(k) == peer),
            x_pub: None,
            caps,
            // A dialed peer is where we dialed it. An inbound peer's address is authenticated
            // by the transport, and on the in-memory transport it is where the peer listens:
            // keeping it spreads dialable contacts faster than the peer's own advertisement
            // (tier 3 policy). On IP it is kept only for dialed peers, as in the reference:
            // for a peer behind NAT it is a mapping that filters everyone the peer has not
            // sent to, and spread as a contact address it draws dials that fail, or, crossing
            // the peer's own, open its NAT by accident.
            addrs: if outbound || !self.config.ip {
                vec![addr.clone()]
            } else {
                Vec::new()
            },
        };
        self.observe(&contact, now);
        if outbound {
            // Our first frame lets the acceptor see the edge (there is no accept call).
            let frame = small_frame(FrameType::PING, &[]);
            self.actions.push_back(Action::Send { to: peer, frame });
        }
        if self.edges.len() == 1 {
            // First contact with the overlay: find our neighbourhood and the far keyspace now.
            self.next_self_lookup = now.mono;
            self.next_refresh = now.mono;
        }
        Ok(())
    }

    fn bootstrap_caps(&self, peer: &NodeId) -> Caps {
        self.bootstrap
            .iter()
            .find(|c| c.id == *peer)
            .map_or_else(Caps::default, |c| c.caps)
    }

    /// A dial to `peer` finished, either way: it may be dialed again later.
    pub fn on_dial_finished(&mut self, peer: &NodeId) {
        self.dialing.remove(peer);
    }

    /// An edge went down. A lost edge is replaced at once when the floor needs it, by another
    /// contact: the lost peer itself waits out the base backoff, so a peer that keeps closing
    /// on us cannot spin us in a redial loop.
    pub fn on_edge_down(&mut self, now: Now, peer: &NodeId) {
        if self.edges.remove(peer).is_some() {
            self.stats.edges_down += 1;
            self.forget_edge(peer);
            self.actions
                .push_back(Action::Notify(NodeEvent::EdgeDown { peer: *peer }));
            self.backoff.entry(*peer).or_insert_with(|| Backoff {
                until: now.mono.after(BACKOFF_BASE),
                delay: BACKOFF_BASE / 2,
                failures: 0,
            });
            if self.edges.phase() < Phase::Normal {
                self.fill(now, 1);
            }
        }
    }

    /// A send to `peer` failed: the edge is dead (the driver closes it).
    pub fn on_send_failed(&mut self, now: Now, peer: &NodeId) {
        self.stats.forward_repairs += 1;
        self.actions.push_back(Action::Close(*peer));
        self.on_edge_down(now, peer);
    }

    /// A dial failed: back off from that contact, and forget it once it keeps failing at the
    /// longest backoff.
    pub fn on_dial_failed(&mut self, now: Now, peer: &NodeId) {
        self.dialing.remove(peer);
        self.stats.dials_failed += 1;
        let b = self.backoff.entry(*peer).or_insert(Backoff {
            until: now.mono,
            delay: BACKOFF_BASE / 2,
            failures: 0,
        });
        b.failures += 1;
        let at_ceiling = b.delay >= BACKOFF_MAX;
        b.delay = (b.delay * 2).min(BACKOFF_MAX);
        b.until = now.mono.after(b.delay);
        if at_ceiling && b.failures >= 3 {
            self.knowledge.remove(peer);
            self.backoff.remove(peer);
        }
        // An incumbent that could not be reached loses its slot to a stashed newcomer.
        self.knowledge.confirm(peer, false, now.mono);
    }

    /// Handles one frame that arrived on the edge from `from` (seen at `from_addr`). `frame`
    /// is the packet's buffer: a forwarded frame leaves in it, with only its TTL rewritten.
    pub fn on_frame(
        &mut self,
        now: Now,
        from: NodeId,
        from_addr: &Addr,
        frame: &mut [u8],
    ) -> Handled {
        let Ok((ty, range)) = Frame::parse_range(frame) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        self.edges.touch(&from, now.mono);
        if ty.is_routed() {
            return self.on_routed(now, from, ty, frame, range);
        }
        let payload = &frame[range];
        match ty {
            FrameType::PING => {
                let mut buf = [0u8; 512];
                let mut w = Writer::new(&mut buf);
                if from_addr.as_ref().encode(&mut w).is_ok() {
                    let frame = small_frame(FrameType::PONG, w.written());
                    self.actions.push_back(Action::Send { to: from, frame });
                }
            }
            FrameType::PONG if self.relayed_edges.contains(&from) => {
                self.stats.dropped_relayed_reflexive += 1;
            }
            FrameType::PONG => match control::parse_pong(payload) {
                Ok(seen) if !self.config.ip || nodenet_nat::reachable(seen).is_some() => {
                    let subnet = self
                        .config
                        .subnets
                        .then(|| SubnetKey::of_addr(from_addr.as_ref()))
                        .flatten();
                    self.reflexive
                        .report(from, seen.to_owned_addr(), subnet.map(|s| s.0));
                    self.refresh_reflexive();
                    self.stats.reflexive_reports += 1;
                }
                Ok(_) => self.stats.dropped_bad_reflexive += 1,
                Err(_) => self.stats.dropped_malformed += 1,
            },
            FrameType::SIBLINGS => {
                if !self.edges.allow_control(&from, now.mono) {
                    self.stats.dropped_rate_limited += 1;
                    return Handled::Done;
                }
                match control::parse_nonce(payload) {
                    Ok(nonce) => self.answer_neighbors(now, from, &from, nonce, 1, true),
                    Err(_) => self.stats.dropped_malformed += 1,
                }
            }
            FrameType::LEAVE => {
                // The peer is going: drop the edge now (not after a timeout), replace it, and
                // do not redial the departed peer before its backoff.
                if self.edges.contains(&from) {
                    self.actions.push_back(Action::Close(from));
                    self.on_edge_down(now, &from);
                }
            }
            FrameType::RELAY_REQUEST | FrameType::RELAY_GRANT | FrameType::RELAY_BIND => {
                return self.on_relay_frame(now, from, from_addr, ty, payload);
            }
            FrameType::APP => {
                // Tier 3 policy: an App frame does not pay the forward bucket (the reference
                // charges it). The bucket guards what we relay for others; an App frame is
                // never relayed, it ends here on an edge we accepted, its rate is bounded by
                // the connection's flow control and its memory by the deliveries queue. Charged,
                // it capped a bulk transfer at the bucket's rate (512 frames/s) and dropped
                // the rest: data lost on a link with room to spare.
                return Handled::Deliver(Delivery {
                    originator: from,
                    payload: payload.to_vec(),
                    via: Via::Direct,
                    hops: 0,
                });
            }
            _ => self.stats.dropped_unsupported += 1,
        }
        Handled::Done
    }

    /// A routed frame; `payload` is its payload's range in `frame` (from the one parse in
    /// [`Core::on_frame`]).
    fn on_routed(
        &mut self,
        now: Now,
        from: NodeId,
        ty: FrameType,
        frame: &mut [u8],
        payload: std::ops::Range<usize>,
    ) -> Handled {
        if !self.edges.allow_forward(&from, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        let ttl_at = payload.start + msg::TTL_OFFSET;
        let (decision, candidates) = {
            let Ok(m) = MsgRef::parse(&frame[payload]) else {
                self.stats.dropped_malformed += 1;
                return Handled::Done;
            };
            // Tier 2 at every hop: the originator's work, then freshness.
            if self.config.difficulty > 0
                && !nodenet_pow::verify(&m.originator(), self.config.difficulty)
            {
                self.stats.dropped_sub_pow += 1;
                return Handled::Done;
            }
            if !m.is_fresh(now.unix_ns) {
                self.stats.dropped_stale += 1;
                return Handled::Done;
            }
            let mut candidates = Candidates::new();
            let mut decision = decide(
                &self.id,
                &self.edges,
                &m.target,
                m.ttl,
                |id| *id == from || m.avoids(id),
                &mut candidates,
            );
            // The avoid-set steers a message's copies apart in the middle of the path; near the
            // target it can leave a copy nowhere to go but another copy's first hop. Rather than
            // drop it there, let it reconverge (tier 3 policy: the reference drops it). This
            // holds for every message bound for a NodeId (Route, Hello, Reply, Neighbors).
            // Lookups keep the strict rule: their avoid-set is the originator, and their local
            // optimum is where they are answered.
            if ty != FrameType::LOOKUP
                && decision == Decision::Drop(DropReason::LocalOptimum)
                && m.avoid().len() > 0
            {
                decision = decide(
                    &self.id,
                    &self.edges,
                    &m.target,
                    m.ttl,
                    |id| *id == from,
                    &mut candidates,
                );
            }
            // Answers retrace their request's path (tier 3 policy; the reference routes them
            // greedily). Greedy routing back to the asker fails exactly where answers matter
            // most: a neighbourhood that formed in two halves, each unaware of the other,
            // swallows every lookup answer that must cross from one half to the other and
            // stays split; and behind NAT, where a node holds edges to few others, the
            // answerer or a hop after it is often a local optimum toward the asker, which
            // loses rendezvous Replies and ConnectAcks. The edge a request (Lookup, Hello,
            // Connect) came in on is remembered for a while under its originator and nonce;
            // its answer (Neighbors, Reply, ConnectAck) goes back that way first, and greedy
            // routing is the fallback.
            //
            // A breadcrumb draws answers to the edge it names, so only a request whose
            // originator really signed it plants one: otherwise any edge peer could forge a
            // request in a victim's name and catch the victim's answers first. A forged
            // request would be dropped where it ends anyway; it is dropped here, at the
            // first honest hop.
            let ttl = m.ttl.min(MAX_HOPS);
            match crumb_of(ty, m.payload) {
                Some((true, nonce)) => {
                    if m.verify(ty).is_err() {
                        self.stats.dropped_bad_sig += 1;
                        return Handled::Done;
                    }
                    let edges = &self.edges;
                    self.crumbs
                        .insert((m.originator(), nonce), from, now.mono, |id| {
                            edges.contains(id)
                        });
                }
                Some((false, nonce)) if decision != Decision::Deliver && ttl > 1 => {
                    let back = self
                        .crumbs
                        .get(&(m.target, nonce), now.mono)
                        .filter(|c| *c != from && self.edges.contains(c));
                    if let Some(c) = back {
                        if !matches!(decision, Decision::Forward { .. }) {
                            candidates.clear();
                            // The clamped TTL, as `decide` uses: never the raw wire byte.
                            decision = Decision::Forward { ttl: ttl - 1 };
                        }
                        candidates.prefer(c);
                    }
                }
                _ => {}
            }
            (decision, candidates)
        };
        match decision {
            Decision::Forward { ttl } => {
                // The envelope parsed, so its TTL byte is inside the frame.
                let Some(byte) = frame.get_mut(ttl_at) else {
                    return Handled::Done;
                };
                *byte = ttl;
                self.stats.forwarded += 1;
                Handled::Forward(candidates)
            }
            Decision::Deliver => self.terminal(now, ty, frame, true),
            Decision::Drop(DropReason::LocalOptimum) if ty == FrameType::LOOKUP => {
                // The closest reachable node answers a lookup.
                self.terminal(now, ty, frame, false)
            }
            Decision::Drop(DropReason::LocalOptimum) => {
                self.stats.dropped_local_optimum += 1;
                Handled::Done
            }
            Decision::Drop(DropReason::TtlExpired) => {
                self.stats.dropped_ttl += 1;
                Handled::Done
            }
        }
    }

    /// A routed frame that ends here: verify, then act by type.
    fn terminal(&mut self, now: Now, ty: FrameType, frame: &[u8], for_us: bool) -> Handled {
        let Ok((f, _)) = Frame::parse(frame) else {
            return Handled::Done;
        };
        let Ok(m) = MsgRef::parse(f.payload()) else {
            return Handled::Done;
        };
        if m.verify(ty).is_err() {
            self.stats.dropped_bad_sig += 1;
            return Handled::Done;
        }
        let originator = m.originator();
        match ty {
            FrameType::ROUTE if for_us => {
                if self.is_repeat(&m) {
                    return Handled::Done;
                }
                self.learn(now, originator, *m.ed_pub);
                Handled::Deliver(Delivery {
                    originator,
                    payload: m.payload.to_vec(),
                    via: Via::Routed,
                    hops: MAX_HOPS.saturating_sub(m.ttl).saturating_add(1),
                })
            }
            FrameType::LOOKUP => {
                let Ok(nonce) = control::parse_nonce(m.payload) else {
                    self.stats.dropped_malformed += 1;
                    return Handled::Done;
                };
                if !self.limiter.allow(originator, now.mono) {
                    self.stats.dropped_rate_limited += 1;
                    return Handled::Done;
                }
                let target = m.target;
                self.learn(now, originator, *m.ed_pub);
                self.stats.lookups_answered += 1;
                self.answer_neighbors(now, originator, &target, nonce, MAX_HOPS, false);
                Handled::Done
            }
            FrameType::NEIGHBORS if for_us => {
                let Ok((nonce, list)) = control::parse_neighbors(m.payload) else {
                    self.stats.dropped_malformed += 1;
                    return Handled::Done;
                };
                let solicited = self.pending.get(&nonce).is_some_and(|exp| *exp > now.mono);
                if !solicited || !self.limiter.allow(originator, now.mono) {
                    self.stats.dropped_rate_limited += 1;
                    return Handled::Done;
                }
                self.relay_hints.answered(
                    now.mono,
                    &nonce,
                    &list,
                    &self.id,
                    self.config.difficulty,
                );
                let report =
                    handlers::fold_neighbors(&mut self.knowledge, &list, &originator, now.mono);
                for probe in report.probes {
                    self.probe(now, probe);
                }
                Handled::Done
            }
            FrameType::HELLO if for_us => self.on_hello(now, &m),
            FrameType::REPLY if for_us => self.on_reply(now, &m),
            FrameType::CONNECT if for_us => self.on_connect(now, &m),
            FrameType::CONNECT_ACK if for_us => self.on_connect_ack(now, &m),
            _ => {
                self.stats.dropped_unsupported += 1;
                Handled::Done
            }
        }
    }

    /// True (and counted) when another copy of this message arrived before: the copies of
    /// a multi-path message share its signature, whose first 16 bytes key the seen set.
    fn is_repeat(&mut self, m: &MsgRef<'_>) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&m.sig[..16]);
        let repeat = !self.seen.insert(key);
        if repeat {
            self.stats.dropped_duplicate += 1;
        }
        repeat
    }

    /// A Hello addressed to us: verify it against its originator and our NodeId, bind the
    /// originator's keys and addresses, and answer with a signed Reply.
    fn on_hello(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let originator = m.originator();
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(hello) = Hello::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        if !self.limiter.allow(originator, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        if hello.verify(m.ed_pub, &self.id).is_err() {
            self.stats.dropped_bad_sig += 1;
            return Handled::Done;
        }
        let contact = Contact {
            id: originator,
            ed_pub: Some(*m.ed_pub),
            x_pub: Some(hello.x_pub),
            caps: Caps::default(),
            addrs: hello.addrs.iter().map(|a| a.to_owned_addr()).collect(),
        };
        self.observe(&contact, now);
        let Ok(reply) =
            nodenet_rendezvous::encode_reply(&self.identity, &self.coordinates(), &hello.nonce)
        else {
            return Handled::Done;
        };
        if self
            .originate_answer(now, FrameType::REPLY, originator, &reply, &hello.nonce)
            .is_ok()
        {
            self.stats.rendezvous_answered += 1;
        }
        Handled::Done
    }

    /// A Connect addressed to us: a peer wants to punch through to us. Answer with our
    /// coordinates and punch toward its addresses: at once, as the reference does, or, if it
    /// asks for a timed punch, when its Sync arrives (a Sync is itself a Connect, not
    /// answered).
    fn on_connect(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let originator = m.originator();
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(c) = nodenet_nat::Coordination::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        if !self.limiter.allow(originator, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        if c.flags & nodenet_nat::FLAG_SYNC != 0 {
            return Handled::PunchSync {
                peer: originator,
                nonce: c.nonce,
            };
        }
        if c.flags & nodenet_nat::FLAG_BIRTHDAY != 0 {
            self.learn(now, originator, *m.ed_pub);
            return Handled::BirthdayRequested {
                peer: originator,
                nonce: c.nonce,
                addrs: self.punch_candidates(c.addrs.iter()),
                public: c.public.map(|p| p.to_owned_addr()),
            };
        }
        self.learn(now, originator, *m.ed_pub);
        let addrs = self.punch_candidates(c.addrs.iter());
        let coords = self.punch_coordinates();
        let timed = self.config.timed_punch && c.flags & nodenet_nat::FLAG_TIMED != 0;
        let flags = if timed { nodenet_nat::FLAG_TIMED } else { 0 };
        let Ok(ack) = nodenet_nat::encode_coordination(&c.nonce, &coords, flags) else {
            return Handled::Done;
        };
        if self
            .originate_answer(now, FrameType::CONNECT_ACK, originator, &ack, &c.nonce)
            .is_err()
        {
            return Handled::Done;
        }
        self.stats.punches_answered += 1;
        Handled::PunchRequested {
            peer: originator,
            addrs,
            hold: timed.then_some(c.nonce),
        }
    }

    /// A ConnectAck addressed to us: it must answer an open Connect of ours, from the peer
    /// we sent it to (the envelope's signature proves the originator).
    fn on_connect_ack(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        if self.is_repeat(m) {
            return Handled::Done;
        }
        let Ok(c) = nodenet_nat::Coordination::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        match self.punches.get(&c.nonce) {
            Some(&(peer, expires)) if peer == m.originator() && expires > now.mono => {}
            _ => {
                self.stats.dropped_unsolicited_reply += 1;
                return Handled::Done;
            }
        }
        self.punches.remove(&c.nonce);
        Handled::PunchAck {
            nonce: c.nonce,
            addrs: self.punch_candidates(c.addrs.iter()),
            flags: c.flags,
            public: c.public.map(|p| p.to_owned_addr()),
        }
    }

    /// RelayRequest, RelayGrant and RelayBind: per-edge frames under the control budget.
    fn on_relay_frame(
        &mut self,
        now: Now,
        from: NodeId,
        from_addr: &Addr,
        ty: FrameType,
        payload: &[u8],
    ) -> Handled {
        if !self.edges.allow_control(&from, now.mono) {
            self.stats.dropped_rate_limited += 1;
            return Handled::Done;
        }
        match ty {
            FrameType::RELAY_REQUEST => {
                let Ok(req) = nodenet_nat::RelayRequest::decode(payload) else {
                    self.stats.dropped_malformed += 1;
                    return Handled::Done;
                };
                if !self.config.relay || req.target == from || !self.edges.contains(&req.target) {
                    self.stats.relay_requests_refused += 1;
                    return Handled::Done;
                }
                Handled::RelayRequested {
                    from,
                    nonce: req.nonce,
                    target: req.target,
                }
            }
            FrameType::RELAY_GRANT => match nodenet_nat::RelayGrant::decode(payload) {
                Ok(g) => Handled::RelayGranted {
                    from,
                    nonce: g.nonce,
                    addr: g.addr.to_owned_addr(),
                    attest: g.attest.map(Attested::from),
                },
                Err(_) => {
                    self.stats.dropped_malformed += 1;
                    Handled::Done
                }
            },
            _ => match nodenet_nat::RelayBind::decode(payload) {
                // We did not ask for this bind: any edge peer can send one. Its callee side
                // is a socket of the relay's own, so it must be on the host our edge to the
                // relay comes from; anything else would aim our punch at a bystander. The
                // relay's attestation of the caller is not taken either: this relay was
                // chosen by the caller, and a caller with a relay of its own choosing could
                // vouch for any host (a birthday punch asks a relay of ours instead).
                Ok(b) if b.addr.net != from_addr.net || !on_host_of(b.addr.endpoint, from_addr) => {
                    self.stats.relay_binds_refused += 1;
                    Handled::Done
                }
                Ok(b) => match self.punch_candidates([b.addr]).pop() {
                    Some(addr) => Handled::RelayBind { addr },
                    None => {
                        self.stats.dropped_bad_reflexive += 1;
                        Handled::Done
                    }
                },
                Err(_) => {
                    self.stats.dropped_malformed += 1;
                    Handled::Done
                }
            },
        }
    }

    /// Edges that volunteer as relays (by the capabilities they advertise), `target`
    /// excluded, at most `n`.
    pub fn relay_candidates(&self, target: &NodeId, n: usize) -> Vec<NodeId> {
        self.edges
            .iter()
            .map(|e| e.id)
            .filter(|id| id != target)
            .filter(|id| {
                self.knowledge
                    .get(id)
                    .is_some_and(|c| c.caps.contains(Caps::CAN_RELAY))
            })
            .take(n)
            .collect()
    }

    /// Up to `n` relays for a connect to `target`, closest to it first: the volunteers a
    /// relay lookup found near it ([`Core::lookup_relays`]) and those we know ourselves
    /// (edges or not). Each comes with the addresses to dial it at when it is not an edge
    /// (filtered like punch candidates); an edge's are left empty.
    pub fn relays_near(&self, now: Now, target: &NodeId, n: usize) -> Vec<RelayCandidate> {
        let known = self
            .knowledge
            .iter()
            .filter(|c| c.caps.contains(Caps::CAN_RELAY) && c.id != *target && c.id != self.id);
        let mut all: Vec<&Contact> = self.relay_hints.near(now.mono, target).iter().collect();
        for c in known {
            if !all.iter().any(|a| a.id == c.id) {
                all.push(c);
            }
        }
        all.sort_by_key(|c| c.id.distance(target));
        all.into_iter()
            .take(n)
            .map(|c| RelayCandidate {
                relay: c.id,
                addrs: if self.edges.contains(&c.id) {
                    Vec::new()
                } else {
                    self.punch_candidates(c.addrs.iter().map(Addr::as_ref))
                },
            })
            .collect()
    }

    /// The counters, for the driver to count what it decides (media, streams, dials).
    #[doc(hidden)]
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// The proof-of-work difficulty we enforce.
    pub fn difficulty(&self) -> u32 {
        self.config.difficulty
    }

    /// Counts a relayed edge replaced by a punched one.
    pub fn count_upgrade(&mut self) {
        self.stats.relay_upgrades += 1;
    }

    /// Counts a relay session we opened for others.
    pub fn count_relay_granted(&mut self) {
        self.stats.relays_granted += 1;
    }

    /// The addresses worth punching toward or dialing, from a peer's list: on an IP transport
    /// only reachable literal ones; deduplicated, at most [`MAX_PUNCH_CANDIDATES`].
    pub fn punch_candidates<'a>(
        &self,
        addrs: impl IntoIterator<Item = nodenet_wire::AddrRef<'a>>,
    ) -> Vec<Addr> {
        let mut out: Vec<Addr> = Vec::new();
        for a in addrs {
            if self.config.ip && nodenet_nat::reachable(a).is_none() {
                continue;
            }
            let a = a.to_owned_addr();
            if !out.contains(&a) {
                out.push(a);
            }
            if out.len() >= MAX_PUNCH_CANDIDATES {
                break;
            }
        }
        out
    }

    /// A fresh nonce for a Connect of ours, if the table of open ones has room.
    fn punch_nonce(&mut self, now: Now) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        if self.punches.len() >= PENDING_MAX {
            self.punches.retain(|_, (_, exp)| *exp > now.mono);
        }
        if self.punches.len() >= PENDING_MAX {
            return Err(OriginateError::Busy);
        }
        Ok(self.random())
    }

    /// Starts a hole-punch toward `peer`: a signed Connect with our coordinates, routed to it
    /// down up to three paths. Its ConnectAck comes back as [`Handled::PunchAck`] with the
    /// returned nonce (or not at all: the caller times out).
    pub fn start_punch(
        &mut self,
        now: Now,
        peer: NodeId,
    ) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        let nonce = self.punch_nonce(now)?;
        let coords = self.punch_coordinates();
        let flags = if self.config.timed_punch {
            nodenet_nat::FLAG_TIMED
        } else {
            0
        };
        let payload = nodenet_nat::encode_coordination(&nonce, &coords, flags).map_err(|_| {
            OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            }
        })?;
        self.originate(now, FrameType::CONNECT, peer, &payload)?;
        self.punches
            .insert(nonce, (peer, now.mono.after(RENDEZVOUS_TTL)));
        self.stats.punches_started += 1;
        Ok(nonce)
    }

    /// Where a hard side is: the host on which our neighbours' reports agree, as an address
    /// with port 0 (behind a symmetric NAT each of them sees another port).
    pub fn public_host(&self) -> Option<Addr> {
        let net = self.reflexive.reported().next()?.net.clone();
        let host = nodenet_nat::birthday::agreed_host(
            self.reflexive.reported().map(|a| a.endpoint.as_str()),
            nodenet_nat::QUORUM,
        )?;
        Some(Addr::new(net, format!("{host}:0")))
    }

    /// Our part of a birthday exchange's payload: an easy side names its confirmed mapping,
    /// a hard side its public host.
    fn birthday_payload(
        &self,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
        hard: bool,
        agree: bool,
    ) -> Result<Vec<u8>, OriginateError> {
        let too_large = |_| OriginateError::FrameTooLarge {
            len: usize::MAX,
            max: MAX_PACKET_LEN,
        };
        let flags = if agree { nodenet_nat::FLAG_BIRTHDAY } else { 0 };
        if !agree {
            return nodenet_nat::encode_coordination(nonce, &[], 0).map_err(too_large);
        }
        if hard {
            let public = self.public_host().ok_or(OriginateError::Unroutable)?;
            nodenet_nat::encode_coordination_with(nonce, &[], flags, Some(public.as_ref()))
                .map_err(too_large)
        } else {
            let mapped: Vec<Addr> = self.reflexive().cloned().into_iter().collect();
            if mapped.is_empty() {
                return Err(OriginateError::Unroutable);
            }
            nodenet_nat::encode_coordination(nonce, &mapped, flags).map_err(too_large)
        }
    }

    /// Asks `peer` for a birthday punch, in which we are the hard side or the easy one; its
    /// ConnectAck comes back as [`Handled::PunchAck`] under the returned nonce.
    pub fn start_birthday(
        &mut self,
        now: Now,
        peer: NodeId,
        hard: bool,
    ) -> Result<[u8; nodenet_nat::NONCE_LEN], OriginateError> {
        let nonce = self.punch_nonce(now)?;
        let payload = self.birthday_payload(&nonce, hard, true)?;
        self.originate(now, FrameType::CONNECT, peer, &payload)?;
        self.punches
            .insert(nonce, (peer, now.mono.after(RENDEZVOUS_TTL)));
        Ok(nonce)
    }

    /// Answers a peer's birthday request: agreed (we play the hard side if `hard`), or not.
    pub fn answer_birthday(
        &mut self,
        now: Now,
        peer: NodeId,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
        hard: bool,
        agree: bool,
    ) -> Result<(), OriginateError> {
        let payload = self.birthday_payload(nonce, hard, agree)?;
        self.originate_answer(now, FrameType::CONNECT_ACK, peer, &payload, nonce)
    }

    /// Sends the Sync of a timed hole-punch: `peer` acked our Connect `nonce` and holds its
    /// punch until this arrives.
    pub fn punch_sync(
        &mut self,
        now: Now,
        peer: NodeId,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
    ) -> Result<(), OriginateError> {
        let payload = nodenet_nat::encode_coordination(nonce, &[], nodenet_nat::FLAG_SYNC)
            .map_err(|_| OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            })?;
        self.originate(now, FrameType::CONNECT, peer, &payload)
    }

    /// Counts a hole-punch that gave us an edge.
    pub fn count_punch_success(&mut self) {
        self.stats.punches_succeeded += 1;
    }

    /// Forgets an open punch request (its caller gave up).
    pub fn cancel_punch(&mut self, nonce: &[u8; nodenet_nat::NONCE_LEN]) {
        self.punches.remove(nonce);
    }

    /// A Reply addressed to us: it must answer a request of ours, come from the NodeId we
    /// asked (its key hashes to it), echo our nonce and carry the target's signature. A
    /// forger on the path fails one of those and is counted; the request stays open for the
    /// genuine answer.
    fn on_reply(&mut self, now: Now, m: &MsgRef<'_>) -> Handled {
        let Ok(reply) = Reply::decode(m.payload) else {
            self.stats.dropped_malformed += 1;
            return Handled::Done;
        };
        let Some(&(target, expires, done)) = self.rendezvous.get(&reply.nonce) else {
            self.stats.dropped_unsolicited_reply += 1;
            return Handled::Done;
        };
        if expires <= now.mono {
            self.rendezvous.remove(&reply.nonce);
            self.stats.dropped_unsolicited_reply += 1;
            return Handled::Done;
        }
        if done {
            // Another copy's answer (three paths, and retries) to a request already answered.
            self.stats.dropped_duplicate += 1;
            return Handled::Done;
        }
        let Ok(coordinates) = reply.verify(&target, &reply.nonce) else {
            self.stats.dropped_forged_reply += 1;
            return Handled::Done;
        };
        if let Some(r) = self.rendezvous.get_mut(&reply.nonce) {
            r.2 = true;
        }
        let contact = Contact {
            id: target,
            ed_pub: Some(coordinates.ed_pub),
            x_pub: Some(coordinates.x_pub),
            caps: Caps::default(),
            addrs: coordinates.addrs.clone(),
        };
        self.observe(&contact, now);
        self.stats.rendezvous_completed += 1;
        Handled::Rendezvous {
            nonce: reply.nonce,
            coordinates,
        }
    }

    /// Starts a rendezvous with `target`: a signed Hello with our keys and addresses, routed
    /// down up to three paths. The answer comes back as [`Handled::Rendezvous`] with the
    /// returned nonce, or not at all (the caller times out, then calls
    /// [`Core::cancel_rendezvous`]).
    pub fn start_rendezvous(
        &mut self,
        now: Now,
        target: NodeId,
    ) -> Result<[u8; RDV_NONCE_LEN], OriginateError> {
        let nonce: [u8; RDV_NONCE_LEN] = self.random();
        if self.rendezvous.len() >= PENDING_MAX {
            self.rendezvous.retain(|_, (_, exp, _)| *exp > now.mono);
        }
        if self.rendezvous.len() >= PENDING_MAX {
            return Err(OriginateError::Busy);
        }
        self.send_hello(now, target, &nonce)?;
        self.rendezvous
            .insert(nonce, (target, now.mono.after(RENDEZVOUS_TTL), false));
        self.stats.rendezvous_started += 1;
        Ok(nonce)
    }

    /// Sends the Hello of an open, unanswered request again (same nonce): a routed message
    /// is best effort, and one lost while the overlay converges must not fail a connect.
    pub fn resend_rendezvous(
        &mut self,
        now: Now,
        nonce: &[u8; RDV_NONCE_LEN],
    ) -> Result<(), OriginateError> {
        match self.rendezvous.get(nonce) {
            Some(&(target, exp, false)) if exp > now.mono => self.send_hello(now, target, nonce),
            _ => Ok(()),
        }
    }

    fn send_hello(
        &mut self,
        now: Now,
        target: NodeId,
        nonce: &[u8; RDV_NONCE_LEN],
    ) -> Result<(), OriginateError> {
        let hello =
            nodenet_rendezvous::encode_hello(&self.identity, &target, &self.coordinates(), nonce)
                .map_err(|_| OriginateError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_PACKET_LEN,
            })?;
        self.originate(now, FrameType::HELLO, target, &hello)
    }

    /// Closes a rendezvous request (its caller is done with it). It is remembered until it
    /// expires, so late copies of its answer count as duplicates, not as unsolicited.
    pub fn cancel_rendezvous(&mut self, nonce: &[u8; RDV_NONCE_LEN]) {
        if let Some(r) = self.rendezvous.get_mut(nonce) {
            r.2 = true;
        }
    }

    /// Seals `plaintext` from us to the X25519 key `x`.
    pub fn seal<R: rand_core::CryptoRng + ?Sized>(
        &self,
        x: &[u8; 32],
        plaintext: &[u8],
        now_ns: i64,
        rng: &mut R,
    ) -> Result<Vec<u8>, nodenet_rendezvous::SealError> {
        nodenet_rendezvous::seal(&self.identity, x, plaintext, &[], now_ns, rng)
    }

    /// Opens a box sealed to us.
    pub fn open(
        &self,
        data: &[u8],
        now_ns: i64,
        cache: &mut nodenet_rendezvous::ReplayCache,
    ) -> Result<nodenet_rendezvous::Opened, nodenet_rendezvous::OpenError> {
        nodenet_rendezvous::open(&self.identity, data, &[], now_ns, cache)
    }

    /// Counts a frame not sent because the edge's queue was full (the edge lives on).
    pub fn count_queue_full(&mut self) {
        self.stats.dropped_queue_full += 1;
    }

    /// Counts a sealed box that did not open.
    pub fn count_bad_box(&mut self) {
        self.stats.dropped_bad_box += 1;
    }

    /// The addresses our knowledge table holds for `id`.
    pub fn known_addrs(&self, id: &NodeId) -> Vec<Addr> {
        self.knowledge
            .get(id)
            .map(|c| c.addrs.clone())
            .unwrap_or_default()
    }

    /// The static X25519 key we know for `id` (from a verified Hello or Reply).
    pub fn x_key_of(&self, id: &NodeId) -> Option<[u8; 32]> {
        self.knowledge.get(id).and_then(|c| c.x_pub)
    }

    /// Originates a message of `ty` to `target`: up to three copies down distinct first hops,
    /// each avoiding the others' first hops, signed once. Queues the sends as actions.
    pub fn originate(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
    ) -> Result<(), OriginateError> {
        self.originate_via(now, ty, target, payload, None)
    }

    /// Originates an answer (Reply, ConnectAck) to `target`: as [`Core::originate`], with the
    /// edge its request came in on, if we still hold it, among the first hops (see
    /// [`crumb_of`]).
    fn originate_answer(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
        nonce: &[u8],
    ) -> Result<(), OriginateError> {
        let back = nonce
            .get(..NONCE_LEN)
            .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
            .and_then(|n| self.crumbs.get(&(target, n), now.mono))
            .filter(|c| self.edges.contains(c));
        self.originate_via(now, ty, target, payload, back)
    }

    fn originate_via(
        &mut self,
        now: Now,
        ty: FrameType,
        target: NodeId,
        payload: &[u8],
        back: Option<NodeId>,
    ) -> Result<(), OriginateError> {
        let ed = self.identity.ed_public();
        let sig = msg::sign(&self.identity, ty, &target, now.unix_ns, payload);
        let probe = MsgFields {
            target,
            ttl: MAX_HOPS,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &[NodeId::ZERO; 2],
            payload,
            sig: &sig,
        };
        let len = nodenet_wire::header_len(probe.encoded_len()) + probe.encoded_len();
        if len > MAX_PACKET_LEN {
            return Err(OriginateError::FrameTooLarge {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        let mut hops = first_hops(&self.edges, &target);
        match back {
            Some(back) => hops.include(back),
            // Behind NAT our closest edges toward a target are often other NAT'd nodes with
            // few edges of their own: local optima where every copy could die. One copy goes
            // through a public anchor instead, which holds edges to most of the overlay.
            None => {
                if let Some(anchor) = self.anchor_toward(&target) {
                    hops.include(anchor);
                }
            }
        }
        if hops.hops().is_empty() {
            return Err(OriginateError::Unroutable);
        }
        for (i, hop) in hops.hops().iter().enumerate() {
            let (avoid, n) = hops.avoid_for(i);
            let fields = MsgFields {
                avoid: &avoid[..n],
                ..probe
            };
            let mut frame = vec![0u8; len];
            if let Ok(written) = fields.encode_frame(ty, &mut frame) {
                frame.truncate(written);
                self.actions.push_back(Action::Send { to: *hop, frame });
            }
        }
        self.stats.originated += 1;
        Ok(())
    }

    /// Our capability hints: a volunteer relay, and a public anchor once our neighbours see
    /// us at an address of our own.
    fn own_caps(&self) -> Caps {
        let mut caps = Caps::default();
        if self.config.relay {
            caps = caps.with(Caps::CAN_RELAY);
        }
        if self.nat_type() == NatType::Public {
            caps = caps.with(Caps::PUBLIC_ANCHOR);
        }
        caps
    }

    /// When we sit behind a NAT: our edge closest to `target` among those that advertise
    /// being publicly reachable (a public anchor or a relay volunteer).
    fn anchor_toward(&self, target: &NodeId) -> Option<NodeId> {
        if !matches!(self.nat_type(), NatType::Cone | NatType::Symmetric) {
            return None;
        }
        let public = Caps::PUBLIC_ANCHOR;
        self.edges
            .iter()
            .filter(|e| {
                self.knowledge
                    .get(&e.id)
                    .is_some_and(|c| c.caps.contains(public) || c.caps.contains(Caps::CAN_RELAY))
            })
            .map(|e| e.id)
            .min_by(|a, b| target.distance(a).cmp(&target.distance(b)))
    }

    /// Runs maintenance: reaps dead edges, pings idle ones, fills the floor, looks up our
    /// neighbourhood, exchanges siblings and refreshes stale buckets.
    pub fn on_tick(&mut self, now: Now) {
        let m = self.config.maintenance.clone();
        let mut dead: Vec<NodeId> = self.edges.idle(now.mono, m.dead_sibling, true).collect();
        dead.extend(self.edges.idle(now.mono, m.dead_finger, false));
        for id in dead {
            self.actions.push_back(Action::Close(id));
            if self.edges.remove(&id).is_some() {
                self.stats.edges_down += 1;
                self.forget_edge(&id);
                self.actions
                    .push_back(Action::Notify(NodeEvent::EdgeDown { peer: id }));
            }
        }
        let mut idle: Vec<NodeId> = self
            .edges
            .idle(now.mono, m.keepalive_sibling, true)
            .collect();
        idle.extend(self.edges.idle(now.mono, m.keepalive_finger, false));
        for id in idle {
            self.actions.push_back(Action::Send {
                to: id,
                frame: small_frame(FrameType::PING, &[]),
            });
        }
        self.backoff
            .retain(|_, b| b.until > now.mono || b.delay >= BACKOFF_MAX);
        self.pending.retain(|_, exp| *exp > now.mono);
        self.relay_hints.purge(now.mono);
        let want = self.edges.phase().fill_per_tick();
        self.fill(now, want);
        if self.edges.is_empty() {
            for c in self.bootstrap.clone() {
                self.dial(c, DialKind::Bootstrap);
            }
        }
        if now.mono >= self.next_self_lookup && !self.edges.is_empty() {
            self.next_self_lookup = now.mono.after(m.self_lookup);
            self.lookup(now, self.id);
        }
        if now.mono >= self.next_sibling_exchange && !self.edges.is_empty() {
            self.next_sibling_exchange = now.mono.after(m.sibling_exchange);
            let siblings: Vec<NodeId> = self
                .edges
                .iter()
                .filter(|e| e.sibling)
                .map(|e| e.id)
                .collect();
            for s in siblings {
                let nonce = self.nonce(now);
                self.actions.push_back(Action::Send {
                    to: s,
                    frame: small_frame(FrameType::SIBLINGS, &nonce),
                });
            }
        }
        if now.mono >= self.next_refresh && !self.edges.is_empty() {
            self.next_refresh = now.mono.after(m.refresh_check);
            let random = self.random32();
            let stale = self
                .knowledge
                .refresh_target(now.mono, m.bucket_stale, random);
            if let Some(target) = stale {
                self.lookup(now, target);
            }
            self.coverage_lookups(now);
        }
    }

    /// Looks up a random id in each of the (up to [`COVERAGE_LOOKUPS`]) farthest buckets that
    /// have no live edge, so the table learns the far parts of the keyspace and maintenance can
    /// dial a finger there: greedy routing needs one in every populated direction. The
    /// reference refreshes only populated stale buckets, which leaves a joining node blind to
    /// the far keyspace for a whole staleness period (tier 3 policy).
    fn coverage_lookups(&mut self, now: Now) {
        let mut covered = [false; 256];
        for e in self.edges.iter() {
            if let Some(b) = self.id.bucket_index(&e.id) {
                covered[b] = true;
            }
        }
        let targets: Vec<usize> = (0..COVERAGE_DEPTH)
            .filter(|&b| !covered[b])
            .take(COVERAGE_LOOKUPS)
            .collect();
        for b in targets {
            let random = self.random32();
            let target = id_in_bucket(&self.id, b, random);
            // Launched through edges outside the region, not the closest ones: our edges that
            // share b or more bits with us are nearer any target there than we are, yet they
            // are the nodes least likely to know it (a neighbourhood that formed in two halves
            // stays split when every lookup for the other half starts inside ours). A finger
            // from a shallower bucket enters the region from outside.
            let mut hops = [NodeId::ZERO; KMIN];
            let me = self.id;
            let n = self.edges.closest_into(&target, &mut hops, |e| {
                me.bucket_index(e).is_some_and(|eb| eb < b)
            });
            if n == 0 {
                self.lookup(now, target);
            } else {
                self.lookup_via(now, target, &hops[..n]);
            }
        }
    }

    /// Starts a lookup of `target`: one signed Lookup, fanned out to the three closest edges.
    pub fn lookup(&mut self, now: Now, target: NodeId) {
        let hops = first_hops(&self.edges, &target);
        self.lookup_via(now, target, hops.hops());
    }

    /// Looks `target` up to learn the relay volunteers near it, for a connect's relay step
    /// ([`Core::relays_near`] names them once the answers are in).
    pub fn lookup_relays(&mut self, now: Now, target: NodeId) {
        let hops = first_hops(&self.edges, &target);
        if let Some(nonce) = self.lookup_via(now, target, hops.hops()) {
            self.relay_hints.asked(now.mono, nonce, target);
        }
    }

    /// Sends one signed Lookup of `target` to each of `hops`; its nonce, if sent.
    fn lookup_via(&mut self, now: Now, target: NodeId, hops: &[NodeId]) -> Option<[u8; NONCE_LEN]> {
        if hops.is_empty() {
            return None;
        }
        let nonce = self.nonce(now);
        let ed = self.identity.ed_public();
        let sig = msg::sign(
            &self.identity,
            FrameType::LOOKUP,
            &target,
            now.unix_ns,
            &nonce,
        );
        let avoid = [self.id];
        let fields = MsgFields {
            target,
            ttl: MAX_HOPS,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &avoid,
            payload: &nonce,
            sig: &sig,
        };
        let mut frame = vec![0u8; 256];
        let Ok(n) = fields.encode_frame(FrameType::LOOKUP, &mut frame) else {
            return None;
        };
        frame.truncate(n);
        for hop in hops {
            self.actions.push_back(Action::Send {
                to: *hop,
                frame: frame.clone(),
            });
        }
        Some(nonce)
    }

    /// A fresh nonce, remembered as solicited for the answer it invites.
    fn nonce(&mut self, now: Now) -> [u8; NONCE_LEN] {
        let nonce: [u8; NONCE_LEN] = self.random();
        if self.pending.len() >= PENDING_MAX {
            self.pending.retain(|_, exp| *exp > now.mono);
        }
        if self.pending.len() < PENDING_MAX {
            self.pending.insert(nonce, now.mono.after(NONCE_TTL));
        }
        nonce
    }

    fn answer_neighbors(
        &mut self,
        now: Now,
        to: NodeId,
        about: &NodeId,
        nonce: [u8; NONCE_LEN],
        ttl: u8,
        direct: bool,
    ) {
        let me = Contact {
            id: self.id,
            ed_pub: Some(self.identity.ed_public()),
            x_pub: None,
            caps: self.own_caps(),
            addrs: self.coordinates(),
        };
        let contacts = handlers::neighbors_answer(&self.knowledge, about, &me);
        let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&contacts)];
        if control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &contacts).is_err() {
            return;
        }
        let ed = self.identity.ed_public();
        let sig = msg::sign(
            &self.identity,
            FrameType::NEIGHBORS,
            &to,
            now.unix_ns,
            &payload,
        );
        let fields = MsgFields {
            target: to,
            ttl,
            ed_pub: &ed,
            sent: now.unix_ns,
            avoid: &[],
            payload: &payload,
            sig: &sig,
        };
        let mut frame = vec![0u8; fields.encoded_len() + 8];
        let Ok(n) = fields.encode_frame(FrameType::NEIGHBORS, &mut frame) else {
            return;
        };
        frame.truncate(n);
        if direct {
            self.actions.push_back(Action::Send { to, frame });
        } else {
            // Not multi-path: back the way the lookup came, else the first closest edge that
            // takes it.
            let mut c = Candidates::new();
            let mut hops: Vec<NodeId> =
                match decide(&self.id, &self.edges, &to, MAX_HOPS, |_| false, &mut c) {
                    Decision::Forward { .. } => c.as_slice().to_vec(),
                    _ => first_hops(&self.edges, &to).hops().to_vec(),
                };
            if let Some(back) = self
                .crumbs
                .get(&(to, nonce), now.mono)
                .filter(|c| self.edges.contains(c))
            {
                hops.retain(|h| *h != back);
                hops.insert(0, back);
            }
            if !hops.is_empty() {
                self.actions.push_back(Action::SendAny { to: hops, frame });
            }
        }
    }

    fn learn(&mut self, now: Now, id: NodeId, ed_pub: [u8; 32]) {
        let contact = Contact {
            id,
            ed_pub: Some(ed_pub),
            x_pub: None,
            caps: Caps::default(),
            addrs: Vec::new(),
        };
        self.observe(&contact, now);
    }

    fn observe(&mut self, contact: &Contact, now: Now) {
        if let Observed::Stashed { probe } = self.knowledge.observe(contact, now.mono) {
            self.probe(now, probe);
        }
    }

    /// Checks an incumbent whose bucket is full: a live edge is proof enough; otherwise dial.
    fn probe(&mut self, now: Now, id: NodeId) {
        if self.edges.contains(&id) {
            self.knowledge.confirm(&id, true, now.mono);
        } else if let Some(c) = self.knowledge.get(&id).cloned() {
            self.dial(c, DialKind::Probe);
        }
    }

    fn fill(&mut self, now: Now, want: usize) {
        if want == 0 {
            return;
        }
        let want = want.min(MAX_DIALS_IN_FLIGHT.saturating_sub(self.dialing.len()));
        if want == 0 {
            return;
        }
        let picks: Vec<Contact> = self
            .edges
            .replacement_candidates(&self.knowledge, want + self.dialing.len())
            .into_iter()
            .filter(|c| !self.dialing.contains(&c.id))
            .filter(|c| self.backoff.get(&c.id).is_none_or(|b| b.until <= now.mono))
            .take(want)
            .cloned()
            .collect();
        for c in picks {
            self.stats.dials += 1;
            self.dial(c, DialKind::Fill);
        }
    }

    /// Dials `contact`, within the bounds a peer's answer cannot push us past: at most
    /// [`MAX_DIALS_IN_FLIGHT`] dials at once (bootstrap contacts excepted) and
    /// [`MAX_DIAL_ADDRS`] addresses each (the rest are cut and counted), and the full dial
    /// timeout only for bootstrap contacts and probes of our own table's incumbents; anyone
    /// else gets [`NON_ANCHOR_DIAL_TIMEOUT`], as in the reference.
    fn dial(&mut self, mut contact: Contact, kind: DialKind) {
        if contact.id == self.id
            || contact.addrs.is_empty()
            || self.edges.contains(&contact.id)
            || self.dialing.contains(&contact.id)
        {
            return;
        }
        // Bootstrap contacts are the operator's: never cut. Everything else came from peers.
        if kind != DialKind::Bootstrap && self.dialing.len() >= MAX_DIALS_IN_FLIGHT {
            self.stats.dials_cut += 1;
            return;
        }
        if contact.addrs.len() > MAX_DIAL_ADDRS {
            self.stats.dials_cut += (contact.addrs.len() - MAX_DIAL_ADDRS) as u64;
            contact.addrs.truncate(MAX_DIAL_ADDRS);
        }
        // The long timeout only for contacts we have reason to wait for: the operator's
        // bootstrap list, and an incumbent of our table being probed (failing it evicts an
        // entry that may well be honest and far away). A contact a peer told us of (even one
        // it says is a public anchor: that claim is unverified) gets the short one.
        let patient = kind == DialKind::Probe || self.bootstrap.iter().any(|b| b.id == contact.id);
        let timeout = if patient {
            self.config.maintenance.dial_timeout
        } else {
            NON_ANCHOR_DIAL_TIMEOUT
        };
        self.dialing.insert(contact.id);
        self.actions.push_back(Action::Dial { contact, timeout });
    }

    fn random32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.rng.fill(&mut out);
        out
    }

    /// `N` random bytes (a nonce).
    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill(&mut out);
        out
    }
}

/// Whether `endpoint` is on the host that `edge` (an edge's remote address) comes from. An
/// endpoint without a port (an in-memory node's own name) is its host.
fn on_host_of(endpoint: &str, edge: &Addr) -> bool {
    use nodenet_nat::birthday::{host_of, same_host};
    let host = |e: &str| host_of(e).unwrap_or(e).to_owned();
    same_host(&host(endpoint), &host(&edge.endpoint))
}

/// A small control frame.
#[doc(hidden)]
pub fn small_frame(ty: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; nodenet_wire::header_len(payload.len()) + payload.len()];
    let n = Frame::new(ty, payload).encode(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests;
