//! End-to-end: the real `nodenet` binary, as separate processes on loopback.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nodenet");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodenet-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `nodenet run`, killed on drop if the test did not stop it.
struct Daemon {
    child: Child,
    id: String,
    listen: String,
    api: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &std::path::Path, name: &str, bootstrap: Option<&Self>) -> Self {
        Self::start_with(dir, name, bootstrap, &[])
    }

    fn start_with(
        dir: &std::path::Path,
        name: &str,
        bootstrap: Option<&Self>,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--addr", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .args(extra)
            .args(["--accept-calls", "--log-format", "json", "--seed"])
            .arg(dir.join(format!("{name}.seed")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", &format!("{}@{}", b.id, b.listen)]);
        }
        let mut child = cmd.spawn().unwrap();
        // The contract: the first stdout line names the node and its address.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let words: Vec<&str> = first.split_whitespace().collect();
        assert_eq!(words.len(), 5, "{first:?}");
        assert_eq!((words[0], words[2], words[3]), ("node", "listening", "on"));
        assert_eq!(words[1].len(), 64);
        assert!(words[1].bytes().all(|b| b.is_ascii_hexdigit()));
        // The JSON lifecycle log names the API's bound address.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
                if v["event"] == "started" {
                    let _ = tx.send(v["api"].as_str().unwrap().to_owned());
                }
            }
        });
        let api = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        Self {
            child,
            id: words[1].to_owned(),
            listen: words[4].to_owned(),
            api,
        }
    }

    /// SIGTERM, then the exit status (within 15 s).
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status code and body.
fn http(api: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_error(api: &str, path: &str, body: &[u8]) {
    let (status, text) = http(api, "POST", path, body);
    assert_eq!(
        status,
        400,
        "{path} {:?}: {text}",
        String::from_utf8_lossy(&body[..body.len().min(80)])
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
    let (status, _) = http(api, "GET", "/health", b"");
    assert_eq!(status, 200, "the node runs on");
}

/// Lines of a child's stdout, as they come.
fn lines(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn three_processes_in_a_chain_route_a_send_end_to_end() {
    let dir = scratch("chain");
    let a = Daemon::start(&dir, "a", None);
    let b = Daemon::start(&dir, "b", Some(&a));
    let c = Daemon::start(&dir, "c", Some(&b));

    // Follow A's deliveries with the client subcommand.
    let mut listen = Command::new(BIN)
        .args(["listen", "--api", &a.api])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let heard = lines(listen.stdout.take().unwrap());

    // Send from C (which only knows B) to A's NodeId until it arrives (routing is best
    // effort while the overlay forms), at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let out = Command::new(BIN)
            .args(["send", "--api", &c.api, &a.id, "hello from c"])
            .output()
            .unwrap();
        assert!(
            out.status.success() || Instant::now() < deadline,
            "send failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(line) = heard.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
        assert!(Instant::now() < deadline, "no delivery at A within 30 s");
    };
    let v: serde_json::Value = serde_json::from_str(&delivery).unwrap();
    assert_eq!(v["type"], "delivery");
    assert_eq!(v["from"], c.id.as_str());
    assert_eq!(v["via"], "routed");
    assert_eq!(v["data"], "aGVsbG8gZnJvbSBj"); // base64("hello from c")

    // /info, /metrics, /connect.
    let (status, info) = http(&c.api, "GET", "/info", b"");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["id"], c.id.as_str());
    assert_eq!(info["listen"], c.listen.as_str());
    assert!(info["edges"].as_u64().unwrap() >= 1);
    assert!(info["version"].is_string());
    assert!(info["nat_type"].is_string());
    let (status, metrics) = http(&c.api, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE nodenet_originated_total counter"));
    assert!(metrics.contains("nodenet_dropped_bad_sig_total 0"));
    // The transport's counters too: an operator sees a spoofed-Initial flood being shed.
    assert!(metrics.contains("# TYPE nodenet_transport_inbound_retried_total counter"));
    // On loopback no reflexive report is taken: the type stays unknown.
    assert!(
        metrics.contains("nodenet_nat_type{type=\"unknown\"} 1"),
        "{metrics}"
    );
    let (status, body) = http(
        &c.api,
        "POST",
        "/connect",
        format!("{{\"to\":\"{}\"}}", a.id).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "direct");
    assert!(v["ms"].as_f64().unwrap() >= 0.0);
    let (status, body) = http(
        &c.api,
        "POST",
        "/send-direct",
        format!("{{\"to\":\"{}\",\"data\":\"aGk=\"}}", a.id).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");

    // A test call: every datagram comes back through the media session.
    let (status, body) = http(
        &c.api,
        "POST",
        "/call",
        format!("{{\"to\":\"{}\",\"secs\":1,\"fps\":50}}", a.id).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sent"], 50, "{v}");
    assert_eq!(v["echoed"], 50, "{v}");
    assert!(v["rtt_ms_p99"].as_f64().unwrap() < 1000.0, "{v}");

    // Every bad input is a 400 with a JSON error, and the node runs on.
    let to = &a.id;
    for bad in [
        format!("{{\"to\":\"{to}\",\"fps\":0}}"),
        format!("{{\"to\":\"{to}\",\"secs\":1000}}"),
        format!("{{\"to\":\"{to}\",\"size\":5}}"),
        format!("{{\"to\":\"{to}\",\"size\":1201}}"),
        format!("{{\"to\":\"{to}\",\"volume\":11}}"),
    ] {
        json_error(&c.api, "/call", bad.as_bytes());
    }
    json_error(&c.api, "/send", b"{not json");
    json_error(&c.api, "/send", b"{\"to\":\"abc\",\"data\":\"aGk=\"}");
    json_error(
        &c.api,
        "/send",
        format!("{{\"to\":\"{to}\",\"data\":\"***\"}}").as_bytes(),
    );
    json_error(&c.api, "/send", format!("{{\"to\":\"{to}\"}}").as_bytes());
    json_error(&c.api, "/send-direct", b"[]");
    json_error(&c.api, "/connect", b"{\"to\":\"zz\"}");
    // Data over one frame, and a body over the API's limit.
    let big = "QUFB".repeat(70_000 / 3);
    json_error(
        &c.api,
        "/send",
        format!("{{\"to\":\"{to}\",\"data\":\"{big}\"}}").as_bytes(),
    );
    let huge = "QUFB".repeat(200_000 / 3);
    json_error(
        &c.api,
        "/send",
        format!("{{\"to\":\"{to}\",\"data\":\"{huge}\"}}").as_bytes(),
    );

    // Graceful stop on SIGTERM: exit 0, also with an `/events` subscriber still attached
    // (its stream ends, and `nodenet listen` with it).
    for d in [c, b, a] {
        assert!(d.stop().success());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = listen.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "listen outlived the node");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_command_lines_fail_with_one_line_and_exit_code_2() {
    let dir = scratch("bad");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let seed = dir.join("s.seed");
    let seed = seed.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &[
            "run",
            "--seed",
            seed,
            "--bootstrap",
            "127.0.0.1:4242",
            "--api",
            "127.0.0.1:0",
        ],
        &[
            "run",
            "--seed",
            seed,
            "--bootstrap",
            "abc@127.0.0.1:4242",
            "--api",
            "127.0.0.1:0",
        ],
        &[
            "run",
            "--seed",
            seed,
            "--addr",
            "127.0.0.1:0",
            "--bootstrap",
            "",
            "--api",
            "127.0.0.1:0",
        ],
        &["run", "--seed", seed, "--api", "127.0.0.1:0"],
        &[
            "run",
            "--seed",
            seed,
            "--addr",
            "nowhere",
            "--api",
            "127.0.0.1:0",
        ],
    ];
    for args in cases {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("nodenet: "), "{err}");
    }
    // An unreadable seed (a directory) and a malformed one.
    let (code, err) = run(&[
        "run",
        "--seed",
        dir.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    std::fs::write(dir.join("junk.seed"), "xyz").unwrap();
    let junk = dir.join("junk.seed");
    let (code, err) = run(&[
        "run",
        "--seed",
        junk.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("hex digits"), "{err}");
    // Nothing was minted by a refused command line.
    assert!(!dir.join("s.seed").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_runs_a_small_overlay_and_exits_0() {
    let out = Command::new(BIN)
        .args(["demo", "--nodes", "8", "--sends", "16", "--connects", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("16/16 delivered"), "{stdout}");
    assert!(stdout.contains("3/3 connected"), "{stdout}");
}

#[test]
fn a_file_and_a_pipe_cross_between_two_nodes_and_a_refusal_is_an_error() {
    let dir = scratch("files");
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let a = Daemon::start_with(
        &dir,
        "a",
        None,
        &["--accept-files", inbox.to_str().unwrap()],
    );
    let b = Daemon::start(&dir, "b", Some(&a));
    // 24 MiB of a pattern a dropped or shifted chunk cannot reproduce.
    let body: Vec<u8> = (0..24u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let file = dir.join("big file.bin");
    std::fs::write(&file, &body).unwrap();
    let send = |to: &str, api: &str| {
        Command::new(BIN)
            .args(["send-file", "--api", api, to])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = send(&a.id, &b.api);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("sent big file.bin: 25165824 bytes in ")
            && stdout.contains("MiB/s, path direct, blake2b ")
            && stdout.contains("verified by the receiver"),
        "{stdout}"
    );
    assert!(std::fs::read(inbox.join("big file.bin")).unwrap() == body);
    // The same name again is kept beside the first, never over it.
    assert!(send(&a.id, &b.api).status.success());
    assert!(std::fs::read(inbox.join("big file.bin.1")).unwrap() == body);
    // No part files are left behind.
    let names: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A node that takes no files refuses: exit 1 and the reason.
    let out = send(&b.id, &a.api);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no handler for the protocol"), "{stderr}");

    // A pipe: stdin on b's side comes out of `pipe --accept` on a's side.
    let mut accept = Command::new(BIN)
        .args(["pipe", "--accept", "--api", &a.api])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sender = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    // `pipe --accept` registers its listener once its request arrives: retry until then.
    while sender.is_none() {
        let mut child = Command::new(BIN)
            .args(["pipe", "--api", &b.api, &a.id])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A refused pipe exits before reading it all: a broken pipe here is expected then.
        let _ = child.stdin.take().unwrap().write_all(&body[..3 << 20]);
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            sender = Some(String::from_utf8_lossy(&out.stderr).into_owned());
        } else {
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut got = Vec::new();
    accept.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    assert!(accept.wait().unwrap().success());
    assert!(
        got == body[..3 << 20],
        "the pipe carried {} bytes",
        got.len()
    );
    assert!(sender.unwrap().starts_with("piped 3145728 bytes in "));
    for d in [b, a] {
        assert!(d.stop().success());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
