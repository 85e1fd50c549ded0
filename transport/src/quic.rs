//! The QUIC transport: quinn and rustls over one UDP socket, wire-compatible with the
//! reference implementation.
//!
//! - **Identity.** Mutual TLS 1.3 with ALPN `nodenet/1`. Each side presents a throwaway
//!   certificate whose extension proves its NodeId (see [`verify_peer_cert`]); a dial succeeds
//!   only if the peer proves the NodeId dialed ([`DialError::IdentityMismatch`] otherwise).
//! - **Framing.** An edge is one QUIC connection with one long-lived bidirectional stream,
//!   opened by the dialer. Each packet travels as `uvarint(len) | packet`, `len ≤ 65,536`; a
//!   longer prefix closes the connection. So a frame on the stream carries two length
//!   prefixes: the stream's and the frame's own.
//! - **One socket.** Dialing, accepting and (later) hole-punching share one UDP socket, so a
//!   NAT mapping opened by one serves the others. [`QuicTransport::punch_to`] sends the
//!   4-byte punch datagram from it.
//! - **Inbound caps count proven addresses only.** A UDP source address is trivially forged,
//!   so the global and per-IP caps count only connections whose source address is validated:
//!   by a QUIC Retry round trip, or by completing the handshake. A new attempt from an unproven
//!   address may take one of a small budget of unvalidated handshakes; when that budget is
//!   spent, or its IP (or the node) is at a cap, it is first sent a Retry, which costs us no
//!   state. Only a validated attempt over a cap is refused: one with a Retry token before quinn
//!   allocates anything for it, one proven by its handshake right after (closed as "busy"). So spoofed Initials can neither fill the caps nor lock a chosen IP out; at worst they
//!   cost honest dialers one extra round trip.
//! - **Timers.** Handshake 10 s; an inbound edge must deliver its first frame within 30 s; a
//!   frame not written within 5 s tears its edge down; idle connections die after 5 min (the
//!   overlay's own pings keep live edges busy; QUIC keep-alive is off).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::mpsc;

use crate::{
    Addr, BoxFuture, CloseReason, Conn, ConnSet, Counters, DialError, Direction, Event, Events,
    MAX_PACKET_LEN, Packet, PunchError, RecvStream, RelayError, SendStream, SizeClass, StreamError,
    Transport, TransportStats,
};

mod birthday;
mod media;
mod relay;
mod stream;
pub use relay::RelayLimits;

mod tls;

pub use tls::{
    EXTENSION_LEN, EXTENSION_OID, EXTENSION_OID_STR, PeerCertError, extension_value,
    verify_extension, verify_peer_cert,
};

/// The network name of QUIC addresses.
pub const NET: &str = "quic";
/// ALPN of overlay edges.
pub const ALPN: &[u8] = b"nodenet/1";
/// ALPN of media sessions.
pub const ALPN_MEDIA: &[u8] = b"nodenet-media/1";
/// ALPN of stream connections (a Rust-to-Rust extension; see [`crate::stream`]).
pub const ALPN_STREAM: &[u8] = b"nodenet-stream/1";
/// The hole-punch datagram. Its first byte has the top two bits clear, so QUIC stacks treat it
/// as a non-QUIC packet and drop it.
pub const PUNCH_DATAGRAM: [u8; 4] = [0x00, b'n', b'p', 0x01];
/// The server name every dial uses (the verifiers ignore names: identity is the NodeId).
const SERVER_NAME: &str = "nodenet";

/// Settings of a [`QuicTransport`]. The defaults are the reference's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QuicConfig {
    /// Inbound connections at once, across all peers.
    pub max_inbound: usize,
    /// Inbound connections at once from one IP address (for IPv6, one /64).
    pub max_inbound_per_ip: usize,
    /// Inbound handshakes at once from source addresses not yet validated. Past it, a new
    /// attempt is answered with a QUIC Retry, so its source must prove it receives before it
    /// takes any state.
    pub max_unvalidated: usize,
    /// Time for a TLS handshake, either way.
    pub handshake_timeout: Duration,
    /// Time an inbound edge has to deliver its first frame.
    pub first_frame_timeout: Duration,
    /// Time one frame may take to be written before its edge is torn down.
    pub send_deadline: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Depth of the event queue.
    pub event_queue: usize,
    /// Limits of the relay sessions this transport carries for others.
    pub relay: RelayLimits,
    /// Serve and open media sessions (ALPN `nodenet-media/1`). Off, the listener does not
    /// offer the ALPN, so a peer's media dial fails as toward a node that predates media.
    pub media: bool,
    /// The receive budget of each media session.
    pub media_budget: crate::media::MediaBudget,
    /// Serve and open streams (ALPN `nodenet-stream/1`). Off, the listener does not offer
    /// the ALPN, so a peer's stream dial fails with [`crate::StreamError::Unsupported`], as
    /// toward the Go reference.
    pub streams: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            max_inbound: 256,
            max_inbound_per_ip: 32,
            max_unvalidated: 32,
            handshake_timeout: Duration::from_secs(10),
            first_frame_timeout: Duration::from_secs(30),
            send_deadline: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            event_queue: 256,
            relay: RelayLimits::default(),
            media: true,
            media_budget: crate::media::MediaBudget::default(),
            streams: true,
        }
    }
}

impl QuicConfig {
    /// Sets [`QuicConfig::max_inbound`].
    pub fn max_inbound(mut self, n: usize) -> Self {
        self.max_inbound = n;
        self
    }

    /// Sets [`QuicConfig::max_inbound_per_ip`].
    pub fn max_inbound_per_ip(mut self, n: usize) -> Self {
        self.max_inbound_per_ip = n;
        self
    }

    /// Sets [`QuicConfig::max_unvalidated`].
    pub fn max_unvalidated(mut self, n: usize) -> Self {
        self.max_unvalidated = n;
        self
    }

    /// Sets [`QuicConfig::handshake_timeout`].
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Sets [`QuicConfig::first_frame_timeout`].
    pub fn first_frame_timeout(mut self, d: Duration) -> Self {
        self.first_frame_timeout = d;
        self
    }

