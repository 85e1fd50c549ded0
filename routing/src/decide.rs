//! Greedy forwarding: where a routed frame goes next, decided without allocating.

use nodenet_kad::NodeId;

use crate::edges::{Edges, KMIN};
use crate::msg::{MAX_AVOID, MAX_HOPS};

/// Candidates a forwarding decision offers, in order, for local repair.
pub const MAX_CANDIDATES: usize = 8;

/// An ordered candidate list in a fixed buffer that [`decide`] fills. The caller keeps one and
/// reuses it, so deciding costs no allocation and no large copies.
#[derive(Clone, Copy, Debug)]
pub struct Candidates {
    ids: [NodeId; MAX_CANDIDATES],
    len: usize,
}

impl Candidates {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            ids: [NodeId::ZERO; MAX_CANDIDATES],
            len: 0,
        }
    }

    /// The candidates of the last [`Decision::Forward`], best first.
    pub fn as_slice(&self) -> &[NodeId] {
        &self.ids[..self.len]
    }

    /// Puts `id` first (moving it up if present; the last one falls off a full list).
    pub fn prefer(&mut self, id: NodeId) {
        let at = self.as_slice().iter().position(|c| *c == id);
        let end = match at {
            Some(i) => i,
            None => {
                self.len = (self.len + 1).min(MAX_CANDIDATES);
                self.len - 1
            }
        };
        self.ids.copy_within(0..end, 1);
        self.ids[0] = id;
    }

    /// Empties the list.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for Candidates {
    fn default() -> Self {
        Self::new()
    }
}

/// What to do with a routed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is for us.
    Deliver,
    /// Send it on with `ttl`, to the first of the candidates (now in the caller's
    /// [`Candidates`]) that takes it: live edges strictly closer to the target than we are,
    /// best first.
    Forward {
        /// The TTL to write into the frame.
        ttl: u8,
    },
    /// Drop it.
    Drop(DropReason),
}

/// Why a frame goes no further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its hops are used up.
    TtlExpired,
    /// No live edge outside the avoid-set is closer to the target than we are: we are the
    /// closest reachable node (a lookup is answered here).
    LocalOptimum,
}

/// Decides where a routed frame for `target` with `ttl` hops left goes from `self_id`,
/// writing the forwarding candidates into `out`.
///
/// Recursive and greedy: deliver if it is ours; otherwise clamp the TTL to 16 (a peer cannot
/// buy more hops) and drop at zero; otherwise forward to the live edges strictly closer to the
/// target than we are and not in the avoid-set, best first, up to [`MAX_CANDIDATES`].
pub fn decide(
    self_id: &NodeId,
    edges: &Edges,
    target: &NodeId,
    ttl: u8,
    avoid: impl Fn(&NodeId) -> bool,
    out: &mut Candidates,
) -> Decision {
    out.len = 0;
    if target == self_id {
        return Decision::Deliver;
    }
    let ttl = ttl.min(MAX_HOPS);
    if ttl == 0 {
        return Decision::Drop(DropReason::TtlExpired);
    }
    out.len = edges.closest_within(target, Some(self_id), &mut out.ids, |id| !avoid(id));
    if out.len == 0 {
        return Decision::Drop(DropReason::LocalOptimum);
    }
    Decision::Forward { ttl: ttl - 1 }
}

/// The first hops of a multi-path send: up to [`KMIN`] distinct live edges closest to the
/// target, and for each copy the avoid-set that steers it apart from the others.
#[derive(Clone, Copy, Debug)]
pub struct FirstHops {
    hops: [NodeId; KMIN],
    len: usize,
}

impl FirstHops {
    /// The first hops, closest first.
    pub fn hops(&self) -> &[NodeId] {
        &self.hops[..self.len]
    }

    /// Makes `id` one of the first hops: added if there is room, else in place of the
    /// farthest one (a hop known to lead back toward the target, say).
    pub fn include(&mut self, id: NodeId) {
        if self.hops().contains(&id) {
            return;
        }
        if self.len < KMIN {
            self.hops[self.len] = id;
            self.len += 1;
        } else {
            self.hops[KMIN - 1] = id;
        }
    }

    /// The avoid-set of copy `i`: the other copies' first hops.
    pub fn avoid_for(&self, i: usize) -> ([NodeId; MAX_AVOID], usize) {
        let mut out = [NodeId::ZERO; MAX_AVOID];
        let mut n = 0;
        for (j, id) in self.hops().iter().enumerate() {
            if j != i && n < MAX_AVOID {
                out[n] = *id;
                n += 1;
            }
        }
        (out, n)
    }
}

/// Picks the first hops for originating a message to `target`.
pub fn first_hops(edges: &Edges, target: &NodeId) -> FirstHops {
    let mut hops = FirstHops {
        hops: [NodeId::ZERO; KMIN],
        len: 0,
    };
    hops.len = edges.closest_into(target, &mut hops.hops, |_| true);
    hops
}
