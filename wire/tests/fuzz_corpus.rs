//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through each wire fuzz target's
//! logic, so every `cargo test` exercises the fuzz invariants on known-interesting inputs.

use nodenet_testkit::{replay_corpus, replay_corpus_reach};
use nodenet_wire::fuzzing;

#[test]
fn frame_corpus() {
    replay_corpus("frame", fuzzing::frame);
}

#[test]
fn reader_corpus() {
    let r = replay_corpus_reach("reader", fuzzing::reader, fuzzing::READER_CHECKS);
    // Minimum shares, measured on the merged corpus (180 units) and halved.
    r.require_all(&[25, 20, 3, 25, 3, 7, 2, 50]);
}

#[test]
fn addr_list_corpus() {
    replay_corpus("addr_list", fuzzing::addr_list);
}