    /// Sets [`QuicConfig::send_deadline`].
    pub fn send_deadline(mut self, d: Duration) -> Self {
        self.send_deadline = d;
        self
    }

    /// Sets [`QuicConfig::media`].
    pub fn media(mut self, on: bool) -> Self {
        self.media = on;
        self
    }

    /// Sets [`QuicConfig::streams`].
    pub fn streams(mut self, on: bool) -> Self {
        self.streams = on;
        self
    }

    /// Sets [`QuicConfig::media_budget`].
    pub fn media_budget(mut self, budget: crate::media::MediaBudget) -> Self {
        self.media_budget = budget;
        self
    }
}

/// Why [`QuicTransport::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be bound or configured.
    #[error("binding the UDP socket: {0}")]
    Io(#[from] io::Error),
    /// The TLS or QUIC configuration was refused (a bug, not a user error).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Not within a tokio runtime (the transport's tasks need one).
    #[error("QuicTransport::bind must be called within a tokio runtime")]
    NoRuntime,
}

/// A QUIC transport bound to one UDP socket.
#[derive(Clone, Debug)]
pub struct QuicTransport(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    id: NodeId,
    local: SocketAddr,
    endpoint: quinn::Endpoint,
    /// The listener's config (a birthday punch's endpoint serves it too).
    server: quinn::ServerConfig,
    /// Endpoints on birthday-punch sockets, by the peer they reach: a media session to that
    /// peer must leave from the same socket (its NAT mapping is the only way through).
    side_endpoints: Mutex<HashMap<NodeId, quinn::Endpoint>>,
    client: quinn::ClientConfig,
    /// The client config of media dials (`None` with media off).
    media_client: Option<quinn::ClientConfig>,
    /// The client config of stream dials (`None` with streams off).
    stream_client: Option<quinn::ClientConfig>,
    raw: UdpSocket,
    config: QuicConfig,
    events: Events,
    counters: Arc<Counters>,
    conns: ConnSet,
    inbound: Mutex<InboundSlots>,
    relays: Arc<relay::Relays>,
}

/// Inbound connections held: validated ones per IP and in all, and handshakes in flight from
/// addresses not yet validated (which count against no IP: their IP may be forged).
#[derive(Debug, Default)]
struct InboundSlots {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    unvalidated: usize,
}

impl InboundSlots {
    /// Takes a global slot, then a per-IP one for a validated address; counts the refusal
    /// when either is full.
    fn reserve(&mut self, config: &QuicConfig, counters: &Counters, ip: IpAddr) -> bool {
        if self.total >= config.max_inbound {
            Counters::inc(&counters.refused_inbound_cap);
            return false;
        }
        // Look before inserting: a refused IP must leave no entry behind.
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= config.max_inbound_per_ip {
            Counters::inc(&counters.refused_per_ip_cap);
            return false;
        }
        *self.per_ip.entry(ip).or_default() += 1;
        self.total += 1;
        true
    }

    /// Whether a validated connection from `ip` would fit now.
    fn has_room(&self, config: &QuicConfig, ip: IpAddr) -> bool {
        self.total < config.max_inbound
            && self.per_ip.get(&ip).copied().unwrap_or(0) < config.max_inbound_per_ip
    }
}

/// Holds one inbound slot, validated or not; releases it on drop.
struct InboundSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
    validated: bool,
}

impl InboundSlot {
    /// The handshake proved the source address: trade the unvalidated slot for a validated
    /// one, or refuse if the caps filled meanwhile.
    fn promote(self) -> Result<Self, ()> {
        if self.validated {
            return Ok(self);
        }
        let shared = &self.shared;
        if !lock(&shared.inbound).reserve(&shared.config, &shared.counters, self.ip) {
            return Err(());
        }
        let validated = Self {
            shared: shared.clone(),
            ip: self.ip,
            validated: true,
        };
        // Dropping the old slot releases its unvalidated place.
        drop(self);
        Ok(validated)
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut slots = lock(&self.shared.inbound);
        if !self.validated {
            slots.unvalidated = slots.unvalidated.saturating_sub(1);
            return;
        }
        slots.total = slots.total.saturating_sub(1);
        if let Some(n) = slots.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                slots.per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl QuicTransport {
    /// Binds a UDP socket at `addr` and serves edges for `identity` on it. Must be called
    /// within a tokio runtime ([`BindError::NoRuntime`] otherwise).
    pub fn bind(
        identity: &Identity,
        addr: SocketAddr,
        config: QuicConfig,
    ) -> Result<Self, BindError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BindError::NoRuntime);
        }
        let socket = UdpSocket::bind(addr)?;
        let raw = socket.try_clone()?;
        let local = socket.local_addr()?;
        let Configs {
            server,
            client,
            media_client,
            stream_client,
        } = crypto_configs(identity, &config)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let relays = Arc::new(relay::Relays::new(config.relay));
        let shared = Arc::new(Shared {
            id: identity.node_id(),
            local,
            endpoint,
            server,
            side_endpoints: Mutex::new(HashMap::new()),
            client,
            media_client,
            stream_client,
            raw,
            events: Events::new(config.event_queue),
            config,
            counters: Arc::default(),
            conns: ConnSet::default(),
            inbound: Mutex::default(),
            relays,
        });
        tokio::spawn(accept_loop(shared.clone()));
        Ok(Self(shared))
    }

    /// The bound socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.0.local
    }

    /// Sends the 4-byte punch datagram to `target` from the transport's own socket, opening
    /// this side's NAT mapping toward it. Only routable unicast targets are accepted (and
    /// loopback ones by a transport bound to loopback).
    pub fn punch_to(&self, target: SocketAddr) -> Result<(), PunchError> {
        self.punch_policy(target)?;
        self.send_raw(&PUNCH_DATAGRAM, target)
            .map_err(|e| PunchError::Io(e.to_string()))?;
        Ok(())
    }

    /// Whether raw datagrams (punches, probes) may go to `target`.
    fn punch_policy(&self, target: SocketAddr) -> Result<(), PunchError> {
        let ip = target.ip();
        // A transport bound to loopback has only loopback peers: for it, loopback is where
        // peers are (a local cluster, a test, a benchmark).
        let refused = (ip.is_loopback() && !self.0.local.ip().is_loopback())
            || ip.is_multicast()
            || ip.is_unspecified()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
        if refused {
            return Err(PunchError::BadAddr {
                addr: Addr::new(NET, target.to_string()),
                why: "not a routable unicast address",
            });
        }
        Ok(())
    }

    /// Sends raw bytes from the shared socket (no address policy: crate-internal and tests).
    pub(crate) fn send_raw(&self, bytes: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.0.raw.send_to(bytes, target)
    }
}

