#![no_main]
//! Fuzz target `birthday_probe`: the logic (and its invariant checks) lives in
//! `nodenet_nat::fuzzing::birthday_probe`, which the corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_nat::fuzzing::birthday_probe(data));
