//! Edges, the token bucket, and the routing decision.

use super::*;

#[test]
fn edges_phases_siblings_and_limits() {
    let me = NodeId::ZERO;
    let mut e = Edges::new(me);
    assert_eq!(e.phase(), Phase::Bootstrap);
    let id = |n: u32| {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&(n + 1).to_be_bytes());
        NodeId::from_bytes(b)
    };
    for n in 0..3 {
        assert!(e.add(id(n), true, None, t(0)));
    }
    assert!(!e.add(id(0), true, None, t(0)), "one edge per peer");
    assert_eq!(e.phase(), Phase::Critical);
    for n in 3..8 {
        e.add(id(n), true, None, t(0));
    }
    assert_eq!(e.phase(), Phase::Urgent);
    for n in 8..64 {
        e.add(id(n), true, None, t(0));
    }
    assert_eq!(e.phase(), Phase::Normal);
    // Hysteresis: Normal holds down to 60 outbound edges.
    for n in 60..64 {
        e.remove(&id(n));
    }
    assert_eq!(e.phase(), Phase::Normal);
    e.remove(&id(59));
    assert_eq!(e.phase(), Phase::NeedsFill);
    // Inbound edges do not count toward the floor.
    e.add(id(500), false, None, t(0));
    assert_eq!(e.outbound(), 59);
    // The 16 closest to us are the siblings.
    let siblings: Vec<NodeId> = e.iter().filter(|x| x.sibling).map(|x| x.id).collect();
    assert_eq!(siblings.len(), SIBLINGS);
    assert!(siblings.iter().all(|s| (0..16).map(id).any(|i| i == *s)));
    // Rate limits: a burst, then refusal, then refill.
    let peer = id(0);
    assert!((0..32).all(|_| e.allow_control(&peer, t(0))));
    assert!(!e.allow_control(&peer, t(0)));
    assert!(e.allow_control(&peer, t(1)));
    assert!(
        !e.allow_control(&NodeId::from_bytes([0xff; 32]), t(0)),
        "unregistered peer denied"
    );
    assert!(e.allow_control(&me, t(0)), "own frames are free");
}

#[test]
fn token_bucket_refuses_without_consuming() {
    let mut b = TokenBucket::new(10.0, 2.0, t(0));
    assert!(b.allow(t(0)) && b.allow(t(0)));
    assert!(!b.allow(t(0)));
    assert!(!b.allow_n(t(0), 5.0));
    let half = Time(100_000_000); // 0.1 s: one token back
    assert!(b.allow(half));
    assert!(!b.allow(half));
    assert!((b.tokens(t(100)) - 2.0).abs() < 1e-9, "capped at the burst");
}

#[test]
fn decide_delivers_forwards_and_drops() {
    let me = NodeId::from_bytes([0x40; 32]);
    let mut e = Edges::new(me);
    let target = NodeId::from_bytes([0x41; 32]);
    let mut c = Candidates::new();
    assert_eq!(
        decide(&me, &e, &me, 5, |_| false, &mut c),
        Decision::Deliver
    );
    assert_eq!(
        decide(&me, &e, &target, 0, |_| false, &mut c),
        Decision::Drop(DropReason::TtlExpired)
    );
    assert_eq!(
        decide(&me, &e, &target, 5, |_| false, &mut c),
        Decision::Drop(DropReason::LocalOptimum)
    );
    let closer = NodeId::from_bytes([0x41; 32]);
    let near = {
        let mut b = [0x41; 32];
        b[31] = 0;
        NodeId::from_bytes(b)
    };
    let farther = NodeId::from_bytes([0xc0; 32]);
    for id in [closer, near, farther] {
        e.add(id, true, None, t(0));
    }
    // Clamped to 16, then one hop used; strictly closer candidates only, best first.
    assert_eq!(
        decide(&me, &e, &target, 200, |_| false, &mut c),
        Decision::Forward { ttl: 15 }
    );
    assert_eq!(c.as_slice(), &[closer, near]);
    let d = decide(&me, &e, &target, 3, |id| *id == closer, &mut c);
    assert_eq!(d, Decision::Forward { ttl: 2 });
    assert_eq!(c.as_slice(), &[near]);
    let hops = first_hops(&e, &target);
    assert_eq!(hops.hops(), &[closer, near, farther]);
    let (avoid, n) = hops.avoid_for(0);
    assert_eq!(&avoid[..n], &[near, farther]);
}

#[test]
fn leave_drops_the_edge() {
    let mut e = Edges::new(NodeId::ZERO);
    let peer = NodeId::from_bytes([1; 32]);
    e.add(peer, true, None, t(0));
    assert!(handlers::on_leave(&mut e, &peer));
    assert!(!handlers::on_leave(&mut e, &peer));
    assert_eq!(e.phase(), Phase::Bootstrap);
}

#[test]
fn candidates_prefer_moves_or_inserts_at_the_front() {
    let id = |b: u8| NodeId::from_bytes([b; 32]);
    let mut c = Candidates::new();
    c.prefer(id(1));
    c.prefer(id(2));
    assert_eq!(c.as_slice(), &[id(2), id(1)]);
    c.prefer(id(1));
    assert_eq!(c.as_slice(), &[id(1), id(2)]);
    for b in 3..20 {
        c.prefer(id(b));
    }
    assert_eq!(c.as_slice().len(), MAX_CANDIDATES);
    assert_eq!(c.as_slice()[0], id(19));
    c.clear();
    assert!(c.as_slice().is_empty());
}
