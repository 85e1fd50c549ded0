//! What we know of each live connection beyond its peer: how it was opened (direct,
//! hole-punched, or through a relay, and which), what relays said of the peer's host, and
//! the rules that read it: which of two crossed connections to one peer stays, which
//! inbound connection is a relay's, and how many attestation rounds may run at once.
//!
//! A *link* is one transport connection, named by the driver's [`LinkId`]. The driver
//! reports links opening ([`Links::inbound`], [`Links::relayed`], [`Links::punched`]) and
//! closing ([`Links::closed`]); every table here is bounded by the number of live links or
//! by a constant, and every entry with a lifetime carries its own deadline on the core's
//! clock, so the rules run under a fake clock in tests. (The simulator does not use them
//! yet: its connects model relays and punches without per-link facts.)

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_routing::SubnetKey;
use nodenet_wire::Addr;

use nodenet_routing::Time;

/// The driver's name for one transport connection (its connection id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// How a link was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPath {
    /// Dialed or accepted on the peer's own address.
    Direct,
    /// Opened by a hole-punch (ours or the peer's).
    Punched,
    /// Carried by a volunteer relay.
    Relayed {
        /// The relay that carries it.
        carrier: NodeId,
    },
}

/// How long a relay's bind (a caller will come in from this address) stays valid.
pub const RELAY_BIND_TTL: Duration = Duration::from_secs(30);
/// At most this many relay binds are remembered; later ones are not (the caller's edge is
/// then taken as direct, which costs it only the relayed edge's special care).
pub const MAX_RELAY_BINDS: usize = 64;
/// At most this many of them from one relay, and as many naming one host, so one edge
/// claiming to relay (or a handful of identities on one machine) cannot take every slot and
/// make honest relayed callers look direct.
pub const MAX_RELAY_BINDS_PER_RELAY: usize = 8;
/// At most this many attestation rounds (asking relays where they see a peer) at once.
pub const MAX_ATTESTATION_ROUNDS: usize = 4;
/// Losing connections of crossed dials kept readable at once, at most (more are closed
/// at once).
pub const MAX_DRAINING: usize = 64;
/// Relays that must name the same host for a peer before a birthday punch aims at it (any
/// edge can claim to be a relay; one claim is not enough).
pub const ATTESTATIONS_NEEDED: usize = 2;

#[derive(Clone, Debug, Default)]
struct Link {
    carrier: Option<NodeId>,
    punched: bool,
    /// The host the carrying relay named for the peer in its grant.
    attested: Option<Addr>,
    /// An agreement of relays on the peer's host, once reached (kept while the link lives).
    trusted: Option<Addr>,
}

/// The per-link facts and the rules on them. See the module docs.
#[derive(Debug, Default)]
pub struct Links {
    /// Only links with something to say: a direct link nobody marked has no entry.
    links: HashMap<LinkId, Link>,
    /// Addresses relays told us a caller will come in from: (address, relay, deadline).
    binds: Vec<(Addr, NodeId, Time)>,
    /// Peers an attestation round is running for.
    attesting: HashSet<NodeId>,
    /// Losers of crossed dials, still readable for a grace period.
    draining: HashSet<LinkId>,
}

impl Links {
    /// A relay we hold an edge to says a caller will reach us from `addr` through it.
    /// Remembered until [`RELAY_BIND_TTL`] passes, within [`MAX_RELAY_BINDS`] in all and
    /// [`MAX_RELAY_BINDS_PER_RELAY`] from one relay or naming one host (a bind names an
    /// address on its relay's host); false if full. The same bind again only renews its
    /// deadline.
    pub fn bind(&mut self, now: Time, addr: Addr, relay: NodeId) -> bool {
        self.binds.retain(|(_, _, until)| *until > now);
        let until = now.after(RELAY_BIND_TTL);
        if let Some(b) = self
            .binds
            .iter_mut()
            .find(|(a, r, _)| *a == addr && *r == relay)
        {
            b.2 = until;
            return true;
        }
        let from_relay = self.binds.iter().filter(|(_, r, _)| *r == relay).count();
        let on_host = self
            .binds
            .iter()
            .filter(|(a, _, _)| same_host(a, &addr))
            .count();
        if self.binds.len() >= MAX_RELAY_BINDS
            || from_relay >= MAX_RELAY_BINDS_PER_RELAY
            || on_host >= MAX_RELAY_BINDS_PER_RELAY
        {
            return false;
        }
        self.binds.push((addr, relay, until));
        true
    }

