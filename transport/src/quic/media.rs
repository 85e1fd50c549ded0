//! Media sessions over QUIC: a second connection with ALPN `nodenet-media/1` from the
//! transport's one socket, with datagrams on.
//!
//! - Datagrams are QUIC DATAGRAM frames, written by the session's pump with
//!   `send_datagram_wait` (so the ring, not quinn's buffer, decides what is dropped).
//! - A message is one unidirectional stream: the frame's bytes, then FIN. The receiver
//!   reads it whole (at most 1 + [`MAX_MESSAGE`] bytes, within [`MESSAGE_READ_BOUND`]) or
//!   drops it; a write stalled past [`MESSAGE_STALL`] resets that stream with code 1.
//! - The dialer keeps the session alive every [`KEEPALIVE`] and both sides agree on an idle
//!   timeout of [`IDLE_TIMEOUT`], so a dead path ends the session within seconds.
//! - Bidirectional streams are never used: the dialer allows the peer none, and the
//!   listener resets any a peer opens.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use nodenet_kad::NodeId;

use super::{NET, Shared};
use crate::media::{
    IDLE_TIMEOUT, KEEPALIVE, MAX_MESSAGE, MESSAGE_READ_BOUND, MESSAGE_STALL, MediaError, MediaLink,
    Peer, STREAM_STALLED, Session,
};
use crate::{Addr, BoxFuture, CloseReason, Direction, Event, MediaSession};

/// Uni streams (messages in flight) a peer may open at once.
pub(super) const MAX_MESSAGE_STREAMS: u32 = 256;
/// Received datagram bytes quinn buffers before the session's task takes them.
pub(super) const DATAGRAM_BUFFER: usize = 256 * 1280;
/// Stream data a media connection buffers at most, all streams together: with 256 message
/// streams a peer could otherwise park 256 stream windows of data here.
pub(super) const RECEIVE_WINDOW: u32 = 4 << 20;
/// Stream data one message stream may have in flight: a whole message and a little more.
const STREAM_WINDOW: u32 = 128 << 10;

/// The quinn transport settings of a media connection we dial.
pub(super) fn dial_transport_config() -> Result<quinn::TransportConfig, String> {
    let mut tc = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| e.to_string())?;
    tc.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEPALIVE))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(MAX_MESSAGE_STREAMS.into())
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .receive_window(RECEIVE_WINDOW.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .initial_mtu(1280);
    Ok(tc)
}

#[derive(Debug)]
struct QuicLink(quinn::Connection);

impl MediaLink for QuicLink {
    fn send_datagram(&self, frame: Bytes) -> BoxFuture<'static, Result<(), ()>> {
        let c = self.0.clone();
        Box::pin(async move { c.send_datagram_wait(frame).await.map_err(|_| ()) })
    }

    fn send_message(&self, frame: Bytes) -> BoxFuture<'static, Result<(), MediaError>> {
        let c = self.0.clone();
        Box::pin(async move {
            let mut stream = c.open_uni().await.map_err(|_| MediaError::Closed)?;
            let write = async {
                stream.write_chunk(frame).await?;
                stream
                    .finish()
                    .map_err(|_| quinn::WriteError::ClosedStream)?;
                Ok::<(), quinn::WriteError>(())
            };
            match tokio::time::timeout(MESSAGE_STALL, write).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(MediaError::Closed),
                Err(_) => {
                    let _ = stream.reset(STREAM_STALLED.into());
                    Err(MediaError::Stalled(MESSAGE_STALL))
                }
            }
        })
    }

    fn close(&self, code: u32) {
        self.0.close(code.into(), b"");
    }
}

