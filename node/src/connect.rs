//! Rendezvous, the connect cascade, direct sends and sealed boxes: the driver's half.
//!
//! `connect` runs an explicit, ordered list of strategies, cheapest first. Each is tried only
//! when the ones before it failed, and the error names the step that failed last:
//!
//! 1. an edge we already hold;
//! 2. rendezvous (a signed Hello routed to the NodeId, a Reply verified against it), then a
//!    direct dial of every address it returned, at once, the first to authenticate winning;
//! 3. a hole-punch (unless our own NAT is symmetric): a signed Connect routed to the peer with
//!    our coordinates; the peer answers with a ConnectAck carrying its own and punches toward
//!    ours at once, we punch toward its candidates and dial them;
//! 4. volunteer relays are next.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_rendezvous::{Coordinates, OpenError, Opened};
use nodenet_transport::{Conn, DialError};
use nodenet_wire::{Addr, Frame, FrameType};
use tokio::sync::oneshot;

use crate::core::EdgeRefusal;
use crate::driver::lock;
use crate::{ConnectError, Delivery, DirectSendError, Node, SealError};

/// How long each direct dial of a rendezvous address may take by default (the reference's
/// figure: an address that does not answer this fast is behind NAT, and punching is the next
/// step). [`crate::Builder::direct_dial_timeout`] changes it.
pub const DIRECT_DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// When a relayed edge tries to upgrade to a punched one: these long after it came up.
pub const UPGRADE_AFTER: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// Relays asked at most, one after the other.
pub const RELAYS_TRIED: usize = 3;
/// Relays that must name the same host for a peer before a birthday punch aims at it (any
/// edge can claim to be a relay; one claim is not enough).
pub const ATTESTATIONS_NEEDED: usize = 2;
/// How long a relay has to grant a request.
const RELAY_GRANT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the dial through a granted relay may take.
const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a hole-punch may take, from the Connect to an authenticated edge.
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A rendezvous unanswered this long is sent again (then after twice as long, and so on).
const RENDEZVOUS_RETRY: Duration = Duration::from_millis(500);

/// A way to reach a peer, in the order `connect` tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// A direct dial of the addresses the target gave in its rendezvous answer.
    Direct,
    /// A hole-punch coordinated over the overlay: both sides send punch datagrams toward
    /// each other's addresses at once, then we dial. Skipped when our own NAT is symmetric.
    Punch,
    /// Through a volunteer relay among our edges: it splices datagrams it cannot read, and
    /// the handshake stays end to end with the target.
    Relay,
}

impl Strategy {
    /// The cascade, cheapest first.
    pub const CASCADE: &'static [Self] = &[Self::Direct, Self::Punch, Self::Relay];
}

/// How a connection reached its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// A direct edge: an existing one, or dialed now.
    Direct,
    /// An edge through both NATs, opened by a coordinated hole-punch.
    Punched,
    /// An end-to-end edge carried by a volunteer relay.
    Relayed,
}

impl Path {
    /// The path's name as the control API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Punched => "punched",
            Self::Relayed => "relayed",
        }
    }
}

/// The step of `connect` that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Learning the target's keys and addresses over the overlay.
    Rendezvous,
    /// A strategy of the cascade.
    Strategy(Strategy),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rendezvous => f.write_str("rendezvous"),
            Self::Strategy(Strategy::Direct) => f.write_str("direct dial"),
            Self::Strategy(Strategy::Punch) => f.write_str("hole-punch"),
            Self::Strategy(Strategy::Relay) => f.write_str("relay"),
        }
    }
}

/// Why a step failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// No verified answer in time: the target is offline, unreachable, or everyone who
    /// answered for it was an impostor (see `Stats::dropped_forged_reply`).
    #[error("no verified answer within {0:?}")]
    Timeout(Duration),
    /// No edge to launch the request from.
    #[error("no live edge to launch from")]
    Unroutable,
    /// Too many requests outstanding.
    #[error("too many rendezvous requests outstanding")]
    Busy,
    /// The target gave no address to dial.
    #[error("the target gave no address")]
    NoAddresses,
    /// Every address failed; this is the last failure.
    #[error("{0}")]
    Dial(DialError),
    /// The edge came up but our admission refused it.
    #[error("edge refused: {0}")]
    Refused(EdgeRefusal),
    /// Our own NAT maps every destination to a fresh port: a punch cannot work.
    #[error("our NAT is symmetric")]
    SymmetricNat,
    /// None of our edges volunteers as a relay.
    #[error("no relay among our edges")]
    NoRelay,
}

