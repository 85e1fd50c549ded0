//! Mints a fresh identity that meets a proof-of-work difficulty and prints its NodeId.
//!
//! `cargo run --release -p nodenet-pow --example mint -- --difficulty 16 [--threads N]`
//!
//! The seed is not saved anywhere: this shows what minting costs, it does not make a node.

use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Instant;

use nodenet_pow::Solver;

fn main() -> ExitCode {
    let mut difficulty = 16u32;
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value.as_deref()) {
            ("--difficulty", Some(v)) => v.parse().map(|d| difficulty = d).is_ok(),
            ("--threads", Some(v)) => v.parse().map(|t| threads = NonZeroUsize::new(t)).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("usage: mint [--difficulty BITS] [--threads N]");
            return ExitCode::from(2);
        }
    }
    let mut solver = match Solver::new(difficulty) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mint: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(t) = threads {
        solver = solver.threads(t);
    }
    let started = Instant::now();
    let result = solver.solve(&mut rand_core::UnwrapErr(getrandom::SysRng));
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(identity) => {
            let id = identity.node_id();
            println!("node {id}");
            println!(
                "difficulty {difficulty}: {} leading zero bits, {} seeds in {secs:.3} s ({:.0} seeds/s)",
                id.leading_zeros(),
                solver.attempts(),
                solver.attempts() as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint: {e}");
            ExitCode::FAILURE
        }
    }
}
