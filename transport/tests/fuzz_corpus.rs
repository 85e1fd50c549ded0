//! Replays the checked-in fuzz corpus of the transport's decoders through their fuzz logic.

use std::path::PathBuf;

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
fn peer_cert_corpus() {
    replay("peer_cert", nodenet_transport::quic::fuzzing::peer_cert);
}

#[test]
fn stream_prefix_corpus() {
    replay(
        "stream_prefix",
        nodenet_transport::quic::fuzzing::stream_prefix,
    );
}
