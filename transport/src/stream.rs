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

// ---------------------------------------------------------------------------------------
// The in-memory pipe: one direction of a stream on the hub.

/// One direction of an in-memory stream: a bounded buffer between a writer and a reader.
#[derive(Debug, Default)]
pub(crate) struct Pipe(Mutex<PipeState>);

#[derive(Debug, Default)]
struct PipeState {
    buf: std::collections::VecDeque<u8>,
    finished: bool,
    reset: Option<u64>,
    stopped: Option<u64>,
    /// What ends the writer and the reader (a dead path, a closed transport).
    broken: Option<(StreamError, StreamError)>,
    reader_gone: bool,
    writer_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn state(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the writer with `writer` and the reader with `reader` (a reader still gets what
    /// was finished before).
    pub(crate) fn break_with(&self, writer: StreamError, reader: StreamError) {
        let mut s = self.state();
        if s.broken.is_none() {
            s.broken = Some((writer, reader));
        }
        wake(&mut s.reader);
        wake(&mut s.writer);
    }

    /// True once both ends are done with it.
    pub(crate) fn is_done(&self) -> bool {
        let s = self.state();
        s.writer_gone && s.reader_gone
    }

    fn poll_write(&self, cx: &Context<'_>, data: &[u8]) -> Poll<Result<usize, StreamError>> {
        let mut s = self.state();
        if let Some((e, _)) = &s.broken {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(code) = s.stopped {
            return Poll::Ready(Err(StreamError::Stopped(code)));
        }
        if s.finished || s.reset.is_some() {
            return Poll::Ready(Err(StreamError::Closed));
        }
        let room = MEM_WINDOW.saturating_sub(s.buf.len());
        if room == 0 {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        s.buf.extend(&data[..n]);
        wake(&mut s.reader);
        Poll::Ready(Ok(n))
    }

    fn finish(&self) -> Result<(), StreamError> {
        let mut s = self.state();
        if let Some((e, _)) = &s.broken {
            return Err(e.clone());
        }
        if let Some(code) = s.stopped {
            return Err(StreamError::Stopped(code));
        }
        if s.reset.is_some() {
            return Err(StreamError::Closed);
        }
        s.finished = true;
        wake(&mut s.reader);
        Ok(())
    }

    fn reset(&self, code: u64) {
        let mut s = self.state();
        if !s.finished && s.reset.is_none() {
            s.reset = Some(code);
            s.buf.clear();
        }
        wake(&mut s.reader);
    }

    fn poll_read(&self, cx: &Context<'_>, out: &mut ReadBuf<'_>) -> Poll<Result<(), StreamError>> {
        let mut s = self.state();
        if let Some(code) = s.reset {
            return Poll::Ready(Err(StreamError::Reset(code)));
        }
        if !s.buf.is_empty() {
            let n = out.remaining().min(s.buf.len());
            let (a, b) = s.buf.as_slices();
            let first = n.min(a.len());
            out.put_slice(&a[..first]);
            out.put_slice(&b[..n - first]);
            s.buf.drain(..n);
            wake(&mut s.writer);
            return Poll::Ready(Ok(()));
        }
        if s.finished {
            return Poll::Ready(Ok(()));
        }
        if let Some((_, e)) = &s.broken {
            return Poll::Ready(Err(e.clone()));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn stop(&self, code: u64) {
        let mut s = self.state();
        if s.stopped.is_none() && !(s.finished && s.buf.is_empty()) {
            s.stopped = Some(code);
        }
        s.buf.clear();
        wake(&mut s.writer);
    }

    fn reader_dropped(&self, at_end: bool) {
        if !at_end {
            self.stop(u64::from(RESET_DROPPED));
        }
        self.state().reader_gone = true;
    }

    fn writer_dropped(&self, finished: bool) {
        if !finished {
            self.reset(u64::from(RESET_DROPPED));
        }
        self.state().writer_gone = true;
    }
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

// ---------------------------------------------------------------------------------------
// The halves.

enum SendInner {
    Quic(quinn::SendStream),
    Mem(Arc<Pipe>),
}

/// The sending half of a stream. Implements [`AsyncWrite`]; its inherent methods return
/// [`StreamError`] directly.
///
/// Writes wait while the peer's window is full (a slow reader slows the writer; nothing is
/// dropped). Call [`SendStream::finish`] (or `AsyncWriteExt::shutdown`) to end the data:
/// dropping the half without it resets the stream, so the reader sees
/// [`StreamError::Reset`] instead of a clean end.
pub struct SendStream {
    remote: NodeId,
    inner: SendInner,
    /// `finish` or `reset` was called.
    ended: bool,
    finishing: Option<BoxFuture<'static, Result<(), StreamError>>>,
    _held: Vec<Token>,
}

impl fmt::Debug for SendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendStream")
            .field("remote", &self.remote.short())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl SendStream {
    fn new(remote: NodeId, inner: SendInner) -> Self {
        Self {
            remote,
            inner,
            ended: false,
            finishing: None,
            _held: Vec::new(),
        }
    }

    /// The peer at the other end (authenticated).
    pub fn remote_id(&self) -> NodeId {
        self.remote
    }

    /// Keeps `token` alive as long as this half lives. A node uses it to hold a stream's
    /// admission slot; an application may use it to tie any resource to the stream.
    pub fn hold(&mut self, token: Token) {
        self._held.push(token);
    }

    /// Writes some of `data`, waiting while the peer's window is full; returns how much.
    ///
    /// # Errors
    /// [`StreamError::Stopped`] once the peer stopped reading, [`StreamError::Lost`] /
    /// [`StreamError::PeerClosed`] when the path or the peer went away, and
    /// [`StreamError::Closed`] after [`finish`](Self::finish) or [`reset`](Self::reset).
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        std::future::poll_fn(|cx| self.poll_write_inner(cx, data)).await
    }

    /// Writes all of `data`, waiting as needed.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends the data and waits until the peer's transport holds every byte written (not
    /// until its application read them). The reader then sees the end of the stream.
    ///
    /// # Errors
    /// [`StreamError::Stopped`] if the peer stopped reading first, [`StreamError::Lost`] /
    /// [`StreamError::PeerClosed`] if the path or the peer went away before it had
    /// everything, [`StreamError::Closed`] if the half was reset.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        std::future::poll_fn(|cx| self.poll_finish(cx)).await
    }

    /// Abandons the stream: the peer's reads fail with [`StreamError::Reset`]`(code)` and
    /// unread data is discarded. Nothing happens after [`finish`](Self::finish).
    pub fn reset(&mut self, code: u32) {
        if self.ended {
            return;
        }
        self.ended = true;
        match &mut self.inner {
            SendInner::Quic(s) => {
                let _ = s.reset(code.into());
            }
            SendInner::Mem(p) => p.reset(u64::from(code)),
        }
    }

    fn poll_write_inner(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if self.ended {
            return Poll::Ready(Err(StreamError::Closed));
        }
        match &mut self.inner {
            SendInner::Quic(s) => Pin::new(s).poll_write(cx, data).map_err(from_write),
            SendInner::Mem(p) => p.poll_write(cx, data),
        }
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        if self.finishing.is_none() {
            if self.ended {
                return Poll::Ready(Err(StreamError::Closed));
            }
            self.ended = true;
            let fut: BoxFuture<'static, Result<(), StreamError>> = match &mut self.inner {
                SendInner::Quic(s) => {
                    if s.finish().is_err() {
                        return Poll::Ready(Err(StreamError::Closed));
                    }
                    let stopped = s.stopped();
                    Box::pin(async move {
                        match stopped.await {
                            Ok(None) => Ok(()),
                            Ok(Some(code)) => Err(StreamError::Stopped(code.into_inner())),
                            Err(quinn::StoppedError::ConnectionLost(c)) => Err(from_connection(&c)),
                            Err(quinn::StoppedError::ZeroRttRejected) => Err(StreamError::Lost),
                        }
                    })
                }
                SendInner::Mem(p) => Box::pin(std::future::ready(p.finish())),
            };
            self.finishing = Some(fut);
        }
        match self.finishing.as_mut() {
            Some(f) => f.as_mut().poll(cx),
            None => Poll::Ready(Err(StreamError::Closed)),
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        match &mut self.inner {
            SendInner::Quic(s) => {
                if !self.ended {
                    let _ = s.reset(RESET_DROPPED.into());
                }
            }
            SendInner::Mem(p) => p.writer_dropped(self.ended && self.finishing.is_some()),
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_inner(cx, buf)
            .map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_finish(cx).map_err(io::Error::from)
    }
}

enum RecvInner {
    Quic(quinn::RecvStream),
    Mem(Arc<Pipe>),
}

/// The receiving half of a stream. Implements [`AsyncRead`] (a zero-length read is the
/// clean end); its inherent methods return [`StreamError`] directly.
///
/// Data waits in the peer's window until it is read, so reading slowly slows the writer.
/// Dropping the half before the end stops the writer ([`StreamError::Stopped`] there).
///
/// The inherent [`read`](Self::read) and [`read_to_end`](Self::read_to_end) take precedence
/// over `tokio::io::AsyncReadExt`'s methods of the same names; to use those (or
/// `tokio::io::copy`), call them as functions: `AsyncReadExt::read_to_end(&mut recv, &mut v)`.
/// Through [`AsyncRead`], a stream error is an [`io::Error`] carrying the [`StreamError`]
/// ([`StreamError::from_io`]).
pub struct RecvStream {
    remote: NodeId,
    inner: RecvInner,
    /// The clean end was read: later reads see the end again.
    at_end: bool,
    /// What ended it early (or `Closed` after `stop`): later reads see it again, so a
    /// retried read never mistakes a cut stream for a finished one.
    failed: Option<StreamError>,
    _held: Vec<Token>,
}

impl fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("remote", &self.remote.short())
            .field("at_end", &self.at_end)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl RecvStream {
    fn new(remote: NodeId, inner: RecvInner) -> Self {
        Self {
            remote,
            inner,
            at_end: false,
            failed: None,
            _held: Vec::new(),
        }
    }

    /// The peer at the other end (authenticated).
    pub fn remote_id(&self) -> NodeId {
        self.remote
    }

    /// Keeps `token` alive as long as this half lives (see [`SendStream::hold`]).
    pub fn hold(&mut self, token: Token) {
        self._held.push(token);
    }

    /// Reads into `buf`, waiting for data; `Ok(None)` at the clean end of the stream (and on
    /// every read after it). After an error, every later read returns that error again.
    ///
    /// # Errors
    /// [`StreamError::Reset`] if the writer abandoned the stream (or dropped it unfinished),
    /// [`StreamError::Lost`] / [`StreamError::PeerClosed`] when the path or the peer went
    /// away, [`StreamError::Closed`] after [`stop`](Self::stop).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        let mut rb = ReadBuf::new(buf);
        std::future::poll_fn(|cx| self.poll_read_inner(cx, &mut rb)).await?;
        let n = rb.filled().len();
        Ok((n > 0).then_some(n))
    }

    /// Reads the rest of the stream, at most `limit` bytes.
    ///
    /// # Errors
    /// [`StreamError::TooLong`] (and the stream is stopped) once more than `limit` bytes
    /// arrive; otherwise as [`read`](Self::read).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while let Some(n) = self.read(&mut chunk).await? {
            if out.len() + n > limit {
                self.stop(RESET_DROPPED);
                return Err(StreamError::TooLong { limit });
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok(out)
    }

    /// Stops reading: the writer's next write fails with [`StreamError::Stopped`]`(code)`,
    /// and data not yet read is discarded.
    pub fn stop(&mut self, code: u32) {
        if self.at_end || self.failed.is_some() {
            return;
        }
        self.failed = Some(StreamError::Closed);
        match &mut self.inner {
            RecvInner::Quic(s) => {
                let _ = s.stop(code.into());
            }
            RecvInner::Mem(p) => p.stop(u64::from(code)),
        }
    }

    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(e.clone()));
        }
        if self.at_end {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = match &mut self.inner {
            RecvInner::Quic(s) => std::task::ready!(s.poll_read_buf(cx, buf)).map_err(from_read),
            RecvInner::Mem(p) => std::task::ready!(p.poll_read(cx, buf)),
        };
        match &r {
            Ok(()) if buf.filled().len() == before && buf.remaining() > 0 => self.at_end = true,
            Err(e) => self.failed = Some(e.clone()),
            Ok(()) => {}
        }
        Poll::Ready(r)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        match &mut self.inner {
            RecvInner::Quic(s) => {
                if !self.at_end && self.failed.is_none() {
                    let _ = s.stop(RESET_DROPPED.into());
                }
            }
            RecvInner::Mem(p) => p.reader_dropped(self.at_end || self.failed.is_some()),
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // After the clean end a read is the end again (as for a socket); after an error, the
        // same error again.
        self.get_mut()
            .poll_read_inner(cx, buf)
            .map_err(io::Error::from)
    }
}

// ---------------------------------------------------------------------------------------
// The acceptor's view.

enum IncomingInner {
    Quic {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    Mem {
        send: Arc<Pipe>,
        recv: Arc<Pipe>,
        answer: oneshot::Sender<Result<(), Refusal>>,
    },
}

/// A stream a peer opened to us, not yet answered: [`accept`](Self::accept) it or
/// [`refuse`](Self::refuse) it. Dropping it refuses it ([`Refusal::Refused`]).
pub struct IncomingStream {
    remote: NodeId,
    addr: Addr,
    protocol: String,
    inner: Option<IncomingInner>,
    /// Handed to the halves on accept (the transport's count of live streams).
    held: Vec<Token>,
}

impl fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingStream")
            .field("remote", &self.remote.short())
            .field("addr", &self.addr)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl IncomingStream {
    pub(crate) fn quic(
        remote: NodeId,
        addr: Addr,
        protocol: String,
        (send, recv): (quinn::SendStream, quinn::RecvStream),
        live: Token,
    ) -> Self {
        Self {
            remote,
            addr,
            protocol,
            inner: Some(IncomingInner::Quic { send, recv }),
            held: vec![live],
        }
    }

    /// The peer that opened it (authenticated).
    pub fn remote_id(&self) -> NodeId {
        self.remote
    }

    /// The address it came from.
    pub fn remote_addr(&self) -> &Addr {
        &self.addr
    }

    /// The application protocol it asks for (already checked by [`check_protocol`]).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Accepts it: the opener's `open_stream` returns, and the halves are ours.
    ///
    /// # Errors
    /// [`StreamError::Timeout`] if the answer could not be written within [`OPEN_TIMEOUT`];
    /// otherwise the error that ended the stream first (the opener gave up or went away).
    pub async fn accept(mut self) -> Result<(SendStream, RecvStream), StreamError> {
        let remote = self.remote;
        match self.inner.take() {
            Some(IncomingInner::Quic { mut send, recv }) => {
                match tokio::time::timeout(OPEN_TIMEOUT, send.write_all(&[0])).await {
                    Err(_) => {
                        let _ = send.reset(RESET_DROPPED.into());
                        Err(StreamError::Timeout(OPEN_TIMEOUT))
                    }
                    Ok(Err(e)) => Err(from_write(e)),
                    Ok(Ok(())) => {
                        let mut s = SendStream::new(remote, SendInner::Quic(send));
                        let mut r = RecvStream::new(remote, RecvInner::Quic(recv));
                        // Both halves: either may outlive the other.
                        r._held.clone_from(&self.held);
                        s._held = std::mem::take(&mut self.held);
                        Ok((s, r))
                    }
                }
            }
            Some(IncomingInner::Mem { send, recv, answer }) => {
                let (s, r) = (
                    SendStream::new(remote, SendInner::Mem(send)),
                    RecvStream::new(remote, RecvInner::Mem(recv)),
                );
                answer.send(Ok(())).map_err(|_| StreamError::PeerClosed)?;
                Ok((s, r))
            }
            None => Err(StreamError::Closed),
        }
    }

    /// Refuses it: the opener's `open_stream` fails with [`StreamError::Refused`]`(why)`.
    pub fn refuse(mut self, why: Refusal) {
        self.refuse_inner(why);
    }

    fn refuse_inner(&mut self, why: Refusal) {
        match self.inner.take() {
            Some(IncomingInner::Quic { mut send, mut recv }) => {
                let _ = send.reset(why.code().into());
                let _ = recv.stop(why.code().into());
            }
            Some(IncomingInner::Mem { send, recv, answer }) => {
                let _ = answer.send(Err(why));
                send.writer_dropped(false);
                recv.reader_dropped(false);
            }
            None => {}
        }
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        self.refuse_inner(Refusal::Refused);
    }
}

// ---------------------------------------------------------------------------------------
// Opening, per transport.

/// Opens a stream on an established QUIC stream connection: header out, answer in.
pub(crate) async fn open_quic(
    connection: &quinn::Connection,
    remote: NodeId,
    header: &[u8],
) -> Result<(SendStream, RecvStream), StreamError> {
    let handshake = async {
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| from_connection(&e))?;
        // Wrapped at once: if this future is dropped or fails from here on, the halves reset
        // the stream rather than finish it (quinn's own drop would finish it, and an acceptor
        // that took it would read an empty, clean stream).
        let mut send = SendStream::new(remote, SendInner::Quic(send));
        let mut recv = RecvStream::new(remote, RecvInner::Quic(recv));
        send.write_all(header).await?;
        let mut answer = [0u8; 1];
        match recv.read(&mut answer).await {
            Ok(Some(_)) if answer[0] == 0 => Ok((send, recv)),
            Ok(Some(_)) => Err(StreamError::Protocol("unknown answer byte")),
            Ok(None) => Err(StreamError::Protocol("answer stream ended early")),
            // Any other code: the acceptor took the stream and reset it at once (which may
            // discard its answer), an early end rather than a refusal.
            Err(StreamError::Reset(code)) => {
                Err(Refusal::from_code(code).map_or(StreamError::Reset(code), StreamError::Refused))
            }
            Err(e) => Err(e),
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, handshake)
        .await
        .map_err(|_| StreamError::Timeout(OPEN_TIMEOUT))?
}

/// Reads an opener's header from a freshly accepted QUIC stream, within [`OPEN_TIMEOUT`].
pub(crate) async fn read_header(recv: &mut quinn::RecvStream) -> Result<String, StreamError> {
    let read = async {
        let mut len = [0u8; 1];
        recv.read_exact(&mut len)
            .await
            .map_err(|_| StreamError::Protocol("no header"))?;
        let mut bytes = vec![0u8; 1 + usize::from(len[0])];
        bytes[0] = len[0];
        if bytes.len() > 1 + MAX_PROTOCOL {
            return Err(StreamError::Protocol("protocol name too long"));
        }
        recv.read_exact(&mut bytes[1..])
            .await
            .map_err(|_| StreamError::Protocol("header cut short"))?;
        let (header, _) = StreamHeader::decode(&bytes).map_err(|e| match e {
            BadStreamHeader::Short => StreamError::Protocol("header cut short"),
            BadStreamHeader::Protocol(p) => StreamError::BadProtocol(p),
        })?;
        Ok(header.protocol.to_owned())
    };
    tokio::time::timeout(OPEN_TIMEOUT, read)
        .await
        .map_err(|_| StreamError::Timeout(OPEN_TIMEOUT))?
}

/// A fresh in-memory stream: the opener's halves, the acceptor's [`IncomingStream`], the
/// answer the opener waits on, and the two pipes (for a watchdog).
pub(crate) fn mem_pair(
    opener: NodeId,
    acceptor: NodeId,
    opener_addr: Addr,
    protocol: String,
) -> MemPair {
    let (there, back) = (Arc::new(Pipe::default()), Arc::new(Pipe::default()));
    let (answer, answered) = oneshot::channel();
    MemPair {
        send: SendStream::new(acceptor, SendInner::Mem(there.clone())),
        recv: RecvStream::new(acceptor, RecvInner::Mem(back.clone())),
        incoming: IncomingStream {
            remote: opener,
            addr: opener_addr,
            protocol,
            inner: Some(IncomingInner::Mem {
                send: back.clone(),
                recv: there.clone(),
                answer,
            }),
            held: Vec::new(),
        },
        answered,
        pipes: [Arc::downgrade(&there), Arc::downgrade(&back)],
    }
}

/// See [`mem_pair`].
pub(crate) struct MemPair {
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
    pub(crate) incoming: IncomingStream,
    pub(crate) answered: oneshot::Receiver<Result<(), Refusal>>,
    pub(crate) pipes: [std::sync::Weak<Pipe>; 2],
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn protocol_names_are_checked() {
        assert!(check_protocol("sendme/1").is_ok());
        assert!(check_protocol(&"a".repeat(64)).is_ok());
        assert_eq!(check_protocol("").unwrap_err().why, "empty");
        assert_eq!(check_protocol(&"a".repeat(65)).unwrap_err().len, 65);
        assert!(check_protocol("two words").is_err());
        assert!(check_protocol("é").is_err());
    }

    #[test]
    fn header_decoding_refuses_what_encoding_cannot_make() {
        assert_eq!(StreamHeader::decode(&[]), Err(BadStreamHeader::Short));
        assert_eq!(
            StreamHeader::decode(&[3, b'a']),
            Err(BadStreamHeader::Short)
        );
        assert!(matches!(
            StreamHeader::decode(&[0]),
            Err(BadStreamHeader::Protocol(_))
        ));
        assert!(matches!(
            StreamHeader::decode(&[65]),
            Err(BadStreamHeader::Protocol(_))
        ));
        assert!(matches!(
            StreamHeader::decode(&[2, 0xc3, 0xa9]),
            Err(BadStreamHeader::Protocol(_))
        ));
        let (h, rest) = StreamHeader::decode(b"\x03abcxyz").unwrap();
        assert_eq!((h.protocol, rest), ("abc", &b"xyz"[..]));
    }

    proptest! {
        #[test]
        fn header_round_trips(name in "[!-~]{1,64}", tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = StreamHeader { protocol: &name }.encode().unwrap();
            bytes.extend_from_slice(&tail);
            let (h, rest) = StreamHeader::decode(&bytes).unwrap();
            prop_assert_eq!(h.protocol, name.as_str());
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok((h, rest)) = StreamHeader::decode(&bytes) {
                prop_assert!(check_protocol(h.protocol).is_ok());
                prop_assert_eq!(1 + h.protocol.len() + rest.len(), bytes.len());
            }
        }
    }

    fn pair() -> MemPair {
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        mem_pair(a, b, Addr::new("mem", "a"), "t/1".into())
    }

    /// A pair whose opener waits for the answer (as `open` does), out of the test's way.
    fn open_pair() -> MemPair {
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let mut p = mem_pair(a, b, Addr::new("mem", "a"), "t/1".into());
        let (_, dead) = oneshot::channel();
        let answered = std::mem::replace(&mut p.answered, dead);
        tokio::spawn(async move {
            let _ = answered.await;
        });
        p
    }

    #[tokio::test]
    async fn a_mem_stream_carries_bytes_both_ways_and_ends_cleanly() {
        let MemPair {
            mut send,
            mut recv,
            incoming,
            ..
        } = open_pair();
        let (mut their_send, mut their_recv) = incoming.accept().await.unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                send.write_all(&data).await.unwrap();
                send.finish().await.unwrap();
            })
        };
        let got = their_recv.read_to_end(2_000_000).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        their_send.write_all(b"thanks").await.unwrap();
        their_send.shutdown().await.unwrap();
        let mut back = Vec::new();
        AsyncReadExt::read_to_end(&mut recv, &mut back)
            .await
            .unwrap();
        assert_eq!(back, b"thanks");
    }

    #[tokio::test]
    async fn a_slow_mem_reader_holds_the_writer_at_the_window() {
        let MemPair {
            mut send, incoming, ..
        } = open_pair();
        let (_s, _r) = incoming.accept().await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        while let Ok(n) = tokio::time::timeout(Duration::from_millis(50), send.write(&chunk)).await
        {
            written += n.unwrap();
        }
        assert_eq!(written, MEM_WINDOW);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_writer_is_a_reset_not_an_end() {
        let MemPair {
            mut send, incoming, ..
        } = open_pair();
        let (_s, mut r) = incoming.accept().await.unwrap();
        send.write_all(b"partial").await.unwrap();
        drop(send);
        let reset = StreamError::Reset(u64::from(RESET_DROPPED));
        assert_eq!(r.read_to_end(1 << 20).await, Err(reset.clone()));
        // Read again (as a caller retrying a timed-out read would): still the error, never a
        // clean end, through either interface.
        assert_eq!(r.read(&mut [0u8; 8]).await, Err(reset.clone()));
        let e = AsyncReadExt::read(&mut r, &mut [0u8; 8]).await.unwrap_err();
        assert_eq!(StreamError::from_io(&e), Some(&reset));
    }

    #[tokio::test]
    async fn a_stopped_reader_fails_the_writer_and_a_refusal_reaches_the_opener() {
        let MemPair {
            mut send, incoming, ..
        } = open_pair();
        let (_s, mut r) = incoming.accept().await.unwrap();
        r.stop(9);
        assert_eq!(send.write(b"x").await, Err(StreamError::Stopped(9)));

        let MemPair {
            incoming, answered, ..
        } = pair();
        incoming.refuse(Refusal::Busy);
        assert_eq!(answered.await.unwrap(), Err(Refusal::Busy));
        let MemPair {
            incoming, answered, ..
        } = pair();
        drop(incoming);
        assert_eq!(answered.await.unwrap(), Err(Refusal::Refused));
    }

    #[tokio::test]
    async fn a_broken_pipe_fails_both_ends_but_not_a_finished_direction() {
        let MemPair {
            mut send,
            mut recv,
            incoming,
            pipes,
            ..
        } = open_pair();
        let (mut their_send, mut their_recv) = incoming.accept().await.unwrap();
        their_send.write_all(b"done").await.unwrap();
        their_send.finish().await.unwrap();
        for p in &pipes {
            p.upgrade()
                .unwrap()
                .break_with(StreamError::Lost, StreamError::Lost);
        }
        assert_eq!(send.write(b"x").await, Err(StreamError::Lost));
        assert_eq!(their_recv.read(&mut [0; 4]).await, Err(StreamError::Lost));
        // What was finished before the break is still read whole.
        assert_eq!(recv.read_to_end(100).await.unwrap(), b"done");
        let e: io::Error = StreamError::Lost.into();
        assert_eq!(StreamError::from_io(&e), Some(&StreamError::Lost));
    }
}
