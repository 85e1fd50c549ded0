//! The knowledge table: admission, subnet caps, probes and promotion, reached marks, refresh.

use super::*;

#[test]
fn knowledge_admission_rules() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    assert_eq!(k.observe(&keyed(&me, "1.1.1.1:1"), t(0)), Observed::Ignored);
    let a = ident(1);
    let mut forged = keyed(&a, "1.1.1.1:1");
    forged.id = NodeId::from_bytes([7; 32]);
    assert_eq!(
        k.observe(&forged, t(0)),
        Observed::Rejected(Rejection::KeyMismatch)
    );
    assert_eq!(k.observe(&keyed(&a, "1.1.1.1:1"), t(0)), Observed::Inserted);
    // X25519 keys never enter through observation.
    assert_eq!(k.get(&a.node_id()).unwrap().x_pub, None);
    assert!(k.bind_x25519(&a.node_id(), a.x_public()));
    assert_eq!(k.get(&a.node_id()).unwrap().x_pub, Some(a.x_public()));
    assert_eq!(
        k.observe(&keyed(&a, "1.1.1.2:1"), t(5)),
        Observed::Refreshed
    );
    assert_eq!(k.last_seen(&a.node_id()), Some(t(5)));
    // Keyless newcomers are fine at difficulty 0, refused above it.
    let keyless = Contact::new(NodeId::from_bytes([0x80; 32]), vec![]);
    assert_eq!(k.observe(&keyless, t(0)), Observed::Inserted);
    let mut strict = Knowledge::new(me.node_id(), 8);
    assert_eq!(
        strict.observe(&keyless, t(0)),
        Observed::Rejected(Rejection::Keyless)
    );
    // A keyed newcomer below the difficulty is refused...
    let weak = (1..)
        .map(ident)
        .find(|i| i.node_id().leading_zeros() < 8)
        .unwrap();
    assert_eq!(
        strict.observe(&keyed(&weak, "2.2.2.2:1"), t(0)),
        Observed::Rejected(Rejection::SubPow)
    );
    // ...and one meeting it admitted.
    let strong = nodenet_pow::Solver::new(8)
        .unwrap()
        .solve_seeds((0u64..).map(|n| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&n.to_le_bytes());
            s
        }));
    let (_, strong) = strong.unwrap();
    assert_eq!(
        strict.observe(&keyed(&strong, "2.2.2.2:1"), t(0)),
        Observed::Inserted
    );
    assert_eq!(strict.stats().rejected_keyless, 1);
    assert_eq!(strict.stats().rejected_sub_pow, 1);
    k.check_invariants().unwrap();
}

#[test]
fn subnet_cap_limits_newcomers_and_moves() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    let mut n = 1;
    let mut inserted = 0;
    while inserted < SUBNET_CAP {
        if k.observe(&keyed(&ident(n), &format!("9.9.9.{n}:1")), t(0)) == Observed::Inserted {
            inserted += 1;
        }
        n += 1;
    }
    let extra = ident(1000);
    assert_eq!(
        k.observe(&keyed(&extra, "9.9.9.200:1"), t(0)),
        Observed::Rejected(Rejection::SubnetFull)
    );
    // A known contact elsewhere may not move into the full subnet; the sighting still counts.
    let other = ident(2000);
    assert_eq!(
        k.observe(&keyed(&other, "8.8.8.8:1"), t(0)),
        Observed::Inserted
    );
    assert_eq!(
        k.observe(&keyed(&other, "9.9.9.201:1"), t(9)),
        Observed::Refreshed
    );
    let c = k.get(&other.node_id()).unwrap();
    assert_eq!(c.addrs[0].endpoint, "8.8.8.8:1");
    assert_eq!(k.last_seen(&other.node_id()), Some(t(9)));
    // IPv6 counts by /64.
    assert_eq!(
        SubnetKey::of_endpoint("[2001:db8::1]:1"),
        SubnetKey::of_endpoint("[2001:db8::ffff]:9")
    );
    assert_ne!(
        SubnetKey::of_endpoint("[2001:db8::1]:1"),
        SubnetKey::of_endpoint("[2001:db8:0:1::1]:1")
    );
    assert_eq!(
        SubnetKey::of_endpoint("9.9.9.1:1"),
        SubnetKey::of_endpoint("9.9.9.254:2")
    );
    assert_eq!(SubnetKey::of_endpoint("host.example:1"), None);
    assert_eq!(k.stats().rejected_subnet, 2);
    k.check_invariants().unwrap();
}

