//! Routed frames: breadcrumbs, detours, lookups at their local optimum, signature checks.

use super::*;

/// Finding 5: an edge peer forges a Lookup under a victim's key, to plant a breadcrumb that
/// draws the victim's answers to itself. The forged request must plant nothing (and go no
/// further), and the victim's answer must go to the victim.
#[test]
fn a_forged_request_plants_no_breadcrumb() {
    let (me, forger, answerer, victim) = (identity(1), identity(2), identity(3), identity(4));
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    for p in [&forger, &answerer, &victim] {
        edge(&mut core, p, t);
    }
    let nonce = [0x42; NONCE_LEN];
    // In the victim's name, toward the answerer: the forger cannot sign as the victim.
    let mut forged = routed(
        &forger,
        victim.ed_public(),
        FrameType::LOOKUP,
        answerer.node_id(),
        MAX_HOPS,
        t,
        &nonce,
    );
    let from = mem_addr("forger");
    let before = core.stats().dropped_bad_sig;
    let h = core.on_frame(t, forger.node_id(), &from, &mut forged);
    assert!(first_hop(&h).is_none(), "a forged request was forwarded");
    assert_eq!(core.stats().dropped_bad_sig, before + 1);

    // The answer to the victim's nonce arrives: it goes to the victim, not the forger.
    let mut answer = neighbors(&answerer, victim.node_id(), nonce, MAX_HOPS, t);
    let h = core.on_frame(t, answerer.node_id(), &mem_addr("answerer"), &mut answer);
    assert_eq!(first_hop(&h), Some(victim.node_id()));
}

/// Finding 5, the TTL: an answer that retraces a breadcrumb is forwarded with the clamped
/// TTL, never the raw wire byte (up to 255), so it cannot outlive the hop limit.
#[test]
fn a_breadcrumb_forward_clamps_the_ttl() {
    let me = identity(1);
    let (via, answerer) = (identity(2), identity(3));
    // An originator we hold no edge to, nearer us than `via`: greedy routing has nowhere to
    // send its answer (a local optimum), so only the breadcrumb forwards it.
    let origin = (100..10_000)
        .map(identity)
        .find(|o| {
            let o = o.node_id();
            o.distance(&me.node_id()) < o.distance(&via.node_id())
        })
        .unwrap();
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    edge(&mut core, &via, t);
    edge(&mut core, &answerer, t);
    let nonce = [0x17; NONCE_LEN];
    let mut lookup = routed(
        &origin,
        origin.ed_public(),
        FrameType::LOOKUP,
        answerer.node_id(),
        MAX_HOPS,
        t,
        &nonce,
    );
    let h = core.on_frame(t, via.node_id(), &mem_addr("via"), &mut lookup);
    assert_eq!(first_hop(&h), Some(answerer.node_id()));

    let mut answer = neighbors(&answerer, origin.node_id(), nonce, u8::MAX, t);
    let h = core.on_frame(t, answerer.node_id(), &mem_addr("answerer"), &mut answer);
    assert_eq!(
        first_hop(&h),
        Some(via.node_id()),
        "the breadcrumb was not followed"
    );
    let (f, _) = Frame::parse(&answer).unwrap();
    let ttl = MsgRef::parse(f.payload()).unwrap().ttl;
    assert!(
        ttl < MAX_HOPS,
        "forwarded with TTL {ttl}, above the hop limit"
    );
}

