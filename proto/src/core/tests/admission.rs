//! Edge admission: the inbound cap, and the peers we expect past it.

use super::*;

/// A node at its inbound cap refused every path of a connect to it: the caller's direct
/// dial, its punched dial and its dial through a relay each arrive as one more inbound edge
/// (at 3,000 simulated nodes, a popular public node held 256 inbound edges, and the one
/// failed connect of each of two seeds was to such a node). A peer whose signed Hello or
/// Connect we just answered is expected, and may take one of `INBOUND_HEADROOM` places past
/// the cap, once, within `EXPECTED_FOR`. Nothing else is: a stranger, a peer whose Hello was
/// forged, one expected too long ago, one that spent its place already, and any past the
/// headroom are refused.
#[test]
fn a_peer_whose_request_we_answered_gets_past_a_full_inbound_cap() {
    let me = identity(1);
    let config = CoreConfig {
        max_inbound_edges: 2,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    let t0 = now(100);
    let relay = identity(2);
    edge(&mut core, &relay, t0);
    let inbound = |core: &mut Core, peer: &Identity, at: Now| {
        let r = core.on_edge_up(
            at,
            peer.node_id(),
            Some(peer.ed_public()),
            false,
            &mem_addr("in"),
        );
        while core.poll_action().is_some() {}
        r
    };
    // The cap: two inbound edges (the relay's edge is ours, outbound).
    for k in 3..5 {
        assert_eq!(inbound(&mut core, &identity(k), t0), Ok(()));
    }
    let stranger = identity(5);
    assert_eq!(
        inbound(&mut core, &stranger, t0),
        Err(EdgeRefusal::InboundFull)
    );
    // A Hello from `caller`, through the relay: answered, so `caller` is expected.
    let hello_from = |core: &mut Core, caller: &Identity, signer: &Identity, at: Now| {
        let hello = nodenet_rendezvous::encode_hello(
            signer,
            &core.id(),
            &[],
            &[caller.node_id().to_bytes()[0]; RDV_NONCE_LEN],
        )
        .unwrap();
        let mut frame = routed(
            caller,
            caller.ed_public(),
            FrameType::HELLO,
            core.id(),
            MAX_HOPS,
            at,
            &hello,
        );
        let _ = core.on_frame(at, relay.node_id(), &mem_addr("relay"), &mut frame);
        while core.poll_action().is_some() {}
    };
    let caller = identity(6);
    hello_from(&mut core, &caller, &caller, t0);
    assert_eq!(core.stats().rendezvous_answered, 1);
    assert_eq!(inbound(&mut core, &caller, t0), Ok(()));
    assert_eq!(core.stats().inbound_expected, 1);
    // Its place is spent: down and up again, it is refused.
    core.on_edge_down(t0, &caller.node_id());
    while core.poll_action().is_some() {}
    assert_eq!(
        inbound(&mut core, &caller, t0),
        Err(EdgeRefusal::InboundFull)
    );
    // A punch Sync is no request we answer: its sender is not expected.
    let syncer = identity(12);
    let mut frame = connect_frame(
        &syncer,
        core.id(),
        [12; 16],
        nodenet_nat::FLAG_SYNC,
        &[],
        t0,
    );
    let _ = core.on_frame(t0, relay.node_id(), &mem_addr("relay"), &mut frame);
    while core.poll_action().is_some() {}
    assert_eq!(
        inbound(&mut core, &syncer, t0),
        Err(EdgeRefusal::InboundFull)
    );
    // A punch Connect we answer makes its sender expected too.
    let puncher = identity(11);
    let mut frame = connect_frame(&puncher, core.id(), [11; 16], 0, &[], t0);
    let _ = core.on_frame(t0, relay.node_id(), &mem_addr("relay"), &mut frame);
    while core.poll_action().is_some() {}
    assert_eq!(core.stats().punches_answered, 1);
    assert_eq!(inbound(&mut core, &puncher, t0), Ok(()));
    core.on_edge_down(t0, &puncher.node_id());
    while core.poll_action().is_some() {}
    // A Hello whose inner signature is not the caller's is not answered: nothing expected.
    let forged = identity(8);
    hello_from(&mut core, &forged, &identity(9), t0);
    assert_eq!(core.stats().rendezvous_answered, 1);
    assert_eq!(
        inbound(&mut core, &forged, t0),
        Err(EdgeRefusal::InboundFull)
    );
    // Expected 60 s, not longer.
    let late = identity(10);
    hello_from(&mut core, &late, &late, t0);
    assert_eq!(
        inbound(&mut core, &late, now(160)),
        Err(EdgeRefusal::InboundFull)
    );
    let t1 = now(200);
    // The headroom: 32 places past the cap (the caller's is free again), then none,
    // expected or not.
    let crowd: Vec<Identity> = (100..140).map(identity).collect();
    for c in &crowd {
        hello_from(&mut core, c, c, t1);
    }
    let admitted = crowd
        .iter()
        .filter(|c| inbound(&mut core, c, t1).is_ok())
        .count();
    assert_eq!(admitted, INBOUND_HEADROOM);
    assert_eq!(core.stats().inbound_expected, 2 + INBOUND_HEADROOM as u64);
    // The stranger still is refused, and the cap itself never moved.
    assert_eq!(
        inbound(&mut core, &stranger, t1),
        Err(EdgeRefusal::InboundFull)
    );
}

/// The SIBLINGS requests the core queued, by recipient.
fn siblings_asked(core: &mut Core) -> Vec<(NodeId, [u8; NONCE_LEN])> {
    std::iter::from_fn(|| core.poll_action())
        .filter_map(|a| match a {
            Action::Send { to, frame } => {
                let (f, _) = Frame::parse(&frame).unwrap();
                (f.frame_type() == FrameType::SIBLINGS)
                    .then(|| (to, control::parse_nonce(f.payload()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// On IP, a peer that dialed us is known without an address (where it dialed from is a
/// NAT's mapping or the like, not ours to hand out), so only its own word could let us name
/// it to others, and it came only with our next sibling exchange, if the peer was a sibling
/// at all: at 10,000 simulated nodes joining at once, 104 public nodes had not met their
/// closest public node after 300 s. The core asks an inbound peer whose address it lacks for
/// its neighbours at once; the answer names the peer where it listens. A peer we dialed, one
/// whose address we hold, and any peer off IP (where the dialing address is kept) are not
/// asked.
#[test]
fn a_peer_that_dialed_us_is_asked_at_once_where_it_listens() {
    let me = identity(1);
    let config = CoreConfig {
        ip: true,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    let t = now(1);
    let seen_from = Addr::new("quic", "203.0.113.9:50000");
    let listens = Addr::new("quic", "203.0.113.9:4242");
    let dialer = identity(2);
    core.on_edge_up(
        t,
        dialer.node_id(),
        Some(dialer.ed_public()),
        false,
        &seen_from,
    )
    .unwrap();
    let asked = siblings_asked(&mut core);
    assert_eq!(
        asked.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        [dialer.node_id()]
    );
    let held = |core: &Core, id: &Identity| {
        core.knowledge()
            .get(&id.node_id())
            .map(|c| c.addrs.clone())
            .unwrap_or_default()
    };
    assert!(held(&core, &dialer).is_empty());
    // Its answer names itself where it listens.
    let own = Contact {
        id: dialer.node_id(),
        ed_pub: Some(dialer.ed_public()),
        x_pub: None,
        caps: Caps::default(),
        addrs: vec![listens.clone()],
    };
    answer_listing(&mut core, &dialer, asked[0].1, &[own], t);
    assert_eq!(held(&core, &dialer), [listens]);
    // Not asked: a peer we dialed, and one whose address we hold already.
    let dialed = identity(3);
    core.on_edge_up(
        t,
        dialed.node_id(),
        Some(dialed.ed_public()),
        true,
        &mem_addr("dialed"),
    )
    .unwrap();
    let known = identity(4);
    named_in_an_answer(&mut core, &dialer, &[&known], t);
    assert!(!held(&core, &known).is_empty());
    while core.poll_action().is_some() {}
    core.on_edge_up(
        t,
        known.node_id(),
        Some(known.ed_public()),
        false,
        &seen_from,
    )
    .unwrap();
    assert_eq!(siblings_asked(&mut core), []);
    // Off IP, the address a peer dialed from is where it listens, and is kept.
    let mut mem = Core::new(
        identity(5),
        CoreConfig::default(),
        CoreRng::deterministic(2),
    );
    mem.on_edge_up(
        t,
        dialer.node_id(),
        Some(dialer.ed_public()),
        false,
        &mem_addr("dialer"),
    )
    .unwrap();
    assert_eq!(siblings_asked(&mut mem), []);
    assert_eq!(held(&mem, &dialer), [mem_addr("dialer")]);
}
