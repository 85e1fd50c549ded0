//! The in-memory hub's fault models, on tokio's paused clock: deterministic, no real time.

use std::time::Duration;

use nodenet_kad::NodeId;
use nodenet_transport::mem::{Hub, LinkModel, MemTransport};
use nodenet_transport::{Conn, DialError, Event, Punch, Transport, next_event};
use tokio::time::Instant;

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

fn node(hub: &Hub, n: u8) -> MemTransport {
    hub.transport(id(n), &format!("n{n}")).unwrap()
}

async fn dial(a: &MemTransport, b: &MemTransport) -> Conn {
    a.dial(b.local_id(), &b.local_addr()).await.unwrap()
}

/// Collects the payloads of frames arriving within `window`, with their arrival times.
async fn collect(t: &MemTransport, window: Duration) -> Vec<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(start + window, next_event(t)).await {
        if let Event::Frame { packet, .. } = ev {
            out.push((packet.to_vec(), start.elapsed()));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn partition_drops_frames_and_dials_until_healed() {
    let hub = Hub::new();
    let (a, b) = (node(&hub, 1), node(&hub, 2));
    let ab = dial(&a, &b).await;
    hub.partition(a.local_id(), b.local_id());
    ab.send(b"lost").unwrap();
    assert!(collect(&b, Duration::from_secs(1)).await.is_empty());
    assert!(matches!(
        a.dial(b.local_id(), &b.local_addr()).await,
        Err(DialError::NoRoute(_))
    ));
    assert_eq!(a.stats().frames_dropped_by_link, 1);
    hub.heal(a.local_id(), b.local_id());
    ab.send(b"found").unwrap();
    let got = collect(&b, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, b"found");
    assert!(a.dial(b.local_id(), &b.local_addr()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn delay_and_jitter_keep_order_and_bounds() {
    let hub = Hub::new();
    let (a, b) = (node(&hub, 1), node(&hub, 2));
    let model = LinkModel {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(20),
        seed: 7,
        ..LinkModel::default()
    };
    hub.set_link(a.local_id(), b.local_id(), model);
    let ab = dial(&a, &b).await;
    for i in 0u8..40 {
        ab.send(&[i]).unwrap();
    }
    let got = collect(&b, Duration::from_secs(1)).await;
    assert_eq!(
        got.iter().map(|g| g.0[0]).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    for (_, at) in &got {
        assert!(
            *at >= Duration::from_millis(50) && *at <= Duration::from_millis(71),
            "{at:?}"
        );
    }
    // Jitter really varies the arrival times.
    let distinct: std::collections::HashSet<_> = got.iter().map(|g| g.1).collect();
    assert!(distinct.len() > 1);
}

#[tokio::test(start_paused = true)]
async fn loss_is_seeded_and_reproducible() {
    async fn run(seed: u64) -> Vec<u8> {
        let hub = Hub::new();
        let (a, b) = (node(&hub, 1), node(&hub, 2));
        hub.set_link(
            a.local_id(),
            b.local_id(),
            LinkModel {
                loss: 0.3,
                seed,
                ..LinkModel::default()
            },
        );
        let ab = dial(&a, &b).await;
        let mut sent = 0u8;
        while sent < 200 {
            if ab.send(&[sent]).is_ok() {
                sent += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        collect(&b, Duration::from_secs(1))
            .await
            .into_iter()
            .map(|g| g.0[0])
            .collect()
    }
    let first = run(42).await;
    assert_eq!(first, run(42).await, "same seed, same fate");
    assert_ne!(first, run(43).await, "another seed, another fate");
    let rate = 1.0 - first.len() as f64 / 200.0;
    assert!((0.2..0.4).contains(&rate), "loss rate {rate}");
}

#[tokio::test(start_paused = true)]
async fn reordering_and_mtu() {
    let hub = Hub::new();
    let (a, b) = (node(&hub, 1), node(&hub, 2));
    let model = LinkModel {
        delay: Duration::from_millis(10),
        reorder_every: 3,
        reorder_hold: Duration::from_millis(100),
        mtu: Some(100),
        ..LinkModel::default()
    };
    hub.set_link(a.local_id(), b.local_id(), model);
    let ab = dial(&a, &b).await;
    for i in 1u8..=6 {
        ab.send(&[i]).unwrap();
    }
    ab.send(&[0u8; 101]).unwrap(); // over the MTU: vanishes
    let got: Vec<u8> = collect(&b, Duration::from_secs(1))
        .await
        .iter()
        .map(|g| g.0[0])
        .collect();
    assert_eq!(
        got,
        vec![1, 2, 4, 5, 3, 6],
        "every third frame is overtaken"
    );
    // The reverse direction has its own (perfect) model.
    let ba = b.dial(a.local_id(), &a.local_addr()).await.unwrap();
    ba.send(b"back").unwrap();
    let back = collect(&a, Duration::from_millis(1)).await;
    assert_eq!(back[0].0, b"back");
}

#[tokio::test(start_paused = true)]
async fn addresses_are_unique_until_closed() {
    let hub = Hub::new();
    let a = node(&hub, 1);
    assert!(hub.transport(id(9), "n1").is_err());
    a.close();
    assert!(hub.transport(id(9), "n1").is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_node_can_dial_out_but_not_be_dialed() {
    let hub = Hub::new();
    let (a, b) = (node(&hub, 1), node(&hub, 2));
    hub.set_reachable(a.local_id(), false);
    assert!(matches!(
        b.dial(a.local_id(), &a.local_addr()).await,
        Err(DialError::NoRoute(_))
    ));
    let ab = dial(&a, &b).await;
    ab.send(b"out").unwrap();
    let (conn, _) = match next_event(&b).await {
        Some(Event::Frame { conn, packet }) => (conn, packet),
        other => panic!("{other:?}"),
    };
    conn.send(b"back").unwrap();
    assert!(matches!(next_event(&a).await, Some(Event::Frame { .. })));
}

fn mem_addr(endpoint: &str) -> nodenet_transport::Addr {
    nodenet_transport::Addr::new("mem", endpoint)
}

#[tokio::test(start_paused = true)]
async fn nat_models_filter_inbound_as_their_type_says() {
    use nodenet_transport::mem::NatModel;
    let hub = Hub::new();
    let (a, c) = (node(&hub, 1), node(&hub, 3));
    let b = node(&hub, 2);
    hub.set_nat(b.local_id(), "natb", NatModel::PORT_RESTRICTED);
    // Outbound works, and the peer sees the NAT's public mapping.
    let ab = dial(&b, &a).await;
    assert_eq!(ab.remote_addr().endpoint, "n1");
    let seen = loop {
        ab.send(b"x").unwrap();
        if let Some(Event::Frame { conn, .. }) = next_event(&a).await {
            break conn.remote_addr().clone();
        }
    };
    assert_eq!(seen.endpoint, "natb:30000");
    // Its own address is unreachable from outside; the mapping lets in only whom it sent to.
    assert!(matches!(
        a.dial(b.local_id(), &b.local_addr()).await,
        Err(DialError::NoRoute(_))
    ));
    assert!(a.dial(b.local_id(), &seen).await.is_ok());
    assert!(matches!(
        c.dial(b.local_id(), &seen).await,
        Err(DialError::NoRoute(_))
    ));
    // A punch toward C opens the filter for C (one mapping: endpoint-independent).
    b.punch(&c.local_addr()).unwrap();
    assert!(c.dial(b.local_id(), &seen).await.is_ok());

    // A symmetric NAT maps each destination to its own port: what A saw is useless to C.
    let d = node(&hub, 4);
    hub.set_nat(d.local_id(), "natd", NatModel::SYMMETRIC);
    let _da = dial(&d, &a).await;
    d.punch(&c.local_addr()).unwrap();
    assert!(matches!(
        c.dial(d.local_id(), &mem_addr("natd:30000")).await,
        Err(DialError::NoRoute(_))
    ));
    assert!(c.dial(d.local_id(), &mem_addr("natd:30001")).await.is_ok());

    // Full cone lets anyone in once the mapping exists; address-restricted checks the host.
    let e = node(&hub, 5);
    hub.set_nat(e.local_id(), "nate", NatModel::FULL_CONE);
    let _ea = dial(&e, &a).await;
    assert!(c.dial(e.local_id(), &mem_addr("nate:30000")).await.is_ok());
    let f = node(&hub, 6);
    hub.set_nat(f.local_id(), "natf", NatModel::ADDRESS_RESTRICTED);
    let _fa = dial(&f, &a).await;
    assert!(matches!(
        c.dial(f.local_id(), &mem_addr("natf:30000")).await,
        Err(DialError::NoRoute(_))
    ));
    assert!(a.dial(f.local_id(), &mem_addr("natf:30000")).await.is_ok());
}

/// Behind a NAT that claims dropped packets, who sends first decides a punch: a peer's
/// packet that arrives before ours claims our port for that peer, and ours then leave from
/// a fresh port its NAT has never seen. With a link delay, packets sent at the same moment
/// both find the other's mapping open.
#[tokio::test(start_paused = true)]
async fn a_nat_that_claims_dropped_packets_punishes_the_late_sender() {
    use nodenet_transport::mem::{LinkModel, NatModel};
    use std::time::Duration;
    for (model, late_works) in [
        (NatModel::PORT_RESTRICTED, true),
        (NatModel::LINUX_MASQUERADE, false),
    ] {
        let hub = Hub::new();
        let public = node(&hub, 1);
        let (x, y) = (node(&hub, 2), node(&hub, 3));
        hub.set_nat(x.local_id(), "natx", model);
        hub.set_nat(y.local_id(), "naty", NatModel::PORT_RESTRICTED);
        // Both learn their mapping from a public node: natx:30000 and naty:30000.
        let _xp = dial(&x, &public).await;
        let _yp = dial(&y, &public).await;
        let (xm, ym) = (mem_addr("natx:30000"), mem_addr("naty:30000"));
        // Y punches first; X's NAT drops it. Then X punches and dials.
        y.punch(&xm).unwrap();
        x.punch(&ym).unwrap();
        let late = y.dial(x.local_id(), &xm).await;
        assert_eq!(late.is_ok(), late_works, "{model:?}");
    }

    // The same NAT with a 20 ms link each way: sends at one moment cross in flight and both
    // find the other's mapping open.
    let hub = Hub::new();
    let public = node(&hub, 1);
    let (x, y) = (node(&hub, 2), node(&hub, 3));
    hub.set_nat(x.local_id(), "natx", NatModel::LINUX_MASQUERADE);
    hub.set_nat(y.local_id(), "naty", NatModel::LINUX_MASQUERADE);
    let link = LinkModel {
        delay: Duration::from_millis(20),
        ..LinkModel::default()
    };
    hub.set_link(x.local_id(), y.local_id(), link.clone());
    hub.set_link(y.local_id(), x.local_id(), link);
    let _xp = dial(&x, &public).await;
    let _yp = dial(&y, &public).await;
    let (xm, ym) = (mem_addr("natx:30000"), mem_addr("naty:30000"));
    y.punch(&xm).unwrap();
    x.punch(&ym).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(y.dial(x.local_id(), &xm).await.is_ok());
    assert!(x.dial(y.local_id(), &ym).await.is_ok());
}

/// `Conn::send_packet` queues the packet itself and hands a refused one back untouched, so
/// local repair offers one buffer to edge after edge without copying it.
#[tokio::test(start_paused = true)]
async fn send_packet_moves_the_buffer_and_hands_a_refused_one_back() {
    let hub = Hub::new();
    let (a, b, c) = (node(&hub, 1), node(&hub, 2), node(&hub, 3));
    let dead = dial(&a, &b).await;
    let live = dial(&a, &c).await;
    dead.close();
    let packet = nodenet_transport::Packet::copy_from(b"one buffer").unwrap();
    let at = packet.as_ptr();
    let unsent = dead.send_packet(packet).unwrap_err();
    assert_eq!(unsent.error, nodenet_transport::SendError::ConnClosed);
    assert_eq!(
        unsent.packet.as_ptr(),
        at,
        "the refused packet is the same buffer"
    );
    live.send_packet(unsent.packet).unwrap();
    match next_event(&c).await {
        Some(Event::Frame { packet, .. }) => assert_eq!(&*packet, b"one buffer"),
        other => panic!("{other:?}"),
    }
}