#[test]
fn subnet_accounting_off_admits_one_subnet_past_the_cap() {
    let me = ident(0);
    let mut on = Knowledge::new(me.node_id(), 0);
    let mut off = Knowledge::new(me.node_id(), 0);
    off.set_subnet_accounting(false);
    for n in 1..=4 * SUBNET_CAP as u64 {
        let c = keyed(&ident(n), &format!("127.0.0.1:{n}"));
        on.observe(&c, t(0));
        off.observe(&c, t(0));
    }
    assert!(on.len() <= SUBNET_CAP, "{}", on.len());
    assert!(on.stats().rejected_subnet > 0);
    // Every contact kept its address: all of them stay dialable.
    assert!(off.len() > 2 * SUBNET_CAP, "{}", off.len());
    assert!(off.iter().all(|c| !c.addrs.is_empty()));
    assert_eq!(off.stats().rejected_subnet, 0);
    off.check_invariants().unwrap();
}

#[test]
fn full_bucket_offers_a_probe_and_promotes_on_death() {
    let me = NodeId::ZERO;
    let mut k = Knowledge::new(me, 0);
    let id = bucket0_id;
    for n in 0..K as u8 {
        assert_eq!(
            k.observe(&Contact::new(id(n), vec![]), t(u64::from(n))),
            Observed::Inserted
        );
    }
    let newcomer = Contact::new(id(200), vec![]);
    // The least recently seen incumbent is the first one inserted.
    assert_eq!(
        k.observe(&newcomer, t(100)),
        Observed::Stashed { probe: id(0) }
    );
    // Alive: it stays.
    assert_eq!(k.confirm(&id(0), true, t(101)), None);
    assert!(k.get(&id(0)).is_some());
    // Dead: it goes and the newcomer takes its place.
    assert_eq!(k.observe(&newcomer, t(102)), Observed::Refreshed);
    assert_eq!(k.confirm(&id(1), false, t(103)), Some(id(200)));
    assert!(k.last_seen(&id(1)).is_none());
    assert!(k.last_seen(&id(200)).is_some());
    assert_eq!(k.len(), K);
    assert_eq!(k.stats().evicted, 1);
    k.check_invariants().unwrap();
}

/// What keeps a failing contact in its bucket: whether we ever reached it, and whether its
/// bucket has another contact to dial (an entry, or a newcomer waiting in the cache).
#[test]
fn a_contact_knows_whether_it_was_reached_and_has_an_alternative() {
    let me = NodeId::ZERO;
    let mut k = Knowledge::new(me, 0);
    let id = bucket0_id;
    let at = |n: u8| vec![Addr::new("quic", format!("10.0.0.{n}:1"))];
    k.observe(&Contact::new(id(0), at(0)), t(0));
    assert!(!k.was_reached(&id(0)));
    k.mark_reached(&id(0));
    assert!(k.was_reached(&id(0)));
    // Unknown ids are neither reached nor marked.
    k.mark_reached(&id(99));
    assert!(!k.was_reached(&id(99)));
    // Alone, or beside contacts without an address: no alternative.
    assert!(!k.has_alternative(&id(0)));
    for n in 1..K as u8 {
        k.observe(&Contact::new(id(n), vec![]), t(u64::from(n)));
    }
    assert!(!k.has_alternative(&id(0)));
    // A newcomer without an address, stashed in the full bucket's cache, is none (nothing
    // could dial it) ...
    assert!(matches!(
        k.observe(&Contact::new(id(201), vec![]), t(99)),
        Observed::Stashed { .. }
    ));
    assert!(!k.has_alternative(&id(0)));
    // ... one with an address, stashed there, is one.
    assert!(matches!(
        k.observe(&Contact::new(id(200), at(200)), t(100)),
        Observed::Stashed { .. }
    ));
    assert!(k.has_alternative(&id(0)));
    // It keeps the mark through refreshes at the same address, not a move to another.
    k.observe(&Contact::new(id(0), at(0)), t(101));
    assert!(k.was_reached(&id(0)));
    k.observe(&Contact::new(id(0), at(7)), t(102));
    assert!(!k.was_reached(&id(0)));
    k.check_invariants().unwrap();

    // In a bucket with room, a contact only named does not count as an alternative; one we
    // reached does.
    let mut k = Knowledge::new(me, 0);
    k.observe(&Contact::new(id(0), at(0)), t(0));
    k.observe(&Contact::new(id(1), at(1)), t(1));
    assert!(!k.has_alternative(&id(0)));
    k.mark_reached(&id(1));
    assert!(k.has_alternative(&id(0)));
    k.check_invariants().unwrap();
}

