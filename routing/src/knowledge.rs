//! The knowledge table: what this node knows about others, in k-buckets.
//!
//! Soft state that heals lazily. Bucket `i` holds contacts whose NodeId shares exactly `i`
//! leading bits with ours, most recently seen first, at most [`K`]; each bucket has a
//! replacement cache of [`K`] newcomers waiting for a dead incumbent. The table does no I/O:
//! when a full bucket meets a newcomer it returns the least-recently-seen incumbent as a probe
//! candidate, and the caller reports back with [`Knowledge::confirm`].
//!
//! Admission rules, in order (tier 2 unless noted):
//! 1. Our own id is ignored.
//! 2. Key binding: a key must hash to the claimed id, checked before anything is refreshed,
//!    so a forged observation cannot overwrite a key or an address.
//! 3. X25519 keys are stripped: they enter only through [`Knowledge::bind_x25519`], after a
//!    verified rendezvous.
//! 4. A known contact is refreshed; an address change into a full subnet is refused (the
//!    rest of the refresh is kept).
//! 5. A newcomer must meet the proof-of-work difficulty; with a difficulty above zero a
//!    keyless newcomer is refused, because leading zeros on an unbound id prove nothing.
//! 6. At most [`SUBNET_CAP`] contacts per /24 (IPv4) or /64 (IPv6) (tier 3 number).
//! 7. Room in the bucket: inserted. Full: stashed, and the bucket's least-recently-seen
//!    incumbent is offered as a probe.

use std::collections::HashMap;
use std::time::Duration;

use nodenet_identity::derive_id;
use nodenet_kad::{ID_BITS, NodeId};
use nodenet_wire::Addr;

use crate::control::{Caps, Contact};
use crate::{SubnetKey, Time};

pub use closest::id_in_bucket;

/// Number of buckets: one per common-prefix length.
pub const BUCKETS: usize = ID_BITS as usize;
/// Entries per bucket, and per replacement cache.
pub const K: usize = 20;
/// Knowledge entries per subnet.
pub const SUBNET_CAP: usize = 8;

/// What [`Knowledge::observe`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The id is ours.
    Ignored,
    /// A newcomer took a free slot.
    Inserted,
    /// A known contact was refreshed.
    Refreshed,
    /// The bucket is full: the newcomer waits in the replacement cache, and `probe` (the
    /// least-recently-seen incumbent) should be pinged and reported with `confirm`.
    Stashed {
        /// The incumbent to probe.
        probe: NodeId,
    },
    /// Refused.
    Rejected(Rejection),
}

/// Why an observation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The key does not hash to the claimed id.
    KeyMismatch,
    /// The id does not meet the proof-of-work difficulty.
    SubPow,
    /// A keyless newcomer while proof-of-work is on.
    Keyless,
    /// The contact's subnet already has [`SUBNET_CAP`] entries.
    SubnetFull,
}

/// Counters of refused and shed observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnowledgeStats {
    /// Key did not hash to the id.
    pub rejected_key_mismatch: u64,
    /// Below the difficulty.
    pub rejected_sub_pow: u64,
    /// Keyless while PoW is on.
    pub rejected_keyless: u64,
    /// Subnet cap reached (new contacts or address changes).
    pub rejected_subnet: u64,
    /// Newcomers dropped from a full replacement cache.
    pub cache_overflow: u64,
    /// Incumbents evicted after a failed probe.
    pub evicted: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    contact: Contact,
    last_seen: Time,
    subnet: Option<SubnetKey>,
    /// We once held an edge to it: it existed, at least then.
    reached: bool,
}

/// Makes room for one more entry in a bucket's list, which never holds more than [`K`]:
/// doubling from 4 but never past `K`, where `Vec`'s own growth would reserve 32 slots for 20
/// (the tables are most of an overlay's memory).
fn grow_within_k(v: &mut Vec<Entry>) {
    if v.len() == v.capacity() {
        let more = v.len().max(4).min(K.saturating_sub(v.len()).max(1));
        v.reserve_exact(more);
    }
}

/// What [`Knowledge::bk`] gives for a bucket not made yet.
static EMPTY: Bucket = Bucket {
    entries: Vec::new(),
    cache: Vec::new(),
    last_refresh: Time(0),
};

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Most recently seen first.
    entries: Vec<Entry>,
    /// Freshest first.
    cache: Vec<Entry>,
    last_refresh: Time,
}

/// The k-bucket table.
#[derive(Clone, Debug)]
pub struct Knowledge {
    self_id: NodeId,
    difficulty: u32,
    buckets: Vec<Bucket>,
    subnets: HashMap<SubnetKey, usize>,
    /// Subnet accounting is on (the cap applies).
    accounting: bool,
    len: usize,
    stats: KnowledgeStats,
}

