//! `nodenet run`: one node on QUIC, its control API, and its lifecycle log.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nodenet::{Contact, Delivery, Node, NodeEvent, Stats, Via};
use nodenet_transport::Transport as _;
use nodenet_transport::quic::{NET, QuicConfig, QuicTransport};
use nodenet_wire::Addr;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::api::{self, Api};
use crate::config::{self, BootstrapEntry};

/// What `nodenet run` is asked for.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The seed file (the identity's only secret); minted on first run.
    /// Default: $XDG_CONFIG_HOME/nodenet/seed or ~/.config/nodenet/seed.
    #[arg(long)]
    pub(crate) seed: Option<PathBuf>,
    /// Where to listen for peers: HOST:PORT, or :PORT for every interface.
    #[arg(long)]
    pub(crate) addr: Option<String>,
    /// Proof-of-work difficulty, in leading zero bits of a NodeId, for us and our peers.
    #[arg(long, default_value_t = 0)]
    pub(crate) pow: u32,
    /// Entry points into the overlay: <nodeid-hex>@host:port, comma-separated.
    #[arg(long)]
    pub(crate) bootstrap: Option<String>,
    /// Volunteer as a relay for peers that cannot hole-punch.
    #[arg(long)]
    pub(crate) relay: bool,
    /// As a relay, each session's budget in Mbit/s (its packet budget scales with it).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) relay_session_mbit: f64,
    /// As a relay, the budget of all sessions together in Mbit/s.
    #[arg(long, default_value_t = 16.0)]
    pub(crate) relay_total_mbit: f64,
    /// Inbound edges accepted at most (the transport takes 32 connections more, for peers
    /// whose connect this node just answered).
    #[arg(long, default_value_t = 256)]
    pub(crate) max_inbound: usize,
    /// Inbound connections accepted at most from one IP address (for IPv6, one /64).
    #[arg(long, default_value_t = 32)]
    pub(crate) max_inbound_per_ip: usize,
    /// Least seconds between two birthday punches (symmetric ↔ cone NAT) of this node.
    #[arg(long, default_value_t = 20)]
    pub(crate) birthday_interval: u64,
    /// Take calls (media sessions) from any peer and echo their media back: for testing
    /// paths with `nodenet call`. Off by default: every call is refused.
    #[arg(long)]
    pub(crate) accept_calls: bool,
    /// Take files (`nodenet send-file`) from any peer into this directory, each checked
    /// against its content hash. Off by default: every file is refused.
    #[arg(long)]
    pub(crate) accept_files: Option<PathBuf>,
    /// The largest file --accept-files takes, in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    pub(crate) max_file_size: u64,
    /// Where the control API listens (keep it on loopback unless you mean otherwise).
    #[arg(long, default_value = crate::DEFAULT_API)]
    pub(crate) api: SocketAddr,
}

/// Why the node did not start (exit code 2: the operator's input) or stopped (exit code 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("at least one of --addr (a door for others) or --bootstrap (a way in) is required")]
    NothingToDo,
    #[error("--addr {0:?}: expected HOST:PORT or :PORT")]
    BadAddr(String),
    #[error(transparent)]
    Bootstrap(#[from] config::BootstrapError),
    #[error(transparent)]
    Seed(#[from] config::SeedError),
    #[error("bootstrap {endpoint}: cannot resolve it: {source}")]
    Resolve {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{0} {1}: expected a positive number of Mbit/s")]
    BadRate(&'static str, f64),
    #[error("--accept-files {0:?}: not a directory")]
    FilesDir(PathBuf),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Build(#[from] nodenet::BuildError),
    #[error("cannot serve the API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl RunError {
    /// 2 for what the operator gave (fix the command line), 1 for what happened at runtime.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Bind { .. } | Self::Api { .. } | Self::Resolve { .. } => 1,
            _ => 2,
        }
    }
}

/// The relay budgets for `--relay-session-mbit` and `--relay-total-mbit`: bytes at the given
/// rates with a tenth of a second of burst (never less than the defaults' bursts), and one
/// packet per 1,000 bytes of the session rate (never fewer than the default 1,000/s).
fn relay_limits(
    session_mbit: f64,
    total_mbit: f64,
) -> Result<nodenet_transport::quic::RelayLimits, RunError> {
    for (flag, v) in [
        ("--relay-session-mbit", session_mbit),
        ("--relay-total-mbit", total_mbit),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(RunError::BadRate(flag, v));
        }
    }
    let mut limits = nodenet_transport::quic::RelayLimits::default();
    let session = session_mbit * 1e6 / 8.0;
    let total = total_mbit * 1e6 / 8.0;
    limits.session_bytes = (session, (session / 10.0).max(limits.session_bytes.1));
    let packets = (session / 1000.0).max(limits.session_packets.0);
    limits.session_packets = (packets, (packets / 10.0).max(limits.session_packets.1));
    limits.total_bytes = (total, (total / 10.0).max(limits.total_bytes.1));
    Ok(limits)
}

/// Parses `--addr`: `HOST:PORT`, or `:PORT` for every interface.
fn parse_listen(addr: &str) -> Result<SocketAddr, RunError> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    full.parse().map_err(|_| RunError::BadAddr(addr.to_owned()))
}

