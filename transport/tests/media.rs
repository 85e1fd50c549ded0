//! Media sessions at the transport boundary: the frame codec against the reference's
//! vectors, and sessions on the in-memory hub (paused clock) and over QUIC on loopback.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_testkit::{unhex, vectors};
use nodenet_transport::media::{
    BadMediaFrame, MAX_DATAGRAM, MAX_MESSAGE, MediaBudget, MediaFrame, SEND_RING,
};
use nodenet_transport::mem::{Hub, LinkModel, MemTransport};
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{
    CloseReason, DialError, Event, Media, MediaError, MediaSession, Punch, Relay, Transport,
    next_event,
};
use proptest::prelude::*;

#[test]
fn media_frames_match_the_reference() {
    let v = &vectors()["media"];
    for case in v["cases"].as_array().unwrap() {
        let channel = u8::try_from(case["channel"].as_u64().unwrap()).unwrap();
        let payload = if case["payload"].is_string() {
            unhex(&case["payload"])
        } else {
            let n = usize::try_from(case["payload_len"].as_u64().unwrap()).unwrap();
            (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect()
        };
        let frame = MediaFrame {
            channel,
            payload: &payload,
        }
        .encode();
        if case["frame"].is_string() {
            assert_eq!(frame, unhex(&case["frame"]), "{}", case["description"]);
        } else {
            assert_eq!(&frame[..1], &unhex(&case["frame_header"])[..]);
            assert_eq!(frame.len(), 1 + MAX_DATAGRAM);
        }
        let back = MediaFrame::decode(&frame).unwrap();
        assert_eq!((back.channel, back.payload), (channel, &payload[..]));
    }
    let bad = unhex(&v["malformed"][0]["frame"]);
    assert_eq!(MediaFrame::decode(&bad), Err(BadMediaFrame));
    let reserved = &v["reserved_channel_parse"];
    let f = unhex(&reserved["frame"]);
    let parsed = MediaFrame::decode(&f).unwrap();
    assert_eq!(
        u64::from(parsed.channel),
        reserved["channel"].as_u64().unwrap()
    );
    assert_eq!(parsed.payload, &unhex(&reserved["payload"])[..]);
}

proptest! {
    #[test]
    fn media_frames_round_trip(channel in any::<u8>(), payload in prop::collection::vec(any::<u8>(), 0..1500)) {
        let frame = MediaFrame { channel, payload: &payload }.encode();
        prop_assert_eq!(frame.len(), 1 + payload.len());
        let back = MediaFrame::decode(&frame).unwrap();
        prop_assert_eq!(back.channel, channel);
        prop_assert_eq!(back.payload, &payload[..]);
        nodenet_transport::media::fuzzing::media_frame(&frame);
    }
}

#[test]
fn fuzz_corpus_media_frame() {
    nodenet_testkit::replay_corpus(
        "media_frame",
        nodenet_transport::media::fuzzing::media_frame,
    );
}

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

fn mem_pair(hub: &Hub) -> (MemTransport, MemTransport) {
    (
        hub.transport(id(1), "n1").unwrap(),
        hub.transport(id(2), "n2").unwrap(),
    )
}

/// The next media session `t` reports.
async fn inbound(t: &dyn Transport) -> MediaSession {
    loop {
        match next_event(t).await {
            Some(Event::Media(s)) => return s,
            Some(_) => {}
            None => panic!("transport closed before a session arrived"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn mem_sessions_carry_datagrams_and_messages_both_ways() {
    let hub = Hub::new();
    let (a, b) = mem_pair(&hub);
    let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
    let ba = inbound(&b).await;
    assert_eq!(ba.remote_id(), a.local_id());
    assert_eq!(ab.remote_id(), b.local_id());
    let (mut dg_b, mut msg_b) = (ba.datagrams().unwrap(), ba.messages().unwrap());
    let mut dg_a = ab.datagrams().unwrap();
    assert!(ba.datagrams().is_none(), "taken once");

    ab.send_datagram(16, b"voice").unwrap();
    let big = vec![7u8; MAX_MESSAGE];
    ab.send_message(200, &big).await.unwrap();
    let d = dg_b.recv().await.unwrap();
    assert_eq!((d.channel, &d.payload[..]), (16, &b"voice"[..]));
    let m = msg_b.recv().await.unwrap();
    assert_eq!((m.channel, m.payload.len()), (200, MAX_MESSAGE));
    ba.send_datagram(17, b"back").unwrap();
    assert_eq!(&dg_a.recv().await.unwrap().payload[..], b"back");

    // What the application may not send is refused with a reason, and nothing is queued.
    assert_eq!(
        ab.send_datagram(5, b"x"),
        Err(MediaError::ReservedChannel(5))
    );
    assert!(matches!(
        ab.send_datagram(16, &[0; MAX_DATAGRAM + 1]),
        Err(MediaError::TooLarge { .. })
    ));
    assert!(matches!(
        ab.send_message(16, &vec![0; MAX_MESSAGE + 1]).await,
        Err(MediaError::TooLarge { .. })
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s = ab.stats();
    assert_eq!((s.tx_datagrams, s.tx_messages), (1, 1));
    let r = ba.stats();
    assert_eq!((r.rx_datagrams, r.rx_messages), (1, 1));

    // Closing one end closes the other.
    ab.close();
    assert_eq!(ba.closed().await, CloseReason::Remote);
    assert_eq!(ab.send_datagram(16, b"late"), Err(MediaError::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_full_send_ring_is_backpressure_never_a_wait() {
    let hub = Hub::new();
    let (a, b) = mem_pair(&hub);
    let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
    let _ba = inbound(&b).await;
    // On this single-threaded runtime the ring's pump cannot run until we yield.
    let results: Vec<_> = (0..100).map(|_| ab.send_datagram(16, &[1; 100])).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, SEND_RING);
    assert!(
        results[SEND_RING..]
            .iter()
            .all(|r| *r == Err(MediaError::Backpressure))
    );
    assert_eq!(ab.stats().tx_dropped_queue, (100 - SEND_RING) as u64);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(ab.stats().tx_datagrams, SEND_RING as u64);
}

#[tokio::test(start_paused = true)]
async fn the_receive_budget_sheds_a_flood_and_counts_it() {
    let hub = Hub::new();
    let (a, b) = mem_pair(&hub);
    let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
    let ba = inbound(&b).await;
    let mut rx = ba.datagrams().unwrap();
    let drain = tokio::spawn(async move {
        let mut bytes = 0usize;
        while let Some(d) = rx.recv().await {
            bytes += d.payload.len() + 1;
        }
        bytes
    });
    // 2 s at 8,000 datagrams/s of 1,200 bytes: 76.8 Mbit/s against a 20 Mbit/s budget.
    for _ in 0..2000 {
        for _ in 0..8 {
            let _ = ab.send_datagram(16, &[0; MAX_DATAGRAM]);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    ab.close();
    let got = drain.await.unwrap();
    let s = ba.stats();
    assert!(s.rx_dropped_budget > 8000, "{s:?}");
    let budget = MediaBudget::default();
    // At most the burst plus 2 s of the rate got through, and not much less.
    let max = budget.bytes.1 + 2.0 * budget.bytes.0;
    assert!((got as f64) <= max * 1.01, "{got} > {max}");
    assert!((got as f64) >= 2.0 * budget.bytes.0 * 0.95, "{got}");
}

#[tokio::test(start_paused = true)]
async fn mem_media_model_loses_reorders_and_shapes_deterministically() {
    async fn run(seed: u64) -> (Vec<u32>, u64) {
        let hub = Hub::new();
        let (a, b) = mem_pair(&hub);
        hub.set_media_link(
            a.local_id(),
            b.local_id(),
            LinkModel {
                loss: 0.1,
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(5),
                reorder_every: 7,
                reorder_hold: Duration::from_millis(30),
                mtu: Some(1000),
                seed,
                // 100 kB/s with an 8 KB queue: a burst of 20 × 1 KB overflows it.
                rate: Some(100_000),
                queue_bytes: 8000,
            },
        );
        let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
        let ba = inbound(&b).await;
        let mut rx = ba.datagrams().unwrap();
        let started = tokio::time::Instant::now();
        for i in 0u32..200 {
            let mut p = vec![0u8; 900];
            p[..4].copy_from_slice(&i.to_be_bytes());
            ab.send_datagram(16, &p).unwrap();
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Over the MTU: always lost.
        ab.send_datagram(16, &[0; 1000]).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut seen = Vec::new();
        let mut first_at = None;
        while let Ok(d) = rx.try_recv() {
            first_at.get_or_insert(d.received - started);
            seen.push(u32::from_be_bytes(d.payload[..4].try_into().unwrap()));
        }
        assert!(first_at.unwrap() >= Duration::from_millis(20), "the delay");
        (seen, ba.stats().rx_datagrams)
    }
    let (one, n) = run(9).await;
    let (two, _) = run(9).await;
    assert_eq!(one, two, "same seed, same fate");
    let (other, _) = run(10).await;
    assert_ne!(one, other, "another seed, another fate");
    // Loss and the queue both bite; the bottleneck lets through about 8 of each 20-burst
    // (its queue) plus what drains meanwhile, and loss takes a tenth of those.
    assert!(n < 150 && n > 60, "{n}");
    assert!(one.windows(2).any(|w| w[0] > w[1]), "reordered");
}

#[tokio::test(start_paused = true)]
async fn a_dead_path_closes_the_session_within_seconds() {
    let hub = Hub::new();
    let (a, b) = mem_pair(&hub);
    let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
    let ba = inbound(&b).await;
    hub.partition(a.local_id(), b.local_id());
    let started = tokio::time::Instant::now();
    assert_eq!(ab.closed().await, CloseReason::Lost);
    assert!(ba.is_closed());
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(12), "{took:?}");
    // A message across the cut stalls and is abandoned, never hangs.
    let (c, d) = (
        hub.transport(id(3), "n3").unwrap(),
        hub.transport(id(4), "n4").unwrap(),
    );
    let cd = c.open_media(d.local_id(), &d.local_addr()).await.unwrap();
    let _dc = inbound(&d).await;
    hub.partition(c.local_id(), d.local_id());
    assert!(matches!(
        cd.send_message(16, b"stuck").await,
        Err(MediaError::Stalled(_))
    ));
    assert_eq!(cd.stats().tx_dropped_stall, 1);
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_media_is_unsupported() {
    let hub = Hub::new();
    let (a, b) = mem_pair(&hub);
    hub.set_media(b.local_id(), false);
    assert_eq!(
        a.open_media(b.local_id(), &b.local_addr())
            .await
            .unwrap_err(),
        MediaError::Unsupported
    );
    // A partitioned peer is a dial failure, not "unsupported".
    let c = hub.transport(id(3), "n3").unwrap();
    hub.partition(a.local_id(), c.local_id());
    assert!(matches!(
        a.open_media(c.local_id(), &c.local_addr()).await,
        Err(MediaError::Dial(DialError::NoRoute(_)))
    ));
}

fn quic(n: u8, config: QuicConfig) -> QuicTransport {
    let identity = nodenet_identity::Identity::from_seed(&[n; 32]);
    QuicTransport::bind(&identity, "127.0.0.1:0".parse().unwrap(), config).unwrap()
}

#[tokio::test]
async fn quic_sessions_carry_datagrams_and_messages() {
    let (a, b) = (
        quic(1, QuicConfig::default()),
        quic(2, QuicConfig::default()),
    );
    let ab = a.open_media(b.local_id(), &b.local_addr()).await.unwrap();
    let ba = tokio::time::timeout(Duration::from_secs(5), inbound(&b))
        .await
        .unwrap();
    assert_eq!(ba.remote_id(), a.local_id());
    assert_eq!(
        ab.remote_key(),
        Some(nodenet_identity::Identity::from_seed(&[2; 32]).ed_public())
    );
    let (mut dg, mut msg) = (ba.datagrams().unwrap(), ba.messages().unwrap());
    let payload: Vec<u8> = (0..MAX_DATAGRAM)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    ab.send_datagram(16, &payload).unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), dg.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &d.payload[..],
        &payload[..],
        "a full-size datagram crosses whole"
    );
    // Messages never block each other: both arrive, each whole.
    let big: Vec<u8> = (0..MAX_MESSAGE)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let (r1, r2) = tokio::join!(ab.send_message(30, &big), ab.send_message(31, b"small"));
    r1.unwrap();
    r2.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), msg.recv())
            .await
            .unwrap()
            .unwrap();
        got.push((m.channel, m.payload.to_vec()));
    }
    got.sort();
    assert_eq!(got, vec![(30, big), (31, b"small".to_vec())]);
    // A datagram on a reserved channel sent by a raw peer would be dropped; ours refuses it
    // before it leaves.
    assert_eq!(
        ab.send_datagram(0, b"x"),
        Err(MediaError::ReservedChannel(0))
    );
    // Refusing closes the caller's side with "refused".
    ba.refuse();
    let reason = tokio::time::timeout(Duration::from_secs(5), ab.closed())
        .await
        .unwrap();
    assert_eq!(reason, CloseReason::Refused);
}

#[tokio::test]
async fn a_quic_peer_without_media_is_unsupported() {
    let a = quic(1, QuicConfig::default());
    let b = quic(2, QuicConfig::default().media(false));
    assert_eq!(
        a.open_media(b.local_id(), &b.local_addr())
            .await
            .unwrap_err(),
        MediaError::Unsupported
    );
    // The wrong NodeId at the address is an identity mismatch, not a session.
    let c = quic(3, QuicConfig::default());
    assert!(matches!(
        a.open_media(id(9), &c.local_addr()).await,
        Err(MediaError::Dial(DialError::IdentityMismatch { .. }))
    ));
    // Overlay edges still work beside media.
    let conn = a.dial(c.local_id(), &c.local_addr()).await.unwrap();
    conn.send(b"edge").unwrap();
}

/// Over a volunteer relay, a session rides the same allocation as the edge: the relay
/// splices its datagrams like any others, and the handshake stays end to end.
#[tokio::test]
async fn quic_sessions_ride_a_relay_allocation() {
    let (relay, a, b) = (
        quic(1, QuicConfig::default()),
        quic(2, QuicConfig::default()),
        quic(3, QuicConfig::default()),
    );
    let (caller, callee) = relay.relay().unwrap();
    // The callee pins its side of the session, as a RelayBind's punch would.
    b.punch(&callee).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let edge = a.dial(b.local_id(), &caller).await.unwrap();
    edge.send(b"edge").unwrap();
    let ab = a.open_media(b.local_id(), &caller).await.unwrap();
    let ba = tokio::time::timeout(Duration::from_secs(5), inbound(&b))
        .await
        .unwrap();
    assert_eq!(ba.remote_id(), a.local_id());
    let mut dg = ba.datagrams().unwrap();
    let mut msg = ba.messages().unwrap();
    ab.send_datagram(16, b"through the relay").unwrap();
    ab.send_message(17, &[9; 4000]).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), dg.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d.payload[..], b"through the relay");
    let m = tokio::time::timeout(Duration::from_secs(5), msg.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], &[9; 4000][..]);
}
