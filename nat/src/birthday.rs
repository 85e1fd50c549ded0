//! Hard-NAT ("birthday") hole-punching: the pure parts.
//!
//! A symmetric NAT gives every destination a fresh random port, so there is no address to
//! punch toward. Between a **hard** side (symmetric) and an **easy** one (public or cone,
//! with a confirmed mapping) the birthday technique still meets:
//!
//! - the hard side opens `n` fresh sockets (default 256) and sends one [probe](encode_probe)
//!   from each toward the easy side's confirmed mapping, at a low TTL (the packets need only
//!   open the hard side's own NAT, not reach a router that might react to them); that opens
//!   `n` random ports on its NAT, each letting in exactly the easy side's mapping;
//! - the easy side sends probes from its one socket to distinct random ports of the hard
//!   side's public IP, paced (default 100/s) and capped (default 1,750); one in about
//!   65,536 / `n` of them lands on an open port. With `m` probes the chance of a hit is
//!   `1 − exp(−n·m / 64,512)`: 98.2% for 256 × 1,000, 99.9% for 256 × 1,750 (behind real
//!   NATs under load we saw fewer hits than 1,000 probes promise, so the cap is the
//!   upper end of the range measured);
//! - the hard side accepts only a probe that carries the attempt's token and comes from the
//!   easy side's confirmed mapping, and dials from the socket it came in on: that socket's
//!   mapping is the one hole through both NATs.
//!
//! Two hard sides would need tens of thousands of probes each; [`plan`] sends them to a
//! relay. [`Limits`] keeps attempts rare enough that they never look like a port scan: one
//! at a time per node, a minimum interval between attempts, a per-peer backoff after
//! failures, and a global budget of probes.

use std::collections::HashMap;
use std::time::Duration;

use nodenet_kad::NodeId;

use crate::{NONCE_LEN, NatType};

/// A probe: `0x00 'n' 'b' 0x01 | token(16)`. Its first byte has the top two bits clear, so
/// a QUIC stack that receives one drops it as a non-QUIC packet.
pub const PROBE_MAGIC: [u8; 4] = [0x00, b'n', b'b', 0x01];
/// Length of a probe.
pub const PROBE_LEN: usize = PROBE_MAGIC.len() + NONCE_LEN;

/// Encodes a probe carrying `token` (the attempt's Connect nonce).
pub fn encode_probe(token: &[u8; NONCE_LEN]) -> [u8; PROBE_LEN] {
    let mut out = [0u8; PROBE_LEN];
    out[..PROBE_MAGIC.len()].copy_from_slice(&PROBE_MAGIC);
    out[PROBE_MAGIC.len()..].copy_from_slice(token);
    out
}

/// The token of a probe, if `datagram` is exactly one.
pub fn decode_probe(datagram: &[u8]) -> Option<[u8; NONCE_LEN]> {
    if datagram.len() != PROBE_LEN || datagram[..PROBE_MAGIC.len()] != PROBE_MAGIC {
        return None;
    }
    datagram[PROBE_MAGIC.len()..].try_into().ok()
}

/// How two sides should meet, given our NAT type and whether the peer is behind a
/// symmetric NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Neither side is hard: an ordinary hole-punch.
    Punch,
    /// One side is hard: a birthday punch, in which we play the hard side or the easy one.
    Birthday {
        /// We are the hard side (we open the sockets).
        hard: bool,
    },
    /// Both are hard, or we do not know our own NAT: stay on a relay.
    Relay,
}

/// Classifies a pair (easy ↔ easy: punch; easy ↔ hard: birthday; hard ↔ hard: relay).
pub fn plan(ours: NatType, peer_hard: bool) -> Plan {
    match (ours, peer_hard) {
        (NatType::Symmetric, true) | (NatType::Unknown, _) => Plan::Relay,
        (NatType::Symmetric, false) => Plan::Birthday { hard: true },
        (_, true) => Plan::Birthday { hard: false },
        (_, false) => Plan::Punch,
    }
}

/// The knobs of birthday punching. The defaults follow the measurements in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BirthdayConfig {
    /// Sockets the hard side opens.
    pub sockets: usize,
    /// TTL of the hard side's probes.
    pub ttl: u32,
    /// Probes the easy side sends per second.
    pub probe_rate: u32,
    /// Probes the easy side sends at most per attempt.
    pub max_probes: u32,
    /// How long an attempt may take in all.
    pub timeout: Duration,
    /// Least time between two attempts of one node.
    pub min_interval: Duration,
    /// First backoff for a peer after a failed attempt; it doubles per failure...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// Probes (sent as the easy side) a node may spend per hour, all attempts together.
    pub probes_per_hour: u32,
}

