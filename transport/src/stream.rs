//! Streams: reliable, ordered, flow-controlled byte pipes to one peer, each opened for a
//! named application protocol.
//!
//! A stream is a pair of halves, [`SendStream`] and [`RecvStream`], that implement tokio's
//! [`AsyncWrite`] and [`AsyncRead`]. Nothing written is dropped: a reader that does not read
//! stops the writer (its writes wait for the window to open), and anything that ends a
//! stream early is an error at both ends, never a silent truncation:
//!
//! - [`SendStream::finish`] ends the data cleanly; it returns once the peer's transport holds
//!   every byte (the reader then sees the end, `Ok(None)` / a zero-length read);
//! - a half dropped without `finish` resets the stream ([`RESET_DROPPED`]), and the reader
//!   sees [`StreamError::Reset`] rather than an end;
//! - a [`RecvStream`] dropped before the end, or [`RecvStream::stop`], makes the writer's
//!   next write fail with [`StreamError::Stopped`];
//! - a dead path ends both halves with [`StreamError::Lost`] within [`IDLE_TIMEOUT`].
//!
//! # Opening
//!
//! The opener sends a header, `len(1) | protocol(len)` ([`StreamHeader`]); the acceptor
//! answers one byte `0` to accept, or resets the stream with a [`Refusal`] code. Over QUIC a
//! stream rides its own connection with ALPN `nodenet-stream/1`, dialed to the address the
//! overlay edge runs over (same socket, so the same NAT mapping, punched hole or relay), so
//! bulk data has its own congestion control and never queues behind overlay frames. A peer
//! without the extension fails the handshake with `no_application_protocol`, reported as
//! [`StreamError::Unsupported`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nodenet_kad::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::{Addr, BoxFuture, DialError};

/// Longest application protocol name, in bytes.
pub const MAX_PROTOCOL: usize = 64;
/// Time the opener has to send its header, and the acceptor to answer it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream connection with no traffic (keep-alives included) for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The opener's keep-alive interval on a stream connection.
pub const KEEPALIVE: Duration = Duration::from_secs(3);
/// Streams a peer may have open at once on one stream connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Bytes one in-memory stream direction buffers before its writer waits.
pub const MEM_WINDOW: usize = 256 * 1024;
/// Reset (and stop) code of a half dropped before it was finished (or read to the end).
pub const RESET_DROPPED: u32 = 0;

/// An application protocol name that cannot be sent: empty, longer than [`MAX_PROTOCOL`], or
/// with a byte outside printable ASCII (`!` to `~`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad stream protocol name ({len} bytes): {why}")]
pub struct BadProtocol {
    /// The name's length in bytes.
    pub len: usize,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks an application protocol name: 1 to [`MAX_PROTOCOL`] bytes of printable ASCII
/// without spaces (`!` to `~`), e.g. `"sendme/1"`.
///
/// # Errors
/// [`BadProtocol`] saying which rule it breaks.
pub fn check_protocol(name: &str) -> Result<(), BadProtocol> {
    let len = name.len();
    let why = if len == 0 {
        "empty"
    } else if len > MAX_PROTOCOL {
        "longer than 64 bytes"
    } else if !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        "not printable ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(BadProtocol { len, why })
}

/// The opener's header: `len(1) | protocol(len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader<'a> {
    /// The application protocol the stream is for.
    pub protocol: &'a str,
}

