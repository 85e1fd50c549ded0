#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use std::time::Duration;

use nodenet_identity::{Identity, PUBLIC_KEY_LEN};
use nodenet_kad::NodeId;
use nodenet_testkit::{Value, hex32, unhex, vectors};
use nodenet_wire::{Addr, Frame, FrameType, Reader, WireError, Writer};

use crate::control::{self, Caps, Contact};
use crate::msg::{self, MsgError, MsgFields, MsgRef};
use crate::*;

fn id_of(v: &Value) -> NodeId {
    NodeId::from_bytes(hex32(v))
}

/// Checks one routed-frame vector end to end: digest input, digest, signature, envelope
/// bytes, frame bytes, and parsing back.
fn check_routed(case: &Value) {
    let what = case["description"].as_str().unwrap();
    let ty = FrameType(case.get("frame_type").map_or(5, |t| t.as_u64().unwrap()) as u8);
    let signer = Identity::from_seed(&hex32(&case["signer_seed"]));
    assert_eq!(signer.ed_public(), hex32(&case["ed_pub"]), "{what}");
    let target = id_of(&case["target"]);
    let sent = case["sent_unix_nanos"].as_i64().unwrap();
    let payload = unhex(case.get("payload").unwrap_or_else(|| &case["msg_payload"]));
    let avoid: Vec<NodeId> = case
        .get("avoid")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(id_of).collect())
        .unwrap_or_default();
    let ttl = case["ttl"].as_u64().unwrap() as u8;

    let mut input = msg::SIG_DOMAIN.to_vec();
    input.push(ty.0);
    input.extend_from_slice(target.as_bytes());
    input.extend_from_slice(&signer.ed_public());
    input.extend_from_slice(&sent.to_be_bytes());
    input.extend_from_slice(&payload);
    assert_eq!(input, unhex(&case["digest_input"]), "{what}: digest input");
    let digest = msg::digest(ty, &target, &signer.ed_public(), sent, &payload);
    assert_eq!(digest.to_vec(), unhex(&case["digest"]), "{what}: digest");
    let sig = msg::sign(&signer, ty, &target, sent, &payload);
    assert_eq!(sig.to_vec(), unhex(&case["sig"]), "{what}: signature");

    let ed = signer.ed_public();
    let fields = MsgFields {
        target,
        ttl,
        ed_pub: &ed,
        sent,
        avoid: &avoid,
        payload: &payload,
        sig: &sig,
    };
    let mut buf = vec![0u8; 70_000];
    if let Some(m) = case.get("msg") {
        let mut w = Writer::new(&mut buf);
        fields.encode(&mut w).unwrap();
        assert_eq!(w.written(), &unhex(m)[..], "{what}: envelope");
    }
    let n = fields.encode_frame(ty, &mut buf).unwrap();
    let frame = unhex(&case["frame"]);
    assert_eq!(&buf[..n], &frame[..], "{what}: frame");

    let f = Frame::parse_exact(&frame).unwrap();
    assert_eq!(f.frame_type(), ty);
    let m = MsgRef::parse(f.payload()).unwrap();
    assert_eq!(
        (m.target, m.ttl, m.sent, m.payload),
        (target, ttl, sent, &payload[..]),
        "{what}"
    );
    assert_eq!(m.avoid().collect::<Vec<_>>(), avoid);
    assert_eq!(m.originator(), signer.node_id());
    m.verify(ty).unwrap();
    // The same envelope claimed as another type does not verify: the type is signed.
    assert_eq!(
        m.verify(FrameType(ty.0 ^ 0x40)),
        Err(MsgError::BadSignature)
    );
}

#[test]
fn routed_envelope_vectors() {
    let v = vectors();
    let r = &v["routed_msg"];
    for key in ["route", "route_minimal", "same_content_as_type_4"] {
        check_routed(&r[key]);
    }
    check_routed(&v["control"]["lookup"]);
    for n in v["control"]["neighbors"].as_array().unwrap() {
        check_routed(n);
    }
    check_routed(&v["rendezvous"]["hello_routed"]);
    check_routed(&v["rendezvous"]["reply_routed"]);
    check_routed(&v["nat"]["connect_routed"]);
    check_routed(&v["nat"]["connect_ack_routed"]);
}

#[test]
fn ttl_is_patched_in_place_and_unsigned() {
    let v = vectors();
    let mut frame = unhex(&v["routed_msg"]["route"]["frame"]);
    msg::patch_ttl(&mut frame, 15).unwrap();
    assert_eq!(
        frame,
        unhex(&v["routed_msg"]["route_ttl_patched_to_15"]["frame"])
    );
    let f = Frame::parse_exact(&frame).unwrap();
    let m = MsgRef::parse(f.payload()).unwrap();
    assert_eq!(m.ttl, 15);
    m.verify(FrameType::ROUTE).unwrap();
}

#[test]
fn ttl_patch_finds_the_payload_behind_a_non_minimal_prefix() {
    // The reference accepts a padded length prefix; the TTL must still land on the TTL byte.
    let v = vectors();
    let frame = unhex(&v["routed_msg"]["route_minimal"]["frame"]);
    // Re-encode the 2-byte length prefix 0x8b 0x01 as the non-minimal 0x8b 0x81 0x00.
    assert_eq!(&frame[2..4], &[0x8b, 0x01]);
    let mut padded = frame[..2].to_vec();
    padded.extend_from_slice(&[0x8b, 0x81, 0x00]);
    padded.extend_from_slice(&frame[4..]);
    msg::patch_ttl(&mut padded, 9).unwrap();
    let f = Frame::parse_exact(&padded).unwrap();
    let m = MsgRef::parse(f.payload()).unwrap();
    assert_eq!(m.ttl, 9);
    assert_eq!(m.target, id_of(&v["routed_msg"]["route_minimal"]["target"]));
    m.verify(FrameType::ROUTE).unwrap();
}

