//! nodenet's byte codec: frames, the type registry, and the reader/writer every higher codec
//! is built from.
//!
//! A frame is `version(1) | type(1) | uvarint(payload_len) | payload`, with version `1`.
//! Multi-byte integers are big-endian; lengths are LEB128 uvarints.
//!
//! # The contract
//!
//! - **Decoding borrows.** [`Frame::parse`], [`Reader`] and [`AddrRef`] return slices of the
//!   input; nothing is copied or allocated.
//! - **Encoding never grows anything.** Encoders write into a buffer the caller owns and
//!   return [`WireError::BufferTooSmall`] rather than allocate.
//! - **No input panics.** Every malformed input is a [`WireError`] that says what was wrong;
//!   the fuzz targets in `fuzz/` hold the crate to that.
//!
//! Two size limits apply, one inside the other: the parser refuses any declared payload above
//! [`MAX_FRAME_LEN`] (1 MiB, a protocol constant), and a whole frame must fit the transport's
//! 64 KiB packet, [`MAX_PACKET_LEN`], to be sent at all.
//!
//! ```
//! use nodenet_wire::{Frame, FrameType};
//!
//! let mut buf = [0u8; 64];
//! let n = Frame::new(FrameType::APP, b"hello").encode(&mut buf)?;
//! let (frame, rest) = Frame::parse(&buf[..n])?;
//! assert_eq!((frame.frame_type(), frame.payload(), rest), (FrameType::APP, &b"hello"[..], &[][..]));
//! # Ok::<(), nodenet_wire::WireError>(())
//! ```
//!
//! This crate does no I/O and reads no clock.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod addr;
mod codec;
mod frame;

pub use addr::{Addr, AddrList, AddrListIter, AddrRef};
pub use codec::{Reader, Writer, uvarint_len};
pub use frame::{
    Frame, FrameType, HEADER_MAX_LEN, MAX_FRAME_LEN, MAX_PACKET_LEN, VERSION, encode_header,
    header_len,
};

/// What was wrong with bytes being decoded, or with a buffer being encoded into.
///
/// Small and `Copy`, so the hot path can return it for free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the item did.
    #[error("input truncated")]
    Truncated,
    /// The output buffer is too small for what is being encoded.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// The version byte is not [`VERSION`].
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// A declared length exceeds its limit.
    #[error("declared length {len} exceeds the limit of {max}")]
    TooLarge {
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A uvarint does not fit in 64 bits.
    #[error("uvarint overflows 64 bits")]
    VarintOverflow,
    /// Bytes remain after a message whose encoding must be exact.
    #[error("{len} unexpected trailing bytes")]
    TrailingBytes {
        /// How many bytes remain.
        len: usize,
    },
    /// A list declares more items than its protocol cap allows.
    #[error("list of {count} items exceeds the cap of {max}")]
    TooMany {
        /// The declared count.
        count: u64,
        /// The cap.
        max: usize,
    },
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    NotUtf8,
}

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing;

#[cfg(test)]
mod tests;