/// The listener's config, the overlay dial config and the media dial config (if media is on).
struct Configs {
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    media_client: Option<quinn::ClientConfig>,
    stream_client: Option<quinn::ClientConfig>,
}

fn crypto_configs(identity: &Identity, config: &QuicConfig) -> Result<Configs, BindError> {
    let cert = tls::LocalCert::generate(identity).map_err(|e| BindError::Tls(e.to_string()))?;
    crypto_configs_with(&cert, config)
}

/// The exact quinn configurations a transport for `identity` uses, for benchmarks that compare
/// the transport with raw quinn under the same settings. Not for production use: it bypasses
/// the transport's framing, caps and identity checks.
#[doc(hidden)]
pub fn danger_configs(
    identity: &Identity,
    config: &QuicConfig,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), BindError> {
    crypto_configs(identity, config).map(|c| (c.server, c.client))
}

fn crypto_configs_with(cert: &tls::LocalCert, config: &QuicConfig) -> Result<Configs, BindError> {
    let tls_err = |e: &dyn std::fmt::Display| BindError::Tls(e.to_string());
    // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange. ring
    // keeps the build free of a C toolchain; a hybrid key-exchange group is a separate
    // decision (its interop with the reference's TLS stack must be tested first), not
    // something a dependency bump should switch on or warn about in users' builds.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = tls::NodeIdVerifier::new(provider.clone());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.cert.clone()], cert.key_der())
        .map_err(|e| tls_err(&e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    if config.media {
        server.alpn_protocols.push(ALPN_MEDIA.to_vec());
    }
    if config.streams {
        server.alpn_protocols.push(ALPN_STREAM.to_vec());
    }
    let server = QuicServerConfig::try_from(server).map_err(|e| tls_err(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    // The dialer opens the edge's one bidirectional stream. With media on, one listener
    // config serves both ALPNs, so it also takes datagrams and message streams; an overlay
    // edge drains and refuses them.
    let mut tc = transport_config(config, 1)?;
    if config.media {
        // The connection-wide window bounds what a media dialer's message streams can park
        // here; an overlay edge's one stream stays within its own (smaller) stream window.
        tc.max_concurrent_uni_streams(media::MAX_MESSAGE_STREAMS.into())
            .datagram_receive_buffer_size(Some(media::DATAGRAM_BUFFER))
            .receive_window(media::RECEIVE_WINDOW.into());
    }
    if config.streams {
        // A stream connection raises its stream limit after the handshake; the connection
        // window bounds what all of one peer's streams can park here.
        tc.receive_window(stream::RECEIVE_WINDOW.into());
    }
    server.transport_config(Arc::new(tc));

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert.cert.clone()], cert.key_der())
        .map_err(|e| tls_err(&e))?;
    let mut media_tls = client.clone();
    let mut stream_tls = client.clone();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let client = QuicClientConfig::try_from(client).map_err(|e| tls_err(&e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    // The accepting peer may open no streams at all toward the dialer.
    client.transport_config(Arc::new(transport_config(config, 0)?));

    let media_client = if config.media {
        media_tls.alpn_protocols = vec![ALPN_MEDIA.to_vec()];
        let tls = QuicClientConfig::try_from(media_tls).map_err(|e| tls_err(&e))?;
        let mut media_client = quinn::ClientConfig::new(Arc::new(tls));
        let tc = media::dial_transport_config().map_err(|e| tls_err(&e))?;
        media_client.transport_config(Arc::new(tc));
        Some(media_client)
    } else {
        None
    };
    let stream_client = if config.streams {
        stream_tls.alpn_protocols = vec![ALPN_STREAM.to_vec()];
        let tls = QuicClientConfig::try_from(stream_tls).map_err(|e| tls_err(&e))?;
        let mut stream_client = quinn::ClientConfig::new(Arc::new(tls));
        let tc = stream::dial_transport_config().map_err(|e| tls_err(&e))?;
        stream_client.transport_config(Arc::new(tc));
        Some(stream_client)
    } else {
        None
    };
    Ok(Configs {
        server,
        client,
        media_client,
        stream_client,
    })
}

/// Why a connection beside the edge (media, stream) could not be dialed.
enum SideDialError {
    /// The peer's listener does not offer the ALPN (TLS alert 120), or we have no client
    /// config for it.
    Unsupported,
    /// The dial failed.
    Dial(DialError),
}

/// TLS alert 120 (no_application_protocol) as a QUIC CRYPTO_ERROR: a peer without the ALPN.
const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;

/// Dials a connection beside the edge to `remote` at `addr` with `client` (a media or stream
/// ALPN), from the socket the edge uses: a peer met by a birthday punch is reached only from
/// that punch's socket. Checks that the peer proves `remote`; returns the connection and the
/// peer's key.
async fn dial_side(
    shared: &Shared,
    client: Option<quinn::ClientConfig>,
    remote: NodeId,
    addr: &Addr,
) -> Result<(quinn::Connection, [u8; 32]), SideDialError> {
    let dial_err = SideDialError::Dial;
    if shared.events.is_closed() {
        return Err(dial_err(DialError::Closed));
    }
    let client = client.ok_or(SideDialError::Unsupported)?;
    let target: SocketAddr = (addr.net == NET)
        .then(|| addr.endpoint.parse().ok())
        .flatten()
        .ok_or_else(|| {
            dial_err(DialError::BadAddr {
                addr: addr.clone(),
                why: "not a literal quic ip:port",
            })
        })?;
    let side = lock(&shared.side_endpoints).get(&remote).cloned();
    let endpoint = side.as_ref().unwrap_or(&shared.endpoint);
    let connecting = endpoint
        .connect_with(client, target, SERVER_NAME)
        .map_err(|_| {
            dial_err(DialError::BadAddr {
                addr: addr.clone(),
                why: "quinn refused the address",
            })
        })?;
    let connection = match tokio::time::timeout(shared.config.handshake_timeout, connecting).await {
        Err(_) => return Err(dial_err(DialError::Timeout)),
        Ok(Err(quinn::ConnectionError::ConnectionClosed(c)))
            if u64::from(c.error_code) == NO_APPLICATION_PROTOCOL =>
        {
            return Err(SideDialError::Unsupported);
        }
        Ok(Err(e)) => return Err(dial_err(map_connection_error(&e, addr))),
        Ok(Ok(c)) => c,
    };
    let (actual, key) =
        peer_id(&connection).map_err(|e| dial_err(DialError::Handshake(e.to_string())))?;
    if actual != remote {
        connection.close(0u32.into(), b"identity mismatch");
        return Err(dial_err(DialError::IdentityMismatch {
            expected: remote,
            actual,
        }));
    }
    Ok((connection, key))
}

fn transport_config(
    config: &QuicConfig,
    peer_bidi: u32,
) -> Result<quinn::TransportConfig, BindError> {
    let mut tc = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|e| BindError::Tls(format!("idle timeout: {e}")))?;
    tc.max_idle_timeout(Some(idle))
        .keep_alive_interval(None)
        .max_concurrent_bidi_streams(peer_bidi.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        // The reference starts at 1280 bytes; quinn's 1200 would be too small for media later.
        .initial_mtu(1280);
    Ok(tc)
}

impl Transport for QuicTransport {
    fn local_id(&self) -> NodeId {
        self.0.id
    }

    fn local_addr(&self) -> Addr {
        Addr::new(NET, self.0.local.to_string())
    }

    fn dial(&self, remote: NodeId, addr: &Addr) -> BoxFuture<'static, Result<Conn, DialError>> {
        let shared = self.0.clone();
        let addr = addr.clone();
        Box::pin(async move {
            let result = dial(&shared, remote, &addr).await;
            let c = &shared.counters;
            match &result {
                Ok(_) => Counters::inc(&c.dials_ok),
                Err(e) => {
                    Counters::inc(&c.dials_failed);
                    match e {
                        DialError::IdentityMismatch { .. } => {
                            Counters::inc(&c.dials_identity_mismatch);
                        }
                        DialError::Handshake(_) => Counters::inc(&c.handshake_failed),
                        _ => {}
                    }
                }
            }
            result
        })
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.events.poll(cx)
    }

    fn close(&self) {
        self.0.events.close();
        self.0.conns.close_all();
        self.0.endpoint.close(0u32.into(), b"");
    }

    fn stats(&self) -> TransportStats {
        self.0.counters.snapshot()
    }

    fn is_ip(&self) -> bool {
        true
    }

    fn relay(&self) -> Result<(Addr, Addr), RelayError> {
        let (caller, callee) = relay::open(self.0.local.ip(), &self.0.relays, &self.0.counters)?;
        Ok((
            Addr::new(NET, caller.to_string()),
            Addr::new(NET, callee.to_string()),
        ))
    }

    fn open_media(
        &self,
        remote: NodeId,
        addr: &Addr,
    ) -> BoxFuture<'static, Result<crate::MediaSession, crate::MediaError>> {
        Box::pin(media::open(self.0.clone(), remote, addr.clone()))
    }

    fn open_stream(
        &self,
        remote: NodeId,
        addr: &Addr,
        protocol: &str,
    ) -> BoxFuture<'static, Result<(SendStream, RecvStream), StreamError>> {
        Box::pin(stream::open(
            self.0.clone(),
            remote,
            addr.clone(),
            protocol.to_owned(),
        ))
    }

    fn birthday_hard(
        &self,
        remote: NodeId,
        easy: &Addr,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<Conn, crate::BirthdayError>> {
        Box::pin(birthday::hard(
            self.0.clone(),
            remote,
            easy.clone(),
            probe.to_vec(),
            params,
        ))
    }

    fn birthday_easy(
        &self,
        host: &str,
        probe: &[u8],
        params: crate::BirthdayParams,
    ) -> BoxFuture<'static, Result<u32, crate::BirthdayError>> {
        Box::pin(birthday::easy(
            self.clone(),
            host.to_owned(),
            probe.to_vec(),
            params,
        ))
    }

    fn punch(&self, addr: &Addr) -> Result<(), PunchError> {
        // A literal ip:port only: resolving a name a peer handed us would let it aim us.
        let target = (addr.net == NET)
            .then(|| addr.endpoint.parse::<SocketAddr>().ok())
            .flatten()
            .ok_or_else(|| PunchError::BadAddr {
                addr: addr.clone(),
                why: "not a literal quic ip:port",
            })?;
        self.punch_to(target)
    }
}

async fn dial(shared: &Arc<Shared>, remote: NodeId, addr: &Addr) -> Result<Conn, DialError> {
    dial_on(shared, &shared.endpoint, remote, addr).await
}

/// Dials from `endpoint`: the transport's own, or one on a birthday punch's socket.
async fn dial_on(
    shared: &Arc<Shared>,
    endpoint: &quinn::Endpoint,
    remote: NodeId,
    addr: &Addr,
) -> Result<Conn, DialError> {
    if shared.events.is_closed() {
        return Err(DialError::Closed);
    }
    if addr.net != NET {
        return Err(DialError::BadAddr {
            addr: addr.clone(),
            why: "not a quic address",
        });
    }
    let target: SocketAddr = addr.endpoint.parse().map_err(|_| DialError::BadAddr {
        addr: addr.clone(),
        why: "not a literal ip:port",
    })?;
    let connecting = endpoint
        .connect_with(shared.client.clone(), target, SERVER_NAME)
        .map_err(|e| match e {
            quinn::ConnectError::EndpointStopping => DialError::Closed,
            _ => DialError::BadAddr {
                addr: addr.clone(),
                why: "quinn refused the address",
            },
        })?;
    let connection = match tokio::time::timeout(shared.config.handshake_timeout, connecting).await {
        Err(_) => return Err(DialError::Timeout),
        Ok(Err(e)) => return Err(map_connection_error(&e, addr)),
        Ok(Ok(c)) => c,
    };
    let (actual, key) = peer_id(&connection).map_err(|e| DialError::Handshake(e.to_string()))?;
    if actual != remote {
        tracing::warn!(expected = %remote.short(), %actual, %addr, "dialed peer proved another NodeId");
        connection.close(0u32.into(), b"identity mismatch");
        return Err(DialError::IdentityMismatch {
            expected: remote,
            actual,
        });
    }
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| map_connection_error(&e, addr))?;
    let (conn, rx) = Conn::new(
        remote,
        addr.clone(),
        Some(key),
        Direction::Outbound,
        shared.counters.clone(),
    );
    shared.conns.insert(&conn);
    let reader = FrameReader::new(recv);
    tokio::spawn(run_edge(
        shared.clone(),
        conn.clone(),
        rx,
        connection,
        send,
        reader,
        None,
    ));
    Ok(conn)
}

