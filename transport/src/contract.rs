//! The contract every [`Transport`] must honour, as a reusable test suite.
//!
//! Implement [`Harness`] for your transport and call [`run_all`] from a test; each check
//! panics with a message saying what broke. Both bundled transports run it
//! (`tests/contract.rs`). Checks wait with real (or, on a paused clock, virtual) timeouts of a
//! few seconds, so a hang fails instead of blocking.
//!
//! What is covered: dial and accept with identities checked both ways; the send borrowing
//! its buffer; frame order on one edge; many concurrent edges; close propagating to the peer
//! after its last frame; the 64 KiB frame limit; a dial that expects the wrong NodeId; a dial
//! to an address nothing listens on; and closing a transport ending its event stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test suite"
)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;

use crate::{
    Addr, CloseReason, Conn, DialError, Direction, Event, MAX_PACKET_LEN, Packet, SendError,
    Transport, next_event,
};

/// How long a check waits for anything before failing.
const WAIT: Duration = Duration::from_secs(10);

/// What the suite needs from a transport implementation.
pub trait Harness: Send {
    /// A new transport for a new node with `identity`.
    fn transport(&mut self, identity: &Identity) -> Arc<dyn Transport>;

    /// An address of this transport's network where nothing listens.
    fn unreachable_addr(&mut self) -> Addr;
}

/// Runs every check of the contract.
pub async fn run_all<H: Harness>(h: &mut H) {
    let mut ids = Ids(0);
    frame_exchange(h, &mut ids).await;
    send_borrows(h, &mut ids).await;
    frame_order(h, &mut ids).await;
    many_edges(h, &mut ids).await;
    close_propagates(h, &mut ids).await;
    oversize_frames(h, &mut ids).await;
    dial_wrong_identity(h, &mut ids).await;
    dial_no_route(h, &mut ids).await;
    transport_close_ends_events(h, &mut ids).await;
}

/// Fresh, distinct identities.
struct Ids(u8);

impl Ids {
    fn next(&mut self) -> Identity {
        self.0 += 1;
        Identity::from_seed(&[self.0; 32])
    }
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("contract: timed out waiting for {what}"),
    }
}

/// The next frame event, skipping nothing: anything else is a failure.
async fn next_frame(t: &dyn Transport, what: &str) -> (Conn, Packet) {
    match within(what, next_event(t)).await {
        Some(Event::Frame { conn, packet }) => (conn, packet),
        other => panic!("contract: expected a frame ({what}), got {other:?}"),
    }
}

/// Sends, retrying while the edge's queue is full.
async fn send_all(conn: &Conn, frame: &[u8]) {
    loop {
        match conn.send(frame) {
            Ok(()) => return,
            Err(SendError::QueueFull) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("contract: send failed: {e}"),
        }
    }
}

async fn pair(h: &mut impl Harness, ids: &mut Ids) -> (Arc<dyn Transport>, Arc<dyn Transport>) {
    (h.transport(&ids.next()), h.transport(&ids.next()))
}

async fn dial(a: &dyn Transport, b: &dyn Transport) -> Conn {
    within("dial", a.dial(b.local_id(), &b.local_addr()))
        .await
        .unwrap_or_else(|e| panic!("contract: dial failed: {e}"))
}

/// A dials B; frames flow both ways and each side sees the other's authenticated NodeId.
async fn frame_exchange<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    assert_eq!(
        ab.remote_id(),
        b.local_id(),
        "dialer sees the dialed NodeId"
    );
    assert_eq!(ab.direction(), Direction::Outbound);
    ab.send(b"ping").unwrap();
    let (ba, p) = next_frame(&*b, "the first frame at the acceptor").await;
    assert_eq!(&*p, b"ping");
    assert_eq!(
        ba.remote_id(),
        a.local_id(),
        "acceptor authenticates the dialer"
    );
    assert_eq!(ba.direction(), Direction::Inbound);
    ba.send(b"pong").unwrap();
    let (conn, p) = next_frame(&*a, "the reply at the dialer").await;
    assert_eq!(&*p, b"pong");
    assert_eq!(conn, ab, "the reply arrives on the dialed edge");
    a.close();
    b.close();
}

/// Send copies synchronously: changing the buffer afterwards changes nothing on the wire.
async fn send_borrows<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    let mut buf = Packet::get();
    buf.buf_mut()[..5].copy_from_slice(b"first");
    buf.set_len(5).unwrap();
    ab.send(&buf).unwrap();
    buf.buf_mut()[..5].copy_from_slice(b"later");
    ab.send(&buf).unwrap();
    buf.release();
    assert_eq!(&*next_frame(&*b, "first copy").await.1, b"first");
    assert_eq!(&*next_frame(&*b, "second copy").await.1, b"later");
    a.close();
    b.close();
}

/// Frames on one edge arrive in the order they were sent.
async fn frame_order<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    let sender = tokio::spawn(async move {
        for i in 0u32..500 {
            send_all(&ab, &i.to_be_bytes()).await;
        }
        ab
    });
    for i in 0u32..500 {
        let (_, p) = next_frame(&*b, "an ordered frame").await;
        assert_eq!(&*p, &i.to_be_bytes(), "frame {i} out of order");
    }
    drop(sender.await.unwrap());
    a.close();
    b.close();
}

