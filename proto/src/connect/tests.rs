//! Fake-clock tests of the cascade, through its public surface only.

use super::*;

type C = Cascade<&'static str>;

const CONFIG: CascadeConfig = CascadeConfig {
    direct_dial_timeout: DIRECT_DIAL_TIMEOUT,
    rendezvous_timeout: Duration::from_secs(10),
};

fn ms(n: u64) -> Time {
    Time(n * 1_000_000)
}

fn addr(s: &str) -> Addr {
    Addr::new("mem", s)
}

fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

fn drain(c: &mut C) -> Vec<Command> {
    std::iter::from_fn(|| c.poll_command()).collect()
}

fn dial(addrs: &[&str], timeout: Duration) -> Command {
    Command::Dial {
        addrs: addrs.iter().map(|a| addr(a)).collect(),
        timeout,
        via: None,
    }
}

fn relay_dial(granted: &str, relay: u8) -> Command {
    Command::Dial {
        addrs: vec![addr(granted)],
        timeout: RELAY_DIAL_TIMEOUT,
        via: Some(id(relay)),
    }
}

/// A relay that is an edge already.
fn edge_relay(n: u8) -> RelayCandidate {
    RelayCandidate {
        relay: id(n),
        addrs: vec![],
    }
}

fn link(n: u8, addrs: &[&str]) -> Command {
    Command::LinkRelay {
        relay: id(n),
        addrs: addrs.iter().map(|a| addr(a)).collect(),
        timeout: RELAY_LINK_TIMEOUT,
    }
}

/// A symmetric cascade past its relay lookup's wait (the lookup went out at 600 ms).
fn at_relays() -> C {
    let mut c = at_punch(true);
    assert_eq!(drain(&mut c), [Command::LookupRelays]);
    assert_eq!(c.poll_timeout(), Some(ms(1100)));
    c.handle_timeout(ms(1100), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
    c
}

/// A cascade past the rendezvous at 100 ms, whose direct dial failed at 600 ms.
fn at_punch(symmetric: bool) -> C {
    let mut c = C::new(ms(0), vec![], symmetric, CONFIG);
    assert_eq!(drain(&mut c), [Command::StartRendezvous]);
    c.handle_rendezvous(ms(100), vec![addr("a")]);
    assert_eq!(drain(&mut c), [dial(&["a"], DIRECT_DIAL_TIMEOUT)]);
    c.handle_dialed(ms(600), Err("refused"), EdgeNow::None);
    c
}

#[test]
fn a_known_address_that_answers_needs_no_rendezvous() {
    let mut c = C::new(ms(0), vec![addr("k")], false, CONFIG);
    assert_eq!(drain(&mut c), [dial(&["k"], DIRECT_DIAL_TIMEOUT)]);
    assert_eq!(c.poll_timeout(), None, "a dial has its own limit");
    c.handle_dialed(ms(20), Ok(()), EdgeNow::Direct);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Direct,
            how: How::Dialed
        })
    );
}

#[test]
fn a_rendezvous_is_resent_with_backoff_then_expires() {
    let mut c = C::new(ms(0), vec![addr("stale")], false, CONFIG);
    drain(&mut c);
    // A stale known address is no step of its own: on to the rendezvous.
    c.handle_dialed(ms(500), Err("timeout"), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::StartRendezvous]);
    let mut resent = Vec::new();
    while c.outcome().is_none() {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t, EdgeNow::None);
        if drain(&mut c) == [Command::ResendRendezvous] {
            resent.push(t.0 / 1_000_000);
        }
    }
    // 500 ms after the start, then 1 s, 2 s, 4 s after each resend; none at the deadline.
    assert_eq!(resent, [1000, 2000, 4000, 8000]);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Failed {
            step: Step::Rendezvous,
            error: Failure::Timeout(Duration::from_secs(10))
        })
    );
    // An early or late answer changes nothing now.
    c.handle_rendezvous(ms(10_600), vec![addr("a")]);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn a_failed_direct_dial_punches_and_a_silent_punch_goes_to_the_relays() {
    let mut c = at_punch(false);
    assert_eq!(
        drain(&mut c),
        [Command::LookupRelays, Command::StartPunch],
        "the relays near the target are looked up while the punch runs"
    );
    assert_eq!(c.poll_timeout(), Some(ms(600).after(PUNCH_TIMEOUT)));
    c.handle_timeout(ms(3000), EdgeNow::None);
    assert!(drain(&mut c).is_empty(), "early: nothing");
    c.handle_timeout(ms(5600), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
    let four = (1..=4).map(edge_relay).collect();
    c.handle_relays(ms(5600), four, EdgeNow::None);
    assert_eq!(drain(&mut c), [link(1, &[])]);
    c.handle_relay_linked(ms(5600), Ok(()), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(1) }]);
    assert_eq!(c.poll_timeout(), Some(ms(7600)));
    // The first relay never answers: the second is asked after the grant timeout.
    c.handle_timeout(ms(7600), EdgeNow::None);
    assert_eq!(drain(&mut c), [link(2, &[])]);
    c.handle_relay_linked(ms(7600), Ok(()), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
    c.handle_relay_answer(ms(7700), Ok(addr("via2")), EdgeNow::None);
    assert_eq!(drain(&mut c), [relay_dial("via2", 2)]);
    c.handle_dialed(ms(7800), Ok(()), EdgeNow::Relayed);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Relayed,
            how: How::Relay {
                relay: id(2),
                addr: addr("via2")
            }
        })
    );
}

