//! A malicious forwarder on the only path between two nodes: it answers rendezvous in the
//! target's name, rewrites the target's answer, or replays an old one. The originator detects
//! each, counts the drop, and never connects to anyone but the real target.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodenet::{ConnectError, Contact, Maintenance, Node, Step, StepError};
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_rendezvous::{Hello, encode_reply};
use nodenet_routing::msg::{self, MsgFields, MsgRef};
use nodenet_transport::mem::{Hub, MemTransport};
use nodenet_transport::{Conn, Event, Transport, next_event};
use nodenet_wire::{Frame, FrameType, Writer};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Answer Hellos itself, with its own keys and address.
    Impersonate,
    /// Forward Hellos, then alter the address in the real answer and re-sign the envelope.
    Rewrite,
    /// Forward honestly once, then answer every later Hello with that first Reply.
    Replay,
}

fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// Re-wraps `payload` in an envelope of `ty` to `target` signed by `signer`.
fn envelope(signer: &Identity, ty: FrameType, target: NodeId, payload: &[u8]) -> Vec<u8> {
    let sent = now_ns();
    let sig = msg::sign(signer, ty, &target, sent, payload);
    let ed = signer.ed_public();
    let fields = MsgFields {
        target,
        ttl: msg::MAX_HOPS,
        ed_pub: &ed,
        sent,
        avoid: &[],
        payload,
        sig: &sig,
    };
    let mut frame = vec![0u8; fields.encoded_len() + 16];
    let n = fields.encode_frame(ty, &mut frame).unwrap();
    frame.truncate(n);
    frame
}

/// The forwarder: answers pings, relays routed frames by target between the nodes that dialed
/// it, swallows lookups (so nobody learns anyone's address from it), and attacks rendezvous.
async fn forwarder(me: Identity, t: MemTransport, attack: Attack) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut recorded: Option<Vec<u8>> = None;
    while let Some(ev) = next_event(&t).await {
        let Event::Frame { conn, packet } = ev else {
            continue;
        };
        if !conns.contains(&conn) {
            conns.push(conn.clone());
        }
        let Ok((frame, _)) = Frame::parse(&packet) else {
            continue;
        };
        let ty = frame.frame_type();
        if ty == FrameType::PING {
            let mut buf = [0u8; 128];
            let mut w = Writer::new(&mut buf);
            conn.remote_addr().as_ref().encode(&mut w).unwrap();
            let mut out = vec![0u8; 160];
            let n = Frame::new(FrameType::PONG, w.written())
                .encode(&mut out)
                .unwrap();
            let _ = conn.send(&out[..n]);
            continue;
        }
        if !ty.is_routed() || ty == FrameType::LOOKUP || ty == FrameType::NEIGHBORS {
            continue;
        }
        let Ok(m) = MsgRef::parse(frame.payload()) else {
            continue;
        };
        let to = |id: NodeId| conns.iter().find(|c| c.remote_id() == id).cloned();
        let origin = m.originator();
        let mut out = packet.to_vec();
        match (attack, ty) {
            (Attack::Impersonate, FrameType::HELLO) => {
                let hello = Hello::decode(m.payload).unwrap();
                let reply = encode_reply(&me, &[t.local_addr()], &hello.nonce).unwrap();
                out = envelope(&me, FrameType::REPLY, origin, &reply);
                if let Some(c) = to(origin) {
                    let _ = c.send(&out);
                }
                continue;
            }
            (Attack::Rewrite, FrameType::REPLY) => {
                let mut payload = m.payload.to_vec();
                // The first address's network name starts after the two keys and the two
                // length bytes: change a letter, re-sign the envelope as ourselves.
                payload[64 + 2] ^= 1;
                out = envelope(&me, FrameType::REPLY, m.target, &payload);
            }
            (Attack::Replay, FrameType::REPLY) if recorded.is_none() => {
                recorded = Some(out.clone());
            }
            (Attack::Replay, FrameType::HELLO) if recorded.is_some() => {
                if let (Some(c), Some(r)) = (to(origin), recorded.as_ref()) {
                    let _ = c.send(r);
                }
                continue;
            }
            _ => {}
        }
        if let Some(c) = to(m.target) {
            let _ = c.send(&out);
        }
    }
}

struct Setup {
    a: Node,
    b: Node,
    c: Node,
    hub: Hub,
}

async fn setup(attack: Attack) -> Setup {
    let hub = Hub::new();
    let m_id = Identity::from_seed(&[0xee; 32]);
    let m = hub.transport_for(&m_id, "mallory").unwrap();
    let m_contact = Contact::new(m_id.node_id(), vec![m.local_addr()]);
    tokio::spawn(forwarder(m_id, m, attack));
    let node = |n: u8| {
        let id = Identity::from_seed(&[n; 32]);
        let t = hub.transport_for(&id, &format!("n{n}")).unwrap();
        let mut builder = Node::builder(id)
            .transport(Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .rendezvous_timeout(Duration::from_secs(3));
        if n == 1 {
            // The originator advertises no address (as behind NAT): the target cannot dial
            // it back, so every answer has to pass the forwarder.
            builder = builder.advertise(Vec::new());
        }
        let node = builder.build().unwrap();
        node.spawn();
        node.bootstrap(vec![m_contact.clone()]);
        node
    };
    let (a, b, c) = (node(1), node(2), node(3));
    tokio::time::sleep(Duration::from_secs(2)).await;
    Setup { a, b, c, hub }
}

fn rendezvous_timeout(target: NodeId) -> ConnectError {
    ConnectError::Failed {
        target,
        step: Step::Rendezvous,
        error: StepError::Timeout(Duration::from_secs(3)),
    }
}

#[tokio::test(start_paused = true)]
async fn an_impostor_answering_for_the_target_is_refused() {
    let s = setup(Attack::Impersonate).await;
    let edges_before = s.a.edges();
    assert_eq!(
        s.a.connect(s.b.id()).await.unwrap_err(),
        rendezvous_timeout(s.b.id())
    );
    let st = s.a.stats();
    assert!(st.dropped_forged_reply >= 1, "{st:?}");
    assert_eq!(st.rendezvous_completed, 0);
    assert_eq!(s.a.edges(), edges_before, "no edge to anyone new");
    drop(s.hub);
}

#[tokio::test(start_paused = true)]
async fn a_rewritten_answer_is_refused() {
    let s = setup(Attack::Rewrite).await;
    assert_eq!(
        s.a.connect(s.b.id()).await.unwrap_err(),
        rendezvous_timeout(s.b.id())
    );
    let st = s.a.stats();
    assert!(st.dropped_forged_reply >= 1, "{st:?}");
    assert!(!s.a.edges().contains(&s.b.id()));
    // The genuine target did answer: the forwarder only altered it.
    assert!(s.b.stats().rendezvous_answered >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_answer_is_refused() {
    let s = setup(Attack::Replay).await;
    // Honest the first time: a direct edge to the real target.
    let conn = s.a.connect(s.b.id()).await.unwrap();
    assert_eq!(conn.peer(), s.b.id());
    let before = s.a.stats();
    // Every later Hello is answered with that first Reply.
    assert_eq!(
        s.a.connect(s.c.id()).await.unwrap_err(),
        rendezvous_timeout(s.c.id())
    );
    let st = s.a.stats();
    let refused = (st.dropped_unsolicited_reply + st.dropped_duplicate)
        - (before.dropped_unsolicited_reply + before.dropped_duplicate);
    assert!(refused >= 1, "{st:?}");
    assert_eq!(st.rendezvous_completed, before.rendezvous_completed);
    assert!(!s.a.edges().contains(&s.c.id()));
}
