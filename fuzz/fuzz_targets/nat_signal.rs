#![no_main]
//! Fuzz target `nat_signal`: the logic (and its invariant checks) lives in `nodenet_nat::fuzzing::nat_signal`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_nat::fuzzing::nat_signal(data));
