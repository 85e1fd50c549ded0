//! The simulator's network: hosts, NAT devices in front of some of them, and relay sessions.
//!
//! Addresses are IPv4-like `(ip, port)` endpoints. Every node has one socket, on
//! [`SOCKET_PORT`] of its host, as a real node has one UDP socket for everything. A packet
//! leaves through the node's NAT devices, innermost first (each maps the source and records
//! whom it was sent to), travels, and enters through the devices in front of its destination,
//! outermost first (each lets it in only if its filter allows the source). Mappings never
//! expire (a run is minutes of simulated time; real NATs keep active UDP mappings that long).
//!
//! The models, by RFC 4787's terms:
//!
//! | kind | mapping | filtering | ports |
//! |---|---|---|---|
//! | full cone | endpoint-independent | endpoint-independent | preserved when free |
//! | address-restricted | endpoint-independent | address-dependent | preserved when free |
//! | port-restricted | endpoint-independent | address- and port-dependent | random |
//! | bare MASQUERADE | endpoint-independent | address- and port-dependent | preserved when free |
//! | symmetric | address- and port-dependent | address- and port-dependent | random |
//! | double NAT | MASQUERADE behind a port-restricted carrier-grade NAT | | |

use std::collections::{HashMap, HashSet};

/// The port of every node's socket.
pub const SOCKET_PORT: u16 = 4000;

/// An endpoint: an IPv4 address as a number, and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ep {
    /// The address.
    pub ip: u32,
    /// The port.
    pub port: u16,
}

impl Ep {
    /// Its text form, `a.b.c.d:port`.
    pub fn to_text(self) -> String {
        let [a, b, c, d] = self.ip.to_be_bytes();
        format!("{a}.{b}.{c}.{d}:{}", self.port)
    }

    /// Parses `a.b.c.d:port`.
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        let ip: std::net::Ipv4Addr = host.parse().ok()?;
        Some(Self {
            ip: u32::from(ip),
            port: port.parse().ok()?,
        })
    }
}

/// What sits in front of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatKind {
    /// Nothing: the node's own address is public.
    Public,
    /// Full cone.
    FullCone,
    /// Address-restricted cone.
    AddressRestricted,
    /// Port-restricted cone.
    PortRestricted,
    /// Linux MASQUERADE as a bare home router sets it up.
    Masquerade,
    /// Symmetric, with random ports.
    Symmetric,
    /// A MASQUERADE router behind a carrier-grade NAT.
    Double,
}

impl NatKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::Public,
        Self::FullCone,
        Self::AddressRestricted,
        Self::PortRestricted,
        Self::Masquerade,
        Self::Symmetric,
        Self::Double,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::FullCone => "full_cone",
            Self::AddressRestricted => "addr_restricted",
            Self::PortRestricted => "port_restricted",
            Self::Masquerade => "masquerade",
            Self::Symmetric => "symmetric",
            Self::Double => "double",
        }
    }

    /// Whether its mapping depends on the destination (no punch through it can be aimed).
    pub fn is_symmetric(self) -> bool {
        self == Self::Symmetric
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Open,
    Address,
    AddressPort,
}

#[derive(Debug)]
struct Device {
    ip: u32,
    independent: bool,
    preserve: bool,
    filter: Filter,
    /// (inside source, destination if the mapping depends on it) → outside port.
    map: HashMap<(Ep, Option<Ep>), u16>,
    /// Outside port → inside endpoint.
    rev: HashMap<u16, Ep>,
    /// (outside port, remote) the filter lets in; the remote's port is 0 under `Address`.
    allowed: HashSet<(u16, Ep)>,
}

impl Device {
    fn new(ip: u32, independent: bool, preserve: bool, filter: Filter) -> Self {
        Self {
            ip,
            independent,
            preserve,
            filter,
            map: HashMap::new(),
            rev: HashMap::new(),
            allowed: HashSet::new(),
        }
    }

    fn outbound(&mut self, src: Ep, dst: Ep, rng: &mut u64) -> Ep {
        let key = (src, (!self.independent).then_some(dst));
        let port = match self.map.get(&key) {
            Some(&p) => p,
            None => {
                let mut p = src.port;
                if !self.preserve || self.rev.contains_key(&p) {
                    loop {
                        p = 1024 + u16::try_from(next(rng) % 64_000).unwrap_or(0);
                        if !self.rev.contains_key(&p) {
                            break;
                        }
                    }
                }
                self.map.insert(key, p);
                self.rev.insert(p, src);
                p
            }
        };
        match self.filter {
            Filter::Open => {}
            Filter::Address => {
                self.allowed.insert((
                    port,
                    Ep {
                        ip: dst.ip,
                        port: 0,
                    },
                ));
            }
            Filter::AddressPort => {
                self.allowed.insert((port, dst));
            }
        }
        Ep { ip: self.ip, port }
    }

