//! Hello (frame type 8) and Reply (type 9): the rendezvous handshake's payloads.
//!
//! ```text
//! Hello  = x_pub(32) | addrs | nonce(16) | sig(64)
//!          sig = Ed25519(originator, "nodenet/v1/rendezvous-hello" | target(32) | x_pub | addrs | nonce)
//! Reply  = ed_pub(32) | x_pub(32) | addrs | nonce(16) | sig(64)
//!          sig = Ed25519(target, "nodenet/v1/rendezvous-reply" | ed_pub | x_pub | addrs | nonce)
//! addrs  = uvarint(n ≤ 16) | addr*
//! ```
//!
//! The signatures cover the raw concatenation (no hash), exactly the bytes on the wire, so a
//! verifier checks the bytes it received and never a re-encoding of them. Both payloads ride in
//! a routed envelope whose own signature is separate; the Hello's originator key is the
//! envelope's.

use nodenet_identity::{Identity, derive_id, verify};
use nodenet_kad::NodeId;
use nodenet_wire::{Addr, AddrList, Reader, WireError, Writer};

use crate::RendezvousError;

/// Signature domain of a Hello.
pub const HELLO_DOMAIN: &[u8] = b"nodenet/v1/rendezvous-hello";
/// Signature domain of a Reply.
pub const REPLY_DOMAIN: &[u8] = b"nodenet/v1/rendezvous-reply";
/// Length of the request nonce a Reply echoes.
pub const NONCE_LEN: usize = 16;
/// Addresses a Hello or Reply carries at most.
pub const ADDR_CAP: usize = 16;

const KEY_LEN: usize = 32;
const SIG_LEN: usize = 64;

/// A decoded Hello, borrowing the payload.
#[derive(Clone, Copy, Debug)]
pub struct Hello<'a> {
    /// The originator's static X25519 key (for sealed boxes to it).
    pub x_pub: [u8; KEY_LEN],
    /// Where the originator can be dialed.
    pub addrs: AddrList<'a>,
    /// The request nonce the Reply must echo.
    pub nonce: [u8; NONCE_LEN],
    /// The originator's signature.
    pub sig: [u8; SIG_LEN],
    signed: &'a [u8],
}

impl<'a> Hello<'a> {
    /// Decodes a Hello payload. Canonical: nothing may follow the signature.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let x_pub = *r.array::<KEY_LEN>()?;
        let addrs = AddrList::decode(&mut r, ADDR_CAP)?;
        let nonce = *r.array::<NONCE_LEN>()?;
        let signed_len = r.position();
        let sig = *r.array::<SIG_LEN>()?;
        r.finish()?;
        Ok(Self {
            x_pub,
            addrs,
            nonce,
            sig,
            signed: &payload[..signed_len],
        })
    }

    /// Checks the signature by the originator's Ed25519 key (from the routed envelope) over
    /// this Hello as addressed to `target`: a Hello lifted from a request to someone else does
    /// not verify here.
    pub fn verify(
        &self,
        originator_ed: &[u8; KEY_LEN],
        target: &NodeId,
    ) -> Result<(), RendezvousError> {
        let mut msg = Vec::with_capacity(HELLO_DOMAIN.len() + 32 + self.signed.len());
        msg.extend_from_slice(HELLO_DOMAIN);
        msg.extend_from_slice(target.as_bytes());
        msg.extend_from_slice(self.signed);
        verify(originator_ed, &msg, &self.sig).map_err(|_| RendezvousError::BadSignature)
    }
}

/// A decoded Reply, borrowing the payload.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The answering node's Ed25519 key.
    pub ed_pub: [u8; KEY_LEN],
    /// Its static X25519 key.
    pub x_pub: [u8; KEY_LEN],
    /// Where it can be dialed.
    pub addrs: AddrList<'a>,
    /// The echoed request nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Its signature.
    pub sig: [u8; SIG_LEN],
    signed: &'a [u8],
}

impl<'a> Reply<'a> {
    /// Decodes a Reply payload. Canonical: nothing may follow the signature.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let ed_pub = *r.array::<KEY_LEN>()?;
        let x_pub = *r.array::<KEY_LEN>()?;
        let addrs = AddrList::decode(&mut r, ADDR_CAP)?;
        let nonce = *r.array::<NONCE_LEN>()?;
        let signed_len = r.position();
        let sig = *r.array::<SIG_LEN>()?;
        r.finish()?;
        Ok(Self {
            ed_pub,
            x_pub,
            addrs,
            nonce,
            sig,
            signed: &payload[..signed_len],
        })
    }

    /// Verifies the Reply to our request for `target` with `nonce`, in this order: the key
    /// hashes to `target` (anti-impersonation), the nonce is ours, the signature holds. On
    /// success, the target's coordinates.
    pub fn verify(
        &self,
        target: &NodeId,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Coordinates, RendezvousError> {
        if derive_id(&self.ed_pub) != *target {
            return Err(RendezvousError::WrongTarget);
        }
        if self.nonce != *nonce {
            return Err(RendezvousError::NonceMismatch);
        }
        let mut msg = Vec::with_capacity(REPLY_DOMAIN.len() + self.signed.len());
        msg.extend_from_slice(REPLY_DOMAIN);
        msg.extend_from_slice(self.signed);
        verify(&self.ed_pub, &msg, &self.sig).map_err(|_| RendezvousError::BadSignature)?;
        Ok(Coordinates {
            target: *target,
            ed_pub: self.ed_pub,
            x_pub: self.x_pub,
            addrs: self.addrs.iter().map(|a| a.to_owned_addr()).collect(),
        })
    }
}

