//! [`Builder`]: a node's settings, and binding it to a transport.

use super::*;

/// Builds a [`Node`]: [`Builder::bind`] binds QUIC for it and starts it; [`Builder::build`]
/// takes a transport of your own ([`Builder::transport`], e.g. the in-memory hub's).
pub struct Builder {
    pub(super) identity: Identity,
    pub(super) events: broadcast::Sender<NodeEvent>,
    pub(super) transport: Option<Arc<dyn Transport>>,
    pub(super) quic: nodenet_transport::quic::QuicConfig,
    pub(super) config: CoreConfig,
    pub(super) delivery_buffer: usize,
    pub(super) admission: Option<crate::core::AdmissionHook>,
    pub(super) seed: Option<u64>,
    pub(super) advertise_set: bool,
    pub(super) subnets: Option<bool>,
    pub(super) rendezvous_timeout: Duration,
    pub(super) direct_dial_timeout: Duration,
    pub(super) media_consent: Option<crate::media::ConsentHook>,
    pub(super) stream_admission: Option<crate::streams::StreamHook>,
    pub(super) birthday: nodenet_nat::birthday::BirthdayConfig,
    pub(super) attest: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("id", &self.identity.node_id())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Proof-of-work difficulty enforced on every peer and originator (0, the default, is off).
    pub fn min_difficulty(mut self, bits: u32) -> Self {
        self.config.difficulty = bits;
        self
    }

    /// Which peers may call us: an inbound media session from a peer the hook refuses is
    /// closed as refused. Unset (the default), every call is refused. The hook runs on the
    /// node's event path, so keep it quick; it is asked only once the peer's proof of work
    /// passed and the caps have room for the call.
    pub fn media_consent(
        mut self,
        allow: impl Fn(&NodeId) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.media_consent = Some(Box::new(allow));
        self
    }