/// Starts a session on an established media connection and its receive tasks.
fn start(
    shared: &Arc<Shared>,
    connection: quinn::Connection,
    remote: NodeId,
    key: [u8; 32],
    addr: Addr,
    direction: Direction,
) -> Arc<Session> {
    let session = Session::start(
        Peer {
            id: remote,
            key: Some(key),
            addr,
            direction,
        },
        Box::new(QuicLink(connection.clone())),
        shared.config.media_budget,
    );
    let weak = Arc::downgrade(&session);
    tokio::spawn(read_datagrams(connection.clone(), weak.clone()));
    tokio::spawn(read_messages(connection.clone(), weak.clone()));
    if direction == Direction::Inbound {
        // A dialer that opens a bidirectional stream breaks the protocol: reset each one.
        let c = connection.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = c.accept_bi().await {
                let _ = send.reset(0u32.into());
                let _ = recv.stop(0u32.into());
            }
        });
    }
    tokio::spawn(async move {
        let error = connection.closed().await;
        if let Some(s) = weak.upgrade() {
            s.ended(close_reason(&error));
        }
    });
    session
}

fn close_reason(error: &quinn::ConnectionError) -> CloseReason {
    match error {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == crate::media::CLOSE_REFUSED.into() =>
        {
            CloseReason::Refused
        }
        quinn::ConnectionError::ApplicationClosed(_)
        | quinn::ConnectionError::ConnectionClosed(_) => CloseReason::Remote,
        quinn::ConnectionError::LocallyClosed => CloseReason::Local,
        _ => CloseReason::Lost,
    }
}

async fn read_datagrams(connection: quinn::Connection, session: Weak<Session>) {
    while let Ok(datagram) = connection.read_datagram().await {
        let Some(s) = session.upgrade() else {
            return;
        };
        s.on_datagram(datagram);
    }
}

async fn read_messages(connection: quinn::Connection, session: Weak<Session>) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let Some(s) = session.upgrade() else {
            return;
        };
        if !s.admit_message() {
            let _ = stream.stop(0u32.into());
            continue;
        }
        drop(s);
        let session = session.clone();
        tokio::spawn(async move {
            let read =
                tokio::time::timeout(MESSAGE_READ_BOUND, stream.read_to_end(1 + MAX_MESSAGE)).await;
            let Some(s) = session.upgrade() else {
                return;
            };
            match read {
                Ok(Ok(bytes)) => s.on_message(Bytes::from(bytes)),
                _ => {
                    let _ = stream.stop(0u32.into());
                    s.message_failed();
                }
            }
        });
    }
}

/// Dials a media session to `remote` at `addr` from the transport's socket.
pub(super) async fn open(
    shared: Arc<Shared>,
    remote: NodeId,
    addr: Addr,
) -> Result<MediaSession, MediaError> {
    let client = shared.media_client.clone();
    let (connection, key) = match super::dial_side(&shared, client, remote, &addr).await {
        Ok(c) => c,
        Err(super::SideDialError::Unsupported) => return Err(MediaError::Unsupported),
        Err(super::SideDialError::Dial(e)) => return Err(MediaError::Dial(e)),
    };
    if connection.max_datagram_size().is_none() {
        connection.close(0u32.into(), b"no datagrams");
        return Err(MediaError::Unsupported);
    }
    let session = start(&shared, connection, remote, key, addr, Direction::Outbound);
    Ok(session.handle())
}

/// An accepted connection negotiated the media ALPN: a session, surfaced as
/// [`Event::Media`]. Runs until the session ends (holding the inbound slot).
pub(super) async fn accept(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    remote: NodeId,
    key: [u8; 32],
    from: SocketAddr,
) {
    if connection.max_datagram_size().is_none() {
        connection.close(0u32.into(), b"no datagrams");
        return;
    }
    let addr = Addr::new(NET, from.to_string());
    let session = start(
        &shared,
        connection.clone(),
        remote,
        key,
        addr,
        Direction::Inbound,
    );
    if !shared.events.push(Event::Media(session.handle())).await {
        session.ended(CloseReason::TransportClosed);
    }
    connection.closed().await;
}
