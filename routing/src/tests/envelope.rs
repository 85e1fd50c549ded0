//! The routed envelope: known-answer vectors, the TTL patch, tampering, freshness, signing.

use super::*;

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
