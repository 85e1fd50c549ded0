//! Birthday punching between a symmetric NAT and a cone (or public) one, make-before-break:
//! once a connect ends relayed, the pair tries it in the background, and the direct edge it
//! opens replaces the relayed one (reported as punched).
//!
//! The exchange is a Connect/ConnectAck with [`nodenet_nat::FLAG_BIRTHDAY`]: each side says
//! whether it is hard and where it is (an easy side's confirmed mapping, a hard side's public
//! host); the nonce is the attempt's token, carried by every probe. A peer that predates it
//! answers an ordinary ConnectAck (no flag), and the attempt ends there. Every attempt, on
//! both sides, passes [`nodenet_nat::birthday::Limits`]; refusals and results are counted.
//!
//! Neither side aims a packet at a host on the peer's say-so alone: two relays that *this*
//! side chose must agree where they see the peer, none may disagree, and the peer's claim
//! must name that host ([`Node::trusted_host`]). The relay carrying the pair is never asked
//! (the peer may have chosen it); the caller's own grant counts as one voice. Without two
//! agreeing relays (reference relays attest nothing), or against them, the pair stays
//! relayed and `birthday_unverified` counts it.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_nat::NatType;
use nodenet_nat::birthday::{Plan, encode_probe, plan, verified_host};
use nodenet_transport::BirthdayParams;
use nodenet_wire::Addr;
use tokio::sync::oneshot;

use crate::core::{Core, Now};
use crate::driver::{Node, lock};

/// How long the initiator waits for the peer's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the easy side looks for the edge the hard side dials.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// Peers whose host we ask relays about at once, for birthday requests made of us.
pub(crate) const MAX_ATTESTATION_LOOKUPS: usize = 4;

/// A peer's birthday request, as the core decoded it.
struct Request {
    peer: NodeId,
    nonce: [u8; nodenet_nat::NONCE_LEN],
    /// Where an easy peer is reached (its confirmed mapping).
    addrs: Vec<Addr>,
    /// A hard peer's public host (port 0).
    public: Option<Addr>,
}

/// What the plan and the relay's word make of a pair.
enum Part {
    /// Our role in a birthday punch.
    Play(Role),
    /// Not a birthday pair (or the peer's message lacks what its role needs).
    NotBirthday,
    /// A birthday pair, but the relay did not attest the host we would aim at.
    Unverified,
}

/// What one side does in an agreed attempt.
enum Role {
    /// Open the sockets and dial the easy side's mapping from the one a probe reaches.
    Hard { easy: Addr },
    /// Probe the hard side's public host until its dial arrives.
    Easy { host: String },
}

impl Node {
    fn birthday_now(&self) -> Duration {
        self.0.start.elapsed()
    }

    fn birthday_params(&self) -> BirthdayParams {
        let c = *lock(&self.0.birthday).config();
        BirthdayParams {
            sockets: c.sockets,
            ttl: c.ttl,
            probe_rate: c.probe_rate,
            max_probes: c.max_probes,
            timeout: c.timeout,
        }
    }

