#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use nodenet_testkit::vectors;
use sha2::{Digest, Sha256};

use super::*;

fn rng() -> impl CryptoRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

#[test]
fn leading_zero_vectors() {
    let v = vectors();
    let cases = v["pow"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for case in cases {
        let what = case["description"].as_str().unwrap();
        let id: NodeId = case["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            u64::from(leading_zero_bits(&id)),
            case["leading_zero_bits"],
            "{what}"
        );
        for d in [0u32, 8, 16] {
            assert_eq!(
                verify(&id, d),
                case[format!("satisfies_{d}")],
                "{what} at {d}"
            );
        }
    }
}

#[test]
fn ground_seed_vectors() {
    // The reference, with one worker reading the seed stream SHA-256("nodenet-vectors/pow/" ||
    // u32_be(i)), stops at the listed index with the listed identity; so must we.
    let v = vectors();
    for case in v["pow"]["ground_seeds"].as_array().unwrap() {
        let difficulty = u32::try_from(case["difficulty"].as_u64().unwrap()).unwrap();
        let stream = (0u32..).map(|i| {
            let mut h = Sha256::new();
            h.update(b"nodenet-vectors/pow/");
            h.update(i.to_be_bytes());
            <[u8; 32]>::from(h.finalize())
        });
        let (index, identity) = Solver::new(difficulty)
            .unwrap()
            .solve_seeds(stream)
            .unwrap();
        assert_eq!(
            index as u64,
            case["index"].as_u64().unwrap(),
            "difficulty {difficulty}"
        );
        assert_eq!(hex::encode(identity.seed()), case["seed"]);
        assert_eq!(identity.node_id().to_string(), case["node_id"]);
        assert_eq!(
            u64::from(identity.node_id().leading_zeros()),
            case["leading_zero_bits"]
        );
    }
}

#[test]
fn solve_meets_the_difficulty_on_all_threads() {
    for threads in [1, 2, 4] {
        let solver = Solver::new(8)
            .unwrap()
            .threads(NonZeroUsize::new(threads).unwrap());
        let id = solver.solve(&mut rng()).unwrap();
        assert!(verify(&id.node_id(), 8));
        assert_eq!(id.node_id(), Identity::from_seed(id.seed()).node_id());
    }
    let id = solve(&mut rng(), 0).unwrap();
    assert!(verify(&id.node_id(), 0));
}

#[test]
fn unsatisfiable_difficulty_fails_up_front() {
    assert_eq!(
        solve(&mut rng(), 257).unwrap_err(),
        SolveError::Unsatisfiable { difficulty: 257 }
    );
    assert!(Solver::new(256).is_ok());
    assert!(verify(&NodeId::ZERO, 256));
}

#[test]
fn cancel_stops_every_worker() {
    let token = CancelToken::new();
    // 200 bits would take longer than the universe has left.
    let solver = Solver::new(200).unwrap().cancel_token(token.clone());
    let started = Instant::now();
    let handle = {
        let solver = solver.clone();
        std::thread::spawn(move || solver.solve(&mut rng()))
    };
    while solver.attempts() < 100 {
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "workers never started"
        );
    }
    token.cancel();
    assert!(token.is_cancelled());
    assert_eq!(handle.join().unwrap().unwrap_err(), SolveError::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(60));
}
