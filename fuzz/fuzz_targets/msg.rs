#![no_main]
//! Fuzz target `msg`: the logic (and its invariant checks) lives in `nodenet_routing::fuzzing::msg`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nodenet_routing::fuzzing::msg(data);
});
