//! The node's public API: typed errors and the admission hook.

use std::sync::Arc;
use std::time::Duration;

use nodenet::{Contact, Node, SendError};
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::Transport;
use nodenet_transport::mem::Hub;

fn node(hub: &Hub, n: u8) -> (Node, nodenet_transport::Addr) {
    let id = Identity::from_seed(&[n; 32]);
    let t = hub.transport_for(&id, &format!("n{n}")).unwrap();
    let addr = t.local_addr();
    (
        Node::builder(id).transport(Arc::new(t)).build().unwrap(),
        addr,
    )
}

#[tokio::test(start_paused = true)]
async fn send_errors_are_typed() {
    let hub = Hub::new();
    let (a, _) = node(&hub, 1);
    a.spawn();
    assert_eq!(
        a.send(NodeId::from_bytes([9; 32]), b"x"),
        Err(SendError::Unroutable)
    );
    let (b, b_addr) = node(&hub, 2);
    b.spawn();
    a.bootstrap(vec![Contact::new(b.id(), vec![b_addr])]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.edges(), vec![b.id()]);
    let big = vec![0u8; 65_536];
    // The exported maxima are the real boundaries, and the error names them.
    assert_eq!(
        a.send(b.id(), &big[..nodenet::MAX_ROUTED_PAYLOAD + 1]),
        Err(SendError::TooLarge {
            len: nodenet::MAX_ROUTED_PAYLOAD + 1,
            max: nodenet::MAX_ROUTED_PAYLOAD
        })
    );
    assert_eq!(a.send(b.id(), &big[..nodenet::MAX_ROUTED_PAYLOAD]), Ok(()));
    assert_eq!(a.send(b.id(), &big[..60_000]), Ok(()));
    // To ourselves: delivered locally.
    let mut inbox = a.deliveries().unwrap();
    assert_eq!(a.send(a.id(), b"me"), Ok(()));
    assert_eq!(inbox.try_recv().unwrap().payload, b"me");
    a.shutdown().await;
    assert_eq!(a.send(b.id(), b"x"), Err(SendError::Closed));
}

#[tokio::test(start_paused = true)]
async fn the_admission_hook_refuses_edges_and_counts() {
    let hub = Hub::new();
    let (a, a_addr) = node(&hub, 1);
    let blocked = Identity::from_seed(&[2; 32]).node_id();
    let id = Identity::from_seed(&[3; 32]);
    let t = hub.transport_for(&id, "gate").unwrap();
    let gate_addr = t.local_addr();
    let gate = Node::builder(id)
        .transport(Arc::new(t))
        .edge_admission(move |peer| *peer != blocked)
        .build()
        .unwrap();
    let (b, _) = node(&hub, 2);
    for n in [&a, &gate, &b] {
        n.spawn();
    }
    a.bootstrap(vec![Contact::new(gate.id(), vec![gate_addr.clone()])]);
    b.bootstrap(vec![Contact::new(gate.id(), vec![gate_addr])]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(gate.edges().contains(&a.id()));
    assert!(!gate.edges().contains(&b.id()));
    assert!(gate.stats().dropped_edge_refused >= 1);
    let _ = a_addr;
}
