//! The transport's configuration and its TLS and QUIC settings.

use super::*;

/// Settings of a [`QuicTransport`]. The defaults are the reference's, but for
/// `max_inbound` (288, not 256: see there).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QuicConfig {
    /// Inbound connections at once, across all peers (default 288: the node's 256 inbound
    /// edges, the reference's cap, plus the 32 places past it the node keeps for peers whose
    /// rendezvous or punch request it just answered, `nodenet_proto::INBOUND_HEADROOM`; at
    /// 256 here, a node with 256 inbound edges would refuse those peers before its own
    /// admission could take them).
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
            max_inbound: 288,
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

/// The listener's config, the overlay dial config and the media dial config (if media is on).
pub(super) struct Configs {
    pub(super) server: quinn::ServerConfig,
    pub(super) client: quinn::ClientConfig,
    pub(super) media_client: Option<quinn::ClientConfig>,
    pub(super) stream_client: Option<quinn::ClientConfig>,
}

pub(super) fn crypto_configs(
    identity: &Identity,
    config: &QuicConfig,
) -> Result<Configs, BindError> {
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

pub(super) fn crypto_configs_with(
    cert: &tls::LocalCert,
    config: &QuicConfig,
) -> Result<Configs, BindError> {
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

pub(super) fn transport_config(
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
