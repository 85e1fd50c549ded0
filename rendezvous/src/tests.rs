use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_testkit::{hex32, unhex, vectors};
use nodenet_wire::Addr;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn addrs_of(v: &Value) -> Vec<Addr> {
    nodenet_testkit::addrs(v)
}

fn nonce16(v: &Value) -> [u8; 16] {
    unhex(v).try_into().unwrap()
}

#[test]
fn hello_vector_encodes_and_verifies() {
    let v = &vectors()["rendezvous"]["hello"];
    let me = Identity::from_seed(&hex32(&v["signer_seed"]));
    let target = NodeId::from_bytes(hex32(&v["target"]));
    assert_eq!(me.x_public(), hex32(&v["x_pub"]));
    let payload =
        encode_hello(&me, &target, &addrs_of(&v["addrs"]), &nonce16(&v["nonce"])).unwrap();
    assert_eq!(payload, unhex(&v["encoded"]));
    let h = Hello::decode(&payload).unwrap();
    assert_eq!(h.sig.to_vec(), unhex(&v["sig"]));
    assert_eq!(h.nonce, nonce16(&v["nonce"]));
    h.verify(&me.ed_public(), &target).unwrap();
    // The signature binds the target: the same Hello does not verify for another one.
    assert_eq!(
        h.verify(&me.ed_public(), &NodeId::ZERO),
        Err(RendezvousError::BadSignature)
    );
}

#[test]
fn reply_vector_encodes_and_verifies() {
    let v = &vectors()["rendezvous"]["reply"];
    let me = Identity::from_seed(&hex32(&v["signer_seed"]));
    let nonce = nonce16(&v["nonce"]);
    let payload = encode_reply(&me, &addrs_of(&v["addrs"]), &nonce).unwrap();
    assert_eq!(payload, unhex(&v["encoded"]));
    let r = Reply::decode(&payload).unwrap();
    let c = r.verify(&me.node_id(), &nonce).unwrap();
    assert_eq!(c.ed_pub, hex32(&v["ed_pub"]));
    assert_eq!(c.x_pub, hex32(&v["x_pub"]));
    assert_eq!(c.addrs, addrs_of(&v["addrs"]));
}

