//! Whole clusters of nodes over the in-memory transport, on tokio's paused clock: no sockets,
//! no real time.

use std::sync::Arc;
use std::time::Duration;

use nodenet::{Contact, Delivery, Maintenance, Node, Via};
use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_transport::Transport;
use nodenet_transport::mem::{Hub, MemTransport};
use tokio::sync::mpsc;

struct Member {
    node: Node,
    transport: MemTransport,
    inbox: mpsc::Receiver<Delivery>,
}

fn identity(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

/// `n` nodes; node 0 is the bootstrap everyone else joins through.
fn cluster(hub: &Hub, n: u32, difficulty: u32) -> Vec<Member> {
    let mut members = Vec::new();
    for i in 0..n {
        let id = identity(i);
        let transport = hub.transport_for(&id, &format!("n{i}")).unwrap();
        let node = Node::builder(id, Arc::new(transport.clone()))
            .min_difficulty(difficulty)
            .maintenance(Maintenance::scaled(5))
            .delivery_buffer(1024)
            .seed(u64::from(i) + 1)
            .build();
        let inbox = node.deliveries().unwrap();
        members.push(Member {
            node,
            transport,
            inbox,
        });
    }
    let boot = Contact::new(
        members[0].node.id(),
        vec![members[0].transport.local_addr()],
    );
    for m in &members {
        m.node.spawn();
        if m.node.id() != boot.id {
            m.node.bootstrap(vec![boot.clone()]);
        }
    }
    members
}

/// Every node holds at least KMin = 3 outbound edges; the bootstrap node, which everyone
/// dialed, holds them as inbound edges (it has no one left to dial).
fn assert_floor(members: &[Member]) {
    for (i, m) in members.iter().enumerate() {
        let (out, all) = (m.node.outbound_edges(), m.node.edges().len());
        if i == 0 {
            assert!(all >= 3, "bootstrap node has {all} edges");
        } else {
            assert!(out >= 3, "{} has {out} outbound edges", m.node.id().short());
        }
    }
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_nodes_converge_and_route() {
    let hub = Hub::new();
    let mut members = cluster(&hub, 20, 0);
    settle(60).await;
    assert_floor(&members);
    let ids: Vec<NodeId> = members.iter().map(|m| m.node.id()).collect();
    for (i, m) in members.iter().enumerate() {
        let to = ids[(i + 7) % ids.len()];
        m.node.send(to, format!("hello {i}").as_bytes()).unwrap();
    }
    settle(2).await;
    let mut got = 0;
    for m in &mut members {
        while let Ok(d) = m.inbox.try_recv() {
            assert_eq!(d.via, Via::Routed);
            got += 1;
        }
    }
    assert_eq!(got, 20);
}