fn map_connection_error(e: &quinn::ConnectionError, addr: &Addr) -> DialError {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => DialError::NoRoute(addr.clone()),
        E::LocallyClosed => DialError::Closed,
        E::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
            DialError::Refused
        }
        E::ApplicationClosed(_) | E::Reset => DialError::Refused,
        other => DialError::Handshake(other.to_string()),
    }
}

/// The NodeId the peer's certificate proves (the verifier already checked it).
fn peer_id(connection: &quinn::Connection) -> Result<(NodeId, [u8; 32]), PeerCertError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(PeerCertError::NoCertificate)?;
    let leaf = certs.first().ok_or(PeerCertError::NoCertificate)?;
    tls::verify_peer_cert_key(leaf)
}

async fn accept_loop(shared: Arc<Shared>) {
    let endpoint = shared.endpoint.clone();
    accept_on(shared, endpoint).await;
}

/// Accepts on `endpoint`: the transport's own, or a birthday punch's (a peer's media dial to
/// the mapping that punch opened comes in there).
async fn accept_on(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        match admit(&shared, &incoming) {
            Admit::Slot(slot) => {
                tokio::spawn(accept_one(shared.clone(), incoming, slot));
            }
            Admit::Refuse => incoming.refuse(),
            Admit::Retry => {
                Counters::inc(&shared.counters.inbound_retried);
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
            }
        }
    }
}

