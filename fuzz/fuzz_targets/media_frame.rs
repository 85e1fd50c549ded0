#![no_main]
//! Fuzz target `media_frame`: the logic (and its invariant checks) lives in
//! `nodenet_transport::media::fuzzing::media_frame`, which the corpus-replay test also runs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodenet_transport::media::fuzzing::media_frame(data));
