//! `packet`: allocations and time per packet lifecycle in steady state: get → fill → release
//! alone, and get → fill → send on an in-memory edge → receive → release.

use std::time::Instant;

use nodenet_benches::{CountingAlloc, JsonLine, allocations, measure};
use nodenet_kad::NodeId;
use nodenet_transport::mem::Hub;
use nodenet_transport::{Event, Packet, Transport, next_event};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let (pool_ns, pool_allocs) = measure(2_000_000, |i| {
        let mut p = Packet::get();
        p.buf_mut()[..8].copy_from_slice(&i.to_le_bytes());
        let _ = p.set_len(8);
        let n = p.len();
        p.release();
        n
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (edge_ns, edge_allocs) = rt.block_on(async {
        let hub = Hub::new();
        let a = hub.transport(NodeId::from_bytes([1; 32]), "a").expect("a");
        let b = hub.transport(NodeId::from_bytes([2; 32]), "b").expect("b");
        let conn = a.dial(b.local_id(), &b.local_addr()).await.expect("dial");
        let round = |i: u64| {
            let conn = &conn;
            let b = &b;
            async move {
                let mut p = Packet::get();
                p.buf_mut()[..100].fill(i as u8);
                let _ = p.set_len(100);
                conn.send(&p).expect("send");
                p.release();
                match next_event(b).await {
                    Some(Event::Frame { packet, .. }) => packet.release(),
                    other => panic!("{other:?}"),
                }
            }
        };
        for i in 0..10_000 {
            round(i).await;
        }
        const N: u64 = 200_000;
        let before = allocations();
        let start = Instant::now();
        for i in 0..N {
            round(i).await;
        }
        let ns = start.elapsed().as_nanos() as f64 / N as f64;
        (ns, (allocations() - before) as f64 / N as f64)
    });

    JsonLine::new("packet")
        .num("get_fill_release_ns_per_op", pool_ns)
        .num("get_fill_release_allocs_per_op", pool_allocs)
        .num("mem_send_recv_ns_per_frame", edge_ns)
        .num("mem_send_recv_allocs_per_frame", edge_allocs)
        .print();
}
