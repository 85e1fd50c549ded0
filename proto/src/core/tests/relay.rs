//! Relays: sessions, binds and grants.

use super::*;

#[test]
fn a_relay_bind_punches_only_toward_the_relays_own_host() {
    let me = identity(1);
    let relay = identity(2);
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(9));
    let t0 = now(10);
    edge(&mut core, &relay, t0);
    let relay_at = mem_addr("relayhost:7000");
    let bind = |addr: &str| {
        let addr = Addr::new("mem", addr);
        let b = nodenet_nat::RelayBind {
            addr: addr.as_ref(),
            attest: None,
        };
        small_frame(FrameType::RELAY_BIND, &b.encode().unwrap())
    };
    // Toward a bystander: refused, nothing punched.
    let mut f = bind("victim:80");
    let _ = core.on_frame(t0, relay.node_id(), &relay_at, &mut f);
    assert!(punches(&mut core).is_empty());
    assert_eq!(core.stats().relay_binds_refused, 1);
    // On the relay's host: a burst.
    let mut f = bind("relayhost:7001");
    let _ = core.on_frame(now(11), relay.node_id(), &relay_at, &mut f);
    assert_eq!(punches(&mut core), [mem_addr("relayhost:7001")]);
    // The bind is the relay's: the caller's connection from that address is relayed by it.
    let caller = identity(3).node_id();
    let from = mem_addr("relayhost:7001");
    let link = crate::links::LinkId(1);
    let carrier = core.links_mut().inbound(now(11).mono, link, &caller, &from);
    assert_eq!(carrier, Some(relay.node_id()));
    let sent: usize = (1..10)
        .map(|k| {
            core.handle_timeout(ms_after(now(11), 50 * k));
            punches(&mut core).len()
        })
        .sum();
    assert_eq!(sent, usize::from(crate::punch::PUNCH_VOLLEYS) - 1);
}

