//! Make-before-break in the simulator: a connect that ended on a relay keeps an
//! [`Upgrade`] schedule, as a node's driver does, and at each of its tries, while the edge is
//! still relayed, the caller runs the punch step alone ([`Cascade::upgrade`], carried out
//! like any connect's steps but recorded on the connect it upgrades) and, if that fails, a
//! birthday punch. A try that gets through replaces the relayed edge.

use super::*;
use crate::upgrade::{Upgrade, UpgradeStep};

/// The upgrade schedule of one relayed connect.
pub(super) struct Schedule {
    pub(super) caller: usize,
    pub(super) target: usize,
    /// The connect's record in the report.
    pub(super) record: usize,
    pub(super) upgrade: Upgrade,
}

impl Sim {
    /// Connect `record` from `caller` to `target` ended relayed: its schedule starts now.
    pub(super) fn schedule_upgrades(&mut self, caller: usize, target: usize, record: usize) {
        self.schedules.push(Schedule {
            caller,
            target,
            record,
            upgrade: Upgrade::new(self.now),
        });
        self.next_upgrade(self.schedules.len() - 1);
    }

    fn next_upgrade(&mut self, s: usize) {
        if let Some(t) = self.schedules[s].upgrade.poll_timeout() {
            self.push(t.max(self.now), Ev::Upgrade(s));
        }
    }

    /// Schedule `s`'s deadline: a try, if the edge is still relayed.
    pub(super) fn on_upgrade(&mut self, s: usize) {
        let (caller, target) = (self.schedules[s].caller, self.schedules[s].target);
        // A node that died runs nothing more (a dead peer's edge is as good as gone).
        let relayed = self.alive[caller]
            && self.alive[target]
            && self.edge_now(caller, target) == EdgeNow::Relayed;
        match self.schedules[s].upgrade.handle_timeout(self.now, relayed) {
            UpgradeStep::Wait => self.next_upgrade(s),
            UpgradeStep::Done => {}
            UpgradeStep::Try => {
                self.report.connects[self.schedules[s].record].upgrade_tries += 1;
                let symmetric = self.cores[caller].nat_type() == nodenet_nat::NatType::Symmetric;
                let cascade = Cascade::upgrade(self.now, symmetric, self.cascade_config());
                self.start_run(caller, target, cascade, Some(s));
            }
        }
    }

    /// The punch step of schedule `s`'s try ended: `punched` if it replaced the relayed
    /// edge; if not, the birthday punch is next.
    pub(super) fn upgrade_punched(&mut self, s: usize, punched: bool) {
        let Schedule {
            caller,
            target,
            record,
            ..
        } = self.schedules[s];
        if punched {
            self.report.connects[record].upgraded = Some(Upgraded::Punched);
            self.upgrade_tried(s, true);
        } else {
            self.start_birthday(caller, target, record, Some(s));
        }
    }

    /// Schedule `s`'s try ended (its birthday punch too, if one ran).
    pub(super) fn upgrade_tried(&mut self, s: usize, upgraded: bool) {
        if upgraded {
            let caller = self.schedules[s].caller;
            self.cores[caller].count_upgrade();
        }
        self.schedules[s].upgrade.handle_tried(self.now, upgraded);
        self.next_upgrade(s);
    }

    /// A punched dial from `a` to `b` got through, `landed` where it did (the address `a`
    /// dialed, and where `b` saw it come from): if that is not a relay's and the edge was
    /// relayed, the punched one takes its place and each side sees the other where it
    /// landed. True if it replaced the relayed edge.
    pub(super) fn punched_over_relay(&mut self, a: usize, b: usize, landed: (Ep, Ep)) -> bool {
        let (at, seen) = landed;
        if self.net.relay_of(at).is_some() || !self.relayed.remove(&(a, b)) {
            return false;
        }
        self.relayed.remove(&(b, a));
        self.seen.insert((a, b), ep_addr(at));
        self.seen.insert((b, a), ep_addr(seen));
        let (aid, bid) = (self.cores[a].id(), self.cores[b].id());
        self.cores[a].on_edge_replaced(&bid, false);
        self.cores[b].on_edge_replaced(&aid, false);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{NatKind, Upgraded};

    #[test]
    fn an_upgrade_punch_replaces_a_relayed_edge_between_two_cones() {
        let kinds: Vec<NatKind> = (0..30)
            .map(|i| match i % 3 {
                0 => NatKind::Public,
                _ => NatKind::PortRestricted,
            })
            .collect();
        let ids: Vec<Identity> = (0..30u8).map(|i| Identity::from_seed(&[i; 32])).collect();
        let latency = Duration::from_millis(10);
        let mut sim = Sim::with_nats(ids, &CoreConfig::default(), latency, 4, &kinds);
        sim.run_for(Duration::from_secs(30));
        let (a, b) = (1, 2);
        sim.connect(a, b);
        sim.run_for(Duration::from_secs(10));
        let record = sim.report.connects.len() - 1;
        assert_eq!(sim.report.connects[record].path, Some(Path::Punched));
        // As if their connect had ended on a relay (a punch that failed at the time): each
        // sees the other at a relay's socket.
        let (aid, bid) = (sim.cores[a].id(), sim.cores[b].id());
        let (for_a, for_b) = sim.net.open_relay(0);
        sim.seen.insert((a, b), ep_addr(for_a));
        sim.seen.insert((b, a), ep_addr(for_b));
        sim.relayed.extend([(a, b), (b, a)]);
        sim.cores[a].set_edge_relayed(&bid, true);
        sim.cores[b].set_edge_relayed(&aid, true);
        sim.schedule_upgrades(a, b, record);
        sim.run_for(Duration::from_secs(9));
        assert_eq!(sim.edge_now(a, b), EdgeNow::Relayed, "no try before 10 s");
        sim.run_for(Duration::from_secs(6));
        let r = &sim.report.connects[record];
        assert_eq!((r.upgrade_tries, r.upgraded), (1, Some(Upgraded::Punched)));
        assert_eq!(sim.edge_now(a, b), EdgeNow::Direct);
        assert_eq!(sim.edge_now(b, a), EdgeNow::Direct);
        // Each now sees the other off the relay, where the punched dial landed.
        for (x, y) in [(a, b), (b, a)] {
            let ep = Ep::parse(&sim.seen[&(x, y)].endpoint).unwrap();
            assert_eq!(sim.net.relay_of(ep), None);
        }
        assert_eq!(sim.cores[a].stats().relay_upgrades, 1);
        // Nothing more is tried for an edge no longer relayed.
        sim.run_for(Duration::from_secs(120));
        assert_eq!(sim.report.connects[record].upgrade_tries, 1);
    }
}
