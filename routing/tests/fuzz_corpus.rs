//! Replays the checked-in fuzz corpus of the routing decoders through their fuzz logic.

use nodenet_routing::fuzzing;
use nodenet_testkit::replay_corpus;

#[test]
fn msg_corpus() {
    replay_corpus("msg", fuzzing::msg);
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
