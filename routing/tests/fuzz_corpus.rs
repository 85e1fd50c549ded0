//! Replays the checked-in fuzz corpus of the routing decoders through their fuzz logic.

use std::path::PathBuf;

use nodenet_routing::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus at {}", dir.display());
}

#[test]
fn msg_corpus() {
    replay("msg", fuzzing::msg);
}

#[test]
fn neighbors_corpus() {
    replay("neighbors", fuzzing::neighbors);
}

#[test]
fn pong_corpus() {
    replay("pong", fuzzing::pong);
}

#[test]
fn nonce_corpus() {
    replay("nonce", fuzzing::nonce);
}

#[test]
fn closest_parity_corpus() {
    replay("closest_parity", fuzzing::closest_parity);
}
