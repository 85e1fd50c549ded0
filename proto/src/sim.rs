//! A discrete-event simulator: thousands of [`Core`]s in one process, no tokio, no sockets.
//!
//! Each node is a bare decision core; the simulator plays the driver and the network. The
//! network ([`net`]) is packet-level where NATs matter: every node has one socket, some sit
//! behind NAT devices of the kinds in [`NatKind`], and a dial is a handshake that must get
//! through both sides' NATs (retransmitted until its timeout, as QUIC does). A connect runs
//! the same [`Cascade`] the tokio driver runs, with rendezvous, punch and relay requests
//! answered by the cores; relays are public nodes that splice packets between two ports.
//! Frames on an edge take a fixed one-way latency; a send to a dead node is silently lost, as
//! it would be on a real network until the edge is reaped. Nodes' first maintenance ticks are
//! spread over the first tick period; from then on each keeps one timer on its core's
//! [`Core::poll_timeout`]. Everything is seeded, and nothing iterates a hash map: the same
//! seed gives the same run.
//!
//! A connect that ends relayed is followed, as on a node, by a birthday punch at once
//! ([`crate::birthday::Attempt`], played packet by packet on the network; see
//! `sim/birthday.rs`; a pair that is no birthday pair is declined) and by the relayed edge's
//! [`crate::upgrade::Upgrade`] schedule: at each try, while the edge is still relayed, the
//! punch step alone and then a birthday punch (`sim/upgrades.rs`). Either replaces the
//! relayed edge when it gets through.
//!
//! Not modelled yet: relay caps, mapping expiry and packet loss.

mod birthday;
mod connects;
mod dials;
pub mod net;
mod report;
mod upgrades;
mod wire;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::msg::MsgRef;
use nodenet_routing::{Contact, Time};
use nodenet_wire::{Addr, Frame, FrameType};

use net::Net;
pub use net::{Ep, NatKind};
pub use report::{ConnectRecord, ConnectSummary, SimReport, Upgraded};

use crate::CoreRng;
use crate::connect::{Cascade, CascadeConfig, Command, EdgeNow, How, Outcome, Path};
use crate::core::{Action, Core, CoreConfig, Handled, Now};

/// Wall-clock origin of simulated envelopes (any fixed instant works).
const UNIX_ORIGIN_NS: i64 = 1_700_000_000_000_000_000;
/// A dial's handshake is sent again this often until its timeout.
const DIAL_RETRY: Duration = Duration::from_millis(250);

type Nonce = [u8; nodenet_nat::NONCE_LEN];

enum Ev {
    Frame {
        to: usize,
        from: usize,
        frame: Vec<u8>,
    },
    /// Another handshake attempt of a dial.
    DialTry(usize),
    /// A dial's handshake completed.
    Up(usize),
    Closed {
        at: usize,
        peer: usize,
    },
    /// Node `i`'s timer ([`Core::poll_timeout`]): maintenance, or a self-lookup.
    Tick(usize),
    /// A connect's deadline.
    Wake(usize),
    /// A birthday attempt's next step.
    Birthday(usize, birthday::Step),
    /// A responder's birthday agreement lapses (if still unplayed).
    BirthdayLapse(usize, Nonce),
    /// An upgrade schedule's deadline.
    Upgrade(usize),
}

/// Why a dial was made.
#[derive(Clone, Copy)]
enum Purpose {
    Overlay,
    Connect(usize),
    /// Connect `c`'s dial of a relay that is not yet an edge.
    Link(usize),
}

struct Dial {
    from: usize,
    to: usize,
    addrs: Vec<Ep>,
    deadline: Time,
    purpose: Purpose,
    /// Where it got through: the address dialed, and where the target saw us.
    through: Option<(Ep, Ep)>,
}

/// One connect under way.
struct Run {
    from: usize,
    to: usize,
    started: Time,
    cascade: Cascade<&'static str>,
    rendezvous: Option<[u8; nodenet_rendezvous::NONCE_LEN]>,
    rendezvous_addrs: Vec<Addr>,
    punch: Option<Nonce>,
    done: bool,
    /// Relays dialed for this connect: closed when it ends, as the node does.
    linked: Vec<usize>,
    /// What its relay step did, for [`ConnectRecord::relay_steps`].
    relay_steps: Vec<String>,
    /// The upgrade schedule whose try this is (`None`: a connect).
    upgrade: Option<usize>,
    /// The open relay request's nonce, withdrawn when the run ends or asks the next relay.
    relay_ask: Option<Nonce>,
    /// Where its last dial that got through landed (the address dialed, and where the
    /// target saw it come from).
    landed: Option<(Ep, Ep)>,
}

