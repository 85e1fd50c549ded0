//! `nodenet demo`: a whole overlay on loopback QUIC in one process, doing what the library is
//! for, and saying how it went.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodenet::{Contact, Maintenance, Node, Via};
use nodenet_identity::Identity;
use nodenet_transport::Transport as _;
use nodenet_transport::quic::{QuicConfig, QuicTransport};

/// What the demo does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemoArgs {
    pub(crate) nodes: usize,
    pub(crate) sends: usize,
    pub(crate) connects: usize,
}

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error("--nodes must be at least 2")]
    TooFew,
    #[error("cannot bind a loopback QUIC endpoint: {0}")]
    Bind(String),
    #[error(transparent)]
    Build(#[from] nodenet::BuildError),
}

/// How the demo went.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) sent: usize,
    pub(crate) delivered: usize,
    pub(crate) hops: Vec<u8>,
    pub(crate) latency_ms: Vec<f64>,
    pub(crate) connects: usize,
    pub(crate) connected: usize,
    pub(crate) connect_ms: Vec<f64>,
    /// Connects between nodes that held no edge yet (rendezvous, then a dial).
    pub(crate) fresh: usize,
    pub(crate) direct_delivered: usize,
}

impl Summary {
    /// Everything tried worked.
    pub(crate) fn all_ok(&self) -> bool {
        self.delivered == self.sent
            && self.connected == self.connects
            && self.direct_delivered == self.connects
    }
}

/// What arrived at a node: payload tag → (when, hops, how).
type Arrivals = Arc<Mutex<HashMap<u64, (Instant, u8, Via)>>>;

/// One node of the demo and what arrived at it.
struct Member {
    node: Node,
    got: Arrivals,
}

fn progress(label: &str, done: usize, total: usize) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{label}: {done}/{total}   ");
    if done >= total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// A small deterministic-per-run generator for picking pairs (not for cryptography).
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }

    fn pair(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let b = (a + 1 + self.below(n - 1)) % n;
        (a, b)
    }
}

