//! The connect cascade as a state machine: one [`Cascade`] per connect attempt, with every
//! decision of the attempt in it (what to try next, how long each step may take, when a
//! rendezvous is sent again, when to punch, when a punch dial is retried, which relay is
//! asked next) and none of its I/O.
//!
//! The driver owns the I/O. It drains [`Cascade::poll_command`] and carries each command out
//! (a dial, a rendezvous, a punch request, a relay request); at most one command that waits for
//! an answer is in flight at a time, and its answer comes back as the matching `handle_*`
//! call. [`Cascade::poll_timeout`] is the one deadline the driver waits for beside that answer,
//! [`Cascade::handle_timeout`] is called when it passes, and [`Cascade::outcome`] is the result
//! once there is one. A command superseded by a timeout (a rendezvous that never came back,
//! say) is simply dropped by the driver: answers to it are no longer asked for.
//!
//! The order, cheapest first, each step tried only when the ones before it failed:
//!
//! 1. a direct dial of addresses already known for the target (no step of its own: a failure
//!    goes on quietly);
//! 2. rendezvous, sent again after [`RENDEZVOUS_RETRY`], twice that, and so on, until the
//!    configured timeout;
//! 3. [`Strategy::Direct`]: a dial of every address the rendezvous returned, at once;
//! 4. [`Strategy::Punch`] (unless our NAT is symmetric): a Connect routed to the target; its
//!    answer names the candidates; a timed punch waits half the request's round trip after
//!    our Sync so both sides punch together; the dial is retried every punch interval until
//!    [`PUNCH_TIMEOUT`];
//! 5. [`Strategy::Relay`]: up to [`RELAYS_TRIED`] relays asked one after the other, the
//!    ones closest to the target first (a relay serves only a target it holds an edge to,
//!    and those are the target's siblings: a lookup of the target, sent when the direct step
//!    fails, names them, and the relays are chosen no earlier than [`RELAY_LOOKUP_WAIT`]
//!    after it). A relay that is not yet an edge is dialed first, within
//!    [`RELAY_LINK_TIMEOUT`]; each is given [`RELAY_GRANT_TIMEOUT`] to grant and
//!    [`RELAY_DIAL_TIMEOUT`] for the dial through it.
//!
//! After each failed strategy, an edge the target opened to us meanwhile (both sides dialed at
//! once) ends the cascade as connected.

use std::collections::VecDeque;
use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_routing::Time;
use nodenet_wire::Addr;

/// How long each direct dial of a rendezvous address may take by default (an address that
/// does not answer this fast is behind NAT, and punching is the next step).
pub const DIRECT_DIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// A rendezvous unanswered this long is sent again (then after twice as long, and so on).
pub const RENDEZVOUS_RETRY: Duration = Duration::from_millis(500);
/// How long a hole-punch may take, from the Connect to an authenticated edge.
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The spacing of punch volleys, and of punch dials retried after a quick refusal.
pub const PUNCH_INTERVAL: Duration = Duration::from_millis(50);
/// Relays asked at most, one after the other.
pub const RELAYS_TRIED: usize = 3;
/// How long a relay has to grant a request.
pub const RELAY_GRANT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the dial through a granted relay may take.
pub const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the dial of a relay that is not yet an edge may take.
pub const RELAY_LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after the relay lookup (sent when the direct step fails) the relays are chosen
/// at the earliest, so its answers are in.
pub const RELAY_LOOKUP_WAIT: Duration = Duration::from_millis(500);

/// A way to reach a peer, in the order a connect tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// A direct dial of the addresses the target gave in its rendezvous answer.
    Direct,
    /// A hole-punch coordinated over the overlay: both sides send punch datagrams toward
    /// each other's addresses at once, then we dial. Skipped when our own NAT is symmetric.
    Punch,
    /// Through a volunteer relay near the target (dialed first if it is not an edge): it splices datagrams it cannot read, and
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

/// The step of a connect that failed.
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

/// Why a step failed. `D` is the driver's own error of a dial (it knows what a dial is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure<D> {
    /// No answer in time.
    Timeout(Duration),
    /// No edge to launch the request from.
    Unroutable,
    /// Too many requests outstanding.
    Busy,
    /// Nothing to dial.
    NoAddresses,
    /// Our own NAT maps every destination to a fresh port: a punch cannot work.
    SymmetricNat,
    /// No relay volunteer known.
    NoRelay,
    /// A failure the driver reported (a dial's, a relay request's).
    Driver(D),
}

/// The timing of the cascade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CascadeConfig {
    /// Each direct dial (known and rendezvous addresses).
    pub direct_dial_timeout: Duration,
    /// The whole rendezvous.
    pub rendezvous_timeout: Duration,
}

/// What kind of edge to the target the driver holds now (it knows; the cascade asks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeNow {
    /// None.
    None,
    /// One over a direct or punched path.
    Direct,
    /// One through a relay.
    Relayed,
}