impl Default for BirthdayConfig {
    fn default() -> Self {
        Self {
            sockets: 256,
            ttl: 5,
            probe_rate: 100,
            max_probes: 1750,
            timeout: Duration::from_secs(25),
            min_interval: Duration::from_secs(20),
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(3600),
            probes_per_hour: 10_000,
        }
    }
}

/// Why an attempt may not start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Another attempt of this node is running.
    #[error("another birthday attempt is running")]
    Busy,
    /// The last attempt started less than the minimum interval ago.
    #[error("the last birthday attempt was too recent")]
    TooSoon,
    /// This peer failed recently; it waits out its backoff.
    #[error("this peer is backing off after a failed attempt")]
    Backoff,
    /// The hourly probe budget is spent.
    #[error("the probe budget is spent")]
    Budget,
}

/// The rate limits of one node's birthday attempts. Pure: the caller passes the time (any
/// monotonic clock, as a duration since a fixed start).
#[derive(Clone, Debug)]
pub struct Limits {
    config: BirthdayConfig,
    running: bool,
    last_start: Option<Duration>,
    /// The start of the last attempt before the running one (an abandoned attempt's start
    /// does not count toward the interval).
    played_start: Option<Duration>,
    /// Per peer: (not before, the next failure's backoff).
    backoff: HashMap<NodeId, (Duration, Duration)>,
    /// Probe tokens left, and when they were last refilled.
    probes: f64,
    refilled: Duration,
}

/// Peers whose backoff is remembered at most (the oldest-expiring go first).
const MAX_BACKOFF_ENTRIES: usize = 4096;

impl Limits {
    /// Limits under `config`, with a full probe budget.
    pub fn new(config: BirthdayConfig) -> Self {
        Self {
            config,
            running: false,
            last_start: None,
            played_start: None,
            backoff: HashMap::new(),
            probes: f64::from(config.probes_per_hour),
            refilled: Duration::ZERO,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BirthdayConfig {
        &self.config
    }

    fn refill(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.refilled).as_secs_f64();
        self.refilled = now;
        let cap = f64::from(self.config.probes_per_hour);
        self.probes = (self.probes + dt * cap / 3600.0).min(cap);
    }

    /// Starts an attempt with `peer` at `now` that may send up to `probes` probes (0 for the
    /// hard side, which sends one per socket at a TTL that keeps them near home).
    pub fn start(&mut self, peer: NodeId, now: Duration, probes: u32) -> Result<(), Refusal> {
        if self.running {
            return Err(Refusal::Busy);
        }
        if self
            .last_start
            .is_some_and(|t| now.saturating_sub(t) < self.config.min_interval)
        {
            return Err(Refusal::TooSoon);
        }
        if self
            .backoff
            .get(&peer)
            .is_some_and(|(until, _)| now < *until)
        {
            return Err(Refusal::Backoff);
        }
        self.refill(now);
        if self.probes < f64::from(probes) {
            return Err(Refusal::Budget);
        }
        self.probes -= f64::from(probes);
        self.running = true;
        self.played_start = self.last_start;
        self.last_start = Some(now);
        Ok(())
    }

    /// Gives back `probes` of what [`Limits::start`] took, the ones an attempt that ended
    /// early did not send.
    pub fn refund(&mut self, probes: u32) {
        let cap = f64::from(self.config.probes_per_hour);
        self.probes = (self.probes + f64::from(probes)).min(cap);
    }

    /// Ends the running attempt that never played (the peer declined, or it was never
    /// asked): nothing was sent, so its `probes` come back, the peer is not backed off, and
    /// the minimum interval counts from the attempt before. Without a running attempt, does
    /// nothing.
    pub fn abandon(&mut self, probes: u32) {
        if !self.running {
            return;
        }
        self.running = false;
        self.last_start = self.played_start;
        self.refund(probes);
    }

    /// Ends the running attempt: a success clears the peer's backoff, a failure doubles it.
    pub fn finish(&mut self, peer: NodeId, now: Duration, success: bool) {
        self.running = false;
        if success {
            self.backoff.remove(&peer);
            return;
        }
        if self.backoff.len() >= MAX_BACKOFF_ENTRIES && !self.backoff.contains_key(&peer) {
            self.backoff.retain(|_, (until, _)| *until > now);
            if self.backoff.len() >= MAX_BACKOFF_ENTRIES {
                let first = self
                    .backoff
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(id, _)| *id);
                if let Some(id) = first {
                    self.backoff.remove(&id);
                }
            }
        }
        let delay = self
            .backoff
            .get(&peer)
            .map_or(self.config.backoff, |(_, next)| *next);
        let next = (delay * 2).min(self.config.max_backoff);
        self.backoff.insert(peer, (now + delay, next));
    }
}

