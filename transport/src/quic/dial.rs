//! Dialing: from the main endpoint or a birthday punch's side endpoint, with the NodeId
//! proven by the peer's certificate.

use super::*;

/// Why a connection beside the edge (media, stream) could not be dialed.
pub(super) enum SideDialError {
    /// The peer's listener does not offer the ALPN (TLS alert 120), or we have no client
    /// config for it.
    Unsupported,
    /// The dial failed.
    Dial(DialError),
}

/// TLS alert 120 (no_application_protocol) as a QUIC CRYPTO_ERROR: a peer without the ALPN.
pub(super) const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;

/// Dials a connection beside the edge to `remote` at `addr` with `client` (a media or stream
/// ALPN), from the socket the edge uses: a peer met by a birthday punch is reached only from
/// that punch's socket. Checks that the peer proves `remote`; returns the connection and the
/// peer's key.
pub(super) async fn dial_side(
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

pub(super) async fn dial(
    shared: &Arc<Shared>,
    remote: NodeId,
    addr: &Addr,
) -> Result<Conn, DialError> {
    dial_on(shared, &shared.endpoint, remote, addr).await
}

/// Dials from `endpoint`: the transport's own, or one on a birthday punch's socket.
pub(super) async fn dial_on(
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

pub(super) fn map_connection_error(e: &quinn::ConnectionError, addr: &Addr) -> DialError {
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
pub(super) fn peer_id(connection: &quinn::Connection) -> Result<(NodeId, [u8; 32]), PeerCertError> {
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
