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

mod hub;
mod link;
mod media;
mod nat;
mod stream;

use hub::*;
pub use hub::{Hub, HubError};
pub use link::LinkModel;
use link::*;
use nat::*;
pub use nat::{CLAIM_TTL, Filtering, Mapping, NatModel};

use crate::{
    Addr, Birthday, BoxFuture, CloseReason, Conn, ConnSet, Counters, DialError, Direction, Event,
    Events, Media, Packet, Punch, PunchError, Relay, RelayError, Streams, Transport,
    TransportStats,
};

/// The network name of in-memory addresses.
pub const NET: &str = "mem";

/// Default depth of each transport's event queue.
pub const DEFAULT_EVENT_QUEUE: usize = 256;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a hub lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    fn as_punch(&self) -> Option<&dyn Punch> {
        Some(self)
    }

    fn as_relay(&self) -> Option<&dyn Relay> {
        Some(self)
    }

    fn as_birthday(&self) -> Option<&dyn Birthday> {
        Some(self)
    }

    fn as_media(&self) -> Option<&dyn Media> {
        Some(self)
    }

    fn as_streams(&self) -> Option<&dyn Streams> {
        Some(self)
    }
}

impl Punch for MemTransport {
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

impl Relay for MemTransport {
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
}

impl Birthday for MemTransport {
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
}

impl Media for MemTransport {
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
}

impl Streams for MemTransport {
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
