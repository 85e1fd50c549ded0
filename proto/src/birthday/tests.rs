//! Fake-clock tests of the birthday attempt and its limits.

use super::*;

fn addr(endpoint: &str) -> Addr {
    Addr::new("quic", endpoint)
}

fn role(ours: NatType, addrs: &[Addr], public: Option<&str>, attested: Option<&str>) -> Part {
    let public = public.map(addr);
    let attested = attested.map(addr);
    part(ours, addrs, public.as_ref(), attested.as_ref())
}

fn ms(n: u64) -> Time {
    Time(n * 1_000_000)
}

fn peer() -> NodeId {
    NodeId::from_bytes([7; 32])
}

fn drain(a: &mut Attempt) -> Vec<Command> {
    std::iter::from_fn(|| a.poll_command()).collect()
}

#[test]
fn a_side_aims_only_at_the_host_its_relays_attested() {
    // Easy side: the hard peer's claimed host, when the relays saw it there.
    let ok = role(
        NatType::Cone,
        &[],
        Some("203.0.113.7:0"),
        Some("203.0.113.7:0"),
    );
    assert_eq!(
        ok,
        Part::Play(Role::Easy {
            host: "203.0.113.7".into()
        })
    );
    // A claim the relays contradict, or no relay's word: nothing to aim at.
    for attested in [Some("198.51.100.9:0"), None] {
        let p = role(NatType::Cone, &[], Some("203.0.113.7:0"), attested);
        assert_eq!(p, Part::Unverified);
    }
    // Hard side: the easy peer's mapping, under the same rule.
    let mapping = [addr("198.51.100.9:40001")];
    let ok = role(NatType::Symmetric, &mapping, None, Some("198.51.100.9:0"));
    assert_eq!(
        ok,
        Part::Play(Role::Hard {
            easy: mapping[0].clone()
        })
    );
    let p = role(NatType::Symmetric, &mapping, None, Some("203.0.113.7:0"));
    assert_eq!(p, Part::Unverified);
    // Not a birthday pair (or nothing named): the relays' word does not matter.
    for p in [
        role(NatType::Cone, &mapping, None, Some("198.51.100.9:0")),
        role(NatType::Symmetric, &[], Some("203.0.113.7:0"), None),
        role(NatType::Symmetric, &[], None, Some("198.51.100.9:0")),
    ] {
        assert_eq!(p, Part::NotBirthday);
    }
}

#[test]
fn an_attempt_attests_asks_plays_and_books_the_result() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    let mut a = Attempt::new(NatType::Cone, peer(), &config);
    assert_eq!(drain(&mut a), [Command::Attest]);
    a.handle_attested(ms(100), Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(drain(&mut a), [Command::Ask { hard: false }]);
    assert_eq!(a.poll_timeout(), Some(ms(100).after(ANSWER_TIMEOUT)));
    // Our own limits hold the attempt: a second one is refused meanwhile.
    let mut other = Attempt::new(NatType::Cone, NodeId::from_bytes([8; 32]), &config);
    other.handle_attested(ms(100), Some(addr("198.51.100.1:0")), &mut limits);
    assert_eq!(other.outcome(), Some(Outcome::Refused(Refusal::Busy)));
    let answer = Answer {
        agreed: true,
        addrs: vec![],
        public: Some(addr("203.0.113.7:0")),
    };
    a.handle_answer(ms(300), answer, &mut limits);
    assert_eq!(
        drain(&mut a),
        [Command::Play(Role::Easy {
            host: "203.0.113.7".into()
        })]
    );
    assert_eq!(a.poll_timeout(), None, "playing has the role's own timeout");
    a.handle_played(ms(3000), false, 300, &mut limits);
    assert_eq!(a.outcome(), Some(Outcome::Failed));
    // The failure backs the peer off.
    let mut again = Attempt::new(NatType::Cone, peer(), &config);
    let later = ms(3000).after(config.min_interval);
    again.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(again.outcome(), Some(Outcome::Refused(Refusal::Backoff)));
}

#[test]
fn a_peer_naming_another_host_than_our_relays_is_not_played() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    let mut a = Attempt::new(NatType::Symmetric, peer(), &config);
    drain(&mut a);
    a.handle_attested(ms(0), Some(addr("198.51.100.9:0")), &mut limits);
    assert_eq!(drain(&mut a), [Command::Ask { hard: true }]);
    let answer = Answer {
        agreed: true,
        addrs: vec![addr("203.0.113.66:40000")],
        public: None,
    };
    a.handle_answer(ms(100), answer, &mut limits);
    assert!(drain(&mut a).is_empty(), "nothing aimed at the named host");
    assert_eq!(a.outcome(), Some(Outcome::Unverified));
}

