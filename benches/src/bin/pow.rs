//! `pow`: seeds ground per second per core (the minting rate) and the cost of verifying.

use std::num::NonZeroUsize;
use std::time::Instant;

use nodenet_benches::{CountingAlloc, JsonLine, XorShift, measure};
use nodenet_identity::node_id_from_seed;
use nodenet_kad::NodeId;
use nodenet_pow::{CancelToken, Solver, verify};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let mut rng = XorShift::new(7);

    // One core: derivations per second through the minting fast path.
    const SEEDS: u64 = 20_000;
    let seeds: Vec<[u8; 32]> = (0..SEEDS).map(|_| rng.bytes32()).collect();
    let start = Instant::now();
    let mut zeros = 0u32;
    for s in &seeds {
        zeros = zeros.max(node_id_from_seed(s).leading_zeros());
    }
    let one_core = SEEDS as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box(zeros);

    // All cores, through the real solver, for a fixed time (an unmeetable difficulty).
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let token = CancelToken::new();
    let solver = Solver::new(255).map(|s| s.threads(threads).cancel_token(token.clone()));
    let Ok(solver) = solver else { return };
    let secs = 3.0;
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| solver.solve(&mut rand_core::UnwrapErr(getrandom::SysRng)));
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        token.cancel();
    });
    let all_cores = solver.attempts() as f64 / start.elapsed().as_secs_f64();

    let ids: Vec<NodeId> = (0..1024)
        .map(|_| NodeId::from_bytes(rng.bytes32()))
        .collect();
    let (verify_ns, verify_allocs) = measure(10_000_000, |i| verify(&ids[(i % 1024) as usize], 16));

    JsonLine::new("pow")
        .num("hashes_per_sec_per_core", one_core)
        .num("hashes_per_sec_all_cores", all_cores)
        .num("threads", threads.get() as f64)
        .num("verify_ns_per_op", verify_ns)
        .num("verify_allocs_per_op", verify_allocs)
        .print();
}
