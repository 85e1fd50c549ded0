//! The front door as a newcomer uses it: one crate, `bind`, `joined`, `dial`, and errors that
//! say what was wrong.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodenet::{
    AlreadyTaken, BuildError, DialNodeError, DirectSendError, Identity, JoinError, Node, SealError,
    SendError, mem::Hub, parse_contact,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_bind_join_and_talk_on_loopback() {
    let a = Node::builder(nodenet::mint_identity(8).unwrap())
        .min_difficulty(8)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = Node::builder(nodenet::mint_identity(8).unwrap()).min_difficulty(8);
    // Watching from the very start: nothing between bind and subscribing is missed.
    let mut b_events = b.subscribe();
    let b = b.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut inbox = b.deliveries().unwrap();
    assert_eq!(b.deliveries().unwrap_err(), AlreadyTaken("deliveries"));
    // Not joined yet: a short wait says so.
    assert_eq!(
        a.joined(Duration::from_millis(50)).await,
        Err(JoinError::Timeout {
            waited: Duration::from_millis(50)
        })
    );
    // b's contact as a user would paste it.
    let c = b.contact();
    let typed = format!("{}@{}", c.id, c.addrs[0].endpoint);
    a.dial(parse_contact(&typed).unwrap()).await.unwrap();
    a.joined(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        b_events.recv().await.unwrap(),
        nodenet::NodeEvent::EdgeUp { peer, outbound: false } if peer == a.id()
    ));
    a.send(b.id(), b"hello").unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.originator, d.payload.as_slice()),
        (a.id(), &b"hello"[..])
    );
    // The exported maxima are the real boundaries of each operation.
    let big = vec![7u8; nodenet::MAX_DIRECT_PAYLOAD + 1];
    a.send_direct(b.id(), &big[..nodenet::MAX_DIRECT_PAYLOAD])
        .await
        .unwrap();
    assert_eq!(
        a.send_direct(b.id(), &big).await,
        Err(DirectSendError::TooLarge {
            len: nodenet::MAX_DIRECT_PAYLOAD + 1,
            max: nodenet::MAX_DIRECT_PAYLOAD
        })
    );
    assert_eq!(
        a.send_sealed(b.id(), &big[..nodenet::MAX_SEALED_PLAINTEXT + 1])
            .await,
        Err(SealError::TooLarge {
            len: nodenet::MAX_SEALED_PLAINTEXT + 1,
            max: nodenet::MAX_SEALED_PLAINTEXT
        })
    );
    a.send_sealed(b.id(), &big[..nodenet::MAX_SEALED_PLAINTEXT])
        .await
        .unwrap();
    assert_eq!(
        a.send(b.id(), &big[..nodenet::MAX_ROUTED_PAYLOAD + 1]),
        Err(SendError::TooLarge {
            len: nodenet::MAX_ROUTED_PAYLOAD + 1,
            max: nodenet::MAX_ROUTED_PAYLOAD
        })
    );
    a.send(b.id(), &big[..nodenet::MAX_ROUTED_PAYLOAD]).unwrap();
    // A contact with no address says so rather than naming a made-up dial failure.
    let bare = nodenet::Contact {
        addrs: Vec::new(),
        ..b.contact()
    };
    let c_id = b.id();
    let fresh = Node::builder(nodenet::mint_identity(0).unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        fresh.dial(bare).await,
        Err(DialNodeError::NoAddresses { target: c_id })
    );
    fresh.shutdown().await;
    // A wrong NodeId at a right address is refused by the handshake.
    let wrong = format!("{}@{}", a.id(), c.addrs[0].endpoint);
    let err = Node::builder(nodenet::mint_identity(0).unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .dial(parse_contact(&wrong).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, DialNodeError::Unreachable { .. }), "{err:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_builder_refuses_what_would_fail_later() {
    let hub = Hub::new();
    let me = Identity::from_seed(&[1; 32]);
    let other = Identity::from_seed(&[2; 32]);
    // A transport made for another identity.
    let t = Arc::new(hub.transport_for(&other, "other").unwrap());
    match Node::builder(me.clone()).transport(t).build() {
        Err(BuildError::IdentityMismatch {
            identity,
            transport,
        }) => assert_eq!((identity, transport), (me.node_id(), other.node_id())),
        other => panic!("{other:?}"),
    }
    // Our own NodeId misses the difficulty we demand.
    let t = Arc::new(hub.transport_for(&me, "me").unwrap());
    let bits = nodenet_pow::leading_zero_bits(&me.node_id());
    assert!(matches!(
        Node::builder(me.clone())
            .transport(t.clone())
            .min_difficulty(bits + 1)
            .build(),
        Err(BuildError::OwnDifficulty { required, .. }) if required == bits + 1
    ));
    assert!(matches!(
        Node::builder(me.clone()).build(),
        Err(BuildError::NoTransport)
    ));
    assert!(matches!(
        Node::builder(me.clone())
            .transport(t)
            .bind("127.0.0.1:0".parse().unwrap())
            .await,
        Err(BuildError::TransportAlreadySet)
    ));
}

#[test]
fn binding_outside_a_runtime_is_an_error_not_a_panic() {
    let bind = Node::builder(Identity::from_seed(&[3; 32])).bind("127.0.0.1:0".parse().unwrap());
    let r = block_on(bind);
    assert!(matches!(r, Err(BuildError::NoRuntime)), "{r:?}");
    let q = nodenet::QuicTransport::bind(
        &Identity::from_seed(&[3; 32]),
        "127.0.0.1:0".parse().unwrap(),
        nodenet::QuicConfig::default(),
    );
    assert!(matches!(
        q,
        Err(nodenet_transport::quic::BindError::NoRuntime)
    ));
}

/// Polls a future to completion on this thread, outside any tokio runtime.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
