//! Control payloads: known-answer vectors, the caps on Neighbors answers, address folding.

use super::*;

#[test]
fn control_vectors() {
    let v = vectors();
    let c = &v["control"];
    for (key, ty) in [("ping", FrameType::PING), ("leave", FrameType::LEAVE)] {
        let bytes = unhex(&c[key]["frame"]);
        let f = Frame::parse_exact(&bytes).unwrap();
        assert_eq!((f.frame_type(), f.payload()), (ty, &[][..]));
    }
    let sib_bytes = unhex(&c["siblings"]["frame"]);
    let sib = Frame::parse_exact(&sib_bytes).unwrap();
    assert_eq!(
        control::parse_nonce(sib.payload()).unwrap().to_vec(),
        unhex(&c["siblings"]["nonce"])
    );
    assert!(control::parse_nonce(&[0; 9]).is_err());
    assert!(control::parse_nonce(&[0; 7]).is_err());
    for p in c["pong"].as_array().unwrap() {
        let bytes = unhex(&p["frame"]);
        let f = Frame::parse_exact(&bytes).unwrap();
        assert_eq!(f.frame_type(), FrameType::PONG);
        let a = control::parse_pong(f.payload()).unwrap();
        assert_eq!(
            (a.net, a.endpoint),
            (
                p["observed"]["net"].as_str().unwrap(),
                p["observed"]["endpoint"].as_str().unwrap()
            )
        );
        let mut trailing = f.payload().to_vec();
        trailing.push(0);
        assert!(matches!(
            control::parse_pong(&trailing),
            Err(WireError::TrailingBytes { .. })
        ));
    }
    let contacts: Vec<Contact> = c["neighbors_contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(contact_from)
        .collect();
    let list = unhex(&c["neighbors_contact_list"]["list"]);
    let mut buf = vec![0u8; control::contacts_len(&contacts)];
    control::encode_contacts(&mut Writer::new(&mut buf), &contacts).unwrap();
    assert_eq!(buf, list);
    let mut r = Reader::new(&list);
    let decoded = ContactList::decode(&mut r).unwrap();
    r.finish().unwrap();
    assert_eq!(
        decoded.iter().map(|c| c.to_contact()).collect::<Vec<_>>(),
        contacts
    );
    for n in c["neighbors"].as_array().unwrap() {
        let payload = unhex(&n["msg_payload"]);
        let (nonce, list) = control::parse_neighbors(&payload).unwrap();
        assert_eq!(nonce.to_vec(), unhex(&n["nonce"]));
        assert_eq!(list.len(), 2);
    }
    for m in c["neighbors_list_malformed"].as_array().unwrap() {
        let bytes = unhex(&m["list"]);
        let mut r = Reader::new(&bytes);
        let result = ContactList::decode(&mut r).and_then(|_| r.finish());
        assert!(result.is_err(), "{}", m["description"]);
    }
    let lookup = &c["lookup"];
    assert_eq!(
        control::parse_nonce(&unhex(&lookup["payload"]))
            .unwrap()
            .len(),
        8
    );
    let caps = &v["constants"]["capabilities"];
    assert_eq!(
        u64::from(Caps::CAN_RELAY.0),
        caps["CanRelay"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(Caps::PUBLIC_ANCHOR.0),
        caps["PublicAnchor"].as_u64().unwrap()
    );
}

#[test]
fn neighbor_caps_are_enforced_both_ways() {
    let many: Vec<Contact> = (0..18)
        .map(|i| Contact::new(NodeId::from_bytes([i; 32]), vec![]))
        .collect();
    let mut buf = vec![0u8; 10_000];
    assert!(matches!(
        control::encode_contacts(&mut Writer::new(&mut buf), &many),
        Err(WireError::TooMany { count: 18, max: 17 })
    ));
    // 257 addresses across the list.
    let addrs: Vec<Addr> = (0..16)
        .map(|i| Addr::new("quic", format!("10.0.0.{i}:1")))
        .collect();
    let mut fat: Vec<Contact> = (0..16)
        .map(|i| Contact::new(NodeId::from_bytes([i; 32]), addrs.clone()))
        .collect();
    fat.push(Contact::new(
        NodeId::from_bytes([99; 32]),
        vec![Addr::new("quic", "10.0.0.1:1")],
    ));
    assert!(matches!(
        control::encode_contacts(&mut Writer::new(&mut buf), &fat),
        Err(WireError::TooMany { count: 257, .. })
    ));
}

#[test]
fn folding_neighbors_strips_unbound_addresses() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    let known = ident(1);
    k.observe(&keyed(&known, "7.7.7.7:1"), t(0));
    // An unauthenticated contact claims the known peer moved to the attacker's address, and
    // introduces a keyless stranger with an address.
    let hijack = Contact::new(known.node_id(), vec![Addr::new("quic", "6.6.6.6:1")]);
    let stranger = Contact::new(
        NodeId::from_bytes([0x33; 32]),
        vec![Addr::new("quic", "6.6.6.7:1")],
    );
    let honest = keyed(&ident(2), "5.5.5.5:1");
    let list = [hijack, stranger.clone(), honest.clone()];
    let mut buf = vec![0u8; control::contacts_len(&list)];
    control::encode_contacts(&mut Writer::new(&mut buf), &list).unwrap();
    let decoded = ContactList::decode(&mut Reader::new(&buf)).unwrap();
    let report = handlers::fold_neighbors(&mut k, &decoded, &ident(9).node_id(), t(1));
    assert_eq!(
        (report.inserted, report.refreshed, report.rejected),
        (2, 1, 0)
    );
    assert_eq!(
        k.get(&known.node_id()).unwrap().addrs[0].endpoint,
        "7.7.7.7:1"
    );
    assert!(k.get(&stranger.id).unwrap().addrs.is_empty());
    assert_eq!(k.get(&honest.id).unwrap().addrs, honest.addrs);
    assert_eq!(
        k.get(&honest.id).unwrap().x_pub,
        None,
        "X25519 keys never come from lists"
    );
}

#[test]
fn a_neighbors_answer_fits_the_caps() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    for n in 1..100 {
        let addrs: Vec<Addr> = (0..20)
            .map(|i| Addr::new("quic", format!("{n}.0.0.{i}:1")))
            .collect();
        let i = ident(n);
        k.observe(
            &Contact {
                addrs,
                ..keyed(&i, "1.1.1.1:1")
            },
            t(0),
        );
    }
    let target = ident(500).node_id();
    let self_contact = keyed(&me, "9.9.9.9:1");
    let answer = handlers::neighbors_answer(&k, &target, &self_contact);
    assert!(answer.len() <= control::MAX_NEIGHBORS);
    assert_eq!(answer.last().unwrap().id, me.node_id());
    assert!(answer.iter().map(|c| c.addrs.len()).sum::<usize>() <= control::MAX_NEIGHBOR_ADDRS);
    let mut buf = vec![0u8; control::contacts_len(&answer)];
    control::encode_contacts(&mut Writer::new(&mut buf), &answer).unwrap();
    // The closest known contacts come first, in order.
    let closest: Vec<NodeId> = k.closest(&target, 16).iter().map(|c| c.id).collect();
    assert!(
        answer[..answer.len() - 1]
            .iter()
            .all(|c| closest.contains(&c.id))
    );
}

