//! The in-memory transport: a [`Hub`] of nodes that reach each other through channels.
//!
//! Deterministic and crypto-free: the hub itself vouches for identities. Built for tests on
//! tokio's paused clock (`#[tokio::test(start_paused = true)]`): delays are timers, so a
//! simulated minute costs no real time.
//!
//! Faults are first-class: [`Hub::partition`] makes frames between two nodes vanish and new
//! dials fail until [`Hub::heal`]; [`Hub::set_link`] gives one direction of one pair a
//! seeded [`LinkModel`] (loss, delay and jitter, reordering, MTU).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use nodenet_kad::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;

mod media;
mod stream;

use crate::{
    Addr, BoxFuture, CloseReason, Conn, ConnSet, Counters, DialError, Direction, Event, Events,
    Packet, PunchError, RelayError, Transport, TransportStats,
};

/// The network name of in-memory addresses.
pub const NET: &str = "mem";

/// Default depth of each transport's event queue.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

/// Frames one direction of an edge holds in flight (delayed or held for reordering).
const MAX_IN_FLIGHT: usize = 1024;

/// How one direction of a link treats frames. The default is a perfect link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkModel {
    /// Probability in `[0, 1)` that a frame vanishes.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame. Frames still arrive in order
    /// unless `reorder_every` is set.
    pub jitter: Duration,
    /// Every n-th frame is held back by `reorder_hold` and overtaken by later ones (0 = off).
    /// This deliberately breaks the in-order guarantee, to test robustness against it.
    pub reorder_every: u32,
    /// How long a reordered frame is held.
    pub reorder_hold: Duration,
    /// Frames longer than this vanish.
    pub mtu: Option<usize>,
    /// Seed of this link's random choices: the same seed, the same fate for every frame.
    pub seed: u64,
    /// A bottleneck of this many bytes per second (media datagrams only; `None`: none).
    /// Datagrams queue behind it and leave one after another at this rate.
    pub rate: Option<u64>,
    /// Bytes the bottleneck's queue holds; a datagram that does not fit is dropped (tail
    /// drop). Only with [`LinkModel::rate`].
    pub queue_bytes: usize,
}

/// A set of in-memory nodes that can dial each other.
#[derive(Clone, Debug, Default)]
pub struct Hub(Arc<HubInner>);

#[derive(Debug, Default)]
struct HubInner {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    endpoints: HashMap<String, Weak<Shared>>,
    unreachable: HashSet<NodeId>,
    partitions: HashSet<(NodeId, NodeId)>,
    links: HashMap<(NodeId, NodeId), LinkModel>,
    /// NAT boxes by public host name, and which node sits behind which.
    nats: HashMap<String, NatBox>,
    behind: HashMap<NodeId, String>,
    /// Relay sessions: caller-side endpoint → callee-side endpoint.
    relays: HashMap<String, String>,
    next_relay: u64,
    /// Nodes that do not speak media (as a peer that predates it).
    no_media: HashSet<NodeId>,
    /// Nodes that do not speak streams (as the Go reference).
    no_streams: HashSet<NodeId>,
    /// Media link models, per direction (datagrams and messages of media sessions).
    media_links: HashMap<(NodeId, NodeId), LinkModel>,
    /// The receive budget of new media sessions (`None`: the default).
    media_budget: Option<crate::media::MediaBudget>,
    /// Birthday punches waiting for a probe, by the hard side's NAT host.
    birthdays: HashMap<String, Vec<BirthdayWait>>,
    /// Birthday probes sent by easy sides, all told.
    birthday_probes: u64,
    /// Datagrams aimed at each host (punches, birthday probes of either side), by host.
    aimed: HashMap<String, u64>,
}

impl HubState {
    fn aim(&mut self, endpoint: &str) {
        *self.aimed.entry(host_of(endpoint).to_owned()).or_default() += 1;
    }
}

/// A hard side of a birthday punch, waiting for a probe on one of its sockets' ports.
#[derive(Debug)]
struct BirthdayWait {
    hard: NodeId,
    /// Public port → socket.
    ports: HashMap<u16, u32>,
    /// Where the probe must come from.
    easy: String,
    probe: Vec<u8>,
    hit: Option<tokio::sync::oneshot::Sender<u32>>,
}

/// How a NAT picks the public port for a node's outbound traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mapping {
    /// One public port per node, whoever it talks to (a "cone" NAT).
    EndpointIndependent,
    /// A fresh public port per destination (a "symmetric" NAT).
    EndpointDependent,
}

/// Which inbound packets a NAT lets through to a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Filtering {
    /// Anyone, once the mapping exists (full cone).
    EndpointIndependent,
    /// Only hosts the node has sent to (address-restricted).
    AddressRestricted,
    /// Only the exact `host:port` endpoints the node has sent to (port-restricted).
    PortRestricted,
}

