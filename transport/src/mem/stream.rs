//! Streams on the in-memory hub: two bounded pipes ([`MEM_WINDOW`] each way) between the
//! opener and the acceptor.
//!
//! Bytes are never lost or reordered; link models do not apply (a stream's reliability is
//! what is being modelled). A watchdog fails both ends with [`StreamError::Lost`] once the
//! pair has been partitioned for [`IDLE_TIMEOUT`] (as QUIC's idle timeout would), or with
//! [`StreamError::PeerClosed`] / [`StreamError::Closed`] as soon as either transport closes.
//! A shorter partition only delays nothing: data written during it arrives (as QUIC would
//! retransmit it after the heal).
//!
//! [`MEM_WINDOW`]: crate::stream::MEM_WINDOW

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{NET, Shared, lock, partitioned};
use crate::stream::{IDLE_TIMEOUT, MemPair, OPEN_TIMEOUT, Pipe, StreamHeader, mem_pair};
use crate::{Addr, Event, RecvStream, SendStream, StreamError};

/// How often the watchdog looks at the pair.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Opens a stream from `from` to `to`; `to` sees us at `source`.
pub(super) async fn open(
    from: Arc<Shared>,
    to: Arc<Shared>,
    source: String,
    protocol: String,
) -> Result<(SendStream, RecvStream), StreamError> {
    StreamHeader {
        protocol: &protocol,
    }
    .encode()
    .map_err(StreamError::BadProtocol)?;
    let hub = from.hub.upgrade().ok_or(StreamError::Closed)?;
    {
        let state = lock(&hub.state);
        if state.no_streams.contains(&to.id) || state.no_streams.contains(&from.id) {
            return Err(StreamError::Unsupported);
        }
    }
    let MemPair {
        send,
        recv,
        incoming,
        answered,
        pipes,
    } = mem_pair(from.id, to.id, Addr::new(NET, source), protocol);
    tokio::spawn(watchdog(from.clone(), to.clone(), pipes));
    if !to.events.push(Event::Stream(incoming)).await {
        // The acceptor's transport closed: the event (and the stream) is gone.
        return Err(StreamError::PeerClosed);
    }
    match tokio::time::timeout(OPEN_TIMEOUT, answered).await {
        Err(_) => Err(StreamError::Timeout(OPEN_TIMEOUT)),
        Ok(Err(_)) => Err(StreamError::PeerClosed),
        Ok(Ok(Err(why))) => Err(StreamError::Refused(why)),
        Ok(Ok(Ok(()))) => Ok((send, recv)),
    }
}

/// Breaks both pipes once the pair has been cut for [`IDLE_TIMEOUT`], or when either
/// transport closes; returns once both ends of both pipes are gone.
async fn watchdog(a: Arc<Shared>, b: Arc<Shared>, pipes: [Weak<Pipe>; 2]) {
    let mut cut_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let live: Vec<Arc<Pipe>> = pipes
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| !p.is_done())
            .collect();
        if live.is_empty() {
            return;
        }
        let error = if a.events.is_closed() {
            // Our side (the opener) closed; the acceptor sees its peer go.
            Some((StreamError::Closed, StreamError::PeerClosed))
        } else if b.events.is_closed() {
            Some((StreamError::PeerClosed, StreamError::Closed))
        } else if partitioned(&a.hub, a.id, b.id) {
            let since = *cut_since.get_or_insert_with(Instant::now);
            (since.elapsed() >= IDLE_TIMEOUT).then_some((StreamError::Lost, StreamError::Lost))
        } else {
            cut_since = None;
            None
        };
        if let Some((for_a, for_b)) = error {
            // Pipe 0 runs a → b, pipe 1 b → a; each end sees its own side's error.
            if let Some(p) = pipes[0].upgrade() {
                p.break_with(for_a.clone(), for_b.clone());
            }
            if let Some(p) = pipes[1].upgrade() {
                p.break_with(for_b, for_a);
            }
            return;
        }
    }
}
