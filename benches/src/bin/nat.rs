//! `nat`: NAT traversal on the in-memory NAT models, and relay throughput on QUIC loopback.
//!
//! `cargo run --release -p nodenet-benches --bin nat [-- --trials K]`
//!
//! Part 1, on tokio's paused clock with a 10 ms one-way delay on every link: eight public
//! nodes (volunteer relays) and, for every ordered pair of NAT types (public, full cone,
//! address-restricted, port-restricted, symmetric, and `masq`: a Linux MASQUERADE without a
//! stateful firewall, which claims the port of a dropped packet), K fresh pairs of nodes
//! that are kept apart while the overlay forms. Each pair then connects once; per pair of
//! types the line gives the success rate, the median time from `connect()` to a usable edge
//! (model time) and the path most often taken. `masq_to_masq_untimed` is the masq pair with
//! timed punching off (the reference's behaviour: the target punches on the Connect). Part 2, in real time: a relay session on QUIC loopback
//! carries a 32 MiB stream of frames from one transport to another, with the default
//! budgets (2 Mbit/s per session) and with the budgets lifted.

use std::sync::Arc;
use std::time::Duration;

use nodenet::{Contact, Maintenance, Node, NodeId, Path};
use nodenet_benches::JsonLine;
use nodenet_identity::Identity;
use nodenet_transport::mem::{Hub, LinkModel, NatModel};
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{Event, Punch, Relay, Transport, next_event};

#[global_allocator]
static ALLOC: nodenet_benches::CountingAlloc = nodenet_benches::CountingAlloc;

const TYPES: [(&str, Option<NatModel>); 6] = [
    ("public", None),
    ("full", Some(NatModel::FULL_CONE)),
    ("addr", Some(NatModel::ADDRESS_RESTRICTED)),
    ("port", Some(NatModel::PORT_RESTRICTED)),
    ("sym", Some(NatModel::SYMMETRIC)),
    ("masq", Some(NatModel::LINUX_MASQUERADE)),
];
/// The extra row: masq ↔ masq with timed punching off.
const UNTIMED: usize = TYPES.len() * TYPES.len();

const PUBLIC: usize = 8;

fn identity(i: usize) -> Identity {
    let mut seed = [0x77u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Identity::from_seed(&seed)
}

fn main() {
    let mut trials = 3usize;
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--trials", Some(v)) => trials = v.parse().unwrap_or(trials),
            _ => {
                eprintln!("usage: nat [--trials K]");
                std::process::exit(2);
            }
        }
    }
    let mut line = JsonLine::new("nat").num("trials_per_pair", trials as f64);
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let (ok, total, rows) = paused.block_on(traversal(trials.max(1)));
    let birthday = paused.block_on(birthday(40));
    line = line.num("success_rate", ok as f64 / total as f64);
    for (name, rate, ms, path) in rows {
        line = line
            .num(&format!("{name}_ok"), rate)
            .num(&format!("{name}_ms"), ms)
            .str(&format!("{name}_path"), &path);
    }
    line = line
        .num("birthday_pairs", birthday.pairs as f64)
        .num("birthday_success_rate", birthday.rate)
        .num("birthday_ms_p50", birthday.p50)
        .num("birthday_ms_p99", birthday.p99)
        .num("birthday_probes_per_attempt", birthday.probes)
        .num("birthday_hard_sockets", birthday.sockets as f64)
        .num("birthday_sym_to_sym_relayed", birthday.sym_sym_relayed);
    let real = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let budgeted = real.block_on(relay_throughput(QuicConfig::default().relay, 4));
    let mut open = QuicConfig::default().relay;
    open.session_bytes = (1e12, 1e12);
    open.session_packets = (1e12, 1e12);
    open.total_bytes = (1e12, 1e12);
    let lifted = real.block_on(relay_throughput(open, 32));
    line.num("relay_default_budget_mib_s", budgeted)
        .num("relay_unlimited_mib_s", lifted)
        .print();
}

