//! What the simulator measured, and the summary of its connects.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use nodenet_kad::NodeId;

use super::NatKind;
use crate::connect::Path;

/// How one connect ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRecord {
    /// The caller's node index.
    pub caller: usize,
    /// The target's node index.
    pub target: usize,
    /// The caller's NAT.
    pub from: NatKind,
    /// The target's NAT.
    pub to: NatKind,
    /// The path, or `None` if it failed.
    pub path: Option<Path>,
    /// The relay that carried it, if relayed.
    pub relay: Option<usize>,
    /// Simulated time from start to the end.
    pub time: Duration,
    /// The failed step and why, if it failed.
    pub failure: Option<String>,
    /// For a relayed connect: whether a birthday punch that followed (at once, or in a try
    /// of its upgrade schedule) replaced the relayed edge (`None`: none has ended yet; a pair
    /// that is no birthday pair is declined, `Some(false)`).
    pub birthday: Option<bool>,
    /// What the relay step did, in order (the relays found, linked, asked, and the dial
    /// through the relay): for diagnostics of a connect that failed there.
    pub relay_steps: Vec<String>,
    /// For a relayed connect: tries of its upgrade schedule that ran
    /// ([`crate::upgrade::UPGRADE_AFTER`]; each a punch, then a birthday punch).
    pub upgrade_tries: u32,
    /// For a relayed connect: how a try of its upgrade schedule replaced the relayed edge,
    /// if one did (a birthday punch that did also sets `birthday`).
    pub upgraded: Option<Upgraded>,
}

/// How an upgrade try replaced a relayed edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgraded {
    /// An ordinary hole-punch.
    Punched,
    /// A birthday punch.
    Birthday,
}

/// What the simulator measured about routed messages.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Route frames put on the wire (originated copies plus forwards).
    pub route_frames: u64,
    /// Hops of each delivered message (the first copy to arrive).
    pub hops: Vec<u8>,
    /// Messages delivered to their target's application.
    pub delivered: u64,
    /// Routed deliveries per node.
    pub delivered_at: HashMap<usize, u64>,
    /// Where Route copies stopped short of their target: (node, target).
    pub stuck: Vec<(usize, NodeId)>,
    /// Where rendezvous Hello copies stopped short of their target: (node, target).
    pub stuck_hellos: Vec<(usize, NodeId)>,
    /// Connects that ended, in the order they ended.
    pub connects: Vec<ConnectRecord>,
    /// Edges carried by each node as a relay, by node.
    pub relayed_by: Vec<u64>,
}

/// Path counts for one pair of NAT kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathMix {
    /// Direct.
    pub direct: u64,
    /// Punched (at connect time, or relayed and then replaced by an upgrade try's punch).
    pub punched: u64,
    /// Relayed, then replaced by a birthday-punched edge.
    pub birthday: u64,
    /// Relayed (and still).
    pub relayed: u64,
    /// Failed.
    pub failed: u64,
}

/// The connects of a run, summed up.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectSummary {
    /// Connects that ended.
    pub connects: u64,
    /// Of them, connected.
    pub succeeded: u64,
    /// Paths over all pairs.
    pub total: PathMix,
    /// Paths by (caller's NAT, target's NAT).
    pub by_pair: BTreeMap<(NatKind, NatKind), PathMix>,
    /// Connect time of the successful ones, median and 99th percentile.
    pub time_p50: Duration,
    /// See `time_p50`.
    pub time_p99: Duration,
    /// Relayed connects carried by the busiest relay.
    pub relay_max: u64,
    /// The 99th percentile of relayed connects per relay (over relays that carried one).
    pub relay_p99: u64,
    /// Relays that carried at least one relayed connect.
    pub relays_used: u64,
    /// Connects that went through a relay (still relayed, or punched or birthday-punched
    /// after it).
    pub relayed_pairs: u64,
    /// Failures by reason (step and error).
    pub failures: BTreeMap<String, u64>,
    /// Relayed connects that a birthday punch was tried on (and ended).
    pub birthday_tried: u64,
    /// Tries of relayed connects' upgrade schedules that ran.
    pub upgrade_tries: u64,
    /// Relayed connects whose edge an upgrade try replaced (punched or birthday-punched).
    pub upgraded: u64,
}