    /// An inbound link from `peer` at `from` opened: if a live relay bind names that
    /// address, the link is the relay's and is marked relayed, and the bind is spent.
    /// A bind never marks the relay's own link (a peer cannot make its direct connection
    /// look relayed by binding its own address). Returns the carrier, if any.
    pub fn inbound(
        &mut self,
        now: Time,
        link: LinkId,
        peer: &NodeId,
        from: &Addr,
    ) -> Option<NodeId> {
        let i = self
            .binds
            .iter()
            .position(|(a, r, until)| a == from && r != peer && *until > now)?;
        let (_, relay, _) = self.binds.swap_remove(i);
        self.links.entry(link).or_default().carrier = Some(relay);
        Some(relay)
    }

    /// Our dial through `carrier` opened `link`; `attested` is the host the relay's grant
    /// named for the peer, if it named one for that peer.
    pub fn relayed(&mut self, link: LinkId, carrier: NodeId, attested: Option<Addr>) {
        let l = self.links.entry(link).or_default();
        l.carrier = Some(carrier);
        l.attested = attested;
    }

    /// `link` came from a hole-punch.
    pub fn punched(&mut self, link: LinkId) {
        self.links.entry(link).or_default().punched = true;
    }

    /// `link` closed: everything said of it goes.
    pub fn closed(&mut self, link: LinkId) {
        self.links.remove(&link);
        self.draining.remove(&link);
    }

    /// `link` lost a crossed dial: its frames are still the authenticated peer's and are
    /// read for a grace period, so what the peer queued on it before switching arrives.
    /// False when [`MAX_DRAINING`] drain already: close it at once.
    pub fn drain(&mut self, link: LinkId) -> bool {
        if self.draining.len() >= MAX_DRAINING {
            return false;
        }
        self.draining.insert(link);
        true
    }

    /// True while `link` drains.
    pub fn is_draining(&self, link: LinkId) -> bool {
        self.draining.contains(&link)
    }

    /// `link`'s grace period ended.
    pub fn drained(&mut self, link: LinkId) {
        self.draining.remove(&link);
    }

    /// How `link` was opened.
    pub fn path(&self, link: LinkId) -> LinkPath {
        match self.links.get(&link) {
            Some(Link {
                carrier: Some(carrier),
                ..
            }) => LinkPath::Relayed { carrier: *carrier },
            Some(l) if l.punched => LinkPath::Punched,
            _ => LinkPath::Direct,
        }
    }

    /// The relay carrying `link`, if it is relayed.
    pub fn carrier(&self, link: LinkId) -> Option<NodeId> {
        self.links.get(&link).and_then(|l| l.carrier)
    }

    /// True for a relayed link.
    pub fn is_relayed(&self, link: LinkId) -> bool {
        self.carrier(link).is_some()
    }

    /// The host the carrying relay's grant named for the peer of `link`.
    pub fn attested(&self, link: LinkId) -> Option<&Addr> {
        self.links.get(&link).and_then(|l| l.attested.as_ref())
    }

    /// The relays' agreed host for the peer of a relayed `link`, once reached.
    pub fn trusted(&self, link: LinkId) -> Option<&Addr> {
        self.links.get(&link).and_then(|l| l.trusted.as_ref())
    }

    /// Keeps an agreement of relays on the peer's host while the relayed `link` lives. Only
    /// for a relayed link: false (and nothing kept) otherwise, e.g. once it has closed.
    pub fn trust(&mut self, link: LinkId, host: Addr) -> bool {
        match self.links.get_mut(&link) {
            Some(l) if l.carrier.is_some() => {
                l.trusted = Some(host);
                true
            }
            _ => false,
        }
    }

    /// Live relayed links among `links`.
    pub fn count_relayed(&self, links: impl IntoIterator<Item = LinkId>) -> usize {
        links.into_iter().filter(|l| self.is_relayed(*l)).count()
    }

    /// Starts an attestation round for `peer`: false if one runs for it already or
    /// [`MAX_ATTESTATION_ROUNDS`] run. End it with [`Links::attested_round_done`].
    pub fn begin_attestation(&mut self, peer: NodeId) -> bool {
        self.attesting.len() < MAX_ATTESTATION_ROUNDS && self.attesting.insert(peer)
    }

    /// The attestation round for `peer` ended, however it ended.
    pub fn attested_round_done(&mut self, peer: &NodeId) {
        self.attesting.remove(peer);
    }

