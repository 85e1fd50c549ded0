//! Rendezvous, the connect cascade, direct sends and sealed boxes: the driver's half.
//!
//! What `connect` tries, in which order and for how long is decided by
//! [`nodenet_proto::connect::Cascade`], a state machine with no I/O; this module carries out its
//! commands (dials, rendezvous, punch and relay requests) and feeds back their answers, with
//! one timer: the cascade's next deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_proto::connect::RELAY_GRANT_TIMEOUT;
use nodenet_proto::connect::{
    Cascade, CascadeConfig, Command, EdgeNow, Failure, How, Outcome, RendezvousClock,
    RendezvousTick,
};
pub use nodenet_proto::connect::{
    DIRECT_DIAL_TIMEOUT, PUNCH_TIMEOUT, Path, RELAYS_TRIED, Step, Strategy,
};
use nodenet_rendezvous::Coordinates;
use nodenet_routing::Time;
use nodenet_transport::{Conn, DialError};
use nodenet_wire::Addr;
use tokio::sync::oneshot;

use crate::core::EdgeRefusal;
use crate::driver::{PunchAnswer, link, lock};
use crate::{ConnectError, DirectSendError, Node};
use nodenet_proto::links::LinkPath;
pub use nodenet_proto::upgrade::UPGRADE_AFTER;
use nodenet_proto::upgrade::{Upgrade, UpgradeStep};

