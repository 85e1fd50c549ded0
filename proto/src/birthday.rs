//! Birthday punching between a symmetric NAT and a cone (or public) one, as decisions: the
//! roles, the trust rule, the limits, and one initiator's attempt as a state machine
//! ([`Attempt`]). The driver carries the exchange and plays the roles (sockets, probes).
//!
//! Once a connect ends relayed, a hard ↔ easy pair tries it in the background; the direct
//! edge it opens replaces the relayed one. The exchange is a Connect/ConnectAck with
//! [`nodenet_nat::FLAG_BIRTHDAY`]: each side says whether it is hard and where it is (an easy
//! side's confirmed mapping, a hard side's public host). The hard side opens many sockets
//! toward the easy side's mapping; the easy side probes random ports on the hard side's host
//! until one lands on a mapping those sockets opened, and the hard side dials back from it.
//!
//! Neither side aims a packet at a host on the peer's say-so alone: relays *this* side chose
//! must agree where they see the peer ([`part`] takes their word as `attested`), and the
//! peer's claim must name that host. Every attempt, on both sides, passes [`Limits`].

use std::collections::VecDeque;
use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_nat::NatType;
pub use nodenet_nat::birthday::{BirthdayConfig, Limits, Refusal};
use nodenet_nat::birthday::{Plan, plan, verified_host};
use nodenet_routing::Time;
use nodenet_wire::Addr;

/// How long the initiator waits for the peer's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What one side does in an agreed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Open the sockets toward the easy side's mapping and dial it from the one a probe
    /// reaches.
    Hard {
        /// The easy side's mapping.
        easy: Addr,
    },
    /// Probe the hard side's public host until its dial arrives.
    Easy {
        /// The hard side's host (no port).
        host: String,
    },
}

/// What the plan and the relays' word make of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Our role in a birthday punch.
    Play(Role),
    /// Not a birthday pair (or the peer's message lacks what its role needs).
    NotBirthday,
    /// A birthday pair, but the relays did not attest the host we would aim at.
    Unverified,
}

/// Our side of the plan with a peer (whose hardness its message told: it names a `public`
/// host when hard, its mapping in `addrs` when easy): the host we would aim at must be the
/// one our relays `attested`.
pub fn part(ours: NatType, addrs: &[Addr], public: Option<&Addr>, attested: Option<&Addr>) -> Part {
    let attested = attested.map(|a| a.endpoint.as_str());
    let (hard, claimed) = match plan(ours, public.is_some()) {
        Plan::Birthday { hard: true } => (true, addrs.first()),
        Plan::Birthday { hard: false } => (false, public),
        Plan::Punch | Plan::Relay => return Part::NotBirthday,
    };
    let Some(claimed) = claimed else {
        return Part::NotBirthday;
    };
    let Some(host) = verified_host(attested, &claimed.endpoint) else {
        return Part::Unverified;
    };
    Part::Play(if hard {
        Role::Hard {
            easy: claimed.clone(),
        }
    } else {
        Role::Easy {
            host: host.to_owned(),
        }
    })
}

/// Whether a peer's request is worth asking relays about: a birthday pair by the plan.
pub fn worth_attesting(ours: NatType, addrs: &[Addr], public: Option<&Addr>) -> bool {
    part(ours, addrs, public, None) != Part::NotBirthday
}

/// The probes a role reserves from the budget.
pub fn probes_of(role: &Role, config: &BirthdayConfig) -> u32 {
    match role {
        Role::Hard { .. } => 0,
        Role::Easy { .. } => config.max_probes,
    }
}

/// How a responder answers a birthday request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Agreed: play this role (the limits have taken the attempt).
    Play(Role),
    /// A birthday pair, but our relays did not attest the host we would aim at.
    Unverified,
    /// Not a birthday pair, or the limits refuse.
    Refused,
}