/// How the cascade ended, for the driver to carry out and report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<D> {
    /// An edge to the target is up.
    Connected {
        /// How it reached the target.
        path: Path,
        /// How it came about.
        how: How,
    },
    /// Every step that was tried failed; this one last.
    Failed {
        /// The step.
        step: Step,
        /// Its failure.
        error: Failure<D>,
    },
}

/// How a connect came about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Our own dial won.
    Dialed,
    /// The target's dial to us brought the edge up while ours failed.
    Crossed,
    /// Our dial through this relay, to this address of its, won.
    Relay {
        /// The relay.
        relay: NodeId,
        /// The caller-side address it granted.
        addr: Addr,
    },
}

/// A relay the driver names for [`Command::FindRelays`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The relay.
    pub relay: NodeId,
    /// Where to dial it if it is not an edge (empty if it is one).
    pub addrs: Vec<Addr>,
}

/// What the cascade needs done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Dial every address at once, each within `timeout`; the first to authenticate as the
    /// target becomes the edge. Answer: [`Cascade::handle_dialed`].
    Dial {
        /// The addresses.
        addrs: Vec<Addr>,
        /// Each dial's limit.
        timeout: Duration,
        /// The relay these dials run through (a relay's granted address), so the driver
        /// records the carrier before the edge is admitted: the crossed-dial tie-break reads
        /// it, and the callee already counts the connection relayed.
        via: Option<NodeId>,
    },
    /// Start a rendezvous and wait for its answer. Answers: [`Cascade::handle_rendezvous`],
    /// or [`Cascade::handle_rendezvous_refused`] if it could not start.
    StartRendezvous,
    /// Send the open rendezvous request again (same nonce); no answer.
    ResendRendezvous,
    /// Send a Connect and wait for the ConnectAck. Answers:
    /// [`Cascade::handle_punch_answer`], or [`Cascade::handle_punch_refused`].
    StartPunch,
    /// Send the Sync of a timed punch; no answer.
    PunchSync,
    /// Punch toward these addresses (volleys); no answer.
    PunchBurst {
        /// The candidates.
        addrs: Vec<Addr>,
    },
    /// Look the target up, to learn the relays near it; no answer (the driver's core keeps
    /// what comes back, and names it at [`Command::FindRelays`]).
    LookupRelays,
    /// Name up to `n` relays, closest to the target first. Answer: [`Cascade::handle_relays`].
    FindRelays {
        /// How many at most.
        n: usize,
    },
    /// Make sure `relay` is an edge: nothing to do if it is one, else dial `addrs` within
    /// `timeout`. Answer: [`Cascade::handle_relay_linked`].
    LinkRelay {
        /// The relay.
        relay: NodeId,
        /// Where to dial it (empty when it is an edge already).
        addrs: Vec<Addr>,
        /// The dial's limit.
        timeout: Duration,
    },
    /// Ask `relay` (an edge now) for a session to the target. Answer:
    /// [`Cascade::handle_relay_answer`].
    AskRelay {
        /// The relay.
        relay: NodeId,
    },
}

#[derive(Debug)]
enum State {
    Known,
    Rendezvous(RendezvousClock),
    Direct,
    PunchAsked {
        started: Time,
        deadline: Time,
    },
    /// Until `at`; then a dial, after a burst if `burst` (the first dial after the answer).
    PunchWait {
        at: Time,
        deadline: Time,
        burst: bool,
    },
    PunchDialing {
        deadline: Time,
    },
    /// Waiting for the relay lookup's answers until `at`.
    RelayWait {
        at: Time,
    },
    Relays,
    RelayLinking,
    RelayAsking {
        deadline: Time,
    },
    RelayDialing {
        addr: Addr,
    },
    Done,
}

/// The retry clock of one rendezvous: sent again after [`RENDEZVOUS_RETRY`], then twice as
/// long, and so on, until its deadline.
#[derive(Clone, Copy, Debug)]
pub struct RendezvousClock {
    deadline: Time,
    resend_at: Time,
    retry: Duration,
    timeout: Duration,
}

/// What a [`RendezvousClock`] says when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RendezvousTick {
    /// Not yet.
    Wait,
    /// Send the request again.
    Resend,
    /// Give up: no answer within the timeout.
    Expired,
}

impl RendezvousClock {
    /// A rendezvous sent at `now` that may take `timeout`.
    pub fn new(now: Time, timeout: Duration) -> Self {
        Self {
            deadline: now.after(timeout),
            resend_at: now.after(RENDEZVOUS_RETRY),
            retry: RENDEZVOUS_RETRY,
            timeout,
        }
    }

    /// When to call [`RendezvousClock::tick`] next.
    pub fn next(&self) -> Time {
        self.resend_at.min(self.deadline)
    }

    /// The timeout it was given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What to do at `now`.
    pub fn tick(&mut self, now: Time) -> RendezvousTick {
        if now >= self.deadline {
            RendezvousTick::Expired
        } else if now >= self.resend_at {
            self.retry *= 2;
            self.resend_at = now.after(self.retry);
            RendezvousTick::Resend
        } else {
            RendezvousTick::Wait
        }
    }
}

