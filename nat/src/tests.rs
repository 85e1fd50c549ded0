use nodenet_kad::NodeId;
use nodenet_testkit::{unhex, vectors};
use nodenet_wire::{Addr, FrameType};
use proptest::prelude::*;
use serde_json::Value;

use crate::signal::*;
use crate::*;

fn addrs_of(v: &Value) -> Vec<Addr> {
    nodenet_testkit::addrs(v)
}

fn nonce_of(v: &Value) -> [u8; NONCE_LEN] {
    unhex(v).try_into().unwrap()
}

#[test]
fn connect_and_ack_payloads_match_the_reference() {
    let nat = &vectors()["nat"];
    for key in ["connect", "connect_ack"] {
        let v = &nat[key];
        let (nonce, addrs) = (nonce_of(&v["nonce"]), addrs_of(&v["addrs"]));
        let encoded = unhex(&v["encoded"]);
        assert_eq!(
            encode_coordination(&nonce, &addrs, 0).unwrap(),
            encoded,
            "{key}"
        );
        let c = Coordination::decode(&encoded).unwrap();
        assert_eq!(c.nonce, nonce);
        assert_eq!(c.flags, 0);
        let got: Vec<Addr> = c.addrs.iter().map(|a| a.to_owned_addr()).collect();
        assert_eq!(got, addrs);
    }
    // The routed forms carry exactly that payload under frame types 10 and 11.
    for (key, ty) in [
        ("connect_routed", FrameType::CONNECT),
        ("connect_ack_routed", FrameType::CONNECT_ACK),
    ] {
        let v = &nat[key];
        assert_eq!(v["frame_type"].as_u64().unwrap(), u64::from(ty.0));
        assert!(ty.is_routed());
        let payload = unhex(&v["payload"]);
        assert!(Coordination::decode(&payload).is_ok());
    }
}

#[test]
fn relay_frames_match_the_reference() {
    let nat = &vectors()["nat"];
    let v = &nat["relay_request"];
    let frame = unhex(&v["frame"]);
    let req = RelayRequest {
        nonce: nonce_of(&v["nonce"]),
        target: v["target"].as_str().unwrap().parse::<NodeId>().unwrap(),
    };
    // Frame = version | type | uvarint(len) | payload.
    assert_eq!(frame[1], FrameType::RELAY_REQUEST.0);
    assert_eq!(&frame[3..], &req.encode()[..]);
    assert_eq!(RelayRequest::decode(&frame[3..]).unwrap(), req);

    let v = &nat["relay_grant"];
    let frame = unhex(&v["frame"]);
    let addr = Addr::new(
        v["addr"]["net"].as_str().unwrap(),
        v["addr"]["endpoint"].as_str().unwrap(),
    );
    let nonce = nonce_of(&v["nonce"]);
    assert_eq!(frame[1], FrameType::RELAY_GRANT.0);
    assert_eq!(
        &frame[3..],
        &RelayGrant {
            nonce,
            addr: addr.as_ref(),
            attest: None
        }
        .encode()
        .unwrap()[..]
    );
    let g = RelayGrant::decode(&frame[3..]).unwrap();
    assert_eq!((g.nonce, g.addr.to_owned_addr()), (nonce, addr));
    assert_eq!(g.attest, None);

    let v = &nat["relay_bind"];
    let frame = unhex(&v["frame"]);
    let addr = Addr::new(
        v["addr"]["net"].as_str().unwrap(),
        v["addr"]["endpoint"].as_str().unwrap(),
    );
    assert_eq!(frame[1], FrameType::RELAY_BIND.0);
    let b = RelayBind {
        addr: addr.as_ref(),
        attest: None,
    };
    assert_eq!(&frame[3..], &b.encode().unwrap()[..]);
    assert_eq!(RelayBind::decode(&frame[3..]).unwrap(), b);
}