/// Finding 7: `delivered` counted a payload when the core handed it to the driver, and the
/// driver took it back (`saturating_sub`) when the application's queue was full: a monotonic
/// counter that went down, and a window in which a dropped payload read as delivered. Now the
/// core counts nothing until the driver says what became of it.
#[test]
fn delivered_counts_only_what_the_application_took_and_never_goes_down() {
    let (me, peer) = (identity(1), identity(2));
    let mut core = Core::new(me.clone(), CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    edge(&mut core, &peer, t);
    let from = mem_addr("peer");
    let mut last = core.stats();
    for (i, handed) in [false, true, false, true].into_iter().enumerate() {
        let payload = [u8::try_from(i).unwrap(); 8];
        let mut frame = routed(
            &peer,
            peer.ed_public(),
            FrameType::ROUTE,
            me.node_id(),
            8,
            t,
            &payload,
        );
        let h = core.on_frame(t, peer.node_id(), &from, &mut frame);
        assert!(matches!(h, Handled::Deliver(_)), "{h:?}");
        // Handed over but not yet taken: not delivered.
        assert_eq!(core.stats().delivered, last.delivered);
        core.count_delivery(handed);
        let s = core.stats();
        assert!(
            s.delivered >= last.delivered && s.dropped_deliver_full >= last.dropped_deliver_full
        );
        last = s;
    }
    assert_eq!((last.delivered, last.dropped_deliver_full), (2, 2));
}

/// Review of finding 5: a genuine, signed request can be replayed within its freshness
/// window. An edge peer that saw one pass resends it over its own edge; it must not take
/// over the breadcrumb, or the answers would go to it first (and it could drop them).
#[test]
fn a_replayed_request_does_not_move_the_breadcrumb() {
    let me = identity(1);
    let (via, replayer, answerer, origin) = (identity(2), identity(3), identity(4), identity(5));
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    for p in [&via, &replayer, &answerer] {
        edge(&mut core, p, t);
    }
    let nonce = [0x17; NONCE_LEN];
    let request = routed(
        &origin,
        origin.ed_public(),
        FrameType::LOOKUP,
        answerer.node_id(),
        MAX_HOPS,
        t,
        &nonce,
    );
    let mut first = request.clone();
    let _ = core.on_frame(t, via.node_id(), &mem_addr("via"), &mut first);
    let mut replay = request;
    let _ = core.on_frame(t, replayer.node_id(), &mem_addr("replayer"), &mut replay);
    let mut answer = neighbors(&answerer, origin.node_id(), nonce, MAX_HOPS, t);
    let h = core.on_frame(t, answerer.node_id(), &mem_addr("answerer"), &mut answer);
    assert_eq!(
        first_hop(&h),
        Some(via.node_id()),
        "the answer follows the first copy's crumb"
    );
}

/// A routed message that reaches a node closer to its target than every edge of that node
/// (a local optimum that is not the target: behind NAT, a node with few edges often is)
/// goes on to the node's closest other edge, never back to where it came from or to its
/// originator, while its TTL lasts; a lookup is still answered there.
#[test]
fn a_local_optimum_detours_a_message_while_its_ttl_lasts() {
    let me = identity(1);
    let (target, far) = near_target_far_edges(&me, 3);
    let origin = identity(20_000);
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    for e in &far {
        edge(&mut core, e, t);
    }
    let from = far[0].node_id();
    let mut others: Vec<NodeId> = far[1..].iter().map(Identity::node_id).collect();
    others.sort_by_key(|id| id.distance(&target));
    let mut msg = routed(
        &origin,
        origin.ed_public(),
        FrameType::ROUTE,
        target,
        MAX_HOPS,
        t,
        b"x",
    );
    let h = core.on_frame(t, from, &mem_addr("from"), &mut msg);
    assert_eq!(
        first_hop(&h),
        Some(others[0]),
        "the closest edge but the sender"
    );
    let (f, _) = Frame::parse(&msg).unwrap();
    assert_eq!(MsgRef::parse(f.payload()).unwrap().ttl, DETOUR_TTL);
    // On its last hop, it stops here.
    let mut last = routed(
        &origin,
        origin.ed_public(),
        FrameType::ROUTE,
        target,
        1,
        t,
        b"y",
    );
    let h = core.on_frame(t, from, &mem_addr("from"), &mut last);
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().dropped_local_optimum, 1);
    // A lookup's local optimum answers it.
    let mut lookup = routed(
        &origin,
        origin.ed_public(),
        FrameType::LOOKUP,
        target,
        MAX_HOPS,
        t,
        &[0x42; NONCE_LEN],
    );
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup);
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, 1);
}