/// The simulator.
pub struct Sim {
    cores: Vec<Core>,
    keys: Vec<[u8; 32]>,
    index: HashMap<NodeId, usize>,
    alive: Vec<bool>,
    edges: HashSet<(usize, usize)>,
    /// Edges through a relay (both directions).
    relayed: HashSet<(usize, usize)>,
    /// (at, peer) → the address `at` sees `peer` at.
    seen: HashMap<(usize, usize), Addr>,
    net: Net,
    dials: HashMap<usize, Dial>,
    next_dial: usize,
    runs: Vec<Run>,
    rendezvous_waiters: HashMap<(usize, [u8; nodenet_rendezvous::NONCE_LEN]), usize>,
    punch_waiters: HashMap<(usize, Nonce), usize>,
    relay_waiters: HashMap<(usize, Nonce), (usize, usize)>,
    /// Birthday attempts after relayed connects.
    birthdays: Vec<birthday::BirthdayRun>,
    /// Upgrade schedules of relayed connects.
    schedules: Vec<upgrades::Schedule>,
    /// (caller, nonce) → its attempt.
    birthday_waiters: HashMap<(usize, Nonce), usize>,
    /// (responder, nonce) → the role it agreed to play.
    responding: HashMap<(usize, Nonce), crate::birthday::Role>,
    /// Each node's birthday limits (made on first use).
    limits: HashMap<usize, crate::birthday::Limits>,
    birthday: crate::birthday::BirthdayConfig,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    now: Time,
    latency: Duration,
    /// When each node's pending timer event fires (`Time(u64::MAX)`: none pending).
    timers: Vec<Time>,
    /// Whether each node's first (staggered) tick came; before it, its timer stays there.
    ticked: Vec<bool>,
    rng: u64,
    report: SimReport,
    first_hops: HashMap<(usize, [u8; 16]), u8>,
    /// Edges a Route copy crossed to reach a node, by (message, node).
    route_hops: HashMap<([u8; 16], usize), u8>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.cores.len())
            .field("now", &self.now)
            .finish()
    }
}

impl Sim {
    /// `identities.len()` nodes with `config`, all public, one-way latency `latency`, seeded
    /// by `seed`. Each node joins through a random node that joined before it.
    pub fn new(
        identities: Vec<Identity>,
        config: &CoreConfig,
        latency: Duration,
        seed: u64,
    ) -> Self {
        let kinds = vec![NatKind::Public; identities.len()];
        Self::with_nats(identities, config, latency, seed, &kinds)
    }

