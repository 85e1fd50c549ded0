//! Media sessions between nodes: calls on the in-memory hub (paused clock, shaped links) and
//! over QUIC on loopback; the consent gate, the caps, the receive budget under a flood, and a
//! call's fate apart from its edge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodenet::{
    Contact, MAX_MEDIA_PER_PEER, Maintenance, MediaError, MediaSession, Node, NodeId,
    OpenMediaError, Transport,
};
use nodenet_identity::Identity;
use nodenet_transport::mem::{Hub, LinkModel};
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{CloseReason, Media};
use tokio::time::Instant;

fn identity(i: u32) -> Identity {
    let mut seed = [0x3cu8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
}

/// Nodes that join through node 0; node `i` takes calls from the NodeIds `accept(i)` lists.
fn nodes(
    transports: Vec<(Identity, Arc<dyn Transport>)>,
    accept: impl Fn(usize) -> Vec<NodeId>,
) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    let mut boot = None;
    for (i, (id, t)) in transports.into_iter().enumerate() {
        let addr = t.local_addr();
        let callers = accept(i);
        let mut b = Node::builder(id)
            .transport(t)
            .maintenance(Maintenance::scaled(5))
            .rendezvous_timeout(Duration::from_secs(5))
            .deterministic_seed(i as u64 + 1);
        if !callers.is_empty() {
            b = b.media_consent(move |peer| callers.contains(peer));
        }
        let node = b.build().unwrap();
        node.spawn();
        match &boot {
            None => boot = Some(Contact::new(node.id(), vec![addr])),
            Some(b) => node.bootstrap(vec![b.clone()]),
        }
        out.push(node);
    }
    out
}

/// The `n`-th message's body: 20 KiB, its index first.
fn message(n: u32) -> Vec<u8> {
    let mut body: Vec<u8> = (0..20 * 1024)
        .map(|k| u8::try_from((k + n as usize) % 251).unwrap())
        .collect();
    body[..4].copy_from_slice(&n.to_be_bytes());
    body
}

fn mem_nodes(hub: &Hub, n: u32, accept: impl Fn(usize) -> Vec<NodeId>) -> Vec<Node> {
    let ts = (0..n)
        .map(|i| {
            let id = identity(i);
            let t: Arc<dyn Transport> = Arc::new(hub.transport_for(&id, &format!("n{i}")).unwrap());
            (id, t)
        })
        .collect();
    nodes(ts, accept)
}

/// Runs a call from `caller` to `callee` for `secs`: 50 datagrams of 200 bytes a second each
/// way, and one 20 KiB message a second from the caller. Returns the datagrams' one-way
/// latencies (as the callee measured them) and the messages the callee received.
async fn call(caller: &MediaSession, callee: &MediaSession, secs: u32) -> (Vec<Duration>, usize) {
    let mut datagrams = callee.datagrams().unwrap();
    let mut messages = callee.messages().unwrap();
    let mut back = caller.datagrams().unwrap();
    let start = Instant::now();
    let frames = 50 * secs;
    let sender = {
        let (caller, callee) = (caller.clone(), callee.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0..frames {
                tick.tick().await;
                let mut p = vec![0u8; 200];
                p[..4].copy_from_slice(&n.to_be_bytes());
                let sent = u64::try_from(start.elapsed().as_micros()).unwrap();
                p[4..12].copy_from_slice(&sent.to_be_bytes());
                caller.send_datagram(16, &p).unwrap();
                callee.send_datagram(16, &p).unwrap();
                if n % 50 == 0 {
                    let c = caller.clone();
                    tokio::spawn(async move { c.send_message(40, &message(n)).await.unwrap() });
                }
            }
        })
    };
    let mut latencies = Vec::new();
    let mut seen = vec![false; frames as usize];
    let mut msgs = 0;
    let deadline = start + Duration::from_secs(u64::from(secs) + 2);
    loop {
        tokio::select! {
            d = datagrams.recv() => {
                let Some(d) = d else { break };
                let n = u32::from_be_bytes(d.payload[..4].try_into().unwrap()) as usize;
                let sent = u64::from_be_bytes(d.payload[4..12].try_into().unwrap());
                seen[n] = true;
                latencies.push((d.received - start) - Duration::from_micros(sent));
            }
            m = messages.recv() => {
                let Some(m) = m else { break };
                let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                assert_eq!(&m.payload[..], &message(n)[..], "message {n} byte-exact");
                assert_eq!(m.channel, 40);
                msgs += 1;
            }
            _ = back.recv() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    sender.await.unwrap();
    let lost = seen.iter().filter(|s| !**s).count();
    assert_eq!(lost, 0, "{lost} of {frames} datagrams lost");
    (latencies, msgs)
}

async fn open(caller: &Node, callee: &Node) -> (MediaSession, MediaSession) {
    let mut inbound = callee.inbound_media().unwrap();
    let ours = caller.open_media(callee.id()).await.unwrap();
    let theirs = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.remote_id(), caller.id());
    (ours, theirs)
}

