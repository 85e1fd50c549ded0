//! The node's decision core: sans-IO.
//!
//! [`Core`] owns the tables and every rule of the protocol, and nothing else: no socket, no
//! task, no clock, no randomness of its own. Inputs arrive as method calls with the time
//! ([`Now`]); outputs are return values and [`Action`]s queued for the driver
//! ([`Core::poll_action`]). The tokio driver of the `nodenet` crate and the
//! discrete-event simulator ([`crate::sim`]) drive the same core.
//!
//! Inputs: [`Core::on_edge_up`], [`Core::on_edge_down`], [`Core::on_frame`],
//! [`Core::on_dial_failed`], [`Core::handle_timeout`], and the application's
//! [`Core::originate`] and [`Core::bootstrap`]. After each, drain [`Core::poll_action`] until
//! it returns `None`, and wake next at [`Core::poll_timeout`] (it may have moved closer).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use nodenet_identity::{Identity, derive_id};
use nodenet_kad::NodeId;
use nodenet_nat::{NatType, Reflexive};
use nodenet_rendezvous::{Coordinates, Hello, NONCE_LEN as RDV_NONCE_LEN, Reply};
use nodenet_routing::control::{self, Contact, NONCE_LEN};
use nodenet_routing::msg::{self, MAX_HOPS, MsgFields, MsgRef};
use nodenet_routing::{
    Candidates, Caps, Decision, DropReason, Edges, KMIN, Knowledge, Observed, Phase, SIBLINGS,
    SubnetKey, Time, TokenBucket, decide, first_hops, handlers, id_in_bucket,
};
use nodenet_wire::{Addr, Frame, FrameType, MAX_PACKET_LEN, Writer};

use crate::Stats;
use crate::connect::RelayCandidate;
use crate::links::Links;
use crate::relays::RelayHints;
use crate::rng::CoreRng;

mod edges;
mod maintenance;
mod nat;
mod near_miss;
mod origination;
mod relay;
mod rendezvous;
mod routed;
mod tables;
mod types;

use tables::{Crumbs, Marks, OriginLimiter, Seen, crumb_of};

pub use types::{
    Action, Attested, Delivery, EdgeRefusal, Handled, MAX_PUNCH_CANDIDATES, NodeEvent,
    OriginateError, RelayOpened, Via,
};

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
/// Failed dials in a row after which even a bucket's last contact is evicted
/// ([`edges::kept_through_failures`]): nine doubling delays (about 8 minutes), then one per
/// [`BACKOFF_MAX`], about an hour of failing in all.
const KEEP_FAILURES: u32 = 20;
/// The shortest maintenance tick and self-lookup period taken (shorter ones are raised).
const MIN_PERIOD: Duration = Duration::from_millis(1);
/// A backoff that ended is remembered at least this long (or one more delay): a failure or
/// a quick drop meanwhile doubles it. Longer than any maintenance tick.
const BACKOFF_MEMORY: Duration = Duration::from_secs(60);
const NONCE_TTL: Duration = Duration::from_secs(30);
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
/// The hops a message has left at most once a local optimum detoured it: enough to reach
/// the target from the neighbour that holds its edge, too few to circle.
pub const DETOUR_TTL: u8 = 3;
/// A self-lookup whose answer names a node closer to us than any we knew is followed by
/// another this soon, at most [`SELF_LOOKUP_FOLLOW_UPS`] times in a row: late enough for
/// the dial of that closer node to be done, so the follow-up goes through it (2 s, before
/// the dial is up, lost five points of 10,000-node delivery).
const SELF_LOOKUP_FOLLOW_UP: Duration = Duration::from_secs(5);
const SELF_LOOKUP_FOLLOW_UPS: u8 = 6;
/// How many bits out from the bucket of our 16th closest known node (with an address) a
/// neighbourhood lookup may aim.
const NEIGHBOURHOOD_SPAN: u8 = 4;
/// At most this many refresh checks between two neighbourhood lookups (their gap doubles
/// while their answers add nobody new with an address).
const NEIGHBOURHOOD_GAP_MAX: u8 = 16;
/// A message for a NodeId we neither hold an edge to nor know, that found us its local
/// optimum, makes us look that NodeId up (its answers teach us who is around it, and our
/// closer-node dials take it from there), at most once per this long.
pub const NEAR_MISS_GAP: Duration = Duration::from_secs(5);
/// The node that signed a message that set off a near-miss lookup sets off no other for
/// this long, so one identity cannot keep the [`NEAR_MISS_GAP`] slot for itself, whichever
/// of our edges it sends through.
pub const NEAR_MISS_QUIET: Duration = Duration::from_secs(60);
/// Inbound edges past [`CoreConfig::max_inbound_edges`] that peers we expect may take: a
/// peer whose rendezvous Hello or punch Connect we just answered (its signature checked)
/// is about to dial us, and a node at its cap (a popular public node) refused every path of
/// such a connect, direct, punched and relayed alike (at 3,000 simulated nodes, the one
/// failed connect of each of two seeds).
pub const INBOUND_HEADROOM: usize = 32;
/// How long a peer whose request we answered stays expected: a connect's whole cascade
/// (rendezvous 10 s, punch, three relays) fits in it.
const EXPECTED_FOR: Duration = Duration::from_secs(60);
/// Expected peers remembered at most (the oldest goes first).
const EXPECTED_MAX: usize = 64;
/// Quiet signers remembered at most (the oldest goes first): at one lookup per
/// [`NEAR_MISS_GAP`], as many as a [`NEAR_MISS_QUIET`] holds.
const NEAR_MISS_QUIETS: usize = 12;
/// Edges beyond our three closest, drawn at random, that a self-lookup also goes through.
const SELF_LOOKUP_OUTSIDERS: usize = 4;

