//! The live-edge table: the connections that are up, actively maintained.
//!
//! The edges are chosen to cover the keyspace: the [`SIBLINGS`] closest to us (correctness
//! critical: they are where a message for our neighbourhood ends) and fingers into the
//! populated far buckets. Only outbound edges count toward the connectivity floor; the floor
//! phase says how urgently to dial, and [`Edges::replacement_candidates`] says whom.

use std::time::Duration;

use nodenet_kad::NodeId;

use crate::control::Contact;
use crate::knowledge::Knowledge;
use crate::{SubnetKey, Time, TokenBucket};

/// The closest edges, labelled siblings.
pub const SIBLINGS: usize = 16;
/// Outbound edges wanted.
pub const TARGET_EDGES: usize = 64;
/// Below this many outbound edges, filling is urgent.
pub const LOW_WATER: usize = 8;
/// The hard floor, and the number of disjoint paths a message takes.
pub const KMIN: usize = 3;
/// Normal phase holds until outbound edges drop below `TARGET_EDGES - FILL_HYSTERESIS`.
pub const FILL_HYSTERESIS: usize = 4;
/// Live edges per subnet that replacement prefers (a soft preference).
pub const LIVE_SUBNET_CAP: usize = 2;
/// Control frames per second an edge may send us (tier 2).
pub const CONTROL_RATE: f64 = 16.0;
/// Control-frame burst.
pub const CONTROL_BURST: f64 = 32.0;
/// Routed frames per second an edge may hand us (tier 2).
pub const FORWARD_RATE: f64 = 512.0;
/// Routed-frame burst.
pub const FORWARD_BURST: f64 = 1024.0;

/// Tables up to this many edges take the branch-free closest scan.
const SCAN_MAX: usize = 64;

/// `a < b` for distances as big-endian words; the first word nearly always decides.
#[inline(always)]
fn less(a: &[u64; 4], b: &[u64; 4]) -> bool {
    if a[0] != b[0] {
        return a[0] < b[0];
    }
    (a[1], a[2], a[3]) < (b[1], b[2], b[3])
}

/// How far the node is from its connectivity goals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// No outbound edge at all.
    Bootstrap,
    /// At or below the hard floor [`KMIN`].
    Critical,
    /// At or below [`LOW_WATER`].
    Urgent,
    /// Below [`TARGET_EDGES`].
    NeedsFill,
    /// At the target (held down to `TARGET_EDGES - FILL_HYSTERESIS`).
    Normal,
}

impl Phase {
    /// Dials to start per maintenance tick in this phase.
    pub fn fill_per_tick(self) -> usize {
        match self {
            Self::Bootstrap | Self::Critical => 8,
            Self::Urgent => 4,
            Self::NeedsFill => 2,
            Self::Normal => 0,
        }
    }
}

/// One live edge.
#[derive(Clone, Debug)]
pub struct Edge {
    /// The peer.
    pub id: NodeId,
    /// We dialed it (counts toward the floor).
    pub outbound: bool,
    /// Among the [`SIBLINGS`] closest to us.
    pub sibling: bool,
    /// Last time a frame arrived on it.
    pub last_seen: Time,
    /// The peer's subnet, when known.
    pub subnet: Option<SubnetKey>,
    control: TokenBucket,
    forward: TokenBucket,
}

/// The live-edge table.
#[derive(Clone, Debug)]
pub struct Edges {
    self_id: NodeId,
    edges: Vec<Edge>,
    /// `edges[i].id` as big-endian words, kept in step with `edges`: the hot path scans this
    /// contiguous array instead of striding through whole edges.
    words: Vec<[u64; 4]>,
    phase: Phase,
}

impl Edges {
    /// An empty table for `self_id`.
    pub fn new(self_id: NodeId) -> Self {
        Self {
            self_id,
            edges: Vec::new(),
            words: Vec::new(),
            phase: Phase::Bootstrap,
        }
    }