#[tokio::test(start_paused = true)]
async fn a_50_fps_call_for_10_s_on_a_shaped_memory_link() {
    let hub = Hub::new();
    let caller = identity(5).node_id();
    let members = mem_nodes(&hub, 6, |i| if i == 4 { vec![caller] } else { vec![] });
    let (a, b) = (&members[5], &members[4]);
    let link = LinkModel {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(10),
        seed: 7,
        rate: Some(1_000_000),
        queue_bytes: 64 * 1024,
        ..LinkModel::default()
    };
    hub.set_media_link(a.id(), b.id(), link.clone());
    hub.set_media_link(b.id(), a.id(), link);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (ours, theirs) = open(a, b).await;
    let (mut lat, msgs) = call(&ours, &theirs, 10).await;
    assert_eq!(msgs, 10);
    lat.sort();
    let (p50, max) = (lat[lat.len() / 2], lat[lat.len() - 1]);
    // 30 ms of delay, up to 10 of jitter, and 20 KiB messages do not delay datagrams much
    // on a 1 MB/s bottleneck they do not share.
    assert!(
        p50 >= Duration::from_millis(30) && p50 <= Duration::from_millis(41),
        "{p50:?}"
    );
    assert!(max <= Duration::from_millis(45), "{max:?}");
    assert_eq!(ours.stats().tx_dropped_queue, 0);
    assert_eq!(theirs.stats().rx_dropped_budget, 0);
    assert_eq!(a.stats().media_opened, 1);
    assert_eq!(b.stats().media_accepted, 1);
}

#[tokio::test(start_paused = true)]
async fn calls_are_refused_without_consent_and_over_the_caps() {
    let hub = Hub::new();
    let caller = identity(3).node_id();
    // Node 2 takes calls from node 3 only; node 1 from nobody (the default).
    let members = mem_nodes(&hub, 4, |i| if i == 2 { vec![caller] } else { vec![] });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut inbound = members[1].inbound_media().unwrap();
    let s = members[3].open_media(members[1].id()).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), s.closed())
            .await
            .unwrap(),
        CloseReason::Refused
    );
    assert_eq!(members[1].stats().dropped_media_consent, 1);
    assert!(inbound.try_recv().is_none());

    // Four sessions from one peer are fine (make-before-break); the fifth is refused.
    let mut inbound = members[2].inbound_media().unwrap();
    let mut kept = Vec::new();
    for _ in 0..MAX_MEDIA_PER_PEER {
        kept.push(members[3].open_media(members[2].id()).await.unwrap());
        kept.push(inbound.recv().await.unwrap());
    }
    let fifth = members[3].open_media(members[2].id()).await.unwrap();
    assert_eq!(fifth.closed().await, CloseReason::Refused);
    assert_eq!(members[2].stats().dropped_media_cap, 1);
    // A closed one frees its slot.
    kept.swap_remove(0).close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = members[3].open_media(members[2].id()).await.unwrap();
    let accepted = inbound.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!again.is_closed() && !accepted.is_closed());
    // Dropping every handle of a session closes it.
    drop(accepted);
    assert_eq!(again.closed().await, CloseReason::Remote);
}

