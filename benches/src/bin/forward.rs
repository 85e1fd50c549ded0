//! `forward`: one routed frame in on one edge and out on another through a node's decision
//! core, as the driver calls it: parse, per-edge rate limit, the originator's proof-of-work
//! (difficulty 16, a BLAKE2b per hop), freshness, greedy decision, TTL patched in place.
//! ns/frame and allocations/frame. The frame is forwarded from the buffer it arrived in; the
//! driver then hands that same buffer to the next edge.

use std::time::Duration;

use nodenet::{Core, CoreConfig, Handled, Now};
use nodenet_benches::{CountingAlloc, JsonLine, allocations};
use nodenet_identity::Identity;
use nodenet_pow::Solver;
use nodenet_routing::Time;
use nodenet_routing::msg::{self, MsgFields};
use nodenet_wire::{Addr, FrameType};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const DIFFICULTY: u32 = 16;

fn minted(n: u32) -> Identity {
    let seeds = (0u64..).map(move |k| {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&n.to_be_bytes());
        s[4..12].copy_from_slice(&k.to_be_bytes());
        s
    });
    Solver::new(DIFFICULTY)
        .and_then(|s| {
            s.solve_seeds(seeds)
                .ok_or(nodenet_pow::SolveError::Cancelled)
        })
        .map(|(_, id)| id)
        .unwrap_or_else(|_| std::process::exit(1))
}

fn main() {
    let (origin, me, next) = (minted(1), minted(2), minted(3));
    let mut config = CoreConfig::default();
    config.difficulty = DIFFICULTY;
    let mut core = Core::new(me, config, nodenet::CoreRng::deterministic(1));
    let unix = 1_700_000_000_000_000_000i64;
    let at = |t: Time| Now {
        mono: t,
        // The monotonic clock advances (refilling the rate limiter); the wall clock stays
        // put so the envelope stays fresh.
        unix_ns: unix,
    };
    let addr = Addr::new("sim", "peer");
    let (from, to) = (origin.node_id(), next.node_id());
    core.on_edge_up(at(Time(0)), from, Some(origin.ed_public()), false, &addr)
        .ok();
    core.on_edge_up(at(Time(0)), to, Some(next.ed_public()), true, &addr)
        .ok();
    while core.poll_action().is_some() {}

    // A Route frame from `origin` to `next`, arriving at us from `origin`.
    let payload = [0x42u8; 200];
    let ed = origin.ed_public();
    let sig = msg::sign(&origin, FrameType::ROUTE, &to, unix, &payload);
    let fields = MsgFields {
        target: to,
        ttl: 16,
        ed_pub: &ed,
        sent: unix,
        avoid: &[],
        payload: &payload,
        sig: &sig,
    };
    let mut template = vec![0u8; 512];
    let n = fields
        .encode_frame(FrameType::ROUTE, &mut template)
        .unwrap_or(0);
    template.truncate(n);
    let mut buf = template.clone();

    let step = Duration::from_millis(2); // within the 512/s per-edge forward budget
    let mut t = Time(0);
    let mut forwarded = 0u64;
    let mut run = |frames: u64, core: &mut Core, t: &mut Time| {
        for _ in 0..frames {
            *t = t.after(step);
            buf.copy_from_slice(&template);
            if let Handled::Forward(c) = core.on_frame(at(*t), from, &addr, &mut buf) {
                forwarded += u64::from(c.as_slice().first() == Some(&to));
            }
            while core.poll_action().is_some() {}
        }
    };
    run(10_000, &mut core, &mut t);
    const FRAMES: u64 = 500_000;
    let before = allocations();
    let start = std::time::Instant::now();
    run(FRAMES, &mut core, &mut t);
    let elapsed = start.elapsed();
    let allocs = allocations() - before;
    assert!(
        forwarded >= FRAMES,
        "every frame must be forwarded: {:?}",
        core.stats()
    );
    JsonLine::new("forward")
        .num("ns_per_frame", elapsed.as_nanos() as f64 / FRAMES as f64)
        .num("allocs_per_frame", allocs as f64 / FRAMES as f64)
        .num("frame_bytes", template.len() as f64)
        .num("difficulty", f64::from(DIFFICULTY))
        .print();
}