/// A NAT in front of one or more in-memory nodes. Its public addresses are
/// `mem/<host>:<port>`, ports handed out from 30000 up; mappings never expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatModel {
    /// How ports are mapped.
    pub mapping: Mapping,
    /// What is let in.
    pub filtering: Filtering,
    /// Whether an unsolicited packet it drops still claims its `(public port, source)` pair
    /// for [`CLAIM_TTL`], as Linux conntrack does behind a bare `MASQUERADE` with no
    /// stateful firewall: the claim keeps that source out of the port, and the node's own
    /// packets to that source leave from a fresh port. A hole-punch against such a NAT works
    /// only if the node behind it sends first.
    pub claims_dropped: bool,
    /// Whether new mappings get random ports in 1024–65535 (seeded by the NAT's host name,
    /// so runs repeat) rather than the next free one from 30000: a symmetric NAT then gives
    /// no hint of its next port, as Linux's `MASQUERADE --random-fully` does.
    pub random_ports: bool,
}

impl NatModel {
    /// Endpoint-independent mapping and filtering.
    pub const FULL_CONE: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::EndpointIndependent,
        claims_dropped: false,
        random_ports: false,
    };
    /// Endpoint-independent mapping, address-restricted filtering.
    pub const ADDRESS_RESTRICTED: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressRestricted,
        claims_dropped: false,
        random_ports: false,
    };
    /// Endpoint-independent mapping, port-restricted filtering.
    pub const PORT_RESTRICTED: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: false,
    };
    /// A Linux router with `MASQUERADE` and no stateful firewall: port-restricted, and a
    /// dropped unsolicited packet claims its port for its source ([`NatModel::claims_dropped`]).
    pub const LINUX_MASQUERADE: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: true,
        random_ports: false,
    };
    /// Endpoint-dependent mapping on random ports, port-restricted filtering: what a
    /// birthday punch must get through.
    pub const SYMMETRIC_RANDOM: Self = Self {
        mapping: Mapping::EndpointDependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: true,
    };
    /// Endpoint-dependent mapping, port-restricted filtering.
    pub const SYMMETRIC: Self = Self {
        mapping: Mapping::EndpointDependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: false,
    };
}

/// How long a dropped packet's claim on a port lasts (Linux's timeout for an unreplied UDP
/// conntrack entry).
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct NatBox {
    model: NatModel,
    next_port: u16,
    maps: Vec<NatMapping>,
    /// `(public port, source)` pairs claimed by dropped packets, until when.
    claims: HashMap<(u16, String), Instant>,
    /// The random-port generator's state.
    rng: LinkRng,
}

impl NatBox {
    fn claimed(&self, port: u16, source: &str) -> bool {
        self.claims
            .get(&(port, source.to_owned()))
            .is_some_and(|until| *until > Instant::now())
    }

    fn lets_in(&self, m: &NatMapping, source: &str) -> bool {
        if self.claimed(m.port, source) {
            return false;
        }
        match self.model.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressRestricted => m.sent_to.iter().any(|d| host_of(d) == host_of(source)),
            Filtering::PortRestricted => m.sent_to.contains(source),
        }
    }
}

#[derive(Debug)]
struct NatMapping {
    internal: NodeId,
    /// Which of the node's sockets (0: its transport's own; others: a birthday punch's).
    socket: u32,
    /// The destination an endpoint-dependent mapping is for.
    dest: Option<String>,
    port: u16,
    /// Endpoints the node has sent to through this mapping.
    sent_to: HashSet<String>,
}

/// The host part of a mem endpoint (`host:port` → `host`; a bare name is its own host).
fn host_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h)
}

impl HubState {
    /// The public endpoint `id` sends to `dest` from, opening (or reusing) its NAT mapping and
    /// recording `dest` as let in; `None` for a node behind no NAT.
    fn outbound(&mut self, id: NodeId, dest: &str) -> Option<String> {
        self.outbound_on(id, 0, dest)
    }