/// Per pair of types: (name, success rate, median ms, commonest path).
async fn traversal(trials: usize) -> (usize, usize, Vec<(String, f64, f64, String)>) {
    let hub = Hub::new();
    // The subjects: for each ordered pair of types, `trials` (from, to) node pairs.
    let mut pairs = Vec::new();
    // Each node: its NAT, and whether it times its punches.
    let mut kinds: Vec<(Option<NatModel>, bool)> = vec![(None, true); PUBLIC];
    for (fi, (_, fm)) in TYPES.iter().enumerate() {
        for (ti, (_, tm)) in TYPES.iter().enumerate() {
            for _ in 0..trials {
                let a = kinds.len();
                kinds.push((*fm, true));
                kinds.push((*tm, true));
                pairs.push((fi * TYPES.len() + ti, a, a + 1));
            }
        }
    }
    for _ in 0..trials {
        let a = kinds.len();
        kinds.push((Some(NatModel::LINUX_MASQUERADE), false));
        kinds.push((Some(NatModel::LINUX_MASQUERADE), false));
        pairs.push((UNTIMED, a, a + 1));
    }
    let ids: Vec<NodeId> = (0..kinds.len()).map(|i| identity(i).node_id()).collect();
    link_all(&hub, &ids);
    for &(_, a, b) in &pairs {
        hub.partition(ids[a], ids[b]);
    }
    let nodes = spawn_nodes(&hub, &kinds, 0, "n");
    tokio::time::sleep(Duration::from_secs(90)).await;
    for &(_, a, b) in &pairs {
        hub.heal(ids[a], ids[b]);
    }
    let mut results: Vec<Vec<(bool, f64, Option<Path>)>> = vec![Vec::new(); UNTIMED + 1];
    for &(k, a, b) in &pairs {
        let started = tokio::time::Instant::now();
        let r = nodes[a].connect(ids[b]).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        results[k].push((r.is_ok(), ms, r.ok().map(|c| c.path())));
    }
    let mut rows = Vec::new();
    let (mut ok, mut total) = (0, 0);
    for (k, r) in results.iter().enumerate() {
        let name = if k == UNTIMED {
            "masq_to_masq_untimed".to_owned()
        } else {
            format!(
                "{}_to_{}",
                TYPES[k / TYPES.len()].0,
                TYPES[k % TYPES.len()].0
            )
        };
        let good: Vec<&(bool, f64, Option<Path>)> = r.iter().filter(|x| x.0).collect();
        ok += good.len();
        total += r.len();
        let mut ms: Vec<f64> = good.iter().map(|x| x.1).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN);
        let mut paths: Vec<&str> = good.iter().filter_map(|x| x.2).map(Path::as_str).collect();
        paths.sort_unstable();
        let commonest = paths
            .iter()
            .max_by_key(|p| paths.iter().filter(|q| q == p).count())
            .map_or("none", |p| p);
        rows.push((
            name,
            good.len() as f64 / r.len() as f64,
            median,
            commonest.to_owned(),
        ));
    }
    for n in &nodes {
        n.shutdown().await;
    }
    (ok, total, rows)
}

/// A 10 ms one-way delay between every two of `ids`.
fn link_all(hub: &Hub, ids: &[NodeId]) {
    let link = LinkModel {
        delay: Duration::from_millis(10),
        ..LinkModel::default()
    };
    for &a in ids {
        for &b in ids {
            if a != b {
                hub.set_link(a, b, link.clone());
            }
        }
    }
}