#[test]
fn a_timed_punch_waits_half_the_round_trip_then_retries_until_a_crossed_edge() {
    let mut c = at_punch(false);
    drain(&mut c);
    // The answer comes 200 ms after the Connect: we punch 100 ms after our Sync.
    c.handle_punch_answer(
        ms(800),
        &[addr("b")],
        true,
        vec![addr("a"), addr("b")],
        EdgeNow::None,
    );
    assert_eq!(drain(&mut c), [Command::PunchSync]);
    assert_eq!(c.poll_timeout(), Some(ms(900)));
    c.handle_timeout(ms(900), EdgeNow::None);
    let deadline = ms(600).after(PUNCH_TIMEOUT);
    assert_eq!(
        drain(&mut c),
        [
            Command::PunchBurst {
                addrs: vec![addr("a"), addr("b")]
            },
            dial(&["a", "b"], deadline.since(ms(900)))
        ]
    );
    // Refused at once (the peer's datagrams are not there yet): again a punch interval
    // later, without another burst.
    c.handle_dialed(ms(910), Err("refused"), EdgeNow::None);
    assert_eq!(c.poll_timeout(), Some(ms(910).after(PUNCH_INTERVAL)));
    c.handle_timeout(ms(960), EdgeNow::None);
    assert_eq!(drain(&mut c), [dial(&["a", "b"], deadline.since(ms(960)))]);
    // Meanwhile the peer's dial through the hole won.
    c.handle_dialed(ms(970), Err("refused"), EdgeNow::Direct);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Punched,
            how: How::Crossed
        })
    );
}

#[test]
fn a_punch_dial_that_fails_at_the_deadline_ends_the_punch() {
    let mut c = at_punch(false);
    drain(&mut c);
    c.handle_punch_answer(ms(700), &[addr("b")], false, vec![addr("b")], EdgeNow::None);
    assert_eq!(drain(&mut c).len(), 2, "a burst and a dial");
    c.handle_dialed(ms(5550), Err("timeout"), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
    assert_eq!(c.poll_timeout(), None);
    c.handle_relays(ms(5550), vec![], EdgeNow::None);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Failed {
            step: Step::Strategy(Strategy::Relay),
            error: Failure::NoRelay
        })
    );
}

#[test]
fn a_punch_answer_with_nothing_new_skips_to_the_relays() {
    let mut c = at_punch(false);
    drain(&mut c);
    // Only the address the direct dial already tried: no mapping to punch toward. The
    // relays wait for the lookup's answers (sent at 600 ms) first.
    c.handle_punch_answer(ms(700), &[addr("a")], false, vec![addr("a")], EdgeNow::None);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(ms(1100)));
    c.handle_timeout(ms(1000), EdgeNow::None);
    assert!(drain(&mut c).is_empty(), "early: nothing");
    c.handle_timeout(ms(1100), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::FindRelays { n: RELAYS_TRIED }]);
}

#[test]
fn a_relay_that_is_not_an_edge_is_dialed_first_and_a_failed_link_moves_on() {
    let mut c = at_relays();
    let far = RelayCandidate {
        relay: id(1),
        addrs: vec![addr("r1")],
    };
    let near = RelayCandidate {
        relay: id(2),
        addrs: vec![addr("r2")],
    };
    c.handle_relays(ms(1100), vec![far, near], EdgeNow::None);
    assert_eq!(drain(&mut c), [link(1, &["r1"])]);
    assert_eq!(c.poll_timeout(), None, "the link dial has its own limit");
    c.handle_relay_linked(ms(3100), Err("timeout"), EdgeNow::None);
    assert_eq!(drain(&mut c), [link(2, &["r2"])]);
    // A stale link answer, or a relay answer while linking, is no answer.
    c.handle_relay_answer(ms(3150), Ok(addr("bogus")), EdgeNow::None);
    assert!(drain(&mut c).is_empty());
    c.handle_relay_linked(ms(3200), Ok(()), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
    c.handle_relay_linked(ms(3250), Ok(()), EdgeNow::None);
    assert!(drain(&mut c).is_empty(), "linked once");
    c.handle_relay_answer(ms(3300), Ok(addr("via2")), EdgeNow::None);
    assert_eq!(drain(&mut c), [relay_dial("via2", 2)]);
    c.handle_dialed(ms(3400), Err("refused"), EdgeNow::None);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Failed {
            step: Step::Strategy(Strategy::Relay),
            error: Failure::Driver("refused")
        })
    );
}

