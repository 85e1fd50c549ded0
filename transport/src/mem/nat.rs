//! NAT models: mapping and filtering behaviour, and the per-host box that applies them.

use super::*;

/// How a NAT picks the public port for a node's outbound traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mapping {
    /// One public port per node, whoever it talks to (a "cone" NAT).
    EndpointIndependent,
    /// A fresh public port per destination (a "symmetric" NAT).
    EndpointDependent,
}

/// Which inbound packets a NAT lets through to a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Filtering {
    /// Anyone, once the mapping exists (full cone).
    EndpointIndependent,
    /// Only hosts the node has sent to (address-restricted).
    AddressRestricted,
    /// Only the exact `host:port` endpoints the node has sent to (port-restricted).
    PortRestricted,
}

/// A NAT in front of one or more in-memory nodes. Its public addresses are
/// `mem/<host>:<port>`, ports handed out from 30000 up; mappings never expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatModel {
    /// How ports are mapped.
    pub mapping: Mapping,
    /// What is let in.
    pub filtering: Filtering,
    /// Whether an unsolicited packet it drops still claims its `(public port, source)` pair
    /// for [`CLAIM_TTL`], as Linux conntrack does behind a bare `MASQUERADE` with no
    /// stateful firewall: the claim keeps that source out of the port, and the node's own
    /// packets to that source leave from a fresh port. A hole-punch against such a NAT works
    /// only if the node behind it sends first.
    pub claims_dropped: bool,
    /// Whether new mappings get random ports in 1024–65535 (seeded by the NAT's host name,
    /// so runs repeat) rather than the next free one from 30000: a symmetric NAT then gives
    /// no hint of its next port, as Linux's `MASQUERADE --random-fully` does.
    pub random_ports: bool,
}

impl NatModel {
    /// Endpoint-independent mapping and filtering.
    pub const FULL_CONE: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::EndpointIndependent,
        claims_dropped: false,
        random_ports: false,
    };
    /// Endpoint-independent mapping, address-restricted filtering.
    pub const ADDRESS_RESTRICTED: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressRestricted,
        claims_dropped: false,
        random_ports: false,
    };
    /// Endpoint-independent mapping, port-restricted filtering.
    pub const PORT_RESTRICTED: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: false,
    };
    /// A Linux router with `MASQUERADE` and no stateful firewall: port-restricted, and a
    /// dropped unsolicited packet claims its port for its source ([`NatModel::claims_dropped`]).
    pub const LINUX_MASQUERADE: Self = Self {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: true,
        random_ports: false,
    };
    /// Endpoint-dependent mapping on random ports, port-restricted filtering: what a
    /// birthday punch must get through.
    pub const SYMMETRIC_RANDOM: Self = Self {
        mapping: Mapping::EndpointDependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: true,
    };
    /// Endpoint-dependent mapping, port-restricted filtering.
    pub const SYMMETRIC: Self = Self {
        mapping: Mapping::EndpointDependent,
        filtering: Filtering::PortRestricted,
        claims_dropped: false,
        random_ports: false,
    };
}

/// How long a dropped packet's claim on a port lasts (Linux's timeout for an unreplied UDP
/// conntrack entry).
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct NatBox {
    pub(super) model: NatModel,
    pub(super) next_port: u16,
    pub(super) maps: Vec<NatMapping>,
    /// `(public port, source)` pairs claimed by dropped packets, until when.
    pub(super) claims: HashMap<(u16, String), Instant>,
    /// The random-port generator's state.
    pub(super) rng: LinkRng,
}

impl NatBox {
    pub(super) fn claimed(&self, port: u16, source: &str) -> bool {
        self.claims
            .get(&(port, source.to_owned()))
            .is_some_and(|until| *until > Instant::now())
    }

    pub(super) fn lets_in(&self, m: &NatMapping, source: &str) -> bool {
        if self.claimed(m.port, source) {
            return false;
        }
        match self.model.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressRestricted => m.sent_to.iter().any(|d| host_of(d) == host_of(source)),
            Filtering::PortRestricted => m.sent_to.contains(source),
        }
    }
}

#[derive(Debug)]
pub(super) struct NatMapping {
    pub(super) internal: NodeId,
    /// Which of the node's sockets (0: its transport's own; others: a birthday punch's).
    pub(super) socket: u32,
    /// The destination an endpoint-dependent mapping is for.
    pub(super) dest: Option<String>,
    pub(super) port: u16,
    /// Endpoints the node has sent to through this mapping.
    pub(super) sent_to: HashSet<String>,
}

/// The host part of a mem endpoint (`host:port` → `host`; a bare name is its own host).
pub(super) fn host_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h)
}
