//! Birthday punching over QUIC (see `nodenet_nat::birthday` for the technique).
//!
//! The hard side's sockets are plain UDP sockets beside the transport's own. The one a
//! probe reaches becomes a second quinn endpoint (client only) that carries the edge: the
//! NAT mapping that let the probe in is tied to that socket, so the QUIC connection must
//! leave from it. (Splicing its datagrams into the main endpoint would need a custom socket
//! under quinn for one connection; a second endpoint is what quinn offers for it, and it
//! lives exactly as long as the connection.)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use nodenet_kad::NodeId;

use super::{NET, QuicTransport, Shared, dial_on};
use crate::{Addr, BirthdayError, BirthdayParams, Conn};

/// The usual TTL the hard side's sockets return to once their probe is out.
const NORMAL_TTL: u32 = 64;

fn literal(addr: &Addr) -> Result<SocketAddr, BirthdayError> {
    (addr.net == NET)
        .then(|| addr.endpoint.parse().ok())
        .flatten()
        .ok_or_else(|| BirthdayError::BadAddr(addr.to_string()))
}

fn io(e: std::io::Error) -> BirthdayError {
    BirthdayError::Io(e.to_string())
}

/// The hard side: `params.sockets` sockets probe `easy`; the first to hear the probe back
/// from exactly `easy` carries the dial.
pub(super) async fn hard(
    shared: Arc<Shared>,
    remote: NodeId,
    easy: Addr,
    probe: Vec<u8>,
    params: BirthdayParams,
) -> Result<Conn, BirthdayError> {
    let target = literal(&easy)?;
    let bind_ip = shared.local.ip();
    let mut listeners = tokio::task::JoinSet::new();
    for _ in 0..params.sockets.max(1) {
        let s = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(io)?;
        s.set_ttl(params.ttl).map_err(io)?;
        // Best effort, as any UDP datagram.
        let _ = s.send_to(&probe, target);
        s.set_ttl(NORMAL_TTL).map_err(io)?;
        s.set_nonblocking(true).map_err(io)?;
        let s = tokio::net::UdpSocket::from_std(s).map_err(io)?;
        let probe = probe.clone();
        listeners.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let (n, from) = s.recv_from(&mut buf).await?;
                if from == target && buf[..n] == probe[..] {
                    return Ok::<_, std::io::Error>(s);
                }
            }
        });
    }
    let heard = tokio::time::timeout(params.timeout, async {
        while let Some(joined) = listeners.join_next().await {
            if let Ok(Ok(s)) = joined {
                return Some(s);
            }
        }
        None
    })
    .await;
    // The other sockets close now.
    listeners.abort_all();
    let socket = heard
        .ok()
        .flatten()
        .ok_or(BirthdayError::Timeout)?
        .into_std()
        .map_err(io)?;
    // It also serves: the easy side's media dial to this mapping comes in here.
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(shared.server.clone()),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(io)?;
    let conn = dial_on(&shared, &endpoint, remote, &easy)
        .await
        .map_err(BirthdayError::Dial)?;
    super::lock(&shared.side_endpoints).insert(remote, endpoint.clone());
    tokio::spawn(super::accept_on(shared.clone(), endpoint.clone()));
    // Once the edge is gone, the socket takes nothing new, and closes when the last call on
    // it has ended (a call outlives its edge).
    let (shared2, edge) = (shared.clone(), conn.clone());
    tokio::spawn(async move {
        edge.closed().await;
        {
            let mut sides = super::lock(&shared2.side_endpoints);
            let mine = sides
                .get(&remote)
                .is_some_and(|e| e.local_addr().ok() == endpoint.local_addr().ok());
            if mine {
                sides.remove(&remote);
            }
        }
        endpoint.set_server_config(None);
        while endpoint.open_connections() > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
        endpoint.close(0u32.into(), b"");
    });
    Ok(conn)
}

/// The easy side: probes distinct random ports of `host` from the transport's socket.
pub(super) async fn easy(
    transport: QuicTransport,
    host: String,
    probe: Vec<u8>,
    params: BirthdayParams,
) -> Result<u32, BirthdayError> {
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| BirthdayError::BadAddr(host.clone()))?;
    // Only where a punch may go (no loopback from a public socket, no broadcast...).
    transport
        .punch_policy(SocketAddr::new(ip, 1))
        .map_err(|_| BirthdayError::BadAddr(host.clone()))?;
    let mut ports = Ports::new(ip, transport.socket_addr());
    let rate = params.probe_rate.max(1);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1) / rate);
    let mut sent = 0;
    while sent < params.max_probes {
        tick.tick().await;
        let Some(port) = ports.next() else { break };
        if transport
            .send_raw(&probe, SocketAddr::new(ip, port))
            .is_ok()
        {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Distinct pseudo-random ports in 1024–65535 (a full-period walk: no repeats until all
/// 64,512 are used). Not secret: a hard side's ports are as random as its NAT makes them.
struct Ports {
    state: u32,
    step: u32,
    left: u32,
}

const PORT_SPAN: u32 = 65_536 - 1024;

impl Ports {
    fn new(ip: IpAddr, local: SocketAddr) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(ip, local, now), &mut h);
        let seed = std::hash::Hasher::finish(&h);
        // A step coprime with the span (an odd one not divisible by 3, 7) visits every port.
        let span = u64::from(PORT_SPAN);
        // Both below PORT_SPAN, so they fit a u32.
        let mut step = u32::try_from((seed >> 32) % span).unwrap_or(1);
        while step == 0 || step % 2 == 0 || step % 3 == 0 || step % 7 == 0 {
            step = (step + 1) % PORT_SPAN;
        }
        Self {
            state: u32::try_from(seed % span).unwrap_or(0),
            step,
            left: PORT_SPAN,
        }
    }
}

impl Iterator for Ports {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.state = (self.state + self.step) % PORT_SPAN;
        u16::try_from(1024 + self.state).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_never_repeat_and_stay_in_range() {
        let mut seen = std::collections::HashSet::new();
        let p = Ports::new("192.0.2.1".parse().unwrap(), "127.0.0.1:9".parse().unwrap());
        for port in p {
            assert!(port >= 1024);
            assert!(seen.insert(port), "{port} twice");
        }
        assert_eq!(seen.len(), PORT_SPAN as usize);
    }
}
