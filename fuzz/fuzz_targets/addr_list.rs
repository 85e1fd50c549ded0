#![no_main]
//! Fuzz target `addr_list`: the logic (and its invariant checks) lives in `nodenet_wire::fuzzing::addr_list`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_wire::fuzzing::addr_list(data));
