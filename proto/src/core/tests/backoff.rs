//! Dial backoff and the keep rule: peers that fail or drop us are dialed ever more slowly.

use super::*;

/// A close node that accepts our dial and drops the edge at once (or that our own admission
/// refuses) was dialed again every tick, for ever: its backoff was cleared when the edge came
/// up and restarted at one second when it went down. Now a drop soon after the last backoff
/// doubles it, as a failed dial does.
#[test]
fn a_peer_that_keeps_dropping_us_is_dialed_ever_more_slowly() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 11);
    let (far, churner) = (&pool[398], &pool[0]);
    named_in_an_answer(&mut core, far, &[churner], now(2));
    let _ = lookups_and_dials(&mut core);
    let mut dials = 0;
    for t in (3..603).step_by(5) {
        core.on_tick(now(t));
        for d in lookups_and_dials(&mut core).1 {
            assert_eq!(d, churner.node_id());
            dials += 1;
            edge(&mut core, churner, now(t));
            core.on_edge_down(now(t), &churner.node_id());
            while core.poll_action().is_some() {}
        }
    }
    // Doubling from 1 s: about ten dials in ten minutes, not one per 5 s tick (120).
    assert!((3..=12).contains(&dials), "{dials} dials in 10 minutes");
    assert!(
        core.knowledge.get(&churner.node_id()).is_some(),
        "it answered every dial: not forgotten"
    );
}

/// The same for a node our own admission hook refuses each time we reach it.
#[test]
fn a_peer_our_admission_refuses_is_dialed_ever_more_slowly() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 12);
    let (far, refused) = (&pool[398], pool[0].node_id());
    core.set_admission(Box::new(move |peer: &NodeId| *peer != refused));
    named_in_an_answer(&mut core, far, &[&pool[0]], now(2));
    let _ = lookups_and_dials(&mut core);
    let mut dials = 0;
    for t in (3..603).step_by(5) {
        core.on_tick(now(t));
        for d in lookups_and_dials(&mut core).1 {
            assert_eq!(d, refused);
            dials += 1;
            let up = core.on_edge_up(now(t), d, Some(pool[0].ed_public()), true, &mem_addr("r"));
            assert_eq!(up, Err(EdgeRefusal::Refused));
        }
    }
    assert!((3..=12).contains(&dials), "{dials} dials in 10 minutes");
}

/// A peer that only ever dialed us (no address of it known) leaves no backoff entry when
/// its edge goes down: fresh identities cycling through inbound edges cannot grow the map.
#[test]
fn a_peer_we_know_no_address_of_leaves_no_backoff() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 14);
    let stranger = identity(9999);
    core.on_edge_up(
        now(2),
        stranger.node_id(),
        Some(stranger.ed_public()),
        false,
        &mem_addr("s"),
    )
    .unwrap();
    while core.poll_action().is_some() {}
    // Over IP it would be known without an address; here the in-memory name was taken:
    // take it back.
    core.knowledge.remove(&stranger.node_id());
    core.on_edge_down(now(3), &stranger.node_id());
    assert!(!core.backoff.contains_key(&stranger.node_id()));
    // A peer we know does get one.
    let known = &pool[399 - TARGET_EDGES];
    assert!(
        core.knowledge
            .get(&known.node_id())
            .is_some_and(|c| !c.addrs.is_empty())
    );
    core.on_edge_down(now(3), &known.node_id());
    assert!(core.backoff.contains_key(&known.node_id()));
}

/// A failed dial evicted its contact, but a lookup answer can name it again at once (a
/// made-up contact close to us, at any address): its backoff was dropped on the next tick,
/// so every tick dialed that address again, for as long as someone kept naming it. Now the
/// backoff outlives the eviction and doubles with each failure.
#[test]
fn a_contact_named_again_after_each_failed_dial_is_dialed_ever_more_slowly() {
    let me = identity(1);
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 13);
    let (far, ghost) = (&pool[398], &pool[0]);
    let mut dials = Vec::new();
    for t in (3..603).step_by(5) {
        named_in_an_answer(&mut core, far, &[ghost], now(t));
        core.on_tick(now(t));
        for d in lookups_and_dials(&mut core).1 {
            assert_eq!(d, ghost.node_id());
            dials.push(t);
            core.on_dial_failed(now(t), &ghost.node_id());
            assert!(core.backoff.contains_key(&ghost.node_id()));
        }
    }
    // Doubling from 1 s: about ten dials in ten minutes, not one per 5 s tick (120).
    assert!((3..=12).contains(&dials.len()), "dialed at {dials:?}");
}