/// A core on IP with an edge to each of `edges`, every one of which reports that it sees
/// us at `seen` (the core's NAT verdict then waits on `on_own_ip`).
fn seen_by_its_edges(me: Identity, edges: &[Identity], seen: &Addr, t: Now) -> Core {
    let config = CoreConfig {
        ip: true,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    for p in edges {
        edge(&mut core, p, t);
        pong(&mut core, p, seen, t);
        while core.poll_action().is_some() {}
    }
    core
}

/// Behind a NAT, a node at a lookup's local optimum passes the lookup on (while its TTL
/// lasts) instead of answering it: its view of its neighbourhood is the thinnest in the
/// network (it holds edges only to the public nodes it dialed), and its answers kept its
/// neighbours from ever learning of each other. A public node answers.
#[test]
fn behind_a_nat_a_local_optimum_passes_a_lookup_on() {
    let me = identity(1);
    let (target, far) = near_target_far_edges(&me, 5);
    let t = now(1);
    let seen = Addr::new("quic", "198.51.100.7:4242");
    let mut core = seen_by_its_edges(me, &far, &seen, t);
    let origin = identity(20_000);
    let lookup = |nonce: u8| {
        routed(
            &origin,
            origin.ed_public(),
            FrameType::LOOKUP,
            target,
            MAX_HOPS,
            t,
            &[nonce; NONCE_LEN],
        )
    };
    let from = far[0].node_id();
    // Public (the host says the reflexive address is its own): answered here.
    core.on_own_ip(&seen, true);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup(1));
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, 1);
    // Behind NAT: passed on, not answered.
    core.on_own_ip(&seen, false);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup(2));
    assert!(first_hop(&h).is_some_and(|n| n != from));
    assert_eq!(core.stats().lookups_answered, 1);
}

/// Behind a NAT, a local optimum answers a node's lookup of itself, and passes it on too:
/// the asker is its neighbour, and the public nodes it dialed are often ones the asker has
/// not met (at 10,000 simulated nodes joining at once, 104 public nodes had not met their
/// closest public node after 300 s). Another node's lookup of the same id is only passed
/// on, as before.
#[test]
fn behind_a_nat_a_local_optimum_answers_a_self_lookup_and_passes_it_on() {
    let me = identity(1);
    let my_id = me.node_id();
    let asker = identity(20_000);
    let target = asker.node_id();
    let far: Vec<Identity> = (100..10_000)
        .map(identity)
        .filter(|e| e.node_id().distance(&target) > my_id.distance(&target))
        .take(5)
        .collect();
    assert_eq!(far.len(), 5);
    let t = now(1);
    let seen = Addr::new("quic", "198.51.100.7:4242");
    let mut core = seen_by_its_edges(me, &far, &seen, t);
    core.on_own_ip(&seen, false);
    while core.poll_action().is_some() {}
    let from = far[0].node_id();
    let answers_to = |core: &mut Core| {
        std::iter::from_fn(|| core.poll_action())
            .filter(|a| match a {
                Action::SendAny { frame, .. } | Action::Send { frame, .. } => {
                    Frame::parse(frame).unwrap().0.frame_type() == FrameType::NEIGHBORS
                }
                _ => false,
            })
            .count()
    };
    let mut own = routed(
        &asker,
        asker.ed_public(),
        FrameType::LOOKUP,
        target,
        MAX_HOPS,
        t,
        &[1; NONCE_LEN],
    );
    let h = core.on_frame(t, from, &mem_addr("from"), &mut own);
    assert!(first_hop(&h).is_some_and(|n| n != from && n != target));
    assert_eq!(core.stats().lookups_answered, 1);
    assert_eq!(answers_to(&mut core), 1);
    // Someone else's lookup of the asker: passed on, not answered.
    let other = identity(20_001);
    let mut theirs = routed(
        &other,
        other.ed_public(),
        FrameType::LOOKUP,
        target,
        MAX_HOPS,
        t,
        &[2; NONCE_LEN],
    );
    let h = core.on_frame(t, from, &mem_addr("from"), &mut theirs);
    assert!(first_hop(&h).is_some());
    assert_eq!(core.stats().lookups_answered, 1);
    assert_eq!(answers_to(&mut core), 0);
}