#[test]
fn peers_naming_other_hosts_do_not_drain_the_probe_budget() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    // More unverified answers than the hourly budget has room for attempts (10,000
    // probes, 1,750 reserved by each): nothing was sent, so each gives its probes back.
    for i in 0..8u8 {
        let t =
            Time(0).after(config.min_interval * u32::from(i) + Duration::from_nanos(u64::from(i)));
        let mut a = Attempt::new(NatType::Cone, NodeId::from_bytes([i; 32]), &config);
        drain(&mut a);
        a.handle_attested(t, Some(addr("203.0.113.7:0")), &mut limits);
        assert_eq!(drain(&mut a), [Command::Ask { hard: false }], "attempt {i}");
        let answer = Answer {
            agreed: true,
            addrs: vec![],
            public: Some(addr("198.51.100.66:0")),
        };
        a.handle_answer(t, answer, &mut limits);
        assert_eq!(a.outcome(), Some(Outcome::Unverified));
    }
}

#[test]
fn without_relays_word_or_an_answer_nothing_is_sent_and_nothing_is_spent() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    let mut a = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut a);
    a.handle_attested(ms(0), None, &mut limits);
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.outcome(), Some(Outcome::Unverified));

    let mut a = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut a);
    a.handle_attested(ms(0), Some(addr("203.0.113.7:0")), &mut limits);
    drain(&mut a);
    a.handle_timeout(ms(4000), &mut limits);
    assert_eq!(a.outcome(), None, "early");
    a.handle_timeout(ms(5000), &mut limits);
    assert_eq!(a.outcome(), Some(Outcome::Declined));
    // Abandoned: neither the interval nor a backoff holds the next attempt.
    let mut b = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut b);
    b.handle_attested(ms(5000), Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(drain(&mut b), [Command::Ask { hard: false }]);

    let a = Attempt::new(NatType::Unknown, peer(), &config);
    assert_eq!(a.outcome(), Some(Outcome::NotBirthday));
}

#[test]
fn an_aborted_attempt_gives_back_what_it_booked() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    // Dropped while asking: the next attempt may start at once.
    let mut a = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut a);
    a.handle_attested(ms(0), Some(addr("203.0.113.7:0")), &mut limits);
    drain(&mut a);
    a.abort(ms(10), &mut limits);
    a.abort(ms(10), &mut limits);
    let mut b = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut b);
    b.handle_attested(ms(20), Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(
        drain(&mut b),
        [Command::Ask { hard: false }],
        "not stuck running"
    );
    // Dropped while playing: counted as a failure, so the same peer backs off, but
    // nothing stays running.
    let answer = Answer {
        agreed: true,
        addrs: vec![],
        public: Some(addr("203.0.113.7:0")),
    };
    b.handle_answer(ms(30), answer, &mut limits);
    assert!(matches!(drain(&mut b)[..], [Command::Play(_)]));
    b.abort(ms(40), &mut limits);
    assert_eq!(b.outcome(), Some(Outcome::Declined));
    let mut c = Attempt::new(NatType::Cone, peer(), &config);
    drain(&mut c);
    let later = ms(40).after(config.min_interval);
    c.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(c.outcome(), Some(Outcome::Refused(Refusal::Backoff)));
    let mut d = Attempt::new(NatType::Cone, NodeId::from_bytes([9; 32]), &config);
    drain(&mut d);
    d.handle_attested(later, Some(addr("203.0.113.7:0")), &mut limits);
    assert_eq!(
        drain(&mut d),
        [Command::Ask { hard: false }],
        "another peer may go"
    );
}

#[test]
fn a_responder_agrees_only_to_an_attested_pair_within_its_limits() {
    let config = BirthdayConfig::default();
    let mut limits = Limits::new(config);
    let host = addr("203.0.113.7:0");
    let v = respond(
        ms(0),
        NatType::Cone,
        peer(),
        &[],
        Some(&host),
        None,
        &mut limits,
    );
    assert_eq!(v, Verdict::Unverified);
    let v = respond(
        ms(0),
        NatType::Cone,
        peer(),
        &[],
        Some(&host),
        Some(&host),
        &mut limits,
    );
    assert!(matches!(v, Verdict::Play(Role::Easy { .. })));
    // Busy now.
    let other = NodeId::from_bytes([9; 32]);
    let v = respond(
        ms(1),
        NatType::Cone,
        other,
        &[],
        Some(&host),
        Some(&host),
        &mut limits,
    );
    assert_eq!(v, Verdict::Refused);
    assert!(worth_attesting(NatType::Cone, &[], Some(&host)));
    assert!(!worth_attesting(
        NatType::Cone,
        std::slice::from_ref(&host),
        None
    ));
}
