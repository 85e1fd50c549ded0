//! Real NATs: the `nodenet` binary in Linux network namespaces behind kernel NAT (iptables
//! MASQUERADE with the stateful firewall every home router has), wired as a small internet:
//!
//! ```text
//!  p1 172.16.1.2   p2 172.16.2.2   p3 172.16.3.2        public, three subnets
//!        \              |              /
//!         +---------- inet ----------+----------+----------+----------+
//!        /        |          |           |          \        \          \
//!   ra (port-   rb (port-  rf (full-   rs1 (sym-  rs2 (sym-   rd1 -- rd2  rc (port-
//!    restricted) restricted) cone)     metric)    metric)        |      restricted)
//!      a           b          f          s1         s2            d        c
//! ```
//!
//! It checks what each node learns of itself (reflexive address, NAT type), that cone pairs
//! connect through their NATs by hole-punch, that pairs with a symmetric NAT connect through
//! a volunteer relay (the public nodes), that a relayed edge is upgraded to a punched one
//! once a punch can work (`rc` drops all traffic between `c` and `b` at first, then lifts
//! the block), and that data crosses byte-exact. It needs root, `ip netns` and
//! iptables: without them it is reported `ignored` with the reason, and with `CI=true` it
//! fails (see `nodenet_testkit::netns`). Every address used lives inside the namespaces it
//! creates, and they are deleted however the test ends.

#[path = "real_nat/lab.rs"]
mod lab;

use lab::*;

use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    nodenet_testkit::netns::main(
        nodenet_testkit::netns::Needs::NetnsIptables,
        &[(
            "nodes_behind_real_nats_learn_their_type_and_punch_through",
            nodes_behind_real_nats_learn_their_type_and_punch_through,
        )],
    )
}