/// A peer asks us for a birthday punch at `now`: its mapping (`addrs`, an easy peer) or its
/// public host (`public`, a hard one), and what our own relays `attested` of its host.
pub fn respond(
    now: Time,
    ours: NatType,
    peer: NodeId,
    addrs: &[Addr],
    public: Option<&Addr>,
    attested: Option<&Addr>,
    limits: &mut Limits,
) -> Verdict {
    match part(ours, addrs, public, attested) {
        Part::Play(role) => {
            let probes = probes_of(&role, limits.config());
            match limits.start(peer, since_origin(now), probes) {
                Ok(()) => Verdict::Play(role),
                Err(_) => Verdict::Refused,
            }
        }
        Part::Unverified => Verdict::Unverified,
        Part::NotBirthday => Verdict::Refused,
    }
}

/// Books a responder's played role in the limits: `ok` when the edge came up, `sent` probes
/// out of what the role reserved (the rest goes back to the budget).
pub fn played(limits: &mut Limits, now: Time, peer: NodeId, role: &Role, sent: u32, ok: bool) {
    let reserved = probes_of(role, limits.config());
    limits.refund(reserved.saturating_sub(sent));
    limits.finish(peer, since_origin(now), ok);
}

/// A responder agreed to `role` but its answer could not be sent: nothing was played.
pub fn unplayed(limits: &mut Limits, role: &Role) {
    let reserved = probes_of(role, limits.config());
    limits.abandon(reserved);
}

/// [`Limits`] keeps time as a duration since a fixed start: ours is the clock's origin.
fn since_origin(now: Time) -> Duration {
    Duration::from_nanos(now.0)
}

/// What an [`Attempt`] needs done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ask relays of our choosing where they see the peer. Answer:
    /// [`Attempt::handle_attested`].
    Attest,
    /// Send the birthday Connect (we are the hard side if `hard`). Answer:
    /// [`Attempt::handle_answer`], or [`Attempt::handle_unsent`].
    Ask {
        /// Our role's hardness.
        hard: bool,
    },
    /// Play `role` until the edge is up or the attempt's timeout passes. Answer:
    /// [`Attempt::handle_played`].
    Play(Role),
}

/// The peer's answer to the birthday Connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// It agreed ([`nodenet_nat::FLAG_BIRTHDAY`] set).
    pub agreed: bool,
    /// Its mapping, if easy.
    pub addrs: Vec<Addr>,
    /// Its public host, if hard.
    pub public: Option<Addr>,
}