/// A direct edge to a peer, from [`Node::connect`]. Frames the peer sends on it arrive on
/// [`Node::deliveries`] with [`crate::Via::Direct`]. Dropping the handle leaves the edge up
/// (it is the node's, and routes for others too); [`Connection::close`] closes it.
#[derive(Clone, Debug)]
pub struct Connection {
    node: Node,
    peer: NodeId,
    path: Path,
}

impl Connection {
    /// The peer.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// How it was reached.
    pub fn path(&self) -> Path {
        // A relayed edge that a later punch replaced is reported as punched.
        match self.node.conn_to(&self.peer) {
            Some(c) if self.path == Path::Relayed && !self.node.is_relayed(&c) => Path::Punched,
            _ => self.path,
        }
    }

    /// True while the edge is up.
    pub fn is_open(&self) -> bool {
        self.node.conn_to(&self.peer).is_some()
    }

    /// Sends `payload` to the peer over this edge only, waiting for room in the edge's queue.
    ///
    /// # Errors
    /// [`DirectSendError::TooLarge`] over [`MAX_DIRECT_PAYLOAD`](crate::MAX_DIRECT_PAYLOAD);
    /// [`DirectSendError::EdgeClosed`] once the edge is gone.
    pub async fn send(&self, payload: &[u8]) -> Result<(), DirectSendError> {
        self.node.send_on_edge(self.peer, payload).await
    }

    /// Closes the edge (the peer sees it close).
    pub fn close(&self) {
        self.node.close_edge(&self.peer);
    }
}

