//! A transport with none of the capability traits (`Punch`, `Relay`, `Birthday`, `Media`,
//! `Streams`) still carries a node, and each call that needs one it lacks fails with its
//! typed "unsupported" error before any connect is spent on it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nodenet::{Contact, Maintenance, Node, OpenMediaError, OpenStreamError};
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::mem::{Hub, MemTransport};
use nodenet_transport::{
    Addr, BoxFuture, Conn, DialError, Event, MediaError, StreamError, Transport, TransportStats,
};

/// Only what every transport does, delegated to an in-memory one: no `as_*` is overridden.
#[derive(Debug)]
struct Bare(MemTransport);

impl Transport for Bare {
    fn local_id(&self) -> NodeId {
        self.0.local_id()
    }
    fn local_addr(&self) -> Addr {
        self.0.local_addr()
    }
    fn dial(&self, remote: NodeId, addr: &Addr) -> BoxFuture<'static, Result<Conn, DialError>> {
        self.0.dial(remote, addr)
    }
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.poll_event(cx)
    }
    fn close(&self) {
        self.0.close();
    }
    fn stats(&self) -> TransportStats {
        self.0.stats()
    }
    fn is_ip(&self) -> bool {
        self.0.is_ip()
    }
}

fn identity(i: u32) -> Identity {
    let mut seed = [0x5au8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
}

#[tokio::test(start_paused = true)]
async fn a_transport_without_capabilities_carries_a_node_and_says_what_it_lacks() {
    let hub = Hub::new();
    // Nodes 1 and 5 share no edge while the overlay forms, so opening anything between them
    // would need a connect first.
    hub.partition(identity(1).node_id(), identity(5).node_id());
    let mut nodes = Vec::new();
    let mut inboxes = Vec::new();
    for i in 0..6 {
        let id = identity(i);
        let bare = Bare(hub.transport_for(&id, &format!("b{i}")).unwrap());
        assert!(bare.as_punch().is_none() && bare.as_relay().is_none());
        assert!(bare.as_birthday().is_none() && bare.as_media().is_none());
        assert!(bare.as_streams().is_none());
        let addr = bare.local_addr();
        let node = Node::builder(id)
            .transport(Arc::new(bare))
            .maintenance(Maintenance::scaled(5))
            .deterministic_seed(u64::from(i) + 1)
            .build()
            .unwrap();
        inboxes.push(node.deliveries().unwrap());
        node.spawn();
        nodes.push((node, addr));
    }
    let boot = Contact::new(nodes[0].0.id(), vec![nodes[0].1.clone()]);
    for (node, _) in &nodes[1..] {
        node.bootstrap(vec![boot.clone()]);
    }
    for (node, _) in &nodes {
        node.joined(Duration::from_secs(30)).await.unwrap();
    }
    let (a, b) = (&nodes[1].0, &nodes[5].0);
    assert!(!a.edges().contains(&b.id()));

    // Media and streams: refused at once, no rendezvous originated for them.
    let originated = a.stats().originated;
    match a.open_media(b.id()).await {
        Err(OpenMediaError::Session { target, error }) => {
            assert_eq!((target, error), (b.id(), MediaError::Unsupported));
        }
        other => panic!("open_media over a bare transport: {other:?}"),
    }
    match a.open_stream(b.id(), "x/1").await {
        Err(OpenStreamError::Stream { target, error }) => {
            assert_eq!((target, error), (b.id(), StreamError::Unsupported));
        }
        other => panic!("open_stream over a bare transport: {other:?}"),
    }
    assert_eq!(a.stats().originated, originated, "no connect spent on them");

    // Routed frames and direct edges still work.
    hub.heal(a.id(), b.id());
    a.send(b.id(), b"routed").unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), inboxes[5].recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.payload.as_slice(), got.via),
        (&b"routed"[..], nodenet::Via::Routed)
    );
    a.send_direct(b.id(), b"direct").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), inboxes[5].recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.payload.as_slice(), got.via),
        (&b"direct"[..], nodenet::Via::Direct)
    );
    for (node, _) in &nodes {
        node.shutdown().await;
    }
}
