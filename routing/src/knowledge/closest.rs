//! Queries by distance: a table's closest contacts to any target, walked bucket tier by
//! bucket tier, and random targets inside one bucket.

use nodenet_kad::NodeId;

use super::{BUCKETS, Knowledge};
use crate::control::Contact;

impl Knowledge {
    /// The `n` contacts closest to `target`, closest first.
    ///
    /// Walks the buckets in tiers instead of scanning everything: the bucket `target` falls in
    /// holds the closest contacts; every bucket above it comes next (all at the same prefix
    /// length to the target); then the buckets below it, nearest first. It stops as soon as a
    /// tier fills `n`.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<&Contact> {
        self.closest_where(target, n, |_| true)
    }

    /// The `n` contacts closest to `target` among those `keep` accepts, closest first, by the
    /// same walk as [`Knowledge::closest`]. For questions such as "our closest nodes with an
    /// address", which a few made-up address-less ids next to ours must not answer.
    pub fn closest_where(
        &self,
        target: &NodeId,
        n: usize,
        keep: impl Fn(&Contact) -> bool,
    ) -> Vec<&Contact> {
        let mut out: Vec<&Contact> = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let b = self.self_id.bucket_index(target).unwrap_or(BUCKETS);
        let mut tier: Vec<&Contact> = Vec::new();
        if b < BUCKETS {
            tier.extend(
                self.bk(b)
                    .entries
                    .iter()
                    .map(|e| &e.contact)
                    .filter(|c| keep(c)),
            );
            if take_tier(target, n, &mut tier, &mut out) {
                return out;
            }
            tier.extend(
                self.buckets
                    .get(b + 1..)
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|bk| bk.entries.iter().map(|e| &e.contact))
                    .filter(|c| keep(c)),
            );
            if take_tier(target, n, &mut tier, &mut out) {
                return out;
            }
        }
        for bk in self.buckets[..b.min(self.buckets.len())].iter().rev() {
            tier.extend(bk.entries.iter().map(|e| &e.contact).filter(|c| keep(c)));
            if take_tier(target, n, &mut tier, &mut out) {
                return out;
            }
        }
        out
    }
}

/// Moves the closest of `tier` into `out` until it holds `n`; true once it does.
fn take_tier<'a>(
    target: &NodeId,
    n: usize,
    tier: &mut Vec<&'a Contact>,
    out: &mut Vec<&'a Contact>,
) -> bool {
    tier.sort_by(|x, y| target.cmp_distance(&x.id, &y.id));
    let room = n - out.len();
    out.extend(tier.drain(..).take(room));
    out.len() >= n
}

/// An id sharing exactly `prefix` leading bits with `base`, the rest from `random`: a random
/// target in bucket `prefix` of `base`'s table.
pub fn id_in_bucket(base: &NodeId, prefix: usize, random: [u8; 32]) -> NodeId {
    let base = base.as_bytes();
    let mut out = [0u8; 32];
    for bit in 0..256 {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let v = if bit < prefix {
            base[byte] & mask
        } else if bit == prefix {
            !base[byte] & mask
        } else {
            random[byte] & mask
        };
        out[byte] |= v;
    }
    NodeId::from_bytes(out)
}
