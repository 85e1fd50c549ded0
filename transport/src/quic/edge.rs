//! One edge's life: its reader and writer, and why it ended.

use super::*;

/// Runs one edge until it closes: a reader task surfaces frames, this task drains the send
/// queue under the send deadline. Reports the close once, after the last frame.
pub(super) async fn run_edge(
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

pub(super) fn remote_reason(connection: &quinn::Connection) -> CloseReason {
    match connection.close_reason() {
        Some(
            quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_),
        ) => CloseReason::Remote,
        Some(quinn::ConnectionError::LocallyClosed) => CloseReason::Local,
        _ => CloseReason::Lost,
    }
}