impl Knowledge {
    /// An empty table for `self_id`, admitting newcomers at proof-of-work `difficulty`.
    pub fn new(self_id: NodeId, difficulty: u32) -> Self {
        Self {
            self_id,
            difficulty,
            buckets: Vec::new(),
            subnets: HashMap::new(),
            accounting: true,
            len: 0,
            stats: KnowledgeStats::default(),
        }
    }

    /// Bucket `b`; an empty one if no contact ever went that deep (the buckets are made as
    /// contacts need them: an overlay of 10,000 nodes fills about 16 of the 256).
    fn bk(&self, b: usize) -> &Bucket {
        self.buckets.get(b).unwrap_or(&EMPTY)
    }

    /// Bucket `b`, made (with every shallower one) if it does not exist yet.
    fn bk_mut(&mut self, b: usize) -> &mut Bucket {
        if self.buckets.len() <= b {
            self.buckets.resize_with(b + 1, Bucket::default);
        }
        &mut self.buckets[b]
    }

    /// Turns subnet accounting on (the default) or off. Off, no address has a subnet and the
    /// [`SUBNET_CAP`] never applies: for a network whose nodes all share one subnet by
    /// construction, such as a cluster on loopback. Set it before the first observation.
    pub fn set_subnet_accounting(&mut self, on: bool) {
        self.accounting = on;
    }

    fn subnet_of(&self, addrs: &[Addr]) -> Option<SubnetKey> {
        if !self.accounting {
            return None;
        }
        addrs.iter().find_map(|a| SubnetKey::of_addr(a.as_ref()))
    }

    /// Our id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Contacts in the buckets (not counting replacement caches).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no contact is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters.
    pub fn stats(&self) -> KnowledgeStats {
        self.stats
    }