impl Answer {
    /// The answer a ConnectAck with `flags`, `addrs` and `public` gives.
    pub fn from_ack(flags: u8, addrs: Vec<Addr>, public: Option<Addr>) -> Self {
        Self {
            agreed: flags & nodenet_nat::FLAG_BIRTHDAY != 0,
            addrs,
            public,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A direct edge is up: it replaces the relayed one.
    Punched,
    /// Played, and no edge came up in time (the peer backs off).
    Failed,
    /// No two relays of ours agreed on the peer's host, or the peer named another: nothing
    /// was aimed at anyone.
    Unverified,
    /// The limits refused the attempt.
    Refused(Refusal),
    /// The peer declined or did not answer, or the request could not be sent: nothing was
    /// played.
    Declined,
    /// We do not know our own NAT type, or the pair is not a birthday pair.
    NotBirthday,
}

#[derive(Debug)]
enum State {
    Attesting,
    Asked { deadline: Time, attested: Addr },
    Playing,
    Done,
}

/// One birthday attempt of ours, the initiator's side: attest, ask, play. The limits are
/// the node's, passed to every call that may start or end the attempt.
#[derive(Debug)]
pub struct Attempt {
    peer: NodeId,
    ours: NatType,
    probes: u32,
    state: State,
    commands: VecDeque<Command>,
    outcome: Option<Outcome>,
}

impl Attempt {
    /// An attempt with `peer` (we hold a relayed edge to it), our NAT being `ours`; the
    /// easy side reserves `config.max_probes`.
    pub fn new(ours: NatType, peer: NodeId, config: &BirthdayConfig) -> Self {
        let hard = ours == NatType::Symmetric;
        let mut a = Self {
            peer,
            ours,
            probes: if hard { 0 } else { config.max_probes },
            state: State::Attesting,
            commands: VecDeque::new(),
            outcome: None,
        };
        if ours == NatType::Unknown {
            a.end(Outcome::NotBirthday);
        } else {
            a.commands.push_back(Command::Attest);
        }
        a
    }

    /// The next thing to do.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Attempt::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.state {
            State::Asked { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// The result, once there is one.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Our relays' agreed word on the peer's host (`None`: none, or they disagree).
    pub fn handle_attested(&mut self, now: Time, attested: Option<Addr>, limits: &mut Limits) {
        if !matches!(self.state, State::Attesting) {
            return;
        }
        let Some(attested) = attested else {
            self.end(Outcome::Unverified);
            return;
        };
        if let Err(r) = limits.start(self.peer, since_origin(now), self.probes) {
            self.end(Outcome::Refused(r));
            return;
        }
        self.state = State::Asked {
            deadline: now.after(ANSWER_TIMEOUT),
            attested,
        };
        self.commands.push_back(Command::Ask {
            hard: self.ours == NatType::Symmetric,
        });
    }

    /// The request could not be sent.
    pub fn handle_unsent(&mut self, limits: &mut Limits) {
        if matches!(self.state, State::Asked { .. }) {
            limits.abandon(self.probes);
            self.end(Outcome::Declined);
        }
    }

    /// The peer answered.
    pub fn handle_answer(&mut self, now: Time, answer: Answer, limits: &mut Limits) {
        let State::Asked { attested, .. } = &self.state else {
            return;
        };
        if !answer.agreed {
            limits.abandon(self.probes);
            self.end(Outcome::Declined);
            return;
        }
        match part(
            self.ours,
            &answer.addrs,
            answer.public.as_ref(),
            Some(attested),
        ) {
            Part::Play(role) => {
                self.state = State::Playing;
                self.commands.push_back(Command::Play(role));
            }
            // The peer names a host our relays did not: it backs off like a failure, but
            // nothing was sent, so the probes come back.
            Part::Unverified => {
                limits.refund(self.probes);
                limits.finish(self.peer, since_origin(now), false);
                self.end(Outcome::Unverified);
            }
            Part::NotBirthday => {
                limits.abandon(self.probes);
                self.end(Outcome::Declined);
            }
        }
    }

    /// Time passed: an unanswered request ends the attempt (nothing was played).
    pub fn handle_timeout(&mut self, now: Time, limits: &mut Limits) {
        if matches!(&self.state, State::Asked { deadline, .. } if now >= *deadline) {
            limits.abandon(self.probes);
            self.end(Outcome::Declined);
        }
    }

    /// Our role is played: `ok` when the direct edge came up; `sent` probes went out (the
    /// rest of what the attempt reserved goes back to the budget).
    pub fn handle_played(&mut self, now: Time, ok: bool, sent: u32, limits: &mut Limits) {
        if !matches!(self.state, State::Playing) {
            return;
        }
        limits.refund(self.probes.saturating_sub(sent));
        limits.finish(self.peer, since_origin(now), ok);
        self.end(if ok {
            Outcome::Punched
        } else {
            Outcome::Failed
        });
    }

    /// The attempt is dropped before its outcome (its task was aborted, or panicked): what
    /// it booked goes back. A request in flight is abandoned; a role being played counts as
    /// failed with every reserved probe spent (we cannot know how many went out). Without a
    /// booking (not started, or ended), does nothing.
    pub fn abort(&mut self, now: Time, limits: &mut Limits) {
        match self.state {
            State::Asked { .. } => limits.abandon(self.probes),
            State::Playing => limits.finish(self.peer, since_origin(now), false),
            State::Attesting | State::Done => return,
        }
        self.end(Outcome::Declined);
    }

    fn end(&mut self, outcome: Outcome) {
        self.state = State::Done;
        self.commands.clear();
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests;
