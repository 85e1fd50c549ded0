//! Media sessions on the in-memory hub: two [`Session`]s joined by a pair of directed,
//! seeded media links ([`Hub::set_media_link`](super::Hub::set_media_link)).
//!
//! A datagram meets, in order: the MTU, loss, the bottleneck (it queues behind the bytes
//! already waiting and leaves at the link's rate; a full queue drops it), delay and jitter,
//! reordering. A message is never lost: it arrives after the delay, or, across a partition,
//! its write stalls and is abandoned after [`MESSAGE_STALL`]. A watchdog ends both sessions
//! once the pair has been partitioned for [`IDLE_TIMEOUT`] (as QUIC's idle timeout would),
//! or as soon as either transport closes.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use nodenet_kad::NodeId;
use tokio::time::Instant;

use super::{HubInner, LinkModel, LinkRng, Shared, lock, partitioned};
use crate::media::{
    CLOSE_REFUSED, IDLE_TIMEOUT, MESSAGE_STALL, MediaError, MediaLink, Peer, Session,
};
use crate::{Addr, BoxFuture, CloseReason, Direction, Event, MediaSession};

/// How often the watchdog looks at the pair.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// One direction of a session pair.
struct MemLink {
    from: NodeId,
    to: NodeId,
    hub: Weak<HubInner>,
    model: LinkModel,
    shaper: Mutex<Shaper>,
    /// The receiving session (set once both exist).
    peer: Arc<OnceLock<Weak<Session>>>,
}

impl std::fmt::Debug for MemLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemLink")
            .field("from", &self.from.short())
            .field("to", &self.to.short())
            .finish_non_exhaustive()
    }
}

/// The link's random choices and its bottleneck's state.
struct Shaper {
    rng: LinkRng,
    seq: u64,
    /// When the bottleneck finishes sending what is queued.
    busy_until: Instant,
    /// The latest arrival scheduled (no overtaking unless reordering is on).
    last_at: Instant,
}

impl MemLink {
    fn peer(&self) -> Option<Arc<Session>> {
        self.peer.get().and_then(Weak::upgrade)
    }

    fn cut(&self) -> bool {
        partitioned(&self.hub, self.from, self.to)
    }

    /// When a datagram of `len` bytes sent now arrives, or `None` if the link drops it.
    fn schedule(&self, len: usize) -> Option<Instant> {
        let m = &self.model;
        let mut s = lock(&self.shaper);
        s.seq += 1;
        if m.mtu.is_some_and(|mtu| len > mtu) {
            return None;
        }
        if m.loss > 0.0 && s.rng.unit() < m.loss {
            return None;
        }
        let now = Instant::now();
        let mut leaves = now;
        if let Some(rate) = m.rate.filter(|r| *r > 0) {
            let start = s.busy_until.max(now);
            let queued = start.duration_since(now).as_secs_f64() * rate as f64;
            if queued + len as f64 > m.queue_bytes as f64 {
                return None;
            }
            leaves = start + Duration::from_secs_f64(len as f64 / rate as f64);
            s.busy_until = leaves;
        }
        let jitter = if m.jitter.is_zero() {
            Duration::ZERO
        } else {
            m.jitter.mul_f64(s.rng.unit())
        };
        let at = (leaves + m.delay + jitter).max(s.last_at);
        s.last_at = at;
        let held = m.reorder_every > 0 && s.seq % u64::from(m.reorder_every) == 0;
        Some(if held { at + m.reorder_hold } else { at })
    }
}

impl MediaLink for MemLink {
    fn send_datagram(&self, frame: Bytes) -> BoxFuture<'static, Result<(), ()>> {
        if !self.cut() {
            if let (Some(at), Some(peer)) = (self.schedule(frame.len()), self.peer.get()) {
                let peer = peer.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Some(p) = peer.upgrade() {
                        if !p.is_closed() {
                            p.on_datagram(frame);
                        }
                    }
                });
            }
        }
        // Sent, as far as the sender can tell.
        Box::pin(std::future::ready(Ok(())))
    }

    fn send_message(&self, frame: Bytes) -> BoxFuture<'static, Result<(), MediaError>> {
        let cut = self.cut();
        let delay = self.model.delay;
        let peer = self.peer.get().cloned();
        Box::pin(async move {
            if cut {
                tokio::time::sleep(MESSAGE_STALL).await;
                return Err(MediaError::Stalled(MESSAGE_STALL));
            }
            let peer = peer.and_then(|p| p.upgrade()).ok_or(MediaError::Closed)?;
            if peer.is_closed() {
                return Err(MediaError::Closed);
            }
            if !peer.admit_message() {
                return Ok(());
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if !peer.is_closed() {
                    peer.on_message(frame);
                }
            });
            Ok(())
        })
    }

    fn close(&self, code: u32) {
        if let Some(p) = self.peer() {
            p.ended(if code == CLOSE_REFUSED {
                CloseReason::Refused
            } else {
                CloseReason::Remote
            });
        }
    }
}