/// Runs the demo and returns its summary (printing progress on stderr).
pub(crate) async fn demo(args: DemoArgs) -> Result<Summary, DemoError> {
    let n = args.nodes;
    if n < 2 {
        return Err(DemoError::TooFew);
    }
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut members = Vec::with_capacity(n);
    let mut boot_addr = None;
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    for _ in 0..n {
        let identity = Identity::generate(&mut rng);
        // One process, one IP: the per-IP inbound cap is for the open internet.
        let config = QuicConfig::default().max_inbound_per_ip(n);
        let t = QuicTransport::bind(&identity, localhost, config)
            .map_err(|e| DemoError::Bind(e.to_string()))?;
        boot_addr.get_or_insert_with(|| t.local_addr());
        let node = Node::builder(identity)
            .transport(Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .delivery_buffer(4096)
            .build()?;
        let got = Arc::new(Mutex::new(HashMap::new()));
        if let Ok(mut inbox) = node.deliveries() {
            let got = got.clone();
            tokio::spawn(async move {
                while let Some(d) = inbox.recv().await {
                    if let Ok(tag) = <[u8; 8]>::try_from(d.payload.as_slice()) {
                        let mut got = got
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        got.insert(u64::from_be_bytes(tag), (Instant::now(), d.hops, d.via));
                    }
                }
            });
        }
        node.spawn();
        members.push(Member { node, got });
    }
    let boot = Contact::new(members[0].node.id(), boot_addr.into_iter().collect());
    for m in &members[1..] {
        m.node.bootstrap(vec![boot.clone()]);
    }

    // Join: every node holds an edge (at most 20 s), then a few seconds for the tables.
    let started = Instant::now();
    loop {
        let joined = members
            .iter()
            .filter(|m| !m.node.edges().is_empty())
            .count();
        progress("joining", joined, n);
        if joined == n || started.elapsed() > Duration::from_secs(20) {
            if joined < n {
                let _ = writeln!(std::io::stderr());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut pick = Pick(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos())
                & u128::from(u64::MAX),
        )
        .unwrap_or(1)
            | 1,
    );
    let mut summary = Summary::default();

    // Routed sends between random pairs.
    let mut sent: Vec<(u64, usize, Instant)> = Vec::new();
    for k in 0..args.sends {
        let (a, b) = pick.pair(n);
        let tag = k as u64;
        let target = members[b].node.id();
        // A send that fails at once (no edge to launch from) counts as sent, not delivered.
        let _ = members[a].node.send(target, &tag.to_be_bytes());
        sent.push((tag, b, Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    summary.sent = sent.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let arrived: Vec<_> = sent
            .iter()
            .filter_map(|(tag, b, at)| {
                let got = members[*b]
                    .got
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(tag)
                    .copied();
                got.map(|(when, hops, _)| (when.duration_since(*at), hops))
            })
            .collect();
        progress("routed sends delivered", arrived.len(), sent.len());
        if arrived.len() == sent.len() || Instant::now() > deadline {
            if arrived.len() < sent.len() {
                let _ = writeln!(std::io::stderr());
            }
            summary.delivered = arrived.len();
            summary.hops = arrived.iter().map(|a| a.1).collect();
            summary.latency_ms = arrived.iter().map(|a| a.0.as_secs_f64() * 1000.0).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Direct connections between random pairs, each proven by one direct frame.
    summary.connects = args.connects;
    for k in 0..args.connects {
        // Prefer a pair that holds no edge yet: that connect has to find its peer.
        let unlinked: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && !members[a].node.edges().contains(&members[b].node.id()))
            .collect();
        let (a, b) = if unlinked.is_empty() {
            pick.pair(n)
        } else {
            summary.fresh += 1;
            unlinked[pick.below(unlinked.len())]
        };
        let target = members[b].node.id();
        let t0 = Instant::now();
        match members[a].node.connect(target).await {
            Ok(conn) => {
                summary.connected += 1;
                summary.connect_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                let tag = (1u64 << 63) | k as u64;
                if conn.send(&tag.to_be_bytes()).await.is_ok() {
                    let until = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < until {
                        let arrived = members[b]
                            .got
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&tag)
                            .is_some_and(|g| g.2 == Via::Direct);
                        if arrived {
                            summary.direct_delivered += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "\nconnect {a}→{b}: {e}");
            }
        }
        progress("direct connections", k + 1, args.connects);
    }
    for m in &members {
        m.node.shutdown().await;
    }
    Ok(summary)
}

/// The quantile of `xs` (sorted here) at `per_mille`/1000, nearest rank; 0 when empty.
fn quantile(xs: &mut [f64], per_mille: usize) -> f64 {
    xs.sort_by(f64::total_cmp);
    let last = xs.len().saturating_sub(1);
    xs.get((last * per_mille.min(1000) + 500) / 1000)
        .copied()
        .unwrap_or(0.0)
}

/// The summary, for people.
pub(crate) fn report(nodes: usize, s: &mut Summary) -> String {
    let mut hops: Vec<f64> = s.hops.iter().map(|&h| f64::from(h)).collect();
    let max_hops = s.hops.iter().copied().max().unwrap_or(0);
    let mut out = format!("nodenet demo: {nodes} nodes on loopback QUIC\n");
    out += &format!(
        "  routed sends   {}/{} delivered, hops median {} max {}, latency p50 {:.1} ms p99 {:.1} ms\n",
        s.delivered,
        s.sent,
        quantile(&mut hops, 500),
        max_hops,
        quantile(&mut s.latency_ms, 500),
        quantile(&mut s.latency_ms, 990),
    );
    out += &format!(
        "  direct edges   {}/{} connected ({} to a node not yet linked, {} carried a direct frame), \
         connect p50 {:.1} ms p99 {:.1} ms\n",
        s.connected,
        s.connects,
        s.fresh,
        s.direct_delivered,
        quantile(&mut s.connect_ms, 500),
        quantile(&mut s.connect_ms, 990),
    );
    out += if s.all_ok() {
        "  result         ok: everything tried worked"
    } else {
        "  result         FAILED: some of it did not work (see above)"
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let mut xs = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut xs, 0), 1.0);
        assert_eq!(quantile(&mut xs, 500), 3.0);
        assert_eq!(quantile(&mut xs, 1000), 5.0);
        assert_eq!(quantile(&mut [], 500), 0.0);
    }

    #[test]
    fn pairs_are_distinct_and_in_range() {
        let mut p = Pick(7);
        for _ in 0..1000 {
            let (a, b) = p.pair(5);
            assert!(a < 5 && b < 5 && a != b);
        }
    }

    #[test]
    fn the_report_fails_when_anything_failed() {
        let mut s = Summary {
            sent: 4,
            delivered: 4,
            hops: vec![1, 2, 2, 3],
            latency_ms: vec![1.0, 2.0, 3.0, 4.0],
            connects: 2,
            connected: 2,
            connect_ms: vec![5.0, 6.0],
            fresh: 1,
            direct_delivered: 2,
        };
        assert!(report(4, &mut s).contains("ok: everything"));
        s.delivered = 3;
        assert!(report(4, &mut s).contains("FAILED"));
    }
}
