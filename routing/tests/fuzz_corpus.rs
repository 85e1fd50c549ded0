//! Replays the checked-in fuzz corpus of the routing decoders through their fuzz logic.

use nodenet_routing::fuzzing;
use nodenet_testkit::{replay_corpus, replay_corpus_reach};

#[test]
fn msg_corpus() {
    // Minimum shares, measured on the merged corpus (47 units) and halved.
    replay_corpus_reach("msg", fuzzing::msg, fuzzing::MSG_CHECKS).require_all(&[10, 2, 5]);
}

#[test]
fn neighbors_corpus() {
    replay_corpus("neighbors", fuzzing::neighbors);
}

#[test]
fn pong_corpus() {
    replay_corpus("pong", fuzzing::pong);
}

#[test]
fn nonce_corpus() {
    replay_corpus("nonce", fuzzing::nonce);
}

#[test]
fn closest_parity_corpus() {
    replay_corpus("closest_parity", fuzzing::closest_parity);
}