/// The key the per-IP cap counts under: an IPv4 address (an IPv4-mapped IPv6 one is its
/// IPv4 address), or an IPv6 address's /64, since one host is routinely given a whole /64
/// and could otherwise take a slot per address.
fn cap_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

/// What becomes of a connection attempt.
enum Admit {
    /// It holds a slot (validated, or one of the unvalidated budget).
    Slot(InboundSlot),
    /// Its address is validated and a cap is full.
    Refuse,
    /// Its address is unproven and it cannot have a slot now: make it prove it first.
    Retry,
}

/// Decides an attempt before quinn allocates anything for it. Caps count validated addresses
/// only; an unproven one over a cap (or past the unvalidated budget) is sent a Retry instead,
/// since refusing it would let a forged source lock the real one out.
fn admit(shared: &Arc<Shared>, incoming: &quinn::Incoming) -> Admit {
    let ip = cap_key(incoming.remote_address().ip());
    let config = &shared.config;
    let mut slots = lock(&shared.inbound);
    let validated = incoming.remote_address_validated();
    if validated {
        if !slots.reserve(config, &shared.counters, ip) {
            return Admit::Refuse;
        }
    } else if !incoming.may_retry() {
        // Unproven yet already retried: cannot happen with quinn (a Retry token validates);
        // refuse rather than hold state for it.
        return Admit::Refuse;
    } else if slots.unvalidated >= config.max_unvalidated || !slots.has_room(config, ip) {
        return Admit::Retry;
    } else {
        slots.unvalidated += 1;
    }
    Admit::Slot(InboundSlot {
        shared: shared.clone(),
        ip,
        validated,
    })
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming, slot: InboundSlot) {
    let remote_addr = incoming.remote_address();
    let Ok(connecting) = incoming.accept() else {
        return;
    };
    let connection = match tokio::time::timeout(shared.config.handshake_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote_addr, error = %e, "inbound handshake failed");
            Counters::inc(&shared.counters.handshake_failed);
            return;
        }
        Err(_) => {
            Counters::inc(&shared.counters.handshake_failed);
            return;
        }
    };
    let Ok((remote_id, remote_key)) = peer_id(&connection) else {
        Counters::inc(&shared.counters.handshake_failed);
        connection.close(0u32.into(), b"");
        return;
    };
    // The handshake proved the source address: only now does it count against the caps.
    let Ok(slot) = slot.promote() else {
        connection.close(0u32.into(), b"busy");
        return;
    };
    let alpn = connection
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    if alpn.as_deref() == Some(ALPN_MEDIA) {
        media::accept(shared, connection, remote_id, remote_key, remote_addr).await;
        drop(slot);
        return;
    }
    if alpn.as_deref() == Some(ALPN_STREAM) {
        stream::accept(shared, connection, remote_id, remote_addr).await;
        drop(slot);
        return;
    }
    if shared.config.media {
        // The listener config allows media's streams and datagrams on every connection: an
        // overlay edge refuses the streams and discards the datagrams.
        let c = connection.clone();
        tokio::spawn(async move {
            while let Ok(mut s) = c.accept_uni().await {
                let _ = s.stop(0u32.into());
            }
        });
        let c = connection.clone();
        tokio::spawn(async move { while c.read_datagram().await.is_ok() {} });
    }
    // Anti-slowloris: the dialer must open its stream and deliver a whole first frame in time.
    let first = tokio::time::timeout(shared.config.first_frame_timeout, async {
        let (send, recv) = connection
            .accept_bi()
            .await
            .map_err(|_| CloseReason::Lost)?;
        let mut reader = FrameReader::new(recv);
        match reader.read_frame().await {
            Ok(Some(p)) => Ok((send, reader, p)),
            Ok(None) => Err(CloseReason::Remote),
            Err(r) => Err(r),
        }
    })
    .await;
    let (send, reader, first) = match first {
        Ok(Ok(x)) => x,
        Ok(Err(reason)) => {
            if reason == CloseReason::ProtocolViolation {
                Counters::inc(&shared.counters.protocol_violations);
            }
            connection.close(0u32.into(), b"");
            return;
        }
        Err(_) => {
            Counters::inc(&shared.counters.first_frame_timeouts);
            connection.close(0u32.into(), b"first frame timeout");
            return;
        }
    };
    Counters::inc(&shared.counters.inbound_accepted);
    let addr = Addr::new(NET, remote_addr.to_string());
    let (conn, rx) = Conn::new(
        remote_id,
        addr,
        Some(remote_key),
        Direction::Inbound,
        shared.counters.clone(),
    );
    shared.conns.insert(&conn);
    run_edge(shared, conn, rx, connection, send, reader, Some(first)).await;
    drop(slot);
}

