//! Nonces and the core's randomness: keyed by the OS, never repeated across restarts.

use super::*;

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
