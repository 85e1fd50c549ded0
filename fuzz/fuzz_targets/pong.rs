#![no_main]
//! Fuzz target `pong`: the logic (and its invariant checks) lives in `nodenet_routing::fuzzing::pong`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_routing::fuzzing::pong(data));