    /// Our side of the plan with a peer (whose hardness its message told), if it is a
    /// birthday punch: the host we would aim at (the easy side's mapping, the hard side's
    /// public host) must be the one the relay carrying the pair `attested`.
    fn birthday_part(
        ours: NatType,
        peer_hard: bool,
        addrs: &[Addr],
        public: Option<&Addr>,
        attested: Option<&Addr>,
    ) -> Part {
        let attested = attested.map(|a| a.endpoint.as_str());
        let (hard, claimed) = match plan(ours, peer_hard) {
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

    /// A peer asks for a birthday punch: agree if the plan says so, relays of our own
    /// choosing agree on the host we would aim at ([`Node::trusted_host`]), and the limits
    /// allow; then play our role. Otherwise answer without the flag.
    ///
    /// The relays are asked in the background (the peer waits up to its answer timeout for
    /// us), and only for a birthday pair we hold a relayed edge with, at most
    /// [`MAX_ATTESTATION_LOOKUPS`] peers at once.
    pub(crate) fn on_birthday_request(
        &self,
        core: &mut Core,
        now: Now,
        peer: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        addrs: Vec<Addr>,
        public: Option<Addr>,
    ) {
        let request = Request {
            peer,
            nonce,
            addrs,
            public,
        };
        // Asking relays costs them a session each: only for a birthday pair we hold a relayed
        // edge with, one lookup per peer, a few at once. Anything else is answered now.
        let pair = !matches!(
            Self::birthday_part(
                core.nat_type(),
                request.public.is_some(),
                &request.addrs,
                request.public.as_ref(),
                None,
            ),
            Part::NotBirthday
        );
        let admitted = pair && self.carrier_of(&peer).is_some() && {
            let mut lookups = lock(&self.0.attestation_lookups);
            lookups.len() < MAX_ATTESTATION_LOOKUPS && lookups.insert(peer)
        };
        if !admitted {
            self.answer_request(core, now, request, None);
            return;
        }
        let node = self.clone();
        self.spawn_owned(async move {
            // Released however the task ends (a panic, or an abort at shutdown).
            let release = node.clone();
            let _lookup = crate::connect::OnDrop(move || {
                lock(&release.0.attestation_lookups).remove(&peer);
            });
            let attested = node.trusted_host(peer).await;
            let now = node.now();
            let mut core = lock(&node.0.core);
            node.answer_request(&mut core, now, request, attested);
            node.drain(&mut core, now);
        });
    }

    /// Decides and answers a peer's request, given what the relay carrying our edge to it
    /// attested.
    fn answer_request(&self, core: &mut Core, now: Now, req: Request, attested: Option<Addr>) {
        let Request {
            peer,
            nonce,
            addrs,
            public,
        } = req;
        // The core is locked here: ask it, not the node.
        let part = Self::birthday_part(
            core.nat_type(),
            public.is_some(),
            &addrs,
            public.as_ref(),
            attested.as_ref(),
        );
        let unverified = matches!(part, Part::Unverified);
        let role = match part {
            Part::Play(role) => Some(role),
            Part::NotBirthday | Part::Unverified => None,
        };
        let probes = match &role {
            Some(Role::Easy { .. }) => self.birthday_params().max_probes,
            _ => 0,
        };
        let admitted = role.is_some()
            && lock(&self.0.birthday)
                .start(peer, self.birthday_now(), probes)
                .is_ok();
        let hard = matches!(role, Some(Role::Hard { .. }));
        let answered = core.answer_birthday(now, peer, &nonce, hard, admitted);
        tracing::info!(
            event = "birthday_request",
            peer = %peer.short(),
            ours = core.nat_type().as_str(),
            peer_hard = public.is_some(),
            role = match &role { Some(Role::Hard { .. }) => "hard", Some(Role::Easy { .. }) => "easy", None => "none" },
            admitted,
            unverified,
            answered = answered.is_ok(),
            "birthday punch asked of us"
        );
        match (admitted, answered, role) {
            (true, Ok(()), Some(role)) => {
                core.stats_mut().birthday_attempts += 1;
                let node = self.clone();
                self.spawn_owned(async move {
                    node.play(peer, nonce, role).await;
                });
            }
            // Agreed but the answer was not sent: nothing was played.
            (true, _, _) => lock(&self.0.birthday).abandon(probes),
            _ if unverified => core.stats_mut().birthday_unverified += 1,
            _ => core.stats_mut().birthday_refused += 1,
        }
    }

    /// Tries a birthday punch with `target` (we hold a relayed edge to it). True when a
    /// direct edge replaced the relayed one.
    pub(crate) async fn birthday(&self, target: NodeId) -> bool {
        let ours = self.nat_type();
        if ours == NatType::Unknown {
            return false;
        }
        let hard = ours == NatType::Symmetric;
        // Without the word of a relay we chose on the peer's host there is nothing we may aim
        // at: do not ask.
        let Some(attested) = self.trusted_host(target).await else {
            tracing::info!(event = "birthday_unverified", peer = %target.short(), "no relay attested the peer's host: staying relayed");
            lock(&self.0.core).stats_mut().birthday_unverified += 1;
            return false;
        };
        let probes = if hard {
            0
        } else {
            self.birthday_params().max_probes
        };
        if lock(&self.0.birthday)
            .start(target, self.birthday_now(), probes)
            .is_err()
        {
            lock(&self.0.core).stats_mut().birthday_refused += 1;
            return false;
        }
        let (tx, rx) = oneshot::channel();
        let nonce = {
            let now = self.now();
            let mut core = lock(&self.0.core);
            match core.start_birthday(now, target, hard) {
                Ok(nonce) => {
                    lock(&self.0.punch_waiters).insert(nonce, tx);
                    self.drain(&mut core, now);
                    nonce
                }
                Err(e) => {
                    drop(core);
                    tracing::info!(event = "birthday_unsent", peer = %target.short(), error = %e, "birthday punch not asked");
                    lock(&self.0.birthday).abandon(probes);
                    return false;
                }
            }
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, rx).await;
        lock(&self.0.punch_waiters).remove(&nonce);
        let part = match answer {
            Ok(Ok(a)) if a.flags & nodenet_nat::FLAG_BIRTHDAY != 0 => Self::birthday_part(
                ours,
                a.public.is_some(),
                &a.addrs,
                a.public.as_ref(),
                Some(&attested),
            ),
            _ => Part::NotBirthday,
        };
        let role = match part {
            Part::Play(role) => role,
            // The peer names a host our relays did not: it backs off like a failure.
            Part::Unverified => {
                tracing::info!(event = "birthday_unverified", peer = %target.short(), attested = %attested, "the peer's host is not the one its relay attested");
                lock(&self.0.core).stats_mut().birthday_unverified += 1;
                lock(&self.0.birthday).finish(target, self.birthday_now(), false);
                return false;
            }
            // Declined or unanswered: nothing was sent, so it costs nothing (its own relays
            // may not have answered yet; the relayed edge's upgrades ask again).
            Part::NotBirthday => {
                tracing::info!(event = "birthday_declined", peer = %target.short(), "the peer declined a birthday punch");
                lock(&self.0.birthday).abandon(probes);
                return false;
            }
        };
        lock(&self.0.core).stats_mut().birthday_attempts += 1;
        self.play(target, nonce, role).await
    }

    /// Plays our role in an agreed attempt, then books its result.
    async fn play(&self, peer: NodeId, nonce: [u8; nodenet_nat::NONCE_LEN], role: Role) -> bool {
        let params = self.birthday_params();
        let probe = encode_probe(&nonce);
        let ok = match role {
            Role::Hard { easy } => {
                match self
                    .0
                    .transport
                    .birthday_hard(peer, &easy, &probe, params)
                    .await
                {
                    Ok(conn) => {
                        let adopted = self.adopt(&conn).is_ok();
                        if adopted {
                            self.mark_punched(&peer);
                            // The easy side learns of the edge from its first frame: send one
                            // now rather than at the next keep-alive.
                            self.ping(&peer);
                        }
                        adopted
                    }
                    Err(e) => {
                        tracing::info!(event = "birthday_failed", peer = %peer.short(), error = %e, "birthday punch failed (hard side)");
                        false
                    }
                }
            }
            Role::Easy { host } => {
                let started = tokio::time::Instant::now();
                // The edge we hold now (relayed: on the callee's side of a relay it is not
                // marked so) does not count; the hard side's dial brings a new one.
                let before = self.conn_to(&peer).map(|c| c.id());
                let probing = self.0.transport.birthday_easy(&host, &probe, params);
                let arrived = async {
                    loop {
                        tokio::time::sleep(WATCH_EVERY).await;
                        let now = self.conn_to(&peer);
                        if now.is_some_and(|c| Some(c.id()) != before && !self.is_relayed(&c)) {
                            return;
                        }
                    }
                };
                tokio::pin!(arrived);
                let outcome = tokio::time::timeout(params.timeout, async {
                    tokio::select! {
                        sent = probing => {
                            // Every probe is out: the hard side's dial may still be coming.
                            if let Ok(n) = sent {
                                lock(&self.0.core).stats_mut().birthday_probes += u64::from(n);
                            }
                            (&mut arrived).await;
                        }
                        () = &mut arrived => {}
                    }
                })
                .await;
                let ok = outcome.is_ok();
                if ok {
                    self.mark_punched(&peer);
                }
                // What the pacing allowed by now bounds what was sent; the rest of what the
                // attempt reserved goes back to the budget.
                let paced =
                    started.elapsed().as_millis() * u128::from(params.probe_rate) / 1000 + 1;
                let sent = u32::try_from(paced)
                    .unwrap_or(u32::MAX)
                    .min(params.max_probes);
                lock(&self.0.birthday).refund(params.max_probes - sent);
                ok
            }
        };
        lock(&self.0.birthday).finish(peer, self.birthday_now(), ok);
        tracing::info!(event = "birthday_done", peer = %peer.short(), ok, "birthday punch ended");
        if ok {
            lock(&self.0.core).stats_mut().birthday_succeeded += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(endpoint: &str) -> Addr {
        Addr::new("quic", endpoint)
    }

    fn part(ours: NatType, addrs: &[Addr], public: Option<&str>, attested: Option<&str>) -> Part {
        let public = public.map(addr);
        let attested = attested.map(addr);
        Node::birthday_part(
            ours,
            public.is_some(),
            addrs,
            public.as_ref(),
            attested.as_ref(),
        )
    }

    #[test]
    fn a_side_aims_only_at_the_host_its_relay_attested() {
        // Easy side: the hard peer's claimed host, when the relay saw it there.
        let ok = part(
            NatType::Cone,
            &[],
            Some("203.0.113.7:0"),
            Some("203.0.113.7:0"),
        );
        assert!(matches!(ok, Part::Play(Role::Easy { ref host }) if host == "203.0.113.7"));
        // A claim the relay contradicts, or no relay's word: nothing to aim at.
        for attested in [Some("198.51.100.9:0"), None] {
            let p = part(NatType::Cone, &[], Some("203.0.113.7:0"), attested);
            assert!(matches!(p, Part::Unverified));
        }
        // Hard side: the easy peer's mapping, under the same rule.
        let mapping = [addr("198.51.100.9:40001")];
        let ok = part(NatType::Symmetric, &mapping, None, Some("198.51.100.9:0"));
        assert!(matches!(ok, Part::Play(Role::Hard { ref easy }) if *easy == mapping[0]));
        let p = part(NatType::Symmetric, &mapping, None, Some("203.0.113.7:0"));
        assert!(matches!(p, Part::Unverified));
        // Not a birthday pair (or nothing named): the relay's word does not matter.
        for p in [
            part(NatType::Cone, &mapping, None, Some("198.51.100.9:0")),
            part(NatType::Symmetric, &[], Some("203.0.113.7:0"), None),
            part(NatType::Symmetric, &[], None, Some("198.51.100.9:0")),
        ] {
            assert!(matches!(p, Part::NotBirthday));
        }
    }
}
