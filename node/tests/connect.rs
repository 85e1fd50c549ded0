//! Rendezvous, connect, send_direct and sealed boxes: on the in-memory transport (paused
//! clock) and on QUIC over loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodenet::{
    ConnectError, Contact, DirectSendError, Maintenance, Node, Path, Step, StepError, Via,
};
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::Transport;
use nodenet_transport::mem::Hub;
use nodenet_transport::quic::{QuicConfig, QuicTransport};

const MIB: usize = 1 << 20;
const CHUNK: usize = 60_000;

fn identity(i: u32) -> Identity {
    let mut seed = [0x42u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
}

/// Timeouts are generous: twenty QUIC nodes in one test process share two cores.
fn build(identity: Identity, transport: Arc<dyn Transport>, i: u32, rendezvous: Duration) -> Node {
    let m = Maintenance::scaled(5);
    Node::builder(identity)
        .transport(transport)
        .maintenance(m)
        .delivery_buffer(8192)
        .rendezvous_timeout(rendezvous)
        .direct_dial_timeout(Duration::from_secs(5))
        .deterministic_seed(u64::from(i) + 1)
        .build()
        .unwrap()
}

fn mem_cluster(hub: &Hub, n: u32) -> Vec<(Node, nodenet::Deliveries)> {
    let nodes: Vec<(Node, nodenet_transport::Addr)> = (0..n)
        .map(|i| {
            let id = identity(i);
            let t = hub.transport_for(&id, &format!("n{i}")).unwrap();
            let addr = t.local_addr();
            (build(id, Arc::new(t), i, Duration::from_secs(3)), addr)
        })
        .collect();
    join(nodes)
}

fn join(nodes: Vec<(Node, nodenet_transport::Addr)>) -> Vec<(Node, nodenet::Deliveries)> {
    let boot = Contact::new(nodes[0].0.id(), vec![nodes[0].1.clone()]);
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, (node, _))| {
            let inbox = node.deliveries().unwrap();
            node.spawn();
            if i > 0 {
                node.bootstrap(vec![boot.clone()]);
            }
            (node, inbox)
        })
        .collect()
}

/// A payload of `len` bytes that differs for every (from, to) pair.
fn pattern(from: usize, to: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| u8::try_from((k * 31 + from * 7 + to * 13) % 251).unwrap())
        .collect()
}

