//! Birthday punching between a symmetric NAT and a cone (or public) one, make-before-break:
//! once a connect ends relayed, the pair tries it in the background, and the direct edge it
//! opens replaces the relayed one (reported as punched).
//!
//! The exchange is a Connect/ConnectAck with [`nodenet_nat::FLAG_BIRTHDAY`]: each side says
//! whether it is hard and where it is (an easy side's confirmed mapping, a hard side's public
//! host); the nonce is the attempt's token, carried by every probe. A peer that predates it
//! answers an ordinary ConnectAck (no flag), and the attempt ends there. Every attempt, on
//! both sides, passes [`nodenet_nat::birthday::Limits`]; refusals and results are counted.
//! What to do and when is decided in [`nodenet_proto::birthday`]; this module carries it out.
//!
//! Neither side aims a packet at a host on the peer's say-so alone: two relays that *this*
//! side chose must agree where they see the peer, none may disagree, and the peer's claim
//! must name that host ([`Node::trusted_host`]). The relay carrying the pair is never asked
//! (the peer may have chosen it); the caller's own grant counts as one voice. Without two
//! agreeing relays (reference relays attest nothing), or against them, the pair stays
//! relayed and `birthday_unverified` counts it.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_nat::birthday::encode_probe;
use nodenet_proto::birthday::{
    Answer, Attempt, Command, Outcome, Role, Verdict, played, respond, unplayed, worth_attesting,
};
use nodenet_transport::{BirthdayError, BirthdayParams};
use nodenet_wire::Addr;
use tokio::sync::oneshot;

use crate::core::{Core, Now};
use crate::driver::{Node, link, lock};

/// How often the easy side looks for the edge the hard side dials.
const WATCH_EVERY: Duration = Duration::from_millis(50);
/// A peer's birthday request, as the core decoded it.
struct Request {
    peer: NodeId,
    nonce: [u8; nodenet_nat::NONCE_LEN],
    /// Where an easy peer is reached (its confirmed mapping).
    addrs: Vec<Addr>,
    /// A hard peer's public host (port 0).
    public: Option<Addr>,
}

/// An attempt that gives back what it booked if it is dropped before its outcome: its task
/// aborted at shutdown, or a panic.
struct Unfinished<'a> {
    node: &'a Node,
    attempt: Attempt,
}

impl std::ops::Deref for Unfinished<'_> {
    type Target = Attempt;
    fn deref(&self) -> &Attempt {
        &self.attempt
    }
}

impl std::ops::DerefMut for Unfinished<'_> {
    fn deref_mut(&mut self) -> &mut Attempt {
        &mut self.attempt
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.attempt.outcome().is_none() {
            let now = self.node.now().mono;
            let mut core = lock(&self.node.0.core);
            self.attempt.abort(now, core.birthday_limits_mut());
        }
    }
}

/// A responder's play, reported to the limits however it ends (a panic, an abort at
/// shutdown): a booking left running would refuse every later attempt until restart. An end
/// without a result keeps every probe booked (none refunded) and counts as a failure.
struct Played {
    node: Node,
    peer: NodeId,
    role: Role,
    /// Whether it worked, and the probes it sent.
    result: Option<(bool, u32)>,
}

impl Drop for Played {
    fn drop(&mut self) {
        let (ok, sent) = self.result.unwrap_or((false, u32::MAX));
        let now = self.node.now().mono;
        played(
            lock(&self.node.0.core).birthday_limits_mut(),
            now,
            self.peer,
            &self.role,
            sent,
            ok,
        );
    }
}

impl Node {
    fn birthday_params(&self) -> BirthdayParams {
        let c = *lock(&self.0.core).birthday_limits().config();
        BirthdayParams {
            sockets: c.sockets,
            ttl: c.ttl,
            probe_rate: c.probe_rate,
            max_probes: c.max_probes,
            timeout: c.timeout,
        }
    }

