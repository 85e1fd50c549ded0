//! nodenet rendezvous: learn a NodeId's keys and coordinates over the overlay, verified against
//! the NodeId itself, and seal content end to end to it.
//!
//! - [`hello`]: the signed request routed to a target's NodeId (frame type 8) and the signed
//!   answer (type 9). The answer is checked against the NodeId it was asked of: the Ed25519 key
//!   in it must hash to that NodeId, so no forwarder on the path can answer in the target's
//!   name, and the echoed nonce ties it to one request.
//! - [`sealed`]: sender-authenticated encryption to a static X25519 key (ephemeral-static
//!   X25519, HKDF-SHA256, ChaCha20-Poly1305, an Ed25519 signature by the sender), with a
//!   bounded replay cache.
//!
//! Pure logic over byte slices: no sockets, no clock (time comes in as Unix nanoseconds), and
//! randomness from a caller-supplied [`rand_core::CryptoRng`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod hello;
pub mod sealed;

pub use hello::{
    ADDR_CAP, Coordinates, HELLO_DOMAIN, Hello, NONCE_LEN, REPLY_DOMAIN, Reply, encode_hello,
    encode_reply,
};
pub use sealed::{
    MAX_AGE_NS, OpenError, Opened, REPLAY_CAPACITY, ReplayCache, SEAL_DOMAIN, SEAL_SIG_DOMAIN,
    SealError, open, seal, seal_with_ephemeral, sealed_len,
};

use nodenet_wire::WireError;

/// Why a Hello or Reply was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// The payload does not decode (canonically: no trailing bytes).
    #[error("malformed rendezvous payload: {0}")]
    Malformed(#[from] WireError),
    /// The key in a Reply does not hash to the NodeId that was asked: an impostor answered.
    #[error("reply key does not hash to the target NodeId")]
    WrongTarget,
    /// The Reply echoes another request's nonce (a replay or a mix-up).
    #[error("reply nonce does not match the request")]
    NonceMismatch,
    /// The handshake signature does not verify.
    #[error("rendezvous signature does not verify")]
    BadSignature,
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

    use nodenet_identity::Identity;
    use nodenet_kad::NodeId;
    use nodenet_wire::Addr;

    use crate::{Hello, ReplayCache, Reply, open};

    /// The Hello and Reply decoders: what decodes re-encodes to a payload that decodes to the
    /// same fields, and verification never panics.
    pub fn rendezvous(data: &[u8]) {
        if let Ok(h) = Hello::decode(data) {
            let addrs: Vec<Addr> = h.addrs.iter().map(|a| a.to_owned_addr()).collect();
            let again = crate::hello::encode_hello_parts(&h.x_pub, &addrs, &h.nonce, &h.sig)
                .expect("a decoded hello re-encodes");
            let h2 = Hello::decode(&again).expect("re-decodes");
            assert_eq!(h2.x_pub, h.x_pub);
            assert_eq!(h2.nonce, h.nonce);
            assert!(h2.addrs.iter().eq(h.addrs.iter()));
            let _ = h.verify(&[7; 32], &NodeId::ZERO);
        }
        if let Ok(r) = Reply::decode(data) {
            assert!(r.addrs.len() <= crate::ADDR_CAP);
            let _ = r.verify(&NodeId::ZERO, &r.nonce);
        }
    }

    /// The sealed-box opener: never panics, and never opens what it was not sealed to.
    pub fn sealed_open(data: &[u8]) {
        let me = Identity::from_seed(&[9; 32]);
        let mut cache = ReplayCache::new();
        let now = 1_700_000_000_000_000_000;
        if let Ok(o) = open(&me, data, &[], now, &mut cache) {
            // Only possible with a valid signature by the claimed sender over this box.
            assert!(o.plaintext.len() + 16 <= data.len());
        }
    }
}
