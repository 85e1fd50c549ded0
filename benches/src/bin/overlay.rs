//! `overlay`: delivery, hops and cost of `send` in a simulated N-node overlay.
//!
//! `cargo run --release -p nodenet-benches --bin overlay -- --nodes N --sends M --dead-fraction F`
//!
//! N decision cores run in the discrete-event simulator (`nodenet::sim`): 10 ms links, the
//! reference's maintenance timers. The overlay converges for `--converge` simulated seconds
//! (default 300); then a fraction F of the nodes dies without a word and maintenance runs for
//! `--repair` seconds (default 180) before M sends between random live pairs.

use std::time::{Duration, Instant};

use nodenet::CoreConfig;
use nodenet::sim::Sim;
use nodenet_benches::{JsonLine, XorShift};
use nodenet_identity::Identity;

fn main() {
    let mut nodes = 1000usize;
    let mut sends = 1000usize;
    let mut dead = 0.0f64;
    let mut converge = 300u64;
    let mut repair = 180u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--nodes" => nodes = v.parse().unwrap_or(nodes),
            "--sends" => sends = v.parse().unwrap_or(sends),
            "--dead-fraction" => dead = v.parse().unwrap_or(dead),
            "--converge" => converge = v.parse().unwrap_or(converge),
            "--repair" => repair = v.parse().unwrap_or(repair),
            _ => {
                eprintln!(
                    "usage: overlay [--nodes N] [--sends M] [--dead-fraction F] [--converge S] [--repair S]"
                );
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    let mut rng = XorShift::new(42);
    let ids: Vec<Identity> = (0..nodes)
        .map(|_| Identity::from_seed(&rng.bytes32()))
        .collect();
    let mut sim = Sim::new(ids, &CoreConfig::default(), Duration::from_millis(10), 7);
    sim.run_for(Duration::from_secs(converge));

    let mut killed = 0usize;
    if dead > 0.0 {
        for i in 1..nodes {
            if (rng.next_u64() % 10_000) as f64 / 10_000.0 < dead {
                sim.kill(i);
                killed += 1;
            }
        }
        sim.run_for(Duration::from_secs(repair));
    }
    let live: Vec<usize> = (0..nodes).filter(|&i| sim.is_alive(i)).collect();
    let mut launched = 0u64;
    let mut expected: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    for k in 0..sends {
        let from = live[(rng.next_u64() % live.len() as u64) as usize];
        let mut to = live[(rng.next_u64() % live.len() as u64) as usize];
        while to == from {
            to = live[(rng.next_u64() % live.len() as u64) as usize];
        }
        if sim.send(from, to, format!("send {k}").as_bytes()).is_ok() {
            launched += 1;
            *expected.entry(to).or_default() += 1;
        }
        // Spread the sends over simulated time, as real traffic would be.
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(10));

    let sum = |f: &dyn Fn(&nodenet::Stats) -> u64| {
        (0..nodes)
            .filter(|&i| sim.is_alive(i))
            .map(|i| f(&sim.core(i).stats()))
            .sum::<u64>()
    };
    let (local_optimum, ttl, rate_limited, stale) = (
        sum(&|s| s.dropped_local_optimum),
        sum(&|s| s.dropped_ttl),
        sum(&|s| s.dropped_rate_limited),
        sum(&|s| s.dropped_stale),
    );
    let edges: usize = (0..nodes)
        .filter(|&i| sim.is_alive(i))
        .map(|i| sim.core(i).edges().len())
        .sum();
    let report = sim.report();
    // Diagnostics on stderr: the targets that missed messages, and how connected they are.
    for (&to, &want) in &expected {
        let got = report.delivered_at.get(&to).copied().unwrap_or(0);
        if got < want {
            let core = sim.core(to);
            eprintln!(
                "missed: node {to} got {got}/{want}, edges {} (outbound {}), knows {}",
                core.edges().len(),
                core.edges().outbound(),
                core.knowledge().len()
            );
            let target = core.id();
            for (at, _) in report.stuck.iter().filter(|(_, t)| *t == target).take(3) {
                let x = sim.core(*at);
                let cpl = x.id().common_prefix_len(&target);
                let in_bucket = x
                    .edges()
                    .iter()
                    .filter(|e| x.id().common_prefix_len(&e.id) == cpl)
                    .count();
                eprintln!(
                    "  stuck at node {at}: prefix {cpl} with the target, knows target {}, edges {} ({in_bucket} in that bucket), knows {} ({} in that bucket)",
                    x.knowledge().get(&target).is_some(),
                    x.edges().len(),
                    x.knowledge().len(),
                    x.knowledge().bucket(cpl as usize).count()
                );
            }
        }
    }
    let mut hops = report.hops.clone();
    hops.sort_unstable();
    let pct = |p: f64| {
        hops.get(((hops.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let delivered = report.delivered as f64;
    JsonLine::new("overlay")
        .num("nodes", nodes as f64)
        .num("sends", sends as f64)
        .num("dead_fraction", dead)
        .num("killed", killed as f64)
        .num("launched", launched as f64)
        .num("delivery_rate", delivered / sends as f64)
        .num("hops_p50", f64::from(pct(0.5)))
        .num("hops_p99", f64::from(pct(0.99)))
        .num(
            "frames_per_delivery",
            report.route_frames as f64 / delivered.max(1.0),
        )
        .num("mean_edges", edges as f64 / live.len() as f64)
        .num("drops_local_optimum", local_optimum as f64)
        .num("drops_ttl", ttl as f64)
        .num("drops_rate_limited", rate_limited as f64)
        .num("drops_stale", stale as f64)
        .num("wall_s", started.elapsed().as_secs_f64())
        .num("peak_rss_mib", peak_rss_mib())
        .print();
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