/// A public node at a lookup's local optimum that knows the lookup's target as a node answers
/// the lookup and also passes it on to its closest other edge (at most `DETOUR_TTL` hops
/// left), so the target can answer it itself (a relay lookup counts only the target's word:
/// at 2,000 simulated nodes, every relay step that failed had its lookup answered one hop
/// short by such a node). A lookup of a point nobody holds, a node's lookup of itself and a
/// lookup on its last hop are only answered.
#[test]
fn a_local_optimum_passes_on_a_lookup_of_a_node_it_knows() {
    let target = identity(7);
    let tid = target.node_id();
    let mut pool: Vec<Identity> = (100..400).map(identity).collect();
    pool.sort_by_key(|i| i.node_id().distance(&tid));
    let me = pool.remove(0);
    let far: Vec<Identity> = pool.into_iter().rev().take(3).collect();
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    for e in &far {
        edge(&mut core, e, t);
    }
    // The sender is our edge closest to the target: the lookup must not go back to it.
    let mut by_distance: Vec<NodeId> = far.iter().map(Identity::node_id).collect();
    by_distance.sort_by_key(|id| id.distance(&tid));
    let from = by_distance[0];
    let origin = identity(20_000);
    let lookup = |by: &Identity, ttl: u8, nonce: u8| {
        routed(
            by,
            by.ed_public(),
            FrameType::LOOKUP,
            tid,
            ttl,
            t,
            &[nonce; NONCE_LEN],
        )
    };
    // Not yet known: a point in the keyspace as far as we can tell, answered here.
    let h = core.on_frame(
        t,
        from,
        &mem_addr("from"),
        &mut lookup(&origin, MAX_HOPS, 1),
    );
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, 1);
    core.learn(t, tid, target.ed_public());
    assert!(core.knowledge.get(&tid).is_some());
    // Known: answered, and passed on to the closest edge but the sender.
    while core.poll_action().is_some() {}
    let mut passed = lookup(&origin, MAX_HOPS, 2);
    let checked = core.stats().signatures_checked;
    let h = core.on_frame(t, from, &mem_addr("from"), &mut passed);
    assert_eq!(first_hop(&h), Some(by_distance[1]), "{h:?}");
    // Checked once, for the breadcrumb, not again to answer it.
    assert_eq!(core.stats().signatures_checked - checked, 1);
    let (f, _) = Frame::parse(&passed).unwrap();
    assert_eq!(MsgRef::parse(f.payload()).unwrap().ttl, DETOUR_TTL);
    assert_eq!(core.stats().lookups_answered, 2);
    let answers = std::iter::from_fn(|| core.poll_action())
        .filter(|a| {
            matches!(a, Action::Send { frame, .. } | Action::SendAny { frame, .. }
                if Frame::parse(frame).unwrap().0.frame_type() == FrameType::NEIGHBORS)
        })
        .count();
    assert_eq!(answers, 1, "the asker has our answer too");
    // The same Lookup again (another copy, or one come back around): neither.
    let h = core.on_frame(
        t,
        from,
        &mem_addr("from"),
        &mut lookup(&origin, MAX_HOPS, 2),
    );
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, 2);
    // Past the per-originator limit (burst 32): neither answered nor passed on.
    let flooder = identity(20_002);
    let (mut answered, mut passed_on) = (0, 0);
    for n in 0..40u8 {
        let before = core.stats().lookups_answered;
        let h = core.on_frame(
            t,
            from,
            &mem_addr("from"),
            &mut lookup(&flooder, MAX_HOPS, 100 + n),
        );
        answered += core.stats().lookups_answered - before;
        passed_on += u64::from(first_hop(&h).is_some());
    }
    assert_eq!(answered, 32, "the limiter's burst");
    assert_eq!(passed_on, answered, "passed on only when answered");
    let answered_so_far = core.stats().lookups_answered;
    // The target's lookup of itself, and a lookup on its last hop: answered.
    let h = core.on_frame(
        t,
        from,
        &mem_addr("from"),
        &mut lookup(&target, MAX_HOPS, 3),
    );
    assert_eq!(first_hop(&h), None);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup(&origin, 1, 4));
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, answered_so_far + 2);
}

