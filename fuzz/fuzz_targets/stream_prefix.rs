#![no_main]
//! Fuzz target `stream_prefix`: the logic (and its invariant checks) lives in `nodenet_transport::quic::fuzzing::stream_prefix`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nodenet_transport::quic::fuzzing::stream_prefix(data);
});
