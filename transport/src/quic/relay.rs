//! A volunteer relay session: two fresh UDP sockets, one facing the caller and one facing
//! the callee, between which datagrams are spliced unread. The QUIC and TLS handshake runs
//! end to end between the two peers; the relay sees only ciphertext.
//!
//! Each side pins to the IP of the first datagram it receives and then ignores every other
//! host (it follows a port change from the same IP: a NAT rebinding), so a session cannot be
//! hijacked or used to reflect traffic elsewhere. Budgets (per session: bytes and packets;
//! across sessions: bytes) drop what exceeds them silently; the tunnelled QUIC connection's
//! congestion control backs off. Only forwarded datagrams keep a session alive.
//!
//! Datagrams move in batches where the kernel offers it: one receive takes a run of
//! same-sized datagrams from one sender (GRO), and one send passes them on (GSO), so a bulk
//! transfer costs two system calls per batch rather than per datagram. Budgets count every
//! datagram of a batch.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io::IoSliceMut;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::stats::Counters;

/// A relay's limits.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RelayLimits {
    /// A session with nothing forwarded this long ends.
    pub idle: Duration,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Bytes per second per session, and its burst.
    pub session_bytes: (f64, f64),
    /// Packets per second per session, and its burst.
    pub session_packets: (f64, f64),
    /// Bytes per second across all sessions, and its burst.
    pub total_bytes: (f64, f64),
}

impl Default for RelayLimits {
    /// The reference's figures: 30 s idle, 256 sessions, 2 Mbit/s (burst 128 KiB) and
    /// 1,000 packets/s (burst 256) per session, 16 Mbit/s (burst 256 KiB) in all.
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            max_sessions: 256,
            session_bytes: (2e6 / 8.0, 128.0 * 1024.0),
            session_packets: (1000.0, 256.0),
            total_bytes: (16e6 / 8.0, 256.0 * 1024.0),
        }
    }
}

/// A token bucket over real time.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new((rate, burst): (f64, f64)) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self, n: f64) -> bool {
        if self.has(n) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Refills, then says whether `n` tokens are there (taking none).
    fn has(&mut self, n: f64) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens >= n
    }
}

/// What all of one transport's sessions share.
#[derive(Debug)]
pub(crate) struct Relays {
    pub(crate) limits: RelayLimits,
    pub(crate) active: AtomicUsize,
    pub(crate) total: Mutex<Bucket>,
}

impl Relays {
    pub(crate) fn new(limits: RelayLimits) -> Self {
        Self {
            limits,
            active: AtomicUsize::new(0),
            total: Mutex::new(Bucket::new(limits.total_bytes)),
        }
    }
}

/// One side of a session: pinned to the first sender's IP.
#[derive(Default)]
struct Side {
    peer: Option<SocketAddr>,
}

impl Side {
    /// Accepts `from` if it is (or pins) this side's host; follows its port.
    fn admit(&mut self, from: SocketAddr) -> bool {
        match self.peer {
            None => {
                self.peer = Some(from);
                true
            }
            Some(p) if p.ip() == from.ip() => {
                self.peer = Some(from);
                true
            }
            Some(_) => false,
        }
    }
}

/// One socket of a session with its batching state and receive buffer.
struct Port {
    sock: UdpSocket,
    state: UdpSocketState,
    buf: Vec<u8>,
}

impl Port {
    fn new(sock: UdpSocket) -> std::io::Result<Self> {
        let state = UdpSocketState::new((&sock).into())?;
        Ok(Self {
            sock,
            state,
            buf: vec![0u8; 65_536],
        })
    }