/// Runs the node until SIGINT or SIGTERM, then leaves the overlay gracefully.
pub(crate) async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.addr.is_none() && args.bootstrap.is_none() {
        return Err(RunError::NothingToDo);
    }
    let listen = args.addr.as_deref().map(parse_listen).transpose()?;
    if let Some(dir) = &args.accept_files {
        if !dir.is_dir() {
            return Err(RunError::FilesDir(dir.clone()));
        }
    }
    let entries = args
        .bootstrap
        .as_deref()
        .map(config::parse_bootstrap)
        .transpose()?
        .unwrap_or_default();
    let seed_path = match args.seed {
        Some(p) => p,
        None => config::default_seed_path()?,
    };
    let (identity, minted) = config::load_or_mint(&seed_path, args.pow)?;
    let mut contacts = Vec::new();
    for BootstrapEntry { id, endpoint } in entries {
        let a = config::resolve(&endpoint)
            .await
            .map_err(|source| RunError::Resolve {
                endpoint: endpoint.clone(),
                source,
            })?;
        contacts.push(Contact::new(id, vec![Addr::new(NET, a.to_string())]));
    }

    // Without --addr the node only dials out (as behind NAT): any free port, nothing
    // advertised.
    let bind = listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut quic = QuicConfig::default()
        .max_inbound(args.max_inbound.saturating_add(nodenet::INBOUND_HEADROOM))
        .max_inbound_per_ip(args.max_inbound_per_ip);
    quic.relay = relay_limits(args.relay_session_mbit, args.relay_total_mbit)?;
    let transport = QuicTransport::bind(&identity, bind, quic).map_err(|e| RunError::Bind {
        addr: bind,
        reason: e.to_string(),
    })?;
    let local = transport.local_addr();
    let mut builder = Node::builder(identity)
        .transport(Arc::new(transport))
        .min_difficulty(args.pow)
        .relay(args.relay)
        .max_inbound_edges(args.max_inbound);
    if args.accept_calls {
        builder = builder.media_consent(|_| true);
    }
    builder = builder.birthday(nodenet::BirthdayConfig {
        min_interval: Duration::from_secs(args.birthday_interval),
        ..nodenet::BirthdayConfig::default()
    });
    if listen.is_none_or(|l| l.ip().is_unspecified()) {
        // 0.0.0.0 is no address anyone can dial: peers learn ours from the edge they see.
        builder = builder.advertise(Vec::new());
    }
    let node = builder.build()?;

    let api_listener = tokio::net::TcpListener::bind(args.api)
        .await
        .map_err(|source| RunError::Api {
            addr: args.api,
            source,
        })?;
    let api_addr = api_listener.local_addr().unwrap_or(args.api);
    let inbox = node.deliveries().ok();
    let (events_tx, _) = broadcast::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Api {
        stop: stop_rx.clone(),
        node: node.clone(),
        listen: local.endpoint.clone(),
        events: events_tx.clone(),
        started: Instant::now(),
    };
    // The contract with scripts: this is the first line on stdout.
    println!("node {} listening on {}", node.id(), local.endpoint);
    tracing::info!(
        event = "started",
        id = %node.id(),
        listen = %local.endpoint,
        api = %api_addr,
        seed = %seed_path.display(),
        minted,
        pow = args.pow,
        "node started"
    );

    let running = node.spawn();
    if !contacts.is_empty() {
        node.bootstrap(contacts);
    }
    if let Some(inbox) = inbox {
        tokio::spawn(pump(node.clone(), inbox, events_tx));
    }
    if args.accept_calls {
        tokio::spawn(crate::call::answer_calls(node.clone()));
    }
    if let Some(dir) = args.accept_files.clone() {
        tokio::spawn(crate::transfer::accept_files(
            node.clone(),
            dir,
            args.max_file_size,
        ));
    }
    let server = axum::serve(api_listener, api::router(state))
        .with_graceful_shutdown({
            let mut stop = stop_rx;
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        })
        .into_future();
    let server = tokio::spawn(server);
    shutdown_signal().await;
    // Ends the `/events` streams too, so open subscriptions do not hold the server up.
    stop_tx.send_replace(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::error!(event = "api_failed", error = %e, "the API server failed");
        }
        _ => tracing::warn!(
            event = "api_slow_stop",
            "the API server did not stop within 5 s"
        ),
    }
    tracing::info!(event = "stopping", "leaving the overlay");
    node.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    tracing::info!(event = "stopped", "node stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Turns deliveries, edge changes and new drops into `/events` JSON and log lines.
async fn pump(node: Node, mut inbox: nodenet::Deliveries, tx: broadcast::Sender<Arc<str>>) {
    let mut events = node.events();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = node.stats();
    let publish = |v: serde_json::Value| {
        // No subscriber is fine.
        let _ = tx.send(v.to_string().into());
    };
    loop {
        tokio::select! {
            d = inbox.recv() => {
                let Some(d) = d else { break };
                tracing::debug!(event = "delivery", from = %d.originator, bytes = d.payload.len());
                publish(delivery_json(&d));
            }
            e = events.recv() => match e {
                Ok(NodeEvent::EdgeUp { peer, outbound }) => {
                    tracing::info!(event = "edge_up", peer = %peer, outbound, "edge up");
                    publish(json!({ "type": "edge_up", "peer": peer.to_string(), "outbound": outbound }));
                }
                Ok(NodeEvent::EdgeDown { peer }) => {
                    tracing::info!(event = "edge_down", peer = %peer, "edge down");
                    publish(json!({ "type": "edge_down", "peer": peer.to_string() }));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                let now = node.stats();
                if let Some(drops) = new_drops(&last, &now) {
                    tracing::info!(event = "drops", counters = %drops, "frames dropped");
                    publish(json!({ "type": "drops", "counters": drops }));
                }
                last = now;
            }
        }
    }
}

/// A delivery as an `/events` object.
pub(crate) fn delivery_json(d: &Delivery) -> serde_json::Value {
    json!({
        "type": "delivery",
        "from": d.originator.to_string(),
        "via": if d.via == Via::Direct { "direct" } else { "routed" },
        "hops": d.hops,
        "data": BASE64.encode(&d.payload),
    })
}

/// The drop counters that rose between two snapshots, with by how much; `None` if none did.
fn new_drops(before: &Stats, after: &Stats) -> Option<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for ((name, _, a), (_, _, b)) in before.counters().iter().zip(after.counters().iter()) {
        if name.starts_with("dropped_") && b > a {
            out.insert((*name).to_owned(), json!(b - a));
        }
    }
    (!out.is_empty()).then_some(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            parse_listen(":4242").unwrap(),
            "0.0.0.0:4242".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(parse_listen("[::1]:9").is_ok());
        assert!(matches!(parse_listen("nope"), Err(RunError::BadAddr(_))));
        assert_eq!(RunError::BadAddr(String::new()).exit_code(), 2);
    }

    #[test]
    fn only_risen_drop_counters_are_reported() {
        let before = Stats::default();
        assert!(new_drops(&before, &before).is_none());
        let mut after = before;
        after.dropped_stale = 3;
        after.forwarded = 10;
        let v = new_drops(&before, &after).unwrap();
        assert_eq!(v, json!({ "dropped_stale": 3 }));
    }
}
