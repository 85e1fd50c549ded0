//! `overlay`: delivery, hops and cost of `send` in a simulated N-node overlay.
//!
//! `cargo run --release -p nodenet-benches --bin overlay -- --nodes N --sends M --dead-fraction F
//!   [--nat-mix public=40,port_restricted=25,full_cone=5,addr_restricted=5,symmetric=15,double=10]
//!   [--connects C] [--seed S]`
//!
//! N decision cores run in the discrete-event simulator (`nodenet::sim`): 10 ms links, the
//! reference's maintenance timers, each node behind a NAT drawn from `--nat-mix` (percentages
//! by kind: public, full_cone, addr_restricted, port_restricted, masquerade, symmetric,
//! double; `--nat-mix public=100` is the all-public overlay). The overlay converges for
//! `--converge` simulated seconds (default 300); then a fraction F of the nodes dies without a
//! word and maintenance runs for `--repair` seconds (default 180); then C connects between
//! random live pairs (one every 50 ms, each the full cascade), then M sends between random
//! live pairs. Connect figures: success, the path mix overall and by NAT pair, connect time
//! in simulated time, and relayed connects per relay. A relayed connect is followed, as on a
//! node, by a birthday punch and its upgrade schedule (a try 10 s after, then 60 s and 300 s
//! after the try before ended, those the run still holds): `path_birthday` and `path_punched` count those a
//! try replaced, `upgrade_tries` the tries that ran and `upgraded` the relayed connects one
//! replaced.
//!
//! On stderr: every target that missed a message, with its nearest nodes, its closest
//! edges, its nearest public nodes and where its messages got stuck (who knows whom, and by
//! how many leading bits); `DEBUG_NODE=i,j` adds those nodes' counters. Each minute of the
//! convergence, how many nodes hold no edge to their closest public node (public ones and
//! ones behind NAT apart), and at its end each such public pair: who knows either with an
//! address, and how close to the other the closest of those is. The JSON line counts them
//! at the end of the run (`unmet_closest_public`, `unmet_closest_public_natted`).

use std::time::{Duration, Instant};

use nodenet::CoreConfig;
use nodenet::sim::{NatKind, Sim};
use nodenet_benches::{JsonLine, XorShift};
use nodenet_identity::Identity;

