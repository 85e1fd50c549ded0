//! Whole clusters of nodes over the in-memory transport, on tokio's paused clock: no sockets,
//! no real time. Built with the public harness, `nodenet::testing::Cluster`, as an
//! application's tests would be (its maintenance runs 5× faster; the rules are the same).

use std::time::Duration;

use nodenet::testing::Cluster;
use nodenet::{Identity, Via};
use nodenet_kad::NodeId;

/// A deterministic identity outside the cluster's own.
fn outsider_identity(n: u32) -> Identity {
    let mut seed = [0x99u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

/// Every node holds at least KMin = 3 outbound edges; the bootstrap node, which everyone
/// dialed, holds them as inbound edges (it has no one left to dial).
fn assert_floor(c: &Cluster) {
    for (i, node) in c.nodes().enumerate() {
        let (out, all) = (node.outbound_edges(), node.edges().len());
        // In a small cluster a node may already hold an edge with every peer (many of them
        // dialed by the peers): then there is no one left to dial.
        let everyone = all + 1 >= c.len();
        if i == 0 {
            assert!(all >= 3, "bootstrap node has {all} edges");
        } else {
            assert!(
                out >= 3 || everyone,
                "{} has {out} outbound edges",
                node.id().short()
            );
        }
    }
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// xorshift for picking pairs.
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }
}

/// Sends `count` messages between random pairs of `alive` members and returns how many
/// arrived, each checked for its originator and payload.
async fn random_sends(c: &mut Cluster, alive: &[usize], count: usize, seed: u64) -> usize {
    let mut pick = Pick(seed);
    let mut expected: Vec<(usize, NodeId, Vec<u8>)> = Vec::new();
    for k in 0..count {
        let from = alive[pick.next(alive.len())];
        let mut to = alive[pick.next(alive.len())];
        while to == from {
            to = alive[pick.next(alive.len())];
        }
        let payload = format!("msg {k} from {from} to {to}").into_bytes();
        c.node(from).send(c.id(to), &payload).unwrap();
        expected.push((to, c.id(from), payload));
        if k % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    settle(3).await;
    let mut got: Vec<Vec<(NodeId, Vec<u8>)>> = (0..c.len()).map(|_| Vec::new()).collect();
    for (i, got) in got.iter_mut().enumerate() {
        while let Some(d) = c.inbox(i).try_recv() {
            assert_eq!(d.via, Via::Routed);
            got.push((d.originator, d.payload));
        }
    }
    let arrived = expected
        .iter()
        .filter(|(to, from, payload)| got[*to].iter().any(|(o, p)| o == from && p == payload))
        .count();
    let total: usize = got.iter().map(Vec::len).sum();
    assert_eq!(
        total, arrived,
        "every delivery was expected, and none twice"
    );
    arrived
}

#[tokio::test(start_paused = true)]
async fn a_hundred_nodes_converge_and_every_send_arrives() {
    let mut c = Cluster::builder(100).build();
    c.settled(Duration::from_secs(60)).await.unwrap();
    settle(30).await;
    assert_floor(&c);
    // Every node is reachable: a message from node 1 to each of the others arrives.
    let all: Vec<usize> = (0..c.len()).collect();
    for to in 2..c.len() {
        c.node(1).send(c.id(to), b"ping").unwrap();
    }
    settle(2).await;
    for i in 2..c.len() {
        let d = c.inbox(i).try_recv().expect("reachable");
        assert_eq!(d.payload, b"ping");
    }
    // Multi-hop, multi-path, de-duplicated.
    assert_eq!(random_sends(&mut c, &all, 500, 7).await, 500);
    let forwarded: u64 = c.nodes().map(|n| n.stats().forwarded).sum();
    let duplicates: u64 = c.nodes().map(|n| n.stats().dropped_duplicate).sum();
    assert!(
        forwarded > 0 && duplicates > 0,
        "copies travel several hops and converge"
    );
}

#[tokio::test(start_paused = true)]
async fn sends_survive_a_fifth_of_the_nodes_dying_silently() {
    let mut c = Cluster::builder(100).build();
    c.settled(Duration::from_secs(60)).await.unwrap();
    settle(30).await;
    // Every fifth node (not the bootstrap) vanishes: no Leave, its transport just stops.
    let dead: Vec<usize> = (1..c.len()).filter(|i| i % 5 == 0).collect();
    for &i in &dead {
        c.kill(i);
    }
    // Failure detection and replacement take one dead-edge period (75 s / 5) plus refills.
    settle(40).await;
    let alive: Vec<usize> = (0..c.len()).filter(|i| !dead.contains(i)).collect();
    for &i in &alive[1..] {
        assert!(
            c.node(i).outbound_edges() >= 3,
            "node {i} refilled its floor"
        );
    }
    let arrived = random_sends(&mut c, &alive, 500, 11).await;
    assert!(arrived * 100 >= 500 * 99, "only {arrived}/500 arrived");
}

/// Cuts a settled 30-node cluster in two (even and odd indices, random in the keyspace) for
/// `cut` seconds, checks nothing crosses it, heals it, gives maintenance `after` seconds and
/// returns how many of 200 random sends arrive.
async fn cut_and_heal(cut: u64, after: u64) -> usize {
    cut_and_heal_by(cut, after, |_, i| i % 2 == 0).await
}

/// Cuts the cluster in two (`left(id, index)` picks a side), checks that nothing crosses,
/// heals the cut and counts, of 200 random sends after `after` seconds, those that arrive.
async fn cut_and_heal_by(cut: u64, after: u64, left: impl Fn(NodeId, usize) -> bool) -> usize {
    let mut c = Cluster::builder(30).build();
    c.settled(Duration::from_secs(40)).await.unwrap();
    settle(20).await;
    let (left, right): (Vec<usize>, Vec<usize>) = (0..30).partition(|&i| left(c.id(i), i));
    assert!(!left.is_empty() && !right.is_empty());
    let (a, b) = (left[0], right[0]);
    let pairs: Vec<(usize, usize)> = left
        .iter()
        .flat_map(|&a| right.iter().map(move |&b| (a, b)))
        .collect();
    for &(a, b) in &pairs {
        c.partition(a, b);
    }
    // Across the cut nothing arrives.
    c.node(a).send(c.id(b), b"across").ok();
    settle(cut).await;
    assert!(c.inbox(b).try_recv().is_none());
    for &(a, b) in &pairs {
        c.heal(a, b);
    }
    // Maintenance redials across the healed cut.
    settle(after).await;
    let all: Vec<usize> = (0..30).collect();
    for i in 0..30 {
        while c.inbox(i).try_recv().is_some() {}
    }
    random_sends(&mut c, &all, 200, 3).await
}

#[tokio::test(start_paused = true)]
async fn a_partition_heals() {
    assert_eq!(cut_and_heal(30, 60).await, 200);
}

/// A cut of 30 minutes, during which each failed dial across it evicts its contact: once
/// healed, the overlay must still find itself whole again.
#[tokio::test(start_paused = true)]
async fn a_long_partition_heals() {
    assert_eq!(cut_and_heal(1800, 600).await, 200);
}

/// A cut along the keyspace: the two halves of the id space (first bit 0 or 1) lose each
/// other for 30 minutes, while each half's neighbourhoods stay whole. Every node's farthest
/// bucket loses its edges, and each failed dial across evicts a contact; once healed,
/// greedy routing needs a finger across again in every node's table, found only through the
/// contacts that survived the cut (89 of 200 sends arrived when a failed dial could evict a
/// bucket's last one).
#[tokio::test(start_paused = true)]
async fn a_partition_along_the_keyspace_heals() {
    let first_bit = |id: NodeId, _| id.leading_zeros() > 0;
    assert_eq!(cut_and_heal_by(1800, 600, first_bit).await, 200);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_flood_is_shed_by_originator_while_traffic_flows() {
    let mut c = Cluster::builder(30).build();
    c.settled(Duration::from_secs(40)).await.unwrap();
    settle(20).await;
    let target = c.id(10);
    // The flooder fans each lookup over several edges; the limit follows the signed
    // originator, so spreading does not dodge it.
    for _ in 0..400 {
        c.node(20).lookup(target);
    }
    let all: Vec<usize> = (0..30).filter(|&i| i != 20).collect();
    let arrived = random_sends(&mut c, &all, 100, 5).await;
    assert_eq!(arrived, 100, "everyone else's traffic flows");
    // The lookups converge on the target, which answers each originator within its budget
    // (burst 32, then 16/s) and counts the rest. Each lookup travels as three copies; the
    // flooder's own edge queues shed part of the burst before it leaves (counted there).
    let target_stats = c.node(10).stats();
    let flooder = c.node(20).stats();
    assert!(
        target_stats.dropped_rate_limited >= 100,
        "the flood is shed at its destination: {target_stats:?}"
    );
    assert!(
        target_stats.dropped_rate_limited + flooder.dropped_queue_full >= 400,
        "and at its source: {flooder:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn proof_of_work_gates_edges_and_bootstrap_works_at_difficulty() {
    // Bootstrap contacts are NodeId + address only: the keys come from the handshake.
    let mut c = Cluster::builder(12).difficulty(8).build();
    c.settled(Duration::from_secs(40)).await.unwrap();
    settle(20).await;
    assert_floor(&c);
    let all: Vec<usize> = (0..12).collect();
    assert_eq!(random_sends(&mut c, &all, 50, 9).await, 50);
    // A node below the difficulty gets no edge (it demands none itself).
    let weak = (1000u32..)
        .map(outsider_identity)
        .find(|id| id.node_id().leading_zeros() < 8)
        .unwrap();
    let outsider = c.join(weak, |b| b.min_difficulty(0));
    settle(20).await;
    assert!(c.node(outsider).edges().is_empty());
    assert!(
        c.node(0).stats().dropped_sub_pow > 0,
        "the refusal is counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_cannot_be_dialed_still_routes() {
    let mut c = Cluster::builder(20).build();
    let nat_id = outsider_identity(500);
    c.hub().set_reachable(nat_id.node_id(), false);
    let n = c.join(nat_id, |b| b.advertise(Vec::new()));
    c.settled(Duration::from_secs(60)).await.unwrap();
    settle(30).await;
    let all: Vec<usize> = (0..c.len()).collect();
    assert_eq!(random_sends(&mut c, &all, 300, 13).await, 300);
    let nat = c.node(n);
    assert!(nat.outbound_edges() >= 3);
    assert_eq!(
        nat.edges().len(),
        nat.outbound_edges(),
        "it never accepted an inbound edge"
    );
    assert!(nat.stats().forwarded > 0, "it carried other nodes' traffic");
}

#[tokio::test(start_paused = true)]
async fn a_graceful_leave_is_noticed_at_once() {
    let c = Cluster::builder(15).build();
    c.settled(Duration::from_secs(40)).await.unwrap();
    settle(20).await;
    let leaver = c.id(7);
    let neighbours: Vec<usize> = (0..15)
        .filter(|&i| i != 7 && c.node(i).edges().contains(&leaver))
        .collect();
    assert!(!neighbours.is_empty());
    c.node(7).shutdown().await;
    // Far less than the dead-edge timeout: the Leave itself drops the edge.
    settle(1).await;
    for i in neighbours {
        assert!(
            !c.node(i).edges().contains(&leaver),
            "node {i} still holds the edge"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_isolated_node_drops_out_and_finds_its_way_back() {
    let mut c = Cluster::builder(12).build();
    c.settled(Duration::from_secs(40)).await.unwrap();
    let lone = c.id(5);
    c.isolate(5);
    settle(90).await;
    assert_eq!(
        c.node(5).edges(),
        Vec::new(),
        "the isolated node kept an edge"
    );
    for i in (0..12).filter(|&i| i != 5) {
        assert!(!c.node(i).edges().contains(&lone), "node {i} kept its edge");
    }
    c.node(0).send(lone, b"anyone?").unwrap();
    settle(5).await;
    assert!(c.inbox(5).try_recv().is_none(), "mail crossed the cut");
    c.rejoin(5);
    c.settled(Duration::from_secs(120)).await.unwrap();
    c.node(0).send(lone, b"welcome back").unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), c.inbox(5).recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.payload, b"welcome back");
}

#[tokio::test(start_paused = true)]
async fn a_full_delivery_queue_drops_and_counts() {
    let mut c = Cluster::builder(3).build();
    // A node with a one-slot queue that nobody reads.
    let tiny = c.join(outsider_identity(78), |b| b.delivery_buffer(1));
    c.settled(Duration::from_secs(30)).await.unwrap();
    for k in 0..5u8 {
        c.node(0).send(c.id(tiny), &[k]).unwrap();
    }
    settle(2).await;
    let stats = c.node(tiny).stats();
    assert!(stats.dropped_deliver_full >= 4, "{stats:?}");
    assert_eq!(stats.delivered, 1, "the one slot took one");
}