pub use nodenet_proto::links::ATTESTATIONS_NEEDED;

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
    #[error("no relay volunteer known")]
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
        let mut clock = RendezvousClock::new(self.now().mono, wait);
        let mut rx = std::pin::pin!(rx);
        loop {
            match tokio::time::timeout_at(self.instant_at(clock.next()), &mut rx).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(_)) => return Err(fail(StepError::Timeout(wait))),
                Err(_) => match clock.tick(self.now().mono) {
                    RendezvousTick::Wait => {}
                    RendezvousTick::Resend => self.resend_rendezvous(&nonce),
                    RendezvousTick::Expired => return Err(fail(StepError::Timeout(wait))),
                },
            }
        }
    }

    fn resend_rendezvous(&self, nonce: &[u8; nodenet_rendezvous::NONCE_LEN]) {
        let now = self.now();
        let mut core = lock(&self.0.core);
        let _ = core.resend_rendezvous(now, nonce);
        self.drain(&mut core, now);
    }

    /// The tokio instant of a time of the core's clock.
    pub(crate) fn instant_at(&self, t: Time) -> tokio::time::Instant {
        self.0.start + Duration::from_nanos(t.0)
    }

    /// The edge we hold to `target` now, as the cascade sees it.
    fn edge_now(&self, target: &NodeId) -> EdgeNow {
        match self.conn_to(target) {
            None => EdgeNow::None,
            Some(c) if self.is_relayed(&c) => EdgeNow::Relayed,
            Some(_) => EdgeNow::Direct,
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
            let path = match self.path_of(&c) {
                LinkPath::Relayed { .. } => Path::Relayed,
                LinkPath::Punched => Path::Punched,
                LinkPath::Direct => Path::Direct,
            };
            return Ok(self.connection(target, path));
        }
        // An address we already know is dialed first: the handshake authenticates the NodeId,
        // so a stale or planted address costs a failed dial, never a wrong peer.
        let known = lock(&self.0.core).known_addrs(&target);
        let cascade = Cascade::new(
            self.now().mono,
            known,
            self.nat_type() == crate::NatType::Symmetric,
            self.cascade_config(),
        );
        match self.run_cascade(target, cascade).await {
            Ok(path) => Ok(self.connection(target, path)),
            Err((step, error)) => Err(ConnectError::Failed {
                target,
                step,
                error,
            }),
        }
    }

    fn cascade_config(&self) -> CascadeConfig {
        CascadeConfig {
            direct_dial_timeout: self.0.direct_dial_timeout,
            rendezvous_timeout: self.0.rendezvous_timeout,
        }
    }

    /// Carries out `cascade`'s commands and feeds it their answers and its deadlines until it
    /// ends; then does what its outcome asks of the driver (bookkeeping of a punched or
    /// relayed edge).
    async fn run_cascade(
        &self,
        target: NodeId,
        mut cascade: Cascade<StepError>,
    ) -> Result<Path, (Step, StepError)> {
        let mut run = Run {
            node: self,
            target,
            pending: None,
            rendezvous: None,
            rendezvous_addrs: Vec::new(),
            punch: None,
            grant: None,
            linked: Vec::new(),
        };
        let outcome = loop {
            while let Some(command) = cascade.poll_command() {
                run.carry_out(&mut cascade, command);
            }
            if let Some(outcome) = cascade.outcome() {
                break outcome.clone();
            }
            let deadline = cascade.poll_timeout().map(|t| self.instant_at(t));
            if run.pending.is_none() && deadline.is_none() {
                // Waiting on nothing would hang the caller: end with what we have.
                cascade.abandon();
                continue;
            }
            let answer = async {
                match run.pending.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = answer => {
                    run.pending = None;
                    run.feed(&mut cascade, answer);
                }
                () = timer => cascade.handle_timeout(self.now().mono, self.edge_now(&target)),
            }
        };
        match outcome {
            Outcome::Connected { path, how } => {
                match (path, how) {
                    (Path::Punched, How::Dialed) => {
                        lock(&self.0.core).count_punch_success();
                        self.mark_punched(&target);
                    }
                    (Path::Punched, How::Crossed) => self.mark_punched(&target),
                    (Path::Relayed, How::Relay { relay, addr }) => {
                        // A relay the target named vouches for nothing about it.
                        let attest = run.grant.take().flatten();
                        let attest = attest.filter(|_| !run.linked.contains(&relay));
                        self.relayed_edge_up(target, relay, &addr, attest);
                    }
                    _ => {}
                }
                Ok(path)
            }
            Outcome::Failed { step, error } => Err((
                step,
                match error {
                    Failure::Timeout(d) => StepError::Timeout(d),
                    Failure::Unroutable => StepError::Unroutable,
                    Failure::Busy => StepError::Busy,
                    Failure::NoAddresses => StepError::NoAddresses,
                    Failure::SymmetricNat => StepError::SymmetricNat,
                    Failure::NoRelay => StepError::NoRelay,
                    Failure::Driver(e) => e,
                },
            )),
        }
    }

    fn connection(&self, peer: NodeId, path: Path) -> Connection {
        Connection {
            node: self.clone(),
            peer,
            path,
        }
    }

    /// Remembers that our edge to `target` came from a hole-punch.
    pub(crate) fn mark_punched(&self, target: &NodeId) {
        if let Some(c) = self.conn_to(target) {
            let mut core = lock(&self.0.core);
            // Checked under the core's lock, which `on_closed` takes to forget the link:
            // a mark after that would never be removed.
            if !c.is_closed() {
                core.links_mut().punched(link(&c));
            }
        }
    }

    /// Bookkeeping of an edge the cascade opened through `relay` (granted at `addr`): the
    /// relay that carries it, the core told to ignore the peer's reports of our address, the
    /// relay's word on the peer's host, the background upgrade and, at once, a birthday punch.
    fn relayed_edge_up(
        &self,
        target: NodeId,
        relay: NodeId,
        addr: &Addr,
        attest: Option<crate::core::Attested>,
    ) {
        // Only the connection this dial made (a crossed dial may have kept the peer's own,
        // through a relay it chose): it comes from the grant's address.
        let Some(c) = self.conn_to(&target).filter(|c| c.remote_addr() == *addr) else {
            return;
        };
        {
            let mut core = lock(&self.0.core);
            // Closed meanwhile (on_closed may have run already): nothing is recorded.
            if c.is_closed() {
                return;
            }
            // The relay's word on the target's host: one voice toward a birthday punch
            // ([`Node::trusted_host`] wants a second).
            let host = attest.filter(|a| a.peer == target).map(|a| a.host);
            core.links_mut().relayed(link(&c), relay, host);
            // The core drops the peer's reports of our address (it sees the relay), unless a
            // direct edge replaced this one meanwhile.
            if self.conn_to(&target).as_ref() == Some(&c) {
                core.set_edge_relayed(&target, true);
            }
        }
        self.upgrade_later(target);
        // A symmetric NAT on one side: try the birthday punch at once, in the background
        // (the relayed edge serves meanwhile).
        let node = self.clone();
        self.spawn_owned(async move {
            node.birthday(target).await;
        });
    }

    /// Tries, in the background, to replace a relayed edge to `target` by a punched one: after
    /// each delay of [`UPGRADE_AFTER`], while the edge is still relayed, a hole-punch and then
    /// a birthday punch. A punched edge wins over the relayed one, which drains and closes.
    fn upgrade_later(&self, target: NodeId) {
        let node = self.clone();
        self.spawn_owned(async move {
            let mut schedule = Upgrade::new(node.now().mono);
            while let Some(at) = schedule.poll_timeout() {
                tokio::time::sleep_until(node.instant_at(at)).await;
                let relayed = node.conn_to(&target).is_some_and(|c| node.is_relayed(&c));
                match schedule.handle_timeout(node.now().mono, relayed) {
                    UpgradeStep::Wait => continue,
                    UpgradeStep::Done => return,
                    UpgradeStep::Try => {}
                }
                // A hole-punch, or (a symmetric NAT on one side) a birthday punch: the one
                // tried at connect time may have been declined while the peer's relays had
                // not answered yet.
                let punch = Cascade::upgrade(
                    node.now().mono,
                    node.nat_type() == crate::NatType::Symmetric,
                    node.cascade_config(),
                );
                let upgraded =
                    node.run_cascade(target, punch).await.is_ok() || node.birthday(target).await;
                if upgraded {
                    lock(&node.0.core).count_upgrade();
                }
                schedule.handle_tried(node.now().mono, upgraded);
            }
        });
    }

    /// Dials every address at once with `timeout` each; the first to authenticate as the
    /// target and pass our admission becomes the edge, and the others are closed. `via`
    /// names the relay that carries these dials, if one does.
    async fn dial_any(
        &self,
        target: NodeId,
        addrs: &[Addr],
        timeout: Duration,
        via: Option<NodeId>,
    ) -> Result<(), StepError> {
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
                Ok(Ok(conn)) => match self.adopt_via(&conn, via) {
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
                        return Ok(());
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
        self.adopt_via(conn, None)
    }

    /// [`Node::adopt`] for a connection `via` carries, if a relay does: the carrier is
    /// recorded before admission, so a crossed dial's tie-break sees it relayed, as the
    /// callee does (its relay's bind says so).
    pub(crate) fn adopt_via(&self, conn: &Conn, via: Option<NodeId>) -> Result<(), StepError> {
        let now = self.now();
        let mut core = lock(&self.0.core);
        if let Some(relay) = via {
            if !conn.is_closed() {
                core.links_mut().relayed(link(conn), relay, None);
            }
        }
        let result = self.admit(&mut core, now, conn);
        self.drain(&mut core, now);
        match result {
            Ok(()) => Ok(()),
            Err(EdgeRefusal::Duplicate) if self.conn_to(&conn.remote_id()).is_some() => Ok(()),
            Err(e) => Err(StepError::Refused(e)),
        }
    }
}

mod relays;
mod run;

use run::Run;
