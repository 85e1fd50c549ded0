//! Connects: the proto `Cascade` carried out command by command, and their records.

use super::*;

impl Sim {
    /// Starts a connect from node `from` to node `to` (by its NodeId alone, as
    /// `nodenet::Node::connect` does); its record lands in [`SimReport::connects`].
    pub fn connect(&mut self, from: usize, to: usize) {
        let target = self.cores[to].id();
        let known = self.cores[from].known_addrs(&target);
        let symmetric = self.cores[from].nat_type() == nodenet_nat::NatType::Symmetric;
        let cascade = Cascade::new(self.now, known, symmetric, self.cascade_config());
        self.start_run(from, to, cascade, None);
    }

    /// The cascade's timing, as a node's defaults give it.
    pub(super) fn cascade_config(&self) -> CascadeConfig {
        CascadeConfig {
            direct_dial_timeout: crate::connect::DIRECT_DIAL_TIMEOUT,
            rendezvous_timeout: Duration::from_secs(10),
        }
    }

    /// Carries out `cascade` from `from` to `to`: a connect, or the punch step of upgrade
    /// schedule `upgrade`'s try.
    pub(super) fn start_run(
        &mut self,
        from: usize,
        to: usize,
        cascade: Cascade<&'static str>,
        upgrade: Option<usize>,
    ) {
        let c = self.runs.len();
        self.runs.push(Run {
            from,
            to,
            started: self.now,
            cascade,
            rendezvous: None,
            rendezvous_addrs: Vec::new(),
            punch: None,
            done: false,
            linked: Vec::new(),
            relay_steps: Vec::new(),
            upgrade,
            relay_ask: None,
            landed: None,
        });
        if upgrade.is_none() && self.edges.contains(&(from, to)) {
            // An edge we already hold: nothing to do.
            self.finish(c, Some(Path::Direct), None, None);
            return;
        }
        self.step(c);
    }

    /// Carries out connect `c`'s commands; records its end.
    pub(super) fn step(&mut self, c: usize) {
        if self.runs[c].done {
            return;
        }
        let (from, to) = (self.runs[c].from, self.runs[c].to);
        let target = self.cores[to].id();
        let now = self.wall(self.now);
        while let Some(command) = self.runs[c].cascade.poll_command() {
            match command {
                Command::Dial {
                    addrs,
                    timeout,
                    via,
                } => {
                    if let Some(relay) = via {
                        let r = self.index.get(&relay).copied();
                        self.runs[c].relay_steps.push(format!("dial via {r:?}"));
                    }
                    self.start_dial(from, to, eps(&addrs), timeout, Purpose::Connect(c));
                }
                Command::StartRendezvous => match self.cores[from].start_rendezvous(now, target) {
                    Ok(nonce) => {
                        self.runs[c].rendezvous = Some(nonce);
                        self.rendezvous_waiters.insert((from, nonce), c);
                    }
                    Err(_) => self.runs[c]
                        .cascade
                        .handle_rendezvous_refused(crate::connect::Failure::Unroutable),
                },
                Command::ResendRendezvous => {
                    if let Some(nonce) = self.runs[c].rendezvous {
                        let _ = self.cores[from].resend_rendezvous(now, &nonce);
                    }
                }
                Command::StartPunch => match self.cores[from].start_punch(now, target) {
                    Ok(nonce) => {
                        self.runs[c].punch = Some(nonce);
                        self.punch_waiters.insert((from, nonce), c);
                    }
                    Err(_) => {
                        let edge = self.edge_now(from, to);
                        self.runs[c].cascade.handle_punch_refused(
                            self.now,
                            crate::connect::Failure::Unroutable,
                            edge,
                        );
                    }
                },
                Command::PunchSync => {
                    if let Some(nonce) = self.runs[c].punch {
                        let _ = self.cores[from].punch_sync(now, target, &nonce);
                    }
                }
                Command::PunchBurst { addrs } => {
                    self.cores[from].punch_burst(now, Some(target), addrs);
                }
                Command::LookupRelays => self.cores[from].lookup_relays(now, target),
                Command::FindRelays { n } => {
                    let relays = self.cores[from].relays_near(now, &target, n);
                    let found: Vec<String> = relays
                        .iter()
                        .map(|r| match self.index.get(&r.relay) {
                            Some(&i) => format!(
                                "{i} ({}, {} addrs, edge {}, edge to target {})",
                                self.net.kind(i).name(),
                                r.addrs.len(),
                                self.edges.contains(&(from, i)),
                                self.edges.contains(&(i, to)),
                            ),
                            None => "unknown".to_string(),
                        })
                        .collect();
                    self.runs[c]
                        .relay_steps
                        .push(format!("found [{}]", found.join(", ")));
                    let edge = self.edge_now(from, to);
                    self.runs[c].cascade.handle_relays(self.now, relays, edge);
                }
                Command::LinkRelay {
                    relay,
                    addrs,
                    timeout,
                } => {
                    let r = self.index.get(&relay).copied();
                    self.runs[c]
                        .relay_steps
                        .push(format!("link {r:?} ({} addrs)", addrs.len()));
                    match r {
                        Some(r) if self.edges.contains(&(from, r)) => {
                            let edge = self.edge_now(from, to);
                            self.runs[c]
                                .cascade
                                .handle_relay_linked(self.now, Ok(()), edge);
                        }
                        Some(r) if !addrs.is_empty() => {
                            self.start_dial(from, r, eps(&addrs), timeout, Purpose::Link(c));
                        }
                        _ => {
                            let edge = self.edge_now(from, to);
                            self.runs[c].cascade.handle_relay_linked(
                                self.now,
                                Err("no address"),
                                edge,
                            );
                        }
                    }
                }
                Command::AskRelay { relay } => {
                    let r = self.index.get(&relay).copied();
                    self.runs[c].relay_steps.push(format!("ask {r:?}"));
                    // The last relay's request is over: withdrawn, as a node's is.
                    self.withdraw_relay_ask(c);
                    let asked = r
                        .filter(|&r| self.edges.contains(&(from, r)))
                        .and_then(|r| Some((r, self.cores[from].ask_relay(now, relay, target)?)));
                    match asked {
                        Some((r, nonce)) => {
                            self.relay_waiters.insert((from, nonce), (r, c));
                            self.runs[c].relay_ask = Some(nonce);
                        }
                        None => {
                            let edge = self.edge_now(from, to);
                            self.runs[c].cascade.handle_relay_answer(
                                self.now,
                                Err(crate::connect::Failure::NoRelay),
                                edge,
                            );
                        }
                    }
                }
            }
        }
        self.drain(from, now);
        match self.runs[c].cascade.outcome().cloned() {
            Some(Outcome::Connected { path, how }) => {
                let relay = match how {
                    How::Relay { addr, .. } => {
                        Ep::parse(&addr.endpoint).and_then(|ep| self.net.relay_of(ep))
                    }
                    _ => None,
                };
                self.finish(c, Some(path), relay, None);
            }
            Some(Outcome::Failed { step, error }) => {
                self.finish(c, None, None, Some(format!("{step}: {error:?}")));
            }
            None => {
                if let Some(t) = self.runs[c].cascade.poll_timeout() {
                    self.push(t.max(self.now), Ev::Wake(c));
                }
            }
        }
    }

