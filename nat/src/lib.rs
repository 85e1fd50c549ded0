//! nodenet NAT traversal, the pure half: no sockets, no clock.
//!
//! - [`reflexive`]: what our neighbours see of us, corroborated before it is believed, and
//!   the NAT classification that follows from it ([`NatType`]).
//! - [`signal`]: the payloads that coordinate a hole-punch (Connect, ConnectAck, routed over
//!   the overlay to the peer) and a relay (RelayRequest, RelayGrant, RelayBind, on one edge).
//!
//! The node wires these to its edges and the QUIC transport sends the punch datagrams from its
//! one UDP socket.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod birthday;
pub mod reflexive;
pub mod signal;

pub use reflexive::{MAX_REPORTERS, MIN_SUBNETS, NatType, QUORUM, Reflexive, reachable};
pub use signal::{
    ATTEST_TAG, Attestation, Coordination, FLAG_BIRTHDAY, FLAG_HARD, FLAG_SYNC, FLAG_TIMED,
    MAX_CONNECT_ADDRS, NONCE_LEN, RelayBind, RelayGrant, RelayRequest, encode_coordination,
    encode_coordination_with,
};

/// The punch datagram: `0x00 'n' 'p' 0x01`. Its first byte has the top two bits clear, so a
/// QUIC stack takes it for a non-QUIC packet and drops it; it exists only to open a mapping
/// in the sender's NAT toward the peer.
pub const PUNCH_DATAGRAM: [u8; 4] = [0x00, b'n', b'p', 0x01];

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

    use nodenet_wire::Addr;

    use crate::signal::{
        Coordination, RelayBind, RelayGrant, RelayRequest, encode_coordination_with,
    };

    /// The birthday probe decoder: only an exact probe decodes, and its token re-encodes to
    /// the same bytes.
    pub fn birthday_probe(data: &[u8]) {
        if let Some(token) = crate::birthday::decode_probe(data) {
            assert_eq!(&crate::birthday::encode_probe(&token)[..], data);
        }
    }

    /// Every signalling decoder: what decodes re-encodes to bytes that decode to the same
    /// fields (the decoders ignore trailing bytes, so the re-encoding may be shorter).
    pub fn nat_signal(data: &[u8]) {
        if let Ok(c) = Coordination::decode(data) {
            let addrs: Vec<Addr> = c.addrs.iter().map(|a| a.to_owned_addr()).collect();
            let again =
                encode_coordination_with(&c.nonce, &addrs, c.flags, c.public).expect("re-encodes");
            // Not necessarily a prefix of the input, nor the same list bytes: these decoders,
            // like the reference's, take non-minimal uvarints, which re-encode minimally.
            assert!(again.len() <= data.len());
            let back = Coordination::decode(&again).unwrap();
            assert_eq!(back.nonce, c.nonce);
            assert_eq!(back.flags, c.flags);
            assert_eq!(back.public, c.public);
            let back: Vec<Addr> = back.addrs.iter().map(|a| a.to_owned_addr()).collect();
            assert_eq!(back, addrs);
        }
        if let Ok(r) = RelayRequest::decode(data) {
            assert_eq!(&data[..RelayRequest::LEN], &r.encode()[..]);
        }
        if let Ok(g) = RelayGrant::decode(data) {
            let again = g.encode().expect("re-encodes");
            assert!(again.len() <= data.len());
            assert_eq!(RelayGrant::decode(&again).unwrap(), g);
            // A reference peer reads the same grant, the attestation aside.
            let plain = RelayGrant { attest: None, ..g }
                .encode()
                .expect("re-encodes");
            assert!(again.starts_with(&plain));
        }
        if let Ok(b) = RelayBind::decode(data) {
            let again = b.encode().expect("re-encodes");
            assert!(again.len() <= data.len());
            assert_eq!(RelayBind::decode(&again).unwrap(), b);
            let plain = RelayBind { attest: None, ..b }
                .encode()
                .expect("re-encodes");
            assert!(again.starts_with(&plain));
        }
    }
}
