//! The in-memory pipe: one direction of a stream on the hub.

use super::*;

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

    pub(super) fn poll_write(
        &self,
        cx: &Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
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

    pub(super) fn finish(&self) -> Result<(), StreamError> {
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

    pub(super) fn reset(&self, code: u64) {
        let mut s = self.state();
        if !s.finished && s.reset.is_none() {
            s.reset = Some(code);
            s.buf.clear();
        }
        wake(&mut s.reader);
    }

    pub(super) fn poll_read(
        &self,
        cx: &Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
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

    pub(super) fn stop(&self, code: u64) {
        let mut s = self.state();
        if s.stopped.is_none() && !(s.finished && s.buf.is_empty()) {
            s.stopped = Some(code);
        }
        s.buf.clear();
        wake(&mut s.writer);
    }

    pub(super) fn reader_dropped(&self, at_end: bool) {
        if !at_end {
            self.stop(u64::from(RESET_DROPPED));
        }
        self.state().reader_gone = true;
    }

    pub(super) fn writer_dropped(&self, finished: bool) {
        if !finished {
            self.reset(u64::from(RESET_DROPPED));
        }
        self.state().writer_gone = true;
    }
}

pub(super) fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}
