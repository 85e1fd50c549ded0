#![no_main]
//! Fuzz target `peer_cert`: the logic (and its invariant checks) lives in `nodenet_transport::quic::fuzzing::peer_cert`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nodenet_transport::quic::fuzzing::peer_cert(data);
});
