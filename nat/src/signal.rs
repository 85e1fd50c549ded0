//! The hole-punch and relay signalling payloads.
//!
//! | frame | kind | payload |
//! |---|---|---|
//! | Connect (10) | routed envelope | `nonce(16) \| addrs (≤ 16)` |
//! | ConnectAck (11) | routed envelope | `nonce(16) \| addrs (≤ 16)`, the Connect's nonce echoed |
//! | RelayRequest (12) | one edge | `nonce(16) \| target(32)` |
//! | RelayGrant (13) | one edge | `nonce(16) \| addr`, then ours: `0x01 \| target(32) \| addr` |
//! | RelayBind (14) | one edge | `addr`, then ours: `0x01 \| caller(32) \| addr` |
//!
//! The addresses are unsigned hints (the routed envelope's signature binds them to the
//! originator). Unlike the canonical codecs elsewhere in the protocol, these decoders ignore
//! trailing bytes, as the reference does, so a later version may append fields.
//!
//! We append one: an optional `flags` byte after a Connect's or ConnectAck's addresses
//! (absent means 0, and a zero byte is never written, so a plain payload is the reference's
//! byte for byte). It times the punch: see [`FLAG_TIMED`] and [`FLAG_SYNC`]. A peer that
//! predates it ignores the byte and punches on the Connect, as the reference does.
//!
//! And one more after a RelayGrant's or RelayBind's address: the relay's [`Attestation`] of
//! where it sees the other side of the pair, which a birthday punch requires.

use nodenet_kad::NodeId;
use nodenet_wire::{Addr, AddrList, AddrRef, Reader, WireError, Writer};

/// Length of a punch or relay nonce.
pub const NONCE_LEN: usize = 16;
/// Addresses a Connect or ConnectAck carries at most.
pub const MAX_CONNECT_ADDRS: usize = 16;

/// In a Connect: "I will send a Sync (a Connect with [`FLAG_SYNC`] and the same nonce) once
/// your ack arrives; hold your punch until it does". In a ConnectAck: "I am holding it".
///
/// The initiator measures the Connect → ConnectAck round trip over the overlay, sends the
/// Sync and punches half that round trip later, about when the Sync reaches the target, so
/// both sides' first datagrams leave together. Behind a NAT that claims the port of a
/// dropped packet (Linux `MASQUERADE` without a stateful firewall), a side whose peer's
/// datagram arrives before its own left is mapped to a fresh port and the punch fails.
pub const FLAG_TIMED: u8 = 0x01;
/// In a Connect: "punch now" (the Sync of a [`FLAG_TIMED`] exchange; it is not answered).
pub const FLAG_SYNC: u8 = 0x02;
/// In a Connect: "let us meet by a birthday punch" (see [`crate::birthday`]); in a
/// ConnectAck: "agreed". The sender's addresses are then the one it is reached at (an easy
/// side's confirmed mapping), or none.
pub const FLAG_BIRTHDAY: u8 = 0x04;
/// The sender is behind a symmetric NAT (the hard side of a birthday punch). The payload
/// then carries, after the flags, the sender's public address with port 0 (`addr`): the
/// host on which its neighbours' reports agree.
pub const FLAG_HARD: u8 = 0x08;

/// A Connect or ConnectAck payload: the nonce and the sender's candidate addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coordination<'a> {
    /// Ties the answer to the request.
    pub nonce: [u8; NONCE_LEN],
    /// Where the sender may be reached (unsigned hints).
    pub addrs: AddrList<'a>,
    /// [`FLAG_TIMED`], [`FLAG_SYNC`], [`FLAG_BIRTHDAY`], [`FLAG_HARD`]; 0 when the byte is
    /// absent. Unknown bits are ignored.
    pub flags: u8,
    /// With [`FLAG_HARD`]: the sender's public host, as an address with port 0.
    pub public: Option<AddrRef<'a>>,
}

impl<'a> Coordination<'a> {
    /// Decodes a Connect or ConnectAck payload (bytes past the flags ignored).
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let nonce = *r.array::<NONCE_LEN>()?;
        let addrs = AddrList::decode(&mut r, MAX_CONNECT_ADDRS)?;
        let flags = if r.remaining() > 0 { r.u8()? } else { 0 };
        let public = if flags & FLAG_HARD != 0 {
            Some(AddrRef::decode(&mut r)?)
        } else {
            None
        };
        Ok(Self {
            nonce,
            addrs,
            flags,
            public,
        })
    }
}

/// Encodes a Connect or ConnectAck payload (the flags byte only when `flags` is not 0); more
/// than [`MAX_CONNECT_ADDRS`] addresses is an error (callers pick which to keep).
pub fn encode_coordination(
    nonce: &[u8; NONCE_LEN],
    addrs: &[Addr],
    flags: u8,
) -> Result<Vec<u8>, WireError> {
    encode_coordination_with(nonce, addrs, flags & !FLAG_HARD, None)
}