    /// [`HubState::outbound`] from one of the node's sockets (a birthday punch's sockets
    /// each get their own mappings).
    fn outbound_on(&mut self, id: NodeId, socket: u32, dest: &str) -> Option<String> {
        let host = self.behind.get(&id)?.clone();
        let nat = self.nats.get_mut(&host)?;
        let dependent = nat.model.mapping == Mapping::EndpointDependent || socket != 0;
        // The node's mapping (for this destination alone, if endpoint-dependent); if a dropped
        // packet from `dest` claimed its port, the destination gets a mapping of its own.
        let mut found = nat.maps.iter().position(|m| {
            m.internal == id
                && m.socket == socket
                && (!dependent || m.dest.as_deref() == Some(dest))
        });
        if let Some(i) = found.filter(|&i| nat.claimed(nat.maps[i].port, dest)) {
            found = nat.maps.iter().position(|m| {
                m.internal == id
                    && m.socket == socket
                    && m.dest.as_deref() == Some(dest)
                    && !nat.claimed(m.port, dest)
            });
            debug_assert_ne!(found, Some(i));
        }
        let exception = found.is_none() && nat.maps.iter().any(|m| m.internal == id);
        let i = match found {
            Some(i) => i,
            None => {
                let port = if nat.model.random_ports {
                    // A full NAT (all 64,512 ports mapped) reuses a port rather than spin.
                    let mut p = 1024;
                    for _ in 0..65_536 {
                        p = nat.rng.port();
                        if !nat.maps.iter().any(|m| m.port == p) {
                            break;
                        }
                    }
                    p
                } else {
                    let p = nat.next_port;
                    nat.next_port = nat.next_port.wrapping_add(1).max(30000);
                    p
                };
                nat.maps.push(NatMapping {
                    internal: id,
                    socket,
                    dest: (dependent || exception).then(|| dest.to_owned()),
                    port,
                    sent_to: HashSet::new(),
                });
                nat.maps.len() - 1
            }
        };
        let m = &mut nat.maps[i];
        m.sent_to.insert(dest.to_owned());
        Some(format!("{host}:{}", m.port))
    }

    /// Whether packets from `source` reach the node `id`: it sits behind no NAT, or its NAT
    /// lets `source` in on one of its mappings.
    fn reaches(&self, id: NodeId, source: &str) -> bool {
        let Some(host) = self.behind.get(&id) else {
            return true;
        };
        let Some(nat) = self.nats.get(host) else {
            return true;
        };
        nat.maps
            .iter()
            .filter(|m| m.internal == id)
            .any(|m| nat.lets_in(m, source))
    }

    /// The node behind the public endpoint `endpoint`, if the NAT lets `source` in.
    fn inbound(&self, endpoint: &str, source: &str) -> Option<NodeId> {
        let (host, port) = endpoint.rsplit_once(':')?;
        let nat = self.nats.get(host)?;
        let port: u16 = port.parse().ok()?;
        let m = nat.maps.iter().find(|m| m.port == port)?;
        nat.lets_in(m, source).then_some(m.internal)
    }

    /// A packet from `source` reached the public endpoint `endpoint` and was not let in: a
    /// NAT that [claims dropped packets](NatModel::claims_dropped) remembers it.
    fn dropped(&mut self, endpoint: &str, source: &str) {
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return;
        };
        let (Some(nat), Ok(port)) = (self.nats.get_mut(host), port.parse::<u16>()) else {
            return;
        };
        if nat.model.claims_dropped {
            let now = Instant::now();
            nat.claims.retain(|_, until| *until > now);
            nat.claims
                .entry((port, source.to_owned()))
                .or_insert(now + CLAIM_TTL);
        }
    }

    /// Who receives what is sent to `endpoint`: the node bound there, or the node behind the
    /// NAT mapping there.
    fn owner(&self, endpoint: &str) -> Option<NodeId> {
        if let Some(t) = self.endpoints.get(endpoint).and_then(Weak::upgrade) {
            return Some(t.id);
        }
        let (host, port) = endpoint.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let nat = self.nats.get(host)?;
        nat.maps.iter().find(|m| m.port == port).map(|m| m.internal)
    }

    /// The fixed one-way delay of the link `from → to`.
    fn delay(&self, from: NodeId, to: NodeId) -> Duration {
        self.links
            .get(&(from, to))
            .map_or(Duration::ZERO, |l| l.delay)
    }
}

