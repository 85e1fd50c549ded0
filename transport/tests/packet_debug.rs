//! With the `packet-debug` feature: every packet the transport hands out comes back to its
//! pool, across a mem round trip and a QUIC round trip. (Its own test binary: the pools are
//! process-wide, and other tests running in parallel would move the counters.)
#![cfg(feature = "packet-debug")]

use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::mem::Hub;
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{Event, Packet, SizeClass, Transport, next_event, outstanding};

async fn round_trip(a: &dyn Transport, b: &dyn Transport) {
    let conn = a.dial(b.local_id(), &b.local_addr()).await.unwrap();
    for len in [10usize, 1500, 65_536] {
        let mut p = Packet::get();
        p.set_len(len).unwrap();
        conn.send(&p).unwrap();
        p.release();
        match tokio::time::timeout(Duration::from_secs(10), next_event(b))
            .await
            .unwrap()
        {
            Some(Event::Frame { packet, .. }) => assert_eq!(packet.len(), len),
            other => panic!("{other:?}"),
        }
    }
    conn.close();
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .unwrap();
}

/// The outstanding-packet counters are process-wide: the tests of this file take turns, or
/// one would count the other's packets.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only orders this test against a synchronous one; nothing else takes it"
)]
async fn every_packet_returns_to_its_pool() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = (outstanding(SizeClass::Full), outstanding(SizeClass::Media));

    let hub = Hub::new();
    let a = hub.transport(NodeId::from_bytes([1; 32]), "a").unwrap();
    let b = hub.transport(NodeId::from_bytes([2; 32]), "b").unwrap();
    round_trip(&a, &b).await;
    a.close();
    b.close();

    let qa = QuicTransport::bind(
        &Identity::from_seed(&[3; 32]),
        "127.0.0.1:0".parse().unwrap(),
        QuicConfig::default(),
    )
    .unwrap();
    let qb = QuicTransport::bind(
        &Identity::from_seed(&[4; 32]),
        "127.0.0.1:0".parse().unwrap(),
        QuicConfig::default(),
    )
    .unwrap();
    round_trip(&qa, &qb).await;
    qa.close();
    qb.close();

    // Pumps and readers release asynchronously after the close; give them a moment.
    for _ in 0..100 {
        if (outstanding(SizeClass::Full), outstanding(SizeClass::Media)) == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "packets leaked: full {} -> {}, media {} -> {}",
        before.0,
        outstanding(SizeClass::Full),
        before.1,
        outstanding(SizeClass::Media)
    );
}

#[test]
fn released_buffers_are_poisoned() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut p = Packet::get_media();
    p.buf_mut()[..4].copy_from_slice(b"live");
    p.set_len(4).unwrap();
    p.release();
    // The next packet of the class may reuse that buffer: it must not see old contents.
    let mut q = Packet::get_media();
    q.set_len(4).unwrap();
    assert_ne!(&*q, b"live");
}