    /// Like [`Sim::new`], node `i` behind `kinds[i]`. Public nodes volunteer as relays; each
    /// node joins through a random public node that joined before it (node 0 is taken as
    /// public whatever its kind says).
    pub fn with_nats(
        identities: Vec<Identity>,
        config: &CoreConfig,
        latency: Duration,
        seed: u64,
        kinds: &[NatKind],
    ) -> Self {
        let tick = config.maintenance.tick;
        let mut kinds: Vec<NatKind> = (0..identities.len())
            .map(|i| kinds.get(i).copied().unwrap_or(NatKind::Public))
            .collect();
        if let Some(k) = kinds.first_mut() {
            *k = NatKind::Public;
        }
        let net = Net::new(&kinds, seed);
        let mut sim = Self {
            cores: Vec::new(),
            keys: Vec::new(),
            index: HashMap::new(),
            alive: Vec::new(),
            edges: HashSet::new(),
            relayed: HashSet::new(),
            seen: HashMap::new(),
            net,
            dials: HashMap::new(),
            next_dial: 0,
            runs: Vec::new(),
            rendezvous_waiters: HashMap::new(),
            punch_waiters: HashMap::new(),
            relay_waiters: HashMap::new(),
            birthdays: Vec::new(),
            schedules: Vec::new(),
            birthday_waiters: HashMap::new(),
            responding: HashMap::new(),
            limits: HashMap::new(),
            birthday: crate::birthday::BirthdayConfig::default(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: Time(0),
            latency,
            timers: vec![Time(u64::MAX); kinds.len()],
            ticked: vec![false; kinds.len()],
            rng: seed | 1,
            report: SimReport {
                relayed_by: vec![0; kinds.len()],
                ..SimReport::default()
            },
            first_hops: HashMap::new(),
            route_hops: HashMap::new(),
        };
        for (i, id) in identities.into_iter().enumerate() {
            let mut cfg = config.clone();
            cfg.advertise = vec![sim.socket_addr(i)];
            cfg.ip = true;
            cfg.relay = kinds[i] == NatKind::Public;
            sim.index.insert(id.node_id(), i);
            sim.keys.push(id.ed_public());
            sim.cores.push(Core::new(
                id,
                cfg,
                CoreRng::deterministic(seed ^ (i as u64 + 1)),
            ));
            sim.alive.push(true);
        }
        let mut public: Vec<usize> = Vec::new();
        for i in 0..sim.cores.len() {
            let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
            let offset = Duration::from_nanos(sim.next() % tick_ns);
            // Every node joins at once, and its first maintenance tick comes at a point
            // spread over the first tick period, as for nodes started one by one: their
            // timers do not fire in lockstep. From then on the core's deadline rules.
            let first = Time(0).after(offset);
            sim.timers[i] = first;
            sim.push(first, Ev::Tick(i));
            if !public.is_empty() {
                let pick = usize::try_from(sim.next() % public.len() as u64).unwrap_or(0);
                let via = public[pick];
                let contact = Contact::new(sim.cores[via].id(), vec![sim.socket_addr(via)]);
                let now = sim.wall(Time(0));
                sim.cores[i].bootstrap(vec![contact]);
                sim.drain(i, now);
            }
            if sim.net.kind(i) == NatKind::Public {
                public.push(i);
            }
        }
        sim
    }

    fn socket_addr(&self, i: usize) -> Addr {
        ep_addr(self.net.socket(i))
    }

    /// Node `i`'s NAT.
    pub fn nat(&self, i: usize) -> NatKind {
        self.net.kind(i)
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn wall(&self, t: Time) -> Now {
        Now {
            mono: t,
            unix_ns: UNIX_ORIGIN_NS + i64::try_from(t.0).unwrap_or(i64::MAX),
        }
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// True with no node.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// The core of node `i`.
    pub fn core(&self, i: usize) -> &Core {
        &self.cores[i]
    }

    /// True while node `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Kills node `i` silently: no Leave, its frames and dials vanish from now on.
    pub fn kill(&mut self, i: usize) {
        self.alive[i] = false;
    }

    /// The measurements so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now.after(d);
        while let Some(Reverse((at, key))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(ev) = self.events.remove(&key) {
                self.handle(ev);
            }
        }
        self.now = end;
    }

    /// Node `from` sends `payload` to node `to` (routed).
    pub fn send(&mut self, from: usize, to: usize, payload: &[u8]) -> Result<(), crate::SendError> {
        let now = self.wall(self.now);
        let target = self.cores[to].id();
        self.cores[from].originate(now, FrameType::ROUTE, target, payload)?;
        self.drain(from, now);
        Ok(())
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.wall(self.now);
        match ev {
            Ev::Tick(i) => {
                // Only the node's pending timer: one that an earlier deadline replaced is
                // stale.
                if self.alive[i] && self.timers[i] == self.now {
                    self.timers[i] = Time(u64::MAX);
                    self.ticked[i] = true;
                    self.cores[i].handle_timeout(now);
                    self.drain(i, now);
                }
            }
            Ev::Frame { to, from, frame } => self.on_frame(now, to, from, frame),
            Ev::DialTry(d) => self.dial_try(d),
            Ev::Up(d) => self.dial_up(now, d),
            Ev::Closed { at, peer } => {
                if self.alive[at] && self.edges.remove(&(at, peer)) {
                    self.relayed.remove(&(at, peer));
                    let id = self.cores[peer].id();
                    self.cores[at].on_edge_down(now, &id);
                    self.drain(at, now);
                }
            }
            Ev::Wake(c) => {
                let edge = self.edge_now(self.runs[c].from, self.runs[c].to);
                self.runs[c].cascade.handle_timeout(self.now, edge);
                self.step(c);
            }
            Ev::Birthday(u, step) => self.on_birthday(u, step),
            Ev::BirthdayLapse(at, nonce) => self.on_birthday_lapse(at, nonce),
            Ev::Upgrade(s) => self.on_upgrade(s),
        }
    }
}

/// The target and type of a Route or Hello frame, if it is one.
fn route_target(frame: &[u8]) -> Option<(NodeId, FrameType)> {
    let (f, _) = Frame::parse(frame).ok()?;
    let ty = f.frame_type();
    matches!(ty, FrameType::ROUTE | FrameType::HELLO).then_some(())?;
    MsgRef::parse(f.payload()).ok().map(|m| (m.target, ty))
}

/// The simulator's address of an endpoint.
fn ep_addr(ep: Ep) -> Addr {
    Addr::new("sim", ep.to_text())
}

/// The endpoints among `addrs` (others are not on the simulated network).
fn eps(addrs: &[Addr]) -> Vec<Ep> {
    addrs
        .iter()
        .filter_map(|a| Ep::parse(&a.endpoint))
        .collect()
}