#[test]
fn refresh_targets_land_in_the_stale_bucket() {
    let me = ident(0).node_id();
    let mut k = Knowledge::new(me, 0);
    for n in 1..50 {
        k.observe(&keyed(&ident(n), &format!("{n}.0.0.1:1")), t(0));
    }
    let stale = Duration::from_secs(900);
    let target = k.refresh_target(t(1000), stale, [0x5a; 32]).unwrap();
    let b = me.bucket_index(&target).unwrap();
    assert!(
        k.iter().any(|c| me.bucket_index(&c.id) == Some(b)),
        "a populated bucket"
    );
    // Each call refreshes one bucket; eventually none are stale.
    let mut rounds = 0;
    while k.refresh_target(t(1000), stale, [1; 32]).is_some() {
        rounds += 1;
        assert!(rounds < 300);
    }
    assert!(k.refresh_target(t(1000), stale, [1; 32]).is_none());
}

#[test]
fn a_sighting_without_capabilities_keeps_the_known_ones() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    let relay = ident(7);
    let mut c = keyed(&relay, "9.9.9.7:1");
    c.caps = Caps::CAN_RELAY;
    k.observe(&c, t(0));
    // Its envelope seen later: key, no address, no capabilities.
    let mut bare = keyed(&relay, "9.9.9.7:1");
    bare.addrs.clear();
    k.observe(&bare, t(1));
    assert_eq!(k.get(&relay.node_id()).unwrap().caps, Caps::CAN_RELAY);
    assert_eq!(k.get(&relay.node_id()).unwrap().addrs.len(), 1);
    // A sighting that states other capabilities replaces them.
    let mut anchor = keyed(&relay, "9.9.9.7:1");
    anchor.caps = Caps::PUBLIC_ANCHOR;
    k.observe(&anchor, t(2));
    assert_eq!(k.get(&relay.node_id()).unwrap().caps, Caps::PUBLIC_ANCHOR);
}

/// Review of the hardening issue: a Neighbors answer is the answerer's word about itself
/// only. Before, a third party could strip an honest relay of its capability (so that only
/// the attacker's relays were left to ask), dress its own nodes up as anchors, or move a
/// known entry to an unreachable address (so that its probe failed and it was evicted).
#[test]
fn gossip_cannot_rewrite_a_known_contact() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    let relay = ident(1);
    let mut honest = keyed(&relay, "7.7.7.7:1");
    honest.caps = Caps::CAN_RELAY;
    k.observe(&honest, t(0));
    let answerer = ident(2);
    // The answerer lists the relay as a mere anchor at a new address, a stranger, and itself
    // as a relay.
    let mut demoted = keyed(&relay, "6.6.6.6:1");
    demoted.caps = Caps::PUBLIC_ANCHOR;
    let mut stranger = keyed(&ident(3), "5.5.5.5:1");
    stranger.caps = Caps::PUBLIC_ANCHOR;
    let mut itself = keyed(&answerer, "4.4.4.4:1");
    itself.caps = Caps::CAN_RELAY;
    let list = [demoted, stranger.clone(), itself];
    let mut buf = vec![0u8; control::contacts_len(&list)];
    control::encode_contacts(&mut Writer::new(&mut buf), &list).unwrap();
    let decoded = ContactList::decode(&mut Reader::new(&buf)).unwrap();
    handlers::fold_neighbors(&mut k, &decoded, &answerer.node_id(), t(1));
    let kept = k.get(&relay.node_id()).unwrap();
    assert_eq!(
        (kept.caps, kept.addrs[0].endpoint.as_str()),
        (Caps::CAN_RELAY, "7.7.7.7:1")
    );
    assert_eq!(k.get(&answerer.node_id()).unwrap().caps, Caps::CAN_RELAY);
    // A new contact is taken as listed.
    assert_eq!(k.get(&stranger.id).unwrap().caps, Caps::PUBLIC_ANCHOR);
}
