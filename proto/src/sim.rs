//! A discrete-event simulator: thousands of [`Core`]s in one process, no tokio, no sockets.
//!
//! Each node is a bare decision core; the simulator plays the driver and the network. Frames
//! take a fixed one-way latency; a dial completes after one round trip (or fails if the
//! target is dead); a send to a dead node is silently lost, as it would be on a real network
//! until the edge is reaped. Maintenance ticks are staggered per node. Everything is seeded:
//! the same seed gives the same run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::msg::{MAX_HOPS, MsgRef};
use nodenet_routing::{Contact, Time};
use nodenet_wire::{Addr, Frame, FrameType};

use crate::CoreRng;
use crate::core::{Action, Core, CoreConfig, Handled, Now};

/// Wall-clock origin of simulated envelopes (any fixed instant works).
const UNIX_ORIGIN_NS: i64 = 1_700_000_000_000_000_000;

enum Ev {
    Frame {
        to: usize,
        from: usize,
        frame: Vec<u8>,
    },
    Dialed {
        from: usize,
        to: usize,
    },
    Closed {
        at: usize,
        peer: usize,
    },
    Tick(usize),
}

/// What the simulator measured about routed messages.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Route frames put on the wire (originated copies plus forwards).
    pub route_frames: u64,
    /// Hops of each delivered message (the first copy to arrive).
    pub hops: Vec<u8>,
    /// Messages delivered to their target's application.
    pub delivered: u64,
    /// Routed deliveries per node.
    pub delivered_at: HashMap<usize, u64>,
    /// Where Route copies stopped short of their target: (node, target).
    pub stuck: Vec<(usize, NodeId)>,
}

/// The simulator.
pub struct Sim {
    cores: Vec<Core>,
    keys: Vec<[u8; 32]>,
    index: HashMap<NodeId, usize>,
    alive: Vec<bool>,
    edges: HashSet<(usize, usize)>,
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
    /// `identities.len()` nodes with `config`, one-way latency `latency`, seeded by `seed`.
    /// Each node joins through a random node that joined before it.
    pub fn new(
        identities: Vec<Identity>,
        config: &CoreConfig,
        latency: Duration,
        seed: u64,
    ) -> Self {
        let tick = config.maintenance.tick;
        let mut sim = Self {
            cores: Vec::new(),
            keys: Vec::new(),
            index: HashMap::new(),
            alive: Vec::new(),
            edges: HashSet::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: Time(0),
            latency,
            tick,
            rng: seed | 1,
            report: SimReport::default(),
            first_hops: HashMap::new(),
        };
        for (i, id) in identities.into_iter().enumerate() {
            let mut cfg = config.clone();
            cfg.advertise = vec![Self::addr(i)];
            sim.index.insert(id.node_id(), i);
            sim.keys.push(id.ed_public());
            sim.cores.push(Core::new(
                id,
                cfg,
                CoreRng::deterministic(seed ^ (i as u64 + 1)),
            ));
            sim.alive.push(true);
        }
        for i in 0..sim.cores.len() {
            let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
            let offset = Duration::from_nanos(sim.next() % tick_ns);
            sim.push(Time(0).after(offset), Ev::Tick(i));
            if i > 0 {
                let via = usize::try_from(sim.next() % i as u64).unwrap_or(0);
                let contact = Contact::new(sim.cores[via].id(), vec![Self::addr(via)]);
                let now = sim.wall(Time(0));
                sim.cores[i].bootstrap(vec![contact]);
                sim.drain(i, now);
            }
        }
        sim
    }

    fn addr(i: usize) -> Addr {
        Addr::new("sim", format!("n{i}"))
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
            Ev::Frame {
                to,
                from,
                mut frame,
            } => {
                if !self.alive[to] || !self.edges.contains(&(to, from)) {
                    return;
                }
                self.note_route(to, &frame);
                let route_target = route_target(&frame);
                let peer = self.cores[from].id();
                match self.cores[to].on_frame(now, peer, &Self::addr(from), &mut frame) {
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
                    Handled::Rendezvous { .. }
                    | Handled::PunchRequested { .. }
                    | Handled::PunchSync { .. }
                    | Handled::BirthdayRequested { .. }
                    | Handled::PunchAck { .. }
                    | Handled::RelayRequested { .. }
                    | Handled::RelayGranted { .. }
                    | Handled::RelayBind { .. } => {}
                    Handled::Done => {
                        if let Some(t) = route_target.filter(|t| *t != self.cores[to].id()) {
                            self.report.stuck.push((to, t));
                        }
                    }
                }
                self.drain(to, now);
            }
            Ev::Dialed { from, to } => {
                let to_id = self.cores[to].id();
                self.cores[from].on_dial_finished(&to_id);
                if !self.alive[from] {
                    return;
                }
                if !self.alive[to] || self.edges.contains(&(from, to)) {
                    let id = self.cores[to].id();
                    if !self.alive[to] {
                        self.cores[from].on_dial_failed(now, &id);
                    }
                    self.drain(from, now);
                    return;
                }
                let (fid, tid) = (self.cores[from].id(), self.cores[to].id());
                let (fkey, tkey) = (self.keys[from], self.keys[to]);
                let up_to =
                    self.cores[to].on_edge_up(now, fid, Some(fkey), false, &Self::addr(from));
                if up_to.is_ok() {
                    if self.cores[from]
                        .on_edge_up(now, tid, Some(tkey), true, &Self::addr(to))
                        .is_ok()
                    {
                        self.edges.insert((from, to));
                        self.edges.insert((to, from));
                    } else {
                        self.cores[to].on_edge_down(now, &fid);
                    }
                }
                self.drain(from, now);
                self.drain(to, now);
            }
            Ev::Closed { at, peer } => {
                if self.alive[at] && self.edges.remove(&(at, peer)) {
                    let id = self.cores[peer].id();
                    self.cores[at].on_edge_down(now, &id);
                    self.drain(at, now);
                }
            }
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
                Action::Dial { contact, .. } => {
                    if let Some(&j) = self.index.get(&contact.id) {
                        let at = self.now.after(self.latency * 2);
                        self.push(at, Ev::Dialed { from: i, to: j });
                    }
                }
                // The simulated hosts own no IP a neighbour could report.
                Action::Notify(_) | Action::CheckOwnIp { .. } => {}
                Action::Close(peer) => {
                    if let Some(&j) = self.index.get(&peer) {
                        if self.edges.remove(&(i, j)) {
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
