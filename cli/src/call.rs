//! Calls from the command line: a test call's media (`POST /call`) and answering calls
//! (`run --accept-calls`).
//!
//! A test call sends datagrams of `size` bytes at `fps` for `secs` on channel 16, each
//! carrying its sequence number and send time; an answering node echoes every datagram and
//! message back on its channel, so the caller measures loss and round-trip time through the
//! very path the call took (direct, punched or relayed).

use std::time::{Duration, Instant};

use nodenet::{MediaSession, Node, NodeId};
use serde::Deserialize;
use serde_json::{Value, json};

/// The channel test calls use (the first application channel).
const CHANNEL: u8 = 16;
/// Longest test call.
pub(crate) const MAX_SECS: u32 = 60;
/// Highest frame rate of a test call.
pub(crate) const MAX_FPS: u32 = 1000;
/// Smallest datagram of a test call: its sequence number and send time.
pub(crate) const MIN_SIZE: usize = 12;

/// `POST /call`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallRequest {
    pub(crate) to: String,
    #[serde(default = "default_secs")]
    pub(crate) secs: u32,
    #[serde(default = "default_fps")]
    pub(crate) fps: u32,
    #[serde(default = "default_size")]
    pub(crate) size: usize,
}

fn default_secs() -> u32 {
    3
}
fn default_fps() -> u32 {
    50
}
fn default_size() -> usize {
    200
}

impl CallRequest {
    /// What is wrong with the request's numbers, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SECS).contains(&self.secs) {
            return Err(format!("\"secs\" must be 1..={MAX_SECS}"));
        }
        if !(1..=MAX_FPS).contains(&self.fps) {
            return Err(format!("\"fps\" must be 1..={MAX_FPS}"));
        }
        let max = nodenet_transport::media::MAX_DATAGRAM;
        if !(MIN_SIZE..=max).contains(&self.size) {
            return Err(format!("\"size\" must be {MIN_SIZE}..={max}"));
        }
        Ok(())
    }
}

/// Runs a test call to `to` (connecting first if needed) and reports what came back.
pub(crate) async fn test_call(
    node: &Node,
    to: NodeId,
    req: &CallRequest,
) -> Result<Value, nodenet::Error> {
    let started = Instant::now();
    let path = node.connect(to).await?.path();
    let session = node.open_media(to).await?;
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    // A fresh session's datagrams are ours to take; None would mean it is already gone.
    let mut echoes = session
        .datagrams()
        .ok_or(nodenet::OpenMediaError::Session {
            target: to,
            error: nodenet::MediaError::Closed,
        })?;
    let frames = req.secs * req.fps;
    let sender = {
        let (session, size, fps) = (session.clone(), req.size, req.fps);
        tokio::spawn(async move {
            let epoch = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
            let mut sent = 0u32;
            for seq in 0..frames {
                tick.tick().await;
                let mut p = vec![0u8; size];
                p[..4].copy_from_slice(&seq.to_be_bytes());
                let at = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                p[4..12].copy_from_slice(&at.to_be_bytes());
                if session.send_datagram(CHANNEL, &p).is_ok() {
                    sent += 1;
                }
            }
            (epoch, sent)
        })
    };
    let mut rtts = Vec::new();
    let mut seen = vec![false; frames as usize];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(req.secs) + 2);
    let mut arrivals = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, echoes.recv()).await {
        if d.payload.len() < MIN_SIZE {
            continue;
        }
        let seq = u32::from_be_bytes([d.payload[0], d.payload[1], d.payload[2], d.payload[3]]);
        let mut at = [0u8; 8];
        at.copy_from_slice(&d.payload[4..12]);
        if let Some(s) = seen.get_mut(seq as usize) {
            if !*s {
                *s = true;
                arrivals.push((u64::from_be_bytes(at), d.received));
            }
        }
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    let (epoch, sent) = sender.await.unwrap_or((started, 0));
    for (at, received) in arrivals {
        let sent_at = epoch + Duration::from_micros(at);
        rtts.push(received.into_std().saturating_duration_since(sent_at));
    }
    rtts.sort();
    // Nearest rank: the smallest round trip at or above fraction `per_mille` of them.
    let pct = |per_mille: usize| {
        let rank = (rtts.len() * per_mille).div_ceil(1000).max(1);
        rtts.get(rank - 1)
            .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
    };
    let stats = session.stats();
    session.close();
    Ok(json!({
        "path": path.as_str(),
        "open_ms": (open_ms * 1000.0).round() / 1000.0,
        "sent": sent,
        "echoed": rtts.len(),
        "rtt_ms_p50": pct(500),
        "rtt_ms_p99": pct(990),
        "backpressure": stats.tx_dropped_queue,
    }))
}

/// Answers every call that passed the node's gates: echoes its datagrams and messages back
/// until it ends.
pub(crate) async fn answer_calls(node: Node) {
    let Ok(mut inbound) = node.inbound_media() else {
        return;
    };
    while let Some(session) = inbound.recv().await {
        tracing::info!(event = "call", from = %session.remote_id(), "call answered");
        tokio::spawn(echo(session));
    }
}

async fn echo(session: MediaSession) {
    let (Some(mut datagrams), Some(mut messages)) = (session.datagrams(), session.messages())
    else {
        return;
    };
    loop {
        tokio::select! {
            d = datagrams.recv() => match d {
                // Backpressure drops an echo, as it would a frame of a real call.
                Some(d) => { let _ = session.send_datagram(d.channel, &d.payload); }
                None => break,
            },
            m = messages.recv() => match m {
                Some(m) => {
                    let s = session.clone();
                    tokio::spawn(async move { let _ = s.send_message(m.channel, &m.payload).await; });
                }
                None => break,
            },
        }
    }
    tracing::info!(event = "call_ended", from = %session.remote_id(), "call ended");
}
