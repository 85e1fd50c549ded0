//! Frames between the simulated cores: delivery, what each core's answer sets off (relay
//! sessions, birthday plays), and the actions a core queues (punch datagrams among them).

use super::*;

impl Sim {
    pub(super) fn on_frame(&mut self, now: Now, to: usize, from: usize, mut frame: Vec<u8>) {
        if !self.alive[to] || !self.edges.contains(&(to, from)) {
            return;
        }
        self.note_route(to, &frame);
        let route_target = route_target(&frame);
        let peer = self.cores[from].id();
        let seen = self.seen_addr(to, from);
        match self.cores[to].on_frame(now, peer, &seen, &mut frame) {
            Handled::Forward(candidates) => {
                let next = candidates
                    .as_slice()
                    .iter()
                    .filter_map(|id| self.index.get(id).copied())
                    .find(|&j| self.edges.contains(&(to, j)));
                if let Some(j) = next {
                    self.transmit(to, j, frame);
                }
            }
            Handled::Deliver(d) => {
                if d.via == crate::Via::Routed {
                    self.report.delivered += 1;
                    *self.report.delivered_at.entry(to).or_default() += 1;
                }
            }
            Handled::Rendezvous { nonce, coordinates } => {
                if let Some(c) = self.rendezvous_waiters.remove(&(to, nonce)) {
                    let run = &mut self.runs[c];
                    run.rendezvous = None;
                    run.rendezvous_addrs.clone_from(&coordinates.addrs);
                    run.cascade.handle_rendezvous(self.now, coordinates.addrs);
                    self.step(c);
                }
            }
            Handled::PunchAck {
                nonce,
                addrs,
                flags,
                public,
            } => {
                if let Some(u) = self.birthday_waiters.remove(&(to, nonce)) {
                    let answer = crate::birthday::Answer::from_ack(flags, addrs, public);
                    self.on_birthday_answer(u, answer);
                } else if let Some(c) = self.punch_waiters.remove(&(to, nonce)) {
                    let run = &self.runs[c];
                    let timed = flags & nodenet_nat::FLAG_TIMED != 0;
                    let candidates = self.cores[to].punch_candidates(
                        run.rendezvous_addrs.iter().chain(&addrs).map(Addr::as_ref),
                    );
                    let edge = self.edge_now(run.from, run.to);
                    self.runs[c]
                        .cascade
                        .handle_punch_answer(self.now, &addrs, timed, candidates, edge);
                    self.step(c);
                }
            }
            Handled::RelayRequested {
                from: caller,
                nonce,
                target,
            } => self.open_relay(to, caller, nonce, target),
            // The core let it through: from the relay asked under that nonce, in time.
            Handled::RelayGranted { nonce, addr, .. } => {
                if let Some((r, c)) = self.relay_waiters.remove(&(to, nonce)) {
                    self.runs[c].relay_steps.push(format!("granted by {r}"));
                    let edge = self.edge_now(self.runs[c].from, self.runs[c].to);
                    self.runs[c]
                        .cascade
                        .handle_relay_answer(self.now, Ok(addr), edge);
                    self.step(c);
                }
            }
            Handled::BirthdayRequested {
                peer,
                nonce,
                addrs,
                public,
            } => self.on_birthday_request(to, peer, nonce, &addrs, public.as_ref()),
            Handled::Done => match route_target.filter(|(t, _)| *t != self.cores[to].id()) {
                Some((t, FrameType::ROUTE)) => self.report.stuck.push((to, t)),
                Some((t, _)) => self.report.stuck_hellos.push((to, t)),
                None => {}
            },
        }
        self.drain(to, now);
    }

    pub(super) fn seen_addr(&self, at: usize, peer: usize) -> Addr {
        self.seen
            .get(&(at, peer))
            .cloned()
            .unwrap_or_else(|| self.socket_addr(peer))
    }

    /// A relay volunteer's answer to a request: a session on its host, the grant to the
    /// caller and the bind to the target (over its edges to both).
    pub(super) fn open_relay(
        &mut self,
        relay: usize,
        caller: NodeId,
        nonce: Nonce,
        target: NodeId,
    ) {
        let (Some(&c), Some(&t)) = (self.index.get(&caller), self.index.get(&target)) else {
            return;
        };
        if !self.edges.contains(&(relay, t)) || !self.edges.contains(&(relay, c)) {
            return;
        }
        let (caller_side, callee_side) = self.net.open_relay(relay);
        // Grants vouch for nobody here: the birthday plays model attestation themselves.
        self.cores[relay].relay_opened(crate::RelayOpened {
            caller,
            nonce,
            target,
            caller_side: ep_addr(caller_side),
            callee_side: ep_addr(callee_side),
            caller_seen: None,
            target_seen: None,
        });
    }

