//! Birthday punches in the simulator: once a connect ends relayed (and at each try of its
//! upgrade schedule, `sim/upgrades.rs`), the caller runs the same [`Attempt`] a node runs (a
//! pair that is no birthday pair, two symmetric NATs say, is declined), the exchange is a real
//! Connect/ConnectAck routed by the cores, the target answers with
//! [`crate::birthday::respond`], and the roles are played packet by packet on [`Net`]: the
//! hard side opens its sockets toward the easy side's mapping, the easy side probes random
//! ports on the hard side's host at the configured rate until one lands, and the hard side
//! dials back from the socket it landed on. The direct edge replaces the relayed one.
//!
//! Relays are honest here, and generous: a side's relays attest the peer's true outside host
//! whenever it holds at least two direct edges to relay volunteers. A real relay attests only
//! a peer it holds an edge to itself, and the one that carried the connect counts only if
//! it was an edge of ours before; so the birthday figures here are an upper bound on what a
//! network that size gets.

use std::collections::HashMap;

use nodenet_routing::Caps;
use nodenet_wire::Addr;

use super::net::{Ep, Net};
use super::{Ev, Sim, Upgraded, ep_addr};
use crate::birthday::{
    Answer, Attempt, BirthdayConfig, Command, Limits, Outcome, Role, Verdict, played, respond,
    unplayed,
};

/// One birthday attempt under way, the caller's.
pub(super) struct BirthdayRun {
    pub(super) caller: usize,
    pub(super) target: usize,
    /// The connect's record in the report.
    pub(super) record: usize,
    pub(super) attempt: Attempt,
    /// The exchange's nonce, once asked.
    pub(super) nonce: Option<super::Nonce>,
    /// The upgrade schedule whose try this is (`None`: the attempt right after the connect).
    pub(super) schedule: Option<usize>,
    /// Its end was booked.
    pub(super) ended: bool,
}

/// What happens next to an attempt.
pub(super) enum Step {
    /// Its deadline.
    Wake,
    /// Both roles played: the edge came up (the easy side saw the hard side's dial come from
    /// `through`), or not; the easy side sent `probes`.
    Played {
        through: Option<Ep>,
        probes: u32,
        hard_is_caller: bool,
        /// The responder's role, to book (none if it never agreed).
        theirs: Option<Role>,
    },
}