/// Runs its closure when dropped: how a request's waiter is removed however its future ends
/// (answered, failed, timed out or dropped by the caller), which makes the waits cancel-safe.
pub(crate) struct OnDrop<F: FnMut()>(pub(crate) F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

impl Node {
    /// Learns `target`'s keys and addresses: a signed Hello routed to its NodeId, answered by
    /// a Reply whose key must hash to that NodeId (so no forwarder can answer for it).
    /// Cancel-safe.
    ///
    /// # Errors
    /// [`ConnectError::Failed`] with [`Step::Rendezvous`]: no edge to launch from, too many
    /// requests outstanding, or no verified answer within the builder's rendezvous timeout.
    pub async fn rendezvous(&self, target: NodeId) -> Result<Coordinates, ConnectError> {
        let fail = |error| ConnectError::Failed {
            target,
            step: Step::Rendezvous,
            error,
        };
        let (tx, rx) = oneshot::channel();
        let nonce = {
            let now = self.now();
            let mut core = lock(&self.0.core);
            let nonce = core.start_rendezvous(now, target).map_err(|e| {
                fail(match e {
                    crate::OriginateError::Busy => StepError::Busy,
                    _ => StepError::Unroutable,
                })
            })?;
            // Registered before the core lock is released: the answer is handled under it.
            lock(&self.0.waiters).insert(nonce, tx);
            self.drain(&mut core, now);
            nonce
        };
        let _guard = OnDrop(|| {
            lock(&self.0.waiters).remove(&nonce);
            lock(&self.0.core).cancel_rendezvous(&nonce);
        });
        let wait = self.0.rendezvous_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = std::pin::pin!(rx);
        let mut retry = RENDEZVOUS_RETRY;
        loop {
            let next = (tokio::time::Instant::now() + retry).min(deadline);
            match tokio::time::timeout_at(next, &mut rx).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(_)) => return Err(fail(StepError::Timeout(wait))),
                Err(_) if next >= deadline => return Err(fail(StepError::Timeout(wait))),
                Err(_) => {
                    let now = self.now();
                    let mut core = lock(&self.0.core);
                    let _ = core.resend_rendezvous(now, &nonce);
                    self.drain(&mut core, now);
                    retry *= 2;
                }
            }
        }
    }

    /// A direct, authenticated edge to `target`, found by its NodeId alone: an existing edge,
    /// or rendezvous and then each strategy of [`Strategy::CASCADE`] in turn. Cancel-safe.
    ///
    /// # Errors
    /// [`ConnectError::SelfTarget`], [`ConnectError::Closed`] after shutdown, or
    /// [`ConnectError::Failed`] naming the last step tried and why it failed.
    pub async fn connect(&self, target: NodeId) -> Result<Connection, ConnectError> {
        if target == self.id() {
            return Err(ConnectError::SelfTarget);
        }
        if self.is_closed() {
            return Err(ConnectError::Closed);
        }
        if let Some(c) = self.conn_to(&target) {
            let path = if self.is_relayed(&c) {
                Path::Relayed
            } else if lock(&self.0.punched).contains(&c.id()) {
                Path::Punched
            } else {
                Path::Direct
            };
            return Ok(self.connection(target, path));
        }
        // An address we already know is dialed first: the handshake authenticates the NodeId,
        // so a stale or planted address costs a failed dial, never a wrong peer.
        let known = lock(&self.0.core).known_addrs(&target);
        if !known.is_empty() {
            if let Ok(path) = self.dial_direct(target, &known).await {
                return Ok(self.connection(target, path));
            }
        }
        let coords = self.rendezvous(target).await?;
        let mut last = None;
        for &strategy in Strategy::CASCADE {
            let result = match strategy {
                Strategy::Direct => self.dial_direct(target, &coords.addrs).await,
                Strategy::Punch => self.punch(target, &coords.addrs).await,
                Strategy::Relay => self.relay_to(target).await,
            };
            match result {
                Ok(path) => return Ok(self.connection(target, path)),
                Err(e) => last = Some((strategy, e)),
            }
            // Both sides may have dialed at once; the other side's edge serves as well.
            if self.conn_to(&target).is_some() {
                return Ok(self.connection(target, Path::Direct));
            }
        }
        let (strategy, error) = last.unwrap_or((Strategy::Direct, StepError::NoAddresses));
        Err(ConnectError::Failed {
            target,
            step: Step::Strategy(strategy),
            error,
        })
    }

    /// Sends `payload` to `target` over our edge to it, connecting first if needed
    /// ([`Node::connect`]): the bytes are never readable by another node (a relay, if the edge
    /// runs through one, carries ciphertext). Ordered on the edge; `Ok` means queued on it
    /// (this waits for room); the receiver's deliveries queue may still drop it when full.
    ///
    /// # Errors
    /// [`DirectSendError::TooLarge`] over [`MAX_DIRECT_PAYLOAD`](crate::MAX_DIRECT_PAYLOAD);
    /// [`DirectSendError::Connect`] when there was no edge and [`Node::connect`] failed;
    /// [`DirectSendError::EdgeClosed`] when the edge closed before the payload was queued.
    pub async fn send_direct(&self, target: NodeId, payload: &[u8]) -> Result<(), DirectSendError> {
        check_app_len(payload.len())?;
        if target == self.id() {
            return Err(ConnectError::SelfTarget.into());
        }
        if self.conn_to(&target).is_none() {
            if let Err(e) = self.connect(target).await {
                // A crossed simultaneous dial may have brought the edge up anyway.
                if self.conn_to(&target).is_none() {
                    return Err(e.into());
                }
            }
        }
        self.send_on_edge(target, payload).await
    }

    /// Seals `plaintext` to `target` (learning its X25519 key by rendezvous when we do not
    /// know it yet) and sends the box over the overlay: forwarders see only ciphertext. The
    /// recipient opens the delivery with [`Node::open_sealed`]. Best effort, like
    /// [`Node::send`].
    ///
    /// # Errors
    /// [`SealError::TooLarge`] over [`MAX_SEALED_PLAINTEXT`](crate::MAX_SEALED_PLAINTEXT);
    /// [`SealError::Rendezvous`] when the target's key could not be learned;
    /// [`SealError::BadKey`] for a key nothing can be sealed to; [`SealError::Send`] when the
    /// box could not be routed.
    pub async fn send_sealed(&self, target: NodeId, plaintext: &[u8]) -> Result<(), SealError> {
        if plaintext.len() > crate::MAX_SEALED_PLAINTEXT {
            return Err(SealError::TooLarge {
                len: plaintext.len(),
                max: crate::MAX_SEALED_PLAINTEXT,
            });
        }
        let known = lock(&self.0.core).x_key_of(&target);
        let x = match known {
            Some(x) => x,
            None => {
                self.rendezvous(target)
                    .await
                    .map_err(SealError::Rendezvous)?
                    .x_pub
            }
        };
        let now = self.now();
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let sealed = {
            let core = lock(&self.0.core);
            core.seal(&x, plaintext, now.unix_ns, &mut rng)
        }
        .map_err(|_| SealError::BadKey)?;
        Ok(self.send(target, &sealed)?)
    }

    /// Opens a sealed box that arrived as `delivery`: the box must be sealed to us, fresh,
    /// never opened before, and signed by the delivery's originator.
    ///
    /// # Errors
    /// The [`OpenError`] saying which check failed (a delivery that is not a sealed box
    /// fails too); each failure counts in
    /// [`Stats::dropped_bad_box`](crate::Stats::dropped_bad_box).
    pub fn open_sealed(&self, delivery: &Delivery) -> Result<Opened, OpenError> {
        let now = self.now();
        let result = {
            let core = lock(&self.0.core);
            let mut cache = lock(&self.0.boxes);
            core.open(&delivery.payload, now.unix_ns, &mut cache)
        };
        match result {
            Ok(o) if o.sender == delivery.originator => Ok(o),
            Ok(_) => {
                lock(&self.0.core).count_bad_box();
                Err(OpenError::BadSignature)
            }
            Err(e) => {
                lock(&self.0.core).count_bad_box();
                Err(e)
            }
        }
    }

    fn connection(&self, peer: NodeId, path: Path) -> Connection {
        Connection {
            node: self.clone(),
            peer,
            path,
        }
    }

    /// The hole-punch: a Connect routed to `target` with our coordinates; the target answers
    /// with its own and punches toward ours at once; we punch toward its candidates (the
    /// addresses we learned by rendezvous first, which the peer's answer cannot push out,
    /// then the answer's) and dial them until one authenticates or [`PUNCH_TIMEOUT`] passes.
    async fn punch(&self, target: NodeId, hints: &[Addr]) -> Result<Path, StepError> {
        if self.nat_type() == crate::NatType::Symmetric {
            return Err(StepError::SymmetricNat);
        }
        let (tx, rx) = oneshot::channel();
        let started = tokio::time::Instant::now();
        let nonce = {
            let now = self.now();
            let mut core = lock(&self.0.core);
            let nonce = core.start_punch(now, target).map_err(|e| match e {
                crate::OriginateError::Busy => StepError::Busy,
                _ => StepError::Unroutable,
            })?;
            lock(&self.0.punch_waiters).insert(nonce, tx);
            self.drain(&mut core, now);
            nonce
        };
        let _guard = OnDrop(|| {
            lock(&self.0.punch_waiters).remove(&nonce);
            lock(&self.0.core).cancel_punch(&nonce);
        });
        let deadline = tokio::time::Instant::now() + PUNCH_TIMEOUT;
        let answered = tokio::time::timeout_at(deadline, rx).await;
        let Ok(Ok(answer)) = answered else {
            return Err(StepError::Timeout(PUNCH_TIMEOUT));
        };
        let (theirs, timed) = (answer.addrs, answer.flags & nodenet_nat::FLAG_TIMED != 0);
        let rtt = started.elapsed();
        let candidates = {
            let core = lock(&self.0.core);
            core.punch_candidates(hints.iter().chain(&theirs).map(Addr::as_ref))
        };
        // A peer that offers nothing beyond what the direct dial already tried has no mapping
        // to punch toward (behind a symmetric NAT, say): go on to a relay now.
        if candidates.is_empty() || theirs.iter().all(|a| hints.contains(a)) {
            return Err(StepError::NoAddresses);
        }
        if timed {
            // The peer holds its punch until our Sync reaches it, about half a round trip
            // from now: we punch then too.
            {
                let now = self.now();
                let mut core = lock(&self.0.core);
                if core.punch_sync(now, target, &nonce).is_ok() {
                    self.drain(&mut core, now);
                }
            }
            tokio::time::sleep(rtt / 2).await;
        }
        self.punch_burst(Some(target), candidates.clone());
        // The peer's first datagrams may still be on their way: a dial refused at once is
        // tried again, until the deadline.
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .dial_any(target, &candidates, left, Path::Punched)
                .await
            {
                Ok(path) => {
                    lock(&self.0.core).count_punch_success();
                    self.mark_punched(&target);
                    return Ok(path);
                }
                Err(e) if left <= crate::driver::PUNCH_INTERVAL * 2 => return Err(e),
                // A crossed dial may have brought the edge up from the other side (but a
                // relayed edge being upgraded does not count).
                Err(_) if self.conn_to(&target).is_some_and(|c| !self.is_relayed(&c)) => {
                    self.mark_punched(&target);
                    return Ok(Path::Punched);
                }
                Err(_) => tokio::time::sleep(crate::driver::PUNCH_INTERVAL).await,
            }
        }
    }

    /// Remembers that our edge to `target` came from a hole-punch.
    pub(crate) fn mark_punched(&self, target: &NodeId) {
        if let Some(c) = self.conn_to(target) {
            lock(&self.0.punched).insert(c.id());
        }
    }

    /// Through a volunteer relay: up to [`RELAYS_TRIED`] of our edges that advertise the
    /// relay capability are asked in turn; the first grant is dialed (the target's NodeId at
    /// the relay's caller-side address, the handshake end to end).
    async fn relay_to(&self, target: NodeId) -> Result<Path, StepError> {
        let relays = lock(&self.0.core).relay_candidates(&target, RELAYS_TRIED);
        if relays.is_empty() {
            return Err(StepError::NoRelay);
        }
        let mut last = StepError::NoRelay;
        for relay in relays {
            let (addr, attest) = match self.ask_relay(relay, target).await {
                Ok(grant) => grant,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match self
                .dial_any(
                    target,
                    std::slice::from_ref(&addr),
                    RELAY_DIAL_TIMEOUT,
                    Path::Relayed,
                )
                .await
            {
                Ok(path) => {
                    // Only the connection this dial made (a crossed dial may have kept the
                    // peer's own, through a relay it chose): it comes from the grant's address.
                    if let Some(c) = self.conn_to(&target).filter(|c| c.remote_addr() == addr) {
                        lock(&self.0.relayed).insert(c.id(), relay);
                        {
                            // The core drops the peer's reports of our address (it sees the
                            // relay), unless a direct edge replaced this one meanwhile.
                            let mut core = lock(&self.0.core);
                            if self.conn_to(&target).as_ref() == Some(&c) {
                                core.set_edge_relayed(&target, true);
                            }
                        }
                        // The relay's word on the target's host: one voice toward a birthday
                        // punch ([`Node::trusted_host`] wants a second).
                        if let Some(a) = attest.filter(|a| a.peer == target) {
                            lock(&self.0.attested).insert(c.id(), a.host);
                        }
                        // Closed meanwhile: on_closed may have run before these inserts.
                        if c.is_closed() {
                            lock(&self.0.relayed).remove(&c.id());
                            lock(&self.0.attested).remove(&c.id());
                        }
                        self.upgrade_later(target);
                        // A symmetric NAT on one side: try the birthday punch at once, in the
                        // background (the relayed edge serves meanwhile).
                        let node = self.clone();
                        self.spawn_owned(async move {
                            node.birthday(target).await;
                        });
                    }
                    return Ok(path);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks `relay` (one of our edges) for a relay session to `target`: its grant, the
    /// caller-side address and where it sees the target, or why not.
    async fn ask_relay(
        &self,
        relay: NodeId,
        target: NodeId,
    ) -> Result<(Addr, Option<crate::core::Attested>), StepError> {
        let mut nonce = [0u8; nodenet_nat::NONCE_LEN];
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        rand_core::Rng::fill_bytes(&mut rng, &mut nonce);
        let (tx, rx) = oneshot::channel();
        lock(&self.0.relay_waiters).insert(nonce, (relay, tx));
        let _guard = OnDrop(|| {
            lock(&self.0.relay_waiters).remove(&nonce);
        });
        let req = nodenet_nat::RelayRequest { nonce, target }.encode();
        let frame = crate::core::small_frame(FrameType::RELAY_REQUEST, &req);
        if self.send_to(&relay, &frame).is_err() {
            return Err(StepError::NoRelay);
        }
        match tokio::time::timeout(RELAY_GRANT_TIMEOUT, rx).await {
            Ok(Ok(grant)) => Ok(grant),
            _ => Err(StepError::Timeout(RELAY_GRANT_TIMEOUT)),
        }
    }

    /// Where relays of *our* choosing agree they see `peer`: the host a birthday punch may
    /// aim at, or `None`. A relay is any edge that claims the capability, so one relay's word
    /// is not enough: [`ATTESTATIONS_NEEDED`] distinct relays on distinct subnets (each a
    /// direct edge of ours, its subnet fixed when asked) must name the same host, and none may
    /// name another. The relay we dialed `peer` through gave its word in its grant; the
    /// others (up to [`RELAYS_TRIED`]) are asked now, at once. The relay that carries our edge
    /// to `peer` is never asked: if the peer chose it, it could vouch for any host. Only for
    /// a relayed edge to `peer`; an agreement is kept while the edge lives.
    pub(crate) async fn trusted_host(&self, peer: NodeId) -> Option<Addr> {
        use nodenet_routing::SubnetKey;
        let conn = self.conn_to(&peer)?;
        let carrier = lock(&self.0.relayed).get(&conn.id()).copied()?;
        if let Some(known) = lock(&self.0.trusted).get(&conn.id()) {
            return known.clone();
        }
        let ip = self.0.transport.is_ip();
        // Where a relay sits, fixed when it is asked: only a direct edge of ours (a relayed
        // one shows its relay's address, not its own) and, on IP, one with a subnet.
        let seat = |relay: &NodeId| -> Option<Option<SubnetKey>> {
            let c = self.conn_to(relay)?;
            if self.is_relayed(&c) {
                return None;
            }
            let net = SubnetKey::of_addr(c.remote_addr().as_ref());
            (!ip || net.is_some()).then_some(net)
        };
        let mut voices: Vec<Voice> = Vec::new();
        // Our own grant's word, from the relay we chose and dialed through.
        if let (Some(host), Some(net)) = (self.attested_host(&peer), seat(&carrier)) {
            voices.push(Voice {
                relay: carrier,
                net,
                host,
            });
        }
        let relays: Vec<(NodeId, Option<SubnetKey>)> = lock(&self.0.core)
            .relay_candidates(&peer, RELAYS_TRIED + 4)
            .into_iter()
            .filter(|r| *r != carrier)
            .filter_map(|r| seat(&r).map(|net| (r, net)))
            .take(RELAYS_TRIED)
            .collect();
        let mut asks = tokio::task::JoinSet::new();
        for (relay, net) in relays {
            let node = self.clone();
            asks.spawn(async move { (relay, net, node.ask_relay(relay, peer).await) });
        }
        while let Some(joined) = asks.join_next().await {
            let Ok((relay, net, Ok((_, Some(a))))) = joined else {
                continue;
            };
            // A relay that left since it answered no longer speaks.
            if a.peer == peer && self.conn_to(&relay).is_some() {
                voices.push(Voice {
                    relay,
                    net,
                    host: a.host,
                });
            }
        }
        let verdict = agreed(&voices);
        // Only an agreement is kept: a vote that fell short (a relay not yet holding an edge
        // to the peer, an answer lost) may succeed on the next attempt, which the birthday
        // limits space out.
        if verdict.is_some() {
            lock(&self.0.trusted).insert(conn.id(), verdict.clone());
            if conn.is_closed() {
                lock(&self.0.trusted).remove(&conn.id());
            }
        }
        verdict
    }

    /// Tries, in the background, to replace a relayed edge to `target` by a punched one: after
    /// each delay of [`UPGRADE_AFTER`], while the edge is still relayed, a hole-punch and then
    /// a birthday punch. A punched edge wins over the relayed one, which drains and closes.
    fn upgrade_later(&self, target: NodeId) {
        let node = self.clone();
        self.spawn_owned(async move {
            for delay in UPGRADE_AFTER {
                tokio::time::sleep(delay).await;
                match node.conn_to(&target) {
                    Some(c) if node.is_relayed(&c) => {}
                    _ => return,
                }
                // A hole-punch, or (a symmetric NAT on one side) a birthday punch: the one
                // tried at connect time may have been declined while the peer's relays had
                // not answered yet.
                if node.punch(target, &[]).await.is_ok() || node.birthday(target).await {
                    lock(&node.0.core).count_upgrade();
                    return;
                }
            }
        });
    }

    /// Dials every address at once; the first to authenticate as the target and pass our
    /// admission becomes an edge, and the others are closed.
    async fn dial_direct(&self, target: NodeId, addrs: &[Addr]) -> Result<Path, StepError> {
        self.dial_any(target, addrs, self.0.direct_dial_timeout, Path::Direct)
            .await
    }

    /// Dials every address at once with `timeout` each; the winner is reported as `path`.
    async fn dial_any(
        &self,
        target: NodeId,
        addrs: &[Addr],
        timeout: Duration,
        path: Path,
    ) -> Result<Path, StepError> {
        if addrs.is_empty() {
            return Err(StepError::NoAddresses);
        }
        let mut dials = tokio::task::JoinSet::new();
        for addr in addrs.iter().take(nodenet_rendezvous::ADDR_CAP) {
            let dial = self.0.transport.dial(target, addr);
            dials.spawn(async move {
                tokio::time::timeout(timeout, dial)
                    .await
                    .unwrap_or(Err(DialError::Timeout))
            });
        }
        let mut last = StepError::NoAddresses;
        while let Some(joined) = dials.join_next().await {
            match joined {
                Ok(Ok(conn)) => match self.adopt(&conn) {
                    Ok(()) => {
                        // The losers are aborted at once (a dial of an address that does not
                        // answer would otherwise hold us until its timeout); one that won
                        // its race meanwhile is closed.
                        dials.abort_all();
                        while let Some(joined) = dials.join_next().await {
                            if let Ok(Ok(extra)) = joined {
                                if extra != conn {
                                    extra.close();
                                }
                            }
                        }
                        return Ok(path);
                    }
                    Err(e) => last = e,
                },
                Ok(Err(e)) => last = StepError::Dial(e),
                Err(_) => {}
            }
        }
        Err(last)
    }

    /// Registers a connection we dialed as an edge (admission included).
    pub(crate) fn adopt(&self, conn: &Conn) -> Result<(), StepError> {
        let now = self.now();
        let mut core = lock(&self.0.core);
        let result = self.admit(&mut core, now, conn);
        self.drain(&mut core, now);
        match result {
            Ok(()) => Ok(()),
            Err(EdgeRefusal::Duplicate) if self.conn_to(&conn.remote_id()).is_some() => Ok(()),
            Err(e) => Err(StepError::Refused(e)),
        }
    }

    async fn send_on_edge(&self, peer: NodeId, payload: &[u8]) -> Result<(), DirectSendError> {
        check_app_len(payload.len())?;
        let mut frame = vec![0u8; nodenet_wire::header_len(payload.len()) + payload.len()];
        let n = Frame::new(FrameType::APP, payload)
            .encode(&mut frame)
            .map_err(|_| DirectSendError::TooLarge {
                len: payload.len(),
                max: crate::MAX_DIRECT_PAYLOAD,
            })?;
        let conn = self
            .conn_to(&peer)
            .ok_or(DirectSendError::EdgeClosed(peer))?;
        conn.send_bulk(&frame[..n])
            .await
            .map_err(|_| DirectSendError::EdgeClosed(peer))
    }
}

fn check_app_len(len: usize) -> Result<(), DirectSendError> {
    if len > crate::MAX_DIRECT_PAYLOAD {
        return Err(DirectSendError::TooLarge {
            len,
            max: crate::MAX_DIRECT_PAYLOAD,
        });
    }
    Ok(())
}

/// One relay's word on where it sees a peer.
struct Voice {
    relay: NodeId,
    net: Option<nodenet_routing::SubnetKey>,
    host: Addr,
}

/// The host every voice names, if they all agree and come from at least
/// [`ATTESTATIONS_NEEDED`] distinct relays on distinct subnets (where their edges have one);
/// `None` on any disagreement: one honest relay vetoes a lie.
fn agreed(voices: &[Voice]) -> Option<Addr> {
    use nodenet_nat::birthday::{host_of, same_host};
    let host_part = |e: &str| host_of(e).unwrap_or(e).to_owned();
    let first = voices.first()?;
    let h = host_part(&first.host.endpoint);
    if !voices
        .iter()
        .all(|v| same_host(&h, &host_part(&v.host.endpoint)))
    {
        return None;
    }
    let mut backers: Vec<&Voice> = Vec::new();
    for v in voices {
        let distinct = backers
            .iter()
            .all(|b| b.relay != v.relay && (b.net.is_none() || b.net != v.net));
        if distinct {
            backers.push(v);
        }
    }
    (backers.len() >= ATTESTATIONS_NEEDED).then(|| first.host.clone())
}