#[tokio::test(start_paused = true)]
async fn a_flood_is_shed_and_counted_while_routing_keeps_working() {
    let hub = Hub::new();
    let caller = identity(5).node_id();
    let members = mem_nodes(&hub, 6, |i| if i == 4 { vec![caller] } else { vec![] });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (a, b) = (&members[5], &members[4]);
    let mut inbox = b.deliveries().unwrap();
    let (ours, theirs) = open(a, b).await;
    let mut rx = theirs.datagrams().unwrap();
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    // 3 s at 10,000 datagrams of 1,200 bytes a second (96 Mbit/s, five times the budget),
    // with a routed message every 100 ms from a third node.
    let mut routed = 0;
    for ms in 0..3000 {
        for _ in 0..10 {
            let _ = ours.send_datagram(16, &[0xab; 1200]);
        }
        if ms % 100 == 0 {
            members[1]
                .send(b.id(), format!("routed {ms}").as_bytes())
                .unwrap();
            routed += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivered = 0;
    while let Some(d) = inbox.try_recv() {
        delivered += usize::from(d.payload.starts_with(b"routed"));
    }
    assert_eq!(delivered, routed, "routing is untouched by the flood");
    let s = theirs.stats();
    assert!(s.rx_dropped_budget > 10_000, "{s:?}");
    // About the budget's worth got through: 3 s at 2.5 MB/s plus the burst, in 1,201-byte
    // frames.
    let max = (3.0 * 2.5e6 + 256.0 * 1024.0) / 1201.0;
    assert!((s.rx_datagrams as f64) <= max * 1.02, "{s:?}");
    assert!(
        (s.rx_datagrams as f64) >= 3.0 * 2.5e6 / 1201.0 * 0.9,
        "{s:?}"
    );
    ours.close();
    reader.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_survives_edge_churn_and_dies_with_its_path() {
    let hub = Hub::new();
    let caller = identity(5).node_id();
    let members = mem_nodes(&hub, 6, |i| if i == 4 { vec![caller] } else { vec![] });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (a, b) = (&members[5], &members[4]);
    let conn = a.connect(b.id()).await.unwrap();
    let (ours, theirs) = open(a, b).await;
    let mut rx = theirs.datagrams().unwrap();
    // The overlay edge goes away (and may come back); the call does not notice.
    conn.close();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ours.send_datagram(16, b"still here").unwrap();
    let d = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d.payload[..], b"still here");
    assert!(!ours.is_closed() && !theirs.is_closed());
    // A dead path ends it within seconds, on both sides.
    hub.partition(a.id(), b.id());
    let started = Instant::now();
    assert_eq!(ours.closed().await, CloseReason::Lost);
    assert!(started.elapsed() <= Duration::from_secs(12));
    assert!(theirs.is_closed());
    assert_eq!(ours.send_datagram(16, b"gone"), Err(MediaError::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_media_says_so() {
    let hub = Hub::new();
    let members = mem_nodes(&hub, 3, |_| vec![]);
    hub.set_media(members[1].id(), false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let err = members[2].open_media(members[1].id()).await.unwrap_err();
    assert_eq!(
        err,
        OpenMediaError::Session {
            target: members[1].id(),
            error: MediaError::Unsupported
        }
    );
}

fn quic_nodes(
    n: u32,
    media: impl Fn(u32) -> bool,
    accept: impl Fn(usize) -> Vec<NodeId>,
) -> Vec<Node> {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let ts = (0..n)
        .map(|i| {
            let id = identity(100 + i);
            let t: Arc<dyn Transport> = Arc::new(
                QuicTransport::bind(&id, localhost, QuicConfig::default().media(media(i))).unwrap(),
            );
            (id, t)
        })
        .collect();
    nodes(ts, accept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_fps_call_for_10_s_over_quic_loopback() {
    let caller = identity(103).node_id();
    let members = quic_nodes(
        4,
        |i| i != 1,
        |i| if i == 2 { vec![caller] } else { vec![] },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ours, theirs) = open(&members[3], &members[2]).await;
    let (mut lat, msgs) = call(&ours, &theirs, 10).await;
    assert_eq!(msgs, 10);
    lat.sort();
    let p50 = lat[lat.len() / 2];
    assert!(p50 < Duration::from_millis(20), "loopback p50 {p50:?}");
    // A node whose transport has no media (as one that predates it): its callers learn it.
    let err = members[3].open_media(members[1].id()).await.unwrap_err();
    assert_eq!(
        err,
        OpenMediaError::Session {
            target: members[1].id(),
            error: MediaError::Unsupported
        }
    );
}

/// An inbound session from a NodeId below the difficulty is refused before the caps and the
/// consent hook see it, and counted.
#[tokio::test(start_paused = true)]
async fn a_caller_below_the_difficulty_is_refused() {
    let hub = Hub::new();
    let strong = (0..)
        .map(identity)
        .find(|id| nodenet_pow::verify(&id.node_id(), 4))
        .unwrap();
    let weak = (1000..)
        .map(identity)
        .find(|id| !nodenet_pow::verify(&id.node_id(), 4))
        .unwrap();
    let t = hub.transport_for(&strong, "callee").unwrap();
    let addr = t.local_addr();
    let callee = Node::builder(strong)
        .transport(Arc::new(t))
        .min_difficulty(4)
        .media_consent(move |_| true)
        .build()
        .unwrap();
    callee.spawn();
    let mut inbound = callee.inbound_media().unwrap();
    // The caller cannot even hold an edge with it; its transport dials a session directly.
    let rogue = hub.transport_for(&weak, "rogue").unwrap();
    let s = rogue.open_media(callee.id(), &addr).await.unwrap();
    assert_eq!(s.closed().await, CloseReason::Refused);
    assert_eq!(callee.stats().dropped_media_sub_pow, 1);
    assert_eq!(callee.stats().dropped_media_consent, 0);
    assert!(inbound.try_recv().is_none());
}
