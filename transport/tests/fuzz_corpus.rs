//! Replays the checked-in fuzz corpus of the transport's decoders through their fuzz logic.

use nodenet_testkit::replay_corpus_reach;
use nodenet_transport::quic::fuzzing;

#[test]
fn peer_cert_corpus() {
    let r = replay_corpus_reach("peer_cert", fuzzing::peer_cert, fuzzing::PEER_CERT_CHECKS);
    // Minimum shares, measured on the merged corpus (317 units) and halved.
    r.require_all(&[12, 12, 12, 12, 50, 5]);
}

#[test]
fn stream_prefix_corpus() {
    let r = replay_corpus_reach(
        "stream_prefix",
        fuzzing::stream_prefix,
        fuzzing::STREAM_PREFIX_CHECKS,
    );
    // Minimum shares, measured on the merged corpus (29 units) and halved.
    r.require_all(&[15, 15, 10, 15, 50]);
}

#[test]
fn stream_header_corpus() {
    let r = replay_corpus_reach(
        "stream_header",
        nodenet_transport::stream::fuzzing::stream_header,
        nodenet_transport::stream::fuzzing::STREAM_HEADER_CHECKS,
    );
    // Minimum shares, measured on the merged corpus (33 units, after 18.2M runs) and halved.
    r.require_all(&[18, 3, 3, 25]);
}