/// Every pair connects and exchanges 1 MiB each way in frames; every byte arrives, in order,
/// over direct edges only. Rounds of a round-robin tournament: in each, ten disjoint pairs
/// work at once (the lower index connects, then both send), or one after the other when
/// `sequential` (QUIC: twenty endpoints in one process share two cores, and this test is about
/// every pair and every byte, not about load).
async fn all_pairs_exchange(members: Vec<(Node, nodenet::Deliveries)>, sequential: bool) {
    let n = members.len();
    assert_eq!(n % 2, 0);
    let ids: Vec<NodeId> = members.iter().map(|(node, _)| node.id()).collect();
    let index: HashMap<NodeId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut collectors = Vec::new();
    let mut nodes = Vec::new();
    for (node, mut inbox) in members {
        nodes.push(node);
        collectors.push(tokio::spawn(async move {
            let mut got: HashMap<NodeId, Vec<u8>> = HashMap::new();
            let mut total = 0;
            while total < (n - 1) * MIB {
                let Some(d) = inbox.recv().await else { break };
                if d.via != Via::Direct {
                    continue;
                }
                total += d.payload.len();
                got.entry(d.originator)
                    .or_default()
                    .extend_from_slice(&d.payload);
            }
            got
        }));
    }
    let send = |from: usize, to: usize| {
        let node = nodes[from].clone();
        let target = ids[to];
        async move {
            for chunk in pattern(from, to, MIB).chunks(CHUNK) {
                node.send_direct(target, chunk)
                    .await
                    .unwrap_or_else(|e| panic!("{from}→{to}: {e}"));
            }
        }
    };
    // The circle method: node 0 stays, the others rotate.
    let mut ring: Vec<usize> = (1..n).collect();
    for _ in 0..n - 1 {
        let mut round = Vec::new();
        for k in 0..n / 2 {
            let a = if k == 0 { 0 } else { ring[k - 1] };
            let b = ring[n - 2 - k];
            let (a, b) = (a.min(b), a.max(b));
            let node = nodes[a].clone();
            let other = nodes[b].clone();
            let target = ids[b];
            let (ab, ba) = (send(a, b), send(b, a));
            let task = tokio::spawn(async move {
                let conn = node.connect(target).await.unwrap_or_else(|e| {
                    panic!(
                        "{a}→{b}: {e}; {a}: {} edges, {:?}; {b}: {} edges, {:?}",
                        node.edges().len(),
                        node.stats(),
                        other.edges().len(),
                        other.stats()
                    )
                });
                assert_eq!((conn.peer(), conn.path()), (target, Path::Direct));
                tokio::join!(ab, ba);
            });
            if sequential {
                task.await.unwrap();
            } else {
                round.push(task);
            }
        }
        for r in round {
            r.await.unwrap();
        }
        ring.rotate_right(1);
    }
    for (j, c) in collectors.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("all data arrives")
            .unwrap();
        assert_eq!(got.len(), n - 1, "node {j} heard from every other");
        for (from, bytes) in got {
            let i = index[&from];
            assert!(bytes == pattern(i, j, MIB), "{i}→{j}: 1 MiB byte-exact");
        }
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_mem_nodes_every_pair_connects_and_exchanges_a_mib() {
    let hub = Hub::new();
    let members = mem_cluster(&hub, 20);
    tokio::time::sleep(Duration::from_secs(30)).await;
    all_pairs_exchange(members, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_quic_nodes_every_pair_connects_and_exchanges_a_mib() {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let nodes: Vec<(Node, nodenet_transport::Addr)> = (0..20)
        .map(|i| {
            let id = identity(100 + i);
            let t = QuicTransport::bind(&id, localhost, QuicConfig::default()).unwrap();
            let addr = t.local_addr();
            (build(id, Arc::new(t), i, Duration::from_secs(20)), addr)
        })
        .collect();
    let members = join(nodes);
    // Real time: let the joins and the first self-lookups happen.
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(240), all_pairs_exchange(members, true))
        .await
        .expect("20 QUIC nodes exchange 380 MiB in bounded time");
}

#[tokio::test(start_paused = true)]
async fn connecting_to_an_offline_node_fails_in_bounded_time() {
    let hub = Hub::new();
    let members = mem_cluster(&hub, 8);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let a = &members[1].0;
    let nobody = identity(999).node_id();
    let started = tokio::time::Instant::now();
    let err = a.connect(nobody).await.unwrap_err();
    assert_eq!(
        err,
        ConnectError::Failed {
            target: nobody,
            step: Step::Rendezvous,
            error: StepError::Timeout(Duration::from_secs(3)),
        }
    );
    assert!(started.elapsed() <= Duration::from_secs(4));
    assert!(err.to_string().contains("rendezvous"), "{err}");
    assert!(matches!(
        a.send_direct(nobody, b"x").await,
        Err(DirectSendError::Connect(ConnectError::Failed { .. }))
    ));
    assert_eq!(
        a.connect(a.id()).await.unwrap_err(),
        ConnectError::SelfTarget
    );
}

#[tokio::test(start_paused = true)]
async fn direct_frames_never_transit_a_forwarder() {
    let hub = Hub::new();
    let (i, j) = (3usize, 8usize);
    // Nodes i and j cannot reach each other while the overlay forms: they share no edge.
    hub.partition(identity(3).node_id(), identity(8).node_id());
    let mut members = mem_cluster(&hub, 12);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let target = members[j].0.id();
    assert!(!members[i].0.edges().contains(&target));
    hub.heal(members[i].0.id(), target);
    let conn = members[i].0.connect(target).await.unwrap();
    assert!(members[i].0.edges().contains(&target));
    tokio::time::sleep(Duration::from_millis(100)).await;
    while members[j].1.try_recv().is_some() {}
    let forwarded = |m: &[(Node, nodenet::Deliveries)]| -> u64 {
        m.iter()
            .enumerate()
            .filter(|&(k, _)| k != i && k != j)
            .map(|(_, (n, _))| n.stats().forwarded)
            .sum()
    };
    let before = forwarded(&members);
    for k in 0..200u32 {
        conn.send(&k.to_be_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        forwarded(&members),
        before,
        "no other node forwarded anything"
    );
    let mut got = Vec::new();
    while let Some(d) = members[j].1.try_recv() {
        assert_eq!(d.via, Via::Direct);
        assert_eq!(d.originator, members[i].0.id());
        got.push(u32::from_be_bytes(d.payload.try_into().unwrap()));
    }
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert!(conn.is_open());
    conn.close();
    assert!(!conn.is_open());
}

#[tokio::test(start_paused = true)]
async fn sealed_boxes_cross_the_overlay_and_open_only_at_the_recipient() {
    let hub = Hub::new();
    let mut members = mem_cluster(&hub, 12);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (a, b, c) = (1, 7, 9);
    let b_id = members[b].0.id();
    let secret = b"the vault code is 1234";
    members[a].0.send_sealed(b_id, secret).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = members[b].1.try_recv().expect("the box arrives");
    assert_eq!(d.via, Via::Routed);
    assert!(
        !d.payload.windows(secret.len()).any(|w| w == secret),
        "what the forwarders carried is ciphertext"
    );
    let opened = members[b].0.open_sealed(&d).unwrap();
    assert_eq!(opened.plaintext, secret);
    assert_eq!(opened.sender, members[a].0.id());
    // Opened once only; and nobody else can open it.
    assert!(matches!(
        members[b].0.open_sealed(&d),
        Err(nodenet::OpenError::Replay)
    ));
    assert!(matches!(
        members[c].0.open_sealed(&d),
        Err(nodenet::OpenError::BadSignature)
    ));
    // A box re-sent under another originator's name is refused.
    let mut forged = d;
    forged.originator = members[c].0.id();
    assert!(members[b].0.open_sealed(&forged).is_err());
    assert!(members[b].0.stats().dropped_bad_box >= 2);
    while members[b].1.try_recv().is_some() {}
}

/// A burst of direct frames far past the per-edge forward bucket (burst 1024, and the paused
/// clock refills nothing) all arrive: App frames end at the receiver, they are not relayed,
/// so the relay budget does not apply to them.
#[tokio::test(start_paused = true)]
async fn a_burst_of_direct_frames_is_not_rate_limited() {
    let hub = Hub::new();
    let mut members = mem_cluster(&hub, 6);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (i, j) = (1usize, 4usize);
    let conn = members[i].0.connect(members[j].0.id()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while members[j].1.try_recv().is_some() {}
    const FRAMES: u32 = 4000;
    for k in 0..FRAMES {
        conn.send(&k.to_be_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    while let Some(d) = members[j].1.try_recv() {
        if d.via == Via::Direct {
            got.push(u32::from_be_bytes(d.payload.try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(members[j].0.stats().dropped_rate_limited, 0);
}

/// Many QUIC nodes on loopback share one /24; subnet accounting is off for a loopback-bound
/// node, so the table keeps every peer's address and every node can hold an edge in every
/// populated bucket. (With the caps on, knowledge kept eight addresses per subnet, nodes could
/// not dial into most buckets, and greedy routing died in the holes: a third of rendezvous
/// requests in a 64-node cluster timed out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_nodes_on_loopback_leave_no_routing_holes() {
    const N: u32 = 24;
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let nodes: Vec<(Node, nodenet_transport::Addr)> = (0..N)
        .map(|i| {
            let id = identity(200 + i);
            let config = QuicConfig::default().max_inbound_per_ip(N as usize);
            let t = QuicTransport::bind(&id, localhost, config).unwrap();
            let addr = t.local_addr();
            (build(id, Arc::new(t), i, Duration::from_secs(10)), addr)
        })
        .collect();
    let members = join(nodes);
    let ids: Vec<NodeId> = members.iter().map(|(node, _)| node.id()).collect();
    let holes = || -> Vec<(usize, usize)> {
        let mut holes = Vec::new();
        for (i, (node, _)) in members.iter().enumerate() {
            let me = node.id();
            let held: Vec<usize> = node
                .edges()
                .iter()
                .filter_map(|e| me.bucket_index(e))
                .collect();
            let mut populated: Vec<usize> =
                ids.iter().filter_map(|id| me.bucket_index(id)).collect();
            populated.sort_unstable();
            populated.dedup();
            holes.extend(
                populated
                    .into_iter()
                    .filter(|b| !held.contains(b))
                    .map(|b| (i, b)),
            );
        }
        holes
    };
    // Real time: joins, then self-lookups and fills (ticks of 1 s), for at most 30 s.
    let mut last = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = holes();
        if last.is_empty() {
            break;
        }
    }
    assert!(last.is_empty(), "(node, bucket) without an edge: {last:?}");
    // Every node reaches every other by rendezvous.
    for (a, (node, _)) in members.iter().enumerate() {
        for (b, id) in ids.iter().enumerate().filter(|&(b, _)| b != a).step_by(5) {
            node.rendezvous(*id)
                .await
                .unwrap_or_else(|e| panic!("{a}→{b}: {e}"));
        }
    }
    for (node, _) in &members {
        node.shutdown().await;
    }
}

/// A rendezvous whose answerer is a local optimum toward the asker: the target `b` holds
/// edges to three nodes nearer the asker than the bridge `p`, and those know nobody else.
/// Greedy routing sends all three copies of the Reply into those dead ends; the Reply gets
/// through because it also goes back the way the Hello came (through `p`).
#[tokio::test(start_paused = true)]
async fn an_answer_retraces_its_request_past_a_local_optimum() {
    let pool: Vec<Identity> = (100..400).map(identity).collect();
    let (c, b) = (&pool[0], &pool[1]);
    let dist = |x: &Identity| x.node_id().distance(&c.node_id());
    let farther = dist(b);
    // Three dead ends nearer `c` than `b` is, then a bridge farther than all of them.
    let mut near: Vec<&Identity> = pool[2..].iter().filter(|x| dist(x) < farther).collect();
    near.sort_by_key(|x| dist(x));
    let dead: Vec<&Identity> = near.iter().take(3).copied().collect();
    let worst_dead = dist(dead[2]);
    let p = pool[2..]
        .iter()
        .find(|x| dist(x) > worst_dead && !dead.iter().any(|d| d.node_id() == x.node_id()))
        .expect("a bridge");
    let members: Vec<&Identity> = [c, b, p].into_iter().chain(dead.iter().copied()).collect();
    let allowed = |x: NodeId, y: NodeId| {
        let pair = |u: &Identity, v: &Identity| {
            (x, y) == (u.node_id(), v.node_id()) || (y, x) == (u.node_id(), v.node_id())
        };
        pair(c, p) || pair(b, p) || dead.iter().any(|d| pair(b, d))
    };
    let hub = Hub::new();
    for x in &members {
        for y in &members {
            if x.node_id() != y.node_id() && !allowed(x.node_id(), y.node_id()) {
                hub.partition(x.node_id(), y.node_id());
            }
        }
    }
    let mut nodes = Vec::new();
    for (i, id) in (0u32..).zip(&members) {
        let t = hub.transport_for(id, &format!("n{i}")).unwrap();
        let addr = t.local_addr();
        let node = build((*id).clone(), Arc::new(t), i, Duration::from_secs(3));
        node.spawn();
        nodes.push((node, addr));
    }
    // `c` and `b` join through `p`; the dead ends through `b`.
    let contact = |i: usize| Contact::new(nodes[i].0.id(), vec![nodes[i].1.clone()]);
    nodes[0].0.bootstrap(vec![contact(2)]);
    nodes[1].0.bootstrap(vec![contact(2)]);
    for (node, _) in &nodes[3..] {
        node.bootstrap(vec![contact(1)]);
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(nodes[1].0.edges().len(), 4, "b: p and the three dead ends");
    let coords = nodes[0].0.rendezvous(b.node_id()).await.unwrap();
    assert_eq!(coords.target, b.node_id());
    // The Reply's greedy copies died in the dead ends.
    let dropped: u64 = nodes[3..]
        .iter()
        .map(|(n, _)| n.stats().dropped_local_optimum)
        .sum();
    assert!(dropped >= 1, "{dropped}");
}