/// Why [`Hub::transport`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Another live transport already has this address.
    #[error("address mem/{0} is taken")]
    AddrInUse(String),
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for the node `id`, reachable at `mem/<name>`. Its peers learn its NodeId
    /// but no key ([`crate::Conn::remote_key`] is `None`).
    pub fn transport(&self, id: NodeId, name: &str) -> Result<MemTransport, HubError> {
        self.make(id, None, name, DEFAULT_EVENT_QUEUE)
    }

    /// A transport for `identity`, reachable at `mem/<name>`: its peers learn its Ed25519 key
    /// with its NodeId, as over QUIC.
    pub fn transport_for(
        &self,
        identity: &nodenet_identity::Identity,
        name: &str,
    ) -> Result<MemTransport, HubError> {
        self.make(
            identity.node_id(),
            Some(identity.ed_public()),
            name,
            DEFAULT_EVENT_QUEUE,
        )
    }

    /// Like [`Hub::transport`], with an event queue of `event_queue` entries.
    pub fn transport_with(
        &self,
        id: NodeId,
        name: &str,
        event_queue: usize,
    ) -> Result<MemTransport, HubError> {
        self.make(id, None, name, event_queue)
    }

    fn make(
        &self,
        id: NodeId,
        ed_pub: Option<[u8; 32]>,
        name: &str,
        event_queue: usize,
    ) -> Result<MemTransport, HubError> {
        let mut state = self.lock();
        if state.endpoints.get(name).and_then(Weak::upgrade).is_some() {
            return Err(HubError::AddrInUse(name.to_owned()));
        }
        let shared = Arc::new(Shared {
            id,
            ed_pub,
            addr: Addr::new(NET, name),
            hub: Arc::downgrade(&self.0),
            events: Events::new(event_queue),
            counters: Arc::default(),
            conns: ConnSet::default(),
        });
        state
            .endpoints
            .insert(name.to_owned(), Arc::downgrade(&shared));
        Ok(MemTransport(shared))
    }

    /// Cuts the link between `a` and `b` both ways: frames vanish, dials fail.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.partitions.insert((a, b));
        state.partitions.insert((b, a));
    }

    /// Undoes [`Hub::partition`].
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.partitions.remove(&(a, b));
        state.partitions.remove(&(b, a));
    }

    /// Makes `id` reachable or not: dials to an unreachable node fail with no route, as
    /// toward a node behind a NAT, while the edges it dials itself work both ways.
    pub fn set_reachable(&self, id: NodeId, reachable: bool) {
        let mut state = self.lock();
        if reachable {
            state.unreachable.remove(&id);
        } else {
            state.unreachable.insert(id);
        }
    }

    /// Puts the node `id` behind the NAT whose public host is `host` (created with `model` if
    /// new; several nodes may share one). Its own address then reaches no one outside; peers
    /// see it, and dial it, at `host:<port>` mappings that its outbound dials and punches open.
    pub fn set_nat(&self, id: NodeId, host: &str, model: NatModel) {
        let mut state = self.lock();
        state.nats.entry(host.to_owned()).or_insert_with(|| NatBox {
            model,
            next_port: 30000,
            maps: Vec::new(),
            claims: HashMap::new(),
            rng: LinkRng::seeded(host.bytes()),
        });
        state.behind.insert(id, host.to_owned());
    }

    /// Changes the behaviour of the NAT at `host` (a router swap): mappings it already holds
    /// keep working, new ones follow `model`.
    pub fn set_nat_model(&self, host: &str, model: NatModel) {
        if let Some(nat) = self.lock().nats.get_mut(host) {
            nat.model = model;
        }
    }

    /// Sets the model of the direction `from → to`; frames already in flight keep theirs.
    pub fn set_link(&self, from: NodeId, to: NodeId, model: LinkModel) {
        self.lock().links.insert((from, to), model);
    }

    /// Sets the media model of the direction `from → to`: loss, MTU, the bottleneck and
    /// reordering shape media datagrams; delay and jitter apply to datagrams and messages
    /// (messages are never lost). Sessions opened later use it.
    pub fn set_media_link(&self, from: NodeId, to: NodeId, model: LinkModel) {
        self.lock().media_links.insert((from, to), model);
    }

    /// Makes `id` speak media or not (not: its peers' [`Transport::open_media`] fails with
    /// [`crate::MediaError::Unsupported`], as toward a node that predates media).
    pub fn set_media(&self, id: NodeId, on: bool) {
        let mut state = self.lock();
        if on {
            state.no_media.remove(&id);
        } else {
            state.no_media.insert(id);
        }
    }

    /// Makes `id` speak streams or not (not: its peers' [`Transport::open_stream`] fails
    /// with [`crate::StreamError::Unsupported`], as toward the Go reference).
    pub fn set_streams(&self, id: NodeId, on: bool) {
        let mut state = self.lock();
        if on {
            state.no_streams.remove(&id);
        } else {
            state.no_streams.insert(id);
        }
    }

    /// Birthday probes that easy sides have sent so far.
    pub fn birthday_probes(&self) -> u64 {
        self.lock().birthday_probes
    }

    /// Datagrams any node has aimed at `host` so far, whether or not they arrived: hole
    /// punches ([`Transport::punch`]) and birthday probes, of the easy side and of each hard
    /// side's socket. What a test counts to show that nobody was made to spray a bystander.
    pub fn datagrams_to(&self, host: &str) -> u64 {
        self.lock().aimed.get(host).copied().unwrap_or(0)
    }

    /// Sets the receive budget of media sessions opened from now on.
    pub fn set_media_budget(&self, budget: crate::media::MediaBudget) {
        self.lock().media_budget = Some(budget);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        lock(&self.0.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a hub lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn partitioned(hub: &Weak<HubInner>, a: NodeId, b: NodeId) -> bool {
    hub.upgrade()
        .is_none_or(|h| lock(&h.state).partitions.contains(&(a, b)))
}

/// One node's in-memory transport. Cloning gives another handle to the same transport.
#[derive(Clone, Debug)]
pub struct MemTransport(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    id: NodeId,
    ed_pub: Option<[u8; 32]>,
    addr: Addr,
    hub: Weak<HubInner>,
    events: Events,
    counters: Arc<Counters>,
    conns: ConnSet,
}

impl Transport for MemTransport {
    fn local_id(&self) -> NodeId {
        self.0.id
    }

    fn local_addr(&self) -> Addr {
        self.0.addr.clone()
    }

    fn dial(&self, remote: NodeId, addr: &Addr) -> BoxFuture<'static, Result<Conn, DialError>> {
        // The first packet opens our NAT's mapping as it leaves and meets the far side's NAT
        // one link delay later.
        let delay = self.0.hub.upgrade().map_or(Duration::ZERO, |hub| {
            let mut state = lock(&hub.state);
            // A partition swallows the dial before it leaves (checked again on arrival).
            if addr.net == NET && !state.partitions.contains(&(self.0.id, remote)) {
                state.outbound(self.0.id, &addr.endpoint);
            }
            state.delay(self.0.id, remote)
        });
        let this = self.clone();
        let addr = addr.clone();
        let dial = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = this.dial_now(remote, &addr);
            match &result {
                Ok(_) => Counters::inc(&this.0.counters.dials_ok),
                Err(e) => {
                    Counters::inc(&this.0.counters.dials_failed);
                    if matches!(e, DialError::IdentityMismatch { .. }) {
                        Counters::inc(&this.0.counters.dials_identity_mismatch);
                    }
                }
            }
            result
        };
        Box::pin(dial)
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.events.poll(cx)
    }

    fn close(&self) {
        self.0.events.close();
        self.0.conns.close_all();
        if let Some(hub) = self.0.hub.upgrade() {
            let mut state = lock(&hub.state);
            if state
                .endpoints
                .get(&self.0.addr.endpoint)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.0)))
            {
                state.endpoints.remove(&self.0.addr.endpoint);
            }
        }
    }

    fn stats(&self) -> TransportStats {
        self.0.counters.snapshot()
    }

    fn is_ip(&self) -> bool {
        false
    }

    fn relay(&self) -> Result<(Addr, Addr), RelayError> {
        let hub = self.0.hub.upgrade().ok_or(RelayError::Unsupported)?;
        let mut state = lock(&hub.state);
        state.next_relay += 1;
        let n = state.next_relay;
        let host = host_of(&self.0.addr.endpoint).to_owned();
        let (caller, callee) = (
            format!("{host}:{}", 40000 + 2 * n),
            format!("{host}:{}", 40001 + 2 * n),
        );
        state.relays.insert(caller.clone(), callee.clone());
        Ok((Addr::new(NET, caller), Addr::new(NET, callee)))
    }

    fn birthday_hard(
        &self,
        remote: NodeId,
        easy: &Addr,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<Conn, crate::BirthdayError>> {
        let this = self.clone();
        let (easy, probe) = (easy.clone(), probe.to_vec());
        Box::pin(async move { this.birthday_hard_now(remote, &easy, probe, params).await })
    }

    fn birthday_easy(
        &self,
        host: &str,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<u32, crate::BirthdayError>> {
        let this = self.clone();
        let (host, probe) = (host.to_owned(), probe.to_vec());
        Box::pin(async move { this.birthday_easy_now(&host, &probe, params).await })
    }

    fn open_media(
        &self,
        remote: NodeId,
        addr: &Addr,
    ) -> BoxFuture<'static, Result<crate::MediaSession, crate::MediaError>> {
        let result = self
            .resolve(remote, addr)
            .map_err(crate::MediaError::Dial)
            .and_then(|(target, source)| media::open(&self.0, &target, addr, source));
        Box::pin(std::future::ready(result))
    }

    fn open_stream(
        &self,
        remote: NodeId,
        addr: &Addr,
        protocol: &str,
    ) -> BoxFuture<'static, Result<(crate::SendStream, crate::RecvStream), crate::StreamError>>
    {
        match self.resolve(remote, addr) {
            Ok((target, source)) => Box::pin(stream::open(
                self.0.clone(),
                target,
                source,
                protocol.to_owned(),
            )),
            Err(e) => Box::pin(std::future::ready(Err(crate::StreamError::Dial(e)))),
        }
    }

    fn punch(&self, addr: &Addr) -> Result<(), PunchError> {
        if self.0.events.is_closed() {
            return Err(PunchError::Closed);
        }
        if addr.net != NET {
            return Err(PunchError::BadAddr {
                addr: addr.clone(),
                why: "not a mem address",
            });
        }
        let Some(hub) = self.0.hub.upgrade() else {
            return Ok(());
        };
        let mut state = lock(&hub.state);
        state.aim(&addr.endpoint);
        let source = state
            .outbound(self.0.id, &addr.endpoint)
            .unwrap_or_else(|| self.0.addr.endpoint.clone());
        // The datagram meets the far side's NAT one link delay later; if it is not let in,
        // a NAT that claims dropped packets remembers it.
        let delay = state
            .owner(&addr.endpoint)
            .map_or(Duration::ZERO, |to| state.delay(self.0.id, to));
        let endpoint = addr.endpoint.clone();
        let arrive = move |state: &mut HubState| {
            if state.endpoints.contains_key(&endpoint) {
                return;
            }
            if let Some((host, _)) = endpoint.rsplit_once(':') {
                if state.nats.contains_key(host) && state.inbound(&endpoint, &source).is_none() {
                    state.dropped(&endpoint, &source);
                }
            }
        };
        if delay.is_zero() {
            arrive(&mut state);
        } else {
            drop(state);
            let hub = Arc::downgrade(&hub);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Some(hub) = hub.upgrade() {
                    arrive(&mut lock(&hub.state));
                }
            });
        }
        Ok(())
    }
}

