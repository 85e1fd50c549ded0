//! One cascade being carried out: its commands started, their answers fed back.

use super::*;

/// What a command in flight answers with.
pub(super) enum Answer {
    Dialed(Result<(), StepError>),
    Rendezvous(Option<Coordinates>),
    Punch(Option<PunchAnswer>),
    Relay(Result<(Addr, Option<crate::core::Attested>), StepError>),
    Linked(NodeId, Result<(), StepError>),
}

pub(super) type Pending<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;
/// A request's nonce and the guard that withdraws its waiter.
pub(super) type Open<'a, N> = Option<(N, OnDrop<Box<dyn FnMut() + Send + 'a>>)>;

/// One cascade being carried out: the command in flight and what its answers need.
pub(super) struct Run<'a> {
    pub(super) node: &'a Node,
    pub(super) target: NodeId,
    /// The one command that waits for an answer.
    pub(super) pending: Option<Pending<'a>>,
    /// The open rendezvous request's nonce; its waiter goes when the guard drops.
    pub(super) rendezvous: Open<'a, [u8; nodenet_rendezvous::NONCE_LEN]>,
    /// The addresses the rendezvous returned (a punch's first candidates).
    pub(super) rendezvous_addrs: Vec<Addr>,
    /// The open punch request's nonce, and its guard.
    pub(super) punch: Open<'a, crate::driver::Nonce>,
    /// The last relay grant's attestation.
    pub(super) grant: Option<Option<crate::core::Attested>>,
    /// Relays dialed for this connect (no edges of ours before it): closed when it ends,
    /// and never a voice on the target's host (the target named them).
    pub(super) linked: Vec<NodeId>,
}

impl Drop for Run<'_> {
    /// The relays dialed for this connect are closed however it ends (the relayed
    /// connection, if one came up through one, does not need our edge to it).
    fn drop(&mut self) {
        for relay in std::mem::take(&mut self.linked) {
            self.node.close_edge(&relay);
        }
    }
}

impl<'a> Run<'a> {
    pub(super) fn carry_out(&mut self, cascade: &mut Cascade<StepError>, command: Command) {
        let (node, target) = (self.node, self.target);
        let now = node.now();
        match command {
            Command::Dial {
                addrs,
                timeout,
                via,
            } => {
                self.pending = Some(Box::pin(async move {
                    Answer::Dialed(node.dial_any(target, &addrs, timeout, via).await)
                }));
            }
            Command::StartRendezvous => {
                let (tx, rx) = oneshot::channel();
                let mut core = lock(&node.0.core);
                match core.start_rendezvous(now, target) {
                    Ok(nonce) => {
                        // Registered before the core lock is released: the answer is handled
                        // under it.
                        lock(&node.0.waiters).insert(nonce, tx);
                        node.drain(&mut core, now);
                        let guard: OnDrop<Box<dyn FnMut() + Send + 'a>> =
                            OnDrop(Box::new(move || {
                                lock(&node.0.waiters).remove(&nonce);
                                lock(&node.0.core).cancel_rendezvous(&nonce);
                            }));
                        self.rendezvous = Some((nonce, guard));
                        self.pending =
                            Some(Box::pin(async move { Answer::Rendezvous(rx.await.ok()) }));
                    }
                    Err(e) => cascade.handle_rendezvous_refused(originate_failure(e)),
                }
            }
            Command::ResendRendezvous => {
                if let Some((nonce, _)) = &self.rendezvous {
                    node.resend_rendezvous(nonce);
                }
            }
            Command::StartPunch => {
                let (tx, rx) = oneshot::channel();
                let mut core = lock(&node.0.core);
                match core.start_punch(now, target) {
                    Ok(nonce) => {
                        lock(&node.0.punch_waiters).insert(nonce, tx);
                        node.drain(&mut core, now);
                        let guard: OnDrop<Box<dyn FnMut() + Send + 'a>> =
                            OnDrop(Box::new(move || {
                                lock(&node.0.punch_waiters).remove(&nonce);
                                lock(&node.0.core).cancel_punch(&nonce);
                            }));
                        self.punch = Some((nonce, guard));
                        self.pending = Some(Box::pin(async move { Answer::Punch(rx.await.ok()) }));
                    }
                    Err(e) => {
                        drop(core);
                        let edge = node.edge_now(&target);
                        cascade.handle_punch_refused(now.mono, originate_failure(e), edge);
                    }
                }
            }
            Command::PunchSync => {
                if let Some((nonce, _)) = &self.punch {
                    let mut core = lock(&node.0.core);
                    if core.punch_sync(now, target, nonce).is_ok() {
                        node.drain(&mut core, now);
                    }
                }
            }
            Command::PunchBurst { addrs } => {
                let mut core = lock(&node.0.core);
                core.punch_burst(now, Some(target), addrs);
                node.drain(&mut core, now);
            }
            Command::FindRelays { n } => {
                // The punch step is over: withdraw its request.
                self.punch = None;
                let relays = lock(&node.0.core).relays_near(now, &target, n);
                cascade.handle_relays(now.mono, relays, node.edge_now(&target));
            }
            Command::LookupRelays => {
                let mut core = lock(&node.0.core);
                core.lookup_relays(now, target);
                node.drain(&mut core, now);
            }
            Command::LinkRelay {
                relay,
                addrs,
                timeout,
            } => {
                if node.conn_to(&relay).is_some() {
                    cascade.handle_relay_linked(now.mono, Ok(()), node.edge_now(&target));
                } else {
                    self.pending = Some(Box::pin(async move {
                        Answer::Linked(relay, node.dial_any(relay, &addrs, timeout, None).await)
                    }));
                }
            }
            Command::AskRelay { relay } => {
                self.pending = Some(Box::pin(async move {
                    Answer::Relay(node.ask_relay(relay, target).await)
                }));
            }
        }
    }