    fn inbound(&self, port: u16, src: Ep) -> Option<Ep> {
        let inside = *self.rev.get(&port)?;
        let ok = match self.filter {
            Filter::Open => true,
            Filter::Address => self.allowed.contains(&(
                port,
                Ep {
                    ip: src.ip,
                    port: 0,
                },
            )),
            Filter::AddressPort => self.allowed.contains(&(port, src)),
        };
        ok.then_some(inside)
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

#[derive(Clone, Copy, Debug)]
enum Owner {
    Node(usize),
    Device(usize),
}

/// A host on the map: what owns the address, and whether it is routed from anywhere (a
/// public address) or only from inside the device in front of it.
#[derive(Clone, Copy, Debug)]
struct Host {
    owner: Owner,
    public: bool,
}

/// One relay session: two ports on the relay's host, and who last sent to each.
#[derive(Debug)]
struct Session {
    relay: usize,
    caller: Ep,
    callee: Ep,
    caller_peer: Option<Ep>,
    callee_peer: Option<Ep>,
}

/// Where a packet arrived: at which node's socket, seen coming from where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The node.
    pub node: usize,
    /// The source as that node sees it.
    pub from: Ep,
    /// The node's socket it arrived at.
    pub at: Ep,
}

/// The network.
#[derive(Debug)]
pub struct Net {
    kinds: Vec<NatKind>,
    sockets: Vec<Ep>,
    chains: Vec<Vec<usize>>,
    devices: Vec<Device>,
    hosts: HashMap<u32, Host>,
    sessions: Vec<Session>,
    relay_ports: HashMap<Ep, (usize, bool)>,
    next_relay_port: HashMap<usize, u16>,
    /// Extra sockets nodes opened (a birthday punch's hard side), beside their own.
    extra: HashSet<Ep>,
    /// The next extra socket's port, per node.
    next_extra_port: HashMap<usize, u16>,
    rng: u64,
}

impl Net {
    /// A network of `kinds.len()` nodes, node `i` behind `kinds[i]`.
    pub fn new(kinds: &[NatKind], seed: u64) -> Self {
        let mut net = Self {
            kinds: kinds.to_vec(),
            sockets: Vec::new(),
            chains: Vec::new(),
            devices: Vec::new(),
            hosts: HashMap::new(),
            sessions: Vec::new(),
            relay_ports: HashMap::new(),
            next_relay_port: HashMap::new(),
            extra: HashSet::new(),
            next_extra_port: HashMap::new(),
            rng: seed | 1,
        };
        for (i, &kind) in kinds.iter().enumerate() {
            let n = u32::try_from(i).unwrap_or(u32::MAX);
            // Public hosts in 1.0.0.0/8, NAT routers in 2.0.0.0/8, carrier-grade NATs in
            // 3.0.0.0/8, home networks in 10.0.0.0/8, carrier networks in 100.64.0.0/10.
            let public = 0x0100_0000 + n;
            let router = 0x0200_0000 + n;
            let carrier = 0x0300_0000 + n;
            let home = 0x0a00_0000 + n;
            let cgn_inside = 0x6440_0000 + n;
            let device =
                |ip, independent, preserve, filter| Device::new(ip, independent, preserve, filter);
            let chain = match kind {
                NatKind::Public => vec![],
                NatKind::FullCone => vec![device(router, true, true, Filter::Open)],
                NatKind::AddressRestricted => vec![device(router, true, true, Filter::Address)],
                NatKind::PortRestricted => vec![device(router, true, false, Filter::AddressPort)],
                NatKind::Masquerade => vec![device(router, true, true, Filter::AddressPort)],
                NatKind::Symmetric => vec![device(router, false, false, Filter::AddressPort)],
                NatKind::Double => vec![
                    device(cgn_inside, true, true, Filter::AddressPort),
                    device(carrier, true, false, Filter::AddressPort),
                ],
            };
            let own = if kind == NatKind::Public {
                public
            } else {
                home
            };
            let host = |owner, public| Host { owner, public };
            net.hosts
                .insert(own, host(Owner::Node(i), kind == NatKind::Public));
            net.sockets.push(Ep {
                ip: own,
                port: SOCKET_PORT,
            });
            let mut ids = Vec::new();
            let outermost = chain.len().saturating_sub(1);
            for (k, d) in chain.into_iter().enumerate() {
                net.hosts
                    .insert(d.ip, host(Owner::Device(net.devices.len()), k == outermost));
                ids.push(net.devices.len());
                net.devices.push(d);
            }
            net.chains.push(ids);
        }
        net
    }

