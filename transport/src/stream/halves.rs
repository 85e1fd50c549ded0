//! The halves of a stream, the acceptor's view of one, and opening per transport.

use super::*;

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
