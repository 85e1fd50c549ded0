//! Maintenance: self-lookups, sibling upkeep, neighbourhood lookups, planted ids.

use super::*;

/// Finding 4: one Neighbors answer names contacts with as many addresses as the list allows
/// (256 in all). Maintenance must not turn that into hundreds of 10 s dials: addresses per
/// contact and dials in flight are capped, a contact that is no anchor gets the short
/// timeout, and what was cut is counted.
#[test]
fn a_neighbors_answer_cannot_fan_maintenance_dials_out() {
    let me = identity(1);
    let answerer = identity(2);
    let mut core = Core::new(me, CoreConfig::default(), CoreRng::deterministic(1));
    let t = now(1);
    edge(&mut core, &answerer, t);
    // Our lookup, so its answer is solicited.
    core.lookup(t, answerer.node_id());
    let nonce = lookup_nonces(&mut core)[0];
    // 12 contacts with 21 addresses each (252 of the list's 256), every other one claiming
    // to be a public anchor.
    let contacts: Vec<Contact> = (0..12u32)
        .map(|i| {
            let id = identity(1000 + i);
            let n = 21;
            Contact {
                id: id.node_id(),
                ed_pub: Some(id.ed_public()),
                x_pub: None,
                caps: if i % 2 == 1 {
                    Caps::PUBLIC_ANCHOR
                } else {
                    Caps::default()
                },
                addrs: (0..n).map(|p| mem_addr(&format!("c{i}:{p}"))).collect(),
            }
        })
        .collect();
    let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&contacts)];
    control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &contacts).unwrap();
    let mut answer = routed(
        &answerer,
        answerer.ed_public(),
        FrameType::NEIGHBORS,
        core.id(),
        MAX_HOPS,
        t,
        &payload,
    );
    let _ = core.on_frame(t, answerer.node_id(), &mem_addr("answerer"), &mut answer);
    assert!(core.knowledge().get(&contacts[0].id).is_some());
    // A node with one edge fills hard: every tick may start dials.
    let mut dials = Vec::new();
    for s in 0..4 {
        core.on_tick(now(2 + s));
        while let Some(a) = core.poll_action() {
            if let Action::Dial { contact, timeout } = a {
                dials.push((contact, timeout));
            }
        }
    }
    // No dial finished: at most the cap are in flight, and the rest were cut and counted.
    assert_eq!(dials.len(), MAX_DIALS_IN_FLIGHT, "dials in flight");
    assert!(
        core.stats().dials_cut >= (MAX_DIALS_IN_FLIGHT * (21 - MAX_DIAL_ADDRS)) as u64,
        "{:?}",
        core.stats()
    );
    for (c, timeout) in &dials {
        assert!(
            c.addrs.len() <= MAX_DIAL_ADDRS,
            "{} addresses dialed",
            c.addrs.len()
        );
        assert_eq!(
            *timeout, NON_ANCHOR_DIAL_TIMEOUT,
            "a non-anchor got the long timeout"
        );
    }
    let worst: Duration = dials
        .iter()
        .map(|(c, t)| *t * u32::try_from(c.addrs.len()).unwrap())
        .max()
        .unwrap();
    assert!(
        worst <= Duration::from_secs(5),
        "one dial may take {worst:?}"
    );
    assert!(core.stats().dials_cut > 0, "nothing cut was counted");
}

