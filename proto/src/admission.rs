//! Admission of what a peer opens beside the overlay (media sessions, streams): the gates in
//! their order, as a pure decision over facts the driver supplies.
//!
//! The order is the contract: the cheapest check and the one that needs no application first
//! (proof of work), then whether anything would take it (a handler), then whether a slot is
//! free (a look that takes nothing), then the application's word on this peer (its hook), and
//! last the slot itself is taken. So the hook is never asked about an attempt the caps would
//! refuse anyway, and a refused attempt never holds a slot.
//! A slot is held until the driver gives it back ([`Slots::give_back`]) when the session or
//! stream ends.

use std::collections::HashMap;

use nodenet_kad::NodeId;

/// How many may be live at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// From all peers together.
    pub total: usize,
    /// From one NodeId (not one IP: peers behind one relay share its address).
    pub per_peer: usize,
}

/// Live admissions, by peer, under [`Caps`].
#[derive(Debug)]
pub struct Slots {
    caps: Caps,
    total: usize,
    per_peer: HashMap<NodeId, usize>,
}

impl Slots {
    /// No slot taken.
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            total: 0,
            per_peer: HashMap::new(),
        }
    }

    /// Takes a slot for `peer` if both caps allow it.
    pub fn take(&mut self, peer: NodeId) -> bool {
        if !self.has_room(&peer) {
            return false;
        }
        self.total += 1;
        *self.per_peer.entry(peer).or_default() += 1;
        true
    }

    /// Whether [`Slots::take`] would grant `peer` a slot now; takes nothing.
    pub fn has_room(&self, peer: &NodeId) -> bool {
        self.total < self.caps.total && self.live_for(peer) < self.caps.per_peer
    }

    /// Gives back a slot of `peer`'s (one that [`Slots::take`] granted).
    pub fn give_back(&mut self, peer: NodeId) {
        let Some(n) = self.per_peer.get_mut(&peer) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.per_peer.remove(&peer);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Slots taken now, in all.
    pub fn live(&self) -> usize {
        self.total
    }

    /// Slots `peer` holds now.
    pub fn live_for(&self, peer: &NodeId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }
}

/// The gate that turned an attempt away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gate {
    /// The peer's NodeId is below the proof-of-work difficulty.
    SubPow,
    /// Nothing would take it (no handler, no listener for its protocol).
    NoHandler,
    /// The application's hook said no to this peer.
    Refused,
    /// A cap is full.
    OverCap,
}

/// What the driver knows of one attempt.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// Who opened it (authenticated by the transport).
    pub peer: NodeId,
    /// The proof-of-work difficulty we demand (0: none).
    pub difficulty: u32,
}

/// Runs `attempt` through the gates in order against `slots`; `handler` is what would take it
/// (`None`: nothing would). On success the attempt holds one of the slots, to be given back
/// with [`Slots::give_back`], and the handler is handed back to take it. `allow` (the application's
/// hook) is asked only once the cheaper gates passed and a slot is free, and `slots` is not
/// borrowed while it runs (the driver's lock on it is never held across the application's
/// code). A slot freed by another attempt while the hook ran is simply still free; one taken
/// meanwhile makes this attempt [`Gate::OverCap`].
///
/// # Errors
/// The first [`Gate`] that refused it; then no slot was taken.
pub fn admit<H, S: std::ops::DerefMut<Target = Slots>>(
    attempt: Attempt,
    handler: Option<H>,
    allow: impl FnOnce(&NodeId) -> bool,
    mut slots: impl FnMut() -> S,
) -> Result<H, Gate> {
    if attempt.difficulty > 0 && !nodenet_pow::verify(&attempt.peer, attempt.difficulty) {
        return Err(Gate::SubPow);
    }
    let Some(handler) = handler else {
        return Err(Gate::NoHandler);
    };
    if !slots().has_room(&attempt.peer) {
        return Err(Gate::OverCap);
    }
    if !allow(&attempt.peer) {
        return Err(Gate::Refused);
    }
    if !slots().take(attempt.peer) {
        return Err(Gate::OverCap);
    }
    Ok(handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn attempt(peer: NodeId) -> Attempt {
        Attempt {
            peer,
            difficulty: 0,
        }
    }

    #[test]
    fn caps_hold_per_peer_and_in_all_and_come_back() {
        let mut s = Slots::new(Caps {
            total: 3,
            per_peer: 2,
        });
        assert!(s.take(id(1)) && s.take(id(1)));
        assert!(!s.take(id(1)), "a third from one peer");
        assert!(s.take(id(2)));
        assert!(!s.take(id(3)), "a fourth in all");
        s.give_back(id(1));
        assert_eq!((s.live(), s.live_for(&id(1))), (2, 1));
        assert!(s.take(id(3)));
        // Giving back what a peer does not hold changes nothing.
        s.give_back(id(9));
        assert_eq!(s.live(), 3);
        for p in [id(1), id(2), id(3)] {
            s.give_back(p);
        }
        assert_eq!(s.live(), 0);
        assert!(s.per_peer.is_empty(), "no empty entries are kept");
    }

    #[test]
    fn the_gates_run_in_order_and_a_refusal_takes_no_slot() {
        let s = std::sync::Mutex::new(Slots::new(Caps {
            total: 1,
            per_peer: 1,
        }));
        let slots = || s.lock().unwrap();
        // A NodeId of all 0xff bytes has no leading zero bits: below any difficulty. The hook
        // is not even asked.
        let weak = Attempt {
            difficulty: 8,
            ..attempt(id(0xff))
        };
        let never = |_: &NodeId| -> bool { unreachable!("the hook was asked too early") };
        assert_eq!(admit(weak, Some(()), never, slots), Err(Gate::SubPow));
        assert_eq!(
            admit(attempt(id(1)), None::<()>, never, slots),
            Err(Gate::NoHandler)
        );
        assert_eq!(
            admit(attempt(id(1)), Some(()), |_| false, slots),
            Err(Gate::Refused)
        );
        assert_eq!(slots().live(), 0, "refusals hold nothing");
        assert_eq!(admit(attempt(id(1)), Some("h"), |_| true, slots), Ok("h"));
        // Full: the hook is not asked about an attempt the caps refuse.
        assert_eq!(
            admit(attempt(id(2)), Some(()), never, slots),
            Err(Gate::OverCap)
        );
        // A zero NodeId meets any difficulty.
        let strong = Attempt {
            difficulty: 8,
            ..attempt(id(0))
        };
        assert_eq!(admit(strong, Some(()), never, slots), Err(Gate::OverCap));
        assert_eq!(slots().live(), 1);
    }

    #[test]
    fn a_slot_taken_while_the_hook_ran_makes_the_attempt_over_cap() {
        let s = std::sync::Mutex::new(Slots::new(Caps {
            total: 1,
            per_peer: 1,
        }));
        // There was room when the hook was asked; another attempt took it meanwhile.
        let hook = |_: &NodeId| s.lock().unwrap().take(id(9));
        assert_eq!(
            admit(attempt(id(1)), Some(()), hook, || s.lock().unwrap()),
            Err(Gate::OverCap)
        );
        assert_eq!(s.lock().unwrap().live_for(&id(1)), 0);
    }
}
