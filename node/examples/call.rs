//! A call: a media session beside the overlay edge, with unreliable datagrams (audio and
//! video frames) and reliable messages (signalling). Two nodes on loopback; Bob echoes.
//!
//! ```text
//! cargo run -p nodenet --example call
//! ```

use std::time::{Duration, Instant};

use nodenet::{Node, mint_identity};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Node::builder(mint_identity(16)?)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    // A node refuses every call unless its consent hook says otherwise.
    let bob = Node::builder(mint_identity(16)?)
        .media_consent(|_caller| true)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let mut calls = bob.inbound_media()?;
    tokio::spawn(async move {
        // Bob answers every call and echoes its datagrams back.
        while let Some(call) = calls.recv().await {
            let Some(mut rx) = call.datagrams() else {
                continue;
            };
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let _ = call.send_datagram(p.channel, &p.payload);
                }
            });
        }
    });

    alice.dial(bob.contact()).await?;
    let call = alice.open_media(bob.id()).await?;
    let mut echoes = call.datagrams().ok_or("datagrams taken")?;
    call.send_message(16, b"hello, this is Alice").await?; // reliable, ordered per message
    let mut rtts = Vec::new();
    for seq in 0u32..50 {
        let sent = Instant::now();
        call.send_datagram(17, &seq.to_be_bytes())?; // unreliable, like an audio frame
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), echoes.recv()).await {
            rtts.push(sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rtts.sort();
    let p50 = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    println!(
        "{} of 50 datagrams echoed, round trip p50 {p50:?}",
        rtts.len()
    );
    if rtts.len() < 45 {
        return Err("too many datagrams lost on loopback".into());
    }
    call.close();
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