#[test]
fn decoders_behave_as_the_reference_documents() {
    let nat = &vectors()["nat"];
    let req = unhex(&nat["relay_request"]["frame"])[3..].to_vec();
    let mut longer = req.clone();
    longer.push(0);
    assert!(
        RelayRequest::decode(&longer).is_ok(),
        "trailing byte ignored"
    );
    assert!(
        RelayRequest::decode(&req[..req.len() - 1]).is_err(),
        "one byte short"
    );
    assert!(Coordination::decode(&[0u8; NONCE_LEN - 1]).is_err());
    let many: Vec<Addr> = (0..17)
        .map(|i| Addr::new("quic", format!("192.0.2.1:{}", 1000 + i)))
        .collect();
    assert!(encode_coordination(&[0; NONCE_LEN], &many, 0).is_err());
    let mut raw = encode_coordination(&[0; NONCE_LEN], &many[..16], 0).unwrap();
    raw[NONCE_LEN] = 17; // claim 17 entries
    raw.extend_from_slice(&unhex(&nat["relay_bind"]["frame"])[3..]);
    assert!(matches!(
        Coordination::decode(&raw),
        Err(nodenet_wire::WireError::TooMany { .. })
    ));
    let grant = unhex(&nat["relay_grant"]["frame"])[3..].to_vec();
    let mut g2 = grant;
    g2.push(7);
    assert!(RelayGrant::decode(&g2).is_ok());
    let bind = unhex(&nat["relay_bind"]["frame"])[3..].to_vec();
    let mut b2 = bind;
    b2.push(7);
    assert!(RelayBind::decode(&b2).is_ok_and(|b| b.attest.is_none()));
    assert_eq!(unhex(&vectors()["punch"]["datagram"]), PUNCH_DATAGRAM);
}

fn id(n: u8) -> NodeId {
    NodeId::from([n; 32])
}

fn quic(endpoint: &str) -> Addr {
    Addr::new("quic", endpoint)
}

fn subnet(n: u8) -> Option<[u8; 16]> {
    let mut s = [0u8; 16];
    s[0] = n;
    Some(s)
}

#[test]
fn one_report_or_one_subnet_never_confirms() {
    let mut r = Reflexive::new();
    let seen = quic("203.0.113.7:4242");
    r.report(id(1), seen.clone(), subnet(1));
    r.report(id(2), seen.clone(), subnet(1));
    assert_eq!(r.confirmed(), None, "two reporters are short of the quorum");
    r.report(id(3), seen.clone(), subnet(1));
    assert_eq!(
        r.confirmed(),
        None,
        "three reporters on one subnet do not confirm"
    );
    assert!(
        !r.symmetric(),
        "agreement without diversity is not symmetric"
    );
    assert_eq!(r.nat_type(|_| false), NatType::Unknown);
    r.report(id(4), seen.clone(), subnet(2));
    assert_eq!(r.confirmed(), Some(&seen));
    assert_eq!(r.nat_type(|_| false), NatType::Cone);
    assert_eq!(r.nat_type(|a| *a == seen), NatType::Public);
    // A report is withdrawn with its edge.
    r.remove(&id(4));
    assert_eq!(r.confirmed(), None);
}

#[test]
fn reporters_without_subnets_are_counted_alone() {
    let mut r = Reflexive::new();
    for n in 1..=3 {
        r.report(id(n), quic("n7"), None);
    }
    assert_eq!(r.confirmed(), Some(&quic("n7")));
}

#[test]
fn a_single_subnet_crowd_cannot_veto_a_diverse_quorum() {
    let mut r = Reflexive::new();
    let truth = quic("198.51.100.9:4000");
    for n in 1..=3 {
        r.report(id(n), truth.clone(), subnet(n));
    }
    // Ten liars on one network name another address.
    for n in 10..20 {
        r.report(id(n), quic("192.0.2.66:1"), subnet(99));
    }
    assert_eq!(r.confirmed(), Some(&truth));
}

