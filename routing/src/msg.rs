//! The routed envelope: what every multi-hop frame (Route, Lookup, Neighbors, Hello, Reply,
//! Connect, ConnectAck) carries as its payload.
//!
//! ```text
//! target(32) | ttl(1) | ed_pub(32) | sent(8, i64 BE, Unix ns) | uvarint(navoid) | avoid(32 × navoid)
//!            | uvarint(plen) | payload | sig(64)
//! ```
//!
//! The originator signs `BLAKE2b-256("nodenet/v1/routing-envelope" | type | target | ed_pub |
//! sent | payload)` with its Ed25519 key. The TTL and the avoid-set are not signed: they change
//! per hop and per copy, so one signature serves all disjoint copies, and a forwarder rewrites
//! only the TTL byte, in place ([`patch_ttl`]). Decoding is canonical: trailing bytes are
//! refused.

use blake2::{Blake2b256, Digest};
use nodenet_identity::{Identity, PUBLIC_KEY_LEN, SIGNATURE_LEN, derive_id, verify};
use nodenet_kad::{ID_LEN, NodeId};
use nodenet_wire::{FrameType, Reader, WireError, Writer, uvarint_len};

/// The hop limit (tier 1): a TTL above it is clamped on receipt.
pub const MAX_HOPS: u8 = 16;
/// The most avoid-set entries an envelope may carry (tier 1; equals KMin).
pub const MAX_AVOID: usize = 3;
/// How far `sent` may be from the receiver's clock, either way (tier 2): 30 s.
pub const MAX_ENVELOPE_AGE_NS: i64 = 30_000_000_000;
/// Offset of the TTL byte within the envelope.
pub const TTL_OFFSET: usize = ID_LEN;
/// Domain-separation label of the envelope digest (tier 1).
pub const SIG_DOMAIN: &[u8] = b"nodenet/v1/routing-envelope";

/// Why an envelope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// The bytes do not form an envelope.
    #[error("malformed envelope: {0}")]
    Wire(#[from] WireError),
    /// More than [`MAX_AVOID`] avoid-set entries.
    #[error("avoid-set of {0} entries exceeds {MAX_AVOID}")]
    AvoidTooLarge(u64),
    /// The signature does not verify (or the key is not a valid Ed25519 key).
    #[error("envelope signature does not verify")]
    BadSignature,
}

/// A decoded envelope, borrowing the bytes it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgRef<'a> {
    /// Where the message is going.
    pub target: NodeId,
    /// Hops left.
    pub ttl: u8,
    /// The originator's Ed25519 key; its hash is the originator's NodeId.
    pub ed_pub: &'a [u8; PUBLIC_KEY_LEN],
    /// When the originator sent it: Unix nanoseconds.
    pub sent: i64,
    avoid: &'a [u8],
    /// The carried payload.
    pub payload: &'a [u8],
    /// The originator's signature.
    pub sig: &'a [u8; SIGNATURE_LEN],
}

impl<'a> MsgRef<'a> {
    /// Decodes an envelope from a frame payload. Canonical: nothing may follow the signature.
    pub fn parse(buf: &'a [u8]) -> Result<Self, MsgError> {
        let mut r = Reader::new(buf);
        let target = r.id()?;
        let ttl = r.u8()?;
        let ed_pub = r.array::<PUBLIC_KEY_LEN>()?;
        let sent = r.i64()?;
        let navoid = r.uvarint()?;
        if navoid > MAX_AVOID as u64 {
            return Err(MsgError::AvoidTooLarge(navoid));
        }
        let navoid = usize::try_from(navoid).map_err(|_| MsgError::AvoidTooLarge(navoid))?;
        let avoid = r.bytes(ID_LEN * navoid)?;
        let payload = r.len_prefixed(r.remaining())?;
        let sig = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        Ok(Self {
            target,
            ttl,
            ed_pub,
            sent,
            avoid,
            payload,
            sig,
        })
    }

    /// The originator's NodeId (a hash: compute once per frame).
    pub fn originator(&self) -> NodeId {
        derive_id(self.ed_pub)
    }