    /// Which inbound streams may reach their listener, by peer and protocol: a stream the
    /// hook refuses is refused ([`Refusal::Refused`](nodenet_transport::Refusal::Refused))
    /// and counted in [`Stats::dropped_stream_refused`](crate::Stats::dropped_stream_refused).
    /// Unset (the default), every stream of a protocol with a live
    /// [`Node::accept_streams`] listener is let through (within the caps).
    pub fn stream_admission(
        mut self,
        allow: impl Fn(&NodeId, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.stream_admission = Some(Box::new(allow));
        self
    }

    /// How birthday punches (symmetric ↔ cone NATs) are shaped and rate-limited.
    pub fn birthday(mut self, config: nodenet_nat::birthday::BirthdayConfig) -> Self {
        self.birthday = config;
        self
    }

    /// Volunteer as a relay. A transport without [`nodenet_transport::Relay`] turns it off.
    pub fn relay(mut self, on: bool) -> Self {
        self.config.relay = on;
        self
    }

    /// As a relay, tell each side of a pair where we see the other (on by default): the
    /// attestation a birthday punch needs before it probes a host. Off, the relay's frames
    /// are the reference's, byte for byte, and the pairs it carries stay relayed when only a
    /// birthday punch would join them.
    pub fn relay_attestation(mut self, on: bool) -> Self {
        self.attest = on;
        self
    }

    /// A local policy on which peers may hold an edge with us (not a security boundary: anyone
    /// can still route messages to us through others).
    pub fn edge_admission(mut self, allow: impl Fn(&NodeId) -> bool + Send + 'static) -> Self {
        self.admission = Some(Box::new(allow));
        self
    }

    /// Depth of the deliveries queue (default 64); a full queue drops and counts.
    pub fn delivery_buffer(mut self, n: usize) -> Self {
        self.delivery_buffer = n.max(1);
        self
    }

    /// Maintenance timers.
    pub fn maintenance(mut self, m: Maintenance) -> Self {
        self.config.maintenance = m;
        self
    }

    /// Addresses to advertise for ourselves (default: the transport's). Empty for a node that
    /// cannot be dialed (behind NAT): it dials out and still routes over those edges.
    pub fn advertise(mut self, addrs: Vec<Addr>) -> Self {
        self.config.advertise = addrs;
        self.advertise_set = true;
        self
    }

    /// Turns subnet accounting on or off: the caps on knowledge entries and preferred live
    /// edges per /24 (IPv4) or /64 (IPv6) that keep one network from filling our table. On by
    /// default for an IP transport, except one bound to a loopback address: every peer it
    /// can reach shares its one subnet, so the caps would only cripple it.
    pub fn subnet_accounting(mut self, on: bool) -> Self {
        self.subnets = Some(on);
        self
    }

    /// Time hole-punches (default on): our Connect asks the peer to hold its punch until our
    /// Sync, sent when its ack arrives, and we punch half the measured round trip later, so
    /// both first datagrams leave together; a peer's such request is honoured. Off, we
    /// behave as the reference: the target punches as soon as the Connect arrives. A
    /// transport without [`nodenet_transport::Punch`] turns it off, whatever is set here.
    pub fn timed_punch(mut self, on: bool) -> Self {
        self.config.timed_punch = on;
        self
    }

    /// Inbound edges accepted at most (default 256), besides up to
    /// [`crate::INBOUND_HEADROOM`] (32) from peers whose rendezvous or punch request
    /// the node answered within the last minute: a connect to a node at its cap would fail
    /// otherwise, whatever path it takes. A transport's own cap on inbound connections
    /// applies first (the QUIC transport's default, 288, leaves room for both).
    pub fn max_inbound_edges(mut self, n: usize) -> Self {
        self.config.max_inbound_edges = n;
        self
    }

    /// How long `rendezvous` (and so `connect` to a node we hold no edge with) waits for a
    /// verified answer (default 10 s): connecting to an offline NodeId fails after this.
    pub fn rendezvous_timeout(mut self, t: Duration) -> Self {
        self.rendezvous_timeout = t;
        self
    }

    /// How long `connect` gives each direct dial (default [`crate::DIRECT_DIAL_TIMEOUT`]).
    pub fn direct_dial_timeout(mut self, t: Duration) -> Self {
        self.direct_dial_timeout = t;
        self
    }

    /// Makes the node's nonces and random lookups a fixed function of `seed`, for tests that
    /// want repeatable runs. **Never on a real network**: whoever guesses the seed predicts
    /// every nonce, and the answers the node accepts rest on them. By default the node's
    /// generator is keyed from the operating system ([`crate::CoreRng::from_os`]).
    pub fn deterministic_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A watcher of the node's events from its very start, before [`Builder::bind`] starts
    /// it: what [`Node::events`] gives, without the window between start and subscribing.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The transport to run over instead of binding QUIC: an in-memory hub's for tests and
    /// simulations, or one you bound yourself. It must have been made for this builder's
    /// identity ([`Builder::build`] checks).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Settings of the QUIC transport [`Builder::bind`] makes (inbound caps, timers, media).
    pub fn quic_config(mut self, config: nodenet_transport::quic::QuicConfig) -> Self {
        self.quic = config;
        self
    }

    /// Binds a QUIC transport for this identity at `addr` (e.g. `0.0.0.0:4242`, or port 0 for
    /// any), builds the node over it and starts it ([`Node::spawn`]). Must be called within a
    /// tokio runtime. To watch events from the start, take [`Builder::subscribe`] before.
    ///
    /// # Errors
    /// [`BuildError::NoRuntime`] outside a tokio runtime, [`BuildError::Bind`] if the socket
    /// cannot be bound, [`BuildError::OwnDifficulty`] (see [`Builder::build`]), and
    /// [`BuildError::TransportAlreadySet`] if [`Builder::transport`] was called.
    pub async fn bind(mut self, addr: std::net::SocketAddr) -> Result<Node, BuildError> {
        if self.transport.is_some() {
            return Err(BuildError::TransportAlreadySet);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let quic = nodenet_transport::quic::QuicTransport::bind(
            &self.identity,
            addr,
            std::mem::take(&mut self.quic),
        )
        .map_err(BuildError::Bind)?;
        self.transport = Some(Arc::new(quic));
        let node = self.build()?;
        node.spawn();
        Ok(node)
    }

    /// Builds the node over the transport given with [`Builder::transport`]. Nothing runs
    /// until [`Node::spawn`], so [`Node::events`] subscribed before it misses nothing.
    ///
    /// # Errors
    /// [`BuildError::NoTransport`] without one; [`BuildError::IdentityMismatch`] when the
    /// transport authenticates as another NodeId than the identity (peers would see one node,
    /// the overlay another); [`BuildError::OwnDifficulty`] when our own NodeId misses the
    /// difficulty we demand of peers (every peer that enforces it would refuse us).
    pub fn build(self) -> Result<Node, BuildError> {
        let Some(transport) = self.transport else {
            return Err(BuildError::NoTransport);
        };
        let id = self.identity.node_id();
        if transport.local_id() != id {
            return Err(BuildError::IdentityMismatch {
                identity: id,
                transport: transport.local_id(),
            });
        }
        let bits = nodenet_pow::leading_zero_bits(&id);
        if bits < self.config.difficulty {
            return Err(BuildError::OwnDifficulty {
                bits,
                required: self.config.difficulty,
            });
        }
        let mut config = self.config;
        // A transport that cannot open relay sessions does not offer to relay: callers
        // would wait out their grant timeout for nothing.
        config.relay &= transport.as_relay().is_some();
        // One that cannot punch neither asks for nor honours timed punches: timing a peer's
        // volley against ours is pointless when we send none, so the peer volleys at once
        // rather than waiting on a Sync.
        config.timed_punch &= transport.as_punch().is_some();
        if !self.advertise_set {
            // A wildcard bind (0.0.0.0, ::) is no address anyone can dial: advertise nothing,
            // and peers learn ours from the edges they see (and the reflexive address).
            let local = transport.local_addr();
            let wildcard = local
                .endpoint
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified());
            config.advertise = if wildcard { Vec::new() } else { vec![local] };
        }
        let local = transport.local_addr();
        let loopback = local
            .as_ref()
            .endpoint
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        config.ip = transport.is_ip();
        config.subnets = self
            .subnets
            .unwrap_or_else(|| transport.is_ip() && !loopback);
        let rng = self
            .seed
            .map_or_else(CoreRng::from_os, CoreRng::deterministic);
        let mut core = Core::new(self.identity, config, rng);
        core.set_birthday_config(self.birthday);
        if let Some(a) = self.admission {
            core.set_admission(a);
        }
        let (deliveries_tx, deliveries_rx) = mpsc::channel(self.delivery_buffer);
        let (dials_tx, dials_rx) = mpsc::channel(256);
        let (shutdown, _) = watch::channel(false);
        let events = self.events;
        Ok(Node(Arc::new(Shared {
            core: Mutex::new(core),
            transport,
            conns: Mutex::new(HashMap::new()),
            deliveries_tx,
            deliveries_rx: Mutex::new(Some(deliveries_rx)),
            dials_tx,
            dials_rx: Mutex::new(Some(dials_rx)),
            shutdown,
            start: Instant::now(),
            deadline: AtomicU64::new(0),
            wake: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            rendezvous_timeout: self.rendezvous_timeout,
            direct_dial_timeout: self.direct_dial_timeout,
            events,
            punch_waiters: Mutex::new(HashMap::new()),
            relay_waiters: Mutex::new(HashMap::new()),
            media: crate::media::Media::new(self.media_consent),
            streams: crate::streams::Streams::new(self.stream_admission),
            attest: self.attest,
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        })))
    }
}