#[test]
fn an_edge_the_target_opened_during_the_lookup_wait_ends_it() {
    let mut c = at_punch(true);
    drain(&mut c);
    c.handle_timeout(ms(1100), EdgeNow::Relayed);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Relayed,
            how: How::Crossed
        }),
        "a crossed relayed edge is reported as relayed"
    );
    assert!(drain(&mut c).is_empty());
}

#[test]
fn behind_a_symmetric_nat_the_punch_is_skipped() {
    let mut c = at_relays();
    c.handle_relays(ms(1100), vec![edge_relay(1)], EdgeNow::None);
    assert_eq!(drain(&mut c), [link(1, &[])]);
    c.handle_relay_linked(ms(1100), Ok(()), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(1) }]);
    c.handle_relay_answer(ms(1200), Err(Failure::Busy), EdgeNow::None);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Failed {
            step: Step::Strategy(Strategy::Relay),
            error: Failure::Busy
        })
    );
}

#[test]
fn every_relay_failing_reports_the_last_failure_unless_an_edge_crossed() {
    let mut c = at_relays();
    c.handle_relays(ms(1100), vec![edge_relay(1), edge_relay(2)], EdgeNow::None);
    drain(&mut c);
    c.handle_relay_linked(ms(1100), Ok(()), EdgeNow::None);
    drain(&mut c);
    c.handle_relay_answer(ms(1200), Ok(addr("via1")), EdgeNow::None);
    drain(&mut c);
    c.handle_dialed(ms(1300), Err("refused"), EdgeNow::None);
    assert_eq!(drain(&mut c), [link(2, &[])]);
    c.handle_relay_linked(ms(1300), Ok(()), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::AskRelay { relay: id(2) }]);
    c.handle_relay_answer(
        ms(900),
        Err(Failure::Timeout(RELAY_GRANT_TIMEOUT)),
        EdgeNow::Relayed,
    );
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Relayed,
            how: How::Crossed
        })
    );
    assert!(drain(&mut c).is_empty(), "nothing after the end");
}

#[test]
fn an_upgrade_is_a_punch_and_nothing_after_it() {
    let mut c = C::upgrade(ms(0), false, CONFIG);
    assert_eq!(drain(&mut c), [Command::StartPunch]);
    c.handle_punch_answer(
        ms(100),
        &[addr("b")],
        false,
        vec![addr("b")],
        EdgeNow::Relayed,
    );
    drain(&mut c);
    c.handle_dialed(ms(5000), Err("timeout"), EdgeNow::Relayed);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Failed {
            step: Step::Strategy(Strategy::Punch),
            error: Failure::Driver("timeout")
        }),
        "no relay asked, and the relayed edge it was to replace is no crossed dial"
    );
    let mut c = C::upgrade(ms(0), true, CONFIG);
    assert!(drain(&mut c).is_empty());
    assert!(matches!(
        c.outcome(),
        Some(Outcome::Failed {
            error: Failure::SymmetricNat,
            ..
        })
    ));
}

#[test]
fn a_nat_found_symmetric_during_the_rendezvous_skips_the_punch() {
    let mut c = C::new(ms(0), vec![], false, CONFIG);
    drain(&mut c);
    c.handle_rendezvous(ms(100), vec![addr("a")]);
    drain(&mut c);
    c.set_symmetric(true);
    c.handle_dialed(ms(600), Err("refused"), EdgeNow::None);
    assert_eq!(drain(&mut c), [Command::LookupRelays], "no punch");
    assert_eq!(c.poll_timeout(), Some(ms(1100)));
}

#[test]
fn a_direct_dial_that_loses_to_the_targets_own_dial_is_connected() {
    let mut c = C::new(ms(0), vec![], false, CONFIG);
    drain(&mut c);
    c.handle_rendezvous(ms(100), vec![addr("a")]);
    drain(&mut c);
    c.handle_dialed(ms(150), Err("duplicate"), EdgeNow::Direct);
    assert_eq!(
        c.outcome(),
        Some(&Outcome::Connected {
            path: Path::Direct,
            how: How::Crossed
        })
    );
}