    /// Node `i`'s kind.
    pub fn kind(&self, i: usize) -> NatKind {
        self.kinds[i]
    }

    /// Node `i`'s socket (its own address; private behind a NAT).
    pub fn socket(&self, i: usize) -> Ep {
        self.sockets[i]
    }

    /// Where a node's traffic leaves the last NAT in front of it: the host a relay sees it
    /// come from (its own address when public).
    pub fn public_host(&self, i: usize) -> u32 {
        self.chains[i]
            .last()
            .map_or(self.sockets[i].ip, |&d| self.devices[d].ip)
    }

    /// Opens `n` more sockets on node `i`'s host (ports from 30,000 up).
    pub fn open_sockets(&mut self, i: usize, n: usize) -> Vec<Ep> {
        let ip = self.sockets[i].ip;
        let next = self.next_extra_port.entry(i).or_insert(30_000);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let ep = Ep { ip, port: *next };
            *next = next.wrapping_add(1);
            self.extra.insert(ep);
            out.push(ep);
        }
        out
    }

    /// A random number from the network's generator (deterministic per seed).
    pub fn random(&mut self) -> u64 {
        next(&mut self.rng)
    }

    /// Sends one packet from node `i`'s socket to `dst`; where it arrived, if it did. Relay
    /// sessions forward what reaches their ports.
    pub fn send(&mut self, i: usize, dst: Ep) -> Option<Arrival> {
        let own = self.sockets[i];
        self.send_from(i, own, dst)
    }

    /// [`Net::send`] from `local`, one of node `i`'s sockets.
    pub fn send_from(&mut self, i: usize, local: Ep, dst: Ep) -> Option<Arrival> {
        let mut src = local;
        for k in 0..self.chains[i].len() {
            let d = self.chains[i][k];
            src = self.devices[d].outbound(src, dst, &mut self.rng);
        }
        self.deliver(src, dst, 0)
    }

    fn deliver(&mut self, src: Ep, dst: Ep, depth: u8) -> Option<Arrival> {
        let mut at = dst;
        // From outside, only a public address is routed; past a device, its inside is.
        if !self.hosts.get(&at.ip)?.public {
            return None;
        }
        loop {
            match self.hosts.get(&at.ip)?.owner {
                Owner::Device(d) => at = self.devices[d].inbound(at.port, src)?,
                Owner::Node(n) if at.port == SOCKET_PORT || self.extra.contains(&at) => {
                    return Some(Arrival {
                        node: n,
                        from: src,
                        at,
                    });
                }
                Owner::Node(_) => {
                    let &(s, caller_side) = self.relay_ports.get(&at)?;
                    if depth > 0 {
                        return None;
                    }
                    let session = &mut self.sessions[s];
                    let (out, to) = if caller_side {
                        session.caller_peer = Some(src);
                        (session.callee, session.callee_peer?)
                    } else {
                        session.callee_peer = Some(src);
                        (session.caller, session.caller_peer?)
                    };
                    return self.deliver(out, to, depth + 1);
                }
            }
        }
    }

    /// Opens a relay session on node `relay`'s host (a public one): its caller-side and
    /// callee-side endpoints.
    pub fn open_relay(&mut self, relay: usize) -> (Ep, Ep) {
        let ip = self.sockets[relay].ip;
        let port = self.next_relay_port.entry(relay).or_insert(20_000);
        let (a, b) = (*port, port.wrapping_add(1));
        *port = port.wrapping_add(2);
        let (caller, callee) = (Ep { ip, port: a }, Ep { ip, port: b });
        let s = self.sessions.len();
        self.sessions.push(Session {
            relay,
            caller,
            callee,
            caller_peer: None,
            callee_peer: None,
        });
        self.relay_ports.insert(caller, (s, true));
        self.relay_ports.insert(callee, (s, false));
        (caller, callee)
    }

    /// The relay that owns `ep`, if it is a relay session's port.
    pub fn relay_of(&self, ep: Ep) -> Option<usize> {
        self.relay_ports
            .get(&ep)
            .map(|&(s, _)| self.sessions[s].relay)
    }

    /// A handshake from node `i` to `dst`: the first packet must arrive at node `want`, and
    /// its answer come back. Returns where each side sees the other (`i`'s view first).
    pub fn handshake(&mut self, i: usize, dst: Ep, want: usize) -> Option<(Ep, Ep)> {
        let own = self.sockets[i];
        self.handshake_from(i, own, dst, want)
    }