/// Several nodes hold edges to one node at once, each frame attributed to its sender.
async fn many_edges<H: Harness>(h: &mut H, ids: &mut Ids) {
    let hub = h.transport(&ids.next());
    let mut spokes = Vec::new();
    for _ in 0..6 {
        let t = h.transport(&ids.next());
        let c = dial(&*t, &*hub).await;
        c.send(t.local_id().as_bytes()).unwrap();
        spokes.push((t, c));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..spokes.len() {
        let (conn, p) = next_frame(&*hub, "a spoke's frame").await;
        assert_eq!(
            p.as_ref(),
            conn.remote_id().as_bytes(),
            "frame attributed to its sender"
        );
        conn.send(b"ack").unwrap();
        seen.insert(conn.remote_id());
    }
    assert_eq!(seen.len(), spokes.len());
    for (t, c) in &spokes {
        let (conn, p) = next_frame(&**t, "the hub's answer").await;
        assert_eq!((&*p, &conn), (&b"ack"[..], c));
        t.close();
    }
    hub.close();
}

/// Closing an edge: the peer gets the frames sent before the close, then a Closed event, and
/// its sends start failing. The closer gets its own Closed event.
async fn close_propagates<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    ab.send(b"hello").unwrap();
    let (ba, _) = next_frame(&*b, "the frame before the close").await;
    ab.send(b"last words").unwrap();
    ab.close();
    assert!(ab.is_closed());
    assert_eq!(ab.send(b"too late"), Err(SendError::ConnClosed));
    let (_, p) = next_frame(&*b, "the frame sent just before the close").await;
    assert_eq!(
        &*p, b"last words",
        "a frame accepted before close is delivered"
    );
    match within("the peer's Closed event", next_event(&*b)).await {
        Some(Event::Closed { conn, reason }) => {
            assert_eq!(conn, ba);
            assert_eq!(reason, CloseReason::Remote);
        }
        other => panic!("contract: expected Closed at the peer, got {other:?}"),
    }
    assert_eq!(ba.send(b"x"), Err(SendError::ConnClosed));
    match within("the closer's Closed event", next_event(&*a)).await {
        Some(Event::Closed { conn, reason }) => {
            assert_eq!(conn, ab);
            assert_eq!(reason, CloseReason::Local);
        }
        other => panic!("contract: expected Closed at the closer, got {other:?}"),
    }
    a.close();
    b.close();
}

/// A 64 KiB frame goes through whole; one byte more is refused at the sender.
async fn oversize_frames<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    let big: Vec<u8> = (0..MAX_PACKET_LEN)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    ab.send(&big).unwrap();
    let (_, p) = next_frame(&*b, "a 64 KiB frame").await;
    assert_eq!(&*p, &big[..]);
    let too_big = vec![0u8; MAX_PACKET_LEN + 1];
    assert_eq!(
        ab.send(&too_big),
        Err(SendError::TooLarge {
            len: MAX_PACKET_LEN + 1
        })
    );
    assert!(!ab.is_closed(), "a refused send leaves the edge up");
    a.close();
    b.close();
}

/// Dialing an address whose node proves a different NodeId fails with IdentityMismatch.
async fn dial_wrong_identity<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let wrong = NodeId::from_bytes([0xee; 32]);
    match within("a mismatched dial", a.dial(wrong, &b.local_addr())).await {
        Err(DialError::IdentityMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wrong, b.local_id()));
        }
        other => panic!("contract: expected IdentityMismatch, got {other:?}"),
    }
    assert_eq!(a.stats().dials_identity_mismatch, 1);
    a.close();
    b.close();
}

/// Dialing an address nothing listens on fails (no route, or a timeout) in bounded time.
async fn dial_no_route<H: Harness>(h: &mut H, ids: &mut Ids) {
    let a = h.transport(&ids.next());
    let nowhere = h.unreachable_addr();
    match within(
        "a dial to nowhere",
        a.dial(NodeId::from_bytes([1; 32]), &nowhere),
    )
    .await
    {
        Err(DialError::NoRoute(_) | DialError::Timeout) => {}
        other => panic!("contract: expected NoRoute or Timeout, got {other:?}"),
    }
    let wrong_net = Addr::new("carrier-pigeon", "roof");
    assert!(matches!(
        within(
            "a dial to a foreign network",
            a.dial(NodeId::ZERO, &wrong_net)
        )
        .await,
        Err(DialError::BadAddr { .. })
    ));
    a.close();
}

/// Closing a transport ends its event stream, and its peers see their edges close.
async fn transport_close_ends_events<H: Harness>(h: &mut H, ids: &mut Ids) {
    let (a, b) = pair(h, ids).await;
    let ab = dial(&*a, &*b).await;
    ab.send(b"hi").unwrap();
    next_frame(&*b, "a frame before closing").await;
    b.close();
    assert!(
        within("the end of the event stream", next_event(&*b))
            .await
            .is_none()
    );
    within("the dialer's edge to close", ab.closed()).await;
    assert!(matches!(
        within(
            "a dial from a closed transport",
            b.dial(a.local_id(), &a.local_addr())
        )
        .await,
        Err(DialError::Closed)
    ));
    a.close();
}