/// A relay session the transport opened is answered by the core: the bind to the target
/// (first, so it punches before the caller dials), then the grant to the caller. A side
/// bound on a wildcard IP is named at the IP we advertise, and each frame vouches for the
/// other peer's host (port 0) only where a direct edge of ours was seen.
#[test]
fn a_relay_session_is_answered_with_a_bind_and_a_grant() {
    let config = CoreConfig {
        advertise: vec![Addr::new("quic", "203.0.113.5:4242")],
        ..CoreConfig::default()
    };
    let mut core = Core::new(identity(1), config, CoreRng::deterministic(1));
    let (caller, target) = (identity(2).node_id(), identity(3).node_id());
    core.relay_opened(RelayOpened {
        caller,
        nonce: [9; nodenet_nat::NONCE_LEN],
        target,
        caller_side: Addr::new("quic", "0.0.0.0:5000"),
        callee_side: Addr::new("quic", "203.0.113.5:5001"),
        caller_seen: None,
        target_seen: Some(Addr::new("quic", "198.51.100.7:61000")),
    });
    let sends: Vec<(NodeId, Vec<u8>)> = std::iter::from_fn(|| core.poll_action())
        .filter_map(|a| match a {
            Action::Send { to, frame } => Some((to, frame)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 2, "a bind and a grant");
    let (f, _) = Frame::parse(&sends[0].1).unwrap();
    assert_eq!(
        (sends[0].0, f.frame_type()),
        (target, FrameType::RELAY_BIND)
    );
    let bind = nodenet_nat::RelayBind::decode(f.payload()).unwrap();
    assert_eq!(bind.addr.endpoint, "203.0.113.5:5001");
    assert!(
        bind.attest.is_none(),
        "no direct edge to the caller was seen"
    );
    let (f, _) = Frame::parse(&sends[1].1).unwrap();
    assert_eq!(
        (sends[1].0, f.frame_type()),
        (caller, FrameType::RELAY_GRANT)
    );
    let grant = nodenet_nat::RelayGrant::decode(f.payload()).unwrap();
    assert_eq!(grant.nonce, [9; nodenet_nat::NONCE_LEN]);
    assert_eq!(
        grant.addr.endpoint, "203.0.113.5:5000",
        "the wildcard side, named"
    );
    let attest = grant.attest.unwrap();
    assert_eq!(attest.peer, target);
    assert_eq!(attest.host.endpoint, "198.51.100.7:0");
    assert_eq!(core.stats().relays_granted, 1);
}

/// A relay grant names the address our next dial goes to, so only the relay we asked may
/// answer, once, and only while the ask lives: a grant from any other edge, under a nonce we
/// never sent, a second time, or after the ask timed out, is dropped in the core.
#[test]
fn a_grant_counts_only_from_the_relay_asked_once_and_in_time() {
    let (mut core, relay, target) = asker();
    let other = identity(3);
    let t0 = now(10);
    edge(&mut core, &other, t0);
    // Not an edge: nothing is asked.
    assert!(core.ask_relay(t0, identity(9).node_id(), target).is_none());
    let nonce = core.ask_relay(t0, relay.node_id(), target).unwrap();
    // The request went to the relay, under that nonce, for that target.
    let sent: Vec<_> = std::iter::from_fn(|| core.poll_action()).collect();
    let [Action::Send { to, frame }] = &sent[..] else {
        panic!("{sent:?}")
    };
    let (f, _) = Frame::parse(frame).unwrap();
    assert_eq!(
        (*to, f.frame_type()),
        (relay.node_id(), FrameType::RELAY_REQUEST)
    );
    let req = nodenet_nat::RelayRequest::decode(f.payload()).unwrap();
    assert_eq!((req.nonce, req.target), (nonce, target));
    // Another edge answering under our nonce, or anyone under a nonce we never sent.
    assert!(!granted(&mut core, &other, nonce, now(11)));
    assert!(!granted(
        &mut core,
        &relay,
        [7; nodenet_nat::NONCE_LEN],
        now(11)
    ));
    assert_eq!(core.stats().dropped_unsolicited_grant, 2);
    // The relay asked: once.
    assert!(granted(&mut core, &relay, nonce, now(11)));
    assert!(!granted(&mut core, &relay, nonce, now(11)));
    // Too late: the ask lapsed with the grant timeout (at its deadline already).
    let late = core.ask_relay(now(20), relay.node_id(), target).unwrap();
    let deadline = ms_after(
        now(20),
        u64::try_from(crate::connect::RELAY_GRANT_TIMEOUT.as_millis()).unwrap(),
    );
    assert!(!granted(&mut core, &relay, late, deadline));
    // Withdrawn by the driver (its caller gave up): gone at once.
    let withdrawn = core.ask_relay(now(30), relay.node_id(), target).unwrap();
    core.cancel_relay_ask(&withdrawn);
    assert!(!granted(&mut core, &relay, withdrawn, now(30)));
    assert_eq!(core.stats().dropped_unsolicited_grant, 5);
    assert_ne!(late, nonce, "each ask draws a fresh nonce");
}

/// However many asks are made and never answered, the table of open asks stays bounded: the
/// oldest goes first, and a fresh ask still counts.
#[test]
fn open_relay_asks_are_bounded() {
    let (mut core, relay, target) = asker();
    let t0 = now(10);
    let first = core.ask_relay(t0, relay.node_id(), target).unwrap();
    for _ in 0..10 * MAX_RELAY_ASKS {
        core.ask_relay(t0, relay.node_id(), target).unwrap();
    }
    assert_eq!(core.relay_asks.len(), MAX_RELAY_ASKS);
    let fresh = core.ask_relay(t0, relay.node_id(), target).unwrap();
    assert!(!granted(&mut core, &relay, first, now(11)));
    assert!(granted(&mut core, &relay, fresh, now(11)));
}

/// A core with one edge, a relay (at 10 s), and a target to ask it for.
fn asker() -> (Core, Identity, NodeId) {
    let relay = identity(2);
    let mut core = Core::new(
        identity(1),
        CoreConfig::default(),
        CoreRng::deterministic(5),
    );
    edge(&mut core, &relay, now(10));
    (core, relay, identity(4).node_id())
}

/// `from` sends `core` a RelayGrant under `nonce`: whether the core let it through.
fn granted(core: &mut Core, from: &Identity, nonce: [u8; nodenet_nat::NONCE_LEN], at: Now) -> bool {
    let addr = Addr::new("mem", "relayhost:7001");
    let g = nodenet_nat::RelayGrant {
        nonce,
        addr: addr.as_ref(),
        attest: None,
    };
    let mut f = small_frame(FrameType::RELAY_GRANT, &g.encode().unwrap());
    matches!(
        core.on_frame(at, from.node_id(), &mem_addr("x"), &mut f),
        Handled::RelayGranted { .. }
    )
}