impl<'a> StreamHeader<'a> {
    /// The header's bytes.
    ///
    /// # Errors
    /// [`BadProtocol`] if the name is not one [`check_protocol`] accepts.
    pub fn encode(&self) -> Result<Vec<u8>, BadProtocol> {
        check_protocol(self.protocol)?;
        let mut out = Vec::with_capacity(1 + self.protocol.len());
        // check_protocol bounds the length to 64.
        out.push(u8::try_from(self.protocol.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.protocol.as_bytes());
        Ok(out)
    }

    /// Parses a header at the start of `bytes`; returns it and the bytes after it.
    ///
    /// # Errors
    /// [`BadStreamHeader::Short`] if `bytes` ends first (read more), and
    /// [`BadStreamHeader::Protocol`] for a name [`check_protocol`] refuses.
    pub fn decode(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), BadStreamHeader> {
        let (&len, rest) = bytes.split_first().ok_or(BadStreamHeader::Short)?;
        let len = usize::from(len);
        if len == 0 || len > MAX_PROTOCOL {
            return Err(BadStreamHeader::Protocol(BadProtocol {
                len,
                why: if len == 0 {
                    "empty"
                } else {
                    "longer than 64 bytes"
                },
            }));
        }
        if rest.len() < len {
            return Err(BadStreamHeader::Short);
        }
        let (name, rest) = rest.split_at(len);
        let protocol = std::str::from_utf8(name).map_err(|_| {
            BadStreamHeader::Protocol(BadProtocol {
                len,
                why: "not printable ASCII without spaces",
            })
        })?;
        check_protocol(protocol).map_err(BadStreamHeader::Protocol)?;
        Ok((Self { protocol }, rest))
    }
}

/// A stream header that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadStreamHeader {
    /// The bytes end before the header does.
    #[error("stream header cut short")]
    Short,
    /// The protocol name is not allowed.
    #[error(transparent)]
    Protocol(BadProtocol),
}

/// Why an acceptor turned a stream down (sent as the reset code of its answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// No handler is registered for the protocol.
    NoHandler,
    /// The acceptor's policy refused this peer (or its proof of work is short).
    Refused,
    /// A stream cap or the handler's queue is full: try later.
    Busy,
}

impl Refusal {
    /// The reset code that carries it.
    pub fn code(self) -> u32 {
        match self {
            Self::NoHandler => 1,
            Self::Refused => 2,
            Self::Busy => 3,
        }
    }

    /// The refusal a reset code carries, if it is one of the three.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Self::NoHandler),
            2 => Some(Self::Refused),
            3 => Some(Self::Busy),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoHandler => "no handler for the protocol",
            Self::Refused => "refused by the peer",
            Self::Busy => "the peer is busy",
        })
    }
}

/// Why a stream could not open, or ended early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer (or this transport) does not speak streams: a node without the extension,
    /// such as the Go reference.
    #[error("the peer does not support streams")]
    Unsupported,
    /// The stream connection could not be made.
    #[error("stream connection failed: {0}")]
    Dial(DialError),
    /// The peer turned the stream down.
    #[error("stream refused: {0}")]
    Refused(Refusal),
    /// The protocol name cannot be sent.
    #[error(transparent)]
    BadProtocol(BadProtocol),
    /// The peer did not answer within the time.
    #[error("no answer to the stream within {0:?}")]
    Timeout(Duration),
    /// The peer reset its sending half with this code (it ended without finishing).
    #[error("the peer reset the stream (code {0})")]
    Reset(u64),
    /// The peer stopped reading with this code.
    #[error("the peer stopped reading the stream (code {0})")]
    Stopped(u64),
    /// The path died: nothing arrived for the idle timeout.
    #[error("the stream's path was lost")]
    Lost,
    /// The peer closed the stream's connection (its node shut down).
    #[error("the peer closed the stream's connection")]
    PeerClosed,
    /// This side closed: the half was finished or reset already, or the transport shut down.
    #[error("stream closed on this side")]
    Closed,
    /// [`RecvStream::read_to_end`] met more than its limit.
    #[error("stream data longer than the {limit}-byte limit")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// The peer broke the stream framing.
    #[error("stream protocol violation: {0}")]
    Protocol(&'static str),
}

