#![no_main]
//! Fuzz target `reader`: the logic (and its invariant checks) lives in `nodenet_wire::fuzzing::reader`, which the
//! corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nodenet_wire::fuzzing::reader(data);
});
