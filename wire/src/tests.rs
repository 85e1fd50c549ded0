#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use nodenet_testkit::{unhex, vectors};
use proptest::prelude::*;

use super::*;
use crate::frame::header_len;

/// The reference's sentinel errors, as classes of ours.
fn matches_reference(err: WireError, reference: &str) -> bool {
    match reference {
        "wire.ErrShortBuffer" => matches!(err, WireError::Truncated | WireError::VarintOverflow),
        "wire.ErrFrameTooLarge" => matches!(err, WireError::TooLarge { .. }),
        "wire.ErrBadVersion" => matches!(err, WireError::BadVersion(_)),
        "transport.ErrBadAddr" => {
            matches!(
                err,
                WireError::Truncated | WireError::VarintOverflow | WireError::NotUtf8
            )
        }
        "transport.ErrTooManyAddrs" => matches!(err, WireError::TooMany { .. }),
        other => panic!("unknown reference error {other}"),
    }
}

#[test]
fn constants_match_the_reference() {
    let v = vectors();
    let c = &v["constants"];
    assert_eq!(c["wire_version"], u64::from(VERSION));
    assert_eq!(c["wire_max_frame_len"], MAX_FRAME_LEN as u64);
    assert_eq!(c["transport_max_packet_len"], MAX_PACKET_LEN as u64);
    let types = c["frame_types"].as_object().unwrap();
    assert_eq!(types.len(), 15);
    for (name, value) in types {
        let ty = FrameType(u8::try_from(value.as_u64().unwrap()).unwrap());
        assert_eq!(ty.name(), Some(name.as_str()));
    }
    for t in 0..=255u8 {
        let ty = FrameType(t);
        let routed = c["msg_wrapped_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| Some(n.as_str().unwrap()) == ty.name());
        assert_eq!(ty.is_routed(), routed, "{ty}");
    }
}

#[test]
fn valid_frames() {
    let v = vectors();
    for case in v["frames"]["valid"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let bytes = unhex(&case["frame"]);
        let payload = unhex(&case["payload"]);
        let ty = FrameType(u8::try_from(case["type"].as_u64().unwrap()).unwrap());
        let frame = Frame::parse_exact(&bytes).unwrap();
        assert_eq!(
            (frame.frame_type(), frame.payload()),
            (ty, &payload[..]),
            "{what}"
        );
        let mut buf = vec![0u8; 512];
        let n = Frame::new(ty, &payload).encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes[..], "{what}");
        assert_eq!(
            Frame::new(ty, &payload).encoded_len(),
            bytes.len(),
            "{what}"
        );
    }
}

#[test]
fn valid_large_frames() {
    use sha2::{Digest, Sha256};
    let v = vectors();
    for case in v["frames"]["valid_large"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let len = case["payload_len"].as_u64().unwrap() as usize;
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            hex::encode(Sha256::digest(&payload)),
            case["payload_sha256"],
            "{what}"
        );
        let ty = FrameType(u8::try_from(case["type"].as_u64().unwrap()).unwrap());
        let frame = Frame::new(ty, &payload);
        let mut buf = vec![0u8; frame.encoded_len()];
        let n = frame.encode(&mut buf).unwrap();
        assert_eq!(n as u64, case["frame_len"].as_u64().unwrap(), "{what}");
        assert_eq!(
            hex::encode(&buf[..header_len(len)]),
            case["frame_header"],
            "{what}"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&buf)),
            case["frame_sha256"],
            "{what}"
        );
        assert_eq!(
            frame.fits_packet(),
            case["fits_transport_packet"].as_bool().unwrap()
        );
        assert_eq!(Frame::parse_exact(&buf), Ok(frame), "{what}");
    }
}