/// One connect attempt's state machine (see the module docs).
#[derive(Debug)]
pub struct Cascade<D> {
    config: CascadeConfig,
    symmetric: bool,
    /// Whether a failed punch goes on to the relays (not when upgrading a relayed edge).
    relay_fallback: bool,
    state: State,
    /// The addresses the rendezvous returned (the punch's first candidates).
    hints: Vec<Addr>,
    /// The relays still to ask.
    relays: VecDeque<RelayCandidate>,
    /// When the relay lookup went out.
    lookup_at: Option<Time>,
    relay: Option<NodeId>,
    commands: VecDeque<Command>,
    /// The last failure of a strategy.
    last: Option<(Strategy, Failure<D>)>,
    outcome: Option<Outcome<D>>,
}

impl<D: Clone> Cascade<D> {
    /// A connect started at `now`, with the addresses we already know for the target (may be
    /// empty) and whether our own NAT is symmetric.
    pub fn new(now: Time, known: Vec<Addr>, symmetric: bool, config: CascadeConfig) -> Self {
        let mut c = Self::idle(symmetric, config);
        if known.is_empty() {
            c.start_rendezvous(now);
        } else {
            c.state = State::Known;
            c.commands.push_back(Command::Dial {
                addrs: known,
                timeout: config.direct_dial_timeout,
                via: None,
            });
        }
        c
    }

    fn idle(symmetric: bool, config: CascadeConfig) -> Self {
        Self {
            config,
            symmetric,
            relay_fallback: true,
            state: State::Done,
            hints: Vec::new(),
            relays: VecDeque::new(),
            lookup_at: None,
            relay: None,
            commands: VecDeque::new(),
            last: None,
            outcome: None,
        }
    }

    /// An attempt to replace a relayed edge by a punched one at `now`: the punch step alone,
    /// with nothing learned by rendezvous (the edge's own handshake proved the peer), and no
    /// relay after it.
    pub fn upgrade(now: Time, symmetric: bool, config: CascadeConfig) -> Self {
        let mut c = Self::idle(symmetric, config);
        c.relay_fallback = false;
        c.state = State::Direct;
        c.strategy_failed(now, Failure::NoAddresses, EdgeNow::None);
        c
    }

    /// Whether our own NAT is symmetric, as known now (the driver learns it from its
    /// neighbours' reports while the attempt runs): read when the direct step fails, to skip
    /// the punch.
    pub fn set_symmetric(&mut self, symmetric: bool) {
        self.symmetric = symmetric;
    }

