//! The real-NAT lab: network namespaces wired as a small internet behind kernel NATs, the
//! `nodenet` processes started in them, and the checks the test makes of them (see
//! `real_nat.rs` for the picture).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_nodenet");
pub(crate) const API: &str = "127.0.0.1:9800";
/// Where the full-cone router forwards its node's port.
pub(crate) const FULL_CONE_HOST: &str = "192.168.14.2:4242";

/// Runs a command; true when it exits 0.
pub(crate) fn run(args: &[&str]) -> bool {
    let out = Command::new(args[0]).args(&args[1..]).output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    if !ok {
        let err = out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
        eprintln!("command failed: {args:?}: {err:?}");
    }
    ok
}

/// The namespaces and processes of one run; torn down on drop, whatever happened.
pub(crate) struct Lab {
    pub(crate) prefix: String,
    pub(crate) children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in NAMESPACES {
            run(&["ip", "netns", "del", &self.ns(ns)]);
        }
    }
}

pub(crate) const NAMESPACES: [&str; 19] = [
    "inet", "p1", "p2", "p3", "ra", "a", "rb", "b", "rf", "f", "rs1", "s1", "rs2", "s2", "rd1",
    "rd2", "d", "rc", "c",
];
/// `b`'s public address, which `rc` blocks at first.
pub(crate) const B_PUBLIC: &str = "172.16.11.2";

impl Lab {
    pub(crate) fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub(crate) fn exec(&self, ns: &str, args: &[&str]) -> bool {
        let ns = self.ns(ns);
        let mut all = vec!["ip", "netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A veth pair between two namespaces, addressed `a_ip/24` and `b_ip/24`.
    pub(crate) fn link(&self, a: &str, a_if: &str, a_ip: &str, b: &str, b_if: &str, b_ip: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        assert!(run(&[
            "ip", "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if, "netns",
            &nb
        ]));
        for (ns, ifname, ip) in [(&na, a_if, a_ip), (&nb, b_if, b_ip)] {
            assert!(run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                ifname
            ]));
            assert!(run(&["ip", "-n", ns, "link", "set", ifname, "up"]));
        }
    }

    pub(crate) fn route(&self, ns: &str, via: &str) {
        assert!(run(&[
            "ip",
            "-n",
            &self.ns(ns),
            "route",
            "add",
            "default",
            "via",
            via
        ]));
    }

    /// A NAT router `r` between the internet (WAN `wan_ip` on subnet `wan_net`.x) and a LAN
    /// host `host` at `lan_net`.2. `symmetric` randomises the port per destination; `forward`
    /// maps the node's port straight through (endpoint-independent filtering: full cone).
    pub(crate) fn nat(
        &self,
        r: &str,
        upstream: &str,
        wan_net: &str,
        host: &str,
        lan_net: &str,
        kind: Nat,
    ) {
        self.link(
            r,
            "wan",
            &format!("{wan_net}.2"),
            upstream,
            &format!("up{r}"),
            &format!("{wan_net}.1"),
        );
        self.route(r, &format!("{wan_net}.1"));
        self.link(
            host,
            "eth0",
            &format!("{lan_net}.2"),
            r,
            "lan",
            &format!("{lan_net}.1"),
        );
        self.route(host, &format!("{lan_net}.1"));
        self.nat_rules(r, "wan", kind);
    }

    /// Forwarding, masquerading out of `wan` and a stateful firewall on `r`.
    pub(crate) fn nat_rules(&self, r: &str, wan: &str, kind: Nat) {
        assert!(self.exec(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        let mut masq = vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan];
        masq.extend_from_slice(&["-j", "MASQUERADE"]);
        if kind == Nat::Symmetric {
            masq.push("--random-fully");
        }
        assert!(self.exec(r, &masq));
        if kind == Nat::FullCone {
            assert!(self.exec(
                r,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-i",
                    wan,
                    "-p",
                    "udp",
                    "--dport",
                    "4242",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    FULL_CONE_HOST
                ]
            ));
        }
        // The stateful firewall of any home router: nothing unsolicited comes in. (Without
        // it, a dropped unsolicited packet leaves a conntrack entry that steals the port the
        // next outbound packet would have been mapped to.)
        let state = if kind == Nat::FullCone {
            "INVALID"
        } else {
            "NEW,INVALID"
        };
        for chain in ["INPUT", "FORWARD"] {
            assert!(self.exec(
                r,
                &[
                    "iptables",
                    "-A",
                    chain,
                    "-i",
                    wan,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    state,
                    "-j",
                    "DROP"
                ]
            ));
        }
    }

