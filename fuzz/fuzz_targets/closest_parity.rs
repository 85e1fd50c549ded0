#![no_main]
//! Fuzz target `closest_parity`: the logic (and its invariant checks) lives in `nodenet_routing::fuzzing::closest_parity`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_routing::fuzzing::closest_parity(data));
