//! Learning our own public address from what neighbours see, without trusting any one of them.
//!
//! Every neighbour answers our Ping with a Pong naming the address our packets came from. We
//! keep each neighbour's latest report (one per neighbour, at most [`MAX_REPORTERS`]), tagged
//! with the neighbour's own subnet as we see it, and drop it when its edge goes down.
//!
//! **Confirmation.** An address is confirmed when at least [`QUORUM`] distinct neighbours
//! report it and, if any of those reports carries subnet information, they come from at least
//! [`MIN_SUBNETS`] distinct subnets. One neighbour, or a crowd of them on one network, cannot
//! plant an address on us; a quorum from independent networks can. Among several confirmed
//! addresses the one with the most reporters wins, ties going to the smaller address.
//!
//! **Symmetric NAT.** When at least [`QUORUM`] neighbours have reported but no address has
//! [`QUORUM`] reporters, each neighbour sees us from a different place: the NAT maps every
//! destination to a fresh port. Agreement that lacks subnet diversity is "unconfirmed", not
//! "symmetric".

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use nodenet_kad::NodeId;
use nodenet_wire::{Addr, AddrRef};

/// Distinct neighbours that must agree on an address.
pub const QUORUM: usize = 3;
/// Distinct reporter subnets a confirmation needs when reporters have subnets.
pub const MIN_SUBNETS: usize = 2;
/// Reports kept at most (the oldest goes first).
pub const MAX_REPORTERS: usize = 1024;

/// What the node concludes about the network between it and the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatType {
    /// Not enough reports yet (or no agreement from independent networks).
    Unknown,
    /// Neighbours see us at an address of our own: no NAT in the way.
    Public,
    /// Behind a NAT that maps us to one public address whoever we talk to (endpoint-
    /// independent mapping): hole-punching works.
    Cone,
    /// Behind a NAT that maps each destination to a fresh port: punching toward a reported
    /// address cannot work, so a relay is needed.
    Symmetric,
}

impl NatType {
    /// The name the control API and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Cone => "cone",
            Self::Symmetric => "symmetric",
        }
    }
}

#[derive(Clone, Debug)]
struct Report {
    addr: Addr,
    subnet: Option<[u8; 16]>,
    seq: u64,
}

/// The neighbours' reports of our address.
#[derive(Clone, Debug, Default)]
pub struct Reflexive {
    reports: HashMap<NodeId, Report>,
    seq: u64,
}

impl Reflexive {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `reporter` (whose own subnet is `subnet`, if it has one) sees us at `addr`,
    /// replacing its earlier report.
    pub fn report(&mut self, reporter: NodeId, addr: Addr, subnet: Option<[u8; 16]>) {
        self.seq += 1;
        if !self.reports.contains_key(&reporter) && self.reports.len() >= MAX_REPORTERS {
            let oldest = self
                .reports
                .iter()
                .min_by_key(|(_, r)| r.seq)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.reports.remove(&id);
            }
        }
        let seq = self.seq;
        self.reports.insert(reporter, Report { addr, subnet, seq });
    }

    /// Forgets `reporter`'s report (its edge went down).
    pub fn remove(&mut self, reporter: &NodeId) {
        self.reports.remove(reporter);
    }

    /// The reported addresses, one per reporter.
    pub fn reported(&self) -> impl Iterator<Item = &Addr> {
        self.reports.values().map(|r| &r.addr)
    }

    /// Neighbours with a report.
    pub fn reporters(&self) -> usize {
        self.reports.len()
    }

    /// Reporters per address, with their distinct subnets and whether any had one.
    fn tally(&self) -> Vec<(&Addr, usize, usize, bool)> {
        let mut by_addr: HashMap<&Addr, (usize, Vec<[u8; 16]>, bool)> = HashMap::new();
        for r in self.reports.values() {
            let e = by_addr.entry(&r.addr).or_default();
            e.0 += 1;
            if let Some(s) = r.subnet {
                e.2 = true;
                if !e.1.contains(&s) {
                    e.1.push(s);
                }
            }
        }
        by_addr
            .into_iter()
            .map(|(a, (n, subnets, any))| (a, n, subnets.len(), any))
            .collect()
    }

    /// The confirmed address, if any (see the module docs for the rule).
    pub fn confirmed(&self) -> Option<&Addr> {
        self.verdict().0
    }

    /// [`Reflexive::confirmed`] and [`Reflexive::symmetric`] from one tally: what a caller
    /// that caches the verdict reads after each change of the reports.
    pub fn verdict(&self) -> (Option<&Addr>, bool) {
        let tally = self.tally();
        let symmetric = self.reports.len() >= QUORUM && tally.iter().all(|&(_, n, ..)| n < QUORUM);
        let confirmed = tally
            .into_iter()
            .filter(|&(_, n, subnets, any)| n >= QUORUM && (!any || subnets >= MIN_SUBNETS))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(a, ..)| a);
        (confirmed, symmetric)
    }

    /// At least [`QUORUM`] neighbours reported, and no one address has [`QUORUM`] of them.
    pub fn symmetric(&self) -> bool {
        self.verdict().1
    }

    /// Classifies the node; `is_local` says whether an address belongs to this host.
    pub fn nat_type(&self, is_local: impl Fn(&Addr) -> bool) -> NatType {
        match self.confirmed() {
            Some(a) if is_local(a) => NatType::Public,
            Some(_) => NatType::Cone,
            None if self.symmetric() => NatType::Symmetric,
            None => NatType::Unknown,
        }
    }
}

/// The socket address in `addr` if it is one a node may be reached at on the internet or a
/// private network: a literal `ip:port` that is not loopback, unspecified, multicast,
/// link-local or broadcast, with a non-zero port. Reflexive reports and punch targets must
/// pass it (a hostname never does: resolving a peer's string would let it aim us anywhere).
pub fn reachable(addr: AddrRef<'_>) -> Option<SocketAddr> {
    let sa: SocketAddr = addr.endpoint.parse().ok()?;
    let ok = sa.port() != 0
        && match sa.ip() {
            IpAddr::V4(ip) => {
                !(ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_link_local()
                    || ip.is_broadcast())
            }
            IpAddr::V6(ip) => {
                !(ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_unicast_link_local())
            }
        };
    ok.then_some(sa)
}