    pub(crate) fn build(&self) {
        for ns in NAMESPACES {
            assert!(run(&["ip", "netns", "add", &self.ns(ns)]), "netns {ns}");
            assert!(run(&["ip", "-n", &self.ns(ns), "link", "set", "lo", "up"]));
        }
        assert!(self.exec("inet", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        for (i, p) in ["p1", "p2", "p3"].iter().enumerate() {
            let net = format!("172.16.{}", i + 1);
            self.link(
                p,
                "eth0",
                &format!("{net}.2"),
                "inet",
                &format!("v{p}"),
                &format!("{net}.1"),
            );
            self.route(p, &format!("{net}.1"));
        }
        self.nat(
            "ra",
            "inet",
            "172.16.10",
            "a",
            "192.168.10",
            Nat::PortRestricted,
        );
        self.nat(
            "rb",
            "inet",
            "172.16.11",
            "b",
            "192.168.11",
            Nat::PortRestricted,
        );
        self.nat("rf", "inet", "172.16.14", "f", "192.168.14", Nat::FullCone);
        self.nat(
            "rs1",
            "inet",
            "172.16.12",
            "s1",
            "192.168.12",
            Nat::Symmetric,
        );
        self.nat(
            "rs2",
            "inet",
            "172.16.15",
            "s2",
            "192.168.15",
            Nat::Symmetric,
        );
        // Two levels: d behind rd2 behind rd1.
        self.nat(
            "rd1",
            "inet",
            "172.16.13",
            "rd2",
            "10.13.0",
            Nat::PortRestricted,
        );
        // rd2's WAN is rd1's LAN (set up above as rd1's host): add rd2's own LAN and NAT.
        self.link("d", "eth0", "192.168.13.2", "rd2", "lan", "192.168.13.1");
        self.route("d", "192.168.13.1");
        self.nat_rules("rd2", "eth0", Nat::PortRestricted);
        self.nat(
            "rc",
            "inet",
            "172.16.16",
            "c",
            "192.168.16",
            Nat::PortRestricted,
        );
        self.block("rc", B_PUBLIC, true);
    }

    /// Drops (or stops dropping) everything `r` forwards to or from `ip`.
    pub(crate) fn block(&self, r: &str, ip: &str, on: bool) {
        let op = if on { "-I" } else { "-D" };
        for dir in ["-s", "-d"] {
            assert!(self.exec(r, &["iptables", op, "FORWARD", dir, ip, "-j", "DROP"]));
        }
    }

    /// Starts `nodenet run` in `ns`; returns its NodeId.
    pub(crate) fn start(
        &mut self,
        dir: &std::path::Path,
        ns: &str,
        ip: &str,
        bootstrap: Option<&str>,
    ) -> String {
        let seed = dir.join(format!("{ns}.seed"));
        let nsn = self.ns(ns);
        let listen = format!("{ip}:4242");
        let mut args = vec![
            "netns",
            "exec",
            nsn.as_str(),
            BIN,
            "run",
            "--addr",
            listen.as_str(),
            "--api",
            API,
            "--accept-calls",
            // The relays' budgets lifted, so a 64 MiB file crosses a relay in seconds.
            "--relay-session-mbit",
            "4000",
            "--relay-total-mbit",
            "8000",
            // Attempts back to back: the test runs twenty.
            "--birthday-interval",
            "0",
            "--seed",
        ];
        let seed = seed.to_string_lossy().into_owned();
        args.push(&seed);
        let inbox = dir.join(format!("{ns}-inbox"));
        std::fs::create_dir_all(&inbox).unwrap();
        let inbox = inbox.to_string_lossy().into_owned();
        args.extend_from_slice(&["--accept-files", inbox.as_str()]);
        // The public nodes volunteer as relays.
        if ns.starts_with('p') {
            args.push("--relay");
        }
        if let Some(b) = bootstrap {
            args.extend_from_slice(&["--bootstrap", b]);
        }
        // Each node's log stays in the scratch directory (kept when the test fails).
        let log = std::fs::File::create(dir.join(format!("{ns}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        self.children.push(child);
        first
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("{ns}: {first:?}"))
            .to_owned()
    }

    /// A client subcommand inside `ns`; its stdout as JSON, or its stderr as the error.
    pub(crate) fn client(&self, ns: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let nsn = self.ns(ns);
        let mut all = vec!["netns", "exec", nsn.as_str(), BIN];
        all.extend_from_slice(args);
        let out = Command::new("ip").args(&all).output().unwrap();
        if out.status.success() {
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    pub(crate) fn info(&self, ns: &str) -> serde_json::Value {
        self.client(ns, &["info", "--api", API]).unwrap_or_default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nat {
    PortRestricted,
    FullCone,
    Symmetric,
}

/// `from` sends 4,000 bytes to `to` over their direct edge; `to` receives them byte-exact.
pub(crate) fn data_crosses(
    lab: &mut Lab,
    ids: &std::collections::HashMap<&str, String>,
    from: &str,
    to: &str,
) {
    let nsn = lab.ns(to);
    let mut listen = Command::new("ip")
        .args(["netns", "exec", nsn.as_str(), BIN, "listen", "--api", API])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = listen.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lab.children.push(listen);
    std::thread::sleep(Duration::from_millis(500));
    let text: String = (0..4000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    lab.client(from, &["send", "--direct", "--api", API, &ids[to], &text])
        .unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("a delivery at {to}"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["via"], "direct");
    assert_eq!(v["from"], ids[from].as_str());
    use base64::Engine as _;
    let got = base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, text.as_bytes(), "{from} → {to}");
}