    /// A peer asks for a birthday punch: agree if the plan says so, relays of our own
    /// choosing agree on the host we would aim at ([`Node::trusted_host`]), and the limits
    /// allow (`nodenet_proto::birthday::respond` decides); then play our role. Otherwise
    /// answer without the flag.
    ///
    /// The relays are asked in the background (the peer waits up to its answer timeout for
    /// us), and only for a birthday pair we hold a relayed edge with, at most
    /// [`nodenet_proto::links::MAX_ATTESTATION_ROUNDS`] peers at once.
    pub(crate) fn on_birthday_request(
        &self,
        core: &mut Core,
        now: Now,
        peer: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        addrs: Vec<Addr>,
        public: Option<Addr>,
    ) {
        // A transport without birthday sockets declines at once: no relay is asked, nothing
        // is booked against the limits.
        if self.0.transport.as_birthday().is_none() {
            let _ = core.answer_birthday(now, peer, &nonce, false, false);
            return;
        }
        let request = Request {
            peer,
            nonce,
            addrs,
            public,
        };
        // Asking relays costs them a session each: only for a birthday pair we hold a relayed
        // edge with, one lookup per peer, a few at once. Anything else is answered now.
        let pair = worth_attesting(core.nat_type(), &request.addrs, request.public.as_ref());
        let relayed = self
            .conn_to(&peer)
            .is_some_and(|c| core.links().is_relayed(link(&c)));
        let admitted = pair && relayed && core.links_mut().begin_attestation(peer);
        if !admitted {
            self.answer_request(core, now, request, None);
            return;
        }
        let node = self.clone();
        self.spawn_owned(async move {
            // Released however the task ends (a panic, or an abort at shutdown).
            let release = node.clone();
            let _lookup = crate::connect::OnDrop(move || {
                lock(&release.0.core).links_mut().attested_round_done(&peer);
            });
            let attested = node.trusted_host(peer).await;
            let now = node.now();
            let mut core = lock(&node.0.core);
            node.answer_request(&mut core, now, request, attested);
            node.drain(&mut core, now);
        });
    }

    /// Decides and answers a peer's request, given what relays of ours attested.
    fn answer_request(&self, core: &mut Core, now: Now, req: Request, attested: Option<Addr>) {
        let Request {
            peer,
            nonce,
            addrs,
            public,
        } = req;
        // The core is locked here: ask it, not the node.
        let verdict = respond(
            now.mono,
            core.nat_type(),
            peer,
            &addrs,
            public.as_ref(),
            attested.as_ref(),
            core.birthday_limits_mut(),
        );
        let role = match &verdict {
            Verdict::Play(role) => Some(role.clone()),
            Verdict::Unverified | Verdict::Refused => None,
        };
        let hard = matches!(role, Some(Role::Hard { .. }));
        let answered = core.answer_birthday(now, peer, &nonce, hard, role.is_some());
        tracing::info!(
            event = "birthday_request",
            peer = %peer.short(),
            ours = core.nat_type().as_str(),
            peer_hard = public.is_some(),
            role = match &role { Some(Role::Hard { .. }) => "hard", Some(Role::Easy { .. }) => "easy", None => "none" },
            unverified = verdict == Verdict::Unverified,
            answered = answered.is_ok(),
            "birthday punch asked of us"
        );
        match (verdict, answered) {
            (Verdict::Play(role), Ok(())) => {
                core.stats_mut().birthday_attempts += 1;
                let node = self.clone();
                self.spawn_owned(async move {
                    // Made inside the task: dropped by a refused spawn, it would lock the
                    // core our caller holds. (A task aborted before its first poll is one
                    // of a node that is shutting down.)
                    let mut report = Played {
                        node: node.clone(),
                        peer,
                        role,
                        result: None,
                    };
                    report.result = Some(node.play(peer, nonce, report.role.clone()).await);
                });
            }
            // Agreed but the answer was not sent: nothing was played.
            (Verdict::Play(role), Err(_)) => unplayed(core.birthday_limits_mut(), &role),
            (Verdict::Unverified, _) => core.stats_mut().birthday_unverified += 1,
            (Verdict::Refused, _) => core.stats_mut().birthday_refused += 1,
        }
    }