/// A signature costs one check per node: a request (Lookup, Hello, Connect) is checked at
/// each hop before its breadcrumb is planted, and where it ends (answered at its local
/// optimum, or answered and passed on: see `a_local_optimum_passes_on_a_lookup_of_a_node_it_knows`)
/// that check stands; it is not done a second time. A
/// forged request is still dropped at its first check, and a frame without a breadcrumb
/// (Route) is checked where it ends.
#[test]
fn a_signature_is_checked_once_per_node() {
    let me = identity(1);
    let (target, far) = near_target_far_edges(&me, 3);
    let origin = identity(20_000);
    let mut core = Core::new(me.clone(), CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    for e in &far {
        edge(&mut core, e, t);
    }
    let from = far[0].node_id();
    let checked = |core: &Core| core.stats().signatures_checked;
    let lookup = |signer: &Identity, ttl: u8, nonce: u8| {
        routed(
            signer,
            origin.ed_public(),
            FrameType::LOOKUP,
            target,
            ttl,
            t,
            &[nonce; NONCE_LEN],
        )
    };

    // Answered at its local optimum (last hop): one check.
    let before = checked(&core);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup(&origin, 1, 1));
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, 1);
    assert_eq!(checked(&core) - before, 1);

    // Passed on (a hop on the way): one check, for its breadcrumb.
    let mut passing = routed(
        &origin,
        origin.ed_public(),
        FrameType::LOOKUP,
        far[2].node_id(),
        MAX_HOPS,
        t,
        &[2; NONCE_LEN],
    );
    let before = checked(&core);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut passing);
    assert_eq!(first_hop(&h), Some(far[2].node_id()));
    assert_eq!(checked(&core) - before, 1);

    // Forged in the origin's name, ending here: dropped at its one check, not answered.
    let before = (checked(&core), core.stats().dropped_bad_sig);
    let answered = core.stats().lookups_answered;
    let forger = identity(20_001);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut lookup(&forger, 1, 3));
    assert_eq!(first_hop(&h), None);
    assert_eq!(core.stats().lookups_answered, answered);
    assert_eq!(checked(&core) - before.0, 1);
    assert_eq!(core.stats().dropped_bad_sig - before.1, 1);

    // A Route for us (no breadcrumb) is checked where it ends, once, and delivered.
    let mut route = routed(
        &origin,
        origin.ed_public(),
        FrameType::ROUTE,
        me.node_id(),
        MAX_HOPS,
        t,
        b"hi",
    );
    let before = checked(&core);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut route);
    assert!(matches!(h, Handled::Deliver(_)), "{h:?}");
    assert_eq!(checked(&core) - before, 1);

    // A forged answer for us (it plants no breadcrumb, so nothing checked it on the way) is
    // checked where it ends, once, and dropped.
    let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&[])];
    control::encode_neighbors(&mut Writer::new(&mut payload), &[9; NONCE_LEN], &[]).unwrap();
    let mut answer = routed(
        &forger,
        origin.ed_public(),
        FrameType::NEIGHBORS,
        me.node_id(),
        MAX_HOPS,
        t,
        &payload,
    );
    let before = (checked(&core), core.stats().dropped_bad_sig);
    let _ = core.on_frame(t, from, &mem_addr("from"), &mut answer);
    assert_eq!(checked(&core) - before.0, 1);
    assert_eq!(core.stats().dropped_bad_sig - before.1, 1);

    // A forged Route for us is checked once and not delivered.
    let mut forged = routed(
        &forger,
        origin.ed_public(),
        FrameType::ROUTE,
        me.node_id(),
        MAX_HOPS,
        t,
        b"no",
    );
    let before = checked(&core);
    let h = core.on_frame(t, from, &mem_addr("from"), &mut forged);
    assert!(!matches!(h, Handled::Deliver(_)), "{h:?}");
    assert_eq!(checked(&core) - before, 1);
}
