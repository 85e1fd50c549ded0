//! The core's bounded tables: the per-originator limiter, the ids of messages already
//! delivered, the breadcrumbs of forwarded requests, short lists of NodeIds marked until a
//! deadline, and our requests awaiting one peer's answer.

use std::collections::VecDeque;

use super::*;

/// Per-originator limiter on work-generating queries, keyed by the signature-verified
/// originator (a flood spread across edges still lands in one bucket).
#[derive(Debug, Default)]
pub(super) struct OriginLimiter {
    buckets: HashMap<NodeId, TokenBucket>,
}

const ORIGIN_RATE: f64 = 16.0;
const ORIGIN_BURST: f64 = 32.0;
const ORIGIN_TABLE: usize = 4096;

impl OriginLimiter {
    pub(super) fn allow(&mut self, who: NodeId, now: Time) -> bool {
        if !self.buckets.contains_key(&who) && self.buckets.len() >= ORIGIN_TABLE {
            self.evict(now);
        }
        self.buckets
            .entry(who)
            .or_insert_with(|| TokenBucket::new(ORIGIN_RATE, ORIGIN_BURST, now))
            .allow(now)
    }

    /// Drops fully refilled buckets; if none, the single fullest one. Never the whole table.
    fn evict(&mut self, now: Time) {
        let before = self.buckets.len();
        self.buckets.retain(|_, b| b.tokens(now) < ORIGIN_BURST);
        if self.buckets.len() == before {
            let fullest = self
                .buckets
                .iter_mut()
                .map(|(id, b)| (*id, b.tokens(now)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(id, _)| id);
            if let Some(id) = fullest {
                self.buckets.remove(&id);
            }
        }
    }
}

/// Message ids already delivered: two generations, so memory is bounded and recent ids are
/// always remembered.
#[derive(Debug, Default)]
pub(super) struct Seen {
    current: HashSet<[u8; 16]>,
    previous: HashSet<[u8; 16]>,
}

const SEEN_GENERATION: usize = 8192;

impl Seen {
    /// True if `key` is new (and remembers it).
    pub(super) fn insert(&mut self, key: [u8; 16]) -> bool {
        if self.current.contains(&key) || self.previous.contains(&key) {
            return false;
        }
        if self.current.len() >= SEEN_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
        true
    }
}

/// How long a lookup's breadcrumb lasts (its answer arrives well within this).
const CRUMB_TTL: Duration = Duration::from_secs(10);
/// Breadcrumbs kept per generation (two generations at most).
const CRUMB_GENERATION: usize = 4096;

/// Breadcrumbs of forwarded lookups, bounded: two generations of [`CRUMB_GENERATION`].
#[derive(Debug, Default)]
pub(super) struct Crumbs {
    current: HashMap<(NodeId, [u8; NONCE_LEN]), (NodeId, Time)>,
    previous: HashMap<(NodeId, [u8; NONCE_LEN]), (NodeId, Time)>,
}

impl Crumbs {
    /// Plants a crumb unless a live one is already there whose edge is still up (`up`): the
    /// first copy of a request to pass wins, so a peer that replays a genuine request over
    /// its own edge cannot redirect the answers to itself, nor pin the crumb by replaying and
    /// leaving.
    pub(super) fn insert(
        &mut self,
        key: (NodeId, [u8; NONCE_LEN]),
        from: NodeId,
        now: Time,
        up: impl Fn(&NodeId) -> bool,
    ) {
        if self.get(&key, now).is_some_and(|held| up(&held)) {
            return;
        }
        if self.current.len() >= CRUMB_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, (from, now.after(CRUMB_TTL)));
    }

    pub(super) fn get(&self, key: &(NodeId, [u8; NONCE_LEN]), now: Time) -> Option<NodeId> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .filter(|(_, exp)| *exp > now)
            .map(|(id, _)| *id)
    }
}