/// Opens a session from `from` to `to`, reached at `addr`; `to` sees us at `source`.
pub(super) fn open(
    from: &Arc<Shared>,
    to: &Arc<Shared>,
    addr: &Addr,
    source: String,
) -> Result<MediaSession, MediaError> {
    let hub = from.hub.upgrade().ok_or(MediaError::Closed)?;
    let (there, back, budget) = {
        let state = lock(&hub.state);
        if state.no_media.contains(&to.id) || state.no_media.contains(&from.id) {
            return Err(MediaError::Unsupported);
        }
        let model =
            |a: NodeId, b: NodeId| state.media_links.get(&(a, b)).cloned().unwrap_or_default();
        (
            model(from.id, to.id),
            model(to.id, from.id),
            state.media_budget.unwrap_or_default(),
        )
    };
    let link = |a: NodeId, b: NodeId, model: LinkModel, peer| {
        let now = Instant::now();
        MemLink {
            from: a,
            to: b,
            hub: from.hub.clone(),
            shaper: Mutex::new(Shaper {
                rng: LinkRng(model.seed),
                seq: 0,
                busy_until: now,
                last_at: now,
            }),
            model,
            peer,
        }
    };
    // Each link delivers to the other side's session, which exists only after the link.
    let (to_theirs, to_ours) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let ours_link = link(from.id, to.id, there, to_theirs.clone());
    let theirs_link = link(to.id, from.id, back, to_ours.clone());
    let ours = Session::start(
        Peer {
            id: to.id,
            key: to.ed_pub,
            addr: addr.clone(),
            direction: Direction::Outbound,
        },
        Box::new(ours_link),
        budget,
    );
    let theirs = Session::start(
        Peer {
            id: from.id,
            key: from.ed_pub,
            addr: Addr::new(super::NET, source),
            direction: Direction::Inbound,
        },
        Box::new(theirs_link),
        budget,
    );
    let _ = to_theirs.set(Arc::downgrade(&theirs));
    let _ = to_ours.set(Arc::downgrade(&ours));
    tokio::spawn(watchdog(
        from.clone(),
        to.clone(),
        Arc::downgrade(&ours),
        Arc::downgrade(&theirs),
    ));
    let inbound = theirs.handle();
    let to = to.clone();
    // If the callee's transport is closed, the handle drops with the event and ends it.
    tokio::spawn(async move { to.events.push(Event::Media(inbound)).await });
    Ok(ours.handle())
}

/// Ends both sessions once the pair has been cut for [`IDLE_TIMEOUT`], or when either
/// transport closes; returns once both are gone.
async fn watchdog(a: Arc<Shared>, b: Arc<Shared>, x: Weak<Session>, y: Weak<Session>) {
    let mut cut_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let (Some(sx), Some(sy)) = (x.upgrade(), y.upgrade()) else {
            if let Some(s) = x.upgrade().or_else(|| y.upgrade()) {
                s.ended(CloseReason::Remote);
            }
            return;
        };
        if sx.is_closed() && sy.is_closed() {
            return;
        }
        if a.events.is_closed() || b.events.is_closed() {
            sx.ended(CloseReason::TransportClosed);
            sy.ended(CloseReason::TransportClosed);
            return;
        }
        if partitioned(&a.hub, a.id, b.id) {
            let since = *cut_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= IDLE_TIMEOUT {
                sx.ended(CloseReason::Lost);
                sy.ended(CloseReason::Lost);
                return;
            }
        } else {
            cut_since = None;
        }
    }
}
