//! One direction of an edge: the link model (loss, delay, reordering, MTU) and the pump
//! that carries frames across it.

use super::*;

/// Frames one direction of an edge holds in flight (delayed or held for reordering).
pub(super) const MAX_IN_FLIGHT: usize = 1024;

/// How one direction of a link treats frames. The default is a perfect link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkModel {
    /// Probability in `[0, 1)` that a frame vanishes.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame. Frames still arrive in order
    /// unless `reorder_every` is set.
    pub jitter: Duration,
    /// Every n-th frame is held back by `reorder_hold` and overtaken by later ones (0 = off).
    /// This deliberately breaks the in-order guarantee, to test robustness against it.
    pub reorder_every: u32,
    /// How long a reordered frame is held.
    pub reorder_hold: Duration,
    /// Frames longer than this vanish.
    pub mtu: Option<usize>,
    /// Seed of this link's random choices: the same seed, the same fate for every frame.
    pub seed: u64,
    /// A bottleneck of this many bytes per second (media datagrams only; `None`: none).
    /// Datagrams queue behind it and leave one after another at this rate.
    pub rate: Option<u64>,
    /// Bytes the bottleneck's queue holds; a datagram that does not fit is dropped (tail
    /// drop). Only with [`LinkModel::rate`].
    pub queue_bytes: usize,
}

/// A frame on its way, ordered by delivery time and then by send order.
pub(super) struct InFlight {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) packet: Packet,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A small deterministic generator for link decisions (SplitMix64).
#[derive(Debug)]
pub(super) struct LinkRng(pub(super) u64);

impl LinkRng {
    /// A generator seeded by a hash (FNV-1a) of `bytes`: the same names, the same sequence.
    pub(super) fn seeded(bytes: impl IntoIterator<Item = u8>) -> Self {
        Self(bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }))
    }

    /// A port in 1024–65535.
    pub(super) fn port(&mut self) -> u16 {
        u16::try_from(1024 + self.next() % 64_512).unwrap_or(1024)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Moves frames from `conn`'s send queue to `peer`'s transport, through the link model.
/// Reports `conn`'s close to its own transport exactly once, after its last frame.
pub(super) async fn pump(
    from: Arc<Shared>,
    conn: Conn,
    mut rx: mpsc::Receiver<Packet>,
    to: Arc<Shared>,
    peer: Conn,
) {
    let model = from
        .hub
        .upgrade()
        .and_then(|h| lock(&h.state).links.get(&(from.id, to.id)).cloned())
        .unwrap_or_default();
    let mut rng = LinkRng(model.seed);
    let mut flight: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut last_at = Instant::now();

    let reason = {
        let mut closed = std::pin::pin!(conn.closed());
        loop {
            // Frames already due go now: a timer would round even a zero delay up to the
            // timer wheel's 1 ms tick.
            let now = Instant::now();
            let mut lost = false;
            while flight.peek().is_some_and(|Reverse(f)| f.at <= now) {
                if let Some(Reverse(f)) = flight.pop() {
                    if !deliver(&from, &to, &peer, f.packet).await {
                        lost = true;
                        break;
                    }
                }
            }
            if lost {
                break CloseReason::Lost;
            }
            let next_at = flight.peek().map(|Reverse(f)| f.at);
            tokio::select! {
                biased;
                reason = &mut closed => break reason,
                () = sleep_until(next_at), if next_at.is_some() => {
                    if let Some(Reverse(f)) = flight.pop() {
                        if !deliver(&from, &to, &peer, f.packet).await {
                            break CloseReason::Lost;
                        }
                    }
                }
                packet = rx.recv(), if flight.len() < MAX_IN_FLIGHT => {
                    let Some(packet) = packet else { break CloseReason::Lost };
                    seq += 1;
                    if let Some(f) = admit(&model, &mut rng, seq, &mut last_at, packet) {
                        flight.push(Reverse(f));
                    } else {
                        Counters::inc(&from.counters.frames_dropped_by_link);
                    }
                }
            }
        }
    };

    if reason == CloseReason::Local {
        // Frames accepted before the close still go out, in order, on their schedule.
        while let Ok(packet) = rx.try_recv() {
            seq += 1;
            if let Some(f) = admit(&model, &mut rng, seq, &mut last_at, packet) {
                flight.push(Reverse(f));
            }
        }
        while let Some(Reverse(f)) = flight.pop() {
            tokio::time::sleep_until(f.at).await;
            if !deliver(&from, &to, &peer, f.packet).await {
                break;
            }
        }
    }
    rx.close();
    peer.mark_closed(match reason {
        CloseReason::Local | CloseReason::TransportClosed => CloseReason::Remote,
        other => other,
    });
    from.conns.remove(&conn);
    from.events.push(Event::Closed { conn, reason }).await;
}

/// Applies loss, MTU and timing to one frame; `None` when the link drops it.
pub(super) fn admit(
    model: &LinkModel,
    rng: &mut LinkRng,
    seq: u64,
    last_at: &mut Instant,
    packet: Packet,
) -> Option<InFlight> {
    if model.mtu.is_some_and(|mtu| packet.len() > mtu) {
        return None;
    }
    if model.loss > 0.0 && rng.unit() < model.loss {
        return None;
    }
    let jitter = if model.jitter.is_zero() {
        Duration::ZERO
    } else {
        model.jitter.mul_f64(rng.unit())
    };
    // In order unless reordering is asked for: never before the previous frame.
    let at = (Instant::now() + model.delay + jitter).max(*last_at);
    *last_at = at;
    let held = model.reorder_every > 0 && seq % u64::from(model.reorder_every) == 0;
    let at = if held { at + model.reorder_hold } else { at };
    Some(InFlight { at, seq, packet })
}

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands a frame to the peer's transport unless the pair is partitioned. False once the
/// receiving transport is closed.
pub(super) async fn deliver(from: &Shared, to: &Shared, peer: &Conn, packet: Packet) -> bool {
    if partitioned(&from.hub, from.id, to.id) {
        Counters::inc(&from.counters.frames_dropped_by_link);
        return true;
    }
    if peer.is_closed() {
        return true;
    }
    to.events
        .push(Event::Frame {
            conn: peer.clone(),
            packet,
        })
        .await
}