/// Whether a routed frame of `ty` is a request (true) or an answer (false) that retraces
/// one, and the key its breadcrumb is kept under (the first bytes of its nonce); `None` for
/// other frames or a payload too short to carry one.
pub(super) fn crumb_of(ty: FrameType, payload: &[u8]) -> Option<(bool, [u8; NONCE_LEN])> {
    let request = match ty {
        FrameType::LOOKUP | FrameType::HELLO | FrameType::CONNECT => true,
        FrameType::NEIGHBORS | FrameType::REPLY | FrameType::CONNECT_ACK => false,
        _ => return None,
    };
    let nonce: &[u8] = match ty {
        FrameType::HELLO => &Hello::decode(payload).ok()?.nonce,
        FrameType::REPLY => &Reply::decode(payload).ok()?.nonce,
        // Lookup, Neighbors, Connect and ConnectAck payloads start with their nonce.
        _ => payload,
    };
    let key = <[u8; NONCE_LEN]>::try_from(nonce.get(..NONCE_LEN)?).ok()?;
    Some((request, key))
}

/// NodeIds marked until a deadline each, with a value `V` each, at most `cap` (the oldest
/// mark goes first): the near-miss quiet signers, the peers we expect to dial us, and the
/// peers we asked where they listen (with the nonce we asked them under).
#[derive(Debug)]
pub(super) struct Marks<V = ()> {
    marks: Vec<(NodeId, V, Time)>,
    cap: usize,
}

impl<V: Copy + PartialEq> Marks<V> {
    pub(super) const fn new(cap: usize) -> Self {
        Self {
            marks: Vec::new(),
            cap,
        }
    }

    /// Marks `id` with `value` until `until` (a mark it had is replaced); expired marks go
    /// first.
    pub(super) fn mark_with(&mut self, id: NodeId, value: V, now: Time, until: Time) {
        self.marks.retain(|(m, _, u)| now < *u && *m != id);
        if self.marks.len() >= self.cap {
            self.marks.remove(0);
        }
        self.marks.push((id, value, until));
    }

    /// Whether `id` is marked at `now`.
    pub(super) fn contains(&self, id: &NodeId, now: Time) -> bool {
        self.marks.iter().any(|(m, _, u)| m == id && now < *u)
    }

    /// Takes `id`'s mark away, if it has one.
    pub(super) fn remove(&mut self, id: &NodeId) {
        self.marks.retain(|(m, _, _)| m != id);
    }

    /// If `id`'s mark is live at `now` and holds `value`, it holds `spent` from now on (the
    /// mark stays until its deadline); true if it did.
    pub(super) fn spend(&mut self, id: &NodeId, value: V, spent: V, now: Time) -> bool {
        let Some(mark) = self
            .marks
            .iter_mut()
            .find(|(m, v, u)| m == id && *v == value && now < *u)
        else {
            return false;
        };
        mark.1 = spent;
        true
    }
}

impl Marks {
    /// Marks `id` until `until` (a mark it had is replaced); expired marks go first.
    pub(super) fn mark(&mut self, id: NodeId, now: Time, until: Time) {
        self.mark_with(id, (), now, until);
    }
}

/// Requests of ours sent to one peer each under a nonce, awaiting that peer's answer until a
/// deadline, at most `cap` (the oldest goes first): the relay requests.
#[derive(Debug)]
pub(super) struct Asks {
    open: VecDeque<([u8; nodenet_nat::NONCE_LEN], NodeId, Time)>,
    cap: usize,
}

impl Asks {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            open: VecDeque::new(),
            cap,
        }
    }

    /// Opens an ask of `peer` under `nonce` until `until`; expired asks go first, then the
    /// oldest.
    pub(super) fn open(
        &mut self,
        nonce: [u8; nodenet_nat::NONCE_LEN],
        peer: NodeId,
        now: Time,
        until: Time,
    ) {
        self.open.retain(|(_, _, t)| *t > now);
        if self.open.len() >= self.cap {
            self.open.pop_front();
        }
        self.open.push_back((nonce, peer, until));
    }

    /// Closes the ask under `nonce` if `from` was asked and it is live at `now`: true if so
    /// (an answer counts once).
    pub(super) fn answered(
        &mut self,
        nonce: &[u8; nodenet_nat::NONCE_LEN],
        from: &NodeId,
        now: Time,
    ) -> bool {
        let Some(i) = self
            .open
            .iter()
            .position(|(n, p, t)| n == nonce && p == from && *t > now)
        else {
            return false;
        };
        self.open.remove(i);
        true
    }

    /// Withdraws the ask under `nonce`, if open.
    pub(super) fn cancel(&mut self, nonce: &[u8; nodenet_nat::NONCE_LEN]) {
        self.open.retain(|(n, _, _)| n != nonce);
    }

    /// Open asks (expired ones included until the next is opened).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }
}