#[test]
fn disagreement_flags_a_symmetric_nat() {
    let mut r = Reflexive::new();
    for n in 1..=4u8 {
        r.report(
            id(n),
            quic(&format!("203.0.113.7:{}", 30000 + u16::from(n))),
            subnet(n),
        );
    }
    assert_eq!(r.confirmed(), None);
    assert!(r.symmetric());
    assert_eq!(r.nat_type(|_| false), NatType::Symmetric);
    assert_eq!(NatType::Symmetric.as_str(), "symmetric");
}

#[test]
fn ties_go_to_the_smaller_address_and_the_table_is_bounded() {
    let mut r = Reflexive::new();
    for n in 1..=3 {
        r.report(id(n), quic("203.0.113.2:1"), subnet(n));
        r.report(id(n + 10), quic("203.0.113.1:1"), subnet(n));
    }
    assert_eq!(r.confirmed(), Some(&quic("203.0.113.1:1")));
    let mut big = Reflexive::new();
    for n in 0..(u32::try_from(MAX_REPORTERS).unwrap() + 50) {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        big.report(NodeId::from(b), quic("203.0.113.1:1"), None);
    }
    assert_eq!(big.reporters(), MAX_REPORTERS);
}

#[test]
fn only_reachable_literal_addresses_pass() {
    for ok in ["203.0.113.1:4242", "10.0.0.1:1", "[2001:db8::1]:9"] {
        assert!(reachable(quic(ok).as_ref()).is_some(), "{ok}");
    }
    for bad in [
        "127.0.0.1:1",
        "0.0.0.0:1",
        "224.0.0.1:1",
        "169.254.1.1:1",
        "255.255.255.255:1",
        "[::1]:1",
        "[fe80::1]:1",
        "[::]:1",
        "host.example:1",
        "10.0.0.1:0",
        "n7",
    ] {
        assert!(reachable(quic(bad).as_ref()).is_none(), "{bad}");
    }
}

#[test]
fn fuzz_corpus_replays() {
    nodenet_testkit::replay_corpus("nat_signal", fuzzing::nat_signal);
}