    /// Entries held (links with something said of them, binds, rounds, draining links).
    pub fn len(&self) -> usize {
        self.links.len() + self.binds.len() + self.attesting.len() + self.draining.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One relay's word on where it sees a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voice {
    /// The relay that spoke.
    pub relay: NodeId,
    /// The subnet our direct edge to it comes from (`None` off IP).
    pub net: Option<SubnetKey>,
    /// The host it names (an address with port 0).
    pub host: Addr,
}

/// The host every voice names, if they all agree and come from at least
/// [`ATTESTATIONS_NEEDED`] distinct relays on distinct subnets (where their edges have one);
/// `None` on any disagreement: one honest relay vetoes a lie, and one relay (or several
/// from one subnet, which one operator may run) cannot vouch alone.
pub fn agreed(voices: &[Voice]) -> Option<Addr> {
    use nodenet_nat::birthday::{host_of, same_host};
    let host_part = |e: &str| host_of(e).unwrap_or(e).to_owned();
    let first = voices.first()?;
    let h = host_part(&first.host.endpoint);
    if !voices
        .iter()
        .all(|v| same_host(&h, &host_part(&v.host.endpoint)))
    {
        return None;
    }
    let mut backers: Vec<&Voice> = Vec::new();
    for v in voices {
        let distinct = backers
            .iter()
            .all(|b| b.relay != v.relay && (b.net.is_none() || b.net != v.net));
        if distinct {
            backers.push(v);
        }
    }
    (backers.len() >= ATTESTATIONS_NEEDED).then(|| first.host.clone())
}

/// One of two connections to the same peer, as the crossed-dial tie-break sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossed {
    /// The NodeId of the side that dialed it.
    pub dialer: NodeId,
    /// It runs through a relay.
    pub relayed: bool,
}

/// Two connections to one peer (both sides dialed at once, or a punch or relay beside an
/// edge): true if `new` replaces `old`. A direct connection beats a relayed one, whoever
/// dialed; between two of a kind, both sides keep the one dialed by the smaller NodeId,
/// and the same side's later dial replaces its earlier one. Both ends compute the same
/// answer from the same facts, so they keep the same connection without a word.
pub fn keep_new(new: Crossed, old: Crossed) -> bool {
    if new.relayed == old.relayed {
        new.dialer <= old.dialer
    } else {
        old.relayed
    }
}

/// Both addresses on one host, on the same network: one IPv4 address (an IPv4-mapped IPv6
/// one counts as it), one IPv6 /64 (what one machine is usually given, as the transport's
/// per-IP cap counts it), or one name for endpoints that are not IP literals.
fn same_host(a: &Addr, b: &Addr) -> bool {
    a.net == b.net && host_key(&a.endpoint) == host_key(&b.endpoint)
}

#[derive(PartialEq, Eq)]
enum HostKey<'a> {
    V4(std::net::Ipv4Addr),
    V6Net([u16; 4]),
    Name(&'a str),
}