impl StreamError {
    /// The stream error inside an [`io::Error`] that [`SendStream`]'s [`AsyncWrite`] or
    /// [`RecvStream`]'s [`AsyncRead`] returned, if it carries one.
    pub fn from_io(error: &io::Error) -> Option<&Self> {
        error.get_ref().and_then(|e| e.downcast_ref::<Self>())
    }
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match &e {
            StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::Stopped(_) => io::ErrorKind::BrokenPipe,
            StreamError::Lost | StreamError::Timeout(_) => io::ErrorKind::TimedOut,
            StreamError::PeerClosed => io::ErrorKind::ConnectionAborted,
            StreamError::Closed => io::ErrorKind::NotConnected,
            StreamError::TooLong { .. } | StreamError::Protocol(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        Self::new(kind, e)
    }
}

fn from_connection(e: &quinn::ConnectionError) -> StreamError {
    match e {
        quinn::ConnectionError::ApplicationClosed(_)
        | quinn::ConnectionError::ConnectionClosed(_)
        | quinn::ConnectionError::Reset => StreamError::PeerClosed,
        quinn::ConnectionError::LocallyClosed => StreamError::Closed,
        _ => StreamError::Lost,
    }
}

fn from_write(e: quinn::WriteError) -> StreamError {
    match e {
        quinn::WriteError::Stopped(code) => StreamError::Stopped(code.into_inner()),
        quinn::WriteError::ConnectionLost(c) => from_connection(&c),
        quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => StreamError::Closed,
    }
}

fn from_read(e: quinn::ReadError) -> StreamError {
    match e {
        quinn::ReadError::Reset(code) => StreamError::Reset(code.into_inner()),
        quinn::ReadError::ConnectionLost(c) => from_connection(&c),
        quinn::ReadError::ClosedStream
        | quinn::ReadError::IllegalOrderedRead
        | quinn::ReadError::ZeroRttRejected => StreamError::Closed,
    }
}

/// Something kept alive as long as a stream half lives (see [`SendStream::hold`]).
pub type Token = Arc<dyn std::any::Any + Send + Sync>;

mod halves;
mod pipe;
#[cfg(test)]
mod tests;

pub use halves::{IncomingStream, RecvStream, SendStream};
pub(crate) use halves::{MemPair, mem_pair, open_quic, read_header};
pub(crate) use pipe::Pipe;

/// Fuzz logic for the stream header, shared by the fuzz target and the corpus replay test.
#[doc(hidden)]
pub mod fuzzing {
    #![allow(clippy::panic, reason = "fuzz targets report by panicking")]
    use super::{BadStreamHeader, MAX_PROTOCOL, StreamHeader, check_protocol};
    pub use nodenet_wire::fuzzing::Reached;

    /// The checks of [`stream_header`], in [`Reached`] bit order.
    pub const STREAM_HEADER_CHECKS: &[&str] = &[
        "accepted: re-encodes to the bytes it read, the rest handed back",
        "short: the input ends inside the name its length announces",
        "refused: a length of 0 or over 64",
        "refused: a name byte outside printable ASCII",
    ];

    /// The stream header decoder against a model: a header is accepted exactly when the
    /// first byte is 1 to 64, that many bytes follow, and all are `!` to `~`; what it
    /// accepts re-encodes to the same bytes; every refusal names the rule the input broke.
    pub fn stream_header(data: &[u8]) -> Reached {
        let mut reached = Reached::default();
        let len = data.first().map(|&b| usize::from(b));
        match StreamHeader::decode(data) {
            Ok((h, rest)) => {
                let n = 1 + h.protocol.len();
                assert_eq!(len, Some(h.protocol.len()));
                assert_eq!(h.encode().as_deref(), Ok(&data[..n]));
                assert_eq!(rest, &data[n..]);
                reached.hit(0);
            }
            Err(BadStreamHeader::Short) => {
                let short =
                    len.is_none_or(|l| (1..=MAX_PROTOCOL).contains(&l) && data.len() < 1 + l);
                assert!(short, "{data:02x?} called short");
                reached.hit(1);
            }
            Err(BadStreamHeader::Protocol(p)) => {
                let l = len.unwrap_or_else(|| panic!("empty input refused as a bad name"));
                if l == 0 || l > MAX_PROTOCOL {
                    assert_eq!(p.len, l);
                    reached.hit(2);
                } else {
                    let name = &data[1..=l];
                    assert!(
                        name.iter().any(|b| !(0x21..=0x7e).contains(b)),
                        "{name:02x?}"
                    );
                    assert!(std::str::from_utf8(name).map_or(true, |n| check_protocol(n).is_err()));
                    reached.hit(3);
                }
            }
        }
        reached
    }
}
