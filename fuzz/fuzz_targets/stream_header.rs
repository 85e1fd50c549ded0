#![no_main]
//! Fuzz target `stream_header`: the logic (and its invariant checks) lives in
//! `nodenet_transport::stream::fuzzing::stream_header`, which the corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nodenet_transport::stream::fuzzing::stream_header(data);
});
