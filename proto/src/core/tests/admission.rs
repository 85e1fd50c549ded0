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

/// `peer` comes up as an edge of `core` (dialed by us if `outbound`), seen at `addr`, with
/// its key from the handshake.
fn edge_up(core: &mut Core, peer: &Identity, outbound: bool, addr: &Addr, at: Now) {
    core.on_edge_up(at, peer.node_id(), Some(peer.ed_public()), outbound, addr)
        .unwrap();
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
/// it to others, and it came only with an answer the peer gave us: at 10,000 simulated
/// nodes joining at once, 104 public nodes had not met their closest public node after
/// 300 s. The core asks an inbound peer it never reached for its neighbours at once; the
/// answer names the peer where it listens. The ask's answer counts once and only from that
/// peer, a peer reconnecting is asked at most once per `NONCE_TTL`, and the asks stay out of
/// the lookups' table. Not asked: a peer we dialed, a peer we reached before, any peer off
/// IP (where the dialing address is kept). Asked: one we know only at an address someone
/// else named.
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
    let inbound = |core: &mut Core, peer: &Identity, at: Now| {
        edge_up(core, peer, false, &seen_from, at);
        siblings_asked(core)
    };
    let held = |core: &Core, id: &Identity| {
        core.knowledge()
            .get(&id.node_id())
            .map(|c| c.addrs.clone())
            .unwrap_or_default()
    };
    let naming = |id: &Identity, at: &Addr| Contact {
        id: id.node_id(),
        ed_pub: Some(id.ed_public()),
        x_pub: None,
        caps: Caps::default(),
        addrs: vec![at.clone()],
    };
    let dialer = identity(2);
    let asked = inbound(&mut core, &dialer, t);
    assert_eq!(
        asked.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        [dialer.node_id()]
    );
    let nonce = asked[0].1;
    assert!(
        core.pending.is_empty(),
        "asks stay out of the lookups' table"
    );
    assert!(held(&core, &dialer).is_empty());
    // Someone else answering under the ask's nonce (its answer passed on by the dialer's
    // edge), naming the dialer elsewhere: dropped.
    let other = identity(3);
    let elsewhere = Addr::new("quic", "192.0.2.1:1");
    let listed = [naming(&dialer, &elsewhere)];
    let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&listed)];
    control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &listed).unwrap();
    let ed = other.ed_public();
    let mut forged = routed(&other, ed, FrameType::NEIGHBORS, core.id(), 1, t, &payload);
    let dropped = core.stats().dropped_rate_limited;
    let _ = core.on_frame(t, dialer.node_id(), &seen_from, &mut forged);
    assert_eq!(core.stats().dropped_rate_limited, dropped + 1);
    assert!(held(&core, &dialer).is_empty());
    // The dialer's own answer names it where it listens; a second answer under the same
    // nonce counts no more.
    answer_listing(&mut core, &dialer, nonce, &[naming(&dialer, &listens)], t);
    assert_eq!(held(&core, &dialer), std::slice::from_ref(&listens));
    answer_listing(&mut core, &dialer, nonce, &[naming(&dialer, &elsewhere)], t);
    assert_eq!(held(&core, &dialer), [listens]);
    // Reconnecting at once is not asked again; 30 s later it is.
    core.on_edge_down(t, &dialer.node_id());
    while core.poll_action().is_some() {}
    assert_eq!(inbound(&mut core, &dialer, ms_after(t, 1)), []);
    core.on_edge_down(t, &dialer.node_id());
    while core.poll_action().is_some() {}
    assert_eq!(inbound(&mut core, &dialer, now(31)).len(), 1);
    // A peer we dialed is not asked, nor asked when it later dials us: we reached it.
    let dialed = identity(4);
    edge_up(&mut core, &dialed, true, &mem_addr("dialed"), t);
    assert_eq!(siblings_asked(&mut core), []);
    core.on_edge_down(t, &dialed.node_id());
    while core.poll_action().is_some() {}
    assert_eq!(inbound(&mut core, &dialed, now(40)), []);
    // One we know only at an address another peer named is asked.
    let named = identity(5);
    named_in_an_answer(&mut core, &dialer, &[&named], now(40));
    assert!(!held(&core, &named).is_empty());
    while core.poll_action().is_some() {}
    assert_eq!(inbound(&mut core, &named, now(40)).len(), 1);
    // Off IP, the address a peer dialed from is where it listens, and is kept.
    let mut mem = Core::new(
        identity(6),
        CoreConfig::default(),
        CoreRng::deterministic(2),
    );
    edge_up(&mut mem, &dialer, false, &mem_addr("dialer"), t);
    assert_eq!(siblings_asked(&mut mem), []);
    assert_eq!(held(&mem, &dialer), [mem_addr("dialer")]);
}