    /// Withdraws run `c`'s open relay request, if any (its waiter and the core's ask).
    fn withdraw_relay_ask(&mut self, c: usize) {
        if let Some(nonce) = self.runs[c].relay_ask.take() {
            let from = self.runs[c].from;
            self.relay_waiters.remove(&(from, nonce));
            self.cores[from].cancel_relay_ask(&nonce);
        }
    }

    pub(super) fn finish(
        &mut self,
        c: usize,
        path: Option<Path>,
        relay: Option<usize>,
        failure: Option<String>,
    ) {
        let run = &mut self.runs[c];
        run.done = true;
        let (from, linked) = (run.from, std::mem::take(&mut run.linked));
        for r in linked {
            if self.edges.remove(&(from, r)) {
                let now = self.wall(self.now);
                let id = self.cores[r].id();
                self.cores[from].on_edge_down(now, &id);
                self.drain(from, now);
                let at = self.now.after(self.latency);
                self.push(at, Ev::Closed { at: r, peer: from });
            }
        }
        self.withdraw_relay_ask(c);
        let run = &mut self.runs[c];
        if let Some(nonce) = run.rendezvous.take() {
            self.rendezvous_waiters.remove(&(run.from, nonce));
        }
        if let Some(nonce) = run.punch.take() {
            self.punch_waiters.remove(&(run.from, nonce));
        }
        let (from, to) = (run.from, run.to);
        if let Some(s) = run.upgrade {
            // An upgrade's punch (its connect is recorded already): it counts if its dial
            // landed off the relay and took the relayed edge's place.
            let landed = run.landed.take();
            let replaced =
                path.is_some() && landed.is_some_and(|l| self.punched_over_relay(from, to, l));
            self.upgrade_punched(s, replaced);
            return;
        }
        // Kept for a failure only (a 10,000-node run holds every record).
        let mut relay_steps = std::mem::take(&mut run.relay_steps);
        if failure.is_none() {
            relay_steps = Vec::new();
        }
        let record = ConnectRecord {
            caller: from,
            target: to,
            from: self.net.kind(from),
            to: self.net.kind(to),
            path,
            relay,
            time: self.now.since(run.started),
            failure,
            birthday: None,
            relay_steps,
            upgrade_tries: 0,
            upgraded: None,
        };
        self.report.connects.push(record);
        if path == Some(Path::Relayed) {
            // As a node does: a birthday punch at once, and the upgrade schedule.
            let record = self.report.connects.len() - 1;
            self.start_birthday(from, to, record, None);
            self.schedule_upgrades(from, to, record);
        }
    }
}
