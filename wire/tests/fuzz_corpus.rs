//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through each wire fuzz target's
//! logic, so every `cargo test` exercises the fuzz invariants on known-interesting inputs.

use nodenet_testkit::replay_corpus;
use nodenet_wire::fuzzing;

#[test]
fn frame_corpus() {
    replay_corpus("frame", fuzzing::frame);
}

#[test]
fn reader_corpus() {
    replay_corpus("reader", fuzzing::reader);
}

#[test]
fn addr_list_corpus() {
    replay_corpus("addr_list", fuzzing::addr_list);
}
