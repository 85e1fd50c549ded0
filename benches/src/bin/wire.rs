//! `wire`: frame decode and encode, and the reader: ns/op and allocations/op.

use nodenet_benches::{CountingAlloc, JsonLine, measure};
use nodenet_wire::{AddrList, Frame, FrameType, Reader};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    const ITERS: u64 = 2_000_000;
    let small_payload = [7u8; 100];
    let large_payload = vec![7u8; 60_000];
    let mut small = [0u8; 128];
    let small_len = Frame::new(FrameType::ROUTE, &small_payload)
        .encode(&mut small)
        .unwrap_or(0);
    let mut large = vec![0u8; 65_536];
    let large_len = Frame::new(FrameType::APP, &large_payload)
        .encode(&mut large)
        .unwrap_or(0);
    assert!(small_len > 0 && large_len > 0, "fixtures encode");

    let (dec_ns, dec_allocs) = measure(ITERS, |_| {
        Frame::parse(&small[..small_len]).map(|(f, _)| f.payload().len())
    });
    let (dec_large_ns, _) = measure(ITERS, |_| {
        Frame::parse(&large[..large_len]).map(|(f, _)| f.payload().len())
    });
    let mut out = [0u8; 128];
    let (enc_ns, enc_allocs) = measure(ITERS, |_| {
        Frame::new(FrameType::ROUTE, &small_payload).encode(&mut out)
    });
    let mut out_large = vec![0u8; 65_536];
    let (enc_large_ns, enc_large_allocs) = measure(ITERS / 20, |_| {
        Frame::new(FrameType::APP, &large_payload).encode(&mut out_large)
    });

    // A 3-address list, as in a Hello or Connect.
    let addrs = [
        nodenet_wire::Addr::new("quic", "192.0.2.1:4242"),
        nodenet_wire::Addr::new("quic", "[2001:db8::2]:4242"),
        nodenet_wire::Addr::new("quic", "198.51.100.7:50000"),
    ];
    let mut list = [0u8; 128];
    let mut w = nodenet_wire::Writer::new(&mut list);
    AddrList::encode(&mut w, addrs.iter().map(nodenet_wire::Addr::as_ref)).unwrap_or(());
    let list_len = w.finish();
    let (addrs_ns, addrs_allocs) = measure(ITERS, |_| {
        AddrList::decode(&mut Reader::new(&list[..list_len]), 16)
            .map(|l| l.iter().map(|a| a.endpoint.len()).sum::<usize>())
    });

    JsonLine::new("wire")
        .num("decode_ns_per_op", dec_ns)
        .num("decode_allocs_per_op", dec_allocs)
        .num("decode_64k_ns_per_op", dec_large_ns)
        .num("encode_ns_per_op", enc_ns)
        .num("encode_allocs_per_op", enc_allocs)
        .num("encode_60k_ns_per_op", enc_large_ns)
        .num("encode_60k_allocs_per_op", enc_large_allocs)
        .num("addr_list_decode_ns_per_op", addrs_ns)
        .num("addr_list_decode_allocs_per_op", addrs_allocs)
        .print();
}
