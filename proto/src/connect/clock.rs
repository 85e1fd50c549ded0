//! The rendezvous retry clock.

use std::time::Duration;

use nodenet_routing::Time;

use super::RENDEZVOUS_RETRY;

/// The retry clock of one rendezvous: sent again after [`RENDEZVOUS_RETRY`], then twice as
/// long, and so on, until its deadline.
#[derive(Clone, Copy, Debug)]
pub struct RendezvousClock {
    deadline: Time,
    resend_at: Time,
    retry: Duration,
    timeout: Duration,
}

/// What a [`RendezvousClock`] says when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RendezvousTick {
    /// Not yet.
    Wait,
    /// Send the request again.
    Resend,
    /// Give up: no answer within the timeout.
    Expired,
}

impl RendezvousClock {
    /// A rendezvous sent at `now` that may take `timeout`.
    pub fn new(now: Time, timeout: Duration) -> Self {
        Self {
            deadline: now.after(timeout),
            resend_at: now.after(RENDEZVOUS_RETRY),
            retry: RENDEZVOUS_RETRY,
            timeout,
        }
    }

    /// When to call [`RendezvousClock::tick`] next.
    pub fn next(&self) -> Time {
        self.resend_at.min(self.deadline)
    }

    /// The timeout it was given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// What to do at `now`.
    pub fn tick(&mut self, now: Time) -> RendezvousTick {
        if now >= self.deadline {
            RendezvousTick::Expired
        } else if now >= self.resend_at {
            self.retry *= 2;
            self.resend_at = now.after(self.retry);
            RendezvousTick::Resend
        } else {
            RendezvousTick::Wait
        }
    }
}
