//! Streams over QUIC: a connection of their own with ALPN `nodenet-stream/1`, dialed from the
//! transport's socket (or a birthday punch's) to the address the overlay edge runs over.
//!
//! - One connection per opened stream: it lives exactly as long as the opener's halves (quinn
//!   closes it when the last handle goes), so nothing is left to reap. The acceptor keeps its
//!   side open until the opener closes it or the idle timeout passes, so an opener's
//!   `finish` never races a close from the acceptor.
//! - The opener keeps the connection alive every [`KEEPALIVE`] and both sides agree on an
//!   idle timeout of [`IDLE_TIMEOUT`], so a dead path fails both ends within seconds.
//! - The acceptor allows at most [`MAX_STREAMS_PER_CONNECTION`] streams at once; each must
//!   deliver its header within [`OPEN_TIMEOUT`] or is reset. The opener allows the acceptor
//!   no streams of its own. A connection on which no stream has lived for [`OPEN_TIMEOUT`]
//!   is closed, so it cannot hold an inbound slot while carrying nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use nodenet_kad::NodeId;

use super::{NET, Shared};
use crate::stream::{
    IDLE_TIMEOUT, KEEPALIVE, MAX_STREAMS_PER_CONNECTION, OPEN_TIMEOUT, RESET_DROPPED, StreamHeader,
    Token, open_quic, read_header,
};
use crate::{Addr, DialError, Event, IncomingStream, RecvStream, SendStream, StreamError};

/// Stream data a stream connection buffers at most, all its streams together.
pub(super) const RECEIVE_WINDOW: u32 = 4 << 20;

/// The quinn transport settings of a stream connection we dial.
pub(super) fn dial_transport_config() -> Result<quinn::TransportConfig, String> {
    let mut tc = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| e.to_string())?;
    tc.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEPALIVE))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .receive_window(RECEIVE_WINDOW.into())
        .initial_mtu(1280);
    Ok(tc)
}

/// Dials a stream connection to `remote` at `addr` and opens one stream on it.
pub(super) async fn open(
    shared: Arc<Shared>,
    remote: NodeId,
    addr: Addr,
    protocol: String,
) -> Result<(SendStream, RecvStream), StreamError> {
    let header = StreamHeader {
        protocol: &protocol,
    }
    .encode()
    .map_err(StreamError::BadProtocol)?;
    let client = shared.stream_client.clone();
    let connection = match super::dial_side(&shared, client, remote, &addr).await {
        Ok((c, _)) => c,
        Err(super::SideDialError::Unsupported) => return Err(StreamError::Unsupported),
        Err(super::SideDialError::Dial(DialError::Closed)) => return Err(StreamError::Closed),
        Err(super::SideDialError::Dial(e)) => return Err(StreamError::Dial(e)),
    };
    // The halves hold the connection; when they are gone, quinn closes it.
    open_quic(&connection, remote, &header).await
}

/// An accepted connection negotiated the stream ALPN: each stream a peer opens on it is read
/// for its header and surfaced as [`Event::Stream`]. Runs until the connection closes
/// (holding the inbound slot).
pub(super) async fn accept(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    remote: NodeId,
    from: SocketAddr,
) {
    connection.set_max_concurrent_bi_streams(MAX_STREAMS_PER_CONNECTION.into());
    let addr = Addr::new(NET, from.to_string());
    // Held by every stream of this connection from its header on (and by its halves once
    // accepted): the connection is closed once none has lived for OPEN_TIMEOUT, so a peer
    // cannot keep an inbound slot with a connection that carries nothing (its keep-alives
    // alone would keep it up).
    let live: Token = Arc::new(());
    loop {
        let next = tokio::time::timeout(OPEN_TIMEOUT, connection.accept_bi()).await;
        let (mut send, mut recv) = match next {
            Ok(Ok(halves)) => halves,
            Ok(Err(_)) => return,
            Err(_) => {
                if Arc::strong_count(&live) == 1 {
                    connection.close(0u32.into(), b"idle");
                    return;
                }
                continue;
            }
        };
        let (shared, addr, live) = (shared.clone(), addr.clone(), live.clone());
        tokio::spawn(async move {
            match read_header(&mut recv).await {
                Ok(protocol) => {
                    let incoming = IncomingStream::quic(remote, addr, protocol, (send, recv), live);
                    // A closed transport drops the event, and with it the stream (refused).
                    shared.events.push(Event::Stream(incoming)).await;
                }
                Err(_) => {
                    let _ = send.reset(RESET_DROPPED.into());
                    let _ = recv.stop(RESET_DROPPED.into());
                }
            }
        });
    }
}