/// A self-lookup answered with a node closer to us than any we knew was followed by the
/// next only a whole period (60 s) later: at 10,000 simulated nodes behind the default NAT
/// mix, nodes did not know their own neighbourhood and 12% of routed messages were lost.
/// Now such an answer dials the closer node and looks us up again 5 s later, at most
/// `SELF_LOOKUP_FOLLOW_UPS` times in a row; an answer with nothing closer changes nothing.
#[test]
fn a_self_lookup_that_finds_a_closer_node_is_followed_up_soon() {
    let me = identity(1);
    let my_id = me.node_id();
    let mut pool: Vec<Identity> = (1000..1400).map(identity).collect();
    pool.sort_by_key(|i| i.node_id().distance(&my_id));
    // Our edges are the far end of the pool; the answers name ever closer nodes.
    // Silent edges stay up for the test's two minutes.
    let mut config = CoreConfig::default();
    config.maintenance.dead_sibling = Duration::from_secs(3600);
    config.maintenance.dead_finger = Duration::from_secs(3600);
    let mut core = Core::new(me, config, CoreRng::deterministic(3));
    let far: Vec<&Identity> = pool.iter().rev().take(4).collect();
    for p in &far {
        edge(&mut core, p, now(1));
    }
    let answer = |core: &mut Core, nonce, named: &Identity, t: Now| {
        let c = Contact {
            id: named.node_id(),
            ed_pub: Some(named.ed_public()),
            x_pub: None,
            caps: Caps::default(),
            addrs: vec![mem_addr(&named.node_id().short().to_string())],
        };
        let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(std::slice::from_ref(&c))];
        control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &[c]).unwrap();
        let mut frame = routed(
            far[0],
            far[0].ed_public(),
            FrameType::NEIGHBORS,
            my_id,
            MAX_HOPS,
            t,
            &payload,
        );
        let _ = core.on_frame(t, far[0].node_id(), &mem_addr("a"), &mut frame);
    };
    let self_lookup =
        |l: &[(NodeId, [u8; NONCE_LEN])]| l.iter().find(|(t, _)| *t == my_id).map(|(_, n)| *n);
    let mut t = 1;
    core.on_tick(now(t));
    let (l, _) = lookups_and_dials(&mut core);
    let mut nonce = self_lookup(&l).expect("the first self-lookup");
    // Each answer names a node closer than the last: dialed at once, and followed up.
    for step in 0..usize::from(SELF_LOOKUP_FOLLOW_UPS) {
        let closer = &pool[100 - 10 * step];
        answer(&mut core, nonce, closer, now(t));
        let (_, dials) = lookups_and_dials(&mut core);
        assert_eq!(
            dials,
            [closer.node_id()],
            "step {step}: the closer node dialed"
        );
        t += 5;
        core.on_tick(now(t));
        let (l, _) = lookups_and_dials(&mut core);
        nonce = self_lookup(&l).unwrap_or_else(|| panic!("step {step}: no follow-up"));
    }
    // The streak is spent: the next closer answer waits for the period.
    answer(&mut core, nonce, &pool[0], now(t));
    let _ = lookups_and_dials(&mut core);
    core.on_tick(now(t + 5));
    assert_eq!(
        self_lookup(&lookups_and_dials(&mut core).0),
        None,
        "streak bounded"
    );
    // A fresh period; an answer that names nothing closer than we know is not followed up.
    t += 61;
    core.on_tick(now(t));
    let nonce = self_lookup(&lookups_and_dials(&mut core).0).expect("periodic self-lookup");
    answer(&mut core, nonce, far[1], now(t));
    let (_, dials) = lookups_and_dials(&mut core);
    assert!(dials.is_empty());
    core.on_tick(now(t + 5));
    assert_eq!(
        self_lookup(&lookups_and_dials(&mut core).0),
        None,
        "nothing closer"
    );
}

/// The core names its next deadline: the maintenance tick, or a self-lookup follow-up due
/// before it, which then runs on its own (no maintenance with it) 5 s after its answer,
/// not at the next tick.
#[test]
fn the_core_names_its_next_deadline_and_a_follow_up_keeps_it() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    let mut config = CoreConfig::default();
    config.maintenance.tick = Duration::from_secs(30);
    let tick = config.maintenance.tick;
    let mut core = Core::new(me, config, CoreRng::deterministic(4));
    assert_eq!(core.poll_timeout(), Time(0), "a new core ticks at once");
    let far = &pool[399];
    edge(&mut core, far, now(1));
    core.handle_timeout(now(1));
    let next_tick = now(1).mono.after(tick);
    assert_eq!(core.poll_timeout(), next_tick);
    let self_lookup = |core: &mut Core| {
        let me = core.id();
        lookups_and_dials(core)
            .0
            .into_iter()
            .find(|(t, _)| *t == me)
            .map(|(_, n)| n)
    };
    let nonce = self_lookup(&mut core).expect("the first self-lookup, with the first tick");
    // Early: nothing runs.
    core.handle_timeout(now(2));
    assert!(core.poll_action().is_none());
    // An answer naming a closer node brings the deadline to 5 s after it.
    answer_naming(&mut core, far, nonce, &[&pool[0]], now(2));
    let _ = lookups_and_dials(&mut core);
    assert_eq!(core.poll_timeout(), now(7).mono);
    core.handle_timeout(now(7));
    let mut sent = Vec::new();
    while let Some(a) = core.poll_action() {
        sent.push(a);
    }
    assert!(
        sent.iter().all(|a| matches!(a, Action::Send { .. })),
        "a self-lookup and no maintenance: {sent:?}"
    );
    assert!(!sent.is_empty(), "the follow-up went out");
    assert_eq!(core.poll_timeout(), next_tick, "then the tick again");
    core.handle_timeout(Now {
        mono: next_tick,
        ..now(31)
    });
    assert_eq!(core.poll_timeout(), next_tick.after(tick));
}

