#![no_main]
//! Fuzz target `sealed_open`: the logic (and its invariant checks) lives in `nodenet_rendezvous::fuzzing::sealed_open`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nodenet_rendezvous::fuzzing::sealed_open(data);
});