    /// [`Net::handshake`] from `local`, one of node `i`'s sockets; `want` answers from the
    /// socket it was reached at.
    pub fn handshake_from(
        &mut self,
        i: usize,
        local: Ep,
        dst: Ep,
        want: usize,
    ) -> Option<(Ep, Ep)> {
        let there = self.send_from(i, local, dst)?;
        if there.node != want {
            return None;
        }
        let back = self.send_from(want, there.at, there.from)?;
        (back.node == i && back.at == local).then_some((dst, there.from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `a` and `b` get a handshake through after both punched toward each other's
    /// mapped addresses (as learned from a public observer, node 0).
    fn punches(a: NatKind, b: NatKind) -> bool {
        let mut net = Net::new(&[NatKind::Public, a, b], 7);
        let observer = net.socket(0);
        let seen_a = net.send(1, observer).unwrap().from;
        let seen_b = net.send(2, observer).unwrap().from;
        // Both punch; then a dials b and b dials a.
        net.send(1, seen_b);
        net.send(2, seen_a);
        net.handshake(1, seen_b, 2).is_some() || net.handshake(2, seen_a, 1).is_some()
    }

    #[test]
    fn the_punch_matrix_is_the_textbook_one() {
        use NatKind::*;
        let cones = [
            FullCone,
            AddressRestricted,
            PortRestricted,
            Masquerade,
            Double,
        ];
        for a in cones {
            for b in cones {
                assert!(punches(a, b), "{a:?} x {b:?} should punch");
            }
        }
        // A symmetric NAT maps the punch toward the peer to a fresh port: only a peer that
        // filters by address alone (or not at all) lets it in.
        assert!(punches(Symmetric, FullCone));
        assert!(punches(Symmetric, AddressRestricted));
        for b in [PortRestricted, Masquerade, Double, Symmetric] {
            assert!(!punches(Symmetric, b), "symmetric x {b:?} should not punch");
        }
    }

    #[test]
    fn nobody_dials_into_a_nat_unasked_but_anyone_dials_a_public_node() {
        for kind in NatKind::ALL {
            // Node 1 has talked to node 0 only; node 2 is a stranger to it.
            let mut net = Net::new(&[NatKind::Public, kind, NatKind::Public], 3);
            let socket = net.socket(1);
            let mapped = net.send(1, net.socket(0)).unwrap().from;
            let from_public = net.handshake(2, mapped, 1).is_some();
            assert_eq!(
                from_public,
                kind == NatKind::Public || kind == NatKind::FullCone,
                "{kind:?}"
            );
            assert!(
                net.handshake(1, net.socket(0), 0).is_some(),
                "{kind:?} dials out"
            );
            if kind != NatKind::Public {
                assert!(
                    net.send(0, socket).is_none(),
                    "a private address is not routed"
                );
            }
        }
    }

    #[test]
    fn a_symmetric_nat_shows_each_destination_another_port() {
        let mut net = Net::new(&[NatKind::Public, NatKind::Public, NatKind::Symmetric], 5);
        let (o1, o2) = (net.socket(0), net.socket(1));
        let (a, b) = (net.send(2, o1).unwrap().from, net.send(2, o2).unwrap().from);
        assert_eq!(a.ip, b.ip);
        assert_ne!(a.port, b.port);
        let mut net = Net::new(&[NatKind::Public, NatKind::Public, NatKind::Masquerade], 5);
        let (a, b) = (net.send(2, o1).unwrap().from, net.send(2, o2).unwrap().from);
        assert_eq!((a, a.port), (b, SOCKET_PORT), "MASQUERADE keeps the port");
    }

    #[test]
    fn a_relay_carries_a_handshake_between_two_symmetric_nats() {
        let mut net = Net::new(
            &[NatKind::Public, NatKind::Symmetric, NatKind::Symmetric],
            9,
        );
        let (caller, callee) = net.open_relay(0);
        assert!(
            net.handshake(1, caller, 2).is_none(),
            "not before the callee's bind"
        );
        // The callee punches toward its side (the RelayBind); the relay passes it on to where
        // the caller's first attempt came from. Then the caller dials again.
        assert_eq!(net.send(2, callee).map(|a| a.node), Some(1));
        let (at, seen) = net.handshake(1, caller, 2).unwrap();
        assert_eq!((at, seen), (caller, callee));
        assert_eq!(net.relay_of(caller), Some(0));
    }

    #[test]
    fn endpoints_print_and_parse() {
        let ep = Ep {
            ip: 0x0a00_0102,
            port: 4000,
        };
        assert_eq!(ep.to_text(), "10.0.1.2:4000");
        assert_eq!(Ep::parse("10.0.1.2:4000"), Some(ep));
        assert_eq!(Ep::parse("n4"), None);
    }
}
