//! Attacks on the core, each written as the attacker would mount it, with the project's own
//! codecs: what a hostile peer sends, and what the core must (not) do about it.

use std::collections::HashSet;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::msg::{self, MsgFields, MsgRef};
use nodenet_routing::{K, SIBLINGS, TARGET_EDGES, Time};
use nodenet_wire::{Addr, Frame, FrameType};

use super::*;

pub(crate) fn identity(i: u32) -> Identity {
    let mut seed = [0x33u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
}

pub(crate) fn now(secs: u64) -> Now {
    Now {
        mono: Time(secs * 1_000_000_000),
        unix_ns: 1_700_000_000_000_000_000 + i64::try_from(secs).unwrap() * 1_000_000_000,
    }
}

fn mem_addr(name: &str) -> Addr {
    Addr::new("mem", name)
}

/// Gives `core` one outbound edge to `peer` and drains what that queued.
fn edge(core: &mut Core, peer: &Identity, at: Now) {
    core.on_edge_up(
        at,
        peer.node_id(),
        Some(peer.ed_public()),
        true,
        &mem_addr(&peer.node_id().short().to_string()),
    )
    .unwrap();
    while core.poll_action().is_some() {}
}

/// `peer` reports, in a Pong, that it sees us at `seen`.
fn pong(core: &mut Core, peer: &Identity, seen: &Addr, at: Now) {
    let mut buf = [0u8; 64];
    let mut w = Writer::new(&mut buf);
    seen.as_ref().encode(&mut w).unwrap();
    let mut frame = small_frame(FrameType::PONG, w.written());
    let _ = core.on_frame(at, peer.node_id(), &mem_addr("x"), &mut frame);
}

/// A target next to `me` (its NodeId with the last bit of every byte flipped) and `n` peers
/// all farther from it than `me`: made edges, they leave `me` a local optimum toward it.
fn near_target_far_edges(me: &Identity, n: usize) -> (NodeId, Vec<Identity>) {
    let my_id = me.node_id();
    let target = NodeId::from_bytes(my_id.to_bytes().map(|b| b ^ 0x01));
    let far = (100..10_000)
        .map(identity)
        .filter(|e| e.node_id().distance(&target) > my_id.distance(&target))
        .take(n)
        .collect();
    (target, far)
}

/// The nonce of every Lookup the core queued.
fn lookup_nonces(core: &mut Core) -> Vec<[u8; NONCE_LEN]> {
    let mut out = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::Send { frame, .. } = a {
            let (f, _) = Frame::parse(&frame).unwrap();
            if f.frame_type() == FrameType::LOOKUP {
                let m = MsgRef::parse(f.payload()).unwrap();
                out.push(control::parse_nonce(m.payload).unwrap());
            }
        }
    }
    out
}

/// `n` Lookup nonces and `n` rendezvous nonces from a core.
fn draw_nonces(core: &mut Core, n: usize) -> (Vec<[u8; NONCE_LEN]>, Vec<[u8; RDV_NONCE_LEN]>) {
    let peer = identity(999);
    edge(core, &peer, now(1));
    let mut lookups = Vec::new();
    let mut rdv = Vec::new();
    for i in 0..n {
        core.lookup(now(1), NodeId::from_bytes([i.to_le_bytes()[0]; 32]));
        lookups.extend(lookup_nonces(core));
        rdv.push(core.start_rendezvous(now(1), peer.node_id()).unwrap());
        // Keep the request table from filling.
        if i % 512 == 511 {
            core.rendezvous.clear();
        }
        while core.poll_action().is_some() {}
    }
    (lookups, rdv)
}

/// The generator every node used before: a bare xorshift whose output is its whole state.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// What every node uses (the `nodenet` builder's default): a generator keyed by the OS.
#[test]
fn cores_keyed_by_the_os_and_a_restarted_one_never_share_a_nonce() {
    let build = |i: u32| Core::new(identity(i), CoreConfig::default(), CoreRng::from_os());
    let (a_lookups, a_rdv) = draw_nonces(&mut build(1), 1000);
    let (b_lookups, b_rdv) = draw_nonces(&mut build(2), 1000);
    // The same identity again, as after a restart.
    let (r_lookups, r_rdv) = draw_nonces(&mut build(1), 1000);

    let mut seen = HashSet::new();
    for n in a_lookups.iter().chain(&b_lookups).chain(&r_lookups) {
        assert!(
            seen.insert(*n),
            "a lookup nonce repeated across nodes: {n:02x?}"
        );
    }
    let mut seen = HashSet::new();
    for n in a_rdv.iter().chain(&b_rdv).chain(&r_rdv) {
        assert!(
            seen.insert(*n),
            "a rendezvous nonce repeated across nodes: {n:02x?}"
        );
    }
    // No nonce is the generator's state: the next one does not follow from it.
    for w in a_lookups.windows(2).chain(r_lookups.windows(2)) {
        let prev = u64::from_be_bytes(w[0]);
        let next = u64::from_be_bytes(w[1]);
        assert_ne!(xorshift(prev), next, "a nonce predicted the next");
    }
    for n in a_rdv.iter().chain(&r_rdv) {
        let hi = u64::from_be_bytes(n[..8].try_into().unwrap());
        let lo = u64::from_be_bytes(n[8..].try_into().unwrap());
        assert_ne!(
            xorshift(hi),
            lo,
            "a nonce's first half predicted its second"
        );
    }
}

