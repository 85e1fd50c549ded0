//! `stream`: streams over QUIC on loopback, against raw quinn in the same run.
//!
//! `cargo run --release -p nodenet-benches --bin stream [-- --mib N]` (default 1024 MiB)
//!
//! 1. One stream carries N MiB from one transport to another (`open_stream`, 64 KiB writes,
//!    the receiver reading into 64 KiB); raw quinn with the transport's exact settings does
//!    the same. Each side runs twice, alternating; the better run of each counts.
//! 2. A slow reader: 64 MiB to a reader that takes 64 KiB every 2 ms (about 31 MiB/s);
//!    `slow_lost_bytes` is what did not arrive byte-exact (must be 0), and
//!    `slow_sender_peak_buffered_mib` the most the writer had handed over beyond what the
//!    reader had read, sampled every millisecond (its bound is the flow-control windows).
//! 3. The same stream through a volunteer relay with its budget lifted (N/4 MiB), against a
//!    direct one of the same size in the same run: `relayed_over_direct`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodenet_benches::{CountingAlloc, JsonLine};
use nodenet_identity::Identity;
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{
    Addr, Event, IncomingStream, Punch, Relay, Streams, Transport, next_event,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const CHUNK: usize = 64 * 1024;

fn main() {
    let mut mib: u64 = 1024;
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--mib", Some(v)) => mib = v.parse().unwrap_or(mib),
            _ => {
                eprintln!("usage: stream [--mib N]");
                std::process::exit(2);
            }
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
        let mut ours = Vec::new();
        for _ in 0..2 {
            raw.push(nodenet_benches::raw_quinn_mib_s(total, CHUNK).await);
            ours.push(direct(total).await);
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let (ours_best, raw_best) = (best(&ours), best(&raw));
        let (lost, peak) = slow_reader(64 << 20).await;
        let quarter = (total / 4).max(1 << 20);
        let direct_q = direct(quarter).await;
        let relayed_q = relayed(quarter).await;
        JsonLine::new("stream")
            .num("mib", mib as f64)
            .num("stream_mib_s", ours_best)
            .num("raw_quinn_mib_s", raw_best)
            .num("ratio", ours_best / raw_best)
            .num("slow_lost_bytes", lost as f64)
            .num(
                "slow_sender_peak_buffered_mib",
                peak as f64 / (1024.0 * 1024.0),
            )
            .num("relay_mib", (quarter >> 20) as f64)
            .num("direct_mib_s", direct_q)
            .num("relayed_mib_s", relayed_q)
            .num("relayed_over_direct", relayed_q / direct_q)
            .print();
    });
}

fn ident(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn bind(n: u8, config: QuicConfig) -> QuicTransport {
    QuicTransport::bind(&ident(n), localhost(), config).expect("bind")
}

/// The next stream `t` reports, accepted.
async fn accept(
    t: &QuicTransport,
) -> (nodenet_transport::SendStream, nodenet_transport::RecvStream) {
    let incoming: IncomingStream = loop {
        match next_event(t).await {
            Some(Event::Stream(s)) => break s,
            Some(_) => {}
            None => panic!("transport closed"),
        }
    };
    incoming.accept().await.expect("accept")
}

/// MiB/s of one stream from `a` to `b` reached at `addr`.
async fn one_stream(a: &QuicTransport, b: QuicTransport, addr: &Addr, total: u64) -> f64 {
    let remote = b.local_id();
    let receiver = tokio::spawn(async move {
        let (_send, mut recv) = accept(&b).await;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while let Some(n) = recv.read(&mut buf).await.expect("read") {
            got += n as u64;
        }
        assert_eq!(got, total, "bytes lost");
        (Instant::now(), b)
    });
    let start = Instant::now();
    let (mut send, _recv) = a.open_stream(remote, addr, "bench/1").await.expect("open");
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while sent < total {
        send.write_all(&chunk).await.expect("write");
        sent += CHUNK as u64;
    }
    send.finish().await.expect("finish");
    let (done, b) = receiver.await.expect("receiver");
    b.close();
    total as f64 / (1024.0 * 1024.0) / done.duration_since(start).as_secs_f64()
}

/// MiB/s of one direct stream.
async fn direct(total: u64) -> f64 {
    let (a, b) = (
        bind(1, QuicConfig::default()),
        bind(2, QuicConfig::default()),
    );
    let addr = b.local_addr();
    let r = one_stream(&a, b, &addr, total).await;
    a.close();
    r
}

/// MiB/s of one stream through a relay with its budget lifted.
async fn relayed(total: u64) -> f64 {
    let mut relay_config = QuicConfig::default();
    relay_config.relay.session_bytes = (1e12, 1e12);
    relay_config.relay.session_packets = (1e12, 1e12);
    relay_config.relay.total_bytes = (1e12, 1e12);
    let relay = bind(3, relay_config);
    let (a, b) = (
        bind(1, QuicConfig::default()),
        bind(2, QuicConfig::default()),
    );
    let (caller, callee) = relay.relay().expect("a relay session");
    // The callee pins its side of the session, as a RelayBind's punch would.
    b.punch(&callee).expect("punch");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = one_stream(&a, b, &caller, total).await;
    a.close();
    relay.close();
    r
}

/// Bytes lost (0 when everything arrived byte-exact) and the writer's peak lead over the
/// reader, for `total` bytes to a reader of about 31 MiB/s.
async fn slow_reader(total: u64) -> (u64, u64) {
    let (a, b) = (
        bind(1, QuicConfig::default()),
        bind(2, QuicConfig::default()),
    );
    let written = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (w, r, p) = (written.clone(), read.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let lead = w
                    .load(Ordering::Relaxed)
                    .saturating_sub(r.load(Ordering::Relaxed));
                p.fetch_max(lead, Ordering::Relaxed);
            }
        })
    };
    let (remote, addr) = (b.local_id(), b.local_addr());
    let byte = |i: u64| (i.wrapping_mul(2_654_435_761) >> 11) as u8;
    let r = read.clone();
    let receiver = tokio::spawn(async move {
        let (_send, mut recv) = accept(&b).await;
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        let mut wrong = 0u64;
        while let Some(n) = recv.read(&mut buf).await.expect("read") {
            for (k, v) in buf[..n].iter().enumerate() {
                wrong += u64::from(*v != byte(at + k as u64));
            }
            at += n as u64;
            r.store(at, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.close();
        (at, wrong)
    });
    let (mut send, _recv) = a.open_stream(remote, &addr, "slow/1").await.expect("open");
    let mut at = 0u64;
    let mut chunk = vec![0u8; CHUNK];
    while at < total {
        for (k, v) in chunk.iter_mut().enumerate() {
            *v = byte(at + k as u64);
        }
        send.write_all(&chunk).await.expect("write");
        at += CHUNK as u64;
        written.store(at, Ordering::Relaxed);
    }
    send.finish().await.expect("finish");
    let (got, wrong) = receiver.await.expect("receiver");
    sampler.abort();
    a.close();
    (
        total.saturating_sub(got) + wrong,
        peak.load(Ordering::Relaxed),
    )
}