    /// Applies the admission rules to an observation of `contact` at `now`.
    pub fn observe(&mut self, contact: &Contact, now: Time) -> Observed {
        let Some(b) = self.self_id.bucket_index(&contact.id) else {
            return Observed::Ignored;
        };
        if let Some(key) = &contact.ed_pub {
            if derive_id(key) != contact.id {
                self.stats.rejected_key_mismatch += 1;
                return Observed::Rejected(Rejection::KeyMismatch);
            }
        }
        if let Some(i) = self
            .bk(b)
            .entries
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            self.refresh(b, i, contact, now);
            return Observed::Refreshed;
        }
        if let Some(i) = self
            .bk(b)
            .cache
            .iter()
            .position(|e| e.contact.id == contact.id)
        {
            let mut e = self.bk_mut(b).cache.remove(i);
            merge(&mut e, contact, now);
            self.bk_mut(b).cache.insert(0, e);
            return Observed::Refreshed;
        }
        if self.difficulty > 0 {
            if contact.ed_pub.is_none() {
                self.stats.rejected_keyless += 1;
                return Observed::Rejected(Rejection::Keyless);
            }
            if !nodenet_pow::verify(&contact.id, self.difficulty) {
                self.stats.rejected_sub_pow += 1;
                return Observed::Rejected(Rejection::SubPow);
            }
        }
        let subnet = self.subnet_of(&contact.addrs);
        if subnet.is_some_and(|s| self.subnet_full(s)) {
            self.stats.rejected_subnet += 1;
            return Observed::Rejected(Rejection::SubnetFull);
        }
        let mut entry = Entry {
            contact: contact.clone(),
            last_seen: now,
            subnet,
            reached: false,
        };
        entry.contact.x_pub = None;
        self.bk_mut(b);
        let bucket = &mut self.buckets[b];
        if bucket.entries.len() < K {
            grow_within_k(&mut bucket.entries);
            bucket.entries.insert(0, entry);
            self.len += 1;
            if let Some(s) = subnet {
                *self.subnets.entry(s).or_default() += 1;
            }
            return Observed::Inserted;
        }
        if bucket.cache.len() >= K {
            bucket.cache.pop();
            self.stats.cache_overflow += 1;
        }
        grow_within_k(&mut bucket.cache);
        bucket.cache.insert(0, entry);
        let probe = bucket.entries.last().map_or(contact.id, |e| e.contact.id);
        Observed::Stashed { probe }
    }

    fn subnet_full(&self, s: SubnetKey) -> bool {
        self.subnets.get(&s).copied().unwrap_or(0) >= SUBNET_CAP
    }

    fn refresh(&mut self, b: usize, i: usize, contact: &Contact, now: Time) {
        let mut e = self.bk_mut(b).entries.remove(i);
        let new_subnet = self.subnet_of(&contact.addrs);
        let moves = !contact.addrs.is_empty() && contact.addrs != e.contact.addrs;
        if moves && new_subnet != e.subnet && new_subnet.is_some_and(|s| self.subnet_full(s)) {
            // The address update is refused; the sighting still counts.
            self.stats.rejected_subnet += 1;
            let mut keep = contact.clone();
            keep.addrs.clone_from(&e.contact.addrs);
            merge(&mut e, &keep, now);
        } else {
            if moves && new_subnet != e.subnet {
                self.uncount(e.subnet);
                if let Some(s) = new_subnet {
                    *self.subnets.entry(s).or_default() += 1;
                }
                e.subnet = new_subnet;
            }
            merge(&mut e, contact, now);
        }
        self.bk_mut(b).entries.insert(0, e);
    }

    fn uncount(&mut self, subnet: Option<SubnetKey>) {
        if let Some(s) = subnet {
            if let Some(n) = self.subnets.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.subnets.remove(&s);
                }
            }
        }
    }

    /// Reports the result of probing an incumbent: alive keeps and refreshes it; dead evicts it
    /// and promotes the freshest stashed newcomer that fits the subnet cap (returned).
    pub fn confirm(&mut self, id: &NodeId, alive: bool, now: Time) -> Option<NodeId> {
        let b = self.self_id.bucket_index(id)?;
        let i = self
            .bk(b)
            .entries
            .iter()
            .position(|e| e.contact.id == *id)?;
        if alive {
            let mut e = self.bk_mut(b).entries.remove(i);
            e.last_seen = now;
            self.bk_mut(b).entries.insert(0, e);
            return None;
        }
        self.remove_at(b, i);
        self.stats.evicted += 1;
        self.promote(b)
    }

    fn promote(&mut self, b: usize) -> Option<NodeId> {
        let pos = {
            let cache = &self.bk(b).cache;
            cache
                .iter()
                .position(|e| !e.subnet.is_some_and(|s| self.subnet_full(s)))?
        };
        let e = self.bk_mut(b).cache.remove(pos);
        let id = e.contact.id;
        if let Some(s) = e.subnet {
            *self.subnets.entry(s).or_default() += 1;
        }
        // Always after a removal from this bucket: there is a free slot.
        self.bk_mut(b).entries.push(e);
        self.len += 1;
        Some(id)
    }

    fn remove_at(&mut self, b: usize, i: usize) -> Entry {
        let e = self.bk_mut(b).entries.remove(i);
        self.uncount(e.subnet);
        self.len -= 1;
        e
    }

    /// Forgets `id` entirely (bucket and replacement cache): the lazy purge of a contact that
    /// keeps failing. A stashed newcomer takes its place if one fits.
    pub fn remove(&mut self, id: &NodeId) -> Option<Contact> {
        let b = self.self_id.bucket_index(id)?;
        if let Some(i) = self.bk(b).cache.iter().position(|e| e.contact.id == *id) {
            return Some(self.bk_mut(b).cache.remove(i).contact);
        }
        let i = self
            .bk(b)
            .entries
            .iter()
            .position(|e| e.contact.id == *id)?;
        let e = self.remove_at(b, i);
        self.promote(b);
        Some(e.contact)
    }

    /// Records that we hold (or held) an edge to `id` at its current addresses, if we know
    /// it. New addresses (a later [`Knowledge::observe`]) clear the mark.
    pub fn mark_reached(&mut self, id: &NodeId) {
        if let Some(e) = self.get_mut(id) {
            e.reached = true;
        }
    }

    /// Takes back [`Knowledge::mark_reached`] (the edge turned out not to be a direct one).
    pub fn unmark_reached(&mut self, id: &NodeId) {
        if let Some(e) = self.get_mut(id) {
            e.reached = false;
        }
    }

    /// Whether we ever held an edge to `id` while we knew it ([`Knowledge::mark_reached`]).
    pub fn was_reached(&self, id: &NodeId) -> bool {
        self.bucket_of(id).any(|e| e.contact.id == *id && e.reached)
    }

    /// Whether `id`'s bucket holds, besides `id`, a contact with an address that could take
    /// its place: one we reached too, or a newcomer waiting in the replacement cache of a
    /// full bucket (named ones in a bucket with room do not count: a peer's word alone
    /// must not push out the one contact we know to have existed).
    pub fn has_alternative(&self, id: &NodeId) -> bool {
        let Some(b) = self.self_id.bucket_index(id) else {
            return false;
        };
        let bucket = self.bk(b);
        let other = |e: &&Entry| e.contact.id != *id && !e.contact.addrs.is_empty();
        bucket.entries.iter().filter(other).any(|e| e.reached)
            || bucket.cache.iter().any(|e| other(&e))
    }

    /// The entries and the replacement cache of `id`'s bucket.
    fn bucket_of(&self, id: &NodeId) -> impl Iterator<Item = &Entry> {
        self.self_id
            .bucket_index(id)
            .map(|b| self.bk(b))
            .into_iter()
            .flat_map(|bucket| bucket.entries.iter().chain(&bucket.cache))
    }

    /// Binds an X25519 key learned from a verified rendezvous to a known contact.
    pub fn bind_x25519(&mut self, id: &NodeId, x_pub: [u8; 32]) -> bool {
        match self.get_mut(id) {
            Some(e) => {
                e.contact.x_pub = Some(x_pub);
                true
            }
            None => false,
        }
    }

    /// The contact for `id`, if known (bucket or replacement cache).
    pub fn get(&self, id: &NodeId) -> Option<&Contact> {
        let b = self.self_id.bucket_index(id)?;
        let bucket = self.bk(b);
        bucket
            .entries
            .iter()
            .chain(&bucket.cache)
            .find(|e| e.contact.id == *id)
            .map(|e| &e.contact)
    }

    /// When `id` was last seen.
    pub fn last_seen(&self, id: &NodeId) -> Option<Time> {
        let b = self.self_id.bucket_index(id)?;
        self.bk(b)
            .entries
            .iter()
            .find(|e| e.contact.id == *id)
            .map(|e| e.last_seen)
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Entry> {
        let b = self.self_id.bucket_index(id)?;
        let bucket = self.buckets.get_mut(b)?;
        bucket
            .entries
            .iter_mut()
            .chain(bucket.cache.iter_mut())
            .find(|e| e.contact.id == *id)
    }

    /// The contacts of bucket `b` (those sharing exactly `b` leading bits with us), most
    /// recently seen first.
    pub fn bucket(&self, b: usize) -> impl Iterator<Item = &Contact> {
        self.buckets
            .get(b)
            .into_iter()
            .flat_map(|bk| bk.entries.iter().map(|e| &e.contact))
    }

    /// Every contact in the buckets, bucket by bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Contact> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| &e.contact))
    }

    /// A lookup target for the most stale populated bucket not refreshed for `stale`: an id
    /// sharing exactly that bucket's prefix length with ours, its remaining bits taken from
    /// `random`. Marks the bucket refreshed at `now`. `None` when nothing is stale.
    pub fn refresh_target(
        &mut self,
        now: Time,
        stale: Duration,
        random: [u8; 32],
    ) -> Option<NodeId> {
        let (b, _) = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, bk)| !bk.entries.is_empty() && now.since(bk.last_refresh) >= stale)
            .min_by_key(|(_, bk)| bk.last_refresh)?;
        self.bk_mut(b).last_refresh = now;
        Some(id_in_bucket(&self.self_id, b, random))
    }

    /// Checks the table's invariants (bucket sizes, placement, counts); for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut count = 0;
        let mut subnets: HashMap<SubnetKey, usize> = HashMap::new();
        for (i, bk) in self.buckets.iter().enumerate() {
            if bk.entries.len() > K || bk.cache.len() > K {
                return Err(format!("bucket {i} over capacity"));
            }
            for e in bk.entries.iter().chain(&bk.cache) {
                if self.self_id.bucket_index(&e.contact.id) != Some(i) {
                    return Err(format!("{} in the wrong bucket {i}", e.contact.id));
                }
            }
            for e in &bk.entries {
                count += 1;
                if let Some(s) = e.subnet {
                    *subnets.entry(s).or_default() += 1;
                }
            }
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries", self.len));
        }
        if subnets != self.subnets {
            return Err("subnet counts drifted".into());
        }
        if subnets.values().any(|&n| n > SUBNET_CAP) {
            return Err("subnet over cap".into());
        }
        Ok(())
    }
}

/// Folds a fresh sighting into an entry: time, caps, addresses, a key it did not have.
fn merge(e: &mut Entry, contact: &Contact, now: Time) {
    e.last_seen = now;
    // Most sightings carry no capabilities at all (an envelope's originator, an edge coming
    // up): only one that states some replaces what we know.
    if contact.caps != Caps::default() {
        e.contact.caps = contact.caps;
    }
    if !contact.addrs.is_empty() {
        // Reached at the addresses it had, not at ones it is now said to have.
        if contact.addrs != e.contact.addrs {
            e.reached = false;
        }
        e.contact.addrs.clone_from(&contact.addrs);
    }
    if e.contact.ed_pub.is_none() {
        e.contact.ed_pub = contact.ed_pub;
    }
}

mod closest;
#[cfg(test)]
mod tests;