/// [`encode_coordination`] with the hard side's public address: [`FLAG_HARD`] is set
/// exactly when `public` is given.
pub fn encode_coordination_with(
    nonce: &[u8; NONCE_LEN],
    addrs: &[Addr],
    flags: u8,
    public: Option<AddrRef<'_>>,
) -> Result<Vec<u8>, WireError> {
    let flags = match public {
        Some(_) => flags | FLAG_HARD,
        None => flags & !FLAG_HARD,
    };
    if addrs.len() > MAX_CONNECT_ADDRS {
        return Err(WireError::TooMany {
            count: addrs.len() as u64,
            max: MAX_CONNECT_ADDRS,
        });
    }
    let len = NONCE_LEN
        + AddrList::encoded_len_of(addrs.iter().map(Addr::as_ref))
        + usize::from(flags != 0)
        + public.map_or(0, |p| p.encoded_len());
    let mut out = vec![0u8; len];
    let mut w = Writer::new(&mut out);
    w.put_bytes(nonce)?;
    AddrList::encode(&mut w, addrs.iter().map(Addr::as_ref))?;
    if flags != 0 {
        w.put_u8(flags)?;
    }
    if let Some(p) = public {
        p.encode(&mut w)?;
    }
    Ok(out)
}

/// A RelayRequest: "carry a connection from me to `target`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    /// Ties the grant to the request.
    pub nonce: [u8; NONCE_LEN],
    /// The peer the caller wants to reach.
    pub target: NodeId,
}

impl RelayRequest {
    /// Encoded length.
    pub const LEN: usize = NONCE_LEN + 32;

    /// Decodes (trailing bytes ignored).
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let nonce = *r.array::<NONCE_LEN>()?;
        let target = r.id()?;
        Ok(Self { nonce, target })
    }

    /// Encodes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..NONCE_LEN].copy_from_slice(&self.nonce);
        out[NONCE_LEN..].copy_from_slice(self.target.as_ref());
        out
    }
}

/// First byte of a relay's attestation (see [`Attestation`]).
pub const ATTEST_TAG: u8 = 0x01;

/// A relay's word on where it sees the other side of the pair it carries: the peer's NodeId
/// and the host (port 0) its own edge to that peer comes from.
///
/// We append it to a RelayGrant (naming the target) and to a RelayBind (naming the caller)
/// as `0x01 | peer(32) | addr`. The reference ignores these trailing bytes. A birthday
/// punch probes only a host its relay attested (see [`crate::birthday`]): the relay is a
/// third node on an authenticated edge, which has seen the peer's QUIC handshake come from
/// that host, so neither side can aim the other's probes at a bystander on its own say-so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attestation<'a> {
    /// The peer the relay vouches for.
    pub peer: NodeId,
    /// The peer's host as the relay sees it, as an address with port 0.
    pub host: AddrRef<'a>,
}

impl<'a> Attestation<'a> {
    /// Encoded length, tag included.
    pub fn encoded_len(&self) -> usize {
        1 + 32 + self.host.encoded_len()
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.put_u8(ATTEST_TAG)?;
        w.put_bytes(self.peer.as_ref())?;
        self.host.encode(w)
    }

    /// The trailer after a relay frame's own fields: an attestation when it is one, `None`
    /// when it is absent or something else (trailing bytes a later version may add are
    /// ignored, as the reference ignores ours).
    fn decode_trailer(r: &mut Reader<'a>) -> Option<Self> {
        if r.remaining() == 0 || r.u8().ok()? != ATTEST_TAG {
            return None;
        }
        let peer = r.id().ok()?;
        let host = AddrRef::decode(r).ok()?;
        Some(Self { peer, host })
    }
}

/// A RelayGrant: the relay's address the caller dials to reach the target, and (ours) the
/// relay's attestation of the target's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayGrant<'a> {
    /// The request's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Where the caller dials (the relay's caller-facing socket).
    pub addr: AddrRef<'a>,
    /// Where the relay sees the target; absent from a reference relay.
    pub attest: Option<Attestation<'a>>,
}

impl<'a> RelayGrant<'a> {
    /// Decodes (trailing bytes past an attestation ignored).
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let nonce = *r.array::<NONCE_LEN>()?;
        let addr = AddrRef::decode(&mut r)?;
        let attest = Attestation::decode_trailer(&mut r);
        Ok(Self {
            nonce,
            addr,
            attest,
        })
    }

    /// Encodes (without an attestation, the reference's bytes).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out =
            vec![
                0u8;
                NONCE_LEN + self.addr.encoded_len() + self.attest.map_or(0, |a| a.encoded_len())
            ];
        let mut w = Writer::new(&mut out);
        w.put_bytes(&self.nonce)?;
        self.addr.encode(&mut w)?;
        if let Some(a) = &self.attest {
            a.encode(&mut w)?;
        }
        Ok(out)
    }
}

/// A RelayBind: the relay's callee-facing address the callee punches toward, and (ours) the
/// relay's attestation of the caller's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayBind<'a> {
    /// The relay's callee-facing socket.
    pub addr: AddrRef<'a>,
    /// Where the relay sees the caller; absent from a reference relay.
    pub attest: Option<Attestation<'a>>,
}

impl<'a> RelayBind<'a> {
    /// Decodes (trailing bytes past an attestation ignored).
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let addr = AddrRef::decode(&mut r)?;
        let attest = Attestation::decode_trailer(&mut r);
        Ok(Self { addr, attest })
    }

    /// Encodes (without an attestation, the reference's bytes).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out =
            vec![0u8; self.addr.encoded_len() + self.attest.map_or(0, |a| a.encoded_len())];
        let mut w = Writer::new(&mut out);
        self.addr.encode(&mut w)?;
        if let Some(a) = &self.attest {
            a.encode(&mut w)?;
        }
        Ok(out)
    }
}
