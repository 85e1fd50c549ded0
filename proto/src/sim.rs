//! A discrete-event simulator: thousands of [`Core`]s in one process, no tokio, no sockets.
//!
//! Each node is a bare decision core; the simulator plays the driver and the network. The
//! network ([`net`]) is packet-level where NATs matter: every node has one socket, some sit
//! behind NAT devices of the kinds in [`NatKind`], and a dial is a handshake that must get
//! through both sides' NATs (retransmitted until its timeout, as QUIC does). A connect runs
//! the same [`Cascade`] the tokio driver runs, with rendezvous, punch and relay requests
//! answered by the cores; relays are public nodes that splice packets between two ports.
//! Frames on an edge take a fixed one-way latency; a send to a dead node is silently lost, as
//! it would be on a real network until the edge is reaped. Maintenance ticks are staggered
//! per node. Everything is seeded, and nothing iterates a hash map: the same seed gives the
//! same run.
//!
//! A connect that ends relayed between a symmetric NAT and an easy one is followed by a
//! birthday punch ([`crate::birthday::Attempt`], played packet by packet on the network;
//! see `sim/birthday.rs`), which replaces the relayed edge when it gets through.
//!
//! Not modelled yet: relay caps, mapping expiry and packet loss.

mod birthday;
pub mod net;
mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::msg::{MAX_HOPS, MsgRef};
use nodenet_routing::{Contact, Time};
use nodenet_wire::{Addr, Frame, FrameType};

use net::Net;
pub use net::{Ep, NatKind};
pub use report::{ConnectRecord, ConnectSummary, SimReport};

use crate::CoreRng;
use crate::connect::{Cascade, CascadeConfig, Command, EdgeNow, How, Outcome, Path};
use crate::core::{Action, Core, CoreConfig, Handled, Now, small_frame};

