//! Test helpers shared by the nodenet crates (a dev-dependency only, never published).
//!
//! - [`vectors`]: the reference implementation's known-answer vectors, checked in under
//!   `testdata/`, with [`unhex`] and [`hex32`] to read their fields.
//! - [`replay_corpus`]: runs a fuzz target's logic over its checked-in corpus, so ordinary
//!   tests exercise every fuzz invariant; [`replay_corpus_reach`] also counts how many inputs
//!   reach each of the target's checks.
//! - [`netns`]: network namespaces for privileged tests, under a harness whose skips show.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::path::Path;

pub mod netns;

pub use serde_json::Value;

/// The known-answer vectors of the reference implementation.
pub fn vectors() -> Value {
    serde_json::from_str(include_str!("../../testdata/nodenet-v1.json")).expect("valid JSON")
}

/// A hex string field as bytes.
pub fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

/// A 32-byte hex field.
pub fn hex32(v: &Value) -> [u8; 32] {
    unhex(v).try_into().expect("32 bytes")
}

/// Runs `run` over every input of `fuzz/corpus/<target>/` and fails if there is none.
pub fn replay_corpus(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus at {}", dir.display());
}

/// How many inputs of a corpus reached each check of a fuzz target.
#[derive(Debug)]
pub struct CorpusReach {
    target: String,
    inputs: usize,
    counts: Vec<(&'static str, usize)>,
}

impl CorpusReach {
    /// Inputs replayed.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Inputs that reached `check`.
    pub fn count(&self, check: &str) -> usize {
        self.counts
            .iter()
            .find(|(name, _)| *name == check)
            .unwrap_or_else(|| panic!("{}: no check named {check:?}", self.target))
            .1
    }

    /// Fails unless at least one input, and at least `percent` % of the corpus, reached
    /// `check`: a fuzz assertion no input reaches is a test that cannot fail.
    pub fn require(&self, check: &str, percent: usize) -> &Self {
        let n = self.count(check);
        assert!(
            n > 0 && n * 100 >= percent * self.inputs,
            "{}: only {n} of {} corpus inputs reach {check:?} (want {percent}%)",
            self.target,
            self.inputs
        );
        self
    }

    /// [`CorpusReach::require`] for every check, in the target's order: `percents[i]` is the
    /// share (in %) of the corpus that must reach check `i`.
    pub fn require_all(&self, percents: &[usize]) {
        assert_eq!(
            percents.len(),
            self.counts.len(),
            "{}: one share per check",
            self.target
        );
        for ((check, _), &p) in self.counts.iter().zip(percents) {
            self.require(check, p);
        }
    }
}

/// Runs `run` over every input of `fuzz/corpus/<target>/` like [`replay_corpus`], counting
/// the inputs that reach each of the target's `checks` (bit `i` of what `run` returns stands
/// for `checks[i]`). The counts go to stderr (`cargo test -- --nocapture` shows them).
pub fn replay_corpus_reach(
    target: &str,
    run: fn(&[u8]) -> nodenet_wire::fuzzing::Reached,
    checks: &'static [&'static str],
) -> CorpusReach {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut counts: Vec<(&'static str, usize)> = checks.iter().map(|c| (*c, 0)).collect();
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let reached = run(&std::fs::read(entry.unwrap().path()).unwrap());
        for (i, (_, n)) in counts.iter_mut().enumerate() {
            *n += usize::from(reached.has(i));
        }
        inputs += 1;
    }
    assert!(inputs > 0, "empty corpus at {}", dir.display());
    for (check, n) in &counts {
        eprintln!("{target}: {n:4} of {inputs} inputs reach {check}");
    }
    CorpusReach {
        target: target.to_owned(),
        inputs,
        counts,
    }
}

/// An address of a vector: `{"net": .., "endpoint": ..}`.
pub fn addr(v: &Value) -> nodenet_wire::Addr {
    nodenet_wire::Addr::new(
        v["net"].as_str().expect("net"),
        v["endpoint"].as_str().expect("endpoint"),
    )
}

/// A list of vector addresses.
pub fn addrs(v: &Value) -> Vec<nodenet_wire::Addr> {
    v.as_array().expect("a list").iter().map(addr).collect()
}
