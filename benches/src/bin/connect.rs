//! `connect`: time from `connect()` to a usable direct edge between QUIC nodes on loopback
//! that share no edge yet, and `send_direct` throughput over the edge it opened.
//!
//! `cargo run --release -p nodenet-benches --bin connect [-- --nodes N --mib M]`
//!
//! N nodes (default 64) join through node 0 at once and run for ten seconds with maintenance
//! timers scaled down 5×. `table_holes` then counts, over all nodes, the populated k-buckets
//! in which a node holds no edge: greedy routing dies in such a hole, so it should be 0.
//! Pairs that hold no edge yet (at most 200), one at a time, are timed from the `connect()`
//! call to the returned connection: `connect_ms_*` over all of them, `rendezvous_ms_*` over
//! the `via_rendezvous` ones that had to learn the target's address by rendezvous (the others
//! knew it from their table and dialed it at once). Then M MiB (default 256) cross one new
//! edge by `send_direct` in 60 KB frames; `direct_delivered_fraction` is what arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodenet::{Contact, Maintenance, Node};
use nodenet_benches::JsonLine;
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::Transport;
use nodenet_transport::quic::{QuicConfig, QuicTransport};

const CHUNK: usize = 60_000;
/// Connects timed at most.
const MAX_CONNECTS: usize = 200;

fn main() {
    let mut nodes = 64usize;
    let mut mib = 256usize;
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--nodes" => nodes = v.parse().unwrap_or(nodes),
            "--mib" => mib = v.parse().unwrap_or(mib),
            _ => {
                eprintln!("usage: connect [--nodes N] [--mib M]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(nodes.max(4), mib));
}

async fn run(n: usize, mib: usize) {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut members = Vec::new();
    for i in 0..n {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let id = Identity::from_seed(&seed);
        // Every node shares 127.0.0.1: lift the per-IP inbound cap meant for the open internet.
        let config = QuicConfig::default().max_inbound_per_ip(n);
        let t = QuicTransport::bind(&id, localhost, config).expect("bind");
        let addr = t.local_addr();
        let node = Node::builder(id)
            .transport(Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .delivery_buffer(4096)
            .rendezvous_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_else(|_| std::process::exit(1));
        let inbox = node.deliveries().expect("inbox");
        node.spawn();
        members.push((node, addr, Some(inbox)));
    }
    let boot = Contact::new(members[0].0.id(), vec![members[0].1.clone()]);
    for (node, _, _) in &members[1..] {
        node.bootstrap(vec![boot.clone()]);
    }
    // Until every node holds an edge (at most 30 s), then a little longer.
    for _ in 0..300 {
        if members.iter().all(|(node, _, _)| !node.edges().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ids: Vec<NodeId> = members.iter().map(|(node, _, _)| node.id()).collect();
    let holes: usize = members
        .iter()
        .map(|(node, _, _)| table_holes(&node.id(), &ids, &node.edges()))
        .sum();
    let isolated = members
        .iter()
        .filter(|(node, _, _)| node.edges().is_empty())
        .count();

    let mut times = Vec::new();
    let mut rendezvous_times = Vec::new();
    let mut failed = 0u64;
    let mut pair = None;
    for i in 1..n {
        for j in 1..n {
            let (a, b) = (&members[i].0, &members[j].0);
            if i == j
                || a.edges().contains(&b.id())
                || times.len() + failed as usize >= MAX_CONNECTS
            {
                continue;
            }
            let before = a.stats().rendezvous_started;
            let started = Instant::now();
            match a.connect(b.id()).await {
                Ok(_) => {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    times.push(ms);
                    if a.stats().rendezvous_started > before {
                        rendezvous_times.push(ms);
                    }
                    pair.get_or_insert((i, j));
                }
                Err(e) => {
                    eprintln!("{i}→{j}: {e}");
                    failed += 1;
                }
            }
        }
    }
    times.sort_by(f64::total_cmp);
    rendezvous_times.sort_by(f64::total_cmp);

    let mut throughput = f64::NAN;
    let mut delivered = f64::NAN;
    let mut rate_limited = f64::NAN;
    if let Some((i, j)) = pair {
        let target = members[j].0.id();
        let total = mib * 1024 * 1024;
        let mut inbox = members[j].2.take().expect("inbox");
        let receiver = tokio::spawn(async move {
            let mut got = 0;
            let mut last = Instant::now();
            while got < total {
                match tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await {
                    Ok(Some(d)) if d.via == nodenet::Via::Direct => {
                        got += d.payload.len();
                        last = Instant::now();
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            (got, last)
        });
        let chunk = vec![0x5a; CHUNK];
        let started = Instant::now();
        let mut sent = 0;
        while sent < total {
            let n = CHUNK.min(total - sent);
            if members[i].0.send_direct(target, &chunk[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        let (got, last) = receiver.await.unwrap_or((0, started));
        throughput = got as f64 / (1024.0 * 1024.0) / (last - started).as_secs_f64();
        delivered = got as f64 / total as f64;
        rate_limited = members[j].0.stats().dropped_rate_limited as f64;
    }
    JsonLine::new("connect")
        .num("nodes", n as f64)
        .num("connects", times.len() as f64)
        .num("failed", failed as f64)
        .num("isolated_nodes", isolated as f64)
        .num("table_holes", holes as f64)
        .num("via_rendezvous", rendezvous_times.len() as f64)
        .num("connect_ms_p50", pct(&times, 0.5))
        .num("connect_ms_p99", pct(&times, 0.99))
        .num("rendezvous_ms_p50", pct(&rendezvous_times, 0.5))
        .num("rendezvous_ms_p99", pct(&rendezvous_times, 0.99))
        .num("direct_mib", mib as f64)
        .num("direct_mib_s", throughput)
        .num("direct_delivered_fraction", delivered)
        .num("receiver_rate_limited", rate_limited)
        .print();
    for (node, _, _) in &members {
        node.shutdown().await;
    }
}

/// The `p` quantile of sorted `xs` (NaN, printed as null, when empty).
fn pct(xs: &[f64], p: f64) -> f64 {
    xs.get(((xs.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Buckets (from `me`'s point of view) that hold some node of `all` but none of `edges`.
fn table_holes(me: &NodeId, all: &[NodeId], edges: &[NodeId]) -> usize {
    let mut populated = [false; 256];
    let mut held = [false; 256];
    for (ids, marks) in [(all, &mut populated), (edges, &mut held)] {
        for b in ids.iter().filter_map(|id| me.bucket_index(id)) {
            marks[b] = true;
        }
    }
    populated
        .iter()
        .zip(held)
        .filter(|&(&p, h)| p && !h)
        .count()
}
