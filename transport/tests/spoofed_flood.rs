//! A flood of spoofed QUIC Initials must neither fill the inbound caps nor lock an honest IP
//! out (hardening issue, finding 3). Needs root and `ip netns` (see `nodenet_testkit::netns`
//! for how a missing capability is reported).
//!
//! ```text
//!   srv: 10.77.0.1 (the node under attack)  ── veth ──  cli: 10.77.0.2, 10.77.0.3
//!                                                        honest nodes and the attacker
//! ```
//!
//! The attacker sends real QUIC Initials (crafted by quinn-proto with the nodenet ALPN) at
//! 200 per second, half from random sources in 10.78.0.0/16 (aimed at the global cap) and half
//! from the honest node's own IP 10.77.0.2 with random ports (aimed at its per-IP cap). `srv`
//! routes its answers to `cli`, which forwards nothing: whatever the node says to a spoofed
//! source is lost, as on the internet. Meanwhile the two honest nodes dial the node every
//! 400 ms; every dial must succeed and deliver a frame.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodenet_identity::Identity;
use nodenet_testkit::netns::{self, Needs, Netns, spoofing_socket, veth};
use nodenet_transport::quic::{QuicConfig, QuicTransport, danger_configs};
use nodenet_transport::{Event, Transport, next_event};

/// Spoofed Initials per second, and the most the flood sends in all.
const FLOOD_PPS: u64 = 200;
const FLOOD_MAX: u64 = 4_000;
/// Honest dials per honest node, and their spacing.
const HONEST_DIALS: usize = 12;
const HONEST_EVERY: Duration = Duration::from_millis(400);

fn main() {
    netns::main(
        Needs::Netns,
        &[(
            "a_spoofed_initial_flood_neither_fills_the_caps_nor_locks_out_an_honest_ip",
            spoofed_flood,
        )],
    )
}

fn spoofed_flood() {
    let srv = Netns::add("srv");
    let cli = Netns::add("cli");
    veth(&srv, "s0", "10.77.0.1/24", &cli, "c0", "10.77.0.2/24");
    cli.ip(&["addr", "add", "10.77.0.3/24", "dev", "c0"]);
    srv.ip(&["route", "add", "default", "via", "10.77.0.2"]);
    for ns in [&srv, &cli] {
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bind = |ns: &Netns, seed: u8, addr: &str| {
        ns.enter(|| {
            let _rt = rt.enter();
            QuicTransport::bind(
                &Identity::from_seed(&[seed; 32]),
                addr.parse().unwrap(),
                QuicConfig::default(),
            )
            .unwrap()
        })
    };
    let server = Arc::new(bind(&srv, 1, "10.77.0.1:0"));
    let honest = [bind(&cli, 2, "10.77.0.2:0"), bind(&cli, 3, "10.77.0.3:0")];
    let target = server.socket_addr();

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (ok, tries) = std::thread::scope(|s| {
        s.spawn(|| cli.enter(|| flood(target, &stop, &sent)));
        // Let the flood take every slot it can before the first honest dial.
        std::thread::sleep(Duration::from_secs(1));
        let result = rt.block_on(honest_dials(&server, &honest));
        stop.store(true, Ordering::Relaxed);
        result
    });
    let stats = server.stats();
    println!(
        "{{\"flood_sent\":{},\"flood_pps\":{FLOOD_PPS},\"honest_ok\":{ok},\"honest_tries\":{tries},\
         \"inbound_retried\":{},\"refused_inbound_cap\":{},\"refused_per_ip_cap\":{},\
         \"handshake_failed\":{},\"inbound_accepted\":{}}}",
        sent.load(Ordering::Relaxed),
        stats.inbound_retried,
        stats.refused_inbound_cap,
        stats.refused_per_ip_cap,
        stats.handshake_failed,
        stats.inbound_accepted,
    );
    assert_eq!(ok, tries, "honest dials failed during the flood");
    assert!(
        sent.load(Ordering::Relaxed) >= FLOOD_PPS,
        "the flood never ran"
    );
    // The node shed the flood where it could see it: each unproven attempt past the budget
    // was made to prove its address, and none of them took a validated slot.
    assert!(
        stats.inbound_retried >= sent.load(Ordering::Relaxed) / 2,
        "the flood was not answered with Retry: {stats:?}"
    );
    assert_eq!(stats.inbound_accepted, u64::try_from(tries).unwrap());
    for t in &honest {
        t.close();
    }
    server.close();
}

/// Each honest node dials every `HONEST_EVERY` and sends one frame; returns (delivered, tried).
async fn honest_dials(server: &QuicTransport, honest: &[QuicTransport]) -> (usize, usize) {
    let (mut ok, mut tries) = (0, 0);
    for i in 0..HONEST_DIALS {
        for (n, t) in honest.iter().enumerate() {
            tries += 1;
            let dial = t.dial(server.local_id(), &server.local_addr());
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), dial).await else {
                continue;
            };
            let frame = format!("honest {n} dial {i}");
            conn.send(frame.as_bytes()).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match next_event(server).await {
                        Some(Event::Frame { packet, .. }) => break packet.to_vec(),
                        Some(_) => {}
                        None => break Vec::new(),
                    }
                }
            })
            .await;
            if got.is_ok_and(|p| p == frame.as_bytes()) {
                ok += 1;
            }
            conn.close();
        }
        tokio::time::sleep(HONEST_EVERY).await;
    }
    (ok, tries)
}

/// Sends spoofed Initials to `target` at `FLOOD_PPS` until `stop`, alternating a random source
/// in 10.78.0.0/16 and the honest node's IP with a random port. Runs inside `cli`.
fn flood(target: SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    let (_, client) =
        danger_configs(&Identity::from_seed(&[9; 32]), &QuicConfig::default()).unwrap();
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let mut x: u32 = 0x9e37_79b9;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let start = Instant::now();
    let mut buf = Vec::new();
    for n in 0..FLOOD_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = start + Duration::from_micros(n * 1_000_000 / FLOOD_PPS);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let (_, mut conn) = endpoint
            .connect(now, client.clone(), target, "nodenet")
            .unwrap();
        buf.clear();
        let transmit = conn.poll_transmit(now, 1, &mut buf).unwrap();
        let [a, b, p0, p1] = next().to_le_bytes();
        let port = 1024 + u16::from_le_bytes([p0, p1]) % 60_000;
        let ip = if n % 2 == 0 {
            Ipv4Addr::new(10, 78, a, b | 1)
        } else {
            Ipv4Addr::new(10, 77, 0, 2)
        };
        // A port already taken (by an honest socket) is simply skipped.
        let Ok(socket) = spoofing_socket(SocketAddrV4::new(ip, port)) else {
            continue;
        };
        if socket.send_to(&buf[..transmit.size], target).is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}
