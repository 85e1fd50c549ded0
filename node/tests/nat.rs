//! NAT traversal on the in-memory NAT models, on tokio's paused clock: reflexive learning,
//! classification, and hole-punching through every pair of cone NATs.

use std::sync::Arc;
use std::time::Duration;

use nodenet::{
    BirthdayConfig, ConnectError, Connection, Contact, Maintenance, NatType, Node, Path, Step,
    StepError, Strategy, Via,
};
use nodenet_identity::Identity;
use nodenet_transport::Transport;
use nodenet_transport::mem::{Hub, NatModel};

fn identity(i: u32) -> Identity {
    let mut seed = [0x5au8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    Identity::from_seed(&seed)
}

/// `public` nodes on the open network, then one node behind each NAT of `nats`; all join
/// through node 0.
fn cluster(hub: &Hub, public: u32, nats: &[(&str, NatModel)]) -> Vec<(Node, nodenet::Deliveries)> {
    cluster_with(hub, public, nats, true)
}

/// [`cluster`], with the public nodes volunteering as relays or not.
fn cluster_with(
    hub: &Hub,
    public: u32,
    nats: &[(&str, NatModel)],
    relays: bool,
) -> Vec<(Node, nodenet::Deliveries)> {
    cluster_full(hub, public, nats, relays, true)
}

/// [`cluster_with`], with timed hole-punches on or off.
fn cluster_full(
    hub: &Hub,
    public: u32,
    nats: &[(&str, NatModel)],
    relays: bool,
    timed: bool,
) -> Vec<(Node, nodenet::Deliveries)> {
    cluster_tuned(
        hub,
        public,
        nats,
        relays,
        timed,
        BirthdayConfig::default(),
        true,
    )
}

/// [`cluster_full`], with birthday punching configured, and the relays attesting each
/// side's host to the other or not (as the reference's do not).
fn cluster_tuned(
    hub: &Hub,
    public: u32,
    nats: &[(&str, NatModel)],
    relays: bool,
    timed: bool,
    birthday: BirthdayConfig,
    attest: bool,
) -> Vec<(Node, nodenet::Deliveries)> {
    let relay_at = |i: u32| relays && i < public;
    cluster_where(hub, public, nats, &relay_at, timed, birthday, attest)
}

/// [`cluster_tuned`], with node `i` volunteering as a relay where `relay_at(i)`.
fn cluster_where(
    hub: &Hub,
    public: u32,
    nats: &[(&str, NatModel)],
    relay_at: &dyn Fn(u32) -> bool,
    timed: bool,
    birthday: BirthdayConfig,
    attest: bool,
) -> Vec<(Node, nodenet::Deliveries)> {
    let mut out = Vec::new();
    let total = public + u32::try_from(nats.len()).unwrap();
    let mut boot = None;
    for i in 0..total {
        let id = identity(i);
        let t = hub.transport_for(&id, &format!("n{i}")).unwrap();
        if i >= public {
            let (host, model) = nats[(i - public) as usize];
            hub.set_nat(id.node_id(), host, model);
        }
        let addr = t.local_addr();
        let node = Node::builder(id)
            .transport(Arc::new(t))
            .maintenance(Maintenance::scaled(5))
            .relay(relay_at(i))
            .relay_attestation(attest)
            .rendezvous_timeout(Duration::from_secs(3))
            .timed_punch(timed)
            .birthday(birthday)
            .deterministic_seed(u64::from(i) + 1)
            .build()
            .unwrap();
        let inbox = node.deliveries().unwrap();
        node.spawn();
        match &boot {
            None => boot = Some(Contact::new(node.id(), vec![addr])),
            Some(b) => node.bootstrap(vec![b.clone()]),
        }
        out.push((node, inbox));
    }
    out
}

/// `a` connects to `b` by `path`, and one frame crosses the edge byte-exact.
async fn connect_and_prove(
    members: &mut [(Node, nodenet::Deliveries)],
    a: usize,
    b: usize,
    path: Path,
) {
    let target = members[b].0.id();
    let conn = members[a]
        .0
        .connect(target)
        .await
        .unwrap_or_else(|e| panic!("{a}→{b}: {e}"));
    assert_eq!(conn.path(), path, "{a}→{b}");
    // Asked again, the node reports how the edge it holds was made.
    let again = members[a].0.connect(target).await.unwrap();
    assert_eq!(again.path(), path, "{a}→{b} again");
    let payload = format!("{a} to {b}, {path:?}");
    conn.send(payload.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d = loop {
        let d = members[b].1.try_recv().expect("the frame arrives");
        if d.via == Via::Direct {
            break d;
        }
    };
    assert_eq!(d.payload, payload.as_bytes());
    assert_eq!(d.originator, members[a].0.id());
}

/// Sends `payload` over `conn`; true when `inbox` received it over an edge (not routed)
/// within 100 ms. Everything else waiting in `inbox` is drained.
async fn arrives_direct(
    conn: &Connection,
    inbox: &mut nodenet::Deliveries,
    payload: &[u8],
) -> bool {
    conn.send(payload).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = false;
    while let Some(d) = inbox.try_recv() {
        got |= d.via == Via::Direct && d.payload == payload;
    }
    got
}

const NATS: [(&str, NatModel); 4] = [
    ("natfull", NatModel::FULL_CONE),
    ("nataddr", NatModel::ADDRESS_RESTRICTED),
    ("natport", NatModel::PORT_RESTRICTED),
    ("natsym", NatModel::SYMMETRIC),
];

#[tokio::test(start_paused = true)]
async fn nodes_learn_their_public_address_and_nat_type() {
    let hub = Hub::new();
    let members = cluster(&hub, 8, &NATS);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (i, (node, _)) in members.iter().enumerate() {
        let (want, reflexive) = match i {
            0..8 => (NatType::Public, Some(format!("n{i}"))),
            8 => (NatType::Cone, Some("natfull:30000".to_owned())),
            9 => (NatType::Cone, Some("nataddr:30000".to_owned())),
            10 => (NatType::Cone, Some("natport:30000".to_owned())),
            _ => (NatType::Symmetric, None),
        };
        assert_eq!(node.nat_type(), want, "node {i}");
        assert_eq!(node.reflexive().map(|a| a.endpoint), reflexive, "node {i}");
        assert!(node.stats().reflexive_reports >= 3, "node {i}");
    }
}

/// Every restricted-cone target is reached by a punch, from behind every kind of cone NAT.
/// (A full-cone node needs none: once its mapping exists anyone may dial it, so the overlay
/// links it directly.)
#[tokio::test(start_paused = true)]
async fn cone_nats_connect_by_hole_punch() {
    const MORE: [(&str, NatModel); 6] = [
        ("natfull", NatModel::FULL_CONE),
        ("nataddr1", NatModel::ADDRESS_RESTRICTED),
        ("nataddr2", NatModel::ADDRESS_RESTRICTED),
        ("natport1", NatModel::PORT_RESTRICTED),
        ("natport2", NatModel::PORT_RESTRICTED),
        ("natsym", NatModel::SYMMETRIC),
    ];
    let hub = Hub::new();
    let (full, addr1, addr2, port1, port2) = (8usize, 9, 10, 11, 12);
    let pairs = [
        (addr1, addr2),
        (addr1, port1),
        (port1, port2),
        (port2, addr2),
        (full, port1),
    ];
    // While the overlay forms, the pairs cannot reach each other at all: otherwise their
    // maintenance dials, crossing, open both NATs by accident (as they would on real NATs).
    let ids: Vec<_> = (0..14).map(|i| identity(i).node_id()).collect();
    for &(a, b) in &pairs {
        hub.partition(ids[a], ids[b]);
    }
    let mut members = cluster(&hub, 8, &MORE);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for &(a, b) in &pairs {
        hub.heal(ids[a], ids[b]);
    }
    for (a, b) in pairs {
        let target = members[b].0.id();
        assert!(
            !members[a].0.edges().contains(&target),
            "{a}, {b} already linked"
        );
        connect_and_prove(&mut members, a, b, Path::Punched).await;
    }
    assert!(members[addr1].0.stats().punches_succeeded >= 2);
    assert!(members[port1].0.stats().punches_answered >= 2);
}

/// A symmetric NAT cannot punch; a volunteer relay carries the edge instead, end to end,
/// whichever side is symmetric, and also between two symmetric NATs.
#[tokio::test(start_paused = true)]
async fn symmetric_nats_connect_through_a_relay() {
    const SYM: [(&str, NatModel); 3] = [
        ("natport", NatModel::PORT_RESTRICTED),
        ("natsym1", NatModel::SYMMETRIC),
        ("natsym2", NatModel::SYMMETRIC),
    ];
    let hub = Hub::new();
    let (cone, sym1, sym2) = (8usize, 9, 10);
    let pairs = [(sym1, cone), (cone, sym2), (sym1, sym2)];
    let ids: Vec<_> = (0..11).map(|i| identity(i).node_id()).collect();
    for &(a, b) in &pairs {
        hub.partition(ids[a], ids[b]);
    }
    let mut members = cluster(&hub, 8, &SYM);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for &(a, b) in &pairs {
        hub.heal(ids[a], ids[b]);
    }
    assert_eq!(members[sym1].0.nat_type(), NatType::Symmetric);
    for (a, b) in pairs {
        connect_and_prove(&mut members, a, b, Path::Relayed).await;
    }
    let granted: u64 = members[..8]
        .iter()
        .map(|m| m.0.stats().relays_granted)
        .sum();
    assert!(granted >= 3, "{granted}");
}

/// A relay serves only a target it holds an edge to, and the caller's own edges need not
/// include one: the relay step looks the target up, learns the volunteer beside it, dials it,
/// and connects through it.
#[tokio::test(start_paused = true)]
async fn a_relay_beside_the_target_that_is_no_edge_of_ours_is_dialed_and_used() {
    const SYM: [(&str, NatModel); 2] = [
        ("natsym1", NatModel::SYMMETRIC),
        ("natsym2", NatModel::SYMMETRIC),
    ];
    let hub = Hub::new();
    let (relay, a, b) = (5usize, 8usize, 9usize);
    let ids: Vec<_> = (0..10).map(|i| identity(i).node_id()).collect();
    // The caller joins without ever reaching the one relay, or the target.
    hub.partition(ids[a], ids[relay]);
    hub.partition(ids[a], ids[b]);
    let mut members = cluster_where(
        &hub,
        8,
        &SYM,
        &|i| i == 5,
        true,
        BirthdayConfig::default(),
        true,
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    hub.heal(ids[a], ids[relay]);
    hub.heal(ids[a], ids[b]);
    assert!(!members[a].0.edges().contains(&ids[relay]));
    assert!(members[b].0.edges().contains(&ids[relay]));
    connect_and_prove(&mut members, a, b, Path::Relayed).await;
    assert_eq!(members[relay].0.stats().relays_granted, 1);
    assert!(
        !members[a].0.edges().contains(&ids[relay]),
        "dialed for the connect, closed after it (the relayed edge carried the frame)"
    );
}

/// Without a relay volunteer anywhere, a symmetric NAT's connect fails and says where.
#[tokio::test(start_paused = true)]
async fn without_relays_a_symmetric_nat_says_where_it_failed() {
    let hub = Hub::new();
    let members = cluster_with(&hub, 8, &NATS, false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (sym, cone) = (&members[11].0, &members[10].0);
    assert_eq!(sym.nat_type(), NatType::Symmetric);
    let err = sym.connect(cone.id()).await.unwrap_err();
    assert_eq!(
        err,
        ConnectError::Failed {
            target: cone.id(),
            step: Step::Strategy(Strategy::Relay),
            error: StepError::NoRelay,
        }
    );
    // The other way round the punch runs, but the symmetric side's mapping toward us is one
    // nobody reported: nothing to dial, and no relay either.
    assert!(cone.connect(sym.id()).await.is_err());
}

/// A relayed edge is replaced by a punched one once a punch can work: here the symmetric NAT
/// in front of the target is swapped for a port-restricted one, the target's flows through
/// it die and are rebuilt (so its neighbours now agree on its address), and the caller's
/// next upgrade attempt punches through. The application's handle keeps working throughout.
/// (Birthday punching is off here: it would join the pair through the symmetric NAT first.)
#[tokio::test(start_paused = true)]
async fn a_relayed_edge_is_upgraded_when_a_punch_later_works() {
    const PAIR: [(&str, NatModel); 2] = [
        ("natport", NatModel::PORT_RESTRICTED),
        ("natsym", NatModel::SYMMETRIC),
    ];
    let hub = Hub::new();
    let (a, b) = (8usize, 9usize);
    let ids: Vec<_> = (0..10).map(|i| identity(i).node_id()).collect();
    hub.partition(ids[a], ids[b]);
    let no_birthdays = BirthdayConfig {
        probes_per_hour: 0,
        ..BirthdayConfig::default()
    };
    let mut members = cluster_tuned(&hub, 8, &PAIR, true, true, no_birthdays, true);
    tokio::time::sleep(Duration::from_secs(60)).await;
    hub.heal(ids[a], ids[b]);
    let conn = members[a].0.connect(ids[b]).await.unwrap();
    assert_eq!(conn.path(), Path::Relayed);
    // The router is swapped; its old flows die with it.
    hub.set_nat_model("natsym", NatModel::PORT_RESTRICTED);
    for p in 0..8 {
        hub.partition(ids[b], ids[p]);
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    for p in 0..8 {
        hub.heal(ids[b], ids[p]);
    }
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert_eq!(members[b].0.nat_type(), NatType::Cone);
    assert_eq!(members[a].0.stats().relay_upgrades, 1);
    assert_eq!(conn.path(), Path::Punched);
    assert!(
        arrives_direct(&conn, &mut members[b].1, b"after the upgrade").await,
        "the handle carries frames over the punched edge"
    );
}

/// Two nodes behind Linux-style NATs that claim the port of a dropped packet, 20 ms apart on
/// every link. Untimed (the reference's way) the target's punch reaches the caller's NAT
/// before the caller's own first datagram leaves: the caller's NAT claims its port and the
/// punch fails, so the pair ends relayed. Timed by the Sync, both first datagrams leave
/// together and the pair connects punched.
#[tokio::test(start_paused = true)]
async fn a_timed_punch_beats_nats_that_claim_dropped_packets() {
    const PAIR: [(&str, NatModel); 2] = [
        ("nata", NatModel::LINUX_MASQUERADE),
        ("natb", NatModel::LINUX_MASQUERADE),
    ];
    let (a, b) = (8usize, 9usize);
    for (timed, path) in [(false, Path::Relayed), (true, Path::Punched)] {
        let hub = Hub::new();
        let ids: Vec<_> = (0..10).map(|i| identity(i).node_id()).collect();
        let link = nodenet_transport::mem::LinkModel {
            delay: Duration::from_millis(20),
            ..Default::default()
        };
        for x in &ids {
            for y in &ids {
                if x != y {
                    hub.set_link(*x, *y, link.clone());
                }
            }
        }
        hub.partition(ids[a], ids[b]);
        let mut members = cluster_full(&hub, 8, &PAIR, true, timed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        hub.heal(ids[a], ids[b]);
        assert_eq!(members[a].0.nat_type(), NatType::Cone);
        assert_eq!(members[b].0.nat_type(), NatType::Cone);
        let started = tokio::time::Instant::now();
        connect_and_prove(&mut members, a, b, path).await;
        let took = started.elapsed();
        let s = members[a].0.stats();
        assert_eq!(s.punches_succeeded, u64::from(timed), "timed {timed}");
        if timed {
            // One overlay round trip, half of one, and the handshake: well under a second.
            assert!(took < Duration::from_secs(1), "{took:?}");
        }
    }
}

/// Birthday punching on the in-memory model of a random-port symmetric NAT: every pair of a
/// symmetric and a port-restricted node connects relayed, then the background birthday
/// punch replaces the relayed edge with a direct one (reported punched), whichever side
/// started; two symmetric nodes stay relayed. Deterministic: the NATs' ports and the probes'
/// ports are seeded.
#[tokio::test(start_paused = true)]
async fn birthday_punches_join_symmetric_and_cone_nats() {
    const PAIRS: usize = 6;
    let mut nats: Vec<(String, NatModel)> = Vec::new();
    for i in 0..PAIRS {
        nats.push((format!("natsym{i}"), NatModel::SYMMETRIC_RANDOM));
        nats.push((format!("natport{i}"), NatModel::PORT_RESTRICTED));
    }
    nats.push(("natsymx".into(), NatModel::SYMMETRIC_RANDOM));
    nats.push(("natsymy".into(), NatModel::SYMMETRIC_RANDOM));
    let named: Vec<(&str, NatModel)> = nats.iter().map(|(h, m)| (h.as_str(), *m)).collect();
    let hub = Hub::new();
    let public = 8u32;
    let total = public as usize + named.len();
    let ids: Vec<_> = (0..u32::try_from(total).unwrap())
        .map(|i| identity(i).node_id())
        .collect();
    let pair = |k: usize| (public as usize + 2 * k, public as usize + 2 * k + 1);
    for k in 0..=PAIRS {
        let (s, c) = pair(k);
        hub.partition(ids[s], ids[c]);
    }
    let mut members = cluster(&hub, public, &named);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for k in 0..=PAIRS {
        let (s, c) = pair(k);
        hub.heal(ids[s], ids[c]);
    }
    let mut punched = 0;
    for k in 0..PAIRS {
        let (s, c) = pair(k);
        assert_eq!(members[s].0.nat_type(), NatType::Symmetric);
        assert_eq!(members[c].0.nat_type(), NatType::Cone);
        // Each side starts half of the time.
        let (from, to) = if k % 2 == 0 { (s, c) } else { (c, s) };
        let conn = members[from].0.connect(ids[to]).await.unwrap();
        assert_eq!(conn.path(), Path::Relayed, "pair {k}");
        tokio::time::sleep(Duration::from_secs(25)).await;
        if conn.path() == Path::Punched {
            punched += 1;
            let again = members[from].0.connect(ids[to]).await.unwrap();
            assert_eq!(again.path(), Path::Punched);
            let payload = format!("birthday {k}");
            assert!(
                arrives_direct(&conn, &mut members[to].1, payload.as_bytes()).await,
                "pair {k}: a frame crosses the punched edge"
            );
        }
    }
    assert!(punched >= PAIRS, "{punched}/{PAIRS} pairs punched");
    let attempts: u64 = members.iter().map(|m| m.0.stats().birthday_attempts).sum();
    assert!(
        attempts >= 2 * PAIRS as u64 - 2,
        "both sides of each pair count an attempt"
    );
    assert!(hub.birthday_probes() > 0);
    let unverified: u64 = members
        .iter()
        .map(|m| m.0.stats().birthday_unverified)
        .sum();
    assert_eq!(unverified, 0, "every relay attested");
    // Two symmetric NATs: relayed, and they stay so.
    let (x, y) = pair(PAIRS);
    let conn = members[x].0.connect(ids[y]).await.unwrap();
    assert_eq!(conn.path(), Path::Relayed);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(conn.path(), Path::Relayed);
}

/// The same pairs, but the relays are the reference's (no attestation of either side's
/// host): nobody may aim a probe at a host only the peer named, so no birthday punch is
/// asked or played, not one probe leaves, and the pairs stay relayed (and work).
#[tokio::test(start_paused = true)]
async fn without_a_relays_word_no_birthday_probe_leaves() {
    const NATS: [(&str, NatModel); 4] = [
        ("natsym0", NatModel::SYMMETRIC_RANDOM),
        ("natport0", NatModel::PORT_RESTRICTED),
        ("natsym1", NatModel::SYMMETRIC_RANDOM),
        ("natport1", NatModel::PORT_RESTRICTED),
    ];
    let hub = Hub::new();
    let public = 8usize;
    let ids: Vec<_> = (0..12).map(|i| identity(i).node_id()).collect();
    hub.partition(ids[8], ids[9]);
    hub.partition(ids[10], ids[11]);
    let mut members = cluster_tuned(&hub, 8, &NATS, true, true, BirthdayConfig::default(), false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    hub.heal(ids[8], ids[9]);
    hub.heal(ids[10], ids[11]);
    // The symmetric side starts one, the cone side the other.
    for (from, to) in [(public, public + 1), (public + 3, public + 2)] {
        let mut types = [members[from].0.nat_type(), members[to].0.nat_type()];
        types.sort_by_key(|t| t.as_str());
        assert_eq!(
            types,
            [NatType::Cone, NatType::Symmetric],
            "a birthday pair"
        );
        let conn = members[from].0.connect(ids[to]).await.unwrap();
        assert_eq!(conn.path(), Path::Relayed, "{from}→{to}");
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(conn.path(), Path::Relayed, "{from}→{to} stays relayed");
        assert!(
            arrives_direct(&conn, &mut members[to].1, b"still relayed").await,
            "{from}→{to}: the relayed edge carries frames"
        );
        assert!(
            members[from].0.stats().birthday_unverified >= 1,
            "{from}: counted"
        );
    }
    let attempts: u64 = members.iter().map(|m| m.0.stats().birthday_attempts).sum();
    assert_eq!(attempts, 0);
    assert_eq!(hub.birthday_probes(), 0);
}