fn nodes_behind_real_nats_learn_their_type_and_punch_through() {
    let prefix = format!("nn{}", std::process::id() % 100_000);
    let mut lab = Lab {
        prefix,
        children: Vec::new(),
    };
    lab.build();
    let dir = std::env::temp_dir().join(format!("nodenet-real-nat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let p1 = lab.start(&dir, "p1", "172.16.1.2", None);
    let boot = format!("{p1}@172.16.1.2:4242");
    let mut ids = std::collections::HashMap::new();
    ids.insert("p1", p1);
    for (ns, ip) in [
        ("p2", "172.16.2.2"),
        ("p3", "172.16.3.2"),
        ("a", "192.168.10.2"),
        ("b", "192.168.11.2"),
        ("f", "192.168.14.2"),
        ("s1", "192.168.12.2"),
        ("s2", "192.168.15.2"),
        ("d", "192.168.13.2"),
        ("c", "192.168.16.2"),
    ] {
        let id = lab.start(&dir, ns, ip, Some(&boot));
        ids.insert(ns, id);
    }

    // What each node concludes about itself (default maintenance: within a minute).
    let expect = [
        ("p1", "public", Some("172.16.1.2:4242")),
        ("p2", "public", Some("172.16.2.2:4242")),
        ("p3", "public", Some("172.16.3.2:4242")),
        ("a", "cone", Some("172.16.10.2:4242")),
        ("b", "cone", Some("172.16.11.2:4242")),
        ("f", "cone", Some("172.16.14.2:4242")),
        ("d", "cone", Some("172.16.13.2:4242")),
        ("c", "cone", Some("172.16.16.2:4242")),
        ("s1", "symmetric", None),
        ("s2", "symmetric", None),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let wrong: Vec<String> = expect
            .iter()
            .filter_map(|(ns, nat, reflexive)| {
                let info = lab.info(ns);
                let ok = info["nat_type"] == *nat && info["reflexive"].as_str() == *reflexive;
                (!ok).then(|| format!("{ns}: {} {}", info["nat_type"], info["reflexive"]))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "after 90 s: {wrong:?}");
        std::thread::sleep(Duration::from_secs(2));
    }

    // Every connect, with its path and time: the table of the closing note.
    let mut table = Vec::new();
    let mut connect = |from: &str, to: &str| {
        let started = Instant::now();
        let r = lab.client(from, &["connect", "--api", API, &ids[to]]);
        let ms = started.elapsed().as_millis();
        let path = r
            .as_ref()
            .map(|v| v["path"].as_str().unwrap_or("?").to_owned())
            .unwrap_or_else(|e| format!("failed: {e}"));
        eprintln!("| {from} → {to} | {path} | {ms} ms |");
        table.push((from.to_owned(), to.to_owned(), path.clone()));
        path
    };
    // Cone pairs punch through both NATs (a full-cone peer may also be dialed directly).
    assert_eq!(connect("a", "b"), "punched");
    assert_eq!(connect("d", "a"), "punched");
    assert_eq!(connect("b", "d"), "punched");
    assert!(["punched", "direct"].contains(&connect("a", "f").as_str()));
    assert_eq!(connect("f", "b"), "punched");
    // A symmetric pair cannot punch; with no relay yet, the connect says where it failed.
    // Symmetric NATs cannot punch: a volunteer relay carries the edge, end to end.
    assert_eq!(connect("s1", "s2"), "relayed");
    assert_eq!(connect("a", "s2"), "relayed");
    // A punch that a firewall blocks falls back to a relay; once the block is lifted, the
    // background upgrade (10 s after the relayed edge came up) punches through and replaces
    // the relayed edge, which the next connect finds punched.
    assert_eq!(connect("c", "b"), "relayed");
    assert_eq!(lab.info("c")["relayed_edges"], 1);
    lab.block("rc", B_PUBLIC, false);
    let lifted = Instant::now();
    let deadline = lifted + Duration::from_secs(40);
    while lab.info("c")["relayed_edges"] != 0 {
        assert!(
            Instant::now() < deadline,
            "still relayed 40 s after the block was lifted"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "| c → b upgraded | punched | {} ms after the block was lifted |",
        lifted.elapsed().as_millis()
    );
    assert_eq!(connect("c", "b"), "punched");

    // Data crosses a punched, a relayed and an upgraded path byte-exact, over the direct edge.
    for (from, to) in [("a", "b"), ("s1", "s2"), ("c", "b")] {
        data_crosses(&mut lab, &ids, from, to);
    }

    // A call rides the path its edge found: 50 datagrams a second for 2 s, echoed back by
    // the callee through the same media session, none lost.
    for (from, to, path) in [
        ("a", "b", "punched"),
        ("s1", "s2", "relayed"),
        ("c", "b", "punched"),
    ] {
        let v = lab
            .client(from, &["call", "--api", API, "--secs", "2", &ids[to]])
            .unwrap_or_else(|e| panic!("call {from} → {to}: {e}"));
        eprintln!(
            "| call {from} → {to} | {} | {}/{} echoed | rtt p50 {} ms |",
            v["path"], v["echoed"], v["sent"], v["rtt_ms_p50"]
        );
        assert_eq!(v["path"], path, "{from} → {to}: {v}");
        assert_eq!(v["sent"], 100, "{v}");
        assert_eq!(v["echoed"], v["sent"], "{from} → {to}: {v}");
    }

    // A 64 MiB file crosses a punched and a relayed path byte-exact (a stream on a connection
    // of its own over the edge's path; the receiver checks its BLAKE2b-256).
    let file = dir.join("big.bin");
    let body: Vec<u8> = (0..64u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    std::fs::write(&file, &body).unwrap();
    for (from, to, path) in [("a", "b", "punched"), ("s1", "s2", "relayed")] {
        let nsn = lab.ns(from);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                nsn.as_str(),
                BIN,
                "send-file",
                "--api",
                API,
            ])
            .arg(&ids[to])
            .arg(&file)
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success(),
            "file {from} → {to}: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("| file {from} → {to} | {line} |");
        assert!(line.contains(&format!("path {path},")), "{line}");
        let got = std::fs::read(dir.join(format!("{to}-inbox")).join("big.bin")).unwrap();
        assert!(got == body, "file {from} → {to} arrived altered");
    }

    // Birthday punching, symmetric ↔ port-restricted cone: each attempt drops the pair's
    // edge, connects again (relayed at first: make-before-break), and waits for the
    // background birthday punch to replace the relayed edge. Both sides take turns starting.
    // Where each node's log stood when the rounds began (what follows is theirs).
    let log_of = |ns: &str| std::fs::read_to_string(dir.join(format!("{ns}.log"))).unwrap();
    let nat_nodes = ["a", "b", "c", "d", "s1", "s2"];
    let rounds_from: Vec<usize> = nat_nodes.iter().map(|ns| log_of(ns).len()).collect();
    let pairs = [
        ("s1", "a"),
        ("b", "s2"),
        ("s2", "d"),
        ("c", "s1"),
        ("s1", "b"),
        ("a", "s2"),
        ("s2", "c"),
        ("d", "s1"),
    ];
    let mut times = Vec::new();
    let mut failed = Vec::new();
    let mut last_birthday = None;
    let mut k = 0;
    // Twenty attempts in which the connect ended relayed. (Rarely a pair reconnects
    // directly: the easy side's earlier probes can leave its NAT open toward the hard
    // side's main mapping. That is a success, but not a birthday punch; it is not counted.)
    while times.len() + failed.len() < 20 {
        assert!(k < 60, "too few relayed connects to measure");
        let (from, to) = pairs[k % pairs.len()];
        k += 1;
        let _ = lab.client(from, &["disconnect", "--api", API, &ids[to]]);
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let first = lab.client(from, &["connect", "--api", API, &ids[to]]);
        if first.as_ref().is_ok_and(|v| v["path"] == "direct") {
            eprintln!("| birthday {k}: {from} → {to} | reconnected direct, not counted |");
            continue;
        }
        // The birthday punch starts when the connect has come back relayed.
        let relayed_at = Instant::now();
        let mut punched = false;
        while started.elapsed() < Duration::from_secs(25) {
            let r = lab.client(from, &["connect", "--api", API, &ids[to]]);
            if r.as_ref().is_ok_and(|v| v["path"] == "punched") {
                punched = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (ms, punch_ms) = (
            started.elapsed().as_millis(),
            relayed_at.elapsed().as_millis(),
        );
        eprintln!(
            "| birthday {k}: {from} → {to} | first {} | {} | {ms} ms from connect, {punch_ms} ms from relayed |",
            first.map_or_else(|e| e, |v| v["path"].to_string()),
            if punched { "punched" } else { "not punched" },
        );
        if punched {
            times.push(punch_ms);
            last_birthday = Some((from, to));
        } else {
            failed.push((from, to));
        }
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(u128::MAX);
    eprintln!(
        "| birthday | {}/20 punched | median {median} ms from relayed to punched | failed {failed:?} |",
        times.len()
    );
    // Two relays of each side's choosing must agree on the host it aims at (issue 17): with
    // the lab's three relays, the carrying one excluded, an attempt can fail when one of the
    // other two does not answer the vote in time. Measured 20/20 on three runs (since a
    // symmetric node no longer takes reports over relayed edges for its address).
    assert!(
        times.len() >= 18,
        "birthday punches: {}/20, failed {failed:?}",
        times.len()
    );
    assert!(median < 5000, "median {median} ms");
    // Few attempts in the rounds were turned down for want of the relays' word (the nodes
    // log `birthday_unverified`, or a request with `unverified=true`). A vote can fall short
    // when a relay answers late, and the edge's upgrade asks again; a node that names a
    // wrong host for itself is turned down every time (a symmetric node once took peers'
    // reports over relayed edges for its own address: 15/20, all its pairs refused).
    // The connect API sees the punched edge on one side; the other side logs its end of the
    // attempt a few tens of milliseconds later, so the last round may not be in its log yet.
    let count = || {
        let (mut played, mut unverified) = (0, 0);
        for (ns, from) in nat_nodes.iter().zip(&rounds_from) {
            let log = log_of(ns);
            let rounds = &log[*from..];
            unverified += rounds.matches("birthday_unverified").count()
                + rounds.matches("unverified=true").count();
            // Only attempts that ended punched: a failed pair's retries must not make up
            // for a punched attempt's missing line.
            played += rounds
                .lines()
                .filter(|l| l.contains("birthday_done") && l.contains("ok=true"))
                .count();
        }
        (played, unverified)
    };
    let settle = Instant::now();
    let (mut played, mut unverified) = count();
    while played < 2 * times.len() && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        (played, unverified) = count();
    }
    eprintln!("| birthday | {unverified} turned down for want of the relays' word |");
    assert!(
        unverified <= 2,
        "{unverified} attempts without the relays' word"
    );
    assert!(
        played >= 2 * times.len(),
        "both sides log each punched attempt"
    );
    // The last pair met by a birthday punch carries data byte-exact, and a call.
    let (from, to) = last_birthday.expect("a birthday pair");
    data_crosses(&mut lab, &ids, from, to);
    // Both ways: the hard side calls from the punch's socket, the easy side calls into it.
    for (caller, callee) in [(from, to), (to, from)] {
        let v = lab
            .client(caller, &["call", "--api", API, "--secs", "2", &ids[callee]])
            .unwrap();
        eprintln!(
            "| call {caller} → {callee} | {} | {}/{} echoed |",
            v["path"], v["echoed"], v["sent"]
        );
        assert_eq!(v["echoed"], v["sent"], "{caller} → {callee}: {v}");
        assert!(v["sent"].as_u64().unwrap() > 0);
    }
    // Two symmetric NATs stay relayed.
    let _ = lab.client("s1", &["disconnect", "--api", API, &ids["s2"]]);
    std::thread::sleep(Duration::from_millis(300));
    let path = |lab: &Lab| {
        lab.client("s1", &["connect", "--api", API, &ids["s2"]])
            .map(|v| v["path"].clone())
            .unwrap_or_default()
    };
    assert_eq!(path(&lab), "relayed");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(path(&lab), "relayed");
    // NODENET_KEEP_LOGS=1 keeps the nodes' logs of a passing run too.
    if std::env::var_os("NODENET_KEEP_LOGS").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
