//! Transport counters: every refusal and drop has a name, so an operator sees a flood being
//! shed instead of guessing.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters. All are monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Edges this side dialed successfully.
    pub dials_ok: u64,
    /// Dials that failed (no route, mismatch, timeout, refused).
    pub dials_failed: u64,
    /// Dials whose peer proved a NodeId other than the one dialed.
    pub dials_identity_mismatch: u64,
    /// Inbound edges accepted.
    pub inbound_accepted: u64,
    /// Inbound connections refused because the global inbound cap was reached.
    pub refused_inbound_cap: u64,
    /// Inbound connections refused because their IP was at its per-IP cap.
    pub refused_per_ip_cap: u64,
    /// Inbound attempts from an unproven source address answered with a QUIC Retry (the
    /// unvalidated budget was spent, or their IP or the node was at a cap).
    pub inbound_retried: u64,
    /// Handshakes that failed (bad or missing identity extension, garbage certificate, ...).
    pub handshake_failed: u64,
    /// Inbound edges closed for sending nothing within the first-frame timeout.
    pub first_frame_timeouts: u64,
    /// Edges closed because a peer broke the framing (a frame over 64 KiB, ...).
    pub protocol_violations: u64,
    /// Edges torn down because a frame missed the send deadline.
    pub send_timeouts: u64,
    /// Frames refused by [`crate::Conn::send`] because the edge's queue was full.
    pub send_queue_full: u64,
    /// Frames dropped by a link model or a partition (in-memory transport only).
    pub frames_dropped_by_link: u64,
    /// Relay sessions opened for other peers.
    pub relay_sessions: u64,
    /// Relay sessions refused at the session cap.
    pub relay_refused_busy: u64,
    /// Datagrams a relay session carried.
    pub relay_forwarded: u64,
    /// Datagrams a relay session dropped over its bandwidth or packet budget.
    pub relay_dropped_budget: u64,
    /// Datagrams from a host other than the one a relay side is pinned to.
    pub relay_dropped_foreign: u64,
}

/// Counters a [`TransportStats`] holds (the length of [`TransportStats::counters`]).
pub const TRANSPORT_COUNTERS: usize = 18;

impl TransportStats {
    /// Every counter as `(name, help, value)`, for exporters (Prometheus and the like).
    pub fn counters(&self) -> [(&'static str, &'static str, u64); TRANSPORT_COUNTERS] {
        [
            (
                "dials_ok",
                "Edges this side dialed successfully.",
                self.dials_ok,
            ),
            (
                "dials_failed",
                "Dials that failed (no route, mismatch, timeout, refused).",
                self.dials_failed,
            ),
            (
                "dials_identity_mismatch",
                "Dials whose peer proved a NodeId other than the one dialed.",
                self.dials_identity_mismatch,
            ),
            (
                "inbound_accepted",
                "Inbound edges accepted.",
                self.inbound_accepted,
            ),
            (
                "refused_inbound_cap",
                "Inbound connections refused because the global inbound cap was reached.",
                self.refused_inbound_cap,
            ),
            (
                "refused_per_ip_cap",
                "Inbound connections refused because their IP was at its per-IP cap.",
                self.refused_per_ip_cap,
            ),
            (
                "inbound_retried",
                "Inbound attempts from an unproven source address answered with a QUIC Retry (the /// unvalidated budget was spent, or their IP or the node was at a cap).",
                self.inbound_retried,
            ),
            (
                "handshake_failed",
                "Handshakes that failed (bad or missing identity extension, garbage certificate, ...).",
                self.handshake_failed,
            ),
            (
                "first_frame_timeouts",
                "Inbound edges closed for sending nothing within the first-frame timeout.",
                self.first_frame_timeouts,
            ),
            (
                "protocol_violations",
                "Edges closed because a peer broke the framing (a frame over 64 KiB, ...).",
                self.protocol_violations,
            ),
            (
                "send_timeouts",
                "Edges torn down because a frame missed the send deadline.",
                self.send_timeouts,
            ),
            (
                "send_queue_full",
                "Frames refused by [`crate::Conn::send`] because the edge's queue was full.",
                self.send_queue_full,
            ),
            (
                "frames_dropped_by_link",
                "Frames dropped by a link model or a partition (in-memory transport only).",
                self.frames_dropped_by_link,
            ),
            (
                "relay_sessions",
                "Relay sessions opened for other peers.",
                self.relay_sessions,
            ),
            (
                "relay_refused_busy",
                "Relay sessions refused at the session cap.",
                self.relay_refused_busy,
            ),
            (
                "relay_forwarded",
                "Datagrams a relay session carried.",
                self.relay_forwarded,
            ),
            (
                "relay_dropped_budget",
                "Datagrams a relay session dropped over its bandwidth or packet budget.",
                self.relay_dropped_budget,
            ),
            (
                "relay_dropped_foreign",
                "Datagrams from a host other than the one a relay side is pinned to.",
                self.relay_dropped_foreign,
            ),
        ]
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dials_ok: AtomicU64,
    pub(crate) dials_failed: AtomicU64,
    pub(crate) dials_identity_mismatch: AtomicU64,
    pub(crate) inbound_accepted: AtomicU64,
    pub(crate) refused_inbound_cap: AtomicU64,
    pub(crate) refused_per_ip_cap: AtomicU64,
    pub(crate) inbound_retried: AtomicU64,
    pub(crate) handshake_failed: AtomicU64,
    pub(crate) first_frame_timeouts: AtomicU64,
    pub(crate) protocol_violations: AtomicU64,
    pub(crate) send_timeouts: AtomicU64,
    pub(crate) send_queue_full: AtomicU64,
    pub(crate) frames_dropped_by_link: AtomicU64,
    pub(crate) relay_sessions: AtomicU64,
    pub(crate) relay_refused_busy: AtomicU64,
    pub(crate) relay_forwarded: AtomicU64,
    pub(crate) relay_dropped_budget: AtomicU64,
    pub(crate) relay_dropped_foreign: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            dials_ok: g(&self.dials_ok),
            dials_failed: g(&self.dials_failed),
            dials_identity_mismatch: g(&self.dials_identity_mismatch),
            inbound_accepted: g(&self.inbound_accepted),
            refused_inbound_cap: g(&self.refused_inbound_cap),
            refused_per_ip_cap: g(&self.refused_per_ip_cap),
            inbound_retried: g(&self.inbound_retried),
            handshake_failed: g(&self.handshake_failed),
            first_frame_timeouts: g(&self.first_frame_timeouts),
            protocol_violations: g(&self.protocol_violations),
            send_timeouts: g(&self.send_timeouts),
            send_queue_full: g(&self.send_queue_full),
            frames_dropped_by_link: g(&self.frames_dropped_by_link),
            relay_sessions: g(&self.relay_sessions),
            relay_refused_busy: g(&self.relay_refused_busy),
            relay_forwarded: g(&self.relay_forwarded),
            relay_dropped_budget: g(&self.relay_dropped_budget),
            relay_dropped_foreign: g(&self.relay_dropped_foreign),
        }
    }
}
