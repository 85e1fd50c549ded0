//! The per-session receive budget and the token buckets that meter it.

use tokio::time::Instant;

/// The per-session receive budget: `(rate per second, burst)` of bytes and of packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaBudget {
    /// Bytes: 20 Mbit/s with a 256 KiB burst by default.
    pub bytes: (f64, f64),
    /// Packets (datagrams and messages): 4,000/s with a burst of 400 by default.
    pub packets: (f64, f64),
}

impl Default for MediaBudget {
    fn default() -> Self {
        Self {
            bytes: (20e6 / 8.0, 256.0 * 1024.0),
            packets: (4000.0, 400.0),
        }
    }
}

impl MediaBudget {
    /// No limit (for benchmarks that measure the path, not the budget).
    pub const UNLIMITED: Self = Self {
        bytes: (f64::INFINITY, f64::INFINITY),
        packets: (f64::INFINITY, f64::INFINITY),
    };
}

/// A token bucket on tokio's clock (so paused-clock tests meter in model time).
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new((rate, burst): (f64, f64)) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    pub(super) fn has(&mut self, n: f64) -> bool {
        self.refill();
        self.tokens >= n
    }

    pub(super) fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}