/// Wall-clock origin of simulated envelopes (any fixed instant works).
const UNIX_ORIGIN_NS: i64 = 1_700_000_000_000_000_000;
/// A dial's handshake is sent again this often until its timeout.
const DIAL_RETRY: Duration = Duration::from_millis(250);
/// A held (timed) punch goes without its Sync after this long.
const SYNC_WAIT: Duration = Duration::from_secs(2);
/// Volleys in a punch burst.
const PUNCH_VOLLEYS: u8 = 5;

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
    Tick(usize),
    Volley {
        from: usize,
        to: Vec<Ep>,
        left: u8,
    },
    /// A held punch's Sync did not come.
    Release(usize, Nonce),
    /// A connect's deadline.
    Wake(usize),
    /// A birthday attempt's next step.
    Birthday(usize, birthday::Step),
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
    held: HashMap<(usize, Nonce), (NodeId, Vec<Ep>)>,
    /// Birthday attempts after relayed connects.
    upgrades: Vec<birthday::Upgrade>,
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
    tick: Duration,
    rng: u64,
    report: SimReport,
    first_hops: HashMap<(usize, [u8; 16]), u8>,
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
            held: HashMap::new(),
            upgrades: Vec::new(),
            birthday_waiters: HashMap::new(),
            responding: HashMap::new(),
            limits: HashMap::new(),
            birthday: crate::birthday::BirthdayConfig::default(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: Time(0),
            latency,
            tick,
            rng: seed | 1,
            report: SimReport {
                relayed_by: vec![0; kinds.len()],
                ..SimReport::default()
            },
            first_hops: HashMap::new(),
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
            sim.push(Time(0).after(offset), Ev::Tick(i));
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
                if self.alive[i] {
                    self.cores[i].on_tick(now);
                    self.drain(i, now);
                    self.push(self.now.after(self.tick), Ev::Tick(i));
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
            Ev::Volley { from, to, left } => {
                if !self.alive[from] {
                    return;
                }
                for &ep in &to {
                    // What a punch datagram does is open the sender's NAT; where it lands
                    // does not matter.
                    let _ = self.net.send(from, ep);
                }
                if left > 1 {
                    let at = self.now.after(crate::connect::PUNCH_INTERVAL);
                    self.push(
                        at,
                        Ev::Volley {
                            from,
                            to,
                            left: left - 1,
                        },
                    );
                }
            }
            Ev::Release(node, nonce) => {
                if let Some((_, to)) = self.held.remove(&(node, nonce)) {
                    self.volleys(node, to);
                }
            }
            Ev::Wake(c) => {
                let edge = self.edge_now(self.runs[c].from, self.runs[c].to);
                self.runs[c].cascade.handle_timeout(self.now, edge);
                self.step(c);
            }
            Ev::Birthday(u, step) => self.on_birthday(u, step),
        }
    }

    fn on_frame(&mut self, now: Now, to: usize, from: usize, mut frame: Vec<u8>) {
        if !self.alive[to] || !self.edges.contains(&(to, from)) {
            return;
        }
        self.note_route(to, &frame);
        let route_target = route_target(&frame);
        let peer = self.cores[from].id();
        let seen = self.seen_addr(to, from);
        match self.cores[to].on_frame(now, peer, &seen, &mut frame) {
            Handled::Forward(candidates) => {
                let next = candidates
                    .as_slice()
                    .iter()
                    .filter_map(|id| self.index.get(id).copied())
                    .find(|&j| self.edges.contains(&(to, j)));
                if let Some(j) = next {
                    self.transmit(to, j, frame);
                }
            }
            Handled::Deliver(d) => {
                if d.via == crate::Via::Routed {
                    self.report.delivered += 1;
                    *self.report.delivered_at.entry(to).or_default() += 1;
                }
            }
            Handled::Rendezvous { nonce, coordinates } => {
                if let Some(c) = self.rendezvous_waiters.remove(&(to, nonce)) {
                    let run = &mut self.runs[c];
                    run.rendezvous = None;
                    run.rendezvous_addrs.clone_from(&coordinates.addrs);
                    run.cascade.handle_rendezvous(self.now, coordinates.addrs);
                    self.step(c);
                }
            }
            Handled::PunchRequested { peer, addrs, hold } => {
                let eps = eps(&addrs);
                match hold {
                    Some(nonce) if !self.held.contains_key(&(to, nonce)) => {
                        self.held.insert((to, nonce), (peer, eps));
                        self.push(self.now.after(SYNC_WAIT), Ev::Release(to, nonce));
                    }
                    _ => self.volleys(to, eps),
                }
            }
            Handled::PunchSync { peer, nonce } => {
                if self.held.get(&(to, nonce)).is_some_and(|(p, _)| *p == peer) {
                    if let Some((_, eps)) = self.held.remove(&(to, nonce)) {
                        self.volleys(to, eps);
                    }
                }
            }
            Handled::PunchAck {
                nonce,
                addrs,
                flags,
                public,
            } => {
                if let Some(u) = self.birthday_waiters.remove(&(to, nonce)) {
                    let answer = crate::birthday::Answer {
                        agreed: flags & nodenet_nat::FLAG_BIRTHDAY != 0,
                        addrs,
                        public,
                    };
                    self.on_birthday_answer(u, answer);
                } else if let Some(c) = self.punch_waiters.remove(&(to, nonce)) {
                    let run = &self.runs[c];
                    let timed = flags & nodenet_nat::FLAG_TIMED != 0;
                    let candidates = self.cores[to].punch_candidates(
                        run.rendezvous_addrs.iter().chain(&addrs).map(Addr::as_ref),
                    );
                    let edge = self.edge_now(run.from, run.to);
                    self.runs[c]
                        .cascade
                        .handle_punch_answer(self.now, &addrs, timed, candidates, edge);
                    self.step(c);
                }
            }
            Handled::RelayRequested {
                from: caller,
                nonce,
                target,
            } => self.open_relay(to, caller, nonce, target),
            Handled::RelayGranted {
                from: relay,
                nonce,
                addr,
                ..
            } => {
                if let Some((r, c)) = self.relay_waiters.remove(&(to, nonce)) {
                    if self.cores[r].id() == relay {
                        let edge = self.edge_now(self.runs[c].from, self.runs[c].to);
                        self.runs[c]
                            .cascade
                            .handle_relay_answer(self.now, Ok(addr), edge);
                        self.step(c);
                    } else {
                        self.relay_waiters.insert((to, nonce), (r, c));
                    }
                }
            }
            Handled::RelayBind { addr } => self.volleys(to, eps(&[addr])),
            Handled::BirthdayRequested {
                peer,
                nonce,
                addrs,
                public,
            } => self.on_birthday_request(to, peer, nonce, &addrs, public.as_ref()),
            Handled::Done => {
                if let Some(t) = route_target.filter(|t| *t != self.cores[to].id()) {
                    self.report.stuck.push((to, t));
                }
            }
        }
        self.drain(to, now);
    }

    fn seen_addr(&self, at: usize, peer: usize) -> Addr {
        self.seen
            .get(&(at, peer))
            .cloned()
            .unwrap_or_else(|| self.socket_addr(peer))
    }

    /// A punch burst from `from` toward `to`.
    fn volleys(&mut self, from: usize, to: Vec<Ep>) {
        if !to.is_empty() {
            self.push(
                self.now,
                Ev::Volley {
                    from,
                    to,
                    left: PUNCH_VOLLEYS,
                },
            );
        }
    }

    /// A relay volunteer's answer to a request: a session on its host, the grant to the
    /// caller and the bind to the target (over its edges to both).
    fn open_relay(&mut self, relay: usize, caller: NodeId, nonce: Nonce, target: NodeId) {
        let (Some(&c), Some(&t)) = (self.index.get(&caller), self.index.get(&target)) else {
            return;
        };
        if !self.edges.contains(&(relay, t)) || !self.edges.contains(&(relay, c)) {
            return;
        }
        let (caller_side, callee_side) = self.net.open_relay(relay);
        let (caller_addr, callee_addr) = (ep_addr(caller_side), ep_addr(callee_side));
        let grant = nodenet_nat::RelayGrant {
            nonce,
            addr: caller_addr.as_ref(),
            attest: None,
        }
        .encode();
        let bind = nodenet_nat::RelayBind {
            addr: callee_addr.as_ref(),
            attest: None,
        }
        .encode();
        if let (Ok(grant), Ok(bind)) = (grant, bind) {
            self.transmit(relay, t, small_frame(FrameType::RELAY_BIND, &bind));
            self.transmit(relay, c, small_frame(FrameType::RELAY_GRANT, &grant));
            self.cores[relay].count_relay_granted();
        }
    }

    fn edge_now(&self, from: usize, to: usize) -> EdgeNow {
        if !self.edges.contains(&(from, to)) {
            EdgeNow::None
        } else if self.relayed.contains(&(from, to)) {
            EdgeNow::Relayed
        } else {
            EdgeNow::Direct
        }
    }

    fn start_dial(
        &mut self,
        from: usize,
        to: usize,
        addrs: Vec<Ep>,
        timeout: Duration,
        purpose: Purpose,
    ) {
        let d = self.next_dial;
        self.next_dial += 1;
        self.dials.insert(
            d,
            Dial {
                from,
                to,
                addrs,
                deadline: self.now.after(timeout),
                purpose,
                through: None,
            },
        );
        self.push(self.now, Ev::DialTry(d));
    }

    /// One round of handshakes to every address of dial `d`.
    fn dial_try(&mut self, d: usize) {
        let Some(dial) = self.dials.get(&d) else {
            return;
        };
        let (from, to, deadline) = (dial.from, dial.to, dial.deadline);
        let addrs = dial.addrs.clone();
        if self.alive[from] && self.alive[to] {
            for ep in addrs {
                if let Some(through) = self.net.handshake(from, ep, to) {
                    if let Some(dial) = self.dials.get_mut(&d) {
                        dial.through = Some(through);
                    }
                    self.push(self.now.after(self.latency * 2), Ev::Up(d));
                    return;
                }
            }
        }
        if self.now >= deadline {
            self.push(self.now, Ev::Up(d));
        } else {
            let at = self.now.after(DIAL_RETRY).min(deadline);
            self.push(at, Ev::DialTry(d));
        }
    }

    /// Dial `d` ended: through, or not.
    fn dial_up(&mut self, now: Now, d: usize) {
        let Some(dial) = self.dials.remove(&d) else {
            return;
        };
        let (from, to) = (dial.from, dial.to);
        let ok = match dial.through {
            Some(_) if !self.alive[from] || !self.alive[to] => false,
            Some(_) if self.edges.contains(&(from, to)) => true,
            Some((at, seen)) => self.edge_up(now, from, to, at, seen),
            None => false,
        };
        match dial.purpose {
            Purpose::Overlay => {
                let id = self.cores[to].id();
                self.cores[from].on_dial_finished(&id);
                if !ok && self.alive[from] {
                    self.cores[from].on_dial_failed(now, &id);
                }
                self.drain(from, now);
            }
            Purpose::Connect(c) => {
                let edge = self.edge_now(from, to);
                let result = if ok { Ok(()) } else { Err("no handshake") };
                let symmetric = self.cores[from].nat_type() == nodenet_nat::NatType::Symmetric;
                self.runs[c].cascade.set_symmetric(symmetric);
                self.runs[c].cascade.handle_dialed(self.now, result, edge);
                self.step(c);
            }
            Purpose::Link(c) => {
                let edge = self.edge_now(from, self.runs[c].to);
                let result = if ok { Ok(()) } else { Err("no handshake") };
                self.runs[c]
                    .cascade
                    .handle_relay_linked(self.now, result, edge);
                self.step(c);
            }
        }
    }

    /// Brings up the edge `from` dialed to `to` at `at`, where `to` saw it come from `seen`.
    fn edge_up(&mut self, now: Now, from: usize, to: usize, at: Ep, seen: Ep) -> bool {
        let (fid, tid) = (self.cores[from].id(), self.cores[to].id());
        let (fkey, tkey) = (self.keys[from], self.keys[to]);
        let (at_addr, seen_addr) = (ep_addr(at), ep_addr(seen));
        let relay = self.net.relay_of(at);
        let mut ok = false;
        if self.cores[to]
            .on_edge_up(now, fid, Some(fkey), false, &seen_addr)
            .is_ok()
        {
            if self.cores[from]
                .on_edge_up(now, tid, Some(tkey), true, &at_addr)
                .is_ok()
            {
                self.edges.insert((from, to));
                self.edges.insert((to, from));
                self.seen.insert((to, from), seen_addr);
                self.seen.insert((from, to), at_addr);
                if let Some(r) = relay {
                    self.relayed.insert((from, to));
                    self.relayed.insert((to, from));
                    self.cores[from].set_edge_relayed(&tid, true);
                    self.cores[to].set_edge_relayed(&fid, true);
                    self.report.relayed_by[r] += 1;
                }
                ok = true;
            } else {
                self.cores[to].on_edge_down(now, &fid);
            }
        }
        self.drain(from, now);
        self.drain(to, now);
        ok
    }

    /// Starts a connect from node `from` to node `to` (by its NodeId alone, as
    /// `nodenet::Node::connect` does); its record lands in [`SimReport::connects`].
    pub fn connect(&mut self, from: usize, to: usize) {
        let target = self.cores[to].id();
        let known = self.cores[from].known_addrs(&target);
        let symmetric = self.cores[from].nat_type() == nodenet_nat::NatType::Symmetric;
        let config = CascadeConfig {
            direct_dial_timeout: crate::connect::DIRECT_DIAL_TIMEOUT,
            rendezvous_timeout: Duration::from_secs(10),
        };
        let c = self.runs.len();
        self.runs.push(Run {
            from,
            to,
            started: self.now,
            cascade: Cascade::new(self.now, known, symmetric, config),
            rendezvous: None,
            rendezvous_addrs: Vec::new(),
            punch: None,
            done: false,
        });
        if self.edges.contains(&(from, to)) {
            // An edge we already hold: nothing to do.
            self.finish(c, Some(Path::Direct), None, None);
            return;
        }
        self.step(c);
    }

    /// Carries out connect `c`'s commands; records its end.
    fn step(&mut self, c: usize) {
        if self.runs[c].done {
            return;
        }
        let (from, to) = (self.runs[c].from, self.runs[c].to);
        let target = self.cores[to].id();
        let now = self.wall(self.now);
        while let Some(command) = self.runs[c].cascade.poll_command() {
            match command {
                Command::Dial { addrs, timeout } => {
                    self.start_dial(from, to, eps(&addrs), timeout, Purpose::Connect(c));
                }
                Command::StartRendezvous => match self.cores[from].start_rendezvous(now, target) {
                    Ok(nonce) => {
                        self.runs[c].rendezvous = Some(nonce);
                        self.rendezvous_waiters.insert((from, nonce), c);
                    }
                    Err(_) => self.runs[c]
                        .cascade
                        .handle_rendezvous_refused(crate::connect::Failure::Unroutable),
                },
                Command::ResendRendezvous => {
                    if let Some(nonce) = self.runs[c].rendezvous {
                        let _ = self.cores[from].resend_rendezvous(now, &nonce);
                    }
                }
                Command::StartPunch => match self.cores[from].start_punch(now, target) {
                    Ok(nonce) => {
                        self.runs[c].punch = Some(nonce);
                        self.punch_waiters.insert((from, nonce), c);
                    }
                    Err(_) => {
                        let edge = self.edge_now(from, to);
                        self.runs[c].cascade.handle_punch_refused(
                            self.now,
                            crate::connect::Failure::Unroutable,
                            edge,
                        );
                    }
                },
                Command::PunchSync => {
                    if let Some(nonce) = self.runs[c].punch {
                        let _ = self.cores[from].punch_sync(now, target, &nonce);
                    }
                }
                Command::PunchBurst { addrs } => self.volleys(from, eps(&addrs)),
                Command::LookupRelays => self.cores[from].lookup_relays(now, target),
                Command::FindRelays { n } => {
                    let relays = self.cores[from].relays_near(now, &target, n);
                    let edge = self.edge_now(from, to);
                    self.runs[c].cascade.handle_relays(self.now, relays, edge);
                }
                Command::LinkRelay {
                    relay,
                    addrs,
                    timeout,
                } => {
                    let r = self.index.get(&relay).copied();
                    match r {
                        Some(r) if self.edges.contains(&(from, r)) => {
                            let edge = self.edge_now(from, to);
                            self.runs[c]
                                .cascade
                                .handle_relay_linked(self.now, Ok(()), edge);
                        }
                        Some(r) if !addrs.is_empty() => {
                            self.start_dial(from, r, eps(&addrs), timeout, Purpose::Link(c));
                        }
                        _ => {
                            let edge = self.edge_now(from, to);
                            self.runs[c].cascade.handle_relay_linked(
                                self.now,
                                Err("no address"),
                                edge,
                            );
                        }
                    }
                }
                Command::AskRelay { relay } => {
                    let r = self.index.get(&relay).copied();
                    match r.filter(|&r| self.edges.contains(&(from, r))) {
                        Some(r) => {
                            let mut nonce = [0u8; nodenet_nat::NONCE_LEN];
                            for chunk in nonce.chunks_mut(8) {
                                let n = self.next().to_le_bytes();
                                chunk.copy_from_slice(&n[..chunk.len()]);
                            }
                            self.relay_waiters.insert((from, nonce), (r, c));
                            let req = nodenet_nat::RelayRequest { nonce, target }.encode();
                            self.transmit(from, r, small_frame(FrameType::RELAY_REQUEST, &req));
                        }
                        None => {
                            let edge = self.edge_now(from, to);
                            self.runs[c].cascade.handle_relay_answer(
                                self.now,
                                Err(crate::connect::Failure::NoRelay),
                                edge,
                            );
                        }
                    }
                }
            }
        }
        self.drain(from, now);
        match self.runs[c].cascade.outcome().cloned() {
            Some(Outcome::Connected { path, how }) => {
                let relay = match how {
                    How::Relay { addr, .. } => {
                        Ep::parse(&addr.endpoint).and_then(|ep| self.net.relay_of(ep))
                    }
                    _ => None,
                };
                self.finish(c, Some(path), relay, None);
            }
            Some(Outcome::Failed { step, error }) => {
                self.finish(c, None, None, Some(format!("{step}: {error:?}")));
            }
            None => {
                if let Some(t) = self.runs[c].cascade.poll_timeout() {
                    self.push(t.max(self.now), Ev::Wake(c));
                }
            }
        }
    }

    fn finish(
        &mut self,
        c: usize,
        path: Option<Path>,
        relay: Option<usize>,
        failure: Option<String>,
    ) {
        let run = &mut self.runs[c];
        run.done = true;
        if let Some(nonce) = run.rendezvous.take() {
            self.rendezvous_waiters.remove(&(run.from, nonce));
        }
        if let Some(nonce) = run.punch.take() {
            self.punch_waiters.remove(&(run.from, nonce));
        }
        let (from, to) = (run.from, run.to);
        let record = ConnectRecord {
            from: self.net.kind(from),
            to: self.net.kind(to),
            path,
            relay,
            time: self.now.since(run.started),
            failure,
            birthday: None,
        };
        self.report.connects.push(record);
        if path == Some(Path::Relayed) {
            self.start_birthday(from, to, self.report.connects.len() - 1);
        }
    }

    /// Records hops of a Route frame arriving at its target (first copy only).
    fn note_route(&mut self, at: usize, frame: &[u8]) {
        let Ok((f, _)) = Frame::parse(frame) else {
            return;
        };
        if f.frame_type() != FrameType::ROUTE {
            return;
        }
        let Ok(m) = MsgRef::parse(f.payload()) else {
            return;
        };
        if m.target != self.cores[at].id() {
            return;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&m.sig[..16]);
        // The originator sends with TTL 16 and every forwarder decrements before sending on, so
        // a copy that arrives with TTL t has crossed 16 - t + 1 edges.
        let hops = MAX_HOPS.saturating_sub(m.clamped_ttl()) + 1;
        if self.first_hops.insert((at, key), hops).is_none() {
            self.report.hops.push(hops);
        }
    }

    fn transmit(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        if matches!(Frame::parse(&frame), Ok((f, _)) if f.frame_type() == FrameType::ROUTE) {
            self.report.route_frames += 1;
        }
        let at = self.now.after(self.latency);
        self.push(at, Ev::Frame { to, from, frame });
    }

    fn drain(&mut self, i: usize, _now: Now) {
        while let Some(action) = self.cores[i].poll_action() {
            match action {
                Action::Send { to, frame } => {
                    if let Some(&j) = self.index.get(&to) {
                        if self.edges.contains(&(i, j)) {
                            self.transmit(i, j, frame);
                        }
                    }
                }
                Action::SendAny { to, frame } => {
                    let next = to
                        .iter()
                        .filter_map(|id| self.index.get(id).copied())
                        .find(|&j| self.edges.contains(&(i, j)));
                    if let Some(j) = next {
                        self.transmit(i, j, frame);
                    }
                }
                Action::Dial { contact, timeout } => {
                    if let Some(&j) = self.index.get(&contact.id) {
                        self.start_dial(i, j, eps(&contact.addrs), timeout, Purpose::Overlay);
                    } else {
                        self.cores[i].on_dial_finished(&contact.id);
                    }
                }
                Action::CheckOwnIp { addr } => {
                    // A host owns the IP of its own socket, nothing else.
                    let own =
                        Ep::parse(&addr.endpoint).is_some_and(|e| e.ip == self.net.socket(i).ip);
                    self.cores[i].on_own_ip(&addr, own);
                }
                Action::Notify(_) => {}
                Action::Close(peer) => {
                    if let Some(&j) = self.index.get(&peer) {
                        if self.edges.remove(&(i, j)) {
                            self.relayed.remove(&(i, j));
                            let at = self.now.after(self.latency);
                            self.push(at, Ev::Closed { at: j, peer: i });
                        }
                    }
                }
            }
        }
    }
}

/// The target of a Route frame, if it is one.
fn route_target(frame: &[u8]) -> Option<NodeId> {
    let (f, _) = Frame::parse(frame).ok()?;
    (f.frame_type() == FrameType::ROUTE).then_some(())?;
    MsgRef::parse(f.payload()).ok().map(|m| m.target)
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
