//! Replays the checked-in `parse_id` fuzz corpus through the target's logic.

use std::path::PathBuf;

#[test]
fn parse_id_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_id");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        nodenet_kad::fuzzing::parse_id(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus at {}", dir.display());
}
