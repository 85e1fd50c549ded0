//! `nodenet`: the bundled node. A thin wiring of the library (identity, QUIC transport, node)
//! plus what an operator needs: a persisted identity, a local control API, structured logs,
//! graceful shutdown, client subcommands and a demo.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod api;
mod call;
mod client;
mod config;
mod demo;
mod run;
mod transfer;

use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::json;

/// The default address of the control API: loopback, so only this machine can drive it.
pub(crate) const DEFAULT_API: &str = "127.0.0.1:9800";

#[derive(Parser, Debug)]
#[command(
    name = "nodenet",
    version,
    about = "A nodenet node: route to any node by its identity alone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        args: run::RunArgs,
        /// Log lines as text or as one JSON object each.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Send a text to a NodeId through a running node (routed over the overlay, or with
    /// --direct over a direct edge, connecting first if needed).
    Send {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// Over a direct edge: the bytes transit no other node.
        #[arg(long)]
        direct: bool,
        /// The target NodeId (64 hex digits).
        to: String,
        /// The text to send.
        text: String,
    },
    /// Open a direct edge from a running node to a NodeId; prints the path and the time.
    Connect {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// The target NodeId (64 hex digits).
        to: String,
    },
    /// A test call from a running node to a NodeId (which must run with --accept-calls):
    /// media datagrams out and echoed back; prints the path, loss and round-trip times.
    Call {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// Seconds of media.
        #[arg(long, default_value_t = 3)]
        secs: u32,
        /// Datagrams a second.
        #[arg(long, default_value_t = 50)]
        fps: u32,
        /// Bytes per datagram.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// The target NodeId (64 hex digits).
        to: String,
    },
    /// Send a file to a NodeId through a running node, over a stream; the receiving node must
    /// run with --accept-files. Shows progress, then bytes, time, MiB/s, the path taken and
    /// the content hash the receiver verified.
    SendFile {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// The target NodeId (64 hex digits).
        to: String,
        /// The file to send (its name, without the directories, is the name it gets).
        file: std::path::PathBuf,
    },
    /// Pipe bytes between nodes: with a NodeId, stdin goes to that node; with --accept, the
    /// next pipe any peer opens to the running node goes to stdout.
    Pipe {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// Wait for a pipe from a peer and write it to stdout.
        #[arg(long, conflicts_with = "to")]
        accept: bool,
        /// The target NodeId (64 hex digits).
        #[arg(required_unless_present = "accept")]
        to: Option<String>,
    },
    /// Close a running node's edge to a NodeId.
    Disconnect {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
        /// The peer's NodeId (64 hex digits).
        to: String,
    },
    /// Print a running node's identity and state.
    Info {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Print what a running node receives, one JSON line per delivery.
    Listen {
        /// The running node's API.
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Run a whole overlay on loopback in this process and show it working.
    Demo {
        /// Nodes in the overlay.
        #[arg(long, default_value_t = 16)]
        nodes: usize,
        /// Routed sends between random pairs (default: four per node).
        #[arg(long)]
        sends: Option<usize>,
        /// Direct connections opened between random pairs (default: one per two nodes).
        #[arg(long)]
        connects: Option<usize>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A one-line error on stderr and the exit code.
fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("nodenet: {msg}");
    ExitCode::from(code)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// A client subcommand about one peer: checks the NodeId `to` (exit code 2 if it is not
/// one), POSTs `fields` with it to `path` and prints the answer.
fn post_to(
    rt: &tokio::runtime::Runtime,
    api: &str,
    path: &str,
    to: &str,
    mut fields: serde_json::Value,
) -> ExitCode {
    if let Err(e) = to.parse::<nodenet::NodeId>() {
        return fail(2, format!("{to:?} is not a NodeId: {e}"));
    }
    fields["to"] = json!(to);
    match rt.block_on(client::call_ok(api, Method::POST, path, Some(&fields))) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Run { args, log_format } => {
            init_logs(log_format);
            match rt.block_on(run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), e),
            }
        }
        Command::Send {
            api,
            direct,
            to,
            text,
        } => {
            let path = if direct { "/send-direct" } else { "/send" };
            let data = BASE64.encode(text.as_bytes());
            post_to(&rt, &api, path, &to, json!({ "data": data }))
        }
        Command::Connect { api, to } => post_to(&rt, &api, "/connect", &to, json!({})),
        Command::Call {
            api,
            secs,
            fps,
            size,
            to,
        } => {
            let body = json!({ "secs": secs, "fps": fps, "size": size });
            post_to(&rt, &api, "/call", &to, body)
        }
        Command::SendFile { api, to, file } => {
            if let Err(e) = to.parse::<nodenet::NodeId>() {
                return fail(2, format!("{to:?} is not a NodeId: {e}"));
            }
            match rt.block_on(client::send_file(&api, &to, &file)) {
                Ok(v) => {
                    println!(
                        "sent {}: {} bytes in {:.2} s, {:.1} MiB/s, path {}, blake2b {} verified by the receiver",
                        v["name"].as_str().unwrap_or("?"),
                        v["bytes"],
                        v["secs"].as_f64().unwrap_or(0.0),
                        v["mib_s"].as_f64().unwrap_or(0.0),
                        v["path"].as_str().unwrap_or("?"),
                        v["blake2b"].as_str().unwrap_or("?"),
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Command::Pipe { api, accept, to } => {
            let result = match (accept, to) {
                (true, _) => rt.block_on(client::pipe_out(&api)),
                (false, Some(to)) => {
                    if let Err(e) = to.parse::<nodenet::NodeId>() {
                        return fail(2, format!("{to:?} is not a NodeId: {e}"));
                    }
                    rt.block_on(client::pipe_in(&api, &to)).map(|v| {
                        eprintln!(
                            "piped {} bytes in {:.2} s, {:.1} MiB/s, path {}",
                            v["bytes"],
                            v["secs"].as_f64().unwrap_or(0.0),
                            v["mib_s"].as_f64().unwrap_or(0.0),
                            v["path"].as_str().unwrap_or("?"),
                        );
                    })
                }
                (false, None) => return fail(2, "a NodeId or --accept is required"),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Command::Disconnect { api, to } => post_to(&rt, &api, "/disconnect", &to, json!({})),
        Command::Info { api } => {
            match rt.block_on(client::call_ok(&api, Method::GET, "/info", None)) {
                Ok(v) => {
                    println!("{v:#}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        Command::Listen { api } => {
            let follow = client::follow_events(&api, |event| {
                let is_delivery = serde_json::from_str::<serde_json::Value>(event)
                    .is_ok_and(|v| v["type"] == "delivery");
                if is_delivery {
                    println!("{event}");
                }
                true
            });
            match rt.block_on(follow) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, e),
            }
        }
        Command::Demo {
            nodes,
            sends,
            connects,
        } => {
            let args = demo::DemoArgs {
                nodes,
                sends: sends.unwrap_or(nodes * 4),
                connects: connects.unwrap_or(nodes / 2),
            };
            match rt.block_on(demo::demo(args)) {
                Ok(mut summary) => {
                    println!("{}", demo::report(nodes, &mut summary));
                    if summary.all_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(2, e),
            }
        }
    }
}
