//! `decide`: one greedy forwarding decision on a full table (20 contacts in every populated
//! bucket, 32 live edges: 16 siblings and 16 fingers): ns/op and allocations/op. Also the
//! multi-path first-hop choice and the knowledge table's closest-20 query for comparison.

use nodenet_benches::{CountingAlloc, JsonLine, XorShift, measure};
use nodenet_kad::NodeId;
use nodenet_routing::{Candidates, Contact, Decision, Edges, Knowledge, Time, decide, first_hops};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let mut rng = XorShift::new(3);
    let me = NodeId::from_bytes(rng.bytes32());
    let mut knowledge = Knowledge::new(me, 0);
    let mut population: Vec<NodeId> = Vec::new();
    for _ in 0..200_000 {
        let id = NodeId::from_bytes(rng.bytes32());
        knowledge.observe(&Contact::new(id, vec![]), Time(0));
        population.push(id);
    }
    population.sort_by(|a, b| me.cmp_distance(a, b));
    let mut edges = Edges::new(me);
    for id in population.iter().take(16) {
        edges.add(*id, true, None, Time(0));
    }
    // Fingers: up to two known contacts from each populated bucket, farthest buckets first.
    for b in 0..256 {
        let picks: Vec<NodeId> = knowledge
            .iter()
            .filter(|c| me.bucket_index(&c.id) == Some(b) && !edges.contains(&c.id))
            .take(2)
            .map(|c| c.id)
            .collect();
        for id in picks {
            if edges.len() < 32 {
                edges.add(id, true, None, Time(0));
            }
        }
    }
    assert_eq!(edges.len(), 32, "a table of 32 live edges");
    let targets: Vec<NodeId> = (0..1024)
        .map(|_| NodeId::from_bytes(rng.bytes32()))
        .collect();

    let mut forwarded = 0u64;
    let mut candidates = Candidates::new();
    let (decide_ns, decide_allocs) = measure(5_000_000, |i| {
        let target = &targets[(i % 1024) as usize];
        let d = decide(&me, &edges, target, 16, |_| false, &mut candidates);
        if matches!(d, Decision::Forward { .. }) {
            forwarded += 1;
        }
        d
    });
    let (hops_ns, hops_allocs) = measure(5_000_000, |i| {
        first_hops(&edges, &targets[(i % 1024) as usize])
    });
    let (closest_ns, _) = measure(50_000, |i| {
        knowledge.closest(&targets[(i % 1024) as usize], 20).len()
    });

    JsonLine::new("decide")
        .num("ns_per_op", decide_ns)
        .num("allocs_per_op", decide_allocs)
        .num("live_edges", edges.len() as f64)
        .num("knowledge_contacts", knowledge.len() as f64)
        .num("forward_fraction", forwarded as f64 / 5_001_000.0)
        .num("first_hops_ns_per_op", hops_ns)
        .num("first_hops_allocs_per_op", hops_allocs)
        .num("knowledge_closest20_ns_per_op", closest_ns)
        .print();
}
