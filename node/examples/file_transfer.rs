//! A file transfer over a stream: reliable, ordered, flow-controlled, to a NodeId.
//!
//! ```text
//! cargo run -p nodenet --example file_transfer              # two nodes in this process
//! cargo run -p nodenet --example file_transfer -- receive 0.0.0.0:4242 ./inbox
//! cargo run -p nodenet --example file_transfer -- send <nodeid>@<ip>:4242 ./report.pdf
//! ```
//!
//! The protocol is the example's own (`example-file/1`): the name's length (2 bytes), the
//! name, then the bytes until the stream ends. The receiver answers with the byte count, so
//! the sender knows the file arrived whole. (The `nodenet` CLI's `send-file` adds a content
//! hash and a `.part` file; see its docs.)

use std::time::Instant;

use nodenet::{Node, NodeId, mint_identity, parse_contact};
use tokio::io::AsyncWriteExt;

const PROTOCOL: &str = "example-file/1";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => loopback().await,
        ["receive", addr, dir] => {
            let node = Node::builder(mint_identity(16)?)
                .bind(addr.parse()?)
                .await?;
            // Bound to a wildcard address, we advertise none: give senders this machine's
            // reachable IP with our port.
            println!(
                "receiving as {}@<this host's IP>:{}",
                node.id(),
                node.local_addr().endpoint.rsplit(':').next().unwrap_or("?")
            );
            let mut files = node.accept_streams(PROTOCOL)?;
            while let Some((send, recv)) = files.accept().await {
                match receive(send, recv, std::path::Path::new(dir)).await {
                    Ok((name, n)) => println!("received {name} ({n} bytes)"),
                    Err(e) => eprintln!("a transfer failed: {e}"),
                }
            }
            Ok(())
        }
        ["send", contact, path] => {
            let node = Node::builder(mint_identity(16)?)
                .bind("0.0.0.0:0".parse()?)
                .await?;
            let peer = parse_contact(contact)?;
            let to = peer.id;
            node.dial(peer).await?;
            let data = tokio::fs::read(path).await?;
            let name = std::path::Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("the path has no file name")?;
            send(&node, to, name, &data).await?;
            node.shutdown().await;
            Ok(())
        }
        _ => Err("usage: file_transfer [receive IP:PORT DIR | send NODEID@IP:PORT FILE]".into()),
    }
}

/// Two nodes on 127.0.0.1: 32 MiB from one to the other.
async fn loopback() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Node::builder(mint_identity(16)?)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let bob = Node::builder(mint_identity(16)?)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    // Bob takes files; without a listener every stream to him would be refused.
    let mut files = bob.accept_streams(PROTOCOL)?;
    let dir = std::env::temp_dir().join(format!("nodenet-example-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await?;
    let inbox = dir.clone();
    let receiver = tokio::spawn(async move {
        let (send, recv) = files.accept().await.ok_or("bob shut down")?;
        receive(send, recv, &inbox).await.map_err(|e| e.to_string())
    });

    alice.dial(bob.contact()).await?;
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    send(&alice, bob.id(), "example.bin", &data).await?;
    let (name, n) = receiver.await??;
    let back = tokio::fs::read(dir.join(&name)).await?;
    assert!(back == data, "the file arrived altered");
    println!("bob has {name}: {n} bytes, identical");
    tokio::fs::remove_dir_all(&dir).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// Sends `data` as `name` and waits for the receiver's byte count.
async fn send(
    node: &Node,
    to: NodeId,
    name: &str,
    data: &[u8],
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    // Connects first if there is no edge (rendezvous, punch or relay as needed).
    let (mut send, mut recv) = node.open_stream(to, PROTOCOL).await?;
    let len = u16::try_from(name.len())?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(name.as_bytes()).await?;
    // Waits whenever the receiver's window is full: a slow receiver slows us down.
    send.write_all(data).await?;
    // Returns once the receiver's transport holds every byte.
    send.finish().await?;
    let answer = recv.read_to_end(8).await?;
    let got = u64::from_be_bytes(answer.try_into().map_err(|_| "a malformed answer")?);
    if got != data.len() as u64 {
        return Err(format!("the receiver got {got} of {} bytes", data.len()).into());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {name}: {} bytes in {secs:.2} s ({:.1} MiB/s)",
        data.len(),
        data.len() as f64 / (1024.0 * 1024.0) / secs
    );
    Ok(())
}

/// Receives one file into `dir`; returns its name and length.
async fn receive(
    mut send: nodenet::SendStream,
    mut recv: nodenet::RecvStream,
    dir: &std::path::Path,
) -> Result<(String, u64), Box<dyn std::error::Error + Send + Sync>> {
    let mut len = [0u8; 2];
    read_exact(&mut recv, &mut len).await?;
    let mut name = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact(&mut recv, &mut name).await?;
    let name = String::from_utf8(name)?;
    // Never trust a peer's path: keep only a plain file name.
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("refusing the file name {name:?}").into());
    }
    let mut file = tokio::fs::File::create(dir.join(&name)).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    // `Ok(None)` is the sender's finish; a cut stream is an error, never a short file.
    while let Some(k) = recv.read(&mut buf).await? {
        file.write_all(&buf[..k]).await?;
        n += k as u64;
    }
    file.flush().await?;
    send.write_all(&n.to_be_bytes()).await?;
    send.finish().await?;
    Ok((name, n))
}

async fn read_exact(
    recv: &mut nodenet::RecvStream,
    buf: &mut [u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut at = 0;
    while at < buf.len() {
        at += recv
            .read(&mut buf[at..])
            .await?
            .ok_or("the stream ended early")?;
    }
    Ok(())
}