#[test]
fn tampering_outcomes_match_the_reference() {
    let v = vectors();
    let case = &v["routed_msg"]["route"];
    let signer = Identity::from_seed(&hex32(&case["signer_seed"]));
    let target = id_of(&case["target"]);
    let sent = case["sent_unix_nanos"].as_i64().unwrap();
    let payload = unhex(&case["payload"]);
    let sig = msg::sign(&signer, FrameType::ROUTE, &target, sent, &payload);
    let ed = signer.ed_public();
    let check = |target: NodeId, ttl: u8, avoid: &[NodeId], sent: i64, payload: &[u8]| {
        let f = MsgFields {
            target,
            ttl,
            ed_pub: &ed,
            sent,
            avoid,
            payload,
            sig: &sig,
        };
        let mut buf = vec![0u8; 512];
        let mut w = Writer::new(&mut buf);
        f.encode(&mut w).unwrap();
        let n = w.finish();
        MsgRef::parse(&buf[..n])
            .unwrap()
            .verify(FrameType::ROUTE)
            .is_ok()
    };
    let expected: Vec<bool> = v["routed_msg"]["signature_tampering"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verify_sig"].as_bool().unwrap())
        .collect();
    let mut flipped = payload.clone();
    flipped[0] ^= 1;
    let got = vec![
        check(target, 3, &[], sent, &payload),
        check(target, 16, &[], sent, &payload),
        check(target, 16, &[], sent + 1, &payload),
        check(target, 16, &[], sent, &flipped),
        check(NodeId::from_bytes([9; 32]), 16, &[], sent, &payload),
    ];
    assert_eq!(got, expected);
}

#[test]
fn malformed_envelopes() {
    let v = vectors();
    for case in v["routed_msg"]["malformed"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let err = MsgRef::parse(&unhex(&case["msg"])).unwrap_err();
        let ok = match case["error"].as_str().unwrap() {
            "wire.ErrShortBuffer" => matches!(err, MsgError::Wire(_)),
            "routing.ErrAvoidTooLarge" => matches!(err, MsgError::AvoidTooLarge(4)),
            other => panic!("unknown error {other}"),
        };
        assert!(ok, "{what}: {err:?}");
    }
}

#[test]
fn freshness_window() {
    let v = vectors();
    let f = &v["routed_msg"]["freshness"];
    let sent = v["routed_msg"]["route"]["sent_unix_nanos"]
        .as_i64()
        .unwrap();
    for case in f["cases"].as_array().unwrap() {
        let now = case["now_unix_nanos"].as_i64().unwrap();
        assert_eq!(
            msg::is_fresh(sent, now),
            case["fresh"].as_bool().unwrap(),
            "{case}"
        );
    }
    assert!(!msg::is_fresh(i64::MIN, i64::MAX));
    assert!(!msg::is_fresh(i64::MAX, i64::MIN));
    assert!(msg::is_fresh(i64::MAX, i64::MAX));
}

fn contact_from(v: &Value) -> Contact {
    let key = |k: &Value| {
        let b = hex32(k);
        (b != [0; 32]).then_some(b)
    };
    Contact {
        id: id_of(&v["id"]),
        ed_pub: key(&v["ed_pub"]),
        x_pub: key(&v["x_pub"]),
        caps: Caps(v["caps"].as_u64().unwrap() as u32),
        addrs: v["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| Addr::new(a["net"].as_str().unwrap(), a["endpoint"].as_str().unwrap()))
            .collect(),
    }
}

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

fn t(secs: u64) -> Time {
    Time(secs * 1_000_000_000)
}

fn ident(n: u64) -> Identity {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

fn keyed(i: &Identity, addr: &str) -> Contact {
    Contact {
        id: i.node_id(),
        ed_pub: Some(i.ed_public()),
        x_pub: Some(i.x_public()),
        caps: Caps::default(),
        addrs: vec![Addr::new("quic", addr)],
    }
}

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

/// Id `n` of bucket 0 of `NodeId::ZERO`: every id with a top bit set falls in it.
fn bucket0_id(n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = 0x80;
    b[31] = n;
    NodeId::from_bytes(b)
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
fn signing_helpers_agree() {
    let me = ident(3);
    let target = ident(4).node_id();
    let sig = msg::sign(&me, FrameType::ROUTE, &target, 42, b"x");
    let ed: [u8; PUBLIC_KEY_LEN] = me.ed_public();
    let fields = MsgFields {
        target,
        ttl: 16,
        ed_pub: &ed,
        sent: 42,
        avoid: &[],
        payload: b"x",
        sig: &sig,
    };
    let mut buf = [0u8; 256];
    let n = fields.encode_frame(FrameType::ROUTE, &mut buf).unwrap();
    let f = Frame::parse_exact(&buf[..n]).unwrap();
    MsgRef::parse(f.payload())
        .unwrap()
        .verify(FrameType::ROUTE)
        .unwrap();
    let too_many = [target; 4];
    let bad = MsgFields {
        avoid: &too_many,
        ..fields
    };
    assert_eq!(
        bad.encode_frame(FrameType::ROUTE, &mut buf),
        Err(MsgError::AvoidTooLarge(4))
    );
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