/// A failed dial evicts its contact, but not the last one in its bucket that we could dial
/// and once held an edge to: a cut across a whole part of the keyspace fails every dial
/// there, and once it heals only a contact kept through it leads back
/// (`cluster::a_partition_along_the_keyspace_heals`). The kept one is redialed as its
/// backoff allows (its backoff is not forgotten meanwhile), once per `BACKOFF_MAX` at the
/// ceiling, until `KEEP_FAILURES` failures; it goes at once when its bucket has another
/// contact. A made-up contact (never reached) is evicted by its first failure.
#[test]
fn the_last_contact_we_reached_in_a_bucket_survives_its_failed_dials() {
    let me = identity(1);
    let my_id = me.node_id();
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 17);
    // Silent edges stay up for the hours this runs.
    core.config.maintenance.dead_sibling = Duration::from_secs(10 * 3600);
    core.config.maintenance.dead_finger = Duration::from_secs(10 * 3600);
    let bucket_of = |i: &Identity| my_id.bucket_index(&i.node_id()).unwrap();
    // Pairs of strangers sharing a bucket that holds no edge and nothing we know.
    let empty_pairs: Vec<(&Identity, &Identity)> = (0..pool.len())
        .flat_map(|i| (i + 1..pool.len()).map(move |j| (i, j)))
        .map(|(i, j)| (&pool[i], &pool[j]))
        .filter(|(a, b)| {
            bucket_of(a) == bucket_of(b)
                && core.knowledge.bucket(bucket_of(a)).next().is_none()
                && !core
                    .edges
                    .iter()
                    .any(|e| my_id.bucket_index(&e.id) == Some(bucket_of(a)))
        })
        .collect();
    let (a, b) = empty_pairs[0];
    let (c, d) = *empty_pairs
        .iter()
        .find(|(c, _)| bucket_of(c) != bucket_of(a))
        .unwrap();
    let far = &pool[398];

    // Never reached, alone in its bucket: its first failed dial evicts it.
    named_in_an_answer(&mut core, far, &[a], now(2));
    core.on_dial_failed(now(2), &a.node_id());
    assert!(
        core.knowledge.get(&a.node_id()).is_none(),
        "made up: evicted"
    );

    // b was an edge and went down; from now on every dial of it fails.
    edge(&mut core, b, now(3));
    core.on_edge_down(now(4), &b.node_id());
    let _ = lookups_and_dials(&mut core);
    let mut dials = Vec::new();
    for t in (5..3 * 3600).step_by(5) {
        core.on_tick(now(t));
        if lookups_and_dials(&mut core).1.contains(&b.node_id()) {
            dials.push(t);
            core.on_dial_failed(now(t), &b.node_id());
            if core.knowledge.get(&b.node_id()).is_none() {
                break;
            }
        }
    }
    // Kept through KEEP_FAILURES - 1 failures, evicted by the next.
    assert_eq!(dials.len(), KEEP_FAILURES as usize, "dialed at {dials:?}");
    assert!(core.knowledge.get(&b.node_id()).is_none());
    // Doubling, then once per BACKOFF_MAX (plus at most a tick): the backoff was never
    // forgotten and restarted at a second.
    let gaps: Vec<u64> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "gaps {gaps:?}");
    let ceiling = BACKOFF_MAX.as_secs();
    let at_ceiling = gaps.iter().filter(|&&g| g >= ceiling).count();
    assert!(at_ceiling >= 9, "gaps {gaps:?}");
    assert!(gaps.iter().all(|&g| g <= ceiling + 5), "gaps {gaps:?}");

    // c was an edge too: kept through a failure while alone.
    edge(&mut core, c, now(20_000));
    core.on_edge_down(now(20_001), &c.node_id());
    core.on_dial_failed(now(20_002), &c.node_id());
    assert!(
        core.knowledge.get(&c.node_id()).is_some(),
        "the last one is kept"
    );
    // Its backoff is remembered past the time others are (here no dial could
    // start: MAX_DIALS_IN_FLIGHT are in flight).
    let busy: Vec<NodeId> = pool[100..100 + MAX_DIALS_IN_FLIGHT]
        .iter()
        .map(Identity::node_id)
        .collect();
    core.dialing.extend(busy.iter().copied());
    core.on_tick(now(22_000));
    assert_eq!(core.backoff.get(&c.node_id()).map(|b| b.failures), Some(1));
    for id in &busy {
        core.dialing.remove(id);
    }
    // A contact only named by a peer does not push it out ...
    named_in_an_answer(&mut core, far, &[d], now(22_003));
    core.on_dial_failed(now(22_004), &c.node_id());
    assert!(core.knowledge.get(&c.node_id()).is_some(), "still kept");
    assert_eq!(core.backoff[&c.node_id()].failures, 2);
    // ... and an edge coming up ends its run of failures.
    edge(&mut core, c, now(22_005));
    assert_eq!(core.backoff[&c.node_id()].failures, 0);
    core.on_edge_down(now(22_006), &c.node_id());
    // One we reached in the same bucket does: the next failure evicts it.
    edge(&mut core, d, now(22_007));
    core.on_dial_failed(now(22_008), &c.node_id());
    assert!(core.knowledge.get(&c.node_id()).is_none(), "evicted");
    // An edge that turns out to run through a relay reached the relay, not the peer.
    assert!(core.knowledge.was_reached(&d.node_id()));
    core.set_edge_relayed(&d.node_id(), true);
    assert!(!core.knowledge.was_reached(&d.node_id()));
}

