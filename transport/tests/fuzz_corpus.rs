//! Replays the checked-in fuzz corpus of the transport's decoders through their fuzz logic.

use nodenet_testkit::replay_corpus;
use nodenet_transport::quic::fuzzing;

#[test]
fn peer_cert_corpus() {
    replay_corpus("peer_cert", fuzzing::peer_cert);
}

#[test]
fn stream_prefix_corpus() {
    replay_corpus("stream_prefix", fuzzing::stream_prefix);
}