#[test]
fn a_deterministic_seed_repeats_and_says_so() {
    let mk = |seed| {
        Core::new(
            identity(1),
            CoreConfig::default(),
            CoreRng::deterministic(seed),
        )
    };
    let (mut x, mut y, mut z) = (mk(7), mk(7), mk(8));
    let peer = identity(2);
    for c in [&mut x, &mut y, &mut z] {
        edge(c, &peer, now(1));
    }
    let draw = |c: &mut Core| {
        c.lookup(now(1), peer.node_id());
        lookup_nonces(c)
    };
    let (nx, ny, nz) = (draw(&mut x), draw(&mut y), draw(&mut z));
    assert_eq!(nx, ny);
    assert_ne!(nx, nz);
}

/// A routed frame of `ty` to `target` carrying `ed_pub` as its originator's key, signed by
/// `signer` (a forger signs with a key that is not the one it names).
fn routed(
    signer: &Identity,
    ed_pub: [u8; 32],
    ty: FrameType,
    target: NodeId,
    ttl: u8,
    at: Now,
    payload: &[u8],
) -> Vec<u8> {
    let sig = msg::sign(signer, ty, &target, at.unix_ns, payload);
    let fields = MsgFields {
        target,
        ttl,
        ed_pub: &ed_pub,
        sent: at.unix_ns,
        avoid: &[],
        payload,
        sig: &sig,
    };
    let mut frame = vec![0u8; fields.encoded_len() + 16];
    let n = fields.encode_frame(ty, &mut frame).unwrap();
    frame.truncate(n);
    frame
}

/// A Neighbors answer from `from` to `to` for `nonce`, with no contacts.
fn neighbors(from: &Identity, to: NodeId, nonce: [u8; NONCE_LEN], ttl: u8, at: Now) -> Vec<u8> {
    let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(&[])];
    control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, &[]).unwrap();
    routed(
        from,
        from.ed_public(),
        FrameType::NEIGHBORS,
        to,
        ttl,
        at,
        &payload,
    )
}

fn first_hop(h: &Handled) -> Option<NodeId> {
    match h {
        Handled::Forward(c) => c.as_slice().first().copied(),
        _ => None,
    }
}

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

