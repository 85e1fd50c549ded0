//! Replays the checked-in `parse_id` fuzz corpus through the target's logic.

#[test]
fn parse_id_corpus() {
    nodenet_testkit::replay_corpus("parse_id", nodenet_kad::fuzzing::parse_id);
}