    /// Records hops of a Route frame arriving at its target (first copy only).
    pub(super) fn note_route(&mut self, at: usize, frame: &[u8]) {
        let Ok((f, _)) = Frame::parse(frame) else {
            return;
        };
        if f.frame_type() != FrameType::ROUTE {
            return;
        }
        let Ok(m) = MsgRef::parse(f.payload()) else {
            return;
        };
        if m.target != self.cores[at].id() {
            return;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&m.sig[..16]);
        // Counted edge by edge (a detour clamps the TTL, so it no longer tells the hops).
        let hops = self.route_hops.get(&(key, at)).copied().unwrap_or(0);
        if self.first_hops.insert((at, key), hops).is_none() {
            self.report.hops.push(hops);
        }
    }

    pub(super) fn transmit(&mut self, from: usize, to: usize, frame: Vec<u8>) {
        if let Ok((f, _)) = Frame::parse(&frame) {
            if f.frame_type() == FrameType::ROUTE {
                self.report.route_frames += 1;
                if let Ok(m) = MsgRef::parse(f.payload()) {
                    let mut key = [0u8; 16];
                    key.copy_from_slice(&m.sig[..16]);
                    let h = self.route_hops.get(&(key, from)).copied().unwrap_or(0);
                    self.route_hops.insert((key, to), h.saturating_add(1));
                }
            }
        }
        let at = self.now.after(self.latency);
        self.push(at, Ev::Frame { to, from, frame });
    }

    /// Carries out node `i`'s actions, then sets its timer to the core's next deadline if
    /// that came closer.
    pub(super) fn drain(&mut self, i: usize, _now: Now) {
        self.drain_actions(i);
        // Until its staggered first tick a node's timer is not re-armed (a new core's
        // deadline is "now"): a punch volley due before then waits for that tick. Connects
        // start only after the overlay converged, long after every first tick.
        if !self.ticked[i] {
            return;
        }
        let due = self.cores[i].poll_timeout().max(self.now);
        if due < self.timers[i] {
            self.timers[i] = due;
            self.push(due, Ev::Tick(i));
        }
    }

    fn drain_actions(&mut self, i: usize) {
        while let Some(action) = self.cores[i].poll_action() {
            match action {
                Action::Send { to, frame } => {
                    if let Some(&j) = self.index.get(&to) {
                        if self.edges.contains(&(i, j)) {
                            self.transmit(i, j, frame);
                        }
                    }
                }
                Action::SendAny { to, frame } => {
                    let next = to
                        .iter()
                        .filter_map(|id| self.index.get(id).copied())
                        .find(|&j| self.edges.contains(&(i, j)));
                    if let Some(j) = next {
                        self.transmit(i, j, frame);
                    }
                }
                Action::Dial { contact, timeout } => {
                    if let Some(&j) = self.index.get(&contact.id) {
                        self.start_dial(i, j, eps(&contact.addrs), timeout, Purpose::Overlay);
                    } else {
                        self.cores[i].on_dial_finished(&contact.id);
                    }
                }
                Action::CheckOwnIp { addr } => {
                    // A host owns the IP of its own socket, nothing else.
                    let own =
                        Ep::parse(&addr.endpoint).is_some_and(|e| e.ip == self.net.socket(i).ip);
                    self.cores[i].on_own_ip(&addr, own);
                }
                Action::Notify(_) => {}
                Action::Punch { addr } => {
                    // What a punch datagram does is open the sender's NAT; where it lands
                    // does not matter.
                    if let Some(ep) = Ep::parse(&addr.endpoint) {
                        let _ = self.net.send(i, ep);
                    }
                }
                Action::Close(peer) => {
                    if let Some(&j) = self.index.get(&peer) {
                        if self.edges.remove(&(i, j)) {
                            self.relayed.remove(&(i, j));
                            let at = self.now.after(self.latency);
                            self.push(at, Ev::Closed { at: j, peer: i });
                        }
                    }
                }
            }
        }
    }
}