/// Decodes the stream's `uvarint(len)` packet prefix one byte at a time, refusing a length
/// over [`MAX_PACKET_LEN`] as soon as it is certain, so a hostile prefix costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrefixDecoder {
    value: u64,
    bytes: u32,
}

/// A stream prefix announced more than one packet, or did not end within ten bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream frame prefix exceeds the {MAX_PACKET_LEN}-byte packet")]
pub struct PrefixTooLarge;

impl PrefixDecoder {
    /// Feeds one byte: `Ok(Some(len))` when the prefix is complete, `Ok(None)` for more.
    pub fn push(&mut self, byte: u8) -> Result<Option<usize>, PrefixTooLarge> {
        // A tenth byte above 1 would shift bits out of the u64 (and the value past any packet).
        if self.bytes >= 10 || (self.bytes == 9 && byte > 1) {
            return Err(PrefixTooLarge);
        }
        self.value |= u64::from(byte & 0x7f) << (7 * self.bytes);
        self.bytes += 1;
        if self.value > MAX_PACKET_LEN as u64 {
            return Err(PrefixTooLarge);
        }
        if byte < 0x80 {
            // value <= MAX_PACKET_LEN, which fits any usize.
            return usize::try_from(self.value)
                .map(Some)
                .map_err(|_| PrefixTooLarge);
        }
        Ok(None)
    }
}

/// Reads `uvarint(len) | packet` frames from an edge's stream. Takes quinn's received chunks
/// as they are (no copy) and copies each payload byte exactly once, into its pooled packet.
struct FrameReader {
    recv: quinn::RecvStream,
    pending: bytes::Bytes,
}

impl FrameReader {
    fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            pending: bytes::Bytes::new(),
        }
    }

    /// Refills `pending`; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, CloseReason> {
        match self.recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                self.pending = chunk.bytes;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(CloseReason::Lost),
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    async fn read_frame(&mut self) -> Result<Option<Packet>, CloseReason> {
        let mut prefix = PrefixDecoder::default();
        let mut started = false;
        let len = loop {
            let Some(&byte) = self.pending.first() else {
                if !self.fill().await? {
                    return if started {
                        Err(CloseReason::Lost)
                    } else {
                        Ok(None)
                    };
                }
                continue;
            };
            bytes::Buf::advance(&mut self.pending, 1);
            started = true;
            match prefix.push(byte) {
                Ok(Some(len)) => break len,
                Ok(None) => {}
                Err(PrefixTooLarge) => return Err(CloseReason::ProtocolViolation),
            }
        };
        let class = SizeClass::for_len(len).ok_or(CloseReason::ProtocolViolation)?;
        let mut p = Packet::of_class(class);
        let mut filled = 0;
        while filled < len {
            if self.pending.is_empty() && !self.fill().await? {
                return Err(CloseReason::Lost);
            }
            let n = (len - filled).min(self.pending.len());
            p.buf_mut()[filled..filled + n].copy_from_slice(&self.pending[..n]);
            bytes::Buf::advance(&mut self.pending, n);
            filled += n;
        }
        p.set_len(len).map_err(|_| CloseReason::ProtocolViolation)?;
        Ok(Some(p))
    }
}

/// Most frames one write hands to quinn: a busy edge's queue is written in batches, one await
/// per batch instead of one per frame.
const WRITE_BATCH: usize = 16;

/// Writes each packet as `uvarint(len) | packet`, handing the pooled buffers themselves to
/// quinn (no copy): each returns to the pool once quinn has sent it.
async fn write_frames(
    send: &mut quinn::SendStream,
    chunks: &mut Vec<bytes::Bytes>,
    packets: impl IntoIterator<Item = Packet>,
) -> Result<(), quinn::WriteError> {
    chunks.clear();
    for packet in packets {
        let mut prefix = [0u8; 10];
        let mut w = nodenet_wire::Writer::new(&mut prefix);
        // Ten bytes always hold a uvarint.
        let _ = w.put_uvarint(packet.len() as u64);
        let n = w.finish();
        chunks.push(bytes::Bytes::copy_from_slice(&prefix[..n]));
        chunks.push(bytes::Bytes::from_owner(packet));
    }
    let result = send.write_all_chunks(chunks).await;
    chunks.clear();
    result
}

