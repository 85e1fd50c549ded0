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
mod tests {
    use super::*;

    fn addr(endpoint: &str) -> Addr {
        Addr::new("quic", endpoint)
    }

    fn role(ours: NatType, addrs: &[Addr], public: Option<&str>, attested: Option<&str>) -> Part {
        let public = public.map(addr);
        let attested = attested.map(addr);
        part(ours, addrs, public.as_ref(), attested.as_ref())
    }

    fn ms(n: u64) -> Time {
        Time(n * 1_000_000)
    }

    fn peer() -> NodeId {
        NodeId::from_bytes([7; 32])
    }

    fn drain(a: &mut Attempt) -> Vec<Command> {
        std::iter::from_fn(|| a.poll_command()).collect()
    }

    #[test]
    fn a_side_aims_only_at_the_host_its_relays_attested() {
        // Easy side: the hard peer's claimed host, when the relays saw it there.
        let ok = role(
            NatType::Cone,
            &[],
            Some("203.0.113.7:0"),
            Some("203.0.113.7:0"),
        );
        assert_eq!(
            ok,
            Part::Play(Role::Easy {
                host: "203.0.113.7".into()
            })
        );
        // A claim the relays contradict, or no relay's word: nothing to aim at.
        for attested in [Some("198.51.100.9:0"), None] {
            let p = role(NatType::Cone, &[], Some("203.0.113.7:0"), attested);
            assert_eq!(p, Part::Unverified);
        }
        // Hard side: the easy peer's mapping, under the same rule.
        let mapping = [addr("198.51.100.9:40001")];
        let ok = role(NatType::Symmetric, &mapping, None, Some("198.51.100.9:0"));
        assert_eq!(
            ok,
            Part::Play(Role::Hard {
                easy: mapping[0].clone()
            })
        );
        let p = role(NatType::Symmetric, &mapping, None, Some("203.0.113.7:0"));
        assert_eq!(p, Part::Unverified);
        // Not a birthday pair (or nothing named): the relays' word does not matter.
        for p in [
            role(NatType::Cone, &mapping, None, Some("198.51.100.9:0")),
            role(NatType::Symmetric, &[], Some("203.0.113.7:0"), None),
            role(NatType::Symmetric, &[], None, Some("198.51.100.9:0")),
        ] {
            assert_eq!(p, Part::NotBirthday);
        }
    }

    #[test]
    fn an_attempt_attests_asks_plays_and_books_the_result() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        let mut a = Attempt::new(NatType::Cone, peer(), &config);
        assert_eq!(drain(&mut a), [Command::Attest]);
        a.handle_attested(ms(100), Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(drain(&mut a), [Command::Ask { hard: false }]);
        assert_eq!(a.poll_timeout(), Some(ms(100).after(ANSWER_TIMEOUT)));
        // Our own limits hold the attempt: a second one is refused meanwhile.
        let mut other = Attempt::new(NatType::Cone, NodeId::from_bytes([8; 32]), &config);
        other.handle_attested(ms(100), Some(addr("198.51.100.1:0")), &mut limits);
        assert_eq!(other.outcome(), Some(Outcome::Refused(Refusal::Busy)));
        let answer = Answer {
            agreed: true,
            addrs: vec![],
            public: Some(addr("203.0.113.7:0")),
        };
        a.handle_answer(ms(300), answer, &mut limits);
        assert_eq!(
            drain(&mut a),
            [Command::Play(Role::Easy {
                host: "203.0.113.7".into()
            })]
        );
        assert_eq!(a.poll_timeout(), None, "playing has the role's own timeout");
        a.handle_played(ms(3000), false, 300, &mut limits);
        assert_eq!(a.outcome(), Some(Outcome::Failed));
        // The failure backs the peer off.
        let mut again = Attempt::new(NatType::Cone, peer(), &config);
        let later = ms(3000).after(config.min_interval);
        again.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(again.outcome(), Some(Outcome::Refused(Refusal::Backoff)));
    }

