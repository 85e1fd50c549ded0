//! Accepting edges: the inbound caps on proven addresses, and the handshake of one incoming
//! connection.

use super::*;

/// Inbound connections held: validated ones per IP and in all, and handshakes in flight from
/// addresses not yet validated (which count against no IP: their IP may be forged).
#[derive(Debug, Default)]
pub(super) struct InboundSlots {
    pub(super) total: usize,
    pub(super) per_ip: HashMap<IpAddr, usize>,
    pub(super) unvalidated: usize,
}

impl InboundSlots {
    /// Takes a global slot, then a per-IP one for a validated address; counts the refusal
    /// when either is full.
    pub(super) fn reserve(&mut self, config: &QuicConfig, counters: &Counters, ip: IpAddr) -> bool {
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
    pub(super) fn has_room(&self, config: &QuicConfig, ip: IpAddr) -> bool {
        self.total < config.max_inbound
            && self.per_ip.get(&ip).copied().unwrap_or(0) < config.max_inbound_per_ip
    }
}

/// Holds one inbound slot, validated or not; releases it on drop.
pub(super) struct InboundSlot {
    pub(super) shared: Arc<Shared>,
    pub(super) ip: IpAddr,
    pub(super) validated: bool,
}

impl InboundSlot {
    /// The handshake proved the source address: trade the unvalidated slot for a validated
    /// one, or refuse if the caps filled meanwhile.
    pub(super) fn promote(self) -> Result<Self, ()> {
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

pub(super) async fn accept_loop(shared: Arc<Shared>) {
    let endpoint = shared.endpoint.clone();
    accept_on(shared, endpoint).await;
}

/// Accepts on `endpoint`: the transport's own, or a birthday punch's (a peer's media dial to
/// the mapping that punch opened comes in there).
pub(super) async fn accept_on(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
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
pub(super) fn cap_key(ip: IpAddr) -> IpAddr {
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
pub(super) enum Admit {
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
pub(super) fn admit(shared: &Arc<Shared>, incoming: &quinn::Incoming) -> Admit {
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

pub(super) async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming, slot: InboundSlot) {
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