fn arb_addrs() -> impl Strategy<Value = Vec<Addr>> {
    prop::collection::vec(
        ("[a-z]{1,6}", "[0-9a-f.:\\[\\]]{1,40}"),
        0..=MAX_CONNECT_ADDRS,
    )
    .prop_map(|v| v.into_iter().map(|(n, e)| Addr::new(n, e)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn coordination_round_trips(nonce in any::<[u8; NONCE_LEN]>(), addrs in arb_addrs(), flags in any::<u8>(), mut tail in prop::collection::vec(any::<u8>(), 0..8)) {
        // FLAG_HARD comes with an address (the next property); here neither the flags nor a
        // tail byte read as flags carry it.
        let flags = flags & !FLAG_HARD;
        if let Some(t) = tail.first_mut() {
            *t &= !FLAG_HARD;
        }
        let mut bytes = encode_coordination(&nonce, &addrs, flags).unwrap();
        // A zero flags byte is not written: the payload is the reference's.
        prop_assert_eq!(bytes.len(), encode_coordination(&nonce, &addrs, 0).unwrap().len() + usize::from(flags != 0));
        let flagless = bytes.len() - usize::from(flags != 0);
        bytes.extend_from_slice(&tail);
        let c = Coordination::decode(&bytes).unwrap();
        prop_assert_eq!(c.nonce, nonce);
        // Absent flags read as 0; bytes after them are ignored.
        let want = if flags != 0 { flags } else { tail.first().copied().unwrap_or(0) };
        prop_assert_eq!(c.flags, want);
        prop_assert_eq!(Coordination::decode(&bytes[..flagless]).unwrap().flags, 0);
        let got: Vec<Addr> = c.addrs.iter().map(|a| a.to_owned_addr()).collect();
        prop_assert_eq!(got, addrs);
        fuzzing::nat_signal(&bytes);
    }

    #[test]
    fn a_hard_sides_public_address_round_trips(nonce in any::<[u8; NONCE_LEN]>(), addrs in arb_addrs(), flags in any::<u8>(), host in "[0-9.]{1,15}") {
        let public = Addr::new("quic", format!("{host}:0"));
        let bytes = encode_coordination_with(&nonce, &addrs, flags, Some(public.as_ref())).unwrap();
        let c = Coordination::decode(&bytes).unwrap();
        prop_assert_eq!(c.flags, flags | FLAG_HARD);
        prop_assert_eq!(c.public.map(|p| p.to_owned_addr()), Some(public));
        // Cut inside the address: an error, never a wrong address.
        prop_assert!(Coordination::decode(&bytes[..bytes.len() - 1]).is_err());
        fuzzing::nat_signal(&bytes);
    }

    #[test]
    fn relay_frames_round_trip(nonce in any::<[u8; NONCE_LEN]>(), target in any::<[u8; 32]>(), net in "[a-z]{1,6}", endpoint in "[0-9.:]{1,30}") {
        let req = RelayRequest { nonce, target: NodeId::from(target) };
        prop_assert_eq!(RelayRequest::decode(&req.encode()).unwrap(), req);
        let addr = Addr::new(net, endpoint);
        let g = RelayGrant { nonce, addr: addr.as_ref(), attest: None }.encode().unwrap();
        let back = RelayGrant::decode(&g).unwrap();
        prop_assert_eq!(&back.addr.to_owned_addr(), &addr);
        let b = RelayBind { addr: addr.as_ref(), attest: None }.encode().unwrap();
        prop_assert_eq!(RelayBind::decode(&b).unwrap().addr.to_owned_addr(), addr);
    }

    /// A relay's attestation rides after the grant's and the bind's address: it round-trips,
    /// the frame without it is a prefix (what a reference peer reads), a cut attestation or
    /// another trailer reads as none, and the frame's own fields never change.
    #[test]
    fn attestations_round_trip_and_stay_optional(nonce in any::<[u8; NONCE_LEN]>(), peer in any::<[u8; 32]>(), endpoint in "[0-9.:]{1,30}", host in "[0-9.]{1,15}", cut in 1usize..40, other in any::<u8>()) {
        let addr = Addr::new("quic", endpoint);
        let seen = Addr::new("quic", format!("{host}:0"));
        let attest = Some(Attestation { peer: NodeId::from(peer), host: seen.as_ref() });
        // What a trailer turns into once `cut` bytes short, or under another tag.
        let spoil = |bytes: &[u8], plain: &[u8]| {
            let cut = cut.min(bytes.len() - plain.len());
            let mut foreign = plain.to_vec();
            foreign.push(if other == ATTEST_TAG { 0 } else { other });
            foreign.extend_from_slice(&bytes[plain.len() + 1..]);
            (bytes[..bytes.len() - cut].to_vec(), foreign)
        };

        let g = RelayGrant { nonce, addr: addr.as_ref(), attest };
        let (bytes, plain) = (g.encode().unwrap(), RelayGrant { attest: None, ..g }.encode().unwrap());
        prop_assert!(bytes.starts_with(&plain));
        prop_assert_eq!(RelayGrant::decode(&bytes).unwrap(), g);
        let (short, foreign) = spoil(&bytes, &plain);
        prop_assert_eq!(RelayGrant::decode(&short).unwrap(), RelayGrant { attest: None, ..g });
        prop_assert_eq!(RelayGrant::decode(&foreign).unwrap(), RelayGrant { attest: None, ..g });
        fuzzing::nat_signal(&bytes);

        let b = RelayBind { addr: addr.as_ref(), attest };
        let (bytes, plain) = (b.encode().unwrap(), RelayBind { attest: None, ..b }.encode().unwrap());
        prop_assert!(bytes.starts_with(&plain));
        prop_assert_eq!(RelayBind::decode(&bytes).unwrap(), b);
        let (short, foreign) = spoil(&bytes, &plain);
        prop_assert_eq!(RelayBind::decode(&short).unwrap(), RelayBind { attest: None, ..b });
        prop_assert_eq!(RelayBind::decode(&foreign).unwrap(), RelayBind { attest: None, ..b });
        fuzzing::nat_signal(&bytes);
    }
}