fn host_key(endpoint: &str) -> HostKey<'_> {
    use std::net::IpAddr;
    let host = nodenet_nat::birthday::host_of(endpoint).unwrap_or(endpoint);
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
    {
        Ok(IpAddr::V4(v4)) => HostKey::V4(v4),
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            HostKey::V6Net([s[0], s[1], s[2], s[3]])
        }
        Err(_) => HostKey::Name(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn addr(s: &str) -> Addr {
        Addr::new("udp", s)
    }

    #[test]
    fn a_bind_marks_the_inbound_link_from_its_address_until_it_expires() {
        let mut l = Links::default();
        let t0 = Time(0);
        assert!(l.bind(t0, addr("10.0.0.1:5"), id(7)));
        // Another address is not the relay's.
        assert_eq!(l.inbound(t0, LinkId(1), &id(2), &addr("10.0.0.1:6")), None);
        assert_eq!(l.path(LinkId(1)), LinkPath::Direct);
        assert_eq!(
            l.inbound(t0, LinkId(2), &id(2), &addr("10.0.0.1:5")),
            Some(id(7))
        );
        assert_eq!(l.path(LinkId(2)), LinkPath::Relayed { carrier: id(7) });
        // The bind is spent: a second link from that address is direct.
        assert_eq!(l.inbound(t0, LinkId(4), &id(3), &addr("10.0.0.1:5")), None);
        // Past its TTL a bind no longer speaks.
        assert!(l.bind(t0, addr("10.0.0.1:5"), id(7)));
        let late = t0.after(RELAY_BIND_TTL);
        assert_eq!(
            l.inbound(late, LinkId(3), &id(2), &addr("10.0.0.1:5")),
            None
        );
    }

    /// Attack: a peer binds its own address as its own relay, then connects directly, so
    /// its link counts as relayed (its birthday requests would then start attestation
    /// rounds, and a tie-break would go its way). A bind never marks its relay's own link.
    #[test]
    fn a_peer_cannot_make_its_own_direct_link_look_relayed() {
        let mut l = Links::default();
        let t0 = Time(0);
        assert!(l.bind(t0, addr("10.0.0.9:5"), id(9)));
        assert_eq!(l.inbound(t0, LinkId(1), &id(9), &addr("10.0.0.9:5")), None);
        assert_eq!(l.path(LinkId(1)), LinkPath::Direct);
        // The bind still serves the caller it was meant for.
        assert_eq!(
            l.inbound(t0, LinkId(2), &id(4), &addr("10.0.0.9:5")),
            Some(id(9))
        );
    }

    /// Attack: one edge sends bind after bind to take every slot, so that honest relayed
    /// callers come in looking direct (their reports of our address would then count).
    #[test]
    fn one_relay_cannot_take_every_bind() {
        let mut l = Links::default();
        let t0 = Time(0);
        for i in 0..MAX_RELAY_BINDS_PER_RELAY {
            assert!(l.bind(t0, addr(&format!("10.0.0.1:{i}")), id(1)));
        }
        assert!(
            !l.bind(t0, addr("10.0.0.1:999"), id(1)),
            "its share is full"
        );
        // Repeating a bind renews it and takes no slot.
        assert!(l.bind(t0.after(Duration::from_secs(20)), addr("10.0.0.1:0"), id(1)));
        assert_eq!(l.binds.len(), MAX_RELAY_BINDS_PER_RELAY);
        let later = t0.after(RELAY_BIND_TTL);
        assert_eq!(
            l.inbound(later, LinkId(1), &id(5), &addr("10.0.0.1:0")),
            Some(id(1)),
            "renewed"
        );
        // Another relay still binds.
        assert!(l.bind(t0, addr("10.0.0.2:1"), id(2)));
    }

    #[test]
    fn identities_on_one_host_cannot_take_every_bind() {
        let mut l = Links::default();
        let t0 = Time(0);
        // One relay identity per bind, all on one machine.
        for i in 0..MAX_RELAY_BINDS_PER_RELAY {
            let relay = id(u8::try_from(i + 1).unwrap());
            assert!(l.bind(t0, addr(&format!("10.0.0.1:{i}")), relay));
        }
        assert!(
            !l.bind(t0, addr("10.0.0.1:999"), id(100)),
            "the host's share is full, whoever claims to relay"
        );
        // A relay on another host still binds.
        assert!(l.bind(t0, addr("10.0.0.2:1"), id(101)));
    }

    #[test]
    fn one_host_is_one_ipv4_address_or_one_ipv6_64() {
        let same = |x: &str, y: &str| same_host(&addr(x), &addr(y));
        assert!(same("10.0.0.1:1", "10.0.0.1:2"));
        assert!(!same("10.0.0.1:1", "10.0.0.2:1"));
        assert!(same("[::ffff:10.0.0.1]:1", "10.0.0.1:2"), "IPv4-mapped");
        assert!(
            same("[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:2"),
            "one /64"
        );
        assert!(!same("[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1"));
        assert!(
            same("alice:1", "alice:2") && !same("alice:1", "bob:1"),
            "names"
        );
        assert!(!same("garbage", "10.0.0.1:1"));
        assert!(
            !same_host(&addr("10.0.0.1:1"), &Addr::new("mem", "10.0.0.1:1")),
            "net"
        );
    }

    #[test]
    fn binds_are_bounded_and_expired_ones_make_room() {
        let mut l = Links::default();
        let t0 = Time(0);
        for i in 0..MAX_RELAY_BINDS {
            let relay = id(u8::try_from(i / MAX_RELAY_BINDS_PER_RELAY).unwrap());
            let host = i / MAX_RELAY_BINDS_PER_RELAY;
            assert!(l.bind(t0, addr(&format!("10.0.{host}.1:{i}")), relay));
        }
        assert!(!l.bind(t0, addr("10.0.200.2:1"), id(200)), "full");
        assert_eq!(l.len(), MAX_RELAY_BINDS);
        assert!(l.bind(t0.after(RELAY_BIND_TTL), addr("10.0.200.2:1"), id(200)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_closed_link_forgets_everything() {
        let mut l = Links::default();
        l.relayed(LinkId(1), id(3), Some(addr("1.2.3.4:5")));
        assert!(l.trust(LinkId(1), addr("1.2.3.4:0")));
        assert_eq!(l.attested(LinkId(1)), Some(&addr("1.2.3.4:5")));
        assert_eq!(l.trusted(LinkId(1)), Some(&addr("1.2.3.4:0")));
        l.punched(LinkId(2));
        assert_eq!(l.path(LinkId(2)), LinkPath::Punched);
        assert_eq!(l.count_relayed([LinkId(1), LinkId(2), LinkId(9)]), 1);
        l.closed(LinkId(1));
        l.closed(LinkId(2));
        assert!(l.is_empty());
        // An agreement for a link that is gone (or never relayed) is not kept.
        assert!(!l.trust(LinkId(1), addr("1.2.3.4:0")));
        l.punched(LinkId(4));
        assert!(!l.trust(LinkId(4), addr("1.2.3.4:0")));
        assert_eq!(l.trusted(LinkId(4)), None);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn draining_is_bounded_and_ends_with_the_link() {
        let mut l = Links::default();
        for i in 0..MAX_DRAINING as u64 {
            assert!(l.drain(LinkId(i)));
        }
        assert!(!l.drain(LinkId(1000)), "full: close at once");
        assert!(l.is_draining(LinkId(3)));
        l.closed(LinkId(3));
        l.drained(LinkId(4));
        assert!(!l.is_draining(LinkId(3)) && !l.is_draining(LinkId(4)));
        assert!(l.drain(LinkId(1000)));
        assert_eq!(l.len(), MAX_DRAINING - 1);
    }

    #[test]
    fn attestation_rounds_are_one_per_peer_and_bounded() {
        let mut l = Links::default();
        assert!(l.begin_attestation(id(1)));
        assert!(!l.begin_attestation(id(1)), "one round per peer");
        for b in 2..=u8::try_from(MAX_ATTESTATION_ROUNDS).unwrap() {
            assert!(l.begin_attestation(id(b)));
        }
        assert!(!l.begin_attestation(id(100)), "bounded");
        l.attested_round_done(&id(1));
        assert!(l.begin_attestation(id(100)));
    }

    #[test]
    fn relays_must_agree_from_distinct_relays_and_subnets() {
        let net = |s: &str| SubnetKey::of_endpoint(s);
        let voice = |relay: u8, from: &str, host: &str| Voice {
            relay: id(relay),
            net: net(from),
            host: addr(host),
        };
        assert_eq!(agreed(&[]), None);
        // One relay cannot vouch alone, nor twice.
        let one = voice(1, "198.51.100.1:1", "203.0.113.7:0");
        assert_eq!(agreed(std::slice::from_ref(&one)), None);
        assert_eq!(agreed(&[one.clone(), one.clone()]), None);
        // Two relays on one subnet count once.
        let same_net = voice(2, "198.51.100.2:1", "203.0.113.7:0");
        assert_eq!(agreed(&[one.clone(), same_net]), None);
        // Two relays on two subnets agree.
        let other = voice(3, "192.0.2.1:1", "203.0.113.7:0");
        assert_eq!(
            agreed(&[one.clone(), other.clone()]),
            Some(addr("203.0.113.7:0"))
        );
        // One dissenting voice vetoes.
        let liar = voice(4, "233.252.0.1:1", "203.0.113.66:0");
        assert_eq!(agreed(&[one, other, liar]), None);
        // Off IP (no subnets), distinct relays are enough.
        let a = Voice {
            net: None,
            ..voice(5, "x", "203.0.113.7:0")
        };
        let b = Voice {
            net: None,
            ..voice(6, "x", "203.0.113.7:0")
        };
        assert_eq!(agreed(&[a, b]), Some(addr("203.0.113.7:0")));
    }

    #[test]
    fn crossed_dials_keep_the_same_connection_on_both_sides() {
        let (small, big) = (id(1), id(2));
        let direct = |dialer| Crossed {
            dialer,
            relayed: false,
        };
        let relayed = |dialer| Crossed {
            dialer,
            relayed: true,
        };
        // The smaller dialer's connection stays, whichever arrived first.
        assert!(keep_new(direct(small), direct(big)));
        assert!(!keep_new(direct(big), direct(small)));
        // The same side's later dial replaces its earlier one.
        assert!(keep_new(direct(big), direct(big)));
        // Direct beats relayed whoever dialed.
        assert!(keep_new(direct(big), relayed(small)));
        assert!(!keep_new(relayed(small), direct(big)));
    }
}