/// Made-up ids, named without a key (nothing binds them to anyone), planted next to a
/// target: our answers about it never pass them on. They would otherwise take the places of
/// real nodes in every answer for that region, and spread from table to table.
#[test]
fn a_neighbors_answer_names_no_keyless_contact() {
    let me = ident(0);
    let mut k = Knowledge::new(me.node_id(), 0);
    let target = ident(500).node_id();
    for n in 1..=16u8 {
        let mut b = target.to_bytes();
        b[31] ^= n;
        let planted = Contact::new(NodeId::from_bytes(b), vec![]);
        assert!(matches!(k.observe(&planted, t(0)), Observed::Inserted));
    }
    for n in 1..40 {
        k.observe(&keyed(&ident(n), &format!("10.0.{n}.1:1")), t(0));
    }
    let answer = handlers::neighbors_answer(&k, &target, &keyed(&me, "9.9.9.9:1"));
    assert!(answer.iter().all(|c| c.ed_pub.is_some()), "{answer:?}");
    // Still full: the closest keyed contacts take the places.
    assert_eq!(answer.len(), control::MAX_NEIGHBORS);
    let keyed_closest: Vec<NodeId> = k
        .closest_where(&target, control::MAX_NEIGHBORS - 1, |c| c.ed_pub.is_some())
        .iter()
        .map(|c| c.id)
        .collect();
    let named: Vec<NodeId> = answer[..answer.len() - 1].iter().map(|c| c.id).collect();
    assert_eq!(named, keyed_closest);
}
