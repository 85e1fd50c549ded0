//! Privileged tests: Linux network namespaces made for one test run, and a test harness whose
//! skips show.
//!
//! A test that needs root and `ip netns` cannot pass on a laptop without them, and must not
//! *look* passed either. [`main`] runs such tests under a libtest-compatible harness (the test
//! target sets `harness = false`):
//!
//! - with the capability, each test runs;
//! - without it, each test is reported `ignored`, and the reason is printed;
//! - without it **and** with `CI=true`, each test fails with the reason: CI runs as root, so a
//!   missing capability there is a broken machine, not a skip.
//!
//! [`Netns`] owns one namespace and deletes it on drop however the test ends; [`Netns::enter`]
//! runs a closure on a thread inside it, so sockets a test binds there (a whole tokio
//! transport included) live in that namespace while the test stays one process.

use std::fs::File;
use std::net::{SocketAddrV4, UdpSocket};
use std::process::Command;

use libtest_mimic::{Arguments, Trial};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};

/// What a privileged test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Root and `ip netns`.
    Netns,
    /// Root, `ip netns`, and iptables with the nat table inside a namespace.
    NetnsIptables,
}

/// Runs a command; `Err` carries its stderr when it fails or cannot start.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this machine cannot run tests that need `needs`, if it cannot.
pub fn missing_capability(needs: Needs) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        return Some("not root".into());
    }
    let probe = format!("nnprobe-{}", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!(
            "`ip netns add` fails (no iproute2 or no namespace support): {e}"
        ));
    }
    let iptables = match needs {
        Needs::Netns => Ok(()),
        Needs::NetnsIptables => {
            run(&["ip", "netns", "exec", &probe, "iptables", "-t", "nat", "-L"])
        }
    };
    let _ = run(&["ip", "netns", "del", &probe]);
    iptables
        .err()
        .map(|e| format!("iptables with the nat table is not available: {e}"))
}

/// Whether this run is CI's (`CI=true`), where a privileged test must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The `main` of a privileged test target (`harness = false`): runs `tests` under a
/// libtest-compatible harness (filters, `--list`, `--exact` and the rest work as usual), each
/// marked `[privileged]`. See the module docs for what happens without the capability.
pub fn main(needs: Needs, tests: &[(&'static str, fn())]) -> ! {
    let args = Arguments::from_args();
    let missing = missing_capability(needs);
    let ci = in_ci();
    if let Some(why) = &missing {
        if ci {
            eprintln!("CI=true but this machine cannot run privileged tests: {why}");
        } else {
            eprintln!("SKIPPED privileged tests (reported as ignored): {why}");
        }
    }
    let trials = tests
        .iter()
        .map(|&(name, test)| {
            let missing = missing.clone();
            let skip = missing.is_some() && !ci;
            Trial::test(name, move || match missing {
                Some(why) => Err(format!("CI=true, but: {why}").into()),
                None => {
                    test();
                    Ok(())
                }
            })
            .with_kind("privileged")
            .with_ignored_flag(skip)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// One network namespace, named `nn<pid>-<name>` so parallel runs never collide; deleted on
/// drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    ///
    /// # Panics
    /// If `ip netns add` fails (check [`missing_capability`] first).
    pub fn add(name: &str) -> Self {
        let name = format!("nn{}-{name}", std::process::id());
        run(&["ip", "netns", "add", &name]).unwrap();
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args…`.
    ///
    /// # Panics
    /// If the command fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all).unwrap();
    }

    /// Runs `args` inside the namespace.
    ///
    /// # Panics
    /// If the command fails.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all).unwrap();
    }

    /// Runs `f` on a fresh thread that has joined this namespace, and returns its result.
    /// Sockets `f` creates belong to the namespace for their whole life, whichever thread uses
    /// them later; enter a tokio runtime inside `f` to bind a transport there.
    ///
    /// # Panics
    /// If the thread cannot join the namespace, or if `f` panics.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A UDP socket, in the calling thread's namespace, bound to `src` whether or not `src` is one
/// of the namespace's addresses (`IP_TRANSPARENT`): what it sends carries a source address the
/// sender does not own. For spoofing tests, called inside [`Netns::enter`] on a namespace the
/// test made.
///
/// # Errors
/// If the socket cannot be made or bound (for one, `src` is taken).
pub fn spoofing_socket(src: SocketAddrV4) -> nix::Result<UdpSocket> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::IpTransparent, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(src))?;
    Ok(UdpSocket::from(fd))
}

/// A veth pair: `a_if` in `a` with `a_cidr`, `b_if` in `b` with `b_cidr`, both up.
///
/// # Panics
/// If a command fails.
pub fn veth(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])
    .unwrap();
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        ns.ip(&["addr", "add", cidr, "dev", ifname]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
}