fn main() {
    let mut nodes = 1000usize;
    let mut sends = 1000usize;
    let mut dead = 0.0f64;
    let mut converge = 300u64;
    let mut repair = 180u64;
    let mut connects = 0usize;
    let mut seed = 7u64;
    let mut mix = String::from(
        "public=40,port_restricted=25,full_cone=5,addr_restricted=5,symmetric=15,double=10",
    );
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--nodes" => nodes = v.parse().unwrap_or(nodes),
            "--sends" => sends = v.parse().unwrap_or(sends),
            "--dead-fraction" => dead = v.parse().unwrap_or(dead),
            "--converge" => converge = v.parse().unwrap_or(converge),
            "--repair" => repair = v.parse().unwrap_or(repair),
            "--connects" => connects = v.parse().unwrap_or(connects),
            "--seed" => seed = v.parse().unwrap_or(seed),
            "--nat-mix" => mix = v,
            _ => {
                eprintln!(
                    "usage: overlay [--nodes N] [--sends M] [--dead-fraction F] [--converge S] [--repair S] [--nat-mix kind=pct,...] [--connects C] [--seed S]"
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
    let Some(weights) = parse_mix(&mix) else {
        eprintln!(
            "--nat-mix: kind=percent pairs, kinds {:?}",
            NatKind::ALL.map(NatKind::name)
        );
        std::process::exit(2);
    };
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let kinds: Vec<NatKind> = (0..nodes)
        .map(|_| {
            let mut x = rng.next_u64() % total.max(1);
            for &(k, w) in &weights {
                if x < w {
                    return k;
                }
                x -= w;
            }
            NatKind::Public
        })
        .collect();
    let mut sim = Sim::with_nats(
        ids,
        &CoreConfig::default(),
        Duration::from_millis(10),
        seed,
        &kinds,
    );
    // Convergence on stderr: the public nodes that have not met their closest public node,
    // each minute.
    let mut elapsed = 0u64;
    while elapsed + 60 < converge {
        sim.run_for(Duration::from_secs(60));
        elapsed += 60;
        let (public, natted) = unmet_closest_public(&sim, nodes, false);
        eprintln!("unmet closest public after {elapsed} s: {public} public, {natted} behind NAT");
    }
    sim.run_for(Duration::from_secs(converge - elapsed));
    let (public, natted) = unmet_closest_public(&sim, nodes, true);
    eprintln!("unmet closest public after {converge} s: {public} public, {natted} behind NAT");

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
    // Rendezvous counters before the connects, to tell on stderr where a failed one ended.
    let rdv = |sim: &Sim, i: usize| {
        let s = sim.core(i).stats();
        (s.rendezvous_answered, s.dropped_unsolicited_reply)
    };
    let rdv_before: Vec<(u64, u64)> = (0..nodes).map(|i| rdv(&sim, i)).collect();
    for _ in 0..connects {
        let from = live[(rng.next_u64() % live.len() as u64) as usize];
        let mut to = live[(rng.next_u64() % live.len() as u64) as usize];
        while to == from {
            to = live[(rng.next_u64() % live.len() as u64) as usize];
        }
        sim.connect(from, to);
        sim.run_for(Duration::from_millis(50));
    }
    // Every cascade ends within its timeouts (10 s rendezvous, 5 s punch, 3 x 7 s relays).
    sim.run_for(Duration::from_secs(if connects > 0 { 60 } else { 0 }));
    // Failed rendezvous on stderr: did the target answer (its counter moved), did the answer
    // come back late, how well known the target is, and where its Hellos stopped.
    for r in &sim.report().connects {
        if !r
            .failure
            .as_deref()
            .is_some_and(|f| f.starts_with("rendezvous"))
        {
            continue;
        }
        let (c, t) = (r.caller, r.target);
        let target_id = sim.core(t).id();
        let knowers = (0..nodes)
            .filter(|&j| j != t && sim.core(j).knowledge().get(&target_id).is_some())
            .count();
        eprintln!(
            "rendezvous failed: {c} ({}) -> {t} ({}): target answered {} times, caller had {} late answers; caller edges {}, target edges {}, known to {knowers} nodes",
            r.from.name(),
            r.to.name(),
            rdv(&sim, t).0 - rdv_before[t].0,
            rdv(&sim, c).1 - rdv_before[c].1,
            sim.core(c).edges().len(),
            sim.core(t).edges().len(),
        );
        let mut stops: Vec<usize> = sim
            .report()
            .stuck_hellos
            .iter()
            .filter(|(_, id)| *id == target_id)
            .map(|(at, _)| *at)
            .collect();
        stops.sort_unstable();
        stops.dedup();
        let mut tedges: Vec<_> = sim.core(t).edges().iter().map(|e| e.id).collect();
        tedges.sort_by_key(|e| e.distance(&target_id));
        for at in stops.iter().take(4) {
            let x = sim.core(*at);
            let mut xe: Vec<_> = x.edges().iter().map(|e| e.id).collect();
            xe.sort_by_key(|e| e.distance(&target_id));
            let edge_knows = xe
                .iter()
                .filter_map(|e| (0..nodes).find(|&j| sim.core(j).id() == *e))
                .filter(|&j| sim.core(j).knowledge().get(&target_id).is_some())
                .count();
            eprintln!(
                "  hello stopped at {at} ({}): prefix {}, knows target {:?}, edges {} (closest at prefix {:?}), {edge_knows} edges know the target; target's own closest edges at prefix {:?}",
                sim.nat(*at).name(),
                x.id().common_prefix_len(&target_id),
                x.knowledge().get(&target_id).map(|c| c.addrs.len()),
                xe.len(),
                xe.iter()
                    .take(3)
                    .map(|e| e.common_prefix_len(&target_id))
                    .collect::<Vec<_>>(),
                tedges
                    .iter()
                    .take(3)
                    .map(|e| e.common_prefix_len(&target_id))
                    .collect::<Vec<_>>(),
            );
        }
        if stops.is_empty() {
            eprintln!("  no hello stopped short (lost on a link, or shed)");
        }
    }
    // Failed relay steps on stderr: the relays found, and how each try ended.
    for r in &sim.report().connects {
        if r.failure.as_deref().is_some_and(|f| f.starts_with("relay")) {
            let t = sim.core(r.target);
            eprintln!(
                "relay failed: {} ({}) -> {} ({}, edges {}, outbound {}, refused inbound full {}): {}",
                r.caller,
                r.from.name(),
                r.target,
                r.to.name(),
                t.edges().len(),
                t.edges().outbound(),
                t.stats().dropped_inbound_full,
                r.relay_steps.join("; ")
            );
        }
    }
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
    if let Ok(v) = std::env::var("DEBUG_NODE") {
        for i in v.split(',').filter_map(|x| x.parse::<usize>().ok()) {
            eprintln!(
                "node {i} ({}): {:?}",
                sim.nat(i).name(),
                sim.core(i).stats()
            );
            eprintln!(
                "  knowledge {:?} edges {:?}",
                sim.core(i).knowledge().stats(),
                sim.core(i).edges().len()
            );
        }
    }
    // Diagnostics on stderr: the targets that missed messages, and how connected they are.
    for (&to, &want) in &expected {
        let got = report.delivered_at.get(&to).copied().unwrap_or(0);
        if got < want {
            let core = sim.core(to);
            eprintln!(
                "missed: node {to} ({}) got {got}/{want}, edges {} (outbound {}), knows {}",
                sim.nat(to).name(),
                core.edges().len(),
                core.edges().outbound(),
                core.knowledge().len()
            );
            let target = core.id();
            let mut near: Vec<usize> = (0..nodes).filter(|&j| j != to).collect();
            near.sort_by_key(|&j| sim.core(j).id().distance(&target));
            for &j in near.iter().take(4) {
                let o = sim.core(j);
                eprintln!(
                    "  near {j} ({}): prefix {}, target knows it {:?}, it knows target {:?}, edge {}",
                    sim.nat(j).name(),
                    o.id().common_prefix_len(&target),
                    core.knowledge().get(&o.id()).map(|c| c.addrs.len()),
                    o.knowledge().get(&target).map(|c| c.addrs.len()),
                    core.edges().contains(&o.id()),
                );
            }
            let mut tedges: Vec<_> = core.edges().iter().map(|e| e.id).collect();
            tedges.sort_by_key(|e| e.distance(&target));
            eprintln!(
                "  target's closest edges: {:?}",
                tedges
                    .iter()
                    .take(4)
                    .map(|e| e.common_prefix_len(&target))
                    .collect::<Vec<_>>()
            );
            let publics: Vec<usize> = near
                .iter()
                .copied()
                .filter(|&j| sim.nat(j) == NatKind::Public)
                .take(4)
                .collect();
            eprintln!(
                "  closest public nodes: {:?}",
                publics
                    .iter()
                    .map(|&j| (
                        j,
                        sim.core(j).id().common_prefix_len(&target),
                        core.edges().contains(&sim.core(j).id()),
                        core.knowledge().get(&sim.core(j).id()).is_some()
                    ))
                    .collect::<Vec<_>>()
            );
            // Who could have told the target of its closest public node, had it asked?
            if let Some(&p) = publics.first() {
                let pid = sim.core(p).id();
                let tedge_ids: Vec<_> = core.edges().iter().map(|e| e.id).collect();
                let knowers = tedge_ids
                    .iter()
                    .filter_map(|e| (0..nodes).find(|&j| sim.core(j).id() == *e))
                    .filter(|&j| sim.core(j).knowledge().get(&pid).is_some())
                    .count();
                let pc = sim.core(p);
                let mut pe: Vec<_> = pc.edges().iter().map(|e| e.id).collect();
                pe.sort_by_key(|e| e.distance(&target));
                eprintln!(
                    "  closest public {p}: known to {knowers} of the target's {} edges, knows {} ({} at prefix >= 10 with the target), its closest edges to target {:?}",
                    tedge_ids.len(),
                    pc.knowledge().len(),
                    near.iter()
                        .filter(|&&j| sim.core(j).id().common_prefix_len(&target) >= 10
                            && pc.knowledge().get(&sim.core(j).id()).is_some())
                        .count(),
                    pe.iter()
                        .take(4)
                        .map(|e| e.common_prefix_len(&target))
                        .collect::<Vec<_>>()
                );
            }
            for (at, _) in report.stuck.iter().filter(|(_, t)| *t == target).take(1) {
                let x = sim.core(*at);
                let mut xe: Vec<_> = x.edges().iter().map(|e| e.id).collect();
                xe.sort_by_key(|e| e.distance(&target));
                eprintln!(
                    "  stuck's closest edges to target: {:?}",
                    xe.iter()
                        .take(4)
                        .map(|e| (e.common_prefix_len(&target), core.edges().contains(e)))
                        .collect::<Vec<_>>()
                );
            }
            for (at, _) in report.stuck.iter().filter(|(_, t)| *t == target).take(3) {
                let x = sim.core(*at);
                let cpl = x.id().common_prefix_len(&target);
                let in_bucket = x
                    .edges()
                    .iter()
                    .filter(|e| x.id().common_prefix_len(&e.id) == cpl)
                    .count();
                let known_by_target = core.knowledge().get(&x.id()).map(|c| c.addrs.len());
                eprintln!(
                    "  stuck at node {at} ({}): prefix {cpl} with the target, knows target {}, known to it {known_by_target:?}, edges {} ({in_bucket} in that bucket), knows {} ({} in that bucket)",
                    sim.nat(*at).name(),
                    x.knowledge().get(&target).is_some(),
                    x.edges().len(),
                    x.knowledge().len(),
                    x.knowledge().bucket(cpl as usize).count()
                );
            }
        }
    }
    let holes = table_holes(&sim, nodes, &live);
    let (unmet, unmet_natted) = unmet_closest_public(&sim, nodes, false);
    let mut hops = report.hops.clone();
    hops.sort_unstable();
    let pct = |p: f64| {
        hops.get(((hops.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let delivered = report.delivered as f64;
    let summary = sim.report().connect_summary();
    let public = kinds.iter().filter(|k| **k == NatKind::Public).count();
    JsonLine::new("overlay")
        .num("nodes", nodes as f64)
        .str("nat_mix", &mix)
        .num("public_fraction", public as f64 / nodes as f64)
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
        .num("table_holes", holes as f64)
        .num("unmet_closest_public", unmet as f64)
        .num("unmet_closest_public_natted", unmet_natted as f64)
        .num("near_miss_lookups", sum(&|s| s.near_miss_lookups) as f64)
        .raw(&if connects > 0 {
            summary.json_fields()
        } else {
            String::new()
        })
        .num("wall_s", started.elapsed().as_secs_f64())
        .num("peak_rss_mib", peak_rss_mib())
        .print();
}

/// Holes in the live nodes' tables: (node, bucket) pairs where the node holds no edge and
/// knows no live public node (none it could dial for sure), although the bucket has live nodes,
/// counted for the buckets expected to hold at least 8 nodes (bucket b holds about
/// N / 2^(b+1) of N nodes). Such a node cannot route into that part of its own
/// neighbourhood, and messages for it may end at nodes there. The first few are named on
/// stderr.
fn table_holes(sim: &Sim, nodes: usize, live: &[usize]) -> usize {
    let depth = (usize::BITS - nodes.leading_zeros()).saturating_sub(5) as usize;
    let ids: Vec<_> = (0..nodes).map(|i| sim.core(i).id()).collect();
    let index: std::collections::HashMap<_, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let public = |id: &nodenet_kad::NodeId| {
        index
            .get(id)
            .is_some_and(|&j| sim.is_alive(j) && sim.nat(j) == NatKind::Public)
    };
    let mut holes = 0usize;
    for &i in live {
        let me = ids[i];
        let mut population = vec![0usize; depth + 1];
        for &j in live {
            let b = me.common_prefix_len(&ids[j]) as usize;
            if j != i && b <= depth {
                population[b] += 1;
            }
        }
        let core = sim.core(i);
        for (b, &n) in population.iter().enumerate() {
            let edge_in = || {
                core.edges()
                    .iter()
                    .any(|e| me.common_prefix_len(&e.id) as usize == b)
            };
            let knows_public = || core.knowledge().bucket(b).any(|c| public(&c.id));
            if n == 0 || edge_in() || knows_public() {
                continue;
            }
            holes += 1;
            if holes <= 10 {
                eprintln!(
                    "hole: node {i} ({}) holds no edge and knows no public node in its bucket {b} ({n} live nodes there), holds {} edges",
                    sim.nat(i).name(),
                    core.edges().len()
                );
            }
        }
    }
    holes
}

/// Live nodes whose closest other live public node (by XOR distance) holds no edge with
/// them, public ones and ones behind NAT apart. Anyone can dial a public node, so every
/// such pair is a neighbourhood that has not met, and messages for the one may stop at the
/// other. Each such public node is named on stderr, with its closest public node, when
/// `name` is set.
fn unmet_closest_public(sim: &Sim, nodes: usize, name: bool) -> (usize, usize) {
    let public: Vec<usize> = (0..nodes)
        .filter(|&i| sim.is_alive(i) && sim.nat(i) == NatKind::Public)
        .collect();
    let mut natted = 0usize;
    for i in (0..nodes).filter(|&i| sim.is_alive(i) && sim.nat(i) != NatKind::Public) {
        let me = sim.core(i).id();
        let closest = public
            .iter()
            .min_by_key(|&&j| sim.core(j).id().distance(&me));
        if closest.is_some_and(|&p| !sim.core(i).edges().contains(&sim.core(p).id())) {
            natted += 1;
        }
    }
    let mut unmet = 0usize;
    for &i in &public {
        let me = sim.core(i).id();
        let Some(&p) = public
            .iter()
            .filter(|&&j| j != i)
            .min_by_key(|&&j| sim.core(j).id().distance(&me))
        else {
            continue;
        };
        let (x, y) = (sim.core(i), sim.core(p));
        if x.edges().contains(&y.id()) || y.edges().contains(&me) {
            continue;
        }
        unmet += 1;
        if name {
            // Whether they know each other, and who could have introduced them: the nodes
            // that know one with an address, and the one of those closest to the other
            // (shared leading bits, node, public, an edge of the other).
            let addrs = |a: &nodenet::Core, b: &nodenet::Core| {
                a.knowledge().get(&b.id()).map(|c| c.addrs.len())
            };
            let knowers = |who: &nodenet::Core| -> Vec<usize> {
                (0..nodes)
                    .filter(|&j| {
                        sim.is_alive(j)
                            && sim
                                .core(j)
                                .knowledge()
                                .get(&who.id())
                                .is_some_and(|c| !c.addrs.is_empty())
                    })
                    .collect()
            };
            let (kx, ky) = (knowers(x), knowers(y));
            let best = |ks: &[usize], of: &nodenet::Core| {
                ks.iter()
                    .map(|&j| {
                        (
                            sim.core(j).id().common_prefix_len(&of.id()),
                            j,
                            sim.nat(j) == NatKind::Public,
                            of.edges().contains(&sim.core(j).id()),
                        )
                    })
                    .max()
            };
            eprintln!(
                "unmet: public {i} and its closest public {p}: prefix {}, {i} knows it {:?}, {p} knows {i} {:?}; {} know {i} with an address (closest to {p}: {:?}), {} know {p} (closest to {i}: {:?}); edges {} (out {}) / {} (out {})",
                me.common_prefix_len(&y.id()),
                addrs(x, y),
                addrs(y, x),
                kx.len(),
                best(&kx, y),
                ky.len(),
                best(&ky, x),
                x.edges().len(),
                x.edges().outbound(),
                y.edges().len(),
                y.edges().outbound(),
            );
        }
    }
    (unmet, natted)
}

/// `kind=percent,...` → weights by kind.
fn parse_mix(mix: &str) -> Option<Vec<(NatKind, u64)>> {
    mix.split(',')
        .map(|part| {
            let (name, pct) = part.trim().split_once('=')?;
            let kind = NatKind::ALL.into_iter().find(|k| k.name() == name)?;
            Some((kind, pct.parse().ok()?))
        })
        .collect()
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