    /// The avoid-set.
    pub fn avoid(&self) -> impl ExactSizeIterator<Item = NodeId> + Clone + 'a {
        self.avoid.chunks_exact(ID_LEN).map(|c| {
            let mut b = [0u8; ID_LEN];
            b.copy_from_slice(c);
            NodeId::from_bytes(b)
        })
    }

    /// True if `id` is in the avoid-set.
    pub fn avoids(&self, id: &NodeId) -> bool {
        self.avoid.chunks_exact(ID_LEN).any(|c| c == id.as_bytes())
    }

    /// Verifies the originator's signature for a frame of `frame_type`.
    pub fn verify(&self, frame_type: FrameType) -> Result<(), MsgError> {
        let d = digest(
            frame_type,
            &self.target,
            self.ed_pub,
            self.sent,
            self.payload,
        );
        verify(self.ed_pub, &d, self.sig).map_err(|_| MsgError::BadSignature)
    }

    /// True when `sent` is within [`MAX_ENVELOPE_AGE_NS`] of `now_unix_ns`, either way.
    pub fn is_fresh(&self, now_unix_ns: i64) -> bool {
        is_fresh(self.sent, now_unix_ns)
    }

    /// The TTL clamped to [`MAX_HOPS`] (tier 2: a peer cannot buy more hops).
    pub fn clamped_ttl(&self) -> u8 {
        self.ttl.min(MAX_HOPS)
    }
}

/// True when `sent` is within [`MAX_ENVELOPE_AGE_NS`] of `now`, either way; cannot overflow.
pub fn is_fresh(sent: i64, now: i64) -> bool {
    now.saturating_sub(MAX_ENVELOPE_AGE_NS) <= sent
        && sent <= now.saturating_add(MAX_ENVELOPE_AGE_NS)
}

/// The 32-byte digest the originator signs.
pub fn digest(
    frame_type: FrameType,
    target: &NodeId,
    ed_pub: &[u8; PUBLIC_KEY_LEN],
    sent: i64,
    payload: &[u8],
) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(SIG_DOMAIN);
    h.update([frame_type.0]);
    h.update(target.as_bytes());
    h.update(ed_pub);
    h.update(sent.to_be_bytes());
    h.update(payload);
    h.finalize().into()
}

/// The signature an originator puts on an envelope of `frame_type`.
pub fn sign(
    identity: &Identity,
    frame_type: FrameType,
    target: &NodeId,
    sent: i64,
    payload: &[u8],
) -> [u8; SIGNATURE_LEN] {
    identity.sign(&digest(
        frame_type,
        target,
        &identity.ed_public(),
        sent,
        payload,
    ))
}

/// The fields of an envelope to encode.
#[derive(Clone, Copy, Debug)]
pub struct MsgFields<'a> {
    /// Destination.
    pub target: NodeId,
    /// Hops left.
    pub ttl: u8,
    /// Originator's key.
    pub ed_pub: &'a [u8; PUBLIC_KEY_LEN],
    /// Unix nanoseconds.
    pub sent: i64,
    /// The avoid-set (at most [`MAX_AVOID`]).
    pub avoid: &'a [NodeId],
    /// The payload.
    pub payload: &'a [u8],
    /// The signature.
    pub sig: &'a [u8; SIGNATURE_LEN],
}

impl MsgFields<'_> {
    /// Bytes the envelope takes.
    pub fn encoded_len(&self) -> usize {
        ID_LEN
            + 1
            + PUBLIC_KEY_LEN
            + 8
            + uvarint_len(self.avoid.len() as u64)
            + ID_LEN * self.avoid.len()
            + uvarint_len(self.payload.len() as u64)
            + self.payload.len()
            + SIGNATURE_LEN
    }

    /// Writes the envelope. Nothing is written if it does not fit.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        if self.avoid.len() > MAX_AVOID {
            return Err(MsgError::AvoidTooLarge(self.avoid.len() as u64));
        }
        let need = self.encoded_len();
        if need > w.remaining() {
            return Err(WireError::BufferTooSmall {
                need,
                have: w.remaining(),
            }
            .into());
        }
        w.put_id(&self.target)?;
        w.put_u8(self.ttl)?;
        w.put_bytes(self.ed_pub)?;
        w.put_i64(self.sent)?;
        w.put_uvarint(self.avoid.len() as u64)?;
        for id in self.avoid {
            w.put_id(id)?;
        }
        w.put_len_prefixed(self.payload)?;
        w.put_bytes(self.sig)?;
        Ok(())
    }

    /// Writes a whole frame of `frame_type` carrying this envelope; returns its length.
    pub fn encode_frame(&self, frame_type: FrameType, buf: &mut [u8]) -> Result<usize, MsgError> {
        let len = self.encoded_len();
        let h = nodenet_wire::encode_header(buf, frame_type, len)?;
        let mut w = Writer::new(&mut buf[h..]);
        self.encode(&mut w)?;
        Ok(h + w.finish())
    }
}

/// Rewrites the TTL of the envelope inside a whole frame, in place: the only byte a forwarder
/// changes. `frame` must hold a parsed routed frame.
pub fn patch_ttl(frame: &mut [u8], ttl: u8) -> Result<(), MsgError> {
    let (_, payload) = nodenet_wire::Frame::parse_range(frame)?;
    let at = payload.start + TTL_OFFSET;
    let byte = frame.get_mut(at).ok_or(WireError::Truncated)?;
    *byte = ttl;
    Ok(())
}
