//! `forward`: one routed frame in on one edge and out on another.
//!
//! - `core_*`: through a node's decision core alone, as the driver calls it: parse, per-edge
//!   rate limit, the originator's proof-of-work (difficulty 16, a BLAKE2b per hop),
//!   freshness, greedy decision, TTL patched in place.
//! - `path_*`: the whole path through a running node on the in-memory transport: the sender's
//!   `Conn::send`, the hub, the node's run loop and core, the forward (the packet the frame
//!   arrived in is queued on the next edge as is: `Conn::send_packet`, no copy), the hub
//!   again, and the receiver's event. `ORIGINS` senders each send one frame per round and the
//!   round ends when all have arrived, on one thread, so the time is the path's own work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodenet::{Core, CoreConfig, Handled, Node, Now};
use nodenet_benches::{CountingAlloc, JsonLine, allocations};
use nodenet_identity::Identity;
use nodenet_pow::Solver;
use nodenet_routing::Time;
use nodenet_routing::msg::{self, MsgFields};
use nodenet_transport::mem::Hub;
use nodenet_transport::{Event, Transport, next_event};
use nodenet_wire::{Addr, Frame, FrameType};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const DIFFICULTY: u32 = 16;
/// Senders on the whole-path run, and rounds (one frame from each per round). Each sender
/// stays within its edge's forward burst (1,024 frames), so the rate limit drops nothing.
const ORIGINS: u32 = 16;
const ROUNDS: u32 = 1_000;
const WARMUP_ROUNDS: u32 = 100;

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

/// A Route frame from `origin` to `to`, sent at `unix` (ns).
fn route_frame(origin: &Identity, to: &nodenet_kad::NodeId, unix: i64, payload: &[u8]) -> Vec<u8> {
    let ed = origin.ed_public();
    let sig = msg::sign(origin, FrameType::ROUTE, to, unix, payload);
    let fields = MsgFields {
        target: *to,
        ttl: 16,
        ed_pub: &ed,
        sent: unix,
        avoid: &[],
        payload,
        sig: &sig,
    };
    let mut frame = vec![0u8; fields.encoded_len() + 16];
    let n = fields
        .encode_frame(FrameType::ROUTE, &mut frame)
        .unwrap_or(0);
    frame.truncate(n);
    frame
}

/// The whole path: returns (ns per frame, allocations per frame, frames forwarded).
fn whole_path(me: Identity, next: Identity, origins: Vec<Identity>) -> (f64, f64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|_| std::process::exit(1));
    rt.block_on(async move {
        let hub = Hub::new();
        let me_id = me.node_id();
        let Ok(t) = hub.transport_for(&me, "me") else {
            std::process::exit(1)
        };
        let me_addr = t.local_addr();
        let node = Node::builder(me)
            .transport(Arc::new(t))
            .min_difficulty(DIFFICULTY)
            .deterministic_seed(1)
            .build()
            .unwrap_or_else(|_| std::process::exit(1));
        node.spawn();
        let ping = {
            let mut b = vec![0u8; 16];
            let n = Frame::new(FrameType::PING, &[]).encode(&mut b).unwrap_or(0);
            b.truncate(n);
            b
        };
        // Every peer opens its edge with a Ping, which admits it.
        let edge = |id: &Identity, name: String| {
            let t = hub
                .transport_for(id, &name)
                .unwrap_or_else(|_| std::process::exit(1));
            let dial = t.dial(me_id, &me_addr);
            (t, dial)
        };
        let (rx, dial) = edge(&next, "next".into());
        let Ok(rx_conn) = dial.await else {
            std::process::exit(1)
        };
        let _ = rx_conn.send(&ping);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0));
        let mut senders = Vec::new();
        for (i, o) in origins.iter().enumerate() {
            let (t, dial) = edge(o, format!("origin{i}"));
            let Ok(conn) = dial.await else {
                std::process::exit(1)
            };
            let _ = conn.send(&ping);
            let frame = route_frame(o, &next.node_id(), unix, &[0x42u8; 200]);
            senders.push((t, conn, frame));
        }
        // Let the node admit every edge and answer the pings.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut forwarded = 0u64;
        let round = |n: u32| {
            let senders = &senders;
            let rx = &rx;
            let node = &node;
            async move {
                let mut got = 0u64;
                for _ in 0..n {
                    for (_, conn, frame) in senders {
                        let _ = conn.send(frame);
                    }
                    let mut left = senders.len();
                    while left > 0 {
                        let Ok(event) =
                            tokio::time::timeout(Duration::from_secs(5), next_event(rx)).await
                        else {
                            // A frame the node did not forward: say where it went.
                            eprintln!("forward: frames lost; node stats {:?}", node.stats());
                            std::process::exit(2)
                        };
                        match event {
                            Some(Event::Frame { packet, .. }) => {
                                if Frame::parse(&packet)
                                    .is_ok_and(|(f, _)| f.frame_type() == FrameType::ROUTE)
                                {
                                    left -= 1;
                                    got += 1;
                                }
                            }
                            Some(_) => {}
                            None => std::process::exit(1),
                        }
                    }
                }
                got
            }
        };
        round(WARMUP_ROUNDS).await;
        // Let every sender's forward bucket refill (512 frames/s up to its 1,024 burst).
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let before = allocations();
        let start = Instant::now();
        forwarded += round(ROUNDS).await;
        let elapsed = start.elapsed();
        let allocs = allocations() - before;
        node.shutdown().await;
        let frames = forwarded as f64;
        (
            elapsed.as_nanos() as f64 / frames,
            allocs as f64 / frames,
            forwarded,
        )
    })
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
    let start = Instant::now();
    run(FRAMES, &mut core, &mut t);
    let elapsed = start.elapsed();
    let allocs = allocations() - before;
    assert!(
        forwarded >= FRAMES,
        "every frame must be forwarded: {:?}",
        core.stats()
    );
    let origins: Vec<Identity> = (10..10 + ORIGINS).map(minted).collect();
    let (path_ns, path_allocs, path_frames) = whole_path(minted(4), minted(5), origins);
    JsonLine::new("forward")
        .num(
            "core_ns_per_frame",
            elapsed.as_nanos() as f64 / FRAMES as f64,
        )
        .num("core_allocs_per_frame", allocs as f64 / FRAMES as f64)
        .num("path_ns_per_frame", path_ns)
        .num("path_allocs_per_frame", path_allocs)
        .num("path_frames", path_frames as f64)
        .num("frame_bytes", template.len() as f64)
        .num("difficulty", f64::from(DIFFICULTY))
        .print();
}