/// What a verified rendezvous learned about a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinates {
    /// The NodeId that was asked (and that `ed_pub` hashes to).
    pub target: NodeId,
    /// Its Ed25519 key.
    pub ed_pub: [u8; KEY_LEN],
    /// Its static X25519 key.
    pub x_pub: [u8; KEY_LEN],
    /// The addresses it gave.
    pub addrs: Vec<Addr>,
}

/// Encodes and signs a Hello from `identity` to `target`. At most [`ADDR_CAP`] addresses are
/// sent (the first ones).
pub fn encode_hello(
    identity: &Identity,
    target: &NodeId,
    addrs: &[Addr],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, WireError> {
    let addrs = &addrs[..addrs.len().min(ADDR_CAP)];
    let mut out = encode_hello_parts(&identity.x_public(), addrs, nonce, &[0; SIG_LEN])?;
    let body = out.len() - SIG_LEN;
    let mut msg = Vec::with_capacity(HELLO_DOMAIN.len() + 32 + body);
    msg.extend_from_slice(HELLO_DOMAIN);
    msg.extend_from_slice(target.as_bytes());
    msg.extend_from_slice(&out[..body]);
    out[body..].copy_from_slice(&identity.sign(&msg));
    Ok(out)
}

/// Encodes a Hello from its parts (the signature as given).
pub(crate) fn encode_hello_parts(
    x_pub: &[u8; KEY_LEN],
    addrs: &[Addr],
    nonce: &[u8; NONCE_LEN],
    sig: &[u8; SIG_LEN],
) -> Result<Vec<u8>, WireError> {
    if addrs.len() > ADDR_CAP {
        return Err(WireError::TooMany {
            count: addrs.len() as u64,
            max: ADDR_CAP,
        });
    }
    let list = AddrList::encoded_len_of(addrs.iter().map(Addr::as_ref));
    let mut out = vec![0u8; KEY_LEN + list + NONCE_LEN + SIG_LEN];
    let mut w = Writer::new(&mut out);
    w.put_bytes(x_pub)?;
    AddrList::encode(&mut w, addrs.iter().map(Addr::as_ref))?;
    w.put_bytes(nonce)?;
    w.put_bytes(sig)?;
    Ok(out)
}

/// Encodes and signs a Reply by `identity` echoing `nonce`. At most [`ADDR_CAP`] addresses
/// are sent (the first ones).
pub fn encode_reply(
    identity: &Identity,
    addrs: &[Addr],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, WireError> {
    let addrs = &addrs[..addrs.len().min(ADDR_CAP)];
    let mut out = encode_reply_parts(
        &identity.ed_public(),
        &identity.x_public(),
        addrs,
        nonce,
        &[0; SIG_LEN],
    )?;
    let body = out.len() - SIG_LEN;
    let mut msg = Vec::with_capacity(REPLY_DOMAIN.len() + body);
    msg.extend_from_slice(REPLY_DOMAIN);
    msg.extend_from_slice(&out[..body]);
    out[body..].copy_from_slice(&identity.sign(&msg));
    Ok(out)
}

/// Encodes a Reply from its parts (the signature as given).
pub(crate) fn encode_reply_parts(
    ed_pub: &[u8; KEY_LEN],
    x_pub: &[u8; KEY_LEN],
    addrs: &[Addr],
    nonce: &[u8; NONCE_LEN],
    sig: &[u8; SIG_LEN],
) -> Result<Vec<u8>, WireError> {
    if addrs.len() > ADDR_CAP {
        return Err(WireError::TooMany {
            count: addrs.len() as u64,
            max: ADDR_CAP,
        });
    }
    let list = AddrList::encoded_len_of(addrs.iter().map(Addr::as_ref));
    let mut out = vec![0u8; 2 * KEY_LEN + list + NONCE_LEN + SIG_LEN];
    let mut w = Writer::new(&mut out);
    w.put_bytes(ed_pub)?;
    w.put_bytes(x_pub)?;
    AddrList::encode(&mut w, addrs.iter().map(Addr::as_ref))?;
    w.put_bytes(nonce)?;
    w.put_bytes(sig)?;
    Ok(out)
}