    /// Registers an edge that came up. False if one to that peer already exists (the caller
    /// keeps one connection per peer).
    pub fn add(
        &mut self,
        id: NodeId,
        outbound: bool,
        subnet: Option<SubnetKey>,
        now: Time,
    ) -> bool {
        if id == self.self_id || self.contains(&id) {
            return false;
        }
        self.words.push(id.to_words());
        self.edges.push(Edge {
            id,
            outbound,
            sibling: false,
            last_seen: now,
            subnet,
            control: TokenBucket::new(CONTROL_RATE, CONTROL_BURST, now),
            forward: TokenBucket::new(FORWARD_RATE, FORWARD_BURST, now),
        });
        self.reclassify();
        true
    }

    /// Forgets an edge that went down.
    pub fn remove(&mut self, id: &NodeId) -> Option<Edge> {
        let i = self.edges.iter().position(|e| e.id == *id)?;
        let e = self.edges.swap_remove(i);
        self.words.swap_remove(i);
        self.reclassify();
        Some(e)
    }

    /// Records traffic on an edge.
    pub fn touch(&mut self, id: &NodeId, now: Time) {
        if let Some(e) = self.get_mut(id) {
            e.last_seen = e.last_seen.max(now);
        }
    }

    /// True if an edge to `id` is up.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.edges.iter().any(|e| e.id == *id)
    }

    /// The edge to `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Edge> {
        self.edges.iter().find(|e| e.id == *id)
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Edge> {
        self.edges.iter_mut().find(|e| e.id == *id)
    }

    /// All edges.
    pub fn iter(&self) -> impl Iterator<Item = &Edge> {
        self.edges.iter()
    }

    /// Number of live edges.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// True with no edge up.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Outbound edges: what the floor counts.
    pub fn outbound(&self) -> usize {
        self.edges.iter().filter(|e| e.outbound).count()
    }

    /// The floor phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Charges a control frame from `id`. An unregistered peer is always refused; our own
    /// frames (`id == self`) are free.
    pub fn allow_control(&mut self, id: &NodeId, now: Time) -> bool {
        if *id == self.self_id {
            return true;
        }
        self.get_mut(id).is_some_and(|e| e.control.allow(now))
    }

    /// Charges a routed frame handed to us by `id` (same rules as [`Edges::allow_control`]).
    pub fn allow_forward(&mut self, id: &NodeId, now: Time) -> bool {
        if *id == self.self_id {
            return true;
        }
        self.get_mut(id).is_some_and(|e| e.forward.allow(now))
    }

    /// Writes the ids of up to `out.len()` edges closest to `target` that pass `keep`, closest
    /// first, and returns how many. Allocation-free.
    pub fn closest_into(
        &self,
        target: &NodeId,
        out: &mut [NodeId],
        keep: impl FnMut(&NodeId) -> bool,
    ) -> usize {
        self.closest_within(target, None, out, keep)
    }

    /// Like [`Edges::closest_into`], counting only edges strictly closer to `target` than
    /// `bound` is (when given). Distances are computed once per edge, on cached words, and an
    /// edge that cannot make the list is dismissed before `keep` is asked about it.
    pub(crate) fn closest_within(
        &self,
        target: &NodeId,
        bound: Option<&NodeId>,
        out: &mut [NodeId],
        mut keep: impl FnMut(&NodeId) -> bool,
    ) -> usize {
        if let Some(bound) = bound.filter(|_| self.words.len() <= SCAN_MAX) {
            return self.closer_than(target, bound, out, keep);
        }
        const MAX: usize = 16;
        let t = target.to_words();
        let dist = |w: &[u64; 4]| [w[0] ^ t[0], w[1] ^ t[1], w[2] ^ t[2], w[3] ^ t[3]];
        let limit = bound.map(|b| dist(&b.to_words()));
        let cap = out.len().min(MAX);
        if cap == 0 {
            return 0;
        }
        // The best `n` so far, sorted: the first distance word (which nearly always decides)
        // and the edge's index. Full words are consulted only on a first-word tie.
        let mut firsts = [u64::MAX; MAX];
        let mut slots = [0usize; MAX];
        let mut n = 0;
        let beats = |d: &[u64; 4], first: u64, slot: usize, words: &[[u64; 4]]| {
            d[0] < first || (d[0] == first && less(d, &dist(&words[slot])))
        };
        for (i, w) in self.words.iter().enumerate() {
            let d = dist(w);
            if limit.is_some_and(|l| !less(&d, &l))
                || (n == cap && !beats(&d, firsts[n - 1], slots[n - 1], &self.words))
            {
                continue;
            }
            if !keep(&self.edges[i].id) {
                continue;
            }
            let mut pos = n.min(cap - 1);
            while pos > 0 && beats(&d, firsts[pos - 1], slots[pos - 1], &self.words) {
                pos -= 1;
            }
            let end = n.min(cap - 1);
            firsts.copy_within(pos..end, pos + 1);
            slots.copy_within(pos..end, pos + 1);
            firsts[pos] = d[0];
            slots[pos] = i;
            n = (n + 1).min(cap);
        }
        for (o, &slot) in out.iter_mut().zip(&slots[..n]) {
            *o = self.edges[slot].id;
        }
        n
    }

    /// [`Edges::closest_within`] with a bound, for a table of at most [`SCAN_MAX`] edges
    /// (every real one): the forwarding decision's case. One pass keeps each edge closer than
    /// the bound as (first distance word, index) without a data-dependent branch (the words
    /// are random, so branches on them mispredict about half the time), then a sort of the
    /// few kept (about half the table) orders them; full words are compared only on a
    /// first-word tie. Without a bound every edge would be kept and sorted, and the insertion
    /// scan is cheaper.
    fn closer_than(
        &self,
        target: &NodeId,
        bound: &NodeId,
        out: &mut [NodeId],
        mut keep: impl FnMut(&NodeId) -> bool,
    ) -> usize {
        let t = target.to_words();
        let dist = |w: &[u64; 4]| [w[0] ^ t[0], w[1] ^ t[1], w[2] ^ t[2], w[3] ^ t[3]];
        let limit = dist(&bound.to_words());
        let mut keys = [(0u64, 0u8); SCAN_MAX];
        let mut m = 0;
        for (i, w) in self.words.iter().enumerate() {
            let d0 = w[0] ^ t[0];
            // Strictly closer than the bound (a first-word tie is rare: full words then).
            let closer = if d0 == limit[0] {
                less(&dist(w), &limit)
            } else {
                d0 < limit[0]
            };
            keys[m] = (d0, u8::try_from(i).unwrap_or(u8::MAX));
            m += usize::from(closer);
        }
        let keys = &mut keys[..m];
        keys.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let (da, db) = (
                    dist(&self.words[usize::from(a.1)]),
                    dist(&self.words[usize::from(b.1)]),
                );
                if less(&da, &db) {
                    std::cmp::Ordering::Less
                } else if less(&db, &da) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        let mut n = 0;
        for &(_, i) in keys.iter() {
            if n == out.len() {
                break;
            }
            let id = &self.edges[usize::from(i)].id;
            if keep(id) {
                out[n] = *id;
                n += 1;
            }
        }
        n
    }

    /// Edges idle (no frame) for at least `idle` at `now`: siblings and fingers are given
    /// separately so the caller can apply its two thresholds.
    pub fn idle(
        &self,
        now: Time,
        idle: Duration,
        siblings: bool,
    ) -> impl Iterator<Item = NodeId> + '_ {
        self.edges
            .iter()
            .filter(move |e| e.sibling == siblings && now.since(e.last_seen) >= idle)
            .map(|e| e.id)
    }

    /// Up to `want` contacts to dial next, from `knowledge`.
    ///
    /// First, coverage: one contact from each populated bucket that has no live edge yet,
    /// farthest bucket first, so greedy routing has a finger into every part of the keyspace it
    /// knows. Then the contacts closest to us (the siblings). Both skip live peers, contacts
    /// without an address, and subnets already holding [`LIVE_SUBNET_CAP`] live edges; if that
    /// leaves too few, the saturated subnets are used after all (connectivity beats
    /// diversity).
    pub fn replacement_candidates<'k>(
        &self,
        knowledge: &'k Knowledge,
        want: usize,
    ) -> Vec<&'k Contact> {
        if want == 0 {
            return Vec::new();
        }
        let mut covered = [false; 256];
        for e in &self.edges {
            if let Some(b) = self.self_id.bucket_index(&e.id) {
                covered[b] = true;
            }
        }
        let uncovered = (0..256)
            .filter(|&b| !covered[b])
            .filter_map(|b| knowledge.bucket(b).find(|c| !c.addrs.is_empty()));
        let pool: Vec<&Contact> = uncovered
            .chain(knowledge.closest(&self.self_id, (4 * want).max(16)))
            .collect();
        let subnet_of = |c: &Contact| c.addrs.iter().find_map(|a| SubnetKey::of_addr(a.as_ref()));
        let live_in = |s: Option<SubnetKey>| {
            s.map_or(0, |s| {
                self.edges.iter().filter(|e| e.subnet == Some(s)).count()
            })
        };
        let mut picked: Vec<&Contact> = Vec::with_capacity(want);
        let mut saturated: Vec<&Contact> = Vec::new();
        for c in pool {
            if self.contains(&c.id)
                || c.addrs.is_empty()
                || picked.iter().chain(&saturated).any(|p| p.id == c.id)
            {
                continue;
            }
            let subnet = subnet_of(c);
            let taken = picked
                .iter()
                .filter(|p| subnet.is_some() && subnet_of(p) == subnet)
                .count();
            if live_in(subnet) + taken >= LIVE_SUBNET_CAP {
                saturated.push(c);
            } else if picked.len() < want {
                picked.push(c);
            }
        }
        let room = want.saturating_sub(picked.len());
        picked.extend(saturated.into_iter().take(room));
        picked
    }

    /// Holes are buckets of `knowledge` with a contact in them but no live edge of ours
    /// (greedy routing toward that part of the keyspace ends at us). The first contact that
    /// `usable` accepts in the farthest hole that has one.
    pub fn hole_candidate<'k>(
        &self,
        knowledge: &'k Knowledge,
        mut usable: impl FnMut(&Contact) -> bool,
    ) -> Option<&'k Contact> {
        let mut covered = [false; 256];
        for e in &self.edges {
            if let Some(b) = self.self_id.bucket_index(&e.id) {
                covered[b] = true;
            }
        }
        (0..256)
            .filter(|&b| !covered[b])
            .find_map(|b| knowledge.bucket(b).find(|c| usable(c)))
    }

    fn reclassify(&mut self) {
        let self_id = self.self_id;
        let mut order: Vec<usize> = (0..self.edges.len()).collect();
        order.sort_by(|&a, &b| self_id.cmp_distance(&self.edges[a].id, &self.edges[b].id));
        for (rank, &i) in order.iter().enumerate() {
            self.edges[i].sibling = rank < SIBLINGS;
        }
        let out = self.outbound();
        self.phase = match out {
            0 => Phase::Bootstrap,
            n if n <= KMIN => Phase::Critical,
            n if n <= LOW_WATER => Phase::Urgent,
            n if n >= TARGET_EDGES => Phase::Normal,
            n if self.phase == Phase::Normal && n >= TARGET_EDGES - FILL_HYSTERESIS => {
                Phase::Normal
            }
            _ => Phase::NeedsFill,
        };
    }
}
