//! `media`: media sessions over QUIC on loopback.
//!
//! `cargo run --release -p nodenet-benches --bin media [-- --secs S]`
//!
//! Two QUIC transports in this process, one media session between them (the receiver's
//! budget lifted, so the path is measured, not the budget):
//!
//! 1. a call: 200-byte datagrams at 50 fps for S seconds (default 10); the one-way latency of
//!    each, from the send call to the receive stamp (one clock: one process), p50 and p99,
//!    and how many were lost;
//! 2. the highest datagram rate without loss: 1,200-byte datagrams for one second at each of
//!    a rising series of rates; the last rate at which every datagram arrived (and none met
//!    backpressure);
//! 3. message throughput: 64 KiB messages, 16 in flight, for two seconds, in MiB/s.

use std::sync::Arc;
use std::time::Duration;

use nodenet_benches::JsonLine;
use nodenet_identity::Identity;
use nodenet_transport::media::{MAX_DATAGRAM, MAX_MESSAGE, MediaBudget};
use nodenet_transport::quic::{QuicConfig, QuicTransport};
use nodenet_transport::{Event, Media, MediaSession, Transport, next_event};
use tokio::time::Instant;

#[global_allocator]
static ALLOC: nodenet_benches::CountingAlloc = nodenet_benches::CountingAlloc;

fn main() {
    let mut secs = 10u32;
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--secs", Some(v)) => secs = v.parse().unwrap_or(secs),
            _ => {
                eprintln!("usage: media [--secs S]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(secs.max(1)));
}

async fn pair() -> (MediaSession, MediaSession, QuicTransport, QuicTransport) {
    let localhost = "127.0.0.1:0".parse().expect("an address");
    let config = QuicConfig::default().media_budget(MediaBudget::UNLIMITED);
    let bind = |n: u8| {
        QuicTransport::bind(&Identity::from_seed(&[n; 32]), localhost, config.clone())
            .expect("bind")
    };
    let (a, b) = (bind(1), bind(2));
    let ours = a
        .open_media(b.local_id(), &b.local_addr())
        .await
        .expect("a session");
    let theirs = loop {
        match next_event(&b).await {
            Some(Event::Media(s)) => break s,
            Some(_) => {}
            None => panic!("closed"),
        }
    };
    (ours, theirs, a, b)
}

async fn run(secs: u32) {
    let (ours, theirs, _a, _b) = pair().await;
    let mut line = JsonLine::new("media").num("call_secs", f64::from(secs));

    // 1. The call.
    let (lat, lost) = call(&ours, &theirs, secs).await;
    line = line
        .num("datagram_one_way_ms_p50", pct(&lat, 0.50))
        .num("datagram_one_way_ms_p99", pct(&lat, 0.99))
        .num("call_datagrams", f64::from(50 * secs))
        .num("call_lost", lost as f64);

    // 2. The highest rate without loss.
    let mut best = 0u32;
    for rate in [
        1_000u32, 2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 80_000,
    ] {
        let (ours, theirs, _a, _b) = pair().await;
        if !lossless(&ours, &theirs, rate).await {
            break;
        }
        best = rate;
    }
    line = line.num("max_lossless_datagrams_s", f64::from(best)).num(
        "max_lossless_mbit_s",
        f64::from(best) * (MAX_DATAGRAM + 1) as f64 * 8.0 / 1e6,
    );

    // 3. Message throughput.
    let (ours, theirs, _a, _b) = pair().await;
    line.num("message_mib_s", messages(&ours, &theirs).await)
        .print();
}

/// Percentile `q` of `v` in milliseconds.
fn pct(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

async fn call(ours: &MediaSession, theirs: &MediaSession, secs: u32) -> (Vec<Duration>, usize) {
    let mut rx = theirs.datagrams().expect("fresh");
    let start = Instant::now();
    let frames = 50 * secs;
    let sender = {
        let ours = ours.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for _ in 0..frames {
                tick.tick().await;
                let mut p = [0u8; 200];
                let sent = start.elapsed().as_nanos() as u64;
                p[..8].copy_from_slice(&sent.to_be_bytes());
                let _ = ours.send_datagram(16, &p);
            }
        })
    };
    let mut lat = Vec::new();
    let deadline = start + Duration::from_secs(u64::from(secs)) + Duration::from_secs(1);
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let sent = u64::from_be_bytes(d.payload[..8].try_into().expect("8 bytes"));
        lat.push((d.received - start).saturating_sub(Duration::from_nanos(sent)));
    }
    let _ = sender.await;
    let lost = frames as usize - lat.len();
    (lat, lost)
}

/// One second of full-size datagrams at `rate` per second: true if all arrived.
async fn lossless(ours: &MediaSession, theirs: &MediaSession, rate: u32) -> bool {
    let mut rx = theirs.datagrams().expect("fresh");
    let counter = tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            n += 1;
        }
        n
    });
    let payload = [0x5au8; MAX_DATAGRAM];
    let start = Instant::now();
    let mut sent = 0u32;
    let mut refused = 0u32;
    // Paced in 1 ms slices: each slice sends what the rate owes by then.
    while sent + refused < rate {
        let owed = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u32).min(rate);
        while sent + refused < owed {
            match ours.send_datagram(16, &payload) {
                Ok(()) => sent += 1,
                Err(_) => refused += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = counter.await.unwrap_or(0);
    refused == 0 && got == sent
}

async fn messages(ours: &MediaSession, theirs: &MediaSession) -> f64 {
    let mut rx = theirs.messages().expect("fresh");
    let body: Arc<[u8]> = vec![0x33u8; MAX_MESSAGE].into();
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (ours, body) = (ours.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            while start.elapsed() < window {
                if ours.send_message(16, &body).await.is_err() {
                    break;
                }
            }
        }));
    }
    let mut bytes = 0usize;
    while let Ok(Some(m)) = tokio::time::timeout_at(start + window, rx.recv()).await {
        bytes += m.payload.len();
    }
    let secs = start.elapsed().as_secs_f64();
    for s in senders {
        let _ = s.await;
    }
    bytes as f64 / secs / (1024.0 * 1024.0)
}
