//! Shared harness of nodenet's benchmark binaries.
//!
//! Every binary under `src/bin/` measures one thing and prints exactly one JSON line,
//! `{"bench":"<name>", ...figures}`, so figures can be compared from commit to commit:
//!
//! ```text
//! cargo run --release -p nodenet-benches --bin <name>
//! ```
//!
//! Allocations are counted by [`CountingAlloc`], which each binary installs as its global
//! allocator. Wall-clock figures on a shared machine are noisy; allocation counts are exact.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

mod alloc;
mod raw;

pub use alloc::{CountingAlloc, allocations};
pub use raw::raw_quinn_mib_s;

/// Runs `op` `iters` times, five rounds over, and returns (nanoseconds per op in the fastest
/// round, allocations per op over all rounds).
///
/// On a shared machine interference only ever adds time, so the fastest round is the best
/// estimate of the code's own cost; allocation counts are exact either way. A short warm-up
/// runs first, so lazily initialised state is not charged to the measurement.
pub fn measure<T>(iters: u64, mut op: impl FnMut(u64) -> T) -> (f64, f64) {
    const ROUNDS: u64 = 5;
    for i in 0..iters.min(1000) {
        black_box(op(i));
    }
    let per_round = (iters / ROUNDS).max(1);
    let allocs_before = allocations();
    let mut best = f64::INFINITY;
    for r in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..per_round {
            black_box(op(r * per_round + i));
        }
        best = best.min(start.elapsed().as_nanos() as f64 / per_round as f64);
    }
    let allocs = allocations() - allocs_before;
    (best, allocs as f64 / (per_round * ROUNDS) as f64)
}

/// One JSON line of figures, built field by field.
#[derive(Debug)]
pub struct JsonLine(String);

impl JsonLine {
    /// Starts `{"bench":"<name>"`.
    pub fn new(bench: &str) -> Self {
        Self(format!("{{\"bench\":\"{bench}\""))
    }

    /// Adds a number, rounded to three decimals (integers print as integers). A value that
    /// is not finite (a figure that could not be measured) prints as `null`, so the line
    /// stays valid JSON.
    pub fn num(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            let v = (value * 1000.0).round() / 1000.0;
            let _ = write!(self.0, ",\"{key}\":{v}");
        } else {
            let _ = write!(self.0, ",\"{key}\":null");
        }
        self
    }

    /// Adds a string.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        let _ = write!(self.0, ",\"{key}\":\"{}\"", value.escape_default());
        self
    }

    /// Adds ready-made JSON fields (`"key":value,...`, no braces).
    pub fn raw(mut self, fields: &str) -> Self {
        if !fields.is_empty() {
            self.0.push(',');
            self.0.push_str(fields);
        }
        self
    }

    /// Prints the line to stdout.
    pub fn print(mut self) {
        self.0.push('}');
        println!("{}", self.0);
    }
}

/// A fast deterministic generator for benchmark inputs (xorshift64*); not for cryptography.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds the generator (zero is replaced by a fixed constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 32 pseudo-random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}