    #[test]
    fn a_peer_naming_another_host_than_our_relays_is_not_played() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        let mut a = Attempt::new(NatType::Symmetric, peer(), &config);
        drain(&mut a);
        a.handle_attested(ms(0), Some(addr("198.51.100.9:0")), &mut limits);
        assert_eq!(drain(&mut a), [Command::Ask { hard: true }]);
        let answer = Answer {
            agreed: true,
            addrs: vec![addr("203.0.113.66:40000")],
            public: None,
        };
        a.handle_answer(ms(100), answer, &mut limits);
        assert!(drain(&mut a).is_empty(), "nothing aimed at the named host");
        assert_eq!(a.outcome(), Some(Outcome::Unverified));
    }

    #[test]
    fn peers_naming_other_hosts_do_not_drain_the_probe_budget() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        // More unverified answers than the hourly budget has room for attempts (10,000
        // probes, 1,750 reserved by each): nothing was sent, so each gives its probes back.
        for i in 0..8u8 {
            let t = Time(0)
                .after(config.min_interval * u32::from(i) + Duration::from_nanos(u64::from(i)));
            let mut a = Attempt::new(NatType::Cone, NodeId::from_bytes([i; 32]), &config);
            drain(&mut a);
            a.handle_attested(t, Some(addr("203.0.113.7:0")), &mut limits);
            assert_eq!(drain(&mut a), [Command::Ask { hard: false }], "attempt {i}");
            let answer = Answer {
                agreed: true,
                addrs: vec![],
                public: Some(addr("198.51.100.66:0")),
            };
            a.handle_answer(t, answer, &mut limits);
            assert_eq!(a.outcome(), Some(Outcome::Unverified));
        }
    }

    #[test]
    fn without_relays_word_or_an_answer_nothing_is_sent_and_nothing_is_spent() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        let mut a = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut a);
        a.handle_attested(ms(0), None, &mut limits);
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.outcome(), Some(Outcome::Unverified));

        let mut a = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut a);
        a.handle_attested(ms(0), Some(addr("203.0.113.7:0")), &mut limits);
        drain(&mut a);
        a.handle_timeout(ms(4000), &mut limits);
        assert_eq!(a.outcome(), None, "early");
        a.handle_timeout(ms(5000), &mut limits);
        assert_eq!(a.outcome(), Some(Outcome::Declined));
        // Abandoned: neither the interval nor a backoff holds the next attempt.
        let mut b = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut b);
        b.handle_attested(ms(5000), Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(drain(&mut b), [Command::Ask { hard: false }]);

        let a = Attempt::new(NatType::Unknown, peer(), &config);
        assert_eq!(a.outcome(), Some(Outcome::NotBirthday));
    }

    #[test]
    fn an_aborted_attempt_gives_back_what_it_booked() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        // Dropped while asking: the next attempt may start at once.
        let mut a = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut a);
        a.handle_attested(ms(0), Some(addr("203.0.113.7:0")), &mut limits);
        drain(&mut a);
        a.abort(ms(10), &mut limits);
        a.abort(ms(10), &mut limits);
        let mut b = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut b);
        b.handle_attested(ms(20), Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(
            drain(&mut b),
            [Command::Ask { hard: false }],
            "not stuck running"
        );
        // Dropped while playing: counted as a failure, so the same peer backs off, but
        // nothing stays running.
        let answer = Answer {
            agreed: true,
            addrs: vec![],
            public: Some(addr("203.0.113.7:0")),
        };
        b.handle_answer(ms(30), answer, &mut limits);
        assert!(matches!(drain(&mut b)[..], [Command::Play(_)]));
        b.abort(ms(40), &mut limits);
        assert_eq!(b.outcome(), Some(Outcome::Declined));
        let mut c = Attempt::new(NatType::Cone, peer(), &config);
        drain(&mut c);
        let later = ms(40).after(config.min_interval);
        c.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(c.outcome(), Some(Outcome::Refused(Refusal::Backoff)));
        let mut d = Attempt::new(NatType::Cone, NodeId::from_bytes([9; 32]), &config);
        drain(&mut d);
        d.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(
            drain(&mut d),
            [Command::Ask { hard: false }],
            "another peer may go"
        );
    }

    #[test]
    fn a_responder_agrees_only_to_an_attested_pair_within_its_limits() {
        let config = BirthdayConfig::default();
        let mut limits = Limits::new(config);
        let host = addr("203.0.113.7:0");
        let v = respond(
            ms(0),
            NatType::Cone,
            peer(),
            &[],
            Some(&host),
            None,
            &mut limits,
        );
        assert_eq!(v, Verdict::Unverified);
        let v = respond(
            ms(0),
            NatType::Cone,
            peer(),
            &[],
            Some(&host),
            Some(&host),
            &mut limits,
        );
        assert!(matches!(v, Verdict::Play(Role::Easy { .. })));
        // Busy now.
        let other = NodeId::from_bytes([9; 32]);
        let v = respond(
            ms(1),
            NatType::Cone,
            other,
            &[],
            Some(&host),
            Some(&host),
            &mut limits,
        );
        assert_eq!(v, Verdict::Refused);
        assert!(worth_attesting(NatType::Cone, &[], Some(&host)));
        assert!(!worth_attesting(
            NatType::Cone,
            std::slice::from_ref(&host),
            None
        ));
    }
}