    /// Tries a birthday punch with `target` (we hold a relayed edge to it): carries out the
    /// commands of a [`nodenet_proto::birthday::Attempt`]. True when a direct edge replaced
    /// the relayed one.
    pub(crate) async fn birthday(&self, target: NodeId) -> bool {
        // Nothing to play it with: not an attempt, and nothing booked against the limits.
        if self.0.transport.as_birthday().is_none() {
            return false;
        }
        let config = *lock(&self.0.core).birthday_limits().config();
        let mut attempt = Unfinished {
            node: self,
            attempt: Attempt::new(self.nat_type(), target, &config),
        };
        let mut asked: Option<([u8; nodenet_nat::NONCE_LEN], oneshot::Receiver<_>)> = None;
        loop {
            while let Some(command) = attempt.poll_command() {
                match command {
                    Command::Attest => {
                        // Without the word of relays we chose on the peer's host there is
                        // nothing we may aim at.
                        let attested = self.trusted_host(target).await;
                        let now = self.now().mono;
                        attempt.handle_attested(
                            now,
                            attested,
                            lock(&self.0.core).birthday_limits_mut(),
                        );
                    }
                    Command::Ask { hard } => {
                        let (tx, rx) = oneshot::channel();
                        let now = self.now();
                        let mut core = lock(&self.0.core);
                        match core.start_birthday(now, target, hard) {
                            Ok(nonce) => {
                                lock(&self.0.punch_waiters).insert(nonce, tx);
                                self.drain(&mut core, now);
                                asked = Some((nonce, rx));
                            }
                            Err(e) => {
                                drop(core);
                                tracing::info!(event = "birthday_unsent", peer = %target.short(), error = %e, "birthday punch not asked");
                                attempt.handle_unsent(lock(&self.0.core).birthday_limits_mut());
                            }
                        }
                    }
                    Command::Play(role) => {
                        let (ok, sent) = match asked.take() {
                            Some((nonce, _)) => {
                                lock(&self.0.core).stats_mut().birthday_attempts += 1;
                                self.play(target, nonce, role).await
                            }
                            None => (false, 0),
                        };
                        let now = self.now().mono;
                        attempt.handle_played(
                            now,
                            ok,
                            sent,
                            lock(&self.0.core).birthday_limits_mut(),
                        );
                    }
                }
            }
            if let Some(outcome) = attempt.outcome() {
                return self.booked(target, outcome);
            }
            // Waiting for the peer's answer, until the attempt's deadline.
            let (Some((nonce, rx)), Some(deadline)) = (asked.as_mut(), attempt.poll_timeout())
            else {
                // Nothing to wait for (which no state leads to): nothing was played.
                attempt.handle_unsent(lock(&self.0.core).birthday_limits_mut());
                return self.booked(target, attempt.outcome().unwrap_or(Outcome::Declined));
            };
            let wait = deadline.since(self.now().mono);
            let answer = tokio::time::timeout(wait, rx).await;
            let now = self.now().mono;
            match answer {
                Ok(Ok(a)) => {
                    lock(&self.0.punch_waiters).remove(&*nonce);
                    let answer = Answer::from_ack(a.flags, a.addrs, a.public);
                    attempt.handle_answer(now, answer, lock(&self.0.core).birthday_limits_mut());
                }
                _ => {
                    lock(&self.0.punch_waiters).remove(&*nonce);
                    asked = None;
                    attempt.handle_timeout(deadline, lock(&self.0.core).birthday_limits_mut());
                }
            }
        }
    }

    /// Counts and logs how an attempt of ours ended; true when punched.
    fn booked(&self, target: NodeId, outcome: Outcome) -> bool {
        let mut core = lock(&self.0.core);
        let stats = core.stats_mut();
        match outcome {
            Outcome::Punched => return true,
            Outcome::Failed | Outcome::NotBirthday => {}
            Outcome::Unverified => {
                tracing::info!(event = "birthday_unverified", peer = %target.short(), "no two relays of ours attested the peer's host: staying relayed");
                stats.birthday_unverified += 1;
            }
            Outcome::Refused(_) => stats.birthday_refused += 1,
            // Declined or unanswered: nothing was sent, so it costs nothing (its own relays
            // may not have answered yet; the relayed edge's upgrades ask again).
            Outcome::Declined => {
                tracing::info!(event = "birthday_declined", peer = %target.short(), "the peer declined a birthday punch");
            }
        }
        false
    }

    /// Plays our role in an agreed attempt: whether the direct edge came up, and how many
    /// probes went out (the caller books both in the limits).
    async fn play(
        &self,
        peer: NodeId,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        role: Role,
    ) -> (bool, u32) {
        let params = self.birthday_params();
        let probe = encode_probe(&nonce);
        let (ok, sent) = match role {
            Role::Hard { easy } => {
                let playing = match self.0.transport.as_birthday() {
                    Some(b) => b.birthday_hard(peer, &easy, &probe, params),
                    None => Box::pin(std::future::ready(Err(BirthdayError::Unsupported))),
                };
                match playing.await {
                    Ok(conn) => {
                        let adopted = self.adopt(&conn).is_ok();
                        if adopted {
                            self.mark_punched(&peer);
                            // The easy side learns of the edge from its first frame: send one
                            // now rather than at the next keep-alive.
                            self.ping(&peer);
                        }
                        (adopted, 0)
                    }
                    Err(e) => {
                        tracing::info!(event = "birthday_failed", peer = %peer.short(), error = %e, "birthday punch failed (hard side)");
                        (false, 0)
                    }
                }
            }
            Role::Easy { host } => {
                let started = tokio::time::Instant::now();
                // The edge we hold now (relayed: on the callee's side of a relay it is not
                // marked so) does not count; the hard side's dial brings a new one.
                let before = self.conn_to(&peer).map(|c| c.id());
                let probing = match self.0.transport.as_birthday() {
                    Some(b) => b.birthday_easy(&host, &probe, params),
                    None => Box::pin(std::future::ready(Err(BirthdayError::Unsupported))),
                };
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
                (ok, sent)
            }
        };
        tracing::info!(event = "birthday_done", peer = %peer.short(), ok, "birthday punch ended");
        if ok {
            lock(&self.0.core).stats_mut().birthday_succeeded += 1;
        }
        (ok, sent)
    }
}