impl MemTransport {
    /// The hard side: a mapping per socket toward `easy` on our (symmetric) NAT, then a wait
    /// for a probe on any of their ports, then a dial from the socket it reached.
    async fn birthday_hard_now(
        &self,
        remote: NodeId,
        easy: &Addr,
        probe: Vec<u8>,
        params: crate::BirthdayParams,
    ) -> Result<Conn, crate::BirthdayError> {
        use crate::BirthdayError as E;
        if easy.net != NET {
            return Err(E::BadAddr(easy.to_string()));
        }
        let hub = self.0.hub.upgrade().ok_or(E::Dial(DialError::Closed))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let host = {
            let mut state = lock(&hub.state);
            let host = state
                .behind
                .get(&self.0.id)
                .cloned()
                .ok_or_else(|| E::BadAddr("not behind a NAT".into()))?;
            let mut ports = HashMap::new();
            for socket in 1..=u32::try_from(params.sockets.max(1)).unwrap_or(1) {
                state.aim(&easy.endpoint);
                if let Some(public) = state.outbound_on(self.0.id, socket, &easy.endpoint) {
                    if let Some(port) = public.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                        ports.insert(port, socket);
                    }
                }
            }
            state
                .birthdays
                .entry(host.clone())
                .or_default()
                .push(BirthdayWait {
                    hard: self.0.id,
                    ports,
                    easy: easy.endpoint.clone(),
                    probe,
                    hit: Some(tx),
                });
            host
        };
        let hit = tokio::time::timeout(params.timeout, rx).await;
        // However it ended, the wait (and so the sockets) goes.
        if let Some(waits) = lock(&hub.state).birthdays.get_mut(&host) {
            waits.retain(|w| w.hard != self.0.id);
        }
        let Ok(Ok(socket)) = hit else {
            return Err(E::Timeout);
        };
        let conn = self.dial_from(socket, remote, easy).map_err(E::Dial)?;
        Counters::inc(&self.0.counters.dials_ok);
        Ok(conn)
    }

    /// The easy side: probes to random distinct ports of `host`, paced.
    async fn birthday_easy_now(
        &self,
        host: &str,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> Result<u32, crate::BirthdayError> {
        let hub = self
            .0
            .hub
            .upgrade()
            .ok_or(crate::BirthdayError::Dial(DialError::Closed))?;
        // Seeded by who probes whom: runs repeat.
        let mut rng = LinkRng::seeded(host.bytes().chain(self.0.id.as_ref().iter().copied()));
        let mut used = HashSet::new();
        let rate = params.probe_rate.max(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        let mut sent = 0;
        while sent < params.max_probes {
            tick.tick().await;
            if used.len() >= 64_512 {
                break;
            }
            let port = loop {
                let p = rng.port();
                if used.insert(p) {
                    break p;
                }
            };
            let target = format!("{host}:{port}");
            let mut state = lock(&hub.state);
            state.birthday_probes += 1;
            state.aim(&target);
            sent += 1;
            let source = state
                .outbound(self.0.id, &target)
                .unwrap_or_else(|| self.0.addr.endpoint.clone());
            // In only if the hard side's NAT lets our source in on that port, and a wait
            // there takes exactly this probe from exactly us.
            if state.inbound(&target, &source).is_none() {
                continue;
            }
            if let Some(w) = state.birthdays.get_mut(host).and_then(|ws| {
                ws.iter_mut()
                    .find(|w| w.easy == source && w.probe == probe && w.ports.contains_key(&port))
            }) {
                if let (Some(tx), Some(&socket)) = (w.hit.take(), w.ports.get(&port)) {
                    let _ = tx.send(socket);
                }
            }
        }
        Ok(sent)
    }

    fn dial_now(&self, remote: NodeId, addr: &Addr) -> Result<Conn, DialError> {
        self.dial_from(0, remote, addr)
    }

    /// Dials from one of our sockets (0: our own; others: a birthday punch's).
    fn dial_from(&self, socket: u32, remote: NodeId, addr: &Addr) -> Result<Conn, DialError> {
        let (target, source) = self.resolve_from(socket, remote, addr)?;
        let (ours, our_rx) = Conn::new(
            target.id,
            addr.clone(),
            target.ed_pub,
            Direction::Outbound,
            self.0.counters.clone(),
        );
        let (theirs, their_rx) = Conn::new(
            self.0.id,
            Addr::new(NET, source),
            self.0.ed_pub,
            Direction::Inbound,
            target.counters.clone(),
        );
        self.0.conns.insert(&ours);
        target.conns.insert(&theirs);
        Counters::inc(&target.counters.inbound_accepted);
        let handle = ours.clone();
        tokio::spawn(pump(
            self.0.clone(),
            ours.clone(),
            our_rx,
            target.clone(),
            theirs.clone(),
        ));
        tokio::spawn(pump(target, theirs, their_rx, self.0.clone(), ours));
        Ok(handle)
    }
    /// Who a packet from us to `addr` reaches, if anyone, and the source it appears to come
    /// from: our NAT's mapping opens on the way out, the far NAT's filter decides.
    fn resolve(&self, remote: NodeId, addr: &Addr) -> Result<(Arc<Shared>, String), DialError> {
        self.resolve_from(0, remote, addr)
    }

    fn resolve_from(
        &self,
        socket: u32,
        remote: NodeId,
        addr: &Addr,
    ) -> Result<(Arc<Shared>, String), DialError> {
        if self.0.events.is_closed() {
            return Err(DialError::Closed);
        }
        if addr.net != NET {
            return Err(DialError::BadAddr {
                addr: addr.clone(),
                why: "not a mem address",
            });
        }
        let hub = self.0.hub.upgrade().ok_or(DialError::Closed)?;
        let no_route = || DialError::NoRoute(addr.clone());
        // A partition swallows the dial before it leaves: no NAT mapping opens either.
        if partitioned(&self.0.hub, self.0.id, remote) {
            return Err(no_route());
        }
        let (target, source) = {
            let mut state = lock(&hub.state);
            // Where our packets appear to come from: dialing opens our own NAT's mapping.
            let source = state
                .outbound_on(self.0.id, socket, &addr.endpoint)
                .unwrap_or_else(|| self.0.addr.endpoint.clone());
            let by_name = state.endpoints.get(&addr.endpoint).and_then(Weak::upgrade);
            // A relay session's caller side: the relay carries us to `remote` if its callee
            // side gets through `remote`'s NAT.
            if let Some(callee) = state.relays.get(&addr.endpoint).cloned() {
                if !state.reaches(remote, &callee) {
                    return Err(no_route());
                }
                let target = state
                    .endpoints
                    .values()
                    .filter_map(Weak::upgrade)
                    .find(|t| t.id == remote && !t.events.is_closed())
                    .ok_or_else(no_route)?;
                (target, callee)
            } else {
                let target = match by_name {
                    // A node's own address: reachable unless it sits behind a NAT we are not
                    // behind too.
                    Some(t) => {
                        let theirs = state.behind.get(&t.id);
                        if theirs.is_some() && theirs != state.behind.get(&self.0.id) {
                            return Err(no_route());
                        }
                        t
                    }
                    // A NAT's public endpoint: in only if its filter lets our source through.
                    None => {
                        let Some(id) = state.inbound(&addr.endpoint, &source) else {
                            state.dropped(&addr.endpoint, &source);
                            return Err(no_route());
                        };
                        state
                            .endpoints
                            .values()
                            .filter_map(Weak::upgrade)
                            .find(|t| t.id == id)
                            .ok_or_else(no_route)?
                    }
                };
                if target.events.is_closed() || state.unreachable.contains(&target.id) {
                    return Err(no_route());
                }
                (target, source)
            }
        };
        if partitioned(&self.0.hub, self.0.id, target.id) {
            return Err(no_route());
        }
        if target.id != remote {
            return Err(DialError::IdentityMismatch {
                expected: remote,
                actual: target.id,
            });
        }
        Ok((target, source))
    }
}

/// A frame on its way, ordered by delivery time and then by send order.
struct InFlight {
    at: Instant,
    seq: u64,
    packet: Packet,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A small deterministic generator for link decisions (SplitMix64).
#[derive(Debug)]
struct LinkRng(u64);

impl LinkRng {
    /// A generator seeded by a hash (FNV-1a) of `bytes`: the same names, the same sequence.
    fn seeded(bytes: impl IntoIterator<Item = u8>) -> Self {
        Self(bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }))
    }

    /// A port in 1024–65535.
    fn port(&mut self) -> u16 {
        u16::try_from(1024 + self.next() % 64_512).unwrap_or(1024)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Moves frames from `conn`'s send queue to `peer`'s transport, through the link model.
/// Reports `conn`'s close to its own transport exactly once, after its last frame.
async fn pump(
    from: Arc<Shared>,
    conn: Conn,
    mut rx: mpsc::Receiver<Packet>,
    to: Arc<Shared>,
    peer: Conn,
) {
    let model = from
        .hub
        .upgrade()
        .and_then(|h| lock(&h.state).links.get(&(from.id, to.id)).cloned())
        .unwrap_or_default();
    let mut rng = LinkRng(model.seed);
    let mut flight: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut last_at = Instant::now();

    let reason = {
        let mut closed = std::pin::pin!(conn.closed());
        loop {
            // Frames already due go now: a timer would round even a zero delay up to the
            // timer wheel's 1 ms tick.
            let now = Instant::now();
            let mut lost = false;
            while flight.peek().is_some_and(|Reverse(f)| f.at <= now) {
                if let Some(Reverse(f)) = flight.pop() {
                    if !deliver(&from, &to, &peer, f.packet).await {
                        lost = true;
                        break;
                    }
                }
            }
            if lost {
                break CloseReason::Lost;
            }
            let next_at = flight.peek().map(|Reverse(f)| f.at);
            tokio::select! {
                biased;
                reason = &mut closed => break reason,
                () = sleep_until(next_at), if next_at.is_some() => {
                    if let Some(Reverse(f)) = flight.pop() {
                        if !deliver(&from, &to, &peer, f.packet).await {
                            break CloseReason::Lost;
                        }
                    }
                }
                packet = rx.recv(), if flight.len() < MAX_IN_FLIGHT => {
                    let Some(packet) = packet else { break CloseReason::Lost };
                    seq += 1;
                    if let Some(f) = admit(&model, &mut rng, seq, &mut last_at, packet) {
                        flight.push(Reverse(f));
                    } else {
                        Counters::inc(&from.counters.frames_dropped_by_link);
                    }
                }
            }
        }
    };

    if reason == CloseReason::Local {
        // Frames accepted before the close still go out, in order, on their schedule.
        while let Ok(packet) = rx.try_recv() {
            seq += 1;
            if let Some(f) = admit(&model, &mut rng, seq, &mut last_at, packet) {
                flight.push(Reverse(f));
            }
        }
        while let Some(Reverse(f)) = flight.pop() {
            tokio::time::sleep_until(f.at).await;
            if !deliver(&from, &to, &peer, f.packet).await {
                break;
            }
        }
    }
    rx.close();
    peer.mark_closed(match reason {
        CloseReason::Local | CloseReason::TransportClosed => CloseReason::Remote,
        other => other,
    });
    from.conns.remove(&conn);
    from.events.push(Event::Closed { conn, reason }).await;
}

/// Applies loss, MTU and timing to one frame; `None` when the link drops it.
fn admit(
    model: &LinkModel,
    rng: &mut LinkRng,
    seq: u64,
    last_at: &mut Instant,
    packet: Packet,
) -> Option<InFlight> {
    if model.mtu.is_some_and(|mtu| packet.len() > mtu) {
        return None;
    }
    if model.loss > 0.0 && rng.unit() < model.loss {
        return None;
    }
    let jitter = if model.jitter.is_zero() {
        Duration::ZERO
    } else {
        model.jitter.mul_f64(rng.unit())
    };
    // In order unless reordering is asked for: never before the previous frame.
    let at = (Instant::now() + model.delay + jitter).max(*last_at);
    *last_at = at;
    let held = model.reorder_every > 0 && seq % u64::from(model.reorder_every) == 0;
    let at = if held { at + model.reorder_hold } else { at };
    Some(InFlight { at, seq, packet })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands a frame to the peer's transport unless the pair is partitioned. False once the
/// receiving transport is closed.
async fn deliver(from: &Shared, to: &Shared, peer: &Conn, packet: Packet) -> bool {
    if partitioned(&from.hub, from.id, to.id) {
        Counters::inc(&from.counters.frames_dropped_by_link);
        return true;
    }
    if peer.is_closed() {
        return true;
    }
    to.events
        .push(Event::Frame {
            conn: peer.clone(),
            packet,
        })
        .await
}