    /// The next batch: its length, the size of each datagram in it, and the sender.
    async fn recv(&mut self) -> std::io::Result<(usize, usize, SocketAddr)> {
        let Self { sock, state, buf } = self;
        loop {
            sock.readable().await?;
            let mut meta = [RecvMeta::default()];
            let got = sock.try_io(Interest::READABLE, || {
                let mut bufs = [IoSliceMut::new(buf)];
                state.recv((&*sock).into(), &mut bufs, &mut meta)
            });
            match got {
                Ok(_) => {
                    let m = &meta[0];
                    return Ok((m.len, m.stride.max(1).min(m.len.max(1)), m.addr));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `data` (datagrams of `stride` bytes, the last maybe shorter) to `to`.
    async fn send(&self, data: &[u8], stride: usize, to: SocketAddr) -> std::io::Result<()> {
        let batch = self.state.max_gso_segments().max(1) * stride;
        for run in data.chunks(batch) {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: run,
                segment_size: (run.len() > stride).then_some(stride),
                src_ip: None,
            };
            self.sock
                .async_io(Interest::WRITABLE, || {
                    self.state.send((&self.sock).into(), &transmit)
                })
                .await?;
        }
        Ok(())
    }
}

/// Runs one session until it idles out, then frees its slot.
pub(crate) async fn splice(
    caller: UdpSocket,
    callee: UdpSocket,
    relays: Arc<Relays>,
    counters: Arc<Counters>,
) {
    if let (Ok(caller), Ok(callee)) = (Port::new(caller), Port::new(callee)) {
        run(caller, callee, &relays, &counters).await;
    }
    relays.active.fetch_sub(1, Ordering::AcqRel);
}

async fn run(mut caller: Port, mut callee: Port, relays: &Relays, counters: &Counters) {
    let limits = relays.limits;
    let mut bytes = Bucket::new(limits.session_bytes);
    let mut packets = Bucket::new(limits.session_packets);
    let (mut a, mut b) = (Side::default(), Side::default());
    let mut last = Instant::now();
    loop {
        let idle = tokio::time::sleep_until(last + limits.idle);
        // (which side it came in on, bytes, datagram size, sender)
        // A socket error ends the session (retrying at once could spin on a persistent one).
        let (from_caller, n, stride, from) = tokio::select! {
            r = caller.recv() => match r {
                Ok((n, stride, from)) => (true, n, stride, from),
                Err(_) => break,
            },
            r = callee.recv() => match r {
                Ok((n, stride, from)) => (false, n, stride, from),
                Err(_) => break,
            },
            () = idle => break,
        };
        let (this, other, out, data) = if from_caller {
            (&mut a, &b, &callee, &caller.buf[..n])
        } else {
            (&mut b, &a, &caller, &callee.buf[..n])
        };
        if !this.admit(from) {
            Counters::inc(&counters.relay_dropped_foreign);
            continue;
        }
        // A punch datagram only pins its side; nothing is sent on before the other side is
        // known.
        let Some(to) = other.peer else {
            continue;
        };
        if n == 0 {
            // Carries nothing, so it must not keep the session alive either.
            continue;
        }
        // The batch's datagrams pay one by one: those within every budget go on (a prefix of
        // the batch), the rest are dropped, as they would be arriving singly.
        let count = n.div_ceil(stride);
        let mut allowed = 0;
        {
            let mut total = relays
                .total
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in 0..count {
                let size = (n - k * stride).min(stride) as f64;
                if !(packets.has(1.0) && bytes.has(size) && total.has(size)) {
                    break;
                }
                packets.take(1.0);
                bytes.take(size);
                total.take(size);
                allowed += 1;
            }
        }
        if allowed < count {
            Counters::add(&counters.relay_dropped_budget, (count - allowed) as u64);
        }
        if allowed == 0 {
            continue;
        }
        let data = &data[..n.min(allowed * stride)];
        if out.send(data, stride, to).await.is_ok() {
            Counters::add(&counters.relay_forwarded, allowed as u64);
            last = Instant::now();
        }
    }
}

/// Binds the two sockets of a new session on `ip`, if a session slot is free.
pub(crate) fn open(
    ip: IpAddr,
    relays: &Arc<Relays>,
    counters: &Arc<Counters>,
) -> Result<(SocketAddr, SocketAddr), crate::RelayError> {
    if relays.active.fetch_add(1, Ordering::AcqRel) >= relays.limits.max_sessions {
        relays.active.fetch_sub(1, Ordering::AcqRel);
        Counters::inc(&counters.relay_refused_busy);
        return Err(crate::RelayError::Busy);
    }
    let bind = || -> std::io::Result<UdpSocket> {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    };
    let sockets = bind().and_then(|c| Ok((c, bind()?)));
    let (caller, callee) = match sockets {
        Ok(s) => s,
        Err(e) => {
            relays.active.fetch_sub(1, Ordering::AcqRel);
            return Err(crate::RelayError::Io(e.to_string()));
        }
    };
    let addrs = match (caller.local_addr(), callee.local_addr()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            relays.active.fetch_sub(1, Ordering::AcqRel);
            return Err(crate::RelayError::Io(e.to_string()));
        }
    };
    Counters::inc(&counters.relay_sessions);
    tokio::spawn(splice(caller, callee, relays.clone(), counters.clone()));
    Ok(addrs)
}