/// The public host (the address without its port) on which at least `quorum` of `reports`
/// agree: what a node behind a symmetric NAT can say of where it is, although every peer
/// sees it at another port.
pub fn agreed_host<'a>(
    reports: impl IntoIterator<Item = &'a str>,
    quorum: usize,
) -> Option<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for endpoint in reports {
        if let Some(host) = host_of(endpoint) {
            *count.entry(host).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, n)| *n >= quorum)
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(h, _)| h.to_owned())
}

/// The host part of an endpoint: `"203.0.113.7:4000"` → `"203.0.113.7"`, `"[::1]:5"` →
/// `"[::1]"`; `None` without a port separator.
pub fn host_of(endpoint: &str) -> Option<&str> {
    endpoint.rsplit_once(':').map(|(host, _)| host)
}

/// Whether two hosts name the same machine: equal IPs (an IPv4-mapped IPv6 address equals
/// its IPv4 one, brackets aside), or equal strings for hosts that are not IP literals (the
/// in-memory transport's names).
pub fn same_host(a: &str, b: &str) -> bool {
    let ip = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    };
    match (ip(a), ip(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a == b,
        _ => false,
    }
}

/// The host a birthday punch may aim at: the peer's `claimed` endpoint's host when the relay
/// that carries the pair attested the same host (`attested`, an endpoint with port 0), and
/// `None` otherwise: no attestation (a reference relay), or a claim the relay contradicts.
pub fn verified_host<'a>(attested: Option<&str>, claimed: &'a str) -> Option<&'a str> {
    let seen = host_of(attested?)?;
    let claimed = host_of(claimed)?;
    same_host(seen, claimed).then_some(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_host_the_relay_attested_is_verified() {
        assert_eq!(
            verified_host(Some("203.0.113.7:0"), "203.0.113.7:40000"),
            Some("203.0.113.7")
        );
        assert_eq!(
            verified_host(Some("[::ffff:203.0.113.7]:0"), "203.0.113.7:0"),
            Some("203.0.113.7")
        );
        assert_eq!(
            verified_host(Some("[2001:db8::1]:0"), "[2001:db8::1]:9"),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            verified_host(Some("natsym0:0"), "natsym0:0"),
            Some("natsym0")
        );
        // No relay's word, or one that contradicts the claim: nothing to aim at.
        assert_eq!(verified_host(None, "203.0.113.7:0"), None);
        assert_eq!(verified_host(Some("198.51.100.1:0"), "203.0.113.7:0"), None);
        assert_eq!(verified_host(Some("203.0.113.7:0"), "203.0.113.70:0"), None);
        assert_eq!(verified_host(Some("natsym0:0"), "203.0.113.7:0"), None);
        assert_eq!(verified_host(Some("203.0.113.7"), "203.0.113.7:0"), None);
        assert_eq!(verified_host(Some("203.0.113.7:0"), "203.0.113.7"), None);
    }

    #[test]
    fn probes_round_trip_and_nothing_else_decodes() {
        let token = [7u8; NONCE_LEN];
        let p = encode_probe(&token);
        assert_eq!(decode_probe(&p), Some(token));
        assert_eq!(decode_probe(&p[..PROBE_LEN - 1]), None);
        let mut longer = p.to_vec();
        longer.push(0);
        assert_eq!(decode_probe(&longer), None);
        assert_eq!(decode_probe(&crate::PUNCH_DATAGRAM), None);
        let mut bad = p;
        bad[1] = b'x';
        assert_eq!(decode_probe(&bad), None);
    }

    proptest::proptest! {
        #[test]
        fn probes_round_trip(token in proptest::prelude::any::<[u8; NONCE_LEN]>(), junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let p = encode_probe(&token);
            proptest::prop_assert_eq!(decode_probe(&p), Some(token));
            crate::fuzzing::birthday_probe(&p);
            crate::fuzzing::birthday_probe(&junk);
        }
    }

    #[test]
    fn fuzz_corpus_birthday_probe() {
        nodenet_testkit::replay_corpus("birthday_probe", crate::fuzzing::birthday_probe);
    }

    #[test]
    fn plans_follow_the_pair() {
        use NatType::*;
        assert_eq!(plan(Cone, false), Plan::Punch);
        assert_eq!(plan(Public, false), Plan::Punch);
        assert_eq!(plan(Cone, true), Plan::Birthday { hard: false });
        assert_eq!(plan(Public, true), Plan::Birthday { hard: false });
        assert_eq!(plan(Symmetric, false), Plan::Birthday { hard: true });
        assert_eq!(plan(Symmetric, true), Plan::Relay);
        assert_eq!(plan(Unknown, false), Plan::Relay);
    }

    /// An attempt the peer declined (or that was never asked) sent nothing: it neither backs
    /// the peer off nor delays the next attempt, and its probes come back. Before, a callee
    /// whose relays had not answered yet cost the pair a minute's backoff, and the relayed
    /// edge stayed relayed.
    #[test]
    fn an_attempt_that_never_played_costs_nothing() {
        let secs = Duration::from_secs;
        let mut l = Limits::new(BirthdayConfig::default());
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        assert_eq!(l.start(b, secs(50), 1000), Ok(()));
        l.finish(b, secs(51), true);
        assert_eq!(l.start(a, secs(100), 9000), Ok(()));
        l.abandon(9000);
        assert_eq!(
            l.start(a, secs(101), 9000),
            Ok(()),
            "no backoff, no interval"
        );
        l.abandon(9000);
        // The interval still counts from the last attempt that played.
        assert_eq!(l.start(b, secs(69), 1000), Err(Refusal::TooSoon));
        // A failure that played still backs off.
        assert_eq!(l.start(a, secs(102), 1000), Ok(()));
        l.finish(a, secs(103), false);
        assert_eq!(l.start(a, secs(130), 1000), Err(Refusal::Backoff));
        // abandon() without a running attempt changes nothing.
        l.abandon(5000);
        assert_eq!(l.start(b, secs(130), 9001), Err(Refusal::Budget));
    }

    #[test]
    fn limits_space_attempts_back_off_and_budget_probes() {
        let secs = Duration::from_secs;
        let mut l = Limits::new(BirthdayConfig::default());
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        assert_eq!(l.start(a, secs(100), 1000), Ok(()));
        assert_eq!(l.start(b, secs(101), 1000), Err(Refusal::Busy));
        l.finish(a, secs(105), false);
        assert_eq!(l.start(b, secs(110), 1000), Err(Refusal::TooSoon));
        // a backs off for 60 s from its failure, then 120 s after the next.
        assert_eq!(l.start(a, secs(130), 1000), Err(Refusal::Backoff));
        assert_eq!(l.start(a, secs(165), 1000), Ok(()));
        l.finish(a, secs(166), false);
        assert_eq!(l.start(a, secs(250), 1000), Err(Refusal::Backoff));
        assert_eq!(l.start(a, secs(286), 1000), Ok(()));
        l.finish(a, secs(290), true);
        // A success clears it.
        assert_eq!(l.start(a, secs(310), 1000), Ok(()));
        l.finish(a, secs(311), true);
        // Budget: 10,000 an hour; 4,000 spent so far, so 6,000 left plus what 231 s refilled
        // (about 640).
        assert_eq!(l.start(b, secs(331), 6700), Err(Refusal::Budget));
        assert_eq!(l.start(b, secs(331), 6600), Ok(()));
        assert_eq!(BirthdayConfig::default().max_probes, 1750);
        l.finish(b, secs(332), true);
        assert_eq!(l.start(b, secs(352), 1000), Err(Refusal::Budget));
        // An hour refills it.
        assert_eq!(l.start(b, secs(4000), 1000), Ok(()));
        l.finish(b, secs(4001), true);
        // What an attempt did not send comes back.
        assert_eq!(l.start(b, secs(4030), 9000), Ok(()));
        l.refund(8000);
        l.finish(b, secs(4031), true);
        assert_eq!(l.start(b, secs(4060), 8000), Ok(()));
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut l = Limits::new(BirthdayConfig {
            min_interval: Duration::ZERO,
            ..BirthdayConfig::default()
        });
        let a = NodeId::from_bytes([1; 32]);
        let mut now = Duration::ZERO;
        for _ in 0..12 {
            while l.start(a, now, 0).is_err() {
                now += Duration::from_secs(1);
            }
            l.finish(a, now, false);
        }
        let start = now;
        while l.start(a, now, 0).is_err() {
            now += Duration::from_secs(1);
        }
        assert_eq!(now - start, Duration::from_secs(3600));
    }

    #[test]
    fn the_agreed_host_needs_a_quorum() {
        let r = ["1.2.3.4:100", "1.2.3.4:200", "5.6.7.8:1", "1.2.3.4:300"];
        assert_eq!(agreed_host(r, 3).as_deref(), Some("1.2.3.4"));
        assert_eq!(agreed_host(r[..2].iter().copied(), 3), None);
        assert_eq!(
            agreed_host(["natsym:30001", "natsym:30002", "natsym:30003"], 3).as_deref(),
            Some("natsym")
        );
    }
}
