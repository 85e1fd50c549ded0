//! nodenet's routing core: the two tables, the routed envelope, greedy forwarding decisions
//! and the control protocol's codecs.
//!
//! Pure logic: no sockets, no tasks, no clock. Every function that needs time takes a
//! [`Time`] (nanoseconds of the caller's monotonic clock) and randomness comes in as bytes, so
//! the node and a discrete-event simulator drive it deterministically.
//!
//! - [`Knowledge`]: soft-state k-buckets (256 × K = 20, each with a replacement cache of 20).
//!   It heals lazily: last-seen tracking, eviction probes, refresh targets. It enforces the
//!   admission rules: key binding, proof-of-work for newcomers, subnet diversity.
//! - [`Edges`]: the live edges, actively maintained: siblings (the 16 closest) and fingers,
//!   the connectivity-floor phase, per-edge rate limits, and which contacts to dial next.
//! - [`decide`] and [`first_hops`]: recursive greedy forwarding and multi-path origination,
//!   without allocating.
//! - [`msg`] and [`control`]: the envelope and control-frame codecs.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::time::Duration;

pub mod control;
mod decide;
mod edges;
pub mod handlers;
mod knowledge;
pub mod msg;
mod subnet;

pub use control::{Caps, Contact, ContactList, ContactRef};
pub use decide::{Candidates, Decision, DropReason, FirstHops, MAX_CANDIDATES, decide, first_hops};
pub use edges::{
    CONTROL_BURST, CONTROL_RATE, Edge, Edges, FILL_HYSTERESIS, FORWARD_BURST, FORWARD_RATE, KMIN,
    LIVE_SUBNET_CAP, LOW_WATER, Phase, SIBLINGS, TARGET_EDGES,
};
pub use knowledge::{
    BUCKETS, K, Knowledge, KnowledgeStats, Observed, Rejection, SUBNET_CAP, id_in_bucket,
};
pub use subnet::SubnetKey;