/// A table with all the edges it wants fills nothing, so a bucket we know contacts in but
/// hold no edge into stayed a hole for ever, and greedy routing toward that part of the
/// keyspace ended at us. Now a tick without a closest-node dial makes one into a hole; a
/// contact whose dial failed is evicted, and the next one of its bucket gets the next
/// tick's dial.
#[test]
fn a_hole_in_a_full_table_is_dialed_one_contact_at_a_time() {
    let me = identity(1);
    let my_id = me.node_id();
    let pool = pool_by_distance(&me);
    let bucket = |i: &Identity| my_id.bucket_index(&i.node_id()).unwrap();
    let mut config = CoreConfig::default();
    config.maintenance.dead_sibling = Duration::from_secs(3600);
    config.maintenance.dead_finger = Duration::from_secs(3600);
    let mut core = Core::new(me, config, CoreRng::deterministic(12));
    // Siblings: our 16 closest. Fingers: the far end of the pool (its farthest bucket).
    let n = pool.len();
    let edges: Vec<&Identity> = pool[..SIBLINGS]
        .iter()
        .chain(&pool[n - (TARGET_EDGES - SIBLINGS)..])
        .collect();
    for p in &edges {
        edge(&mut core, p, now(1));
    }
    assert_eq!(core.edges.phase(), Phase::Normal);
    core.on_tick(now(1));
    while core.poll_action().is_some() {}
    // The next bucket in from the farthest one: no edge there, and farther than our
    // siblings, so only the hole rule can dial into it.
    let far = bucket(edges[SIBLINGS]);
    let hole: Vec<&Identity> = pool[SIBLINGS..n - (TARGET_EDGES - SIBLINGS)]
        .iter()
        .filter(|p| bucket(p) == far + 1)
        .take(2)
        .collect();
    assert_eq!(hole.len(), 2);
    assert!(edges.iter().all(|e| bucket(e) != far + 1));
    named_in_an_answer(&mut core, edges[SIBLINGS], &hole, now(2));
    let known: Vec<NodeId> = core.knowledge.bucket(far + 1).map(|c| c.id).collect();
    assert_eq!(known.len(), 2, "both hole contacts are known");
    let _ = lookups_and_dials(&mut core);

    core.on_tick(now(3));
    let (_, first) = lookups_and_dials(&mut core);
    assert_eq!(first.len(), 1, "one dial into the hole: {first:?}");
    assert!(known.contains(&first[0]));
    core.on_dial_failed(now(3), &first[0]);
    assert!(
        core.knowledge.get(&first[0]).is_none(),
        "a failed dial evicts (its bucket has another contact)"
    );
    core.on_tick(now(4));
    let (_, second) = lookups_and_dials(&mut core);
    assert_eq!(second.len(), 1, "the next contact of the hole: {second:?}");
    assert!(known.contains(&second[0]) && second[0] != first[0]);
}

