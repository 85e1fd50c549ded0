//! Identity proof-of-work: the price of a NodeId.
//!
//! A NodeId is admissible at difficulty `d` when it has at least `d` leading zero bits. Since a
//! NodeId is the hash of a public key derived from a seed, the only way to get one is to grind
//! seeds: about `2^d` derivations. Checking costs one look at the high bits. There is no
//! separate challenge and nothing to store: the leading zeros *are* the work.
//!
//! The difficulty is a network-wide constant chosen by whoever deploys the network
//! (protocol consensus, tier 1); `0` turns the check off and anything above 256 cannot be met.
//! Verification is a tier-2 check applied on every edge, every routed frame and every
//! newcomer to the tables.
//!
//! ```no_run
//! use nodenet_pow::{Solver, verify};
//! # fn rng() -> impl rand_core::CryptoRng { rand_core::UnwrapErr(getrandom::SysRng) }
//! let identity = Solver::new(16)?.solve(&mut rng())?;
//! assert!(verify(&identity.node_id(), 16));
//! # Ok::<(), nodenet_pow::SolveError>(())
//! ```
//!
//! Minting uses every core ([`Solver::threads`] to change that) and can be cancelled from
//! another thread with a [`CancelToken`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nodenet_identity::{Identity, SEED_LEN, node_id_from_seed};
use nodenet_kad::{ID_BITS, NodeId};
use rand_core::CryptoRng;

/// The largest difficulty that can be met: every bit zero.
pub const MAX_DIFFICULTY: u32 = ID_BITS;

/// How many seeds a worker tries between looks at the cancel and found flags.
const CHECK_EVERY: u64 = 64;

/// Leading zero bits of `id`: the work it carries, 0 ..= 256.
pub fn leading_zero_bits(id: &NodeId) -> u32 {
    id.leading_zeros()
}

/// True when `id` meets `difficulty`. Difficulty 0 admits every ID.
pub fn verify(id: &NodeId, difficulty: u32) -> bool {
    leading_zero_bits(id) >= difficulty
}

/// Mints an identity that meets `difficulty`, on all cores. Shorthand for
/// `Solver::new(difficulty)?.solve(rng)`.
pub fn solve<R: CryptoRng + ?Sized>(rng: &mut R, difficulty: u32) -> Result<Identity, SolveError> {
    Solver::new(difficulty)?.solve(rng)
}

/// Why minting stopped without an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SolveError {
    /// No 256-bit ID has more than 256 leading zero bits.
    #[error("difficulty {difficulty} cannot be met: a NodeId has {MAX_DIFFICULTY} bits")]
    Unsatisfiable {
        /// The difficulty asked for.
        difficulty: u32,
    },
    /// The [`CancelToken`] fired.
    #[error("minting was cancelled")]
    Cancelled,
}

/// A handle that stops a running [`Solver`] from any thread.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token: every solver watching it returns [`SolveError::Cancelled`] soon after.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once [`CancelToken::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Mints identities at a difficulty: the builder behind [`solve`].
#[derive(Clone, Debug)]
pub struct Solver {
    difficulty: u32,
    threads: NonZeroUsize,
    cancel: CancelToken,
    attempts: Arc<AtomicU64>,
}

impl Solver {
    /// A solver for `difficulty`, using every core.
    pub fn new(difficulty: u32) -> Result<Self, SolveError> {
        if difficulty > MAX_DIFFICULTY {
            return Err(SolveError::Unsatisfiable { difficulty });
        }
        let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            difficulty,
            threads,
            cancel: CancelToken::new(),
            attempts: Arc::default(),
        })
    }

    /// Uses `n` worker threads instead of one per core.
    pub fn threads(mut self, n: NonZeroUsize) -> Self {
        self.threads = n;
        self
    }

    /// Stops when `token` fires.
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// Seeds tried so far by this solver (and its clones), for progress reports and benchmarks.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Grinds seeds until one meets the difficulty.
    ///
    /// Each worker draws one 32-byte base from `rng` and walks seeds `base ⊕ counter`: a
    /// bijection of a uniformly random value, so every seed tried is uniformly random and the
    /// random source is read only once per worker. The first hit stops the others; all
    /// workers are joined before this returns.
    pub fn solve<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<Identity, SolveError> {
        if self.difficulty == 0 {
            let mut seed = [0u8; SEED_LEN];
            rng.fill_bytes(&mut seed);
            return Ok(Identity::from_seed(&seed));
        }
        let bases: Vec<[u8; SEED_LEN]> = (0..self.threads.get())
            .map(|_| {
                let mut b = [0u8; SEED_LEN];
                rng.fill_bytes(&mut b);
                b
            })
            .collect();
        let found = AtomicBool::new(false);
        let winner = std::thread::scope(|s| {
            let handles: Vec<_> = bases
                .iter()
                .map(|base| s.spawn(|| self.grind(base, &found)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .next()
        });
        match winner {
            Some(seed) => Ok(Identity::from_seed(&seed)),
            None => Err(SolveError::Cancelled),
        }
    }

    /// Tries the seeds of `seeds` in order, on the calling thread, and returns the first
    /// identity that meets the difficulty with its index in the stream. `None` when the stream
    /// ends (or the token fires) first. Deterministic: for reproducing a known mint.
    pub fn solve_seeds<I>(&self, seeds: I) -> Option<(usize, Identity)>
    where
        I: IntoIterator<Item = [u8; SEED_LEN]>,
    {
        for (i, seed) in seeds.into_iter().enumerate() {
            if i as u64 % CHECK_EVERY == 0 && self.cancel.is_cancelled() {
                return None;
            }
            self.attempts.fetch_add(1, Ordering::Relaxed);
            if verify(&node_id_from_seed(&seed), self.difficulty) {
                return Some((i, Identity::from_seed(&seed)));
            }
        }
        None
    }

    fn grind(&self, base: &[u8; SEED_LEN], found: &AtomicBool) -> Option<[u8; SEED_LEN]> {
        let mut counter: u64 = 0;
        loop {
            if counter % CHECK_EVERY == 0 {
                if counter > 0 {
                    self.attempts.fetch_add(CHECK_EVERY, Ordering::Relaxed);
                }
                if found.load(Ordering::Relaxed) || self.cancel.is_cancelled() {
                    return None;
                }
            }
            let mut seed = *base;
            for (s, c) in seed[SEED_LEN - 8..].iter_mut().zip(counter.to_be_bytes()) {
                *s ^= c;
            }
            if verify(&node_id_from_seed(&seed), self.difficulty) {
                found.store(true, Ordering::Relaxed);
                self.attempts
                    .fetch_add(counter % CHECK_EVERY + 1, Ordering::Relaxed);
                return Some(seed);
            }
            counter = counter.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests;
