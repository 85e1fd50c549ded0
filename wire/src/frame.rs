//! The frame envelope and the type registry.

use std::fmt;

use crate::WireError;
use crate::codec::{Reader, Writer, read_uvarint, uvarint_len};

/// The only frame version (protocol consensus, tier 1).
pub const VERSION: u8 = 1;

/// The parser's ceiling on a declared payload length: 1 MiB (tier 1). It stays above anything a
/// packet can carry, so the packet is always the binding limit.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// The largest packet a transport carries: a whole frame, header included, must fit in 64 KiB.
pub const MAX_PACKET_LEN: usize = 65_536;

/// The longest frame header: version, type, and a uvarint length of up to [`MAX_FRAME_LEN`].
pub const HEADER_MAX_LEN: usize = 2 + uvarint_len(MAX_FRAME_LEN as u64);

/// A frame type: one byte from the registry shared by every nodenet component.
///
/// Values below 64 are reserved for the core; 64 and up belong to point-to-point application
/// use. Unknown values are carried, not refused: the parser does not judge types, the
/// dispatcher does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameType(pub u8);

impl FrameType {
    /// Application data routed over the overlay (routed envelope).
    pub const ROUTE: Self = Self(1);
    /// Keepalive probe on one edge.
    pub const PING: Self = Self(2);
    /// Answer to a ping, carrying the address the pinger was seen from.
    pub const PONG: Self = Self(3);
    /// Routed query for the nodes closest to a target.
    pub const LOOKUP: Self = Self(4);
    /// Answer to a lookup or sibling request (routed envelope).
    pub const NEIGHBORS: Self = Self(5);
    /// Request for a neighbour's closest contacts, on one edge.
    pub const SIBLINGS: Self = Self(6);
    /// Graceful goodbye on one edge.
    pub const LEAVE: Self = Self(7);
    /// Rendezvous request (routed envelope).
    pub const HELLO: Self = Self(8);
    /// Rendezvous answer (routed envelope).
    pub const REPLY: Self = Self(9);
    /// Hole-punch coordination request (routed envelope).
    pub const CONNECT: Self = Self(10);
    /// Hole-punch coordination answer (routed envelope).
    pub const CONNECT_ACK: Self = Self(11);
    /// Relay allocation request, on one edge.
    pub const RELAY_REQUEST: Self = Self(12);
    /// Relay allocation granted, on one edge.
    pub const RELAY_GRANT: Self = Self(13);
    /// Relay binding for the callee, on one edge.
    pub const RELAY_BIND: Self = Self(14);
    /// Application payload over a direct edge; never routed.
    pub const APP: Self = Self(64);
    /// The first type value outside the core's reserved range.
    pub const FIRST_APP: u8 = 64;

    /// True for the types whose payload is a routed envelope (target, TTL, signature, ...).
    pub const fn is_routed(self) -> bool {
        matches!(self.0, 1 | 4 | 5 | 8 | 9 | 10 | 11)
    }

    /// True for types reserved for the core (below 64).
    pub const fn is_core(self) -> bool {
        self.0 < Self::FIRST_APP
    }

    /// The registry name, if the type is assigned.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "Route",
            2 => "Ping",
            3 => "Pong",
            4 => "Lookup",
            5 => "Neighbors",
            6 => "Siblings",
            7 => "Leave",
            8 => "Hello",
            9 => "Reply",
            10 => "Connect",
            11 => "ConnectAck",
            12 => "RelayRequest",
            13 => "RelayGrant",
            14 => "RelayBind",
            64 => "App",
            _ => return None,
        })
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "FrameType({})", self.0),
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A frame: a type and a payload borrowed from wherever it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    frame_type: FrameType,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame to encode.
    pub const fn new(frame_type: FrameType, payload: &'a [u8]) -> Self {
        Self {
            frame_type,
            payload,
        }
    }

    /// Parses one frame from the front of `buf`, returning it and the bytes after it.
    ///
    /// Lenient where the reference is lenient (a non-minimal length uvarint is accepted; what
    /// follows the frame is returned, not refused), strict everywhere else: a wrong version, a
    /// declared length over [`MAX_FRAME_LEN`] (refused before any payload is needed) or a
    /// truncated frame is an error.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, &'a [u8]), WireError> {
        let (&version, after) = buf.split_first().ok_or(WireError::Truncated)?;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let (&ty, after) = after.split_first().ok_or(WireError::Truncated)?;
        let (len, n) = read_uvarint(after)?;
        if len > MAX_FRAME_LEN as u64 {
            return Err(WireError::TooLarge {
                len,
                max: MAX_FRAME_LEN as u64,
            });
        }
        let mut r = Reader::new(&after[n..]);
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        let payload = r.bytes(len)?;
        Ok((
            Self {
                frame_type: FrameType(ty),
                payload,
            },
            r.rest(),
        ))
    }

    /// Parses one frame from the front of `buf` and returns its type and where its payload
    /// lies in `buf`, for callers that rewrite the payload in place. The range comes from the
    /// parse itself, so it is right even when the length prefix was not minimal.
    pub fn parse_range(buf: &[u8]) -> Result<(FrameType, std::ops::Range<usize>), WireError> {
        let (frame, rest) = Frame::parse(buf)?;
        let end = buf.len() - rest.len();
        Ok((frame.frame_type, end - frame.payload.len()..end))
    }

    /// Parses a buffer that must hold exactly one frame and nothing after it.
    pub fn parse_exact(buf: &'a [u8]) -> Result<Self, WireError> {
        match Self::parse(buf)? {
            (frame, []) => Ok(frame),
            (_, rest) => Err(WireError::TrailingBytes { len: rest.len() }),
        }
    }

    /// The frame type.
    pub const fn frame_type(&self) -> FrameType {
        self.frame_type
    }

    /// The payload, borrowed.
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Bytes the encoded frame takes.
    pub const fn encoded_len(&self) -> usize {
        header_len(self.payload.len()) + self.payload.len()
    }

    /// True when the encoded frame fits one transport packet.
    pub const fn fits_packet(&self) -> bool {
        self.encoded_len() <= MAX_PACKET_LEN
    }

    /// Encodes the frame at the start of `buf`, returning the bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let need = self.encoded_len();
        if need > buf.len() {
            return Err(WireError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        let n = encode_header(buf, self.frame_type, self.payload.len())?;
        buf[n..need].copy_from_slice(self.payload);
        Ok(need)
    }
}

/// Bytes the header of a frame with a `payload_len`-byte payload takes.
pub const fn header_len(payload_len: usize) -> usize {
    2 + uvarint_len(payload_len as u64)
}

/// Writes just the header for a `payload_len`-byte payload, so a caller can build the payload
/// in place behind it. Returns the header length.
pub fn encode_header(
    buf: &mut [u8],
    frame_type: FrameType,
    payload_len: usize,
) -> Result<usize, WireError> {
    if payload_len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge {
            len: payload_len as u64,
            max: MAX_FRAME_LEN as u64,
        });
    }
    let need = header_len(payload_len);
    if need > buf.len() {
        return Err(WireError::BufferTooSmall {
            need,
            have: buf.len(),
        });
    }
    let mut w = Writer::new(buf);
    w.put_u8(VERSION)?;
    w.put_u8(frame_type.0)?;
    w.put_uvarint(payload_len as u64)?;
    Ok(w.finish())
}
