//! The table's own invariants under bucket growth.

use nodenet_identity::Identity;
use nodenet_wire::Addr;

use super::*;
use crate::control::Caps;

fn contact(n: u64) -> Contact {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    let i = Identity::from_seed(&seed);
    Contact {
        id: i.node_id(),
        ed_pub: Some(i.ed_public()),
        x_pub: None,
        caps: Caps::default(),
        addrs: vec![Addr::new("mem", format!("n{n}"))],
    }
}

/// A table holds buckets only as deep as its contacts go, and no bucket's lists reserve
/// more than K slots (Vec's doubling gave a full one 32): the tables are most of a large
/// overlay's memory.
#[test]
fn buckets_are_made_as_needed_and_hold_no_more_than_k_slots() {
    let me = contact(0).id;
    let mut k = Knowledge::new(me, 0);
    assert!(k.buckets.is_empty());
    assert!(k.closest(&me, 16).is_empty());
    assert!(k.refresh_target(Time(0), Duration::ZERO, [0; 32]).is_none());
    let far: Vec<Contact> = (1..400)
        .map(contact)
        .filter(|c| me.bucket_index(&c.id) == Some(0))
        .take(2 * K + 5)
        .collect();
    assert_eq!(far.len(), 2 * K + 5);
    for c in &far {
        k.observe(c, Time(0));
    }
    assert_eq!(k.buckets.len(), 1, "only the bucket a contact went in");
    assert_eq!((k.bk(0).entries.len(), k.bk(0).cache.len()), (K, K));
    assert!(k.bk(0).entries.capacity() <= K && k.bk(0).cache.capacity() <= K);
    // Evictions promote from the cache into the slot they free.
    for c in &far[..5] {
        k.confirm(&c.id, false, Time(1));
    }
    assert_eq!(k.bk(0).entries.len(), K);
    assert!(k.bk(0).entries.capacity() <= K);
    // Asking about an id of a bucket not made yet makes none.
    let deep = (400..100_000)
        .map(contact)
        .find(|c| me.bucket_index(&c.id).is_some_and(|b| b >= 10))
        .unwrap();
    let id = deep.id;
    assert!(k.get(&id).is_none() && k.last_seen(&id).is_none() && !k.was_reached(&id));
    assert!(!k.has_alternative(&id) && k.remove(&id).is_none());
    assert!(k.confirm(&id, false, Time(1)).is_none() && k.confirm(&id, true, Time(1)).is_none());
    k.mark_reached(&id);
    assert_eq!(k.closest(&id, 3).len(), 3);
    assert_eq!(k.bucket(200).count(), 0);
    assert_eq!(k.buckets.len(), 1, "no bucket made by a question");
    // A deep bucket is made with every shallower one; lookups across them are whole.
    let b = me.bucket_index(&deep.id).unwrap();
    assert_eq!(k.observe(&deep, Time(2)), Observed::Inserted);
    assert_eq!(k.buckets.len(), b + 1);
    assert_eq!(k.closest(&me, 1)[0].id, deep.id);
    assert_eq!(k.closest(&me, 100).len(), K + 1);
    // The same question, asked of the contacts a filter keeps.
    let kept = k.closest_where(&me, 100, |c| c.id != deep.id);
    assert_eq!(kept.len(), K);
    assert!(
        kept.windows(2)
            .all(|w| w[0].id.distance(&me) < w[1].id.distance(&me))
    );
    assert_eq!(k.closest_where(&me, 1, |_| true)[0].id, deep.id);
    k.check_invariants().unwrap();
}
