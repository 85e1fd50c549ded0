#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

//! Properties of the routing core over random keyspaces.

use std::collections::HashSet;

use nodenet_kad::NodeId;
use nodenet_routing::control::{self, Contact};
use nodenet_routing::msg::{MsgFields, MsgRef};
use nodenet_routing::{
    Candidates, Caps, Decision, DropReason, Edges, K, Knowledge, Observed, SIBLINGS, Time, decide,
    first_hops,
};
use nodenet_wire::{Addr, FrameType, Reader, Writer};
use proptest::prelude::*;

/// xorshift64*: deterministic ids from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        for c in b.chunks_exact_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        NodeId::from_bytes(b)
    }
}

/// Live edges as a node of a real overlay would hold them: its 16 closest nodes plus up to
/// `fingers` random nodes from each populated bucket.
fn realistic_edges(me: NodeId, all: &[NodeId], fingers: usize, rng: &mut Rng) -> Edges {
    let mut e = Edges::new(me);
    let mut by_distance: Vec<NodeId> = all.iter().copied().filter(|x| *x != me).collect();
    by_distance.sort_by(|a, b| me.cmp_distance(a, b));
    for id in by_distance.iter().take(SIBLINGS) {
        e.add(*id, true, None, Time(0));
    }
    let mut buckets: Vec<Vec<NodeId>> = vec![Vec::new(); 256];
    for id in &by_distance {
        if let Some(b) = me.bucket_index(id) {
            buckets[b].push(*id);
        }
    }
    for bucket in &buckets {
        for _ in 0..fingers.min(bucket.len()) {
            let pick = bucket[(rng.next() as usize) % bucket.len()];
            e.add(pick, true, None, Time(0));
        }
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Every hop strictly closer; every message to a live node arrives within the TTL.
    #[test]
    fn greedy_routing_progresses_and_arrives(seed in 1u64..u64::MAX) {
        let mut rng = Rng(seed);
        let nodes: Vec<NodeId> = (0..1000).map(|_| rng.id()).collect();
        let tables: Vec<Edges> =
            nodes.iter().map(|&me| realistic_edges(me, &nodes, 2, &mut rng)).collect();
        let index = |id: &NodeId| nodes.iter().position(|n| n == id).unwrap();
        let mut max_hops = 0;
        for _ in 0..200 {
            let src = (rng.next() as usize) % nodes.len();
            let target = nodes[(rng.next() as usize) % nodes.len()];
            let (mut at, mut ttl, mut hops) = (src, 16u8, 0);
            let mut c = Candidates::new();
            loop {
                let here = nodes[at];
                match decide(&here, &tables[at], &target, ttl, |_| false, &mut c) {
                    Decision::Deliver => break,
                    Decision::Forward { ttl: next_ttl } => {
                        let next = c.as_slice()[0];
                        prop_assert!(target.cmp_distance(&next, &here).is_lt(), "no progress");
                        prop_assert!(next_ttl < ttl);
                        at = index(&next);
                        ttl = next_ttl;
                        hops += 1;
                    }
                    Decision::Drop(r) => prop_assert!(false, "dropped at hop {hops}: {r:?}"),
                }
            }
            prop_assert!(hops <= 16);
            max_hops = max_hops.max(hops);
        }
        prop_assert!(max_hops <= 10, "max hops {max_hops}");
    }

    /// Origination picks distinct first hops, and each copy avoids the others.
    #[test]
    fn first_hops_are_distinct(seed in 1u64..u64::MAX) {
        let mut rng = Rng(seed);
        let nodes: Vec<NodeId> = (0..300).map(|_| rng.id()).collect();
        let me = nodes[0];
        let edges = realistic_edges(me, &nodes, 1, &mut rng);
        for _ in 0..50 {
            let target = rng.id();
            let hops = first_hops(&edges, &target);
            let set: HashSet<_> = hops.hops().iter().collect();
            prop_assert_eq!(set.len(), hops.hops().len());
            prop_assert_eq!(hops.hops().len(), 3);
            for i in 0..3 {
                let (avoid, n) = hops.avoid_for(i);
                prop_assert_eq!(n, 2);
                prop_assert!(!avoid[..n].contains(&hops.hops()[i]));
            }
        }
    }

    /// Random observations, probes and removals never break the table's bounds.
    #[test]
    fn knowledge_stays_within_bounds(seed in 1u64..u64::MAX, ops in 200usize..1500) {
        let mut rng = Rng(seed);
        let me = rng.id();
        let mut k = Knowledge::new(me, 0);
        let mut seen: Vec<NodeId> = Vec::new();
        for step in 0..ops {
            let now = Time(step as u64);
            match rng.next() % 10 {
                0..=6 => {
                    // Crowd a few buckets so they fill: ids near us.
                    let mut id = rng.id();
                    if rng.next() % 2 == 0 {
                        let mut b = id.to_bytes();
                        b[0] = me.as_bytes()[0] ^ 0x80;
                        id = NodeId::from_bytes(b);
                    }
                    let addr = format!("{}.{}.{}.1:1", rng.next() % 4, rng.next() % 4, rng.next() % 3);
                    let c = Contact { caps: Caps::default(), ..Contact::new(id, vec![Addr::new("quic", addr)]) };
                    if let Observed::Stashed { probe } = k.observe(&c, now) {
                        k.confirm(&probe, rng.next() % 2 == 0, now);
                    }
                    seen.push(id);
                }
                7 | 8 if !seen.is_empty() => {
                    let id = seen[(rng.next() as usize) % seen.len()];
                    k.confirm(&id, false, now);
                }
                _ if !seen.is_empty() => {
                    let id = seen[(rng.next() as usize) % seen.len()];
                    k.remove(&id);
                }
                _ => {}
            }
            prop_assert!(k.check_invariants().is_ok(), "{:?}", k.check_invariants());
        }
        prop_assert!(k.len() <= 256 * K);
    }

    /// The tiered closest-N walk returns exactly what a full scan does.
    #[test]
    fn closest_matches_a_full_scan(seed in 1u64..u64::MAX, n in 1usize..40) {
        let mut rng = Rng(seed);
        let me = rng.id();
        let mut k = Knowledge::new(me, 0);
        for _ in 0..600 {
            k.observe(&Contact::new(rng.id(), vec![]), Time(0));
        }
        for _ in 0..20 {
            let target = if rng.next() % 5 == 0 { me } else { rng.id() };
            let got: Vec<NodeId> = k.closest(&target, n).iter().map(|c| c.id).collect();
            let mut all: Vec<NodeId> = k.iter().map(|c| c.id).collect();
            all.sort_by(|a, b| target.cmp_distance(a, b));
            all.truncate(n);
            prop_assert_eq!(got, all);
        }
    }

    /// Envelope round trip: encode, parse, same fields; every truncation is an error.
    #[test]
    fn envelope_round_trip(
        target in any::<[u8; 32]>(),
        ttl in any::<u8>(),
        ed in any::<[u8; 32]>(),
        sent in any::<i64>(),
        navoid in 0usize..=3,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        sig in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let avoid: Vec<NodeId> = (0..navoid).map(|i| NodeId::from_bytes([i as u8; 32])).collect();
        let sig: [u8; 64] = sig.try_into().unwrap();
        let f = MsgFields { target: NodeId::from_bytes(target), ttl, ed_pub: &ed, sent, avoid: &avoid, payload: &payload, sig: &sig };
        let mut buf = vec![0u8; f.encoded_len()];
        let mut w = Writer::new(&mut buf);
        f.encode(&mut w).unwrap();
        prop_assert_eq!(w.remaining(), 0);
        let m = MsgRef::parse(&buf).unwrap();
        prop_assert_eq!((m.target, m.ttl, *m.ed_pub, m.sent, m.payload, *m.sig), (f.target, ttl, ed, sent, &payload[..], sig));
        prop_assert_eq!(m.avoid().collect::<Vec<_>>(), avoid.clone());
        for cut in 0..buf.len() {
            prop_assert!(MsgRef::parse(&buf[..cut]).is_err());
        }
        nodenet_routing::fuzzing::msg(&buf);
        let mut frame = vec![0u8; buf.len() + 8];
        let n = f.encode_frame(FrameType::ROUTE, &mut frame).unwrap();
        nodenet_routing::msg::patch_ttl(&mut frame[..n], 3).unwrap();
        let (fr, _) = nodenet_wire::Frame::parse(&frame[..n]).unwrap();
        prop_assert_eq!(MsgRef::parse(fr.payload()).unwrap().ttl, 3);
    }

    /// Contact lists and neighbor payloads round-trip.
    #[test]
    fn neighbors_round_trip(
        nonce in any::<[u8; 8]>(),
        contacts in proptest::collection::vec(
            (any::<[u8; 32]>(), proptest::option::of(any::<[u8; 32]>()), any::<u32>(), proptest::collection::vec("[0-9.:]{1,21}", 0..4)),
            0..17),
    ) {
        let contacts: Vec<Contact> = contacts
            .into_iter()
            .map(|(id, ed, caps, addrs)| Contact {
                id: NodeId::from_bytes(id),
                ed_pub: ed.filter(|k| *k != [0; 32]),
                x_pub: None,
                caps: Caps(caps),
                addrs: addrs.into_iter().map(|a| Addr::new("quic", a)).collect(),
            })
            .collect();
        let mut buf = vec![0u8; 8 + control::contacts_len(&contacts)];
        control::encode_neighbors(&mut Writer::new(&mut buf), &nonce, &contacts).unwrap();
        let (n2, list) = control::parse_neighbors(&buf).unwrap();
        prop_assert_eq!(n2, nonce);
        let back: Vec<Contact> = list.iter().map(|c| c.to_contact()).collect();
        prop_assert_eq!(back, contacts);
        nodenet_routing::fuzzing::neighbors(&buf);
        let mut r = Reader::new(&buf[8..]);
        prop_assert!(control::ContactList::decode(&mut r).is_ok());
    }

    /// The forwarding decision's candidates are exactly what a full scan gives: the edges
    /// strictly closer to the target than we are and not avoided, closest first, at most
    /// MAX_CANDIDATES. Tables on both sides of the fast path's size limit (64), and ids
    /// sharing their first eight bytes with each other and with us, so first-word ties (the
    /// fast path's rare branch) occur often.
    #[test]
    fn decide_candidates_match_a_full_scan(
        seed in 1u64..u64::MAX,
        n in 0usize..80,
        tied in any::<bool>(),
    ) {
        let mut rng = Rng(seed);
        let me = rng.id();
        let prefixes = [me.as_bytes()[..8].to_vec(), vec![0x55; 8], vec![0xaa; 8]];
        let mut edges = Edges::new(me);
        let mut ids = Vec::new();
        for _ in 0..n {
            let mut b = *rng.id().as_bytes();
            if tied {
                b[..8].copy_from_slice(&prefixes[(rng.next() % 3) as usize]);
            }
            let id = NodeId::from_bytes(b);
            if id != me && !edges.contains(&id) {
                edges.add(id, true, None, Time(0));
                ids.push(id);
            }
        }
        for _ in 0..10 {
            let mut b = *rng.id().as_bytes();
            if tied && rng.next() % 2 == 0 {
                b[..8].copy_from_slice(&prefixes[(rng.next() % 3) as usize]);
            }
            let target = NodeId::from_bytes(b);
            let avoided: HashSet<NodeId> =
                ids.iter().filter(|_| rng.next() % 4 == 0).copied().collect();
            let mut c = Candidates::new();
            let d = decide(&me, &edges, &target, 9, |id| avoided.contains(id), &mut c);
            let mut want: Vec<NodeId> = ids
                .iter()
                .filter(|id| !avoided.contains(id))
                .filter(|id| target.cmp_distance(id, &me) == std::cmp::Ordering::Less)
                .copied()
                .collect();
            want.sort_by(|a, b| target.cmp_distance(a, b));
            want.truncate(nodenet_routing::MAX_CANDIDATES);
            if target == me {
                prop_assert!(matches!(d, Decision::Deliver));
                continue;
            }
            prop_assert_eq!(c.as_slice(), &want[..]);
            prop_assert_eq!(
                matches!(d, Decision::Drop(DropReason::LocalOptimum)),
                want.is_empty()
            );
        }
    }

    /// Decoders never panic on arbitrary bytes.
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        nodenet_routing::fuzzing::msg(&data);
        nodenet_routing::fuzzing::neighbors(&data);
        nodenet_routing::fuzzing::pong(&data);
        nodenet_routing::fuzzing::nonce(&data);
        nodenet_routing::fuzzing::closest_parity(&data);
    }
}

#[test]
fn a_local_optimum_is_reported() {
    // Alone with one farther edge: nothing is closer to the target than we are.
    let me = NodeId::from_bytes([0x10; 32]);
    let mut e = Edges::new(me);
    e.add(NodeId::from_bytes([0xf0; 32]), true, None, Time(0));
    assert!(matches!(
        decide(
            &me,
            &e,
            &NodeId::from_bytes([0x11; 32]),
            9,
            |_| false,
            &mut Candidates::new()
        ),
        Decision::Drop(DropReason::LocalOptimum)
    ));
}
