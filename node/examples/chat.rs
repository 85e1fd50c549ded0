//! Chat between nodes, by NodeId only: routed messages and a direct connection.
//!
//! ```text
//! cargo run -p nodenet --example chat                    # two nodes in this process, on loopback
//! cargo run -p nodenet --example chat -- listen 0.0.0.0:4242
//! cargo run -p nodenet --example chat -- join <nodeid>@<ip>:4242   # then type lines
//! ```

use std::time::Duration;

use nodenet::{Node, mint_identity, parse_contact};
use tokio::io::{AsyncBufReadExt, BufReader};

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
        ["listen", addr] => listen(addr.parse()?).await,
        ["join", contact] => join(contact).await,
        _ => Err("usage: chat [listen IP:PORT | join NODEID@IP:PORT]".into()),
    }
}

/// Alice and Bob on 127.0.0.1: a routed message, then a direct connection.
async fn loopback() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Node::builder(mint_identity(16)?)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let bob = Node::builder(mint_identity(16)?)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let mut bob_inbox = bob.deliveries()?;

    alice.dial(bob.contact()).await?;
    alice.send(bob.id(), b"hi Bob, routed by your NodeId")?;
    let d = recv(&mut bob_inbox).await?;
    println!(
        "bob got {:?} from {} ({:?})",
        text(&d.payload),
        d.originator.short(),
        d.via
    );

    // A direct connection: ordered frames on one edge (punched or relayed across NATs).
    let conn = alice.connect(bob.id()).await?;
    conn.send(b"and this one came direct").await?;
    let d = recv(&mut bob_inbox).await?;
    println!(
        "bob got {:?} via {:?} ({})",
        text(&d.payload),
        d.via,
        conn.path().as_str()
    );

    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// A node others can join: prints its contact and every message it gets.
async fn listen(addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::builder(mint_identity(16)?).bind(addr).await?;
    let mut inbox = node.deliveries()?;
    match node.contact_string() {
        Some(contact) => println!("join with: {contact}"),
        // Bound to a wildcard, the node advertises nothing: give joiners this machine's IP.
        None => {
            let port = node
                .local_addr()
                .endpoint
                .rsplit_once(':')
                .map_or("", |(_, p)| p)
                .to_owned();
            println!("join with: {}@<this machine's IP>:{port}", node.id());
        }
    }
    while let Some(d) = inbox.recv().await {
        println!("{}: {}", d.originator.short(), text(&d.payload));
    }
    Ok(())
}

/// Joins through `contact` and sends it each line typed.
async fn join(contact: &str) -> Result<(), Box<dyn std::error::Error>> {
    let peer = parse_contact(contact)?;
    let node = Node::builder(mint_identity(16)?)
        .bind("0.0.0.0:0".parse()?)
        .await?;
    node.bootstrap(vec![peer.clone()]);
    node.joined(Duration::from_secs(10)).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        node.send(peer.id, line.as_bytes())?;
    }
    node.shutdown().await;
    Ok(())
}

async fn recv(
    inbox: &mut nodenet::Deliveries,
) -> Result<nodenet::Delivery, Box<dyn std::error::Error>> {
    let d = tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await?;
    d.ok_or_else(|| "the node shut down".into())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
