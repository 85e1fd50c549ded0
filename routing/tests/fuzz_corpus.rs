//! Replays the checked-in fuzz corpus of the routing decoders through their fuzz logic.

use nodenet_routing::fuzzing;
use nodenet_testkit::{replay_corpus, replay_corpus_reach};

#[test]
fn msg_corpus() {
    replay_corpus_reach("msg", fuzzing::msg, fuzzing::MSG_CHECKS)
        .require("re-encoding decodes to the same envelope", 1)
        .require("minimal input re-encodes byte for byte", 1)
        .require(
            "non-minimal input re-encodes shorter by exactly its padding",
            1,
        );
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