    pub(super) fn feed(&mut self, cascade: &mut Cascade<StepError>, answer: Answer) {
        let (node, target) = (self.node, self.target);
        let now = node.now().mono;
        let edge = node.edge_now(&target);
        cascade.set_symmetric(node.nat_type() == crate::NatType::Symmetric);
        match answer {
            Answer::Dialed(result) => cascade.handle_dialed(now, result, edge),
            Answer::Rendezvous(Some(coords)) => {
                self.rendezvous = None;
                self.rendezvous_addrs.clone_from(&coords.addrs);
                cascade.handle_rendezvous(now, coords.addrs);
            }
            Answer::Rendezvous(None) => {
                // The waiter was dropped without an answer: none can come now.
                cascade.handle_rendezvous_refused(Failure::Timeout(node.0.rendezvous_timeout));
            }
            Answer::Punch(Some(answer)) => {
                let timed = answer.flags & nodenet_nat::FLAG_TIMED != 0;
                let candidates = lock(&node.0.core).punch_candidates(
                    self.rendezvous_addrs
                        .iter()
                        .chain(&answer.addrs)
                        .map(Addr::as_ref),
                );
                cascade.handle_punch_answer(now, &answer.addrs, timed, candidates, edge);
            }
            Answer::Punch(None) => {
                cascade.handle_punch_refused(now, Failure::Timeout(PUNCH_TIMEOUT), edge);
            }
            Answer::Relay(Ok((addr, attest))) => {
                self.grant = Some(attest);
                cascade.handle_relay_answer(now, Ok(addr), edge);
            }
            Answer::Relay(Err(e)) => {
                cascade.handle_relay_answer(now, Err(Failure::Driver(e)), edge);
            }
            Answer::Linked(relay, result) => {
                if result.is_ok() {
                    self.linked.push(relay);
                }
                cascade.handle_relay_linked(now, result, edge);
            }
        }
    }
}

fn originate_failure(e: crate::OriginateError) -> Failure<StepError> {
    match e {
        crate::OriginateError::Busy => Failure::Busy,
        _ => Failure::Unroutable,
    }
}