/// A point on the driver's monotonic clock, in nanoseconds from an origin the driver chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The time `d` after this one.
    pub fn after(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A token bucket: `rate` tokens per second up to `burst`, with the time passed in.
///
/// A refused request consumes nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Time,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Time) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Time) -> bool {
        self.allow_n(now, 1.0)
    }

    /// Takes `n` tokens if there are that many.
    pub fn allow_n(&mut self, now: Time, n: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Tokens available at `now`.
    pub fn tokens(&mut self, now: Time) -> f64 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Time) {
        let dt = now.since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests;

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing {
    #![allow(
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "fuzz targets report by panicking"
    )]

    use nodenet_kad::NodeId;
    pub use nodenet_wire::fuzzing::Reached;
    use nodenet_wire::{Reader, Writer, uvarint_len};

    use crate::control::{self, Contact};
    use crate::msg::{MsgFields, MsgRef};
    use crate::{Knowledge, Time};

    /// The checks of [`msg`], in [`Reached`] bit order.
    pub const MSG_CHECKS: &[&str] = &[
        "re-encoding decodes to the same envelope",
        "minimal input re-encodes byte for byte",
        "non-minimal input re-encodes shorter by exactly its padding",
    ];

    /// The envelope decoder: whatever it accepts re-encodes to bytes that decode to the same
    /// envelope, whatever the length.
    ///
    /// Non-minimal uvarints (the avoid count, the payload length) are *accepted*: the
    /// reference decodes them (Go's `binary.Uvarint`), and NODENET-V1 says to accept what it
    /// sends and emit only the minimal form. The signature covers neither prefix, so a padded
    /// envelope verifies like its minimal twin. Hence: a minimal input re-encodes byte for
    /// byte; a padded one re-encodes shorter by exactly the padding of its two prefixes, with
    /// every other byte (header, avoid-set, payload, signature) unchanged.
    pub fn msg(data: &[u8]) -> Reached {
        const SAME: usize = 0;
        const MINIMAL: usize = 1;
        const PADDED: usize = 2;
        let mut reached = Reached::default();
        let Ok(m) = MsgRef::parse(data) else {
            return reached;
        };
        let avoid: Vec<NodeId> = m.avoid().collect();
        let f = MsgFields {
            target: m.target,
            ttl: m.ttl,
            ed_pub: m.ed_pub,
            sent: m.sent,
            avoid: &avoid,
            payload: m.payload,
            sig: m.sig,
        };
        let mut buf = vec![0u8; f.encoded_len()];
        f.encode(&mut Writer::new(&mut buf)).expect("fits");
        assert_eq!(
            MsgRef::parse(&buf),
            Ok(m),
            "the re-encoding decodes to the same envelope"
        );
        reached.hit(SAME);
        // The two prefixes as they arrived: the avoid count after the 73-byte header, the
        // payload length after the avoid-set.
        const HEADER: usize = 32 + 1 + 32 + 8;
        let width = |at: usize| {
            let mut r = Reader::new(&data[at..]);
            r.uvarint().expect("the decoder read a uvarint here");
            r.position()
        };
        let avoid_width = width(HEADER);
        let len_width = width(HEADER + avoid_width + 32 * avoid.len());
        let padding = avoid_width - uvarint_len(avoid.len() as u64) + len_width
            - uvarint_len(m.payload.len() as u64);
        assert_eq!(buf.len() + padding, data.len());
        if padding == 0 {
            assert_eq!(buf, data, "a minimal envelope round-trips byte for byte");
            reached.hit(MINIMAL);
        } else {
            let tail = m.payload.len() + m.sig.len();
            assert_eq!(buf[..HEADER], data[..HEADER]);
            assert_eq!(buf[buf.len() - tail..], data[data.len() - tail..]);
            reached.hit(PADDED);
        }
        let _ = m.originator();
        reached
    }

    /// The Neighbors payload decoder: accepted lists re-encode and decode to the same contacts.
    pub fn neighbors(data: &[u8]) {
        let Ok((nonce, list)) = control::parse_neighbors(data) else {
            return;
        };
        let contacts: Vec<Contact> = list.iter().map(|c| c.to_contact()).collect();
        assert_eq!(contacts.len(), list.len());
        let mut buf = vec![0u8; 8 + control::contacts_len(&contacts)];
        control::encode_neighbors(&mut Writer::new(&mut buf), &nonce, &contacts).expect("fits");
        let (n2, again) = control::parse_neighbors(&buf).expect("re-decodes");
        assert_eq!(n2, nonce);
        assert!(again.iter().map(|c| c.to_contact()).eq(contacts));
    }

    /// The Pong decoder: an accepted pong re-encodes canonically (never longer: length
    /// prefixes may arrive non-minimal) and parses back to the same address.
    pub fn pong(data: &[u8]) {
        let Ok(a) = control::parse_pong(data) else {
            return;
        };
        assert!(a.encoded_len() <= data.len());
        let mut buf = vec![0u8; a.encoded_len()];
        a.encode(&mut Writer::new(&mut buf)).expect("fits");
        assert_eq!(control::parse_pong(&buf), Ok(a));
    }

    /// The nonce decoder (Siblings, Lookup).
    pub fn nonce(data: &[u8]) {
        assert_eq!(control::parse_nonce(data).is_ok(), data.len() == 8);
    }

    /// Builds a table from the input's 32-byte ids (the first is ours, the last the target)
    /// and checks the tiered closest-N walk against a full scan.
    pub fn closest_parity(data: &[u8]) {
        let ids: Vec<NodeId> = data
            .chunks_exact(32)
            .map(|c| NodeId::from_bytes(c.try_into().expect("32 bytes")))
            .collect();
        let [me, rest @ .., target] = ids.as_slice() else {
            return;
        };
        let mut k = Knowledge::new(*me, 0);
        for id in rest {
            k.observe(&Contact::new(*id, vec![]), Time(0));
        }
        for n in [1, 3, 17] {
            let got: Vec<NodeId> = k.closest(target, n).iter().map(|c| c.id).collect();
            let mut all: Vec<NodeId> = k.iter().map(|c| c.id).collect();
            all.sort_by(|a, b| target.cmp_distance(a, b));
            all.truncate(n);
            assert_eq!(got, all);
        }
    }
}
