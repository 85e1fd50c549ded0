//! Dials as handshakes through the NAT model, retransmitted until their timeout, and the
//! edges they bring up.

use super::*;

impl Sim {
    pub(super) fn edge_now(&self, from: usize, to: usize) -> EdgeNow {
        if !self.edges.contains(&(from, to)) {
            EdgeNow::None
        } else if self.relayed.contains(&(from, to)) {
            EdgeNow::Relayed
        } else {
            EdgeNow::Direct
        }
    }

    pub(super) fn start_dial(
        &mut self,
        from: usize,
        to: usize,
        addrs: Vec<Ep>,
        timeout: Duration,
        purpose: Purpose,
    ) {
        let d = self.next_dial;
        self.next_dial += 1;
        self.dials.insert(
            d,
            Dial {
                from,
                to,
                addrs,
                deadline: self.now.after(timeout),
                purpose,
                through: None,
            },
        );
        self.push(self.now, Ev::DialTry(d));
    }

    /// One round of handshakes to every address of dial `d`.
    pub(super) fn dial_try(&mut self, d: usize) {
        let Some(dial) = self.dials.get(&d) else {
            return;
        };
        let (from, to, deadline) = (dial.from, dial.to, dial.deadline);
        let addrs = dial.addrs.clone();
        if self.alive[from] && self.alive[to] {
            for ep in addrs {
                if let Some(through) = self.net.handshake(from, ep, to) {
                    if let Some(dial) = self.dials.get_mut(&d) {
                        dial.through = Some(through);
                    }
                    self.push(self.now.after(self.latency * 2), Ev::Up(d));
                    return;
                }
            }
        }
        if self.now >= deadline {
            self.push(self.now, Ev::Up(d));
        } else {
            let at = self.now.after(DIAL_RETRY).min(deadline);
            self.push(at, Ev::DialTry(d));
        }
    }

    /// Dial `d` ended: through, or not.
    pub(super) fn dial_up(&mut self, now: Now, d: usize) {
        let Some(dial) = self.dials.remove(&d) else {
            return;
        };
        let (from, to) = (dial.from, dial.to);
        let ok = match dial.through {
            Some(_) if !self.alive[from] || !self.alive[to] => false,
            Some(_) if self.edges.contains(&(from, to)) => true,
            Some((at, seen)) => self.edge_up(now, from, to, at, seen),
            None => false,
        };
        match dial.purpose {
            Purpose::Overlay => {
                let id = self.cores[to].id();
                self.cores[from].on_dial_finished(&id);
                if !ok && self.alive[from] {
                    self.cores[from].on_dial_failed(now, &id);
                }
                self.drain(from, now);
            }
            Purpose::Connect(c) => {
                if ok {
                    self.runs[c].landed = dial.through;
                }
                let edge = self.edge_now(from, to);
                let result = if ok { Ok(()) } else { Err("no handshake") };
                if !self.runs[c].relay_steps.is_empty() {
                    self.runs[c].relay_steps.push(format!("dialed: {result:?}"));
                }
                let symmetric = self.cores[from].nat_type() == nodenet_nat::NatType::Symmetric;
                self.runs[c].cascade.set_symmetric(symmetric);
                self.runs[c].cascade.handle_dialed(self.now, result, edge);
                self.step(c);
            }
            Purpose::Link(c) => {
                self.runs[c].relay_steps.push(format!("linked {to}: {ok}"));
                if ok {
                    self.runs[c].linked.push(to);
                }
                let edge = self.edge_now(from, self.runs[c].to);
                let result = if ok { Ok(()) } else { Err("no handshake") };
                self.runs[c]
                    .cascade
                    .handle_relay_linked(self.now, result, edge);
                self.step(c);
            }
        }
    }

    /// Brings up the edge `from` dialed to `to` at `at`, where `to` saw it come from `seen`.
    pub(super) fn edge_up(&mut self, now: Now, from: usize, to: usize, at: Ep, seen: Ep) -> bool {
        let (fid, tid) = (self.cores[from].id(), self.cores[to].id());
        let (fkey, tkey) = (self.keys[from], self.keys[to]);
        let (at_addr, seen_addr) = (ep_addr(at), ep_addr(seen));
        let relay = self.net.relay_of(at);
        let mut ok = false;
        if self.cores[to]
            .on_edge_up(now, fid, Some(fkey), false, &seen_addr)
            .is_ok()
        {
            if self.cores[from]
                .on_edge_up(now, tid, Some(tkey), true, &at_addr)
                .is_ok()
            {
                self.edges.insert((from, to));
                self.edges.insert((to, from));
                self.seen.insert((to, from), seen_addr);
                self.seen.insert((from, to), at_addr);
                if let Some(r) = relay {
                    self.relayed.insert((from, to));
                    self.relayed.insert((to, from));
                    self.cores[from].set_edge_relayed(&tid, true);
                    self.cores[to].set_edge_relayed(&fid, true);
                    self.report.relayed_by[r] += 1;
                }
                ok = true;
            } else {
                self.cores[to].on_edge_down(now, &fid);
            }
        }
        self.drain(from, now);
        self.drain(to, now);
        ok
    }
}
