//! Subnet keys for diversity caps: one /24 per IPv4 network, one /64 per IPv6 network.
//!
//! A key is 16 bytes: IPv4 maps into IPv4-in-IPv6 form and is masked to /24, IPv6 is masked
//! to /64. Only a literal `ip:port` endpoint has a subnet; a host name has none (it cannot be
//! trusted to mean any one network).

use std::net::{IpAddr, SocketAddr};

use nodenet_wire::AddrRef;

/// The network a node's address belongs to, for diversity accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubnetKey(pub [u8; 16]);

impl SubnetKey {
    /// The subnet of an IP address.
    pub fn of_ip(ip: IpAddr) -> Self {
        let mut k = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let keep = if ip.is_ipv4() { 15 } else { 8 };
        k[keep..].fill(0);
        Self(k)
    }

    /// The subnet of a literal `ip:port` endpoint; `None` for anything else.
    pub fn of_endpoint(endpoint: &str) -> Option<Self> {
        endpoint
            .parse::<SocketAddr>()
            .ok()
            .map(|s| Self::of_ip(s.ip()))
    }

    /// The subnet of an address, if it is an IP one.
    pub fn of_addr(addr: AddrRef<'_>) -> Option<Self> {
        Self::of_endpoint(addr.endpoint)
    }
}
