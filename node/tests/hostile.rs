//! Hostile peers that speak the real protocol, built from the project's own codecs over the
//! in-memory transport, against one honest node on tokio's paused clock. Each test is an
//! attack from the hardening review (issue 17); each asserts what the victim must not do.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodenet::Node;
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::msg::{self, MsgFields};
use nodenet_transport::mem::{Hub, MemTransport};
use nodenet_transport::{Conn, Relay, Transport};
use nodenet_wire::{Addr, Frame, FrameType, Writer};

fn identity(i: u32) -> Identity {
    let mut seed = [0x77u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
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

fn frame(ty: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + 16];
    let n = Frame::new(ty, payload).encode(&mut out).unwrap();
    out.truncate(n);
    out
}

/// A routed frame of `ty` from `signer` to `target`.
fn routed(signer: &Identity, ty: FrameType, target: NodeId, payload: &[u8]) -> Vec<u8> {
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
    let mut out = vec![0u8; fields.encoded_len() + 16];
    let n = fields.encode_frame(ty, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A Pong that tells the victim it is seen at `seen`.
fn pong(seen: &Addr) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf);
    seen.as_ref().encode(&mut w).unwrap();
    frame(FrameType::PONG, w.written())
}

/// A hostile peer: its own transport on the hub, and the identity it signs with.
struct Hostile {
    id: Identity,
    t: MemTransport,
}

impl Hostile {
    fn new(hub: &Hub, i: u32, name: &str) -> Self {
        let id = identity(i);
        let t = hub.transport_for(&id, name).unwrap();
        Self { id, t }
    }

    async fn dial(&self, to: NodeId, at: &Addr) -> Conn {
        let conn = self.t.dial(to, at).await.unwrap();
        // The victim sees an inbound edge with its first frame.
        conn.send(&frame(FrameType::PING, &[])).unwrap();
        conn
    }
}

/// The victim: an honest node with every default, on the open network.
fn victim(hub: &Hub) -> (Node, Addr) {
    let id = identity(1);
    let t = hub.transport_for(&id, "victim").unwrap();
    let addr = t.local_addr();
    let node = Node::builder(id).transport(Arc::new(t)).build().unwrap();
    node.spawn();
    (node, addr)
}

/// Finding 2: a peer and a "relay" of its own choosing collude to aim the victim's
/// datagrams at a host that never took part. The relay sends an unsolicited RelayBind naming
/// the bystander as its callee side, and another that vouches for the peer at the
/// bystander's host; the peer then comes in through the relay and asks for a birthday punch
/// as a symmetric-NAT'd node "at" that host. Not one datagram may leave toward it.
#[tokio::test(start_paused = true)]
async fn a_colluding_pair_cannot_aim_the_victim_at_a_bystander() {
    let hub = Hub::new();
    let (victim, v_addr) = victim(&hub);
    let v = victim.id();
    let peer = Hostile::new(&hub, 2, "peer");
    let relay = Hostile::new(&hub, 3, "relay");
    let helpers = [
        Hostile::new(&hub, 4, "helper-1"),
        Hostile::new(&hub, 5, "helper-2"),
    ];

    // Three "neighbours" confirm the victim's own address: it believes it is public, so it
    // plays the easy side of a birthday punch, the side that sprays probes.
    let mut held = Vec::new();
    for h in [&relay, &helpers[0], &helpers[1]] {
        let c = h.dial(v, &v_addr).await;
        c.send(&pong(&v_addr)).unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(victim.nat_type(), nodenet::NatType::Public);

    let bystander = Addr::new("mem", "bystander:0");
    let to_relay = &held[0];
    // 1. A RelayBind whose "callee side" is the bystander: the victim would punch it.
    let bind = nodenet_nat::RelayBind {
        addr: Addr::new("mem", "bystander:7777").as_ref(),
        attest: None,
    }
    .encode()
    .unwrap();
    to_relay.send(&frame(FrameType::RELAY_BIND, &bind)).unwrap();

    // 2. A real relay session on the relay's host, bound to the victim with the relay's
    // "word" that the peer sits at the bystander's host; the peer comes in through it.
    let (caller, callee) = relay.t.relay().unwrap();
    let bind = nodenet_nat::RelayBind {
        addr: callee.as_ref(),
        attest: Some(nodenet_nat::Attestation {
            peer: peer.id.node_id(),
            host: bystander.as_ref(),
        }),
    }
    .encode()
    .unwrap();
    to_relay.send(&frame(FrameType::RELAY_BIND, &bind)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let relayed = peer.dial(v, &caller).await;

    // 3. The peer asks for a birthday punch, as a hard side "at" the bystander's host.
    let nonce = [0x99u8; nodenet_nat::NONCE_LEN];
    let ask = nodenet_nat::encode_coordination_with(
        &nonce,
        &[],
        nodenet_nat::FLAG_BIRTHDAY,
        Some(bystander.as_ref()),
    )
    .unwrap();
    relayed
        .send(&routed(&peer.id, FrameType::CONNECT, v, &ask))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(
        hub.datagrams_to("bystander"),
        0,
        "the victim aimed datagrams at a host that never took part"
    );
    let s = victim.stats();
    assert!(
        s.birthday_unverified >= 1,
        "the birthday request was not refused as unverified"
    );
    assert!(
        s.relay_binds_refused >= 1,
        "the foreign RelayBind was not counted"
    );
    drop(held);
}

/// Review of finding 2: the binding relay is excluded, but any edge can claim to be a relay.
/// A colluder holds an edge to the victim, advertises the relay capability in its Neighbors
/// answers, and answers the victim's RelayRequest with a grant that "attests" the peer at the
/// bystander's host. The peer comes in through a second accomplice's relay session and asks
/// for a birthday punch. One relay's word must not be enough: zero datagrams to the
/// bystander.
#[tokio::test(start_paused = true)]
async fn a_relay_the_victim_asks_cannot_vouch_alone() {
    use nodenet_routing::control::{self, Caps, Contact};
    use nodenet_transport::{Event, next_event};

    let hub = Hub::new();
    let (victim, v_addr) = victim(&hub);
    let v = victim.id();
    let peer = Hostile::new(&hub, 2, "peer");
    let colluder = Hostile::new(&hub, 3, "colluder");
    let carrier = Hostile::new(&hub, 4, "carrier");
    let helper = Hostile::new(&hub, 5, "helper");
    let bystander = Addr::new("mem", "bystander:0");

    let mut held = Vec::new();
    for h in [&colluder, &carrier, &helper] {
        let c = h.dial(v, &v_addr).await;
        c.send(&pong(&v_addr)).unwrap();
        held.push(c);
    }
    // The colluder answers every Lookup with itself as a relay, and every RelayRequest with
    // a grant vouching for the peer at the bystander's host.
    let (grant_addr, _) = colluder.t.relay().unwrap();
    let me = Contact {
        id: colluder.id.node_id(),
        ed_pub: Some(colluder.id.ed_public()),
        x_pub: None,
        caps: Caps::CAN_RELAY,
        addrs: vec![colluder.t.local_addr()],
    };
    // The others only keep their edges alive (answer pings) and hold their reports.
    let mut pumps = Vec::new();
    for h in [carrier.t.clone(), helper.t.clone()] {
        let seen = v_addr.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(ev) = next_event(&h).await {
                if let Event::Frame { conn, packet } = ev {
                    if Frame::parse(&packet).is_ok_and(|(f, _)| f.frame_type() == FrameType::PING) {
                        let _ = conn.send(&pong(&seen));
                    }
                }
            }
        }));
    }
    let (id, t) = (colluder.id, colluder.t);
    let (p, by, ga) = (peer.id.node_id(), bystander.clone(), grant_addr.clone());
    let seen = v_addr.clone();
    pumps.push(tokio::spawn(async move {
        while let Some(ev) = next_event(&t).await {
            let Event::Frame { conn, packet } = ev else {
                continue;
            };
            let Ok((f, _)) = Frame::parse(&packet) else {
                continue;
            };
            if f.frame_type() == FrameType::PING {
                let _ = conn.send(&pong(&seen));
            } else if f.frame_type() == FrameType::LOOKUP {
                let m = msg::MsgRef::parse(f.payload()).unwrap();
                let nonce = control::parse_nonce(m.payload).unwrap();
                let contacts = [me.clone()];
                let mut payload = vec![0u8; 8 + control::contacts_len(&contacts)];
                control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &contacts)
                    .unwrap();
                let _ = conn.send(&routed(&id, FrameType::NEIGHBORS, v, &payload));
            } else if f.frame_type() == FrameType::RELAY_REQUEST {
                let req = nodenet_nat::RelayRequest::decode(f.payload()).unwrap();
                let grant = nodenet_nat::RelayGrant {
                    nonce: req.nonce,
                    addr: ga.as_ref(),
                    attest: Some(nodenet_nat::Attestation {
                        peer: p,
                        host: by.as_ref(),
                    }),
                }
                .encode()
                .unwrap();
                let _ = conn.send(&frame(FrameType::RELAY_GRANT, &grant));
            }
        }
    }));
    // Maintenance looks itself up within a minute: the colluder's claim is learned.
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert_eq!(victim.nat_type(), nodenet::NatType::Public);
    assert!(
        victim
            .contacts()
            .iter()
            .any(|c| c.id == id_of(3) && c.caps.contains(Caps::CAN_RELAY)),
        "the victim never took the colluder for a relay: the attack is not mounted"
    );

    // The carrier binds the peer to the victim through an honest-looking relay session.
    let (caller, callee) = carrier.t.relay().unwrap();
    let bind = nodenet_nat::RelayBind {
        addr: callee.as_ref(),
        attest: None,
    }
    .encode()
    .unwrap();
    held[1].send(&frame(FrameType::RELAY_BIND, &bind)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let relayed = peer.dial(v, &caller).await;
    let nonce = [0x98u8; nodenet_nat::NONCE_LEN];
    let ask = nodenet_nat::encode_coordination_with(
        &nonce,
        &[],
        nodenet_nat::FLAG_BIRTHDAY,
        Some(bystander.as_ref()),
    )
    .unwrap();
    relayed
        .send(&routed(&peer.id, FrameType::CONNECT, v, &ask))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(
        hub.datagrams_to("bystander"),
        0,
        "one relay's word aimed the victim at a host that never took part"
    );
    assert!(victim.stats().birthday_unverified >= 1);
    for p in pumps {
        p.abort();
    }
    drop(held);
}

fn id_of(i: u32) -> NodeId {
    identity(i).node_id()
}