/// Runs one edge until it closes: a reader task surfaces frames, this task drains the send
/// queue under the send deadline. Reports the close once, after the last frame.
async fn run_edge(
    shared: Arc<Shared>,
    conn: Conn,
    mut rx: mpsc::Receiver<Packet>,
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    first: Option<Packet>,
) {
    let reader_task = {
        let shared = shared.clone();
        let conn = conn.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            if let Some(p) = first {
                if !shared
                    .events
                    .push(Event::Frame {
                        conn: conn.clone(),
                        packet: p,
                    })
                    .await
                {
                    return;
                }
            }
            let mut seen_at = connection.remote_address();
            let reason = loop {
                match reader.read_frame().await {
                    Ok(Some(packet)) => {
                        // QUIC follows a peer whose NAT rebinds it to another port; so do we.
                        let now_at = connection.remote_address();
                        if now_at != seen_at {
                            seen_at = now_at;
                            conn.set_remote_addr(Addr::new(NET, now_at.to_string()));
                        }
                        let ev = Event::Frame {
                            conn: conn.clone(),
                            packet,
                        };
                        if !shared.events.push(ev).await {
                            break CloseReason::TransportClosed;
                        }
                    }
                    Ok(None) => break CloseReason::Remote,
                    Err(CloseReason::ProtocolViolation) => {
                        Counters::inc(&shared.counters.protocol_violations);
                        break CloseReason::ProtocolViolation;
                    }
                    Err(_) => break remote_reason(&connection),
                }
            };
            conn.mark_closed(reason);
        })
    };

    let deadline = shared.config.send_deadline;
    let mut batch: Vec<Packet> = Vec::with_capacity(WRITE_BATCH);
    let mut chunks: Vec<bytes::Bytes> = Vec::with_capacity(2 * WRITE_BATCH);
    let reason = {
        let mut closed = std::pin::pin!(conn.closed());
        loop {
            tokio::select! {
                biased;
                reason = &mut closed => break reason,
                packet = rx.recv() => {
                    let Some(packet) = packet else { break CloseReason::Lost };
                    batch.push(packet);
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let write = write_frames(&mut send, &mut chunks, batch.drain(..));
                    match tokio::time::timeout(deadline, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            conn.mark_closed(remote_reason(&connection));
                        }
                        Err(_) => {
                            Counters::inc(&shared.counters.send_timeouts);
                            conn.mark_closed(CloseReason::SendTimeout);
                        }
                    }
                }
            }
        }
    };

    if reason == CloseReason::Local {
        // Frames accepted before the close still go out (a Leave sent just before closing
        // must arrive), each under the send deadline, then the stream ends cleanly.
        let flushed = tokio::time::timeout(deadline, async {
            while let Ok(packet) = rx.try_recv() {
                write_frames(&mut send, &mut chunks, [packet]).await?;
            }
            let _ = send.finish();
            let _ = send.stopped().await;
            Ok::<(), quinn::WriteError>(())
        })
        .await;
        if flushed.is_err() {
            Counters::inc(&shared.counters.send_timeouts);
        }
    }
    rx.close();
    connection.close(0u32.into(), b"");
    let _ = reader_task.await;
    shared.conns.remove(&conn);
    shared.events.push(Event::Closed { conn, reason }).await;
}

fn remote_reason(connection: &quinn::Connection) -> CloseReason {
    match connection.close_reason() {
        Some(
            quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_),
        ) => CloseReason::Remote,
        Some(quinn::ConnectionError::LocallyClosed) => CloseReason::Local,
        _ => CloseReason::Lost,
    }
}