/// At 10,000 simulated nodes behind the default NAT mix, neighbourhoods formed in two
/// halves that never learned of each other: every self-lookup started inside one half.
/// Now each also leaves through [`SELF_LOOKUP_OUTSIDERS`] edges from outside our
/// neighbourhood, drawn afresh each period.
#[test]
fn a_self_lookup_also_leaves_through_edges_outside_our_neighbourhood() {
    let me = identity(1);
    let my_id = me.node_id();
    let mut config = CoreConfig::default();
    config.maintenance.dead_sibling = Duration::from_secs(3600);
    config.maintenance.dead_finger = Duration::from_secs(3600);
    let mut core = Core::new(me, config, CoreRng::deterministic(5));
    let peers: Vec<Identity> = (2000..2012).map(identity).collect();
    for p in &peers {
        edge(&mut core, p, now(1));
    }
    let closest = first_hops(&core.edges, &my_id).hops().to_vec();
    assert_eq!(closest.len(), KMIN);
    let mut outsider_sets = HashSet::new();
    for period in 0..6u64 {
        core.on_tick(now(1 + period * 61));
        let hops = self_lookup_hops(&mut core);
        let distinct: HashSet<NodeId> = hops.iter().copied().collect();
        assert_eq!(hops.len(), distinct.len(), "no edge gets two copies");
        assert_eq!(hops.len(), KMIN + SELF_LOOKUP_OUTSIDERS, "period {period}");
        assert!(closest.iter().all(|c| distinct.contains(c)));
        let mut outsiders: Vec<NodeId> =
            hops.into_iter().filter(|h| !closest.contains(h)).collect();
        outsiders.sort();
        outsider_sets.insert(outsiders);
    }
    assert!(outsider_sets.len() > 1, "the outsiders are drawn afresh");
}

/// A node past the edge floor dialed nothing, so a neighbour it learned of later stayed
/// unconnected and messages for it ended at nodes holding no edge to it. Now a known node
/// closer to us than our `SIBLINGS`-th closest edge is dialed, one per tick, whatever the
/// floor says; nodes farther than that are not.
#[test]
fn a_node_closer_than_our_siblings_is_dialed_past_the_floor() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    // The floor is met with the far end of the pool, all but its farthest node.
    let mut core = core_past_the_floor(me, &pool, 9);
    // Our edges are not in our table (as peers that dialed us are not, until their own
    // gossip names an address): the table's closest contacts are then the named ones,
    // the outsider included, and only the bound keeps it from being dialed.
    for p in &pool[399 - TARGET_EDGES..399] {
        core.knowledge.remove(&p.node_id());
    }
    // A lookup's answer names two close nodes and one farther than all our edges.
    let (far, outsider) = (&pool[398], &pool[399]);
    named_in_an_answer(&mut core, far, &[&pool[0], &pool[1], outsider], now(2));
    assert!(core.knowledge.get(&outsider.node_id()).is_some());
    let (_, dials) = lookups_and_dials(&mut core);
    assert!(
        dials.is_empty(),
        "nothing dialed on the answer itself: {dials:?}"
    );
    let mut dialed = Vec::new();
    for t in 3..7 {
        core.on_tick(now(t));
        let (_, d) = lookups_and_dials(&mut core);
        assert!(d.len() <= 1, "one per tick");
        dialed.extend(d);
    }
    dialed.sort();
    let mut want = vec![pool[0].node_id(), pool[1].node_id()];
    want.sort();
    assert_eq!(
        dialed, want,
        "the two close nodes, once each; not the far one"
    );
}

