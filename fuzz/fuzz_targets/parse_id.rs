#![no_main]
//! Fuzz target `parse_id`: the logic (and its invariant checks) lives in `nodenet_kad::fuzzing::parse_id`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_kad::fuzzing::parse_id(data));