#[test]
fn reply_verify_failures_follow_the_reference_order() {
    let v = &vectors()["rendezvous"]["reply"];
    let me = Identity::from_seed(&hex32(&v["signer_seed"]));
    let nonce = nonce16(&v["nonce"]);
    let payload = unhex(&v["encoded"]);
    let r = Reply::decode(&payload).unwrap();
    assert_eq!(
        r.verify(&me.node_id(), &[0xee; 16]).unwrap_err(),
        RendezvousError::NonceMismatch
    );
    let seed3 = Identity::from_seed(&[3; 32]);
    assert_eq!(
        r.verify(&seed3.node_id(), &nonce).unwrap_err(),
        RendezvousError::WrongTarget
    );
    // Change one byte of the address: the signature covers it.
    let mut altered = payload.clone();
    let at = altered.len() - 64 - 16 - 2;
    altered[at] ^= 1;
    let r = Reply::decode(&altered).unwrap();
    assert_eq!(
        r.verify(&me.node_id(), &nonce).unwrap_err(),
        RendezvousError::BadSignature
    );
    let fails = vectors()["rendezvous"]["verify_failures"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(fails, 3, "each reference failure case is covered above");
}

#[test]
fn malformed_vectors_are_refused() {
    for case in vectors()["rendezvous"]["decode_malformed"]
        .as_array()
        .unwrap()
    {
        let bytes = unhex(&case["encoded"]);
        let d = case["description"].as_str().unwrap();
        if d.starts_with("Hello") {
            assert!(Hello::decode(&bytes).is_err(), "{d}");
        } else {
            assert!(Reply::decode(&bytes).is_err(), "{d}");
        }
    }
}

#[test]
fn routed_vectors_carry_the_payloads() {
    let r = &vectors()["rendezvous"];
    assert_eq!(
        unhex(&r["hello_routed"]["payload"]),
        unhex(&r["hello"]["encoded"])
    );
    assert_eq!(
        unhex(&r["reply_routed"]["payload"]),
        unhex(&r["reply"]["encoded"])
    );
}

#[test]
fn sealed_box_vectors_reproduce_byte_for_byte_and_open() {
    let cases = vectors()["sealed_box"]["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let sender = Identity::from_seed(&hex32(&c["sender_seed"]));
        let recipient = Identity::from_seed(&hex32(&c["recipient_seed"]));
        let x = hex32(&c["recipient_x_pub"]);
        assert_eq!(recipient.x_public(), x);
        let ts = c["timestamp_unix_nanos"].as_i64().unwrap();
        let pt = unhex(&c["plaintext"]);
        let aad = unhex(&c["aad"]);
        let boxed =
            seal_with_ephemeral(&sender, &x, &pt, &aad, ts, &hex32(&c["eph_priv"])).unwrap();
        assert_eq!(boxed, unhex(&c["box"]), "{}", c["description"]);
        assert_eq!(boxed.len(), sealed_len(pt.len()));
        let mut cache = ReplayCache::new();
        let o = open(&recipient, &boxed, &aad, ts + 1, &mut cache).unwrap();
        assert_eq!(o.plaintext, pt);
        assert_eq!(o.sender, sender.node_id());
        assert_eq!(o.sealed_at, ts);
        assert_eq!(
            open(&recipient, &boxed, &aad, ts + 2, &mut cache),
            Err(OpenError::Replay)
        );
    }
}

#[test]
fn sealed_box_open_failures() {
    let c = &vectors()["sealed_box"]["cases"][0];
    let recipient = Identity::from_seed(&hex32(&c["recipient_seed"]));
    let ts = c["timestamp_unix_nanos"].as_i64().unwrap();
    let boxed = unhex(&c["box"]);
    let open_at = |who: &Identity, b: &[u8], aad: &[u8], now: i64| {
        open(who, b, aad, now, &mut ReplayCache::new())
    };
    let seed3 = Identity::from_seed(&[3; 32]);
    assert_eq!(
        open_at(&seed3, &boxed, &[], ts),
        Err(OpenError::BadSignature)
    );
    assert_eq!(
        open_at(&recipient, &boxed, &[], ts + MAX_AGE_NS + 1),
        Err(OpenError::Expired)
    );
    assert_eq!(
        open_at(&recipient, &boxed, &[], ts - MAX_AGE_NS - 1),
        Err(OpenError::Expired)
    );
    assert!(open_at(&recipient, &boxed, &[], ts + MAX_AGE_NS).is_ok());
    assert_eq!(
        open_at(&recipient, &boxed, b"x", ts),
        Err(OpenError::Decrypt)
    );
    let mut flipped = boxed.clone();
    flipped[32 + 32 + 8 + 1] ^= 1;
    assert_eq!(
        open_at(&recipient, &flipped, &[], ts),
        Err(OpenError::BadSignature)
    );
    let mut trailing = boxed;
    trailing.push(0);
    assert!(matches!(
        open_at(&recipient, &trailing, &[], ts),
        Err(OpenError::Malformed(_))
    ));
    assert_eq!(
        vectors()["sealed_box"]["open_failures"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_failed_decrypt_does_not_burn_the_box() {
    let c = &vectors()["sealed_box"]["cases"][0];
    let recipient = Identity::from_seed(&hex32(&c["recipient_seed"]));
    let ts = c["timestamp_unix_nanos"].as_i64().unwrap();
    let boxed = unhex(&c["box"]);
    let mut cache = ReplayCache::new();
    assert_eq!(
        open(&recipient, &boxed, b"x", ts, &mut cache),
        Err(OpenError::Decrypt)
    );
    assert!(open(&recipient, &boxed, &[], ts, &mut cache).is_ok());
}

#[test]
fn replay_cache_is_bounded_and_never_forgets_a_live_box() {
    let sender = Identity::from_seed(&[1; 32]);
    let recipient = Identity::from_seed(&[2; 32]);
    let x = recipient.x_public();
    let ts = 1_700_000_000_000_000_000i64;
    let mut cache = ReplayCache::new();
    let first = seal_with_ephemeral(&sender, &x, b"0", &[], ts, &[1; 32]).unwrap();
    open(&recipient, &first, &[], ts, &mut cache).unwrap();
    // Push two whole generations through within the window.
    for i in 0..u32::try_from(REPLAY_CAPACITY).unwrap() + 10 {
        let mut eph = [0u8; 32];
        eph[..4].copy_from_slice(&i.to_be_bytes());
        eph[31] = 0x55;
        cache.insert(eph, ts + MAX_AGE_NS, ts);
    }
    assert!(cache.len() <= REPLAY_CAPACITY);
    assert_eq!(
        open(&recipient, &first, &[], ts, &mut cache),
        Err(OpenError::Replay),
        "an evicted but unexpired box is still refused"
    );
    // A box sealed after the forgotten ones expire opens.
    let later = ts + MAX_AGE_NS + 1;
    let fresh = seal_with_ephemeral(&sender, &x, b"1", &[], later, &[2; 32]).unwrap();
    open(&recipient, &fresh, &[], later, &mut cache).unwrap();
}

#[test]
fn seal_refuses_a_small_order_key() {
    let sender = Identity::from_seed(&[1; 32]);
    assert_eq!(
        seal_with_ephemeral(&sender, &[0; 32], b"x", &[], 0, &[5; 32]),
        Err(SealError::WeakRecipientKey)
    );
}

#[test]
fn rendezvous_corpus_reaches_every_check() {
    let r = nodenet_testkit::replay_corpus_reach(
        "rendezvous",
        fuzzing::rendezvous,
        fuzzing::RENDEZVOUS_CHECKS,
    );
    // Minimum shares, measured on the merged corpus (128 units) and halved.
    r.require_all(&[20, 20, 20, 20, 25, 25, 25, 25, 25]);
}

#[test]
fn sealed_open_corpus_reaches_every_check() {
    let r = nodenet_testkit::replay_corpus_reach(
        "sealed_open",
        fuzzing::sealed_open,
        fuzzing::SEALED_OPEN_CHECKS,
    );
    // Minimum shares, measured on the merged corpus (94 units) and halved.
    r.require_all(&[10, 30, 30, 5, 10, 25, 25]);
}

fn arb_addrs() -> impl Strategy<Value = Vec<Addr>> {
    prop::collection::vec(("[a-z]{1,6}", "[0-9a-f.:\\[\\]]{1,40}"), 0..=ADDR_CAP)
        .prop_map(|v| v.into_iter().map(|(n, e)| Addr::new(n, e)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hello_round_trips(seed in any::<[u8; 32]>(), target in any::<[u8; 32]>(),
                         addrs in arb_addrs(), nonce in any::<[u8; 16]>()) {
        let me = Identity::from_seed(&seed);
        let target = NodeId::from_bytes(target);
        let p = encode_hello(&me, &target, &addrs, &nonce).unwrap();
        let h = Hello::decode(&p).unwrap();
        prop_assert_eq!(h.x_pub, me.x_public());
        prop_assert_eq!(h.nonce, nonce);
        let got: Vec<Addr> = h.addrs.iter().map(|a| a.to_owned_addr()).collect();
        prop_assert_eq!(got, addrs);
        prop_assert!(h.verify(&me.ed_public(), &target).is_ok());
        fuzzing::rendezvous(&p);
    }

    #[test]
    fn reply_round_trips(seed in any::<[u8; 32]>(), addrs in arb_addrs(), nonce in any::<[u8; 16]>()) {
        let me = Identity::from_seed(&seed);
        let p = encode_reply(&me, &addrs, &nonce).unwrap();
        let c = Reply::decode(&p).unwrap().verify(&me.node_id(), &nonce).unwrap();
        prop_assert_eq!(c.addrs, addrs);
        prop_assert_eq!(c.x_pub, me.x_public());
        fuzzing::rendezvous(&p);
    }

    #[test]
    fn sealed_box_round_trips(pt in prop::collection::vec(any::<u8>(), 0..600),
                              aad in prop::collection::vec(any::<u8>(), 0..32),
                              eph in any::<[u8; 32]>(), ts in any::<i64>()) {
        let sender = Identity::from_seed(&[1; 32]);
        let recipient = Identity::from_seed(&[2; 32]);
        let b = seal_with_ephemeral(&sender, &recipient.x_public(), &pt, &aad, ts, &eph).unwrap();
        prop_assert_eq!(b.len(), sealed_len(pt.len()));
        let o = open(&recipient, &b, &aad, ts, &mut ReplayCache::new()).unwrap();
        prop_assert_eq!(o.plaintext, pt);
        fuzzing::sealed_open(&b);
    }

    #[test]
    fn random_bytes_never_open(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::sealed_open(&data);
        fuzzing::rendezvous(&data);
    }
}

#[test]
fn a_box_is_refused_as_a_replay_until_the_last_instant_of_its_window() {
    let sender = Identity::from_seed(&[1; 32]);
    let recipient = Identity::from_seed(&[2; 32]);
    let ts = 1_700_000_000_000_000_000;
    let boxed =
        seal_with_ephemeral(&sender, &recipient.x_public(), b"once", &[], ts, &[3; 32]).unwrap();
    let mut cache = ReplayCache::new();
    open(&recipient, &boxed, &[], ts, &mut cache).unwrap();
    // Still fresh at ts + MAX_AGE_NS (the window is inclusive), so still a replay.
    assert_eq!(
        open(&recipient, &boxed, &[], ts + MAX_AGE_NS, &mut cache),
        Err(OpenError::Replay)
    );
    assert_eq!(
        open(&recipient, &boxed, &[], ts + MAX_AGE_NS + 1, &mut cache),
        Err(OpenError::Expired)
    );
}