/// Relay requests of ours awaiting a grant at most (the oldest goes first): a connect asks
/// one relay at a time, an attestation round a few at once.
pub const MAX_RELAY_ASKS: usize = 64;

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
    /// When maintenance runs next ([`Core::on_tick`]).
    next_tick: Time,
    next_self_lookup: Time,
    /// The nonce of our latest self-lookup.
    self_lookup: Option<[u8; NONCE_LEN]>,
    /// Quick follow-ups since the last periodic self-lookup, and whether one is due.
    self_lookup_streak: (u8, bool),
    /// The nonce of our last neighbourhood lookup, the gap (in refresh checks) to leave
    /// after the next one, and how many checks to skip before it ([`Core::neighbourhood_lookup`]).
    neighbourhood: (Option<[u8; NONCE_LEN]>, u8, u8),
    next_sibling_exchange: Time,
    next_refresh: Time,
    /// When the next near-miss lookup may go out ([`NEAR_MISS_GAP`]).
    next_near_miss: Time,
    /// Signers whose message set off a near-miss lookup, quiet until the time beside them.
    near_miss_quiet: Marks,
    /// Peers whose rendezvous or punch request we answered, expected until the time beside
    /// them ([`INBOUND_HEADROOM`]).
    expected: Marks,
    /// Peers that dialed us and were asked where they listen, for [`NONCE_TTL`] each, with
    /// the nonce of the ask until its answer came (it counts once, from that peer only); at
    /// most one per inbound place (`max_inbound_edges` + [`INBOUND_HEADROOM`]): only an
    /// edge admitted is asked, so only churn past that pushes an honest ask out (the oldest
    /// goes first; its answer is then dropped as unsolicited).
    asks: Marks<Option<[u8; NONCE_LEN]>>,
    /// What our neighbours report of our address.
    reflexive: Reflexive,
    /// The confirmed reflexive address, and whether it is our own.
    confirmed: Option<(Addr, bool)>,
    /// No address has a quorum of reports although a quorum of neighbours reported (kept by
    /// `refresh_reflexive` beside `confirmed`).
    symmetric: bool,
    /// Edges that run through a relay (the host says so): their reports of our address are
    /// about the relay.
    relayed_edges: HashSet<NodeId>,
    /// Our open Connect requests: nonce → (peer, expiry).
    punches: HashMap<[u8; nodenet_nat::NONCE_LEN], (NodeId, Time)>,
    /// Our relay requests awaiting a grant: who was asked, under which nonce, until when.
    relay_asks: tables::Asks,
    /// Our relay lookups and the relays near their targets they found.
    relay_hints: RelayHints,
    /// What we know of each live connection: how it was opened, what relays said of it.
    links: Links,
    /// Punch bursts running and timed punches held ([`crate::punch`]).
    bursts: crate::punch::Bursts,
    /// Birthday punching's limits and backoff.
    birthday: nodenet_nat::birthday::Limits,
    /// Sealed boxes opened recently (replay protection).
    boxes: nodenet_rendezvous::ReplayCache,
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
    pub fn new(identity: Identity, mut config: CoreConfig, rng: CoreRng) -> Self {
        // A zero period would make the core's deadline always due and spin its driver.
        let m = &mut config.maintenance;
        m.tick = m.tick.max(MIN_PERIOD);
        m.self_lookup = m.self_lookup.max(MIN_PERIOD);
        let id = identity.node_id();
        let asks = config.max_inbound_edges.saturating_add(INBOUND_HEADROOM);
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
            next_tick: Time(0),
            next_self_lookup: Time(0),
            self_lookup: None,
            self_lookup_streak: (0, false),
            neighbourhood: (None, 1, 0),
            next_sibling_exchange: Time(0),
            next_refresh: Time(0),
            next_near_miss: Time(0),
            near_miss_quiet: Marks::new(NEAR_MISS_QUIETS),
            expected: Marks::new(EXPECTED_MAX),
            asks: Marks::new(asks),
            reflexive: Reflexive::new(),
            confirmed: None,
            symmetric: false,
            relayed_edges: HashSet::new(),
            punches: HashMap::new(),
            relay_asks: tables::Asks::new(MAX_RELAY_ASKS),
            relay_hints: RelayHints::default(),
            links: Links::default(),
            bursts: crate::punch::Bursts::new(),
            birthday: nodenet_nat::birthday::Limits::new(Default::default()),
            boxes: nodenet_rendezvous::ReplayCache::new(),
        }
    }

    /// What we know of each live connection (see [`Links`]).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The driver reports connections opening and closing here.
    pub fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }

    /// Birthday punching's limits and backoff (see [`crate::birthday`]).
    pub fn birthday_limits(&self) -> &nodenet_nat::birthday::Limits {
        &self.birthday
    }

    /// Birthday punching's limits, for the steps of a [`crate::birthday::Attempt`].
    pub fn birthday_limits_mut(&mut self) -> &mut nodenet_nat::birthday::Limits {
        &mut self.birthday
    }

    /// Sets birthday punching's limits (the node's configuration).
    pub fn set_birthday_config(&mut self, config: nodenet_nat::birthday::BirthdayConfig) {
        self.birthday = nodenet_nat::birthday::Limits::new(config);
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

    /// The settings this core runs with (as the driver adjusted them to its transport).
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The live edges.
    pub fn edges(&self) -> &Edges {
        &self.edges
    }

    /// The knowledge table.
    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// The next action for the driver.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
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

    /// Counts a frame not sent because the edge's queue was full (the edge lives on).
    pub fn count_queue_full(&mut self) {
        self.stats.dropped_queue_full += 1;
    }

    /// Counts a sealed box that did not open.
    pub fn count_bad_box(&mut self) {
        self.stats.dropped_bad_box += 1;
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
