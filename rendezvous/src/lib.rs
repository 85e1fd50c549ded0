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

    use std::sync::OnceLock;

    use nodenet_identity::{Identity, derive_id};
    use nodenet_kad::NodeId;
    use nodenet_wire::Addr;
    pub use nodenet_wire::fuzzing::Reached;

    use crate::hello::{encode_hello_parts, encode_reply_parts};
    use crate::{
        HELLO_DOMAIN, Hello, MAX_AGE_NS, OpenError, REPLY_DOMAIN, RendezvousError, ReplayCache,
        Reply, open, seal_with_ephemeral, sealed_len,
    };

    const SIG_LEN: usize = 64;

    /// The fixed identities the targets sign and seal with: index 0 is the recipient and
    /// the Hello originator; the others sign Replies and seal boxes.
    fn identity(i: usize) -> &'static Identity {
        static IDS: OnceLock<[Identity; 5]> = OnceLock::new();
        &IDS.get_or_init(|| [9, 10, 11, 12, 13].map(|s| Identity::from_seed(&[s; 32])))[i]
    }

    /// `b` with bit `bit` (counted over the whole buffer, wrapping) flipped, and the index of
    /// the byte it is in.
    fn flip(b: &[u8], bit: usize) -> (Vec<u8>, usize) {
        let bit = bit % (8 * b.len());
        let mut out = b.to_vec();
        out[bit / 8] ^= 1 << (bit % 8);
        (out, bit / 8)
    }

    /// The checks of [`rendezvous`], in [`Reached`] bit order.
    pub const RENDEZVOUS_CHECKS: &[&str] = &[
        "hello round trip: fields and signature bytes",
        "hello signed for real: verifies for its target and key only",
        "hello re-encoding verifies iff it is the bytes signed",
        "hello bit flip refused",
        "reply round trip: fields and signature bytes",
        "reply as received: verify reaches the signature check",
        "reply signed for real: verifies, coordinates as sent",
        "reply refusals in order: target, then nonce",
        "reply bit flip refused, for the reason the flipped field gives",
    ];

    /// The Hello and Reply decoders and verifiers.
    ///
    /// Whatever decodes round-trips (a minimal input byte for byte). Then the fuzzed fields
    /// are signed for real: a decoded Hello gets a genuine signature by a fixed originator for
    /// a target taken from the signature bytes it replaces, and must verify for that target
    /// and key only; a decoded Reply gets a fixed responder's key and signature and must
    /// verify against that responder's NodeId and its own nonce, refusing a wrong target
    /// before a wrong nonce. A bit flip (its position taken from the replaced signature bytes)
    /// anywhere in a signed payload is refused. Signatures cover the bytes received, so a
    /// re-encoding of a padded (non-minimal) input no longer verifies, and a minimal one does.
    pub fn rendezvous(data: &[u8]) -> Reached {
        let mut reached = Reached::default();
        hello(data, &mut reached);
        reply(data, &mut reached);
        reached
    }

    fn hello(data: &[u8], reached: &mut Reached) {
        let Ok(h) = Hello::decode(data) else { return };
        let addrs: Vec<Addr> = h.addrs.iter().map(|a| a.to_owned_addr()).collect();
        let again = encode_hello_parts(&h.x_pub, &addrs, &h.nonce, &h.sig)
            .expect("a decoded hello re-encodes");
        let h2 = Hello::decode(&again).expect("re-decodes");
        assert_eq!((h2.x_pub, h2.nonce, h2.sig), (h.x_pub, h.nonce, h.sig));
        assert!(h2.addrs.iter().eq(h.addrs.iter()));
        assert!(again.len() <= data.len());
        if again.len() == data.len() {
            assert_eq!(again, data, "a minimal hello round-trips byte for byte");
        }
        reached.hit(0);

        // Signed for real over the fuzzed bytes, to a target from the replaced signature.
        let me = identity(0);
        let target = NodeId::from_bytes(h.sig[..32].try_into().expect("32 bytes"));
        let body = data.len() - SIG_LEN;
        let msg = [HELLO_DOMAIN, target.as_bytes(), &data[..body]].concat();
        let mut signed = data.to_vec();
        signed[body..].copy_from_slice(&me.sign(&msg));
        let hs = Hello::decode(&signed).expect("only the signature changed");
        assert_eq!(hs.verify(&me.ed_public(), &target), Ok(()));
        let (other, _) = flip(target.as_bytes(), usize::from(h.sig[32]));
        let other = NodeId::from_bytes(other.try_into().expect("32 bytes"));
        let bad = Err(RendezvousError::BadSignature);
        assert_eq!(
            hs.verify(&me.ed_public(), &other),
            bad,
            "bound to its target"
        );
        assert_eq!(hs.verify(&identity(1).ed_public(), &target), bad);
        reached.hit(1);

        let again = encode_hello_parts(&hs.x_pub, &addrs, &hs.nonce, &hs.sig).expect("re-encodes");
        let h3 = Hello::decode(&again).expect("re-decodes");
        assert_eq!(
            h3.verify(&me.ed_public(), &target).is_ok(),
            again == signed,
            "signatures cover the bytes received, never a re-encoding"
        );
        reached.hit(2);

        let bit = usize::from(u16::from_be_bytes([h.sig[33], h.sig[34]]));
        let (flipped, _) = flip(&signed, bit);
        if let Ok(hf) = Hello::decode(&flipped) {
            assert_eq!(
                hf.verify(&me.ed_public(), &target),
                bad,
                "a flipped hello verifies"
            );
        }
        reached.hit(3);
    }

    fn reply(data: &[u8], reached: &mut Reached) {
        let Ok(r) = Reply::decode(data) else { return };
        assert!(r.addrs.len() <= crate::ADDR_CAP);
        let addrs: Vec<Addr> = r.addrs.iter().map(|a| a.to_owned_addr()).collect();
        let again = encode_reply_parts(&r.ed_pub, &r.x_pub, &addrs, &r.nonce, &r.sig)
            .expect("a decoded reply re-encodes");
        let r2 = Reply::decode(&again).expect("re-decodes");
        assert_eq!(
            (r2.ed_pub, r2.x_pub, r2.nonce, r2.sig),
            (r.ed_pub, r.x_pub, r.nonce, r.sig)
        );
        assert!(r2.addrs.iter().eq(r.addrs.iter()));
        assert!(again.len() <= data.len());
        if again.len() == data.len() {
            assert_eq!(again, data, "a minimal reply round-trips byte for byte");
        }
        reached.hit(4);

        // As received, against the NodeId its key hashes to and its own nonce: the target and
        // nonce checks pass, so the verdict is the signature's.
        match r.verify(&derive_id(&r.ed_pub), &r.nonce) {
            Ok(c) => assert_eq!((c.ed_pub, c.x_pub, &c.addrs), (r.ed_pub, r.x_pub, &addrs)),
            Err(e) => assert_eq!(e, RendezvousError::BadSignature),
        }
        reached.hit(5);

        // The fuzzed fields under a real responder's key and signature.
        let me = identity(1 + usize::from(r.sig[0] % 4));
        let body = data.len() - SIG_LEN;
        let mut signed = data.to_vec();
        signed[..32].copy_from_slice(&me.ed_public());
        let sig = me.sign(&[REPLY_DOMAIN, &signed[..body]].concat());
        signed[body..].copy_from_slice(&sig);
        let rs = Reply::decode(&signed).expect("only the key and signature changed");
        let c = rs
            .verify(&me.node_id(), &r.nonce)
            .expect("a genuine reply verifies");
        assert_eq!(c.target, me.node_id());
        assert_eq!(
            (c.ed_pub, c.x_pub, &c.addrs),
            (me.ed_public(), r.x_pub, &addrs)
        );
        reached.hit(6);

        let (wrong_nonce, _) = flip(&r.nonce, usize::from(r.sig[1]));
        let wrong_nonce: [u8; 16] = wrong_nonce.try_into().expect("16 bytes");
        let wrong_target = identity(0).node_id();
        assert_eq!(
            rs.verify(&me.node_id(), &wrong_nonce),
            Err(RendezvousError::NonceMismatch)
        );
        assert_eq!(
            rs.verify(&wrong_target, &r.nonce),
            Err(RendezvousError::WrongTarget)
        );
        assert_eq!(
            rs.verify(&wrong_target, &wrong_nonce),
            Err(RendezvousError::WrongTarget),
            "the target is checked before the nonce"
        );
        reached.hit(7);

        let bit = usize::from(u16::from_be_bytes([r.sig[2], r.sig[3]]));
        let (flipped, at) = flip(&signed, bit);
        let verdict = Reply::decode(&flipped).map(|rf| rf.verify(&me.node_id(), &r.nonce));
        let nonce_at = body - 16;
        match at {
            0..32 => assert_eq!(verdict, Ok(Err(RendezvousError::WrongTarget))),
            32..64 => assert_eq!(verdict, Ok(Err(RendezvousError::BadSignature))),
            _ if at >= body => assert_eq!(verdict, Ok(Err(RendezvousError::BadSignature))),
            _ if at >= nonce_at => assert_eq!(verdict, Ok(Err(RendezvousError::NonceMismatch))),
            // In the address list: the parse may shift, but nothing verifies.
            _ => assert!(!matches!(verdict, Ok(Ok(_))), "a flipped reply verifies"),
        }
        reached.hit(8);
    }

    /// The checks of [`sealed_open`], in [`Reached`] bit order.
    pub const SEALED_OPEN_CHECKS: &[&str] = &[
        "raw bytes: never panics; what opens opens once",
        "built box: a bit flip is refused before any state (malformed or bad signature)",
        "built box: another recipient is refused (bad signature)",
        "built box outside the 30 s window: expired, and the cache untouched",
        "built box: a wrong aad fails to decrypt and does not burn the box",
        "built box opens: plaintext, sender and time as sealed",
        "built box: a second open within the window is a replay",
    ];

    /// Length of the structured input's header.
    const HEADER: usize = 38;

    /// The sealed-box opener, structure-aware.
    ///
    /// An input starting with 0 is opened as raw bytes (the decoder on anything). Otherwise
    /// it describes a box, which is sealed for real to the fixed recipient and then opened:
    ///
    /// ```text
    /// flags(1) | offset_ms(i16 BE) | flip_bit(u16 BE) | aad_len(1) | eph_secret(32) | aad | plaintext
    /// flags: bit 1 = open with a different aad first; bits 2-3 = which of 4 senders seals
    /// offset_ms: the box's timestamp minus the opener's clock (±32.8 s: both edges of the window)
    /// ```
    ///
    /// (a short input is padded with zeros). The box must open exactly when it is fresh, with
    /// the sealed plaintext, sender and time; a second open must be refused as a replay, up
    /// to the window's last instant; a bit flip anywhere, and the box opened by another
    /// recipient, must be refused by the signature check (so before the replay cache or the
    /// key agreement); a wrong aad must fail to decrypt without burning the box.
    pub fn sealed_open(data: &[u8]) -> Reached {
        let mut reached = Reached::default();
        let now = 1_700_000_000_000_000_000;
        let me = identity(0);
        let mut cache = ReplayCache::new();
        if let Some((0, raw)) = data.split_first() {
            if let Ok(o) = open(me, raw, &[], now, &mut cache) {
                // Only possible with a valid signature by the claimed sender over this box.
                assert!(o.plaintext.len() + 16 <= raw.len());
                assert_eq!(o.sender, derive_id(&o.sender_ed));
                assert_eq!(open(me, raw, &[], now, &mut cache), Err(OpenError::Replay));
            }
            reached.hit(0);
            return reached;
        }
        let mut header = [0u8; HEADER];
        let n = data.len().min(HEADER);
        header[..n].copy_from_slice(&data[..n]);
        let rest = &data[n..];
        let flags = header[0];
        let offset = i64::from(i16::from_be_bytes([header[1], header[2]])) * 1_000_000;
        let bit = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let (aad, plaintext) = rest.split_at(usize::from(header[5]).min(rest.len()));
        let eph: [u8; 32] = header[6..].try_into().expect("32 bytes");
        let sender = identity(1 + usize::from((flags >> 2) & 3));
        let ts = now + offset;
        let boxed = seal_with_ephemeral(sender, &me.x_public(), plaintext, aad, ts, &eph)
            .expect("seals to a good key");
        assert_eq!(boxed.len(), sealed_len(plaintext.len()));

        let (flipped, _) = flip(&boxed, bit);
        let e = open(me, &flipped, aad, now, &mut cache).expect_err("a flipped box opened");
        assert!(
            matches!(e, OpenError::Malformed(_) | OpenError::BadSignature),
            "a flipped box passed the signature check: {e:?}"
        );
        reached.hit(1);
        let e = open(identity(1), &boxed, aad, now, &mut cache);
        assert_eq!(e.map(|_| ()), Err(OpenError::BadSignature));
        reached.hit(2);
        assert!(cache.is_empty(), "a refused box left state");

        let fresh = (-MAX_AGE_NS..=MAX_AGE_NS).contains(&offset);
        if !fresh {
            let e = open(me, &boxed, aad, now, &mut cache);
            assert_eq!(e.map(|_| ()), Err(OpenError::Expired));
            assert!(cache.is_empty());
            reached.hit(3);
            return reached;
        }
        if flags & 2 != 0 {
            let other: Vec<u8> = [aad, b"\x01"].concat();
            let e = open(me, &boxed, &other, now, &mut cache);
            assert_eq!(e.map(|_| ()), Err(OpenError::Decrypt));
            assert!(cache.is_empty(), "a failed decrypt burnt the box");
            reached.hit(4);
        }
        let o = open(me, &boxed, aad, now, &mut cache).expect("a fresh, genuine box opens");
        assert_eq!(o.plaintext, plaintext);
        assert_eq!(
            (o.sender_ed, o.sender),
            (sender.ed_public(), sender.node_id())
        );
        assert_eq!(o.sealed_at, ts);
        reached.hit(5);

        // Replayed now, and at the last instant of the box's window.
        assert_eq!(
            open(me, &boxed, aad, now, &mut cache).map(|_| ()),
            Err(OpenError::Replay)
        );
        let last = ts + MAX_AGE_NS;
        assert_eq!(
            open(me, &boxed, aad, last, &mut cache).map(|_| ()),
            Err(OpenError::Replay),
            "replayed at the window's last instant"
        );
        assert_eq!(
            open(me, &boxed, aad, last + 1, &mut cache).map(|_| ()),
            Err(OpenError::Expired)
        );
        reached.hit(6);
        reached
    }
}