#[doc(hidden)]
/// Fuzz-target logic, shared by `fuzz/` and the corpus-replay test. Not a stable API.
pub mod fuzzing {
    #![allow(
        clippy::panic,
        clippy::expect_used,
        reason = "fuzz targets report by panicking"
    )]
    use std::sync::OnceLock;

    use nodenet_identity::{Identity, derive_id, verify};
    use nodenet_kad::NodeId;
    pub use nodenet_wire::fuzzing::Reached;
    use nodenet_wire::{Reader, WireError};

    use super::tls::verify_peer_cert_key;
    use super::{
        EXTENSION_LEN, EXTENSION_OID_STR, MAX_PACKET_LEN, PeerCertError, PrefixDecoder,
        extension_value, verify_extension, verify_peer_cert,
    };

    /// The checks of [`peer_cert`], in [`Reached`] bit order.
    pub const PEER_CERT_CHECKS: &[&str] = &[
        "accepted certificate: its key hashes to the NodeId and signs its SPKI",
        "genuine binding spliced in: accepted as the signer's NodeId",
        "genuine binding, SPKI bit flipped: refused",
        "genuine binding, extension key bit flipped: refused",
        "extension | SPKI pair: a genuine one verifies as its signer, flipped ones do not",
        "as received (nothing spliced): an accepted certificate or pair proves its key's NodeId",
    ];

    /// Where, in a DER certificate, the first nodenet identity extension's value and the
    /// SubjectPublicKeyInfo are: `(value offset, value length, SPKI offset, SPKI length)`.
    /// The parser borrows both from the input, so they are found by address.
    fn binding_offsets(der: &[u8]) -> Option<(usize, usize, usize, usize)> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == EXTENSION_OID_STR)?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let at = |s: &[u8]| {
            let off = (s.as_ptr() as usize).wrapping_sub(der.as_ptr() as usize);
            assert!(
                der.get(off..off + s.len()) == Some(s),
                "not borrowed from the input"
            );
            off
        };
        Some((at(ext.value), ext.value.len(), at(spki), spki.len()))
    }

    /// The NodeId `der` proves, if the verifier accepts it, after checking the binding: the
    /// NodeId is the hash of the extension's key, and that key signs the certificate's SPKI.
    fn accepted(der: &[u8]) -> Option<NodeId> {
        let (id, key) = verify_peer_cert_key(der).ok()?;
        assert_eq!(derive_id(&key), id, "the NodeId is the hash of the key");
        let (ext_at, ext_len, spki_at, spki_len) =
            binding_offsets(der).expect("an accepted certificate parses and has the extension");
        assert_eq!(ext_len, EXTENSION_LEN);
        let ext = &der[ext_at..ext_at + EXTENSION_LEN];
        assert_eq!(ext[..32], key, "the key is the extension's");
        let sig = ext[32..].try_into().expect("64 bytes");
        assert_eq!(verify(&key, &der[spki_at..spki_at + spki_len], sig), Ok(()));
        assert_eq!(verify_peer_cert(der), Ok(id));
        Some(id)
    }

    /// `b` with bit `bit` (wrapping over the whole buffer) flipped.
    fn flipped(b: &[u8], bit: usize) -> Vec<u8> {
        let bit = bit % (8 * b.len());
        let mut out = b.to_vec();
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    /// The identity-certificate verifier, which decides which NodeId a TLS peer is.
    ///
    /// An accepted certificate's NodeId is the hash of the Ed25519 key in its extension, and
    /// that key signs the certificate's SPKI. Structure-aware: whatever certificate parses and
    /// carries the extension gets a genuine binding by a fixed identity spliced into it (the
    /// rest of the certificate as fuzzed), and must be accepted as exactly that identity; one
    /// bit flipped in its SPKI or in the extension's key (positions taken from the replaced
    /// extension bytes) must be refused. Likewise the input split as an `extension | SPKI`
    /// pair: the fixed identity's extension over those SPKI bytes verifies as it, and with a
    /// bit of the SPKI or of the key flipped it does not.
    pub fn peer_cert(data: &[u8]) -> Reached {
        const ACCEPTED: usize = 0;
        const SPLICED: usize = 1;
        const SPKI_FLIP: usize = 2;
        const KEY_FLIP: usize = 3;
        const PAIR: usize = 4;
        const AS_RECEIVED: usize = 5;
        static SIGNER: OnceLock<Identity> = OnceLock::new();
        let me = SIGNER.get_or_init(|| Identity::from_seed(&[5; 32]));
        let mut reached = Reached::default();
        if accepted(data).is_some() {
            reached.hit(ACCEPTED);
            reached.hit(AS_RECEIVED);
        }
        if let Some((ext_at, EXTENSION_LEN, spki_at, spki_len)) = binding_offsets(data) {
            let entropy = [data[ext_at], data[ext_at + 1], data[ext_at + 2]];
            let mut cert = data.to_vec();
            let value = extension_value(me, &data[spki_at..spki_at + spki_len]);
            cert[ext_at..ext_at + EXTENSION_LEN].copy_from_slice(&value);
            assert_eq!(
                accepted(&cert),
                Some(me.node_id()),
                "a genuine binding is accepted, whatever else the certificate holds"
            );
            reached.hit(ACCEPTED);
            reached.hit(SPLICED);

            let bit = usize::from(u16::from_be_bytes([entropy[0], entropy[1]])) % (8 * spki_len);
            let mut changed = cert.clone();
            changed[spki_at + bit / 8] ^= 1 << (bit % 8);
            let got = verify_peer_cert(&changed);
            assert!(
                got.is_err(),
                "a changed certificate key kept its binding: {got:?}"
            );
            reached.hit(SPKI_FLIP);

            let bit = usize::from(entropy[2]);
            cert[ext_at + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(verify_peer_cert(&cert), Err(PeerCertError::BadSignature));
            reached.hit(KEY_FLIP);
        }
        if data.len() >= EXTENSION_LEN {
            let (ext, spki) = data.split_at(EXTENSION_LEN);
            if let Ok(id) = verify_extension(ext, spki) {
                assert_eq!(derive_id(ext[..32].try_into().expect("32 bytes")), id);
                reached.hit(AS_RECEIVED);
            }
            let value = extension_value(me, spki);
            assert_eq!(verify_extension(&value, spki), Ok(me.node_id()));
            let bad = Err(PeerCertError::BadSignature);
            if !spki.is_empty() {
                let bit = usize::from(u16::from_be_bytes([ext[0], ext[1]]));
                assert_eq!(verify_extension(&value, &flipped(spki, bit)), bad);
            }
            let key_bit = usize::from(ext[2]);
            assert_eq!(verify_extension(&flipped(&value, key_bit), spki), bad);
            reached.hit(PAIR);
        }
        reached
    }

    /// The checks of [`stream_prefix`], in [`Reached`] bit order.
    pub const STREAM_PREFIX_CHECKS: &[&str] = &[
        "complete: the length the wire reader reads, within a packet",
        "refused: exactly when the prefix can no longer fit a packet",
        "refused mid-prefix (at a continuation byte)",
        "input ends mid-prefix: incomplete, and the wire reader says truncated",
        "incomplete byte: a continuation, and the prefix could still fit",
    ];

    /// The stream prefix decoder, byte by byte, against a model of the prefix so far: after
    /// each byte it must say "complete" exactly when the byte ends the uvarint (with the value
    /// the wire reader reads from the whole input), "refused" exactly when no continuation
    /// could bring the value back within a packet (it only grows; a tenth byte may not
    /// continue), and "more" otherwise. An input that ends mid-prefix leaves it incomplete.
    pub fn stream_prefix(data: &[u8]) -> Reached {
        const COMPLETE: usize = 0;
        const REFUSED: usize = 1;
        const MID_PREFIX: usize = 2;
        const TRUNCATED: usize = 3;
        const MORE: usize = 4;
        let mut reached = Reached::default();
        let max = MAX_PACKET_LEN as u128;
        let mut d = PrefixDecoder::default();
        let mut value: u128 = 0;
        for (i, &b) in data.iter().enumerate() {
            // A correct decoder has answered by the tenth byte; past it, anything is hopeless.
            if i < 10 {
                value |= u128::from(b & 0x7f) << (7 * i);
            }
            let continues = b & 0x80 != 0;
            let hopeless = i >= 10 || value > max || (i == 9 && continues);
            match d.push(b) {
                Ok(None) => {
                    assert!(continues, "byte {i} ({b:#04x}) ends the prefix");
                    assert!(!hopeless, "{:02x?} can no longer fit", &data[..=i]);
                    reached.hit(MORE);
                }
                Ok(Some(len)) => {
                    assert!(!continues && !hopeless, "{:02x?} accepted", &data[..=i]);
                    assert_eq!(len as u128, value);
                    let mut r = Reader::new(data);
                    assert_eq!(r.uvarint(), Ok(len as u64));
                    assert_eq!(r.position(), i + 1);
                    reached.hit(COMPLETE);
                    return reached;
                }
                Err(_) => {
                    assert!(hopeless, "{:02x?} refused, yet could fit", &data[..=i]);
                    // Read over the whole input, the prefix is over a packet, or no uvarint.
                    let v = Reader::new(data).uvarint();
                    assert!(!matches!(v, Ok(n) if n <= MAX_PACKET_LEN as u64), "{v:?}");
                    reached.hit(REFUSED);
                    if continues {
                        reached.hit(MID_PREFIX);
                    }
                    return reached;
                }
            }
        }
        if !data.is_empty() {
            assert_eq!(Reader::new(data).uvarint(), Err(WireError::Truncated));
            reached.hit(TRUNCATED);
        }
        reached
    }
}

#[cfg(test)]
mod tests;