/// One node per entry of `kinds` (its NAT, and whether it times its punches), identities
/// from `first`, named `<prefix><i>`; the first [`PUBLIC`] volunteer as relays, and all join
/// through the first.
fn spawn_nodes(
    hub: &Hub,
    kinds: &[(Option<NatModel>, bool)],
    first: usize,
    prefix: &str,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut boot = None;
    for (i, (kind, timed)) in kinds.iter().enumerate() {
        let id = identity(first + i);
        let t = hub
            .transport_for(&id, &format!("{prefix}{i}"))
            .expect("a transport");
        if let Some(model) = kind {
            hub.set_nat(id.node_id(), &format!("{prefix}nat{i}"), *model);
        }
        let addr = t.local_addr();
        let node = Node::builder(id)
            .transport(Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .timed_punch(*timed)
            .relay(i < PUBLIC)
            .deterministic_seed(i as u64 + 1)
            .build()
            .unwrap_or_else(|_| std::process::exit(1));
        node.spawn();
        match &boot {
            None => boot = Some(Contact::new(node.id(), vec![addr])),
            Some(b) => node.bootstrap(vec![b.clone()]),
        }
        nodes.push(node);
    }
    nodes
}

/// What the birthday trials measured.
struct Birthday {
    pairs: usize,
    /// Fraction of pairs whose relayed edge became punched.
    rate: f64,
    /// Model time from `connect()` to the punched edge, over the pairs that got one.
    p50: f64,
    p99: f64,
    /// Probes the easy sides sent, per attempt.
    probes: f64,
    sockets: usize,
    /// Fraction of symmetric ↔ symmetric pairs still relayed after the same wait.
    sym_sym_relayed: f64,
}

/// `pairs` pairs of a random-port symmetric NAT and a port-restricted one (each side
/// starting half the time), and `pairs / 4` symmetric ↔ symmetric pairs, on 10 ms links.
async fn birthday(pairs: usize) -> Birthday {
    let hub = Hub::new();
    let sym_pairs = (pairs / 4).max(1);
    let mut kinds: Vec<Option<NatModel>> = vec![None; PUBLIC];
    for k in 0..pairs + sym_pairs {
        kinds.push(Some(NatModel::SYMMETRIC_RANDOM));
        kinds.push(Some(if k < pairs {
            NatModel::PORT_RESTRICTED
        } else {
            NatModel::SYMMETRIC_RANDOM
        }));
    }
    let ids: Vec<NodeId> = (0..kinds.len())
        .map(|i| identity(10_000 + i).node_id())
        .collect();
    link_all(&hub, &ids);
    let pair = |k: usize| (PUBLIC + 2 * k, PUBLIC + 2 * k + 1);
    for k in 0..pairs + sym_pairs {
        let (a, b) = pair(k);
        hub.partition(ids[a], ids[b]);
    }
    let kinds: Vec<(Option<NatModel>, bool)> = kinds.into_iter().map(|k| (k, true)).collect();
    let nodes = spawn_nodes(&hub, &kinds, 10_000, "b");
    tokio::time::sleep(Duration::from_secs(90)).await;
    for k in 0..pairs + sym_pairs {
        let (a, b) = pair(k);
        hub.heal(ids[a], ids[b]);
    }
    let probes_before = hub.birthday_probes();
    let mut times = Vec::new();
    let mut sym_relayed = 0;
    for k in 0..pairs + sym_pairs {
        let (s, c) = pair(k);
        let (from, to) = if k % 2 == 0 { (s, c) } else { (c, s) };
        let started = tokio::time::Instant::now();
        let Ok(conn) = nodes[from].connect(ids[to]).await else {
            continue;
        };
        let deadline = started + Duration::from_secs(30);
        while conn.path() != Path::Punched && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if k >= pairs {
            sym_relayed += usize::from(conn.path() == Path::Relayed);
        } else if conn.path() == Path::Punched {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let attempts: u64 = nodes.iter().map(|n| n.stats().birthday_attempts).sum();
    for n in &nodes {
        n.shutdown().await;
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if times.is_empty() {
            return f64::NAN;
        }
        times[((times.len() - 1) as f64 * q).round() as usize]
    };
    Birthday {
        pairs,
        rate: times.len() as f64 / pairs as f64,
        p50: pct(0.5),
        p99: pct(0.99),
        // Both sides of an attempt count it: halve for attempts.
        probes: (hub.birthday_probes() - probes_before) as f64 / (attempts as f64 / 2.0).max(1.0),
        sockets: nodenet::BirthdayConfig::default().sockets,
        sym_sym_relayed: sym_relayed as f64 / sym_pairs as f64,
    }
}

/// MiB/s of frames carried from one QUIC transport to another through a relay session.
async fn relay_throughput(limits: nodenet_transport::quic::RelayLimits, mib: usize) -> f64 {
    let localhost = "127.0.0.1:0".parse().expect("an address");
    let mut relay_config = QuicConfig::default();
    relay_config.relay = limits;
    let bind = |n: u8, c: QuicConfig| {
        QuicTransport::bind(&Identity::from_seed(&[n; 32]), localhost, c).expect("bind")
    };
    let relay = bind(1, relay_config);
    let (a, b) = (
        bind(2, QuicConfig::default()),
        bind(3, QuicConfig::default()),
    );
    let (caller, callee) = relay.relay().expect("a session");
    // The callee pins its side of the session, as a RelayBind's punch would.
    if b.punch(&callee).is_err() {
        return f64::NAN;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let conn = tokio::time::timeout(Duration::from_secs(10), a.dial(b.local_id(), &caller)).await;
    let Ok(Ok(conn)) = conn else {
        return f64::NAN;
    };
    let total = mib * 1024 * 1024;
    let frame = vec![0x42u8; 60_000];
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        let started = tokio::time::Instant::now();
        while got < total {
            match tokio::time::timeout(Duration::from_secs(5), next_event(&b)).await {
                Ok(Some(Event::Frame { packet, .. })) => got += packet.len(),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        (got, started.elapsed())
    });
    let mut sent = 0;
    while sent < total {
        if conn.send_bulk(&frame).await.is_err() {
            break;
        }
        sent += frame.len();
    }
    let (got, took) = receiver.await.unwrap_or((0, Duration::from_secs(1)));
    got as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}