/// The keep rule's narrower guards, one by one: only an edge we dialed marks its peer
/// reached; a probe for a newcomer does not dial a backed-off incumbent before its time;
/// and a backoff outlives the usual memory only for a contact kept through failed dials.
#[test]
fn the_keep_rule_counts_only_dials_we_made_and_failures_it_kept() {
    let me = identity(1);
    let my_id = me.node_id();
    let pool = pool_by_distance(&me);
    let mut core = core_past_the_floor(me, &pool, 23);
    core.config.maintenance.dead_sibling = Duration::from_secs(10 * 3600);
    core.config.maintenance.dead_finger = Duration::from_secs(10 * 3600);
    let bucket_of = |i: &Identity| my_id.bucket_index(&i.node_id()).unwrap();
    // Strangers alone in buckets that hold no edge and nothing we know.
    let mut lonely = pool.iter().filter(|p| {
        core.knowledge.bucket(bucket_of(p)).next().is_none()
            && !core
                .edges
                .iter()
                .any(|e| my_id.bucket_index(&e.id) == Some(bucket_of(p)))
    });
    let inbound = lonely.next().unwrap();
    let dialed = lonely.find(|p| bucket_of(p) != bucket_of(inbound)).unwrap();
    let dropped = lonely
        .find(|p| bucket_of(p) != bucket_of(inbound) && bucket_of(p) != bucket_of(dialed))
        .unwrap();

    // An inbound edge: on the in-memory transport its address is kept, but it was the
    // peer's dial, not ours, so it vouches for nothing and a failed dial evicts it.
    core.on_edge_up(
        now(10),
        inbound.node_id(),
        Some(inbound.ed_public()),
        false,
        &mem_addr(&inbound.node_id().short().to_string()),
    )
    .unwrap();
    while core.poll_action().is_some() {}
    assert!(core.knowledge.get(&inbound.node_id()).is_some());
    assert!(!core.knowledge.was_reached(&inbound.node_id()));
    core.on_edge_down(now(11), &inbound.node_id());
    core.on_dial_failed(now(12), &inbound.node_id());
    assert!(core.knowledge.get(&inbound.node_id()).is_none(), "evicted");

    // One we dialed is kept through a failure, and then backed off: a probe (a newcomer
    // stashed in its bucket asks whether it is still there) waits out the backoff ...
    edge(&mut core, dialed, now(20));
    core.on_edge_down(now(21), &dialed.node_id());
    for _ in 0..4 {
        core.on_dial_failed(now(22), &dialed.node_id());
    }
    assert!(core.knowledge.get(&dialed.node_id()).is_some(), "kept");
    let until = core.backoff[&dialed.node_id()].until;
    while core.poll_action().is_some() {}
    core.probe(now(23), dialed.node_id());
    assert!(
        lookups_and_dials(&mut core).1.is_empty(),
        "probed while backed off"
    );
    // ... and dials it once that is over.
    let after = Now {
        mono: until,
        ..now(0)
    };
    core.probe(after, dialed.node_id());
    assert_eq!(lookups_and_dials(&mut core).1, vec![dialed.node_id()]);
    core.on_dial_failed(after, &dialed.node_id());

    // A contact we reached that only dropped us (no failed dial) is backed off too, but
    // that backoff is forgotten as any other; the kept one's is not.
    edge(&mut core, dropped, now(30));
    core.on_edge_down(now(31), &dropped.node_id());
    assert_eq!(core.backoff[&dropped.node_id()].failures, 0);
    assert!(core.knowledge.was_reached(&dropped.node_id()));
    // Ticks with every dial slot taken, so neither is redialed meanwhile.
    let busy: Vec<NodeId> = pool[100..100 + MAX_DIALS_IN_FLIGHT]
        .iter()
        .map(Identity::node_id)
        .collect();
    core.dialing.extend(busy.iter().copied());
    let late = Now {
        mono: until.after(BACKOFF_MAX * 4),
        ..now(0)
    };
    core.on_tick(late);
    assert!(!core.backoff.contains_key(&dropped.node_id()), "forgotten");
    assert!(core.backoff.contains_key(&dialed.node_id()), "kept");
}