/// A neighbourhood lookup aims at a random id a few bits out from our 16th closest known
/// node with an address, and leaves
/// through edges outside that region, so a clique around us cannot answer it for itself.
#[test]
fn a_neighbourhood_lookup_aims_near_us_and_leaves_through_outsiders() {
    let me = identity(1);
    let my_id = me.node_id();
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 31);
    core.config.maintenance.dead_sibling = Duration::from_secs(10 * 3600);
    core.config.maintenance.dead_finger = Duration::from_secs(10 * 3600);
    // Our closest nodes, learned from an answer: our siblings-to-be. Four of them are
    // edges too, inside the region, and so is one a bit farther out (in the deepest bucket
    // aimed at): never a way out.
    let mut near: Vec<Identity> = (10_000..30_000).map(identity).collect();
    near.sort_by_key(|i| i.node_id().distance(&my_id));
    near.truncate(SIBLINGS);
    named_in_an_answer(
        &mut core,
        &pool[398],
        &near.iter().collect::<Vec<_>>(),
        now(2),
    );
    while core.poll_action().is_some() {}
    for n in &near[..4] {
        edge(&mut core, n, now(2));
    }
    let d = my_id.bucket_index(&near[SIBLINGS - 1].node_id()).unwrap();
    assert!(d > usize::from(NEIGHBOURHOOD_SPAN), "a deep enough pool");
    let just_out = (40_000..60_000)
        .map(identity)
        .find(|i| my_id.bucket_index(&i.node_id()) == Some(d - 1))
        .unwrap();
    edge(&mut core, &just_out, now(2));
    // Made-up ids closer to us than all of these, named without a key (so without an
    // address, never dialed, never evicted), do not pull the aim in.
    plant_keyless_ids_next_to_ours(&mut core, &pool[398], now(2));
    while core.poll_action().is_some() {}
    let closest = core.knowledge.closest(&my_id, SIBLINGS);
    assert!(closest.iter().all(|c| c.addrs.is_empty()), "planted");
    let mut aimed = std::collections::BTreeSet::new();
    let mut ways_out = std::collections::BTreeSet::new();
    for t in 0..64 {
        core.neighbourhood_lookup(now(3 + t));
        let mut sends = Vec::new();
        while let Some(a) = core.poll_action() {
            if let Action::Send { to, frame } = a {
                let (f, _) = Frame::parse(&frame).unwrap();
                assert_eq!(f.frame_type(), FrameType::LOOKUP);
                sends.push((to, MsgRef::parse(f.payload()).unwrap().target));
            }
        }
        assert_eq!(sends.len(), 2, "two copies");
        assert_ne!(sends[0].0, sends[1].0, "through two edges");
        for &(to, target) in &sends {
            let b = my_id.bucket_index(&target).unwrap();
            assert!(
                b < d && b >= d - usize::from(NEIGHBOURHOOD_SPAN),
                "bucket {b}, d {d}"
            );
            assert!(core.edges.contains(&to));
            assert!(my_id.bucket_index(&to).unwrap() < b, "an outsider");
            aimed.insert(b);
        }
        ways_out.insert((sends[0].0.min(sends[1].0), sends[0].0.max(sends[1].0)));
    }
    assert_eq!(aimed.len(), usize::from(NEIGHBOURHOOD_SPAN), "{aimed:?}");
    assert!(
        ways_out.len() > 32,
        "edges drawn at random: {}",
        ways_out.len()
    );

    // Paced by the refresh checks: while no answer names anyone new, each gap doubles, up
    // to NEIGHBOURHOOD_GAP_MAX checks (at the core's first tick the table was too thin to
    // aim one, which moved nothing).
    let check = core.config.maintenance.refresh_check.as_secs();
    let start = 1000 / check + 1;
    let mut sent_at = Vec::new();
    let mut last = None;
    for k in start..start + 48 {
        core.on_tick(now(k * check));
        let (lookups, _) = lookups_and_dials(&mut core);
        let nonce = core.neighbourhood.0;
        if nonce != last {
            assert!(lookups.iter().any(|l| Some(l.1) == nonce), "sent");
            last = nonce;
            sent_at.push(k - start);
        }
    }
    assert_eq!(sent_at, [0, 1, 3, 7, 15, 31, 47], "checks {sent_at:?}");
    assert_eq!(core.stats().neighbourhood_lookups, 64 + 7);
    let last = last.unwrap();
    let t = start + 47;

    // An answer naming somebody new (with an address) brings the next one back to the
    // next check.
    let found: Vec<Identity> = (30_000..40_000)
        .map(identity)
        .filter(|i| {
            let b = my_id.bucket_index(&i.node_id()).unwrap();
            b >= d - 2 && b < d && core.knowledge.bucket(b).count() < K - 3
        })
        .take(3)
        .collect();
    let (keyless, newcomer) = (&found[0], &found[1]);
    // A contact without its key loses its addresses (nobody can dial it): learning it is
    // no progress, and the pacing stays as it was.
    let paced = core.neighbourhood;
    let unkeyed = Contact {
        id: keyless.node_id(),
        ed_pub: None,
        x_pub: None,
        caps: Caps::default(),
        addrs: vec![mem_addr("nowhere")],
    };
    answer_listing(&mut core, &pool[396], last, &[unkeyed], now(t * check));
    assert!(
        core.knowledge
            .get(&keyless.node_id())
            .is_some_and(|c| c.addrs.is_empty()),
        "learned, addressless"
    );
    assert_eq!(core.neighbourhood, paced, "no progress");
    // Nor does an answer to any other lookup, however new what it names.
    let other = &found[2];
    core.lookup(now(t * check), NodeId::from_bytes([0x55; 32]));
    let nonce = lookup_nonces(&mut core)[0];
    answer_naming(&mut core, &pool[396], nonce, &[other], now(t * check));
    assert!(core.knowledge.get(&other.node_id()).is_some(), "learned");
    assert_eq!(core.neighbourhood, paced, "not ours");
    answer_naming(&mut core, &pool[397], last, &[newcomer], now(t * check));
    assert!(core.knowledge.get(&newcomer.node_id()).is_some(), "learned");
    assert_eq!(
        core.neighbourhood,
        (Some(last), 1, 0),
        "progress, and still ours"
    );
    while core.poll_action().is_some() {}
    core.on_tick(now((t + 1) * check));
    lookups_and_dials(&mut core);
    assert!(
        core.neighbourhood.0.is_some_and(|n| n != last),
        "looked up again at once"
    );
}

