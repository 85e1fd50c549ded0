//! Make-before-break: when a relayed edge tries to become a direct one.
//!
//! A connect that ended on a relay keeps the relayed edge (it works) and tries again later
//! to replace it: a hole-punch, then (a symmetric NAT on one side) a birthday punch. The
//! peer's relays may not have answered at connect time, or a NAT mapping may have changed.
//! A punched edge wins the crossed-connection tie-break over the relayed one
//! ([`crate::links::keep_new`]), which drains and closes, so nothing is lost in between.
//!
//! [`Upgrade`] is the schedule of one relayed edge: it says when to try, and stops once
//! the edge is no longer relayed, an attempt succeeded, or the schedule is spent.

use std::time::Duration;

use nodenet_routing::Time;

/// When a relayed edge tries to upgrade to a punched one: these long after it came up
/// (each delay counts from the previous try's end).
pub const UPGRADE_AFTER: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// The upgrade schedule of one relayed edge. See the module docs.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The next try, or `None` once the schedule is over or a try runs.
    next: Option<Time>,
    /// Tries started.
    tried: usize,
    done: bool,
}

/// What [`Upgrade::handle_timeout`] asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Not yet: wait until [`Upgrade::poll_timeout`].
    Wait,
    /// Try now (a punch, then a birthday punch), and report with [`Upgrade::handle_tried`].
    Try,
    /// Over: the edge is gone or direct, an attempt succeeded, or the schedule is spent.
    Done,
}

impl Upgrade {
    /// The schedule of an edge that became relayed at `now`.
    pub fn new(now: Time) -> Self {
        Self {
            next: Some(now.after(UPGRADE_AFTER[0])),
            tried: 0,
            done: false,
        }
    }

    /// When [`Upgrade::handle_timeout`] is due, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.done { None } else { self.next }
    }

    /// Time passed; `relayed`: whether our edge to the peer is still relayed.
    pub fn handle_timeout(&mut self, now: Time, relayed: bool) -> UpgradeStep {
        if self.done {
            return UpgradeStep::Done;
        }
        if !relayed {
            self.done = true;
            return UpgradeStep::Done;
        }
        match self.next {
            Some(at) if now >= at => {
                self.next = None;
                self.tried += 1;
                UpgradeStep::Try
            }
            _ => UpgradeStep::Wait,
        }
    }

    /// The try ended at `now`: `upgraded` when a direct edge replaced the relayed one.
    pub fn handle_tried(&mut self, now: Time, upgraded: bool) {
        if upgraded || self.tried >= UPGRADE_AFTER.len() {
            self.done = true;
            return;
        }
        self.next = Some(now.after(UPGRADE_AFTER[self.tried]));
    }

    /// True once the schedule is over.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Time {
        Time(0).after(Duration::from_secs(secs))
    }

    #[test]
    fn tries_at_each_delay_after_the_last_try_until_spent() {
        let mut u = Upgrade::new(s(0));
        assert_eq!(u.poll_timeout(), Some(s(10)));
        assert_eq!(u.handle_timeout(s(9), true), UpgradeStep::Wait);
        assert_eq!(u.handle_timeout(s(10), true), UpgradeStep::Try);
        // While a try runs, nothing is due.
        assert_eq!(u.poll_timeout(), None);
        assert_eq!(u.handle_timeout(s(30), true), UpgradeStep::Wait);
        u.handle_tried(s(15), false);
        assert_eq!(u.poll_timeout(), Some(s(75)));
        assert_eq!(u.handle_timeout(s(75), true), UpgradeStep::Try);
        u.handle_tried(s(80), false);
        assert_eq!(u.poll_timeout(), Some(s(380)));
        assert_eq!(u.handle_timeout(s(380), true), UpgradeStep::Try);
        u.handle_tried(s(390), false);
        assert!(u.is_done());
        assert_eq!(u.poll_timeout(), None);
        assert_eq!(u.handle_timeout(s(10_000), true), UpgradeStep::Done);
    }

    #[test]
    fn stops_once_the_edge_is_direct_or_an_attempt_succeeded() {
        let mut u = Upgrade::new(s(0));
        assert_eq!(u.handle_timeout(s(10), false), UpgradeStep::Done);
        assert_eq!(u.poll_timeout(), None);

        let mut u = Upgrade::new(s(0));
        assert_eq!(u.handle_timeout(s(10), true), UpgradeStep::Try);
        u.handle_tried(s(11), true);
        assert!(u.is_done());
        assert_eq!(u.handle_timeout(s(100), true), UpgradeStep::Done);
    }
}
