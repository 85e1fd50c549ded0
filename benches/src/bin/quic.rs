//! `quic`: bulk throughput of one QUIC edge against raw quinn with the same settings, in one
//! run, plus the time to open an edge.
//!
//! `cargo run --release -p nodenet-benches --bin quic [-- --mib N]` (default 1024 MiB).
//! Each side runs twice, alternating, and the better run of each counts, so neither side is
//! always the one that runs on a cold machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodenet_benches::{CountingAlloc, JsonLine};
use nodenet_identity::Identity;
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{Event, MAX_PACKET_LEN, Transport, next_event};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const CHUNK: usize = MAX_PACKET_LEN;

fn main() {
    let mut mib: u64 = 1024;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--mib" {
            mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(mib);
        }
    }
    let total = mib * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let mut raw = Vec::new();
        let mut edge = Vec::new();
        for _ in 0..2 {
            raw.push(nodenet_benches::raw_quinn_mib_s(total, CHUNK).await);
            edge.push(edge_run(total).await);
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let (edge_best, raw_best) = (best(&edge), best(&raw));
        let connect = connect_p50().await;
        JsonLine::new("quic")
            .num("mib", mib as f64)
            .num("edge_mib_s", edge_best)
            .num("raw_quinn_mib_s", raw_best)
            .num("ratio", edge_best / raw_best)
            .num("connect_ms_p50", connect)
            .print();
    });
}

fn ident(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// MiB/s through one nodenet edge: 64 KiB frames from `send_wait` to the receiver's event
/// stream, each packet released after counting.
async fn edge_run(total: u64) -> f64 {
    let a = QuicTransport::bind(&ident(1), localhost(), QuicConfig::default()).expect("bind");
    let b = QuicTransport::bind(&ident(2), localhost(), QuicConfig::default()).expect("bind");
    let conn = a.dial(b.local_id(), &b.local_addr()).await.expect("dial");
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < total {
            match next_event(&b).await {
                Some(Event::Frame { packet, .. }) => got += packet.len() as u64,
                Some(_) => {}
                None => break,
            }
        }
        (Instant::now(), b)
    });
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        conn.send_wait(&chunk).await.expect("send");
        sent += CHUNK as u64;
    }
    let (done, b) = receiver.await.expect("receiver");
    let secs = done.duration_since(start).as_secs_f64();
    a.close();
    b.close();
    total as f64 / (1024.0 * 1024.0) / secs
}

/// Median time to open an edge (handshake, identity check, stream) over loopback.
async fn connect_p50() -> f64 {
    let a = QuicTransport::bind(&ident(5), localhost(), QuicConfig::default()).expect("bind");
    let b = QuicTransport::bind(&ident(6), localhost(), QuicConfig::default()).expect("bind");
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let conn = a.dial(b.local_id(), &b.local_addr()).await.expect("dial");
        times.push(start.elapsed());
        conn.close();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}
