//! NAT: our reflexive address and NAT type, and timed punches.

use super::*;

/// Finding 7: the "sans-IO" core bound a UDP socket to decide whether a corroborated
/// reflexive address was on one of the host's own IPs. That is now a question the core asks
/// the host ([`Action::CheckOwnIp`]), once per newly confirmed address, and the answer is an
/// input ([`Core::on_own_ip`]).
#[test]
fn whether_an_ip_is_ours_is_an_input_not_a_socket_the_core_binds() {
    let me = identity(1);
    let seen = Addr::new("quic", "198.51.100.7:4242");
    let config = CoreConfig {
        ip: true,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    let t = now(1);
    let peers: Vec<Identity> = (2..7).map(identity).collect();
    for p in &peers {
        edge(&mut core, p, t);
    }
    let mut asked = Vec::new();
    for p in &peers {
        pong(&mut core, p, &seen, t);
        while let Some(a) = core.poll_action() {
            if let Action::CheckOwnIp { addr } = a {
                asked.push(addr);
            }
        }
    }
    assert_eq!(core.reflexive(), Some(&seen));
    assert_eq!(
        asked,
        vec![seen.clone()],
        "asked once, for the confirmed address"
    );
    // Unanswered, the address is not ours: offered for punches only.
    assert!(!core.coordinates().contains(&seen));
    assert_eq!(core.nat_type(), NatType::Cone);
    core.on_own_ip(&seen, true);
    assert!(core.coordinates().contains(&seen));
    assert_eq!(core.nat_type(), NatType::Public);
    // An answer about an address no longer (or never) confirmed changes nothing.
    core.on_own_ip(&Addr::new("quic", "198.51.100.8:4242"), false);
    assert_eq!(core.nat_type(), NatType::Public);
}

/// Behind a symmetric NAT, every peer on a relayed edge sees us at the relay's socket and
/// says so in its Pong. Taken as reports, a handful of them outvoted our direct neighbours:
/// the node named the relay's host as its own public host in birthday exchanges, every peer
/// found it disagreed with what its relays attested, and no birthday punch worked again
/// (the real-NAT lab, 15/20). A report over a relayed edge is not about us and is dropped,
/// and one taken before the edge was known to be relayed is forgotten.
#[test]
fn a_report_over_a_relayed_edge_does_not_move_our_public_host() {
    let me = identity(1);
    let config = CoreConfig {
        ip: true,
        subnets: true,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    let t = now(1);
    let pong = |seen: &str| {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        Addr::new("quic", seen).as_ref().encode(&mut w).unwrap();
        small_frame(FrameType::PONG, w.written())
    };
    // Three direct neighbours on three networks, each seeing another port of our NAT.
    for (i, p) in (2..5).map(identity).enumerate() {
        edge(&mut core, &p, t);
        let from = Addr::new("quic", format!("198.51.{i}.9:4242"));
        let mut frame = pong(&format!("203.0.113.7:{}", 40_000 + i));
        let _ = core.on_frame(t, p.node_id(), &from, &mut frame);
    }
    let ours = Some(Addr::new("quic", "203.0.113.7:0"));
    assert_eq!(core.public_host(), ours);
    assert_eq!(core.nat_type(), NatType::Symmetric);
    // Five peers reach us through one relay (192.0.2.1): each sees the relay's socket. One
    // reports before its edge is known to be relayed.
    let relayed: Vec<Identity> = (10..15).map(identity).collect();
    let relay_side = Addr::new("quic", "192.0.2.1:5000");
    for (i, p) in relayed.iter().enumerate() {
        edge(&mut core, p, t);
        if i == 0 {
            let mut frame = pong("192.0.2.1:6000");
            let _ = core.on_frame(t, p.node_id(), &relay_side, &mut frame);
        }
        core.set_edge_relayed(&p.node_id(), true);
    }
    let before = core.stats().dropped_relayed_reflexive;
    for (i, p) in relayed.iter().enumerate() {
        let mut frame = pong(&format!("192.0.2.1:{}", 6_000 + i));
        let _ = core.on_frame(t, p.node_id(), &relay_side, &mut frame);
    }
    assert_eq!(core.public_host(), ours, "the relay's host is not ours");
    assert_eq!(core.nat_type(), NatType::Symmetric);
    assert_eq!(core.stats().dropped_relayed_reflexive - before, 5);
    // Once punched (the edge no longer relayed), the peer's report counts again.
    core.set_edge_relayed(&relayed[0].node_id(), false);
    let mut frame = pong("203.0.113.7:41000");
    let _ = core.on_frame(
        t,
        relayed[0].node_id(),
        &Addr::new("quic", "198.51.9.9:4242"),
        &mut frame,
    );
    assert_eq!(core.stats().dropped_relayed_reflexive - before, 5);
    assert_eq!(core.public_host(), ours);
}

#[test]
fn a_timed_punch_waits_for_its_peers_sync_and_then_volleys_on_the_core_timer() {
    let me = identity(1);
    let (peer, stranger) = (identity(2), identity(3));
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(9));
    let t0 = now(10);
    edge(&mut core, &peer, t0);
    edge(&mut core, &stranger, t0);
    core.handle_timeout(t0);
    while core.poll_action().is_some() {}
    let tick = core.poll_timeout();
    let nonce = [7u8; 16];
    let there = mem_addr("peer-outside");
    let timed = nodenet_nat::FLAG_TIMED;
    let mut f = connect_frame(
        &peer,
        core.id(),
        nonce,
        timed,
        std::slice::from_ref(&there),
        t0,
    );
    let _ = core.on_frame(t0, peer.node_id(), &mem_addr("p"), &mut f);
    assert!(punches(&mut core).is_empty(), "held for the Sync");
    assert_eq!(
        core.poll_timeout(),
        t0.mono.after(crate::punch::SYNC_WAIT).min(tick)
    );

    // A Sync for that nonce from anyone but the peer releases nothing.
    let t1 = now(11);
    let sync = nodenet_nat::FLAG_SYNC;
    let mut f = connect_frame(&stranger, core.id(), nonce, sync, &[], t1);
    let _ = core.on_frame(t1, stranger.node_id(), &mem_addr("s"), &mut f);
    assert!(punches(&mut core).is_empty(), "a stranger's Sync");

    // The peer's Sync: the first volley at once, the next on the core's own deadline.
    let mut f = connect_frame(&peer, core.id(), nonce, sync, &[], t1);
    let _ = core.on_frame(t1, peer.node_id(), &mem_addr("p"), &mut f);
    assert_eq!(punches(&mut core), std::slice::from_ref(&there));
    let volley = ms_after(t1, 50);
    assert_eq!(core.poll_timeout(), volley.mono);
    core.handle_timeout(volley);
    assert_eq!(punches(&mut core), [there]);

    // The punched edge comes up (replacing the one we hold): the burst has done its work.
    core.on_edge_replaced(&peer.node_id(), false);
    assert_eq!(core.poll_timeout(), tick, "no volley is due any more");
    core.handle_timeout(ms_after(t1, 100));
    assert!(punches(&mut core).is_empty());
}

/// The NAT type the core reports (read by every answer it sends) is kept from the reports'
/// verdict, not tallied on each call: it must agree with a fresh tally after every change,
/// through unknown, cone, symmetric and public, as reporters come, change their word and go.
#[test]
fn the_kept_nat_type_agrees_with_a_fresh_tally_after_every_change() {
    let mut core = Core::new(
        identity(1),
        CoreConfig::default(),
        CoreRng::deterministic(1),
    );
    let t = now(1);
    let peers: Vec<Identity> = (2..12).map(identity).collect();
    for p in &peers {
        edge(&mut core, p, t);
    }
    let fresh = |core: &Core| {
        let own = core.confirmed.as_ref().is_some_and(|(_, own)| *own);
        core.reflexive.nat_type(|_| own)
    };
    let mut seen = HashSet::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..400u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let p = &peers[usize::try_from(rng % 10).unwrap()];
        match (rng >> 8) % 8 {
            // Withdrawn: the edge went down.
            0 => core.forget_reporter(&p.node_id()),
            // The host's word on whether the confirmed address is ours.
            1 => {
                if let Some((a, _)) = core.confirmed.clone() {
                    core.on_own_ip(&a, (rng >> 16) % 2 == 0);
                }
            }
            // Mostly one address (a cone), sometimes one of many (a symmetric NAT).
            k => {
                let port = if k < 5 { 4242 } else { 5000 + (rng >> 20) % 64 };
                pong(&mut core, p, &Addr::new("mem", format!("seen:{port}")), t);
            }
        }
        while core.poll_action().is_some() {}
        assert_eq!(core.nat_type(), fresh(&core), "after step {step}");
        seen.insert(core.nat_type());
    }
    assert!(
        [
            NatType::Unknown,
            NatType::Cone,
            NatType::Symmetric,
            NatType::Public
        ]
        .iter()
        .all(|k| seen.contains(k)),
        "{seen:?}"
    );
}