    /// The next thing to do, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Cascade::handle_timeout`] is due, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.state {
            State::Rendezvous(clock) => Some(clock.next()),
            State::PunchAsked { deadline, .. } => Some(*deadline),
            State::PunchWait { at, .. } => Some(*at),
            State::RelayAsking { deadline } => Some(*deadline),
            State::RelayWait { at } => Some(*at),
            _ => None,
        }
    }

    /// The result, once the cascade has ended.
    pub fn outcome(&self) -> Option<&Outcome<D>> {
        self.outcome.as_ref()
    }

    /// The driver can no longer carry the attempt out (or it waits on nothing, which would
    /// be a bug here): it ends now with the last failure, or a timeout of the step it was in.
    pub fn abandon(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        if matches!(self.state, State::Known | State::Rendezvous(_)) {
            self.fail(Step::Rendezvous, Failure::Timeout(Duration::ZERO));
        } else {
            self.give_up();
        }
    }

    /// Time passed: `now` is at or past [`Cascade::poll_timeout`] (earlier calls are
    /// harmless). `edge` is the edge the driver holds to the target now.
    pub fn handle_timeout(&mut self, now: Time, edge: EdgeNow) {
        match &mut self.state {
            State::Rendezvous(clock) => match clock.tick(now) {
                RendezvousTick::Wait => {}
                RendezvousTick::Resend => self.commands.push_back(Command::ResendRendezvous),
                RendezvousTick::Expired => {
                    let t = clock.timeout();
                    self.fail(Step::Rendezvous, Failure::Timeout(t));
                }
            },
            State::PunchAsked { deadline, .. } if now >= *deadline => {
                self.strategy_failed(now, Failure::Timeout(PUNCH_TIMEOUT), edge);
            }
            State::PunchWait {
                at,
                deadline,
                burst,
            } if now >= *at => {
                let (deadline, burst) = (*deadline, *burst);
                self.punch_dial(now, deadline, burst);
            }
            State::RelayAsking { deadline } if now >= *deadline => {
                self.last = Some((Strategy::Relay, Failure::Timeout(RELAY_GRANT_TIMEOUT)));
                self.next_relay(edge);
            }
            State::RelayWait { at } if now >= *at => self.lookup_waited(now, edge),
            _ => {}
        }
    }

    /// The answer to [`Command::Dial`]: `Ok` once an edge to the target is up from it; `edge`
    /// is the edge the driver holds to the target now.
    pub fn handle_dialed(&mut self, now: Time, result: Result<(), D>, edge: EdgeNow) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Known => match result {
                Ok(()) => self.connected(Path::Direct, How::Dialed),
                // Known addresses are a shortcut, not a step: on to the rendezvous.
                Err(_) => self.start_rendezvous(now),
            },
            State::Direct => match result {
                Ok(()) => self.connected(Path::Direct, How::Dialed),
                Err(e) => {
                    self.state = State::Direct;
                    self.strategy_failed(now, Failure::Driver(e), edge);
                }
            },
            State::PunchDialing { deadline } => match result {
                Ok(()) => self.connected(Path::Punched, How::Dialed),
                Err(e) => {
                    let left = deadline.since(now);
                    if edge == EdgeNow::Direct {
                        // The peer's dial through the hole won: as good (a relayed edge being
                        // upgraded does not count).
                        self.connected(Path::Punched, How::Crossed);
                    } else if left <= PUNCH_INTERVAL * 2 {
                        self.state = State::PunchDialing { deadline };
                        self.strategy_failed(now, Failure::Driver(e), edge);
                    } else {
                        // Its first datagrams may still be on their way: again shortly.
                        self.state = State::PunchWait {
                            at: now.after(PUNCH_INTERVAL),
                            deadline,
                            burst: false,
                        };
                    }
                }
            },
            State::RelayDialing { addr } => match result {
                Ok(()) => {
                    let relay = self.relay.take();
                    match relay {
                        Some(relay) => self.connected(Path::Relayed, How::Relay { relay, addr }),
                        None => self.connected(Path::Relayed, How::Dialed),
                    }
                }
                Err(e) => {
                    self.last = Some((Strategy::Relay, Failure::Driver(e)));
                    self.next_relay(edge);
                }
            },
            other => self.state = other,
        }
    }

    /// The rendezvous answered with the target's addresses.
    pub fn handle_rendezvous(&mut self, now: Time, addrs: Vec<Addr>) {
        if !matches!(self.state, State::Rendezvous(_)) {
            return;
        }
        self.hints = addrs;
        self.state = State::Direct;
        if self.hints.is_empty() {
            self.strategy_failed(now, Failure::NoAddresses, EdgeNow::None);
        } else {
            self.commands.push_back(Command::Dial {
                addrs: self.hints.clone(),
                timeout: self.config.direct_dial_timeout,
                via: None,
            });
        }
    }

    /// The rendezvous could not start (or its answer can never come).
    pub fn handle_rendezvous_refused(&mut self, error: Failure<D>) {
        if matches!(self.state, State::Rendezvous(_)) {
            self.fail(Step::Rendezvous, error);
        }
    }

    /// The punch request could not start.
    pub fn handle_punch_refused(&mut self, now: Time, error: Failure<D>, edge: EdgeNow) {
        if matches!(self.state, State::PunchAsked { .. }) {
            self.strategy_failed(now, error, edge);
        }
    }

    /// The target answered our Connect: `theirs` are the addresses it offered, `timed` whether
    /// it holds its punch for our Sync, and `candidates` what we may punch toward (the
    /// driver's filter over the rendezvous addresses and `theirs`).
    pub fn handle_punch_answer(
        &mut self,
        now: Time,
        theirs: &[Addr],
        timed: bool,
        candidates: Vec<Addr>,
        edge: EdgeNow,
    ) {
        let State::PunchAsked { started, deadline } = self.state else {
            return;
        };
        // A peer that offers nothing beyond what the direct dial already tried has no mapping
        // to punch toward (behind a symmetric NAT, say): on to a relay now.
        if candidates.is_empty() || theirs.iter().all(|a| self.hints.contains(a)) {
            self.strategy_failed(now, Failure::NoAddresses, edge);
            return;
        }
        self.hints = candidates;
        if timed {
            // The peer holds its punch until our Sync reaches it, about half a round trip
            // from now: we punch then too.
            self.commands.push_back(Command::PunchSync);
            self.state = State::PunchWait {
                at: now.after(now.since(started) / 2),
                deadline,
                burst: true,
            };
        } else {
            self.punch_dial(now, deadline, true);
        }
    }

    /// The relays to ask, best first (answer to [`Command::FindRelays`]).
    pub fn handle_relays(&mut self, _now: Time, relays: Vec<RelayCandidate>, edge: EdgeNow) {
        if !matches!(self.state, State::Relays) {
            return;
        }
        self.last = Some((Strategy::Relay, Failure::NoRelay));
        self.relays = relays.into_iter().take(RELAYS_TRIED).collect();
        self.next_relay(edge);
    }

    /// The answer to [`Command::LinkRelay`]: `Ok` once the relay is an edge.
    pub fn handle_relay_linked(&mut self, now: Time, result: Result<(), D>, edge: EdgeNow) {
        if !matches!(self.state, State::RelayLinking) {
            return;
        }
        if self.crossed(edge) {
            return;
        }
        match (result, self.relay) {
            (Ok(()), Some(relay)) => {
                self.state = State::RelayAsking {
                    deadline: now.after(RELAY_GRANT_TIMEOUT),
                };
                self.commands.push_back(Command::AskRelay { relay });
            }
            (Ok(()), None) => self.next_relay(edge),
            (Err(e), _) => {
                self.last = Some((Strategy::Relay, Failure::Driver(e)));
                self.next_relay(edge);
            }
        }
    }

    /// The relay asked last answered: its caller-side address, or why not.
    pub fn handle_relay_answer(
        &mut self,
        _now: Time,
        answer: Result<Addr, Failure<D>>,
        edge: EdgeNow,
    ) {
        if !matches!(self.state, State::RelayAsking { .. }) {
            return;
        }
        match answer {
            Ok(addr) => {
                self.state = State::RelayDialing { addr: addr.clone() };
                self.commands.push_back(Command::Dial {
                    addrs: vec![addr],
                    timeout: RELAY_DIAL_TIMEOUT,
                    via: self.relay,
                });
            }
            Err(e) => {
                self.last = Some((Strategy::Relay, e));
                self.next_relay(edge);
            }
        }
    }

    fn start_rendezvous(&mut self, now: Time) {
        self.state = State::Rendezvous(RendezvousClock::new(now, self.config.rendezvous_timeout));
        self.commands.push_back(Command::StartRendezvous);
    }

    /// Punch now and dial the candidates with what is left of the deadline.
    fn punch_dial(&mut self, now: Time, deadline: Time, burst: bool) {
        if burst {
            self.commands.push_back(Command::PunchBurst {
                addrs: self.hints.clone(),
            });
        }
        self.state = State::PunchDialing { deadline };
        self.commands.push_back(Command::Dial {
            addrs: self.hints.clone(),
            timeout: deadline.since(now),
            via: None,
        });
    }

    /// The current strategy failed with `error`: on to the next, unless the target's own dial
    /// brought the edge up meanwhile.
    fn strategy_failed(&mut self, now: Time, error: Failure<D>, edge: EdgeNow) {
        let current = match self.state {
            State::Direct => Strategy::Direct,
            State::PunchAsked { .. } | State::PunchWait { .. } | State::PunchDialing { .. } => {
                Strategy::Punch
            }
            _ => Strategy::Relay,
        };
        self.last = Some((current, error));
        if self.crossed(edge) {
            return;
        }
        match current {
            Strategy::Direct => {
                if self.relay_fallback {
                    // The relays near the target, learned while the punch runs.
                    self.lookup_at = Some(now);
                    self.commands.push_back(Command::LookupRelays);
                }
                if self.symmetric {
                    self.last = Some((Strategy::Punch, Failure::SymmetricNat));
                    if self.relay_fallback {
                        self.find_relays(now);
                    } else {
                        self.give_up();
                    }
                } else {
                    self.state = State::PunchAsked {
                        started: now,
                        deadline: now.after(PUNCH_TIMEOUT),
                    };
                    self.commands.push_back(Command::StartPunch);
                }
            }
            Strategy::Punch if self.relay_fallback => self.find_relays(now),
            Strategy::Punch => self.give_up(),
            Strategy::Relay => self.give_up(),
        }
    }

    /// Ends the cascade as connected if the target's own dial brought an edge up.
    fn crossed(&mut self, edge: EdgeNow) -> bool {
        let path = match edge {
            EdgeNow::None => return false,
            // An upgrade is answered only by its own punch (or a dial through its hole, taken
            // in `handle_dialed`): the relayed edge it means to replace is no answer.
            _ if !self.relay_fallback => return false,
            EdgeNow::Direct => Path::Direct,
            EdgeNow::Relayed => Path::Relayed,
        };
        self.connected(path, How::Crossed);
        true
    }

    /// The relay lookup has had its time: on to the relays, unless an edge crossed meanwhile.
    fn lookup_waited(&mut self, now: Time, edge: EdgeNow) {
        if !self.crossed(edge) {
            self.find_relays(now);
        }
    }

    /// On to the relays, once the lookup has had its time.
    fn find_relays(&mut self, now: Time) {
        let at = self.lookup_at.map_or(now, |t| t.after(RELAY_LOOKUP_WAIT));
        if now < at {
            self.state = State::RelayWait { at };
            return;
        }
        self.state = State::Relays;
        self.commands
            .push_back(Command::FindRelays { n: RELAYS_TRIED });
    }

    fn next_relay(&mut self, edge: EdgeNow) {
        if self.crossed(edge) {
            return;
        }
        match self.relays.pop_front() {
            Some(RelayCandidate { relay, addrs }) => {
                self.relay = Some(relay);
                self.state = State::RelayLinking;
                self.commands.push_back(Command::LinkRelay {
                    relay,
                    addrs,
                    timeout: RELAY_LINK_TIMEOUT,
                });
            }
            None => self.give_up(),
        }
    }

    fn give_up(&mut self) {
        let (strategy, error) = self
            .last
            .take()
            .unwrap_or((Strategy::Direct, Failure::NoAddresses));
        self.fail(Step::Strategy(strategy), error);
    }

    fn fail(&mut self, step: Step, error: Failure<D>) {
        self.state = State::Done;
        self.commands.clear();
        self.outcome = Some(Outcome::Failed { step, error });
    }

    fn connected(&mut self, path: Path, how: How) {
        self.state = State::Done;
        self.commands.clear();
        self.outcome = Some(Outcome::Connected { path, how });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type C = Cascade<&'static str>;

    const CONFIG: CascadeConfig = CascadeConfig {
        direct_dial_timeout: DIRECT_DIAL_TIMEOUT,
        rendezvous_timeout: Duration::from_secs(10),
    };

    fn ms(n: u64) -> Time {
        Time(n * 1_000_000)
    }

    fn addr(s: &str) -> Addr {
        Addr::new("mem", s)
    }

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn drain(c: &mut C) -> Vec<Command> {
        std::iter::from_fn(|| c.poll_command()).collect()
    }

    fn dial(addrs: &[&str], timeout: Duration) -> Command {
        Command::Dial {
            addrs: addrs.iter().map(|a| addr(a)).collect(),
            timeout,
            via: None,
        }
    }

    fn relay_dial(granted: &str, relay: u8) -> Command {
        Command::Dial {
            addrs: vec![addr(granted)],
            timeout: RELAY_DIAL_TIMEOUT,
            via: Some(id(relay)),
        }
    }

    /// A relay that is an edge already.
    fn edge_relay(n: u8) -> RelayCandidate {
        RelayCandidate {
            relay: id(n),
            addrs: vec![],
        }
    }

    fn link(n: u8, addrs: &[&str]) -> Command {
        Command::LinkRelay {
            relay: id(n),
            addrs: addrs.iter().map(|a| addr(a)).collect(),
            timeout: RELAY_LINK_TIMEOUT,
        }
    }

    /// A symmetric cascade past its relay lookup's wait (the lookup went out at 600 ms).
    fn at_relays() -> C {
        let mut c = at_punch(true);
        assert_eq!(drain(&mut c), [Command::LookupRelays]);
        assert_eq!(c.poll_timeout(), Some(ms(1100)));
        c.handle_timeout(ms(1100), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
        c
    }

    /// A cascade past the rendezvous at 100 ms, whose direct dial failed at 600 ms.
    fn at_punch(symmetric: bool) -> C {
        let mut c = C::new(ms(0), vec![], symmetric, CONFIG);
        assert_eq!(drain(&mut c), [Command::StartRendezvous]);
        c.handle_rendezvous(ms(100), vec![addr("a")]);
        assert_eq!(drain(&mut c), [dial(&["a"], DIRECT_DIAL_TIMEOUT)]);
        c.handle_dialed(ms(600), Err("refused"), EdgeNow::None);
        c
    }

    #[test]
    fn a_known_address_that_answers_needs_no_rendezvous() {
        let mut c = C::new(ms(0), vec![addr("k")], false, CONFIG);
        assert_eq!(drain(&mut c), [dial(&["k"], DIRECT_DIAL_TIMEOUT)]);
        assert_eq!(c.poll_timeout(), None, "a dial has its own limit");
        c.handle_dialed(ms(20), Ok(()), EdgeNow::Direct);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Direct,
                how: How::Dialed
            })
        );
    }

    #[test]
    fn a_rendezvous_is_resent_with_backoff_then_expires() {
        let mut c = C::new(ms(0), vec![addr("stale")], false, CONFIG);
        drain(&mut c);
        // A stale known address is no step of its own: on to the rendezvous.
        c.handle_dialed(ms(500), Err("timeout"), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::StartRendezvous]);
        let mut resent = Vec::new();
        while c.outcome().is_none() {
            let t = c.poll_timeout().unwrap();
            c.handle_timeout(t, EdgeNow::None);
            if drain(&mut c) == [Command::ResendRendezvous] {
                resent.push(t.0 / 1_000_000);
            }
        }
        // 500 ms after the start, then 1 s, 2 s, 4 s after each resend; none at the deadline.
        assert_eq!(resent, [1000, 2000, 4000, 8000]);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Failed {
                step: Step::Rendezvous,
                error: Failure::Timeout(Duration::from_secs(10))
            })
        );
        // An early or late answer changes nothing now.
        c.handle_rendezvous(ms(10_600), vec![addr("a")]);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_failed_direct_dial_punches_and_a_silent_punch_goes_to_the_relays() {
        let mut c = at_punch(false);
        assert_eq!(
            drain(&mut c),
            [Command::LookupRelays, Command::StartPunch],
            "the relays near the target are looked up while the punch runs"
        );
        assert_eq!(c.poll_timeout(), Some(ms(600).after(PUNCH_TIMEOUT)));
        c.handle_timeout(ms(3000), EdgeNow::None);
        assert!(drain(&mut c).is_empty(), "early: nothing");
        c.handle_timeout(ms(5600), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
        let four = (1..=4).map(edge_relay).collect();
        c.handle_relays(ms(5600), four, EdgeNow::None);
        assert_eq!(drain(&mut c), [link(1, &[])]);
        c.handle_relay_linked(ms(5600), Ok(()), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(1) }]);
        assert_eq!(c.poll_timeout(), Some(ms(7600)));
        // The first relay never answers: the second is asked after the grant timeout.
        c.handle_timeout(ms(7600), EdgeNow::None);
        assert_eq!(drain(&mut c), [link(2, &[])]);
        c.handle_relay_linked(ms(7600), Ok(()), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
        c.handle_relay_answer(ms(7700), Ok(addr("via2")), EdgeNow::None);
        assert_eq!(drain(&mut c), [relay_dial("via2", 2)]);
        c.handle_dialed(ms(7800), Ok(()), EdgeNow::Relayed);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Relayed,
                how: How::Relay {
                    relay: id(2),
                    addr: addr("via2")
                }
            })
        );
    }

    #[test]
    fn a_timed_punch_waits_half_the_round_trip_then_retries_until_a_crossed_edge() {
        let mut c = at_punch(false);
        drain(&mut c);
        // The answer comes 200 ms after the Connect: we punch 100 ms after our Sync.
        c.handle_punch_answer(
            ms(800),
            &[addr("b")],
            true,
            vec![addr("a"), addr("b")],
            EdgeNow::None,
        );
        assert_eq!(drain(&mut c), [Command::PunchSync]);
        assert_eq!(c.poll_timeout(), Some(ms(900)));
        c.handle_timeout(ms(900), EdgeNow::None);
        let deadline = ms(600).after(PUNCH_TIMEOUT);
        assert_eq!(
            drain(&mut c),
            [
                Command::PunchBurst {
                    addrs: vec![addr("a"), addr("b")]
                },
                dial(&["a", "b"], deadline.since(ms(900)))
            ]
        );
        // Refused at once (the peer's datagrams are not there yet): again a punch interval
        // later, without another burst.
        c.handle_dialed(ms(910), Err("refused"), EdgeNow::None);
        assert_eq!(c.poll_timeout(), Some(ms(910).after(PUNCH_INTERVAL)));
        c.handle_timeout(ms(960), EdgeNow::None);
        assert_eq!(drain(&mut c), [dial(&["a", "b"], deadline.since(ms(960)))]);
        // Meanwhile the peer's dial through the hole won.
        c.handle_dialed(ms(970), Err("refused"), EdgeNow::Direct);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Punched,
                how: How::Crossed
            })
        );
    }

    #[test]
    fn a_punch_dial_that_fails_at_the_deadline_ends_the_punch() {
        let mut c = at_punch(false);
        drain(&mut c);
        c.handle_punch_answer(ms(700), &[addr("b")], false, vec![addr("b")], EdgeNow::None);
        assert_eq!(drain(&mut c).len(), 2, "a burst and a dial");
        c.handle_dialed(ms(5550), Err("timeout"), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
        assert_eq!(c.poll_timeout(), None);
        c.handle_relays(ms(5550), vec![], EdgeNow::None);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Failed {
                step: Step::Strategy(Strategy::Relay),
                error: Failure::NoRelay
            })
        );
    }

    #[test]
    fn a_punch_answer_with_nothing_new_skips_to_the_relays() {
        let mut c = at_punch(false);
        drain(&mut c);
        // Only the address the direct dial already tried: no mapping to punch toward. The
        // relays wait for the lookup's answers (sent at 600 ms) first.
        c.handle_punch_answer(ms(700), &[addr("a")], false, vec![addr("a")], EdgeNow::None);
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), Some(ms(1100)));
        c.handle_timeout(ms(1000), EdgeNow::None);
        assert!(drain(&mut c).is_empty(), "early: nothing");
        c.handle_timeout(ms(1100), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
    }

    #[test]
    fn a_relay_that_is_not_an_edge_is_dialed_first_and_a_failed_link_moves_on() {
        let mut c = at_relays();
        let far = RelayCandidate {
            relay: id(1),
            addrs: vec![addr("r1")],
        };
        let near = RelayCandidate {
            relay: id(2),
            addrs: vec![addr("r2")],
        };
        c.handle_relays(ms(1100), vec![far, near], EdgeNow::None);
        assert_eq!(drain(&mut c), [link(1, &["r1"])]);
        assert_eq!(c.poll_timeout(), None, "the link dial has its own limit");
        c.handle_relay_linked(ms(3100), Err("timeout"), EdgeNow::None);
        assert_eq!(drain(&mut c), [link(2, &["r2"])]);
        // A stale link answer, or a relay answer while linking, is no answer.
        c.handle_relay_answer(ms(3150), Ok(addr("bogus")), EdgeNow::None);
        assert!(drain(&mut c).is_empty());
        c.handle_relay_linked(ms(3200), Ok(()), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
        c.handle_relay_linked(ms(3250), Ok(()), EdgeNow::None);
        assert!(drain(&mut c).is_empty(), "linked once");
        c.handle_relay_answer(ms(3300), Ok(addr("via2")), EdgeNow::None);
        assert_eq!(drain(&mut c), [relay_dial("via2", 2)]);
        c.handle_dialed(ms(3400), Err("refused"), EdgeNow::None);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Failed {
                step: Step::Strategy(Strategy::Relay),
                error: Failure::Driver("refused")
            })
        );
    }

    #[test]
    fn an_edge_the_target_opened_during_the_lookup_wait_ends_it() {
        let mut c = at_punch(true);
        drain(&mut c);
        c.handle_timeout(ms(1100), EdgeNow::Relayed);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Relayed,
                how: How::Crossed
            }),
            "a crossed relayed edge is reported as relayed"
        );
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn behind_a_symmetric_nat_the_punch_is_skipped() {
        let mut c = at_relays();
        c.handle_relays(ms(1100), vec![edge_relay(1)], EdgeNow::None);
        assert_eq!(drain(&mut c), [link(1, &[])]);
        c.handle_relay_linked(ms(1100), Ok(()), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(1) }]);
        c.handle_relay_answer(ms(1200), Err(Failure::Busy), EdgeNow::None);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Failed {
                step: Step::Strategy(Strategy::Relay),
                error: Failure::Busy
            })
        );
    }

    #[test]
    fn every_relay_failing_reports_the_last_failure_unless_an_edge_crossed() {
        let mut c = at_relays();
        c.handle_relays(ms(1100), vec![edge_relay(1), edge_relay(2)], EdgeNow::None);
        drain(&mut c);
        c.handle_relay_linked(ms(1100), Ok(()), EdgeNow::None);
        drain(&mut c);
        c.handle_relay_answer(ms(1200), Ok(addr("via1")), EdgeNow::None);
        drain(&mut c);
        c.handle_dialed(ms(1300), Err("refused"), EdgeNow::None);
        assert_eq!(drain(&mut c), [link(2, &[])]);
        c.handle_relay_linked(ms(1300), Ok(()), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
        c.handle_relay_answer(
            ms(900),
            Err(Failure::Timeout(RELAY_GRANT_TIMEOUT)),
            EdgeNow::Relayed,
        );
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Relayed,
                how: How::Crossed
            })
        );
        assert!(drain(&mut c).is_empty(), "nothing after the end");
    }

    #[test]
    fn an_upgrade_is_a_punch_and_nothing_after_it() {
        let mut c = C::upgrade(ms(0), false, CONFIG);
        assert_eq!(drain(&mut c), [Command::StartPunch]);
        c.handle_punch_answer(
            ms(100),
            &[addr("b")],
            false,
            vec![addr("b")],
            EdgeNow::Relayed,
        );
        drain(&mut c);
        c.handle_dialed(ms(5000), Err("timeout"), EdgeNow::Relayed);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Failed {
                step: Step::Strategy(Strategy::Punch),
                error: Failure::Driver("timeout")
            }),
            "no relay asked, and the relayed edge it was to replace is no crossed dial"
        );
        let mut c = C::upgrade(ms(0), true, CONFIG);
        assert!(drain(&mut c).is_empty());
        assert!(matches!(
            c.outcome(),
            Some(Outcome::Failed {
                error: Failure::SymmetricNat,
                ..
            })
        ));
    }

    #[test]
    fn a_nat_found_symmetric_during_the_rendezvous_skips_the_punch() {
        let mut c = C::new(ms(0), vec![], false, CONFIG);
        drain(&mut c);
        c.handle_rendezvous(ms(100), vec![addr("a")]);
        drain(&mut c);
        c.set_symmetric(true);
        c.handle_dialed(ms(600), Err("refused"), EdgeNow::None);
        assert_eq!(drain(&mut c), [Command::LookupRelays], "no punch");
        assert_eq!(c.poll_timeout(), Some(ms(1100)));
    }

    #[test]
    fn a_direct_dial_that_loses_to_the_targets_own_dial_is_connected() {
        let mut c = C::new(ms(0), vec![], false, CONFIG);
        drain(&mut c);
        c.handle_rendezvous(ms(100), vec![addr("a")]);
        drain(&mut c);
        c.handle_dialed(ms(150), Err("duplicate"), EdgeNow::Direct);
        assert_eq!(
            c.outcome(),
            Some(&Outcome::Connected {
                path: Path::Direct,
                how: How::Crossed
            })
        );
    }
}
