//! Near-miss lookups: their bounds, and the dials their answers make.

use super::*;

/// A message for a NodeId we know no address for, that finds us its local optimum, makes us
/// look that NodeId up (our table is thin around it): a rendezvous Hello, the case it is for.
/// Bounded whatever arrives: one per `NEAR_MISS_GAP` in all; the node that signed a message
/// that set one off sets off no other for `NEAR_MISS_QUIET`, through any edge;
/// only for a message whose signature holds (a forged one is dropped where it is found),
/// checked once; never sent first to the sender; not for a Lookup, an answer retracing its
/// request, or a target known with an address.
#[test]
fn a_near_miss_looks_the_target_up_within_its_bounds() {
    let me = identity(1);
    let (target, far) = near_target_far_edges(&me, 6);
    let (origin, signer) = (identity(20_000), identity(20_002));
    let mut core = Core::new(me.clone(), CoreConfig::default(), CoreRng::deterministic(1));
    let t0 = now(100);
    for e in &far {
        edge(&mut core, e, t0);
    }
    while core.poll_action().is_some() {}
    let mut far = far;
    far.sort_by_key(|e| e.node_id().distance(&target));
    let at = |ms: u64| Now {
        mono: t0.mono.after(Duration::from_millis(ms)),
        unix_ns: t0.unix_ns + i64::try_from(ms).unwrap() * 1_000_000,
    };
    // Other points next to us that nobody holds (we stay their local optimum).
    let near = |k: u8| NodeId::from_bytes(me.node_id().to_bytes().map(|b| b ^ k));
    let route = |by: &Identity, to: NodeId, when: Now, tag: u8| {
        routed(
            by,
            by.ed_public(),
            FrameType::ROUTE,
            to,
            MAX_HOPS,
            when,
            &[tag; 4],
        )
    };
    // Lookups queued: (hop, target) pairs.
    let lookups = |core: &mut Core| {
        let mut out = Vec::new();
        while let Some(a) = core.poll_action() {
            if let Action::Send { to, frame } = a {
                let (f, _) = Frame::parse(&frame).unwrap();
                if f.frame_type() == FrameType::LOOKUP {
                    out.push((to, MsgRef::parse(f.payload()).unwrap().target));
                }
            }
        }
        out
    };
    let on = |core: &mut Core, from: &Identity, frame: &mut Vec<u8>, when: Now| {
        core.on_frame(when, from.node_id(), &mem_addr("from"), frame)
    };
    let checks = |core: &Core| core.stats().signatures_checked;

    // A Hello ends its greedy path here, passed on by our edge closest to its target:
    // detoured, and its target looked up through our three closest edges but the sender;
    // its signature checked once (for its breadcrumb).
    let hello =
        nodenet_rendezvous::encode_hello(&origin, &target, &[], &[7; RDV_NONCE_LEN]).unwrap();
    let mut frame = routed(
        &origin,
        origin.ed_public(),
        FrameType::HELLO,
        target,
        MAX_HOPS,
        at(0),
        &hello,
    );
    let c = checks(&core);
    let h = on(&mut core, &far[0], &mut frame, at(0));
    assert!(first_hop(&h).is_some(), "still detoured: {h:?}");
    assert_eq!(checks(&core) - c, 1);
    let sent = lookups(&mut core);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter()
            .all(|(hop, t)| *t == target && *hop != far[0].node_id())
    );
    assert_eq!(core.stats().near_miss_lookups, 1);

    // Within the gap, another edge and signer: nothing (and no signature checked for it).
    let c = checks(&core);
    let _ = on(
        &mut core,
        &far[1],
        &mut route(&signer, near(2), at(4_999), 1),
        at(4_999),
    );
    assert!(lookups(&mut core).is_empty());
    assert_eq!(checks(&core), c);
    // Past the gap, signed by the Hello's signer, through another edge: quiet.
    let _ = on(
        &mut core,
        &far[1],
        &mut route(&origin, near(2), at(5_000), 3),
        at(5_000),
    );
    assert!(lookups(&mut core).is_empty());
    // A forged message is dropped where it is found, and takes no slot.
    let forger = identity(20_001);
    let bad = core.stats().dropped_bad_sig;
    let mut forged = routed(
        &forger,
        signer.ed_public(),
        FrameType::ROUTE,
        near(2),
        MAX_HOPS,
        at(5_000),
        &[4; 4],
    );
    let h = on(&mut core, &far[1], &mut forged, at(5_000));
    assert!(first_hop(&h).is_none(), "a forged message went on: {h:?}");
    assert_eq!(core.stats().dropped_bad_sig, bad + 1);
    assert!(lookups(&mut core).is_empty());
    // A Lookup at its local optimum is answered, not looked up.
    let mut lookup = routed(
        &signer,
        signer.ed_public(),
        FrameType::LOOKUP,
        near(2),
        MAX_HOPS,
        at(5_000),
        &[5; NONCE_LEN],
    );
    let _ = on(&mut core, &far[1], &mut lookup, at(5_000));
    assert!(lookups(&mut core).iter().all(|(_, t)| *t != near(2)));
    // A target known with an address is not looked up (our dials reach it)...
    let known = (30_000..40_000)
        .map(identity)
        .find(|k| {
            let d = me.node_id().distance(&k.node_id());
            far.iter().all(|e| e.node_id().distance(&k.node_id()) > d)
        })
        .unwrap();
    let mut contact = Contact::new(known.node_id(), vec![mem_addr("known")]);
    contact.ed_pub = Some(known.ed_public());
    core.observe(&contact, at(5_000));
    let _ = on(
        &mut core,
        &far[1],
        &mut route(&signer, known.node_id(), at(5_000), 6),
        at(5_000),
    );
    assert!(lookups(&mut core).is_empty());
    assert_eq!(core.stats().near_miss_lookups, 1);
    // ...but one known without an address is (nothing could dial it); a Route's signature
    // is checked for it, once.
    core.observe(&Contact::new(near(2), Vec::new()), at(5_000));
    assert!(core.knowledge.get(&near(2)).is_some());
    let c = checks(&core);
    let _ = on(
        &mut core,
        &far[1],
        &mut route(&signer, near(2), at(5_000), 7),
        at(5_000),
    );
    assert_eq!(checks(&core) - c, 1);
    let sent = lookups(&mut core);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.iter().all(|(_, t)| *t == near(2)));
    assert_eq!(core.stats().near_miss_lookups, 2);

    // An answer retracing its request's breadcrumb through here is not looked up, although
    // we are the local optimum of its asker. The request: a Lookup from the asker, in
    // through far[2], passed on to far[5].
    let asker = (40_000..50_000)
        .map(identity)
        .find(|k| {
            let d = me.node_id().distance(&k.node_id());
            far.iter().all(|e| e.node_id().distance(&k.node_id()) > d)
        })
        .unwrap();
    let nonce = [8; NONCE_LEN];
    let when = at(20_000);
    let mut request = routed(
        &asker,
        asker.ed_public(),
        FrameType::LOOKUP,
        far[5].node_id(),
        MAX_HOPS,
        when,
        &nonce,
    );
    let h = on(&mut core, &far[2], &mut request, when);
    assert_eq!(first_hop(&h), Some(far[5].node_id()));
    let mut answer = neighbors(&far[5], asker.node_id(), nonce, MAX_HOPS, when);
    let h = on(&mut core, &far[5], &mut answer, when);
    assert_eq!(
        first_hop(&h),
        Some(far[2].node_id()),
        "back along the breadcrumb"
    );
    assert!(lookups(&mut core).is_empty());
    assert_eq!(core.stats().near_miss_lookups, 2);

    // The quiet ends: 60 s on, the first signer sets one off again, through the same edge
    // (an edge is never made quiet: many honest senders come through one).
    let _ = on(
        &mut core,
        &far[0],
        &mut route(&origin, near(3), at(70_000), 9),
        at(70_000),
    );
    assert_eq!(lookups(&mut core).len(), 3);
    assert_eq!(core.stats().near_miss_lookups, 3);

    // A detour's next hop: the edge that passed the message on is closer to its target than
    // we are (it was the local optimum, and looked it up itself), so we do not.
    let (closer, point) = (50_000..60_000)
        .map(identity)
        .map(|k| {
            let p = NodeId::from_bytes(k.node_id().to_bytes().map(|b| b ^ 0x01));
            (k, p)
        })
        .find(|(_, p)| {
            let d = me.node_id().distance(p);
            far.iter().all(|e| e.node_id().distance(p) > d)
        })
        .unwrap();
    assert!(closer.node_id().distance(&point) < me.node_id().distance(&point));
    edge(&mut core, &closer, at(80_000));
    while core.poll_action().is_some() {}
    let fresh = identity(20_003);
    let _ = on(
        &mut core,
        &closer,
        &mut route(&fresh, point, at(80_000), 10),
        at(80_000),
    );
    assert!(lookups(&mut core).is_empty());
    assert_eq!(core.stats().near_miss_lookups, 3);
}
