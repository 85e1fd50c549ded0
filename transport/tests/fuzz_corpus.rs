//! Replays the checked-in fuzz corpus of the transport's decoders through their fuzz logic.

use nodenet_testkit::replay_corpus_reach;
use nodenet_transport::quic::fuzzing;

#[test]
fn peer_cert_corpus() {
    let r = replay_corpus_reach("peer_cert", fuzzing::peer_cert, fuzzing::PEER_CERT_CHECKS);
    for check in fuzzing::PEER_CERT_CHECKS {
        r.require(check, 1);
    }
}

#[test]
fn stream_prefix_corpus() {
    let r = replay_corpus_reach(
        "stream_prefix",
        fuzzing::stream_prefix,
        fuzzing::STREAM_PREFIX_CHECKS,
    );
    for check in fuzzing::STREAM_PREFIX_CHECKS {
        r.require(check, 1);
    }
}
