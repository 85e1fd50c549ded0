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

mod admission;
mod backoff;
mod maintenance;
mod nat;
mod near_miss;
mod randomness;
mod relay;
mod routed;
