//! The cascade itself: one connect attempt's states and transitions.

use std::collections::VecDeque;

use super::*;

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
