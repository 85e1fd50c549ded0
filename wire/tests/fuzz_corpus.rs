//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through each wire fuzz target's
//! logic, so every `cargo test` exercises the fuzz invariants on known-interesting inputs.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus at {}", dir.display());
}

#[test]
fn frame_corpus() {
    replay("frame", nodenet_wire::fuzzing::frame);
}

#[test]
fn reader_corpus() {
    replay("reader", nodenet_wire::fuzzing::reader);
}

#[test]
fn addr_list_corpus() {
    replay("addr_list", nodenet_wire::fuzzing::addr_list);
}
