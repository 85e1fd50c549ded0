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
use nodenet_transport::{Event, Transport, next_event};

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
    line = line.num("success_rate", ok as f64 / total as f64);
    for (name, rate, ms, path) in rows {
        line = line
            .num(&format!("{name}_ok"), rate)
            .num(&format!("{name}_ms"), ms)
            .str(&format!("{name}_path"), &path);
    }
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
    let link = LinkModel {
        delay: Duration::from_millis(10),
        ..LinkModel::default()
    };
    for &a in &ids {
        for &b in &ids {
            if a != b {
                hub.set_link(a, b, link.clone());
            }
        }
    }
    for &(_, a, b) in &pairs {
        hub.partition(ids[a], ids[b]);
    }
    let mut nodes = Vec::new();
    let mut boot = None;
    for (i, (kind, timed)) in kinds.iter().enumerate() {
        let id = identity(i);
        let t = hub
            .transport_for(&id, &format!("n{i}"))
            .expect("a transport");
        if let Some(model) = kind {
            hub.set_nat(id.node_id(), &format!("nat{i}"), *model);
        }
        let addr = t.local_addr();
        let node = Node::builder(id, Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .timed_punch(*timed)
            .relay(i < PUBLIC)
            .seed(i as u64 + 1)
            .build();
        node.spawn();
        match &boot {
            None => boot = Some(Contact::new(node.id(), vec![addr])),
            Some(b) => node.bootstrap(vec![b.clone()]),
        }
        nodes.push(node);
    }
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