impl SimReport {
    /// Sums up the connects so far.
    pub fn connect_summary(&self) -> ConnectSummary {
        let mut total = PathMix::default();
        let mut by_pair: BTreeMap<(NatKind, NatKind), PathMix> = BTreeMap::new();
        let mut times = Vec::new();
        let mut per_relay: BTreeMap<usize, u64> = BTreeMap::new();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let (mut birthday_tried, mut upgrade_tries, mut upgraded) = (0, 0, 0);
        for c in &self.connects {
            upgrade_tries += u64::from(c.upgrade_tries);
            upgraded += u64::from(c.upgraded.is_some());
            let mix = by_pair.entry((c.from, c.to)).or_default();
            for m in [&mut total, mix] {
                match c.path {
                    Some(Path::Direct) => m.direct += 1,
                    Some(Path::Punched) => m.punched += 1,
                    Some(Path::Relayed) if c.birthday == Some(true) => m.birthday += 1,
                    Some(Path::Relayed) if c.upgraded == Some(Upgraded::Punched) => {
                        m.punched += 1;
                    }
                    Some(Path::Relayed) => m.relayed += 1,
                    None => m.failed += 1,
                }
            }
            if c.path.is_some() {
                times.push(c.time);
            }
            if c.birthday.is_some() {
                birthday_tried += 1;
            }
            if let Some(r) = c.relay {
                *per_relay.entry(r).or_default() += 1;
            }
            if let Some(f) = &c.failure {
                *failures.entry(f.clone()).or_default() += 1;
            }
        }
        times.sort_unstable();
        let mut loads: Vec<u64> = per_relay.values().copied().collect();
        loads.sort_unstable();
        let n = self.connects.len() as u64;
        ConnectSummary {
            connects: n,
            succeeded: n - total.failed,
            total,
            by_pair,
            time_p50: percentile(&times, 0.5).unwrap_or_default(),
            time_p99: percentile(&times, 0.99).unwrap_or_default(),
            relay_max: loads.last().copied().unwrap_or(0),
            relay_p99: percentile(&loads, 0.99).unwrap_or(0),
            relays_used: loads.len() as u64,
            relayed_pairs: loads.iter().sum(),
            failures,
            birthday_tried,
            upgrade_tries,
            upgraded,
        }
    }
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((last as f64) * p).round() as usize;
    sorted.get(i.min(last)).copied()
}

impl ConnectSummary {
    /// The summary as JSON fields (no braces around them), in a fixed order: the same run
    /// prints the same bytes.
    pub fn json_fields(&self) -> String {
        let mut out = String::new();
        let rate = if self.connects == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.connects as f64
        };
        // The busiest relay's part of all relayed pairs (the issue's "no relay carries more
        // than 5%").
        let share = if self.relayed_pairs == 0 {
            0.0
        } else {
            self.relay_max as f64 / self.relayed_pairs as f64
        };
        let _ = write!(
            out,
            "\"connects\":{},\"connect_success\":{:.4},\"path_direct\":{},\"path_punched\":{},\"path_birthday\":{},\"path_relayed\":{},\"birthday_tried\":{},\"upgrade_tries\":{},\"upgraded\":{},\"connect_failed\":{},\"connect_ms_p50\":{},\"connect_ms_p99\":{},\"relay_load_max\":{},\"relay_load_p99\":{},\"relays_used\":{},\"relayed_pairs\":{},\"relay_load_share\":{:.4}",
            self.connects,
            rate,
            self.total.direct,
            self.total.punched,
            self.total.birthday,
            self.total.relayed,
            self.birthday_tried,
            self.upgrade_tries,
            self.upgraded,
            self.total.failed,
            self.time_p50.as_millis(),
            self.time_p99.as_millis(),
            self.relay_max,
            self.relay_p99,
            self.relays_used,
            self.relayed_pairs,
            share,
        );
        out.push_str(",\"paths_by_pair\":{");
        for (k, ((a, b), m)) in self.by_pair.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "\"{}>{}\":{{\"direct\":{},\"punched\":{},\"birthday\":{},\"relayed\":{},\"failed\":{}}}",
                a.name(),
                b.name(),
                m.direct,
                m.punched,
                m.birthday,
                m.relayed,
                m.failed
            );
        }
        out.push_str("},\"failures\":{");
        for (k, (why, n)) in self.failures.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":{n}", why.escape_default());
        }
        out.push('}');
        out
    }
}
