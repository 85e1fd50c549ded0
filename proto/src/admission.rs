//! Admission of what a peer opens beside the overlay (media sessions, streams): the gates in
//! their order, as a pure decision over facts the driver supplies.
//!
//! The order is the contract: the cheapest check and the one that needs no application first
//! (proof of work), then whether anything would take it (a handler), then the application's
//! word on this peer (its hook), and last the caps, so a refused attempt never holds a slot.
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
        let mine = self.live_for(&peer);
        if self.total >= self.caps.total || mine >= self.caps.per_peer {
            return false;
        }
        self.total += 1;
        *self.per_peer.entry(peer).or_default() += 1;
        true
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
    /// Whether something would take it.
    pub handled: bool,
}

/// Runs `attempt` through the gates in order; on success it holds the slot `take_slot` took
/// (usually [`Slots::take`] under the driver's lock, which this way is never held while the
/// application's hook runs). `allow` (that hook) is asked only once the cheaper gates passed.
///
/// # Errors
/// The first [`Gate`] that refused it; then no slot was taken.
pub fn admit(
    attempt: Attempt,
    allow: impl FnOnce(&NodeId) -> bool,
    take_slot: impl FnOnce(NodeId) -> bool,
) -> Result<(), Gate> {
    if attempt.difficulty > 0 && !nodenet_pow::verify(&attempt.peer, attempt.difficulty) {
        return Err(Gate::SubPow);
    }
    if !attempt.handled {
        return Err(Gate::NoHandler);
    }
    if !allow(&attempt.peer) {
        return Err(Gate::Refused);
    }
    if !take_slot(attempt.peer) {
        return Err(Gate::OverCap);
    }
    Ok(())
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
            handled: true,
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
        let caps = Caps {
            total: 1,
            per_peer: 1,
        };
        let mut s = Slots::new(caps);
        // A NodeId of all 0xff bytes has no leading zero bits: below any difficulty. The hook
        // is not even asked.
        let weak = Attempt {
            difficulty: 8,
            ..attempt(id(0xff))
        };
        assert_eq!(
            admit(
                weak,
                |_| unreachable!("asked before the pow gate"),
                |p| s.take(p)
            ),
            Err(Gate::SubPow)
        );
        let unhandled = Attempt {
            handled: false,
            ..attempt(id(1))
        };
        assert_eq!(
            admit(
                unhandled,
                |_| unreachable!("asked without a handler"),
                |p| s.take(p)
            ),
            Err(Gate::NoHandler)
        );
        assert_eq!(
            admit(attempt(id(1)), |_| false, |p| s.take(p)),
            Err(Gate::Refused)
        );
        assert_eq!(s.live(), 0, "refusals hold nothing");
        assert_eq!(admit(attempt(id(1)), |_| true, |p| s.take(p)), Ok(()));
        assert_eq!(
            admit(attempt(id(2)), |_| true, |p| s.take(p)),
            Err(Gate::OverCap)
        );
        // A zero NodeId meets any difficulty.
        let strong = Attempt {
            difficulty: 8,
            ..attempt(id(0))
        };
        assert_eq!(admit(strong, |_| true, |p| s.take(p)), Err(Gate::OverCap));
    }
}
