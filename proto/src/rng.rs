//! The core's random source: nonces, refresh targets and coverage lookups draw from it.
//!
//! Nonces are what stand between a node and a forged answer: "Neighbors only when we asked",
//! rendezvous replay protection, held punches and birthday probes all check that an answer
//! echoes one of ours. So they must be unpredictable to anyone who has seen others: the
//! source is ChaCha20 keyed with 256 bits from the operating system, whose output reveals
//! nothing of its key or of the outputs to come. A fixed seed is for tests and the simulator
//! only, and named so.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// A cryptographically secure generator for a [`crate::Core`].
pub struct CoreRng(ChaCha20Rng);

impl CoreRng {
    /// Keyed with 256 bits from the operating system: what every node should use.
    ///
    /// # Panics
    ///
    /// If the operating system has no random source to give (as `getrandom` reports it);
    /// a node without one could not make a single unpredictable nonce.
    pub fn from_os() -> Self {
        let mut key = [0u8; 32];
        rand_core::UnwrapErr(getrandom::SysRng).fill_bytes(&mut key);
        Self(ChaCha20Rng::from_seed(key))
    }

    /// Keyed from `seed` alone: the same seed gives the same stream. For tests and the
    /// simulator, which want runs they can repeat; a node on a real network must not use it,
    /// since anyone who guesses the seed predicts every nonce.
    pub fn deterministic(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        self.0.fill_bytes(out);
    }
}

impl std::fmt::Debug for CoreRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is the secret that makes the nonces unpredictable: never print it.
        f.write_str("CoreRng(..)")
    }
}