/// Key-less ids planted next to our own (stripped of addresses, so never dialed and never
/// evicted) used to fill our closest contacts for good: the closer-node dial found nobody to
/// dial, and a self-lookup's answer never looked like progress. Both now look at nodes with
/// an address only.
#[test]
fn ids_planted_next_to_ours_without_an_address_blind_no_maintenance() {
    let me = identity(1);
    let my_id = me.node_id();
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 41);
    plant_keyless_ids_next_to_ours(&mut core, &pool[398], now(2));
    assert!(
        core.knowledge
            .closest(&my_id, SIBLINGS)
            .iter()
            .all(|c| c.addrs.is_empty())
    );
    while core.poll_action().is_some() {}
    // Our self-lookup is answered with a node closer than any we can dial: progress, the
    // node dialed, a follow-up due.
    let self_nonce = core.self_lookup.expect("a self-lookup at the first tick");
    answer_naming(&mut core, &pool[398], self_nonce, &[&pool[0]], now(2));
    assert_eq!(
        lookups_and_dials(&mut core).1,
        [pool[0].node_id()],
        "followed up"
    );
    assert!(core.self_lookup_streak.1, "a follow-up is due");
    // A node closer than our 16th closest edge, named in any answer, is dialed at the tick
    // (by the closer-node dial: an edge in its bucket keeps the hole dial off it).
    let b1 = my_id.bucket_index(&pool[1].node_id());
    let beside = (60_000..200_000)
        .map(identity)
        .find(|i| my_id.bucket_index(&i.node_id()) == b1)
        .unwrap();
    edge(&mut core, &beside, now(3));
    named_in_an_answer(&mut core, &pool[398], &[&pool[1]], now(3));
    while core.poll_action().is_some() {}
    core.on_tick(now(4));
    assert!(
        lookups_and_dials(&mut core).1.contains(&pool[1].node_id()),
        "the closer-node dial"
    );
}
