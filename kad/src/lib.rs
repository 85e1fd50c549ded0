//! The Kademlia keyspace of nodenet: the 256-bit [`NodeId`] and its XOR metric.
//!
//! This is the leaf of the crate DAG. It depends on nothing but `std`, does no I/O, reads no
//! clock and allocates only when a caller formats an ID as a string.
//!
//! An ID is 32 bytes read as a big-endian number: byte 0 holds the most significant bits. The
//! distance between two IDs is their bitwise XOR, compared as a big-endian number. The metric is
//! what makes greedy routing work: every hop must strictly shrink the distance to the target,
//! and for a given ID and distance there is exactly one ID at that distance
//! (unidirectionality), so the copies of a message converge on the same node.
//!
//! ```
//! use nodenet_kad::NodeId;
//!
//! let a: NodeId = "80".repeat(32).parse()?;
//! let b = NodeId::ZERO;
//! assert_eq!(a.common_prefix_len(&b), 0);
//! assert_eq!(a.distance(&b).leading_zeros(), 0);
//! # Ok::<(), nodenet_kad::ParseIdError>(())
//! ```
//!
//! Which common-prefix length maps to which k-bucket is the routing table's business, not this
//! crate's; [`NodeId::bucket_index`] is provided for the usual "one bucket per prefix length"
//! layout.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Length of a [`NodeId`] in bytes.
pub const ID_LEN: usize = 32;

/// Number of bits in a [`NodeId`]: the largest possible common-prefix length.
pub const ID_BITS: u32 = 256;

/// The identity of a node: 256 bits, in practice the BLAKE2b-256 hash of its Ed25519 key.
///
/// `Ord` orders IDs as big-endian numbers; to order them by closeness to a target use
/// [`NodeId::cmp_distance`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId([u8; ID_LEN]);

impl NodeId {
    /// The all-zero ID. It is also the ID with the most proof-of-work (256 leading zero bits).
    pub const ZERO: Self = Self([0; ID_LEN]);

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads an ID from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseIdError> {
        let arr: [u8; ID_LEN] = bytes.try_into().map_err(|_| ParseIdError::InvalidLength {
            len: bytes.len() * 2,
        })?;
        Ok(Self(arr))
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The raw bytes by value.
    pub const fn to_bytes(self) -> [u8; ID_LEN] {
        self.0
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Self) -> Distance {
        let mut out = [0u8; ID_LEN];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = a ^ b;
        }
        Distance(out)
    }

    /// Compares the distances `self ⊕ a` and `self ⊕ b` without building either.
    ///
    /// `Ordering::Less` means `a` is closer to `self` than `b` is. This is the comparison a
    /// router sorts its candidates with, so it works on four big-endian words at a time.
    pub fn cmp_distance(&self, a: &Self, b: &Self) -> Ordering {
        for i in 0..4 {
            let t = self.word(i);
            let da = t ^ a.word(i);
            let db = t ^ b.word(i);
            if da != db {
                return da.cmp(&db);
            }
        }
        Ordering::Equal
    }

    /// The number of leading bits `self` and `other` share: 0 ..= 256, and 256 only when equal.
    pub fn common_prefix_len(&self, other: &Self) -> u32 {
        for (i, base) in [0, 64, 128, 192].into_iter().enumerate() {
            let x = self.word(i) ^ other.word(i);
            if x != 0 {
                return base + x.leading_zeros();
            }
        }
        ID_BITS
    }

    /// The number of leading zero bits of the ID itself (its proof-of-work): 0 ..= 256.
    pub fn leading_zeros(&self) -> u32 {
        self.common_prefix_len(&Self::ZERO)
    }

    /// The k-bucket `other` falls in, from `self`'s point of view, in a table with one bucket per
    /// common-prefix length: `Some(0..=255)`, or `None` when `other == self`.
    pub fn bucket_index(&self, other: &Self) -> Option<usize> {
        match self.common_prefix_len(other) {
            ID_BITS => None,
            cpl => Some(cpl as usize),
        }
    }

    /// The ID as four big-endian 64-bit words, most significant first. Comparing the XOR of
    /// two such arrays lexicographically orders distances, which hot loops can do without
    /// touching bytes again.
    pub fn to_words(&self) -> [u64; 4] {
        [self.word(0), self.word(1), self.word(2), self.word(3)]
    }

    /// A short form for logs: the first 8 hex digits.
    pub fn short(&self) -> ShortId {
        ShortId(*self)
    }

    fn word(&self, i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
        u64::from_be_bytes(w)
    }
}

impl From<[u8; ID_LEN]> for NodeId {
    fn from(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for NodeId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl fmt::LowerHex for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl FromStr for NodeId {
    type Err = ParseIdError;

    /// Parses exactly 64 hex digits (either case). Nothing else is accepted: no prefix, no
    /// whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != ID_LEN * 2 {
            return Err(ParseIdError::InvalidLength { len: bytes.len() });
        }
        let mut out = [0u8; ID_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(ParseIdError::InvalidDigit { index: i * 2 })?;
            let lo = hex_val(pair[1]).ok_or(ParseIdError::InvalidDigit { index: i * 2 + 1 })?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }
}

/// The first 8 hex digits of a [`NodeId`], for logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortId(NodeId);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0.0[..4])
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The XOR distance between two IDs, ordered as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Distance([u8; ID_LEN]);

impl Distance {
    /// Distance zero: an ID's distance to itself.
    pub const ZERO: Self = Self([0; ID_LEN]);

    /// The largest distance.
    pub const MAX: Self = Self([0xff; ID_LEN]);

    /// Wraps raw bytes as a distance.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, most significant first.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Leading zero bits: the common-prefix length of the two IDs this is the distance of.
    pub fn leading_zeros(&self) -> u32 {
        NodeId(self.0).leading_zeros()
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Distance(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// Why a string or slice is not a [`NodeId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseIdError {
    /// Not 64 hex digits (32 bytes); `len` is the length found, in hex digits.
    InvalidLength {
        /// The length that was found, in hex digits.
        len: usize,
    },
    /// A character that is not a hex digit, at byte offset `index` of the string.
    InvalidDigit {
        /// Byte offset of the offending character.
        index: usize,
    },
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLength { len } => {
                write!(f, "a NodeId is 64 hex digits, found {len}")
            }
            Self::InvalidDigit { index } => {
                write!(
                    f,
                    "a NodeId is 64 hex digits, found a non-hex character at offset {index}"
                )
            }
        }
    }
}

impl std::error::Error for ParseIdError {}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; ID_LEN * 2];
    for (i, b) in bytes.iter().enumerate() {
        buf[i * 2] = DIGITS[usize::from(b >> 4)];
        buf[i * 2 + 1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII hex digits were written.
    f.write_str(std::str::from_utf8(&buf[..bytes.len() * 2]).map_err(|_| fmt::Error)?)
}

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing {
    #![allow(clippy::panic, reason = "fuzz targets report by panicking")]
    use super::NodeId;

    /// Parse arbitrary bytes as a hex NodeId; a success must round-trip through `Display`.
    pub fn parse_id(data: &[u8]) {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(id) = s.parse::<NodeId>() {
            assert_eq!(
                id.to_string(),
                s.to_ascii_lowercase(),
                "display must round-trip"
            );
            assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
        }
    }
}

#[cfg(test)]
mod tests;