/// Plays both roles on `net`: the hard side `hard` opens `config.sockets` sockets, each
/// sending one packet toward `easy_mapping`; the easy side `easy` probes random ports on
/// `hard_host` at `config.probe_rate` until one reaches the hard side, at most
/// `config.max_probes` or `config.timeout`. Returns the probes sent and, on a hit, the hard
/// side's socket it landed on.
pub(super) fn play(
    net: &mut Net,
    config: &BirthdayConfig,
    hard: usize,
    easy: usize,
    easy_mapping: Ep,
    hard_host: u32,
) -> (u32, Option<Ep>) {
    let sockets = net.open_sockets(hard, config.sockets);
    for &s in &sockets {
        // Opens a mapping on the hard side's NAT; the easy side's filter drops it.
        let _ = net.send_from(hard, s, easy_mapping);
    }
    let rate = u64::from(config.probe_rate.max(1));
    let in_time = u64::try_from(config.timeout.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(rate)
        / 1000;
    let max = u64::from(config.max_probes).min(in_time);
    for k in 0..max {
        let port = 1024 + u16::try_from(net.random() % 64_000).unwrap_or(0);
        let probe = Ep {
            ip: hard_host,
            port,
        };
        if let Some(arrival) = net.send(easy, probe) {
            if arrival.node == hard && sockets.contains(&arrival.at) {
                return (u32::try_from(k + 1).unwrap_or(u32::MAX), Some(arrival.at));
            }
        }
    }
    (u32::try_from(max).unwrap_or(u32::MAX), None)
}

/// The address of a host named without a port.
fn host_ip(host: &str) -> Option<u32> {
    Ep::parse(&format!("{host}:0")).map(|e| e.ip)
}

/// Node `i`'s birthday limits (made on first use).
fn limits_in(all: &mut HashMap<usize, Limits>, config: BirthdayConfig, i: usize) -> &mut Limits {
    all.entry(i).or_insert_with(|| Limits::new(config))
}

impl Sim {
    /// What honest relays of `at`'s choosing say of where they see `peer`: its outside
    /// host, when `at` holds direct edges to two relay volunteers.
    fn attested(&self, at: usize, peer: usize) -> Option<Addr> {
        let core = &self.cores[at];
        let relays = core
            .edges()
            .iter()
            .filter(|e| {
                core.knowledge()
                    .get(&e.id)
                    .is_some_and(|c| c.caps.contains(Caps::CAN_RELAY))
            })
            .filter_map(|e| self.index.get(&e.id))
            .filter(|&&j| !self.relayed.contains(&(at, j)))
            .count();
        (relays >= 2).then(|| {
            ep_addr(Ep {
                ip: self.net.public_host(peer),
                port: 0,
            })
        })
    }

    /// After connect `record` from `caller` to `target` ended relayed: a birthday attempt if
    /// the pair is one.
    pub(super) fn start_birthday(
        &mut self,
        caller: usize,
        target: usize,
        record: usize,
        schedule: Option<usize>,
    ) {
        // As a node does: every relayed pair is asked (the peer's NAT is its own to know),
        // and a pair that is no birthday pair is declined by the peer.
        let ours = self.cores[caller].nat_type();
        let attempt = Attempt::new(ours, self.cores[target].id(), &self.birthday);
        self.birthdays.push(BirthdayRun {
            caller,
            target,
            record,
            attempt,
            nonce: None,
            schedule,
            ended: false,
        });
        self.birthday_step(self.birthdays.len() - 1);
    }

    /// Carries out attempt `u`'s commands; records its end.
    pub(super) fn birthday_step(&mut self, u: usize) {
        let now = self.now;
        let (caller, target) = (self.birthdays[u].caller, self.birthdays[u].target);
        while let Some(command) = self.birthdays[u].attempt.poll_command() {
            match command {
                Command::Attest => {
                    let attested = self.attested(caller, target);
                    let limits = limits_in(&mut self.limits, self.birthday, caller);
                    self.birthdays[u]
                        .attempt
                        .handle_attested(now, attested, limits);
                }
                Command::Ask { hard } => {
                    let wall = self.wall(now);
                    let id = self.cores[target].id();
                    match self.cores[caller].start_birthday(wall, id, hard) {
                        Ok(nonce) => {
                            self.birthdays[u].nonce = Some(nonce);
                            self.birthday_waiters.insert((caller, nonce), u);
                            self.drain(caller, wall);
                        }
                        Err(_) => {
                            let limits = limits_in(&mut self.limits, self.birthday, caller);
                            self.birthdays[u].attempt.handle_unsent(limits);
                        }
                    }
                }
                Command::Play(role) => self.play_roles(u, role),
            }
        }
        if let Some(outcome) = self.birthdays[u].attempt.outcome() {
            // Booked once, however many events still come for it.
            if std::mem::replace(&mut self.birthdays[u].ended, true) {
                return;
            }
            // A target that agreed but was never played releases its part when its
            // agreement lapses (`on_birthday_lapse`), as a node does: it cannot know sooner.
            if let Some(nonce) = self.birthdays[u].nonce.take() {
                self.birthday_waiters.remove(&(caller, nonce));
            }
            let record = self.birthdays[u].record;
            let punched = outcome == Outcome::Punched;
            let schedule = self.birthdays[u].schedule;
            let rec = &mut self.report.connects[record];
            // The attempt that replaced the relayed edge is the first to end punched (the one
            // at connect time and a try's may run at once, as on a node); a later failure
            // does not undo it.
            if punched && rec.birthday != Some(true) && schedule.is_some() {
                rec.upgraded = Some(Upgraded::Birthday);
            }
            if punched || rec.birthday.is_none() {
                rec.birthday = Some(punched);
            }
            if let Some(s) = schedule {
                self.upgrade_tried(s, punched);
            }
        } else if let Some(t) = self.birthdays[u].attempt.poll_timeout() {
            self.push(t, Ev::Birthday(u, Step::Wake));
        }
    }

    /// A peer asks node `at` for a birthday punch: the responder's side.
    pub(super) fn on_birthday_request(
        &mut self,
        at: usize,
        peer: nodenet_kad::NodeId,
        nonce: super::Nonce,
        addrs: &[Addr],
        public: Option<&Addr>,
    ) {
        let Some(&p) = self.index.get(&peer) else {
            return;
        };
        let now = self.now;
        let attested = self.attested(at, p);
        let ours = self.cores[at].nat_type();
        let limits = limits_in(&mut self.limits, self.birthday, at);
        let verdict = respond(now, ours, peer, addrs, public, attested.as_ref(), limits);
        let role = match &verdict {
            Verdict::Play(role) => Some(role.clone()),
            Verdict::Unverified | Verdict::Refused => None,
        };
        let hard = matches!(role, Some(Role::Hard { .. }));
        let wall = self.wall(now);
        let answered = self.cores[at].answer_birthday(wall, peer, &nonce, hard, role.is_some());
        match (role, answered) {
            (Some(role), Ok(())) => {
                self.responding.insert((at, nonce), role);
                // If the caller never plays (its answer was lost or came too late), the
                // agreement lapses once the caller could no longer be playing.
                let lapse = self
                    .now
                    .after(crate::birthday::ANSWER_TIMEOUT + self.birthday.timeout);
                self.push(lapse, Ev::BirthdayLapse(at, nonce));
            }
            (Some(role), Err(_)) => {
                unplayed(limits_in(&mut self.limits, self.birthday, at), &role);
            }
            _ => {}
        }
    }

    /// The answer to attempt `u`'s request came back.
    pub(super) fn on_birthday_answer(&mut self, u: usize, answer: Answer) {
        let caller = self.birthdays[u].caller;
        let limits = limits_in(&mut self.limits, self.birthday, caller);
        self.birthdays[u]
            .attempt
            .handle_answer(self.now, answer, limits);
        self.birthday_step(u);
    }

    /// Both sides play their roles (ours is `role`); the result lands when the hit would.
    fn play_roles(&mut self, u: usize, role: Role) {
        let (caller, target) = (self.birthdays[u].caller, self.birthdays[u].target);
        let theirs = self.birthdays[u]
            .nonce
            .and_then(|n| self.responding.remove(&(target, n)));
        let parse = |a: &Addr| Ep::parse(&a.endpoint);
        let plan = match (&role, &theirs) {
            (Role::Hard { easy }, Some(Role::Easy { host })) => parse(easy)
                .zip(host_ip(host))
                .map(|(m, h)| (caller, target, m, h)),
            (Role::Easy { host }, Some(Role::Hard { easy })) => parse(easy)
                .zip(host_ip(host))
                .map(|(m, h)| (target, caller, m, h)),
            _ => None,
        };
        let config = self.birthday;
        let (probes, through, hard_is_caller) = match plan {
            Some((hard, easy, mapping, host)) if self.alive[hard] && self.alive[easy] => {
                let (probes, hit) = play(&mut self.net, &config, hard, easy, mapping, host);
                let through = hit.and_then(|socket| {
                    self.net
                        .handshake_from(hard, socket, mapping, easy)
                        .map(|(_, seen)| seen)
                });
                (probes, through, hard == caller)
            }
            _ => (0, None, false),
        };
        let rate = u64::from(config.probe_rate.max(1));
        let took = match through {
            Some(_) => {
                std::time::Duration::from_millis(u64::from(probes) * 1000 / rate) + self.latency * 2
            }
            None => config.timeout,
        };
        self.push(
            self.now.after(took),
            Ev::Birthday(
                u,
                Step::Played {
                    through,
                    probes,
                    hard_is_caller,
                    theirs,
                },
            ),
        );
    }

    /// A responder's agreement lapsed: released if the caller never played it.
    pub(super) fn on_birthday_lapse(&mut self, at: usize, nonce: super::Nonce) {
        if let Some(role) = self.responding.remove(&(at, nonce)) {
            unplayed(limits_in(&mut self.limits, self.birthday, at), &role);
        }
    }

    /// An event of attempt `u`.
    pub(super) fn on_birthday(&mut self, u: usize, step: Step) {
        match step {
            Step::Wake => {
                let caller = self.birthdays[u].caller;
                let limits = limits_in(&mut self.limits, self.birthday, caller);
                self.birthdays[u].attempt.handle_timeout(self.now, limits);
            }
            Step::Played {
                through,
                probes,
                hard_is_caller,
                theirs,
            } => {
                let (caller, target) = (self.birthdays[u].caller, self.birthdays[u].target);
                let ok = through.is_some()
                    && self.alive[caller]
                    && self.alive[target]
                    && self.edges.contains(&(caller, target));
                if ok {
                    self.replace_relayed(caller, target, hard_is_caller, through);
                }
                let (ours_sent, theirs_sent) = if hard_is_caller {
                    (0, probes)
                } else {
                    (probes, 0)
                };
                let now = self.now;
                let peer = self.cores[caller].id();
                if let Some(theirs) = &theirs {
                    let limits = limits_in(&mut self.limits, self.birthday, target);
                    played(limits, now, peer, theirs, theirs_sent, ok);
                }
                let limits = limits_in(&mut self.limits, self.birthday, caller);
                self.birthdays[u]
                    .attempt
                    .handle_played(now, ok, ours_sent, limits);
            }
        }
        self.birthday_step(u);
    }

    /// The birthday-punched edge replaces the relayed one between `a` and `b`; the easy side
    /// saw the hard side's dial come from `through`.
    fn replace_relayed(&mut self, a: usize, b: usize, a_hard: bool, through: Option<Ep>) {
        let Some(seen) = through else {
            return;
        };
        let (hard, easy) = if a_hard { (a, b) } else { (b, a) };
        self.relayed.remove(&(a, b));
        self.relayed.remove(&(b, a));
        let (aid, bid) = (self.cores[a].id(), self.cores[b].id());
        self.cores[a].on_edge_replaced(&bid, false);
        self.cores[b].on_edge_replaced(&aid, false);
        self.seen.insert((easy, hard), ep_addr(seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::NatKind;

    /// How many of `runs` birthday punches between a symmetric NAT and `easy` get through.
    fn hits(easy: NatKind, runs: u64) -> u64 {
        let config = BirthdayConfig::default();
        (0..runs)
            .filter(|&seed| {
                let mut net = Net::new(&[NatKind::Public, NatKind::Symmetric, easy], seed + 1);
                let observer = net.socket(0);
                let mapping = net.send(2, observer).unwrap().from;
                let host = net.public_host(1);
                let (_, hit) = play(&mut net, &config, 1, 2, mapping, host);
                hit.is_some_and(|s| net.handshake_from(1, s, mapping, 2).is_some())
            })
            .count() as u64
    }

    #[test]
    fn a_symmetric_nat_meets_a_cone_by_the_birthday_paradox() {
        // 256 mappings among 64,000 ports and up to 1,750 probes: about 999 in 1,000 get
        // through.
        for easy in [NatKind::PortRestricted, NatKind::FullCone, NatKind::Double] {
            let n = hits(easy, 40);
            assert!(n >= 38, "{easy:?}: {n} of 40");
        }
    }

    #[test]
    fn two_symmetric_nats_do_not() {
        assert_eq!(hits(NatKind::Symmetric, 10), 0);
    }
}