#[test]
fn malformed_frames() {
    let v = vectors();
    let cases = v["frames"]["malformed"].as_array().unwrap();
    assert_eq!(cases.len(), 14);
    for case in cases {
        let what = case["description"].as_str().unwrap();
        let err = Frame::parse(&unhex(&case["frame"])).unwrap_err();
        assert!(
            matches_reference(err, case["error"].as_str().unwrap()),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn decoder_quirks_are_accepted() {
    let v = vectors();
    for case in v["frames"]["decoder_quirks"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        assert!(case["accepted"].as_bool().unwrap());
        let bytes = unhex(&case["frame"]);
        let (frame, rest) = Frame::parse(&bytes).unwrap();
        assert_eq!(
            u64::from(frame.frame_type().0),
            case["type"].as_u64().unwrap(),
            "{what}"
        );
        assert_eq!(frame.payload(), &unhex(&case["payload"])[..], "{what}");
        assert_eq!(rest, &unhex(&case["rest"])[..], "{what}");
        // We accept the lenient forms but emit only the canonical one.
        let mut buf = [0u8; 16];
        let n = frame.encode(&mut buf).unwrap();
        assert!(n <= bytes.len() - rest.len());
    }
}

#[test]
fn stream_length_prefixes() {
    // The QUIC stream framing prefixes each packet with a uvarint; its known answers pin our
    // uvarint writer and the packet limit.
    let v = vectors();
    for case in v["frames"]["quic_stream_framing"]["cases"]
        .as_array()
        .unwrap()
    {
        if let Some(packet) = case.get("packet") {
            let packet = unhex(packet);
            let mut buf = [0u8; 32];
            let mut w = Writer::new(&mut buf);
            w.put_len_prefixed(&packet).unwrap();
            assert_eq!(w.written(), &unhex(&case["stream_bytes"])[..]);
        } else {
            let len = case["packet_len"].as_u64().unwrap();
            let mut buf = [0u8; 10];
            let mut w = Writer::new(&mut buf);
            w.put_uvarint(len).unwrap();
            assert_eq!(w.written(), &unhex(&case["prefix"])[..]);
            let accepted = Reader::new(w.written()).len_prefix(MAX_PACKET_LEN).is_ok();
            assert_eq!(accepted, case["accepted"].as_bool().unwrap());
        }
    }
}

#[test]
fn address_vectors() {
    let v = vectors();
    let a = &v["addresses"];
    for case in a["addr"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let encoded = unhex(&case["encoded"]);
        let addr = AddrRef::decode(&mut Reader::new(&encoded)).unwrap();
        assert_eq!(addr.net, case["addr"]["net"], "{what}");
        assert_eq!(addr.endpoint, case["addr"]["endpoint"], "{what}");
        let mut buf = vec![0u8; addr.encoded_len()];
        addr.encode(&mut Writer::new(&mut buf)).unwrap();
        assert_eq!(buf, encoded, "{what}");
    }
    for case in a["addrs"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let encoded = unhex(&case["encoded"]);
        let mut r = Reader::new(&encoded);
        let list = AddrList::decode(&mut r, 16).unwrap();
        r.finish().unwrap();
        let want = case["addrs"].as_array().unwrap();
        assert_eq!(list.len(), want.len(), "{what}");
        for (got, want) in list.iter().zip(want) {
            assert_eq!(
                (got.net, got.endpoint),
                (
                    want["net"].as_str().unwrap(),
                    want["endpoint"].as_str().unwrap()
                )
            );
        }
        let mut buf = vec![0u8; encoded.len()];
        AddrList::encode(&mut Writer::new(&mut buf), list.iter()).unwrap();
        assert_eq!(buf, encoded, "{what}");
    }
    for case in a["addr_malformed"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let err = AddrRef::decode(&mut Reader::new(&unhex(&case["encoded"]))).unwrap_err();
        assert!(
            matches_reference(err, case["error"].as_str().unwrap()),
            "{what}: {err:?}"
        );
    }
    for case in a["addrs_caps"].as_array().unwrap() {
        let what = case["description"].as_str().unwrap();
        let cap = case["cap"].as_u64().unwrap() as usize;
        let encoded = unhex(&case["encoded"]);
        let result = AddrList::decode(&mut Reader::new(&encoded), cap);
        if case["accepted"].as_bool().unwrap() {
            assert_eq!(
                result.unwrap().len() as u64,
                case["count"].as_u64().unwrap(),
                "{what}"
            );
        } else {
            let err = result.unwrap_err();
            assert!(
                matches_reference(err, case["error"].as_str().unwrap()),
                "{what}: {err:?}"
            );
        }
    }
}

#[test]
fn oversize_payload_is_refused_on_encode() {
    let big = vec![0u8; MAX_FRAME_LEN + 1];
    let mut buf = vec![0u8; MAX_FRAME_LEN + 16];
    assert!(matches!(
        Frame::new(FrameType::APP, &big).encode(&mut buf),
        Err(WireError::TooLarge { .. })
    ));
    // The largest payload that fits one packet, and one byte more.
    let max = MAX_PACKET_LEN - header_len(MAX_PACKET_LEN);
    assert!(Frame::new(FrameType::APP, &big[..max]).fits_packet());
    assert!(!Frame::new(FrameType::APP, &big[..max + 1]).fits_packet());
}

#[test]
fn trailing_bytes_are_refused_by_parse_exact() {
    assert_eq!(
        Frame::parse_exact(&[1, 2, 0, 9]),
        Err(WireError::TrailingBytes { len: 1 })
    );
    let mut r = Reader::new(&[1, 2, 3]);
    r.u8().unwrap();
    assert_eq!(r.finish(), Err(WireError::TrailingBytes { len: 2 }));
}

#[test]
fn non_utf8_address_is_refused() {
    let bytes = [1, 0xff, 0];
    assert_eq!(
        AddrRef::decode(&mut Reader::new(&bytes)),
        Err(WireError::NotUtf8)
    );
}

proptest! {
    #[test]
    fn frame_round_trip(ty in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let frame = Frame::new(FrameType(ty), &payload);
        let mut buf = vec![0u8; frame.encoded_len()];
        let n = frame.encode(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert_eq!(Frame::parse_exact(&buf), Ok(frame));
        fuzzing::frame(&buf);
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::frame(&data);
        fuzzing::reader(&data);
        fuzzing::addr_list(&data);
    }

    #[test]
    fn uvarint_round_trip(v in any::<u64>()) {
        let mut buf = [0u8; 10];
        let mut w = Writer::new(&mut buf);
        w.put_uvarint(v).unwrap();
        prop_assert_eq!(w.position(), uvarint_len(v));
        let n = w.finish();
        let mut r = Reader::new(&buf[..n]);
        prop_assert_eq!(r.uvarint(), Ok(v));
        prop_assert!(r.finish().is_ok());
        // Every strict prefix is truncated, never misread.
        for k in 0..n {
            prop_assert_eq!(Reader::new(&buf[..k]).uvarint(), Err(WireError::Truncated));
        }
    }

    #[test]
    fn integers_round_trip(a in any::<u8>(), b in any::<u16>(), c in any::<u32>(), d in any::<u64>(), e in any::<i64>(), id in any::<[u8; 32]>()) {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.put_u8(a).unwrap();
        w.put_u16(b).unwrap();
        w.put_u32(c).unwrap();
        w.put_u64(d).unwrap();
        w.put_i64(e).unwrap();
        w.put_id(&nodenet_kad::NodeId::from_bytes(id)).unwrap();
        let n = w.finish();
        prop_assert_eq!(n, 1 + 2 + 4 + 8 + 8 + 32);
        let mut r = Reader::new(&buf[..n]);
        prop_assert_eq!(r.u8(), Ok(a));
        prop_assert_eq!(r.u16(), Ok(b));
        prop_assert_eq!(r.u32(), Ok(c));
        prop_assert_eq!(r.u64(), Ok(d));
        prop_assert_eq!(r.i64(), Ok(e));
        prop_assert_eq!(r.id(), Ok(nodenet_kad::NodeId::from_bytes(id)));
        prop_assert!(r.finish().is_ok());
    }

    #[test]
    fn addr_list_round_trip(addrs in proptest::collection::vec(("[a-z]{0,6}", "[ -~]{0,40}"), 0..16)) {
        let owned: Vec<Addr> = addrs.iter().map(|(n, e)| Addr::new(n.clone(), e.clone())).collect();
        let len = AddrList::encoded_len_of(owned.iter().map(Addr::as_ref));
        let mut buf = vec![0u8; len];
        let mut w = Writer::new(&mut buf);
        AddrList::encode(&mut w, owned.iter().map(Addr::as_ref)).unwrap();
        prop_assert_eq!(w.remaining(), 0);
        let mut r = Reader::new(&buf);
        let list = AddrList::decode(&mut r, 16).unwrap();
        prop_assert!(r.finish().is_ok());
        prop_assert_eq!(list.encoded_len(), len);
        let back: Vec<Addr> = list.iter().map(|a| a.to_owned_addr()).collect();
        prop_assert_eq!(back, owned);
        // One byte short: an error, nothing written past the buffer.
        if len > 0 {
            let mut small = vec![0u8; len - 1];
            prop_assert!(AddrList::encode(&mut Writer::new(&mut small), list.iter()).is_err());
        }
        fuzzing::addr_list(&buf);
    }
}
