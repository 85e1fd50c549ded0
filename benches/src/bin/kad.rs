//! `kad`: XOR distance, distance comparison and bucket index: ns/op and allocations/op.

use nodenet_benches::{CountingAlloc, JsonLine, XorShift, measure};
use nodenet_kad::NodeId;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    const ITERS: u64 = 5_000_000;
    let mut rng = XorShift::new(1);
    let ids: Vec<NodeId> = (0..1024)
        .map(|_| NodeId::from_bytes(rng.bytes32()))
        .collect();
    let at = |i: u64| &ids[(i % 1024) as usize];

    let (dist_ns, dist_allocs) = measure(ITERS, |i| at(i).distance(at(i + 1)));
    let (cmp_ns, cmp_allocs) = measure(ITERS, |i| at(i).cmp_distance(at(i + 1), at(i + 2)));
    let (bucket_ns, bucket_allocs) = measure(ITERS, |i| at(i).bucket_index(at(i + 1)));
    // Near IDs share long prefixes, so the word loop runs further.
    let near: Vec<NodeId> = ids
        .iter()
        .map(|id| {
            let mut b = id.to_bytes();
            b[..24].fill(0);
            NodeId::from_bytes(b)
        })
        .collect();
    let (near_ns, _) = measure(ITERS, |i| {
        near[(i % 1024) as usize].common_prefix_len(&near[((i + 1) % 1024) as usize])
    });

    JsonLine::new("kad")
        .num("distance_ns_per_op", dist_ns)
        .num("distance_allocs_per_op", dist_allocs)
        .num("cmp_distance_ns_per_op", cmp_ns)
        .num("cmp_distance_allocs_per_op", cmp_allocs)
        .num("bucket_index_ns_per_op", bucket_ns)
        .num("bucket_index_allocs_per_op", bucket_allocs)
        .num("bucket_index_near_ns_per_op", near_ns)
        .print();
}
