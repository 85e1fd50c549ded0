//! The discrete-event simulator drives bare cores to the same behaviour as the tokio driver,
//! deterministically.

use std::time::Duration;

use nodenet::CoreConfig;
use nodenet::sim::Sim;
use nodenet_identity::Identity;

fn run(seed: u64) -> (u64, Vec<u8>, u64) {
    let ids: Vec<Identity> = (0..200u32)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_be_bytes());
            Identity::from_seed(&s)
        })
        .collect();
    let mut sim = Sim::new(ids, &CoreConfig::default(), Duration::from_millis(10), seed);
    sim.run_for(Duration::from_secs(120));
    for k in 0..100usize {
        let (from, to) = ((k * 7) % 200, (k * 13 + 5) % 200);
        if from != to {
            sim.send(from, to, &k.to_be_bytes()).unwrap();
        }
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(5));
    let r = sim.report();
    (r.delivered, r.hops.clone(), r.route_frames)
}

#[test]
fn two_hundred_cores_converge_and_deliver_deterministically() {
    let (delivered, hops, frames) = run(3);
    let sends = (0..100usize)
        .filter(|k| (k * 7) % 200 != (k * 13 + 5) % 200)
        .count() as u64;
    assert_eq!(delivered, sends, "every send arrives");
    assert!(hops.iter().all(|&h| (1..=6).contains(&h)), "{hops:?}");
    assert!(frames >= delivered, "at least one frame per delivery");
    assert_eq!(
        run(3),
        (delivered, hops, frames),
        "the same seed, the same run"
    );
}

/// `n` nodes behind `kinds` in turn (node `i` behind `kinds[i % kinds.len()]`), 10 ms links.
fn natted(n: u32, kinds: &[nodenet::sim::NatKind], seed: u64) -> Sim {
    let ids: Vec<Identity> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_be_bytes());
            Identity::from_seed(&s)
        })
        .collect();
    let nat: Vec<_> = (0..n as usize).map(|i| kinds[i % kinds.len()]).collect();
    let latency = Duration::from_millis(10);
    Sim::with_nats(ids, &CoreConfig::default(), latency, seed, &nat)
}

fn nat_run(seed: u64) -> (String, Vec<nodenet::sim::ConnectRecord>) {
    use nodenet::sim::NatKind;
    let kinds = [
        NatKind::Public,
        NatKind::Public,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::Double,
        NatKind::FullCone,
    ];
    let mut sim = natted(120, &kinds, seed);
    sim.run_for(Duration::from_secs(60));
    for k in 0..24usize {
        sim.connect((k * 7 + 2) % 120, (k * 13 + 1) % 120);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(60));
    let r = sim.report();
    (r.connect_summary().json_fields(), r.connects.clone())
}

#[test]
fn a_natted_network_runs_the_cascade_deterministically() {
    use nodenet::Path;
    use nodenet::sim::NatKind;
    let (report, connects) = nat_run(5);
    assert_eq!(connects.len(), 24, "every connect ends");
    for c in &connects {
        if c.to == NatKind::Public {
            assert_eq!(c.path, Some(Path::Direct), "{c:?}");
        }
        if c.from != NatKind::Public && c.to != NatKind::Public {
            assert_ne!(
                c.path,
                Some(Path::Direct),
                "two NATs never meet directly: {c:?}"
            );
        }
    }
    assert!(
        connects.iter().any(|c| c.path == Some(Path::Punched)),
        "{report}"
    );
    // A symmetric NAT and an easy one end relayed, and the birthday punch that follows
    // replaces the relayed edge; two symmetric NATs stay relayed.
    let pairs: Vec<_> = connects
        .iter()
        .filter(|c| (c.from == NatKind::Symmetric) != (c.to == NatKind::Symmetric))
        .filter(|c| c.path == Some(Path::Relayed))
        .collect();
    assert!(!pairs.is_empty(), "{report}");
    for c in &pairs {
        assert_eq!(c.birthday, Some(true), "{c:?}");
    }
    for c in connects
        .iter()
        .filter(|c| c.from == NatKind::Symmetric && c.to == NatKind::Symmetric)
    {
        assert_eq!(c.birthday, None, "{c:?}");
    }
    assert_eq!(nat_run(5).0, report, "the same seed, the same report");
}

/// Connects from each symmetric NAT of a 60-node network 2 s old, to a port-restricted
/// node and to another symmetric one; then 90 s more.
fn young_run(seed: u64) -> (String, Vec<nodenet::sim::ConnectRecord>) {
    use nodenet::sim::NatKind;
    let kinds = [
        NatKind::Public,
        NatKind::Public,
        NatKind::Symmetric,
        NatKind::PortRestricted,
        NatKind::Symmetric,
    ];
    let mut sim = natted(60, &kinds, seed);
    sim.run_for(Duration::from_secs(2));
    for k in 0..12usize {
        let a = 2 + 5 * k;
        sim.connect(a, a + 1);
        sim.connect(a + 2, (a + 5) % 60);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(90));
    let r = sim.report();
    (r.connect_summary().json_fields(), r.connects.clone())
}

#[test]
fn relayed_edges_keep_trying_to_upgrade_in_the_simulator() {
    use nodenet::Path;
    use nodenet::sim::{NatKind, Upgraded};
    let (report, connects) = young_run(9);
    let relayed: Vec<_> = connects
        .iter()
        .filter(|c| c.path == Some(Path::Relayed))
        .collect();
    // So young a network often has no two relays to attest a peer's host at connect time,
    // and the first birthday punch falls short; a try of the upgrade schedule 10 s later
    // gets through.
    assert!(
        relayed
            .iter()
            .any(|c| c.upgraded == Some(Upgraded::Birthday) && c.upgrade_tries >= 1),
        "{report}"
    );
    for c in &relayed {
        if c.upgraded.is_some() {
            assert_eq!(c.birthday, Some(true), "{c:?}");
        }
        if c.from == NatKind::Symmetric && c.to == NatKind::Symmetric {
            // No punch can work: both tries in 90 s run (10 s, then 60 s after the first
            // one ended), and the edge stays relayed.
            assert_eq!(c.upgrade_tries, 2, "{c:?}");
            assert_eq!(c.upgraded, None, "{c:?}");
        }
    }
    assert!(
        relayed
            .iter()
            .any(|c| c.from == NatKind::Symmetric && c.to == NatKind::Symmetric),
        "{report}"
    );
    assert_eq!(young_run(9).0, report, "the same seed, the same report");
}