/// Behind a NAT, a node at a lookup's local optimum passes the lookup on (while its TTL
/// lasts) instead of answering it: its view of its neighbourhood is the thinnest in the
/// network (it holds edges only to the public nodes it dialed), and its answers kept its
/// neighbours from ever learning of each other. A public node answers.
#[test]
fn behind_a_nat_a_local_optimum_passes_a_lookup_on() {
    let me = identity(1);
    let (target, far) = near_target_far_edges(&me, 5);
    let config = CoreConfig {
        ip: true,
        ..CoreConfig::default()
    };
    let mut core = Core::new(me, config, CoreRng::deterministic(1));
    let t = now(1);
    let seen = Addr::new("quic", "198.51.100.7:4242");
    for p in &far {
        edge(&mut core, p, t);
        pong(&mut core, p, &seen, t);
        while core.poll_action().is_some() {}
    }
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

/// The targets and nonces of every Lookup the core queued, and the contacts it dialed.
fn lookups_and_dials(core: &mut Core) -> (Vec<(NodeId, [u8; NONCE_LEN])>, Vec<NodeId>) {
    let (mut lookups, mut dials) = (Vec::new(), Vec::new());
    while let Some(a) = core.poll_action() {
        match a {
            Action::Send { frame, .. } => {
                let (f, _) = Frame::parse(&frame).unwrap();
                if f.frame_type() == FrameType::LOOKUP {
                    let m = MsgRef::parse(f.payload()).unwrap();
                    lookups.push((m.target, control::parse_nonce(m.payload).unwrap()));
                }
            }
            Action::Dial { contact, .. } => dials.push(contact.id),
            _ => {}
        }
    }
    (lookups, dials)
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

/// The recipients of every self-lookup the core queued.
fn self_lookup_hops(core: &mut Core) -> Vec<NodeId> {
    let me = core.id();
    let mut to_all = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::Send { to, frame } = a {
            let (f, _) = Frame::parse(&frame).unwrap();
            if f.frame_type() == FrameType::LOOKUP
                && MsgRef::parse(f.payload()).unwrap().target == me
            {
                to_all.push(to);
            }
        }
    }
    to_all
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

/// `from` (one of our edges) answers our lookup `nonce`, naming `named`.
fn answer_naming(
    core: &mut Core,
    from: &Identity,
    nonce: [u8; NONCE_LEN],
    named: &[&Identity],
    t: Now,
) {
    let contacts: Vec<Contact> = named
        .iter()
        .map(|n| Contact {
            id: n.node_id(),
            ed_pub: Some(n.ed_public()),
            x_pub: None,
            caps: Caps::default(),
            addrs: vec![mem_addr(&n.node_id().short().to_string())],
        })
        .collect();
    answer_listing(core, from, nonce, &contacts, t);
}

/// `from` answers our lookup `nonce` with `contacts`, as listed.
fn answer_listing(
    core: &mut Core,
    from: &Identity,
    nonce: [u8; NONCE_LEN],
    contacts: &[Contact],
    t: Now,
) {
    let mut payload = vec![0u8; NONCE_LEN + control::contacts_len(contacts)];
    control::encode_neighbors(&mut Writer::new(&mut payload), &nonce, contacts).unwrap();
    let mut frame = routed(
        from,
        from.ed_public(),
        FrameType::NEIGHBORS,
        core.id(),
        MAX_HOPS,
        t,
        &payload,
    );
    let _ = core.on_frame(t, from.node_id(), &mem_addr("a"), &mut frame);
}

/// 400 identities, closest to `me` first.
fn pool_by_distance(me: &Identity) -> Vec<Identity> {
    let my_id = me.node_id();
    let mut pool: Vec<Identity> = (3000..3400).map(identity).collect();
    pool.sort_by_key(|i| i.node_id().distance(&my_id));
    pool
}

/// We look something up and `from` answers, naming `named`.
fn named_in_an_answer(core: &mut Core, from: &Identity, named: &[&Identity], t: Now) {
    core.lookup(t, NodeId::from_bytes([0x55; 32]));
    let nonce = lookup_nonces(core)[0];
    answer_naming(core, from, nonce, named, t);
}

/// A core past its edge floor, with edges to the far end of `pool` (sorted by distance to
/// it) and silent edges kept up for hours; the tick's own lookups and dials drained.
fn core_past_the_floor(me: Identity, pool: &[Identity], seed: u64) -> Core {
    let mut config = CoreConfig::default();
    config.maintenance.dead_sibling = Duration::from_secs(3600);
    config.maintenance.dead_finger = Duration::from_secs(3600);
    let mut core = Core::new(me, config, CoreRng::deterministic(seed));
    let n = pool.len();
    for p in &pool[n - 1 - TARGET_EDGES..n - 1] {
        edge(&mut core, p, now(1));
    }
    assert_eq!(core.edges.phase(), Phase::Normal);
    core.on_tick(now(1));
    while core.poll_action().is_some() {}
    core
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

/// A Connect (or its Sync) from `from` to `to`, for `nonce`, with `flags`, punching toward
/// `addrs`.
fn connect_frame(
    from: &Identity,
    to: NodeId,
    nonce: [u8; 16],
    flags: u8,
    addrs: &[Addr],
    at: Now,
) -> Vec<u8> {
    let payload = nodenet_nat::encode_coordination(&nonce, addrs, flags).unwrap();
    routed(
        from,
        from.ed_public(),
        FrameType::CONNECT,
        to,
        8,
        at,
        &payload,
    )
}

/// The punch datagrams queued, in order (other actions dropped).
fn punches(core: &mut Core) -> Vec<Addr> {
    std::iter::from_fn(|| core.poll_action())
        .filter_map(|a| match a {
            Action::Punch { addr } => Some(addr),
            _ => None,
        })
        .collect()
}

fn ms_after(t: Now, ms: u64) -> Now {
    Now {
        mono: t.mono.after(Duration::from_millis(ms)),
        unix_ns: t.unix_ns + i64::try_from(ms).unwrap() * 1_000_000,
    }
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

/// `from` answers a lookup of ours naming 16 made-up ids next to our own, without a key (so
/// stripped of their addresses: never dialed, never evicted).
fn plant_keyless_ids_next_to_ours(core: &mut Core, from: &Identity, t: Now) {
    let my_id = core.id();
    let planted: Vec<Contact> = (1..=16u8)
        .map(|i| {
            let mut id = *my_id.as_bytes();
            id[31] ^= i;
            Contact {
                id: NodeId::from_bytes(id),
                ed_pub: None,
                x_pub: None,
                caps: Caps::default(),
                addrs: vec![mem_addr("planted")],
            }
        })
        .collect();
    core.lookup(t, NodeId::from_bytes([0x55; 32]));
    let nonce = lookup_nonces(core)[0];
    answer_listing(core, from, nonce, &planted, t);
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
