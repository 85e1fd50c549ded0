//! docs/ARCHITECTURE.md's table of crate dependencies must say what the manifests say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crate directories and the names the table uses for them.
const CRATES: [&str; 11] = [
    "kad",
    "identity",
    "wire",
    "pow",
    "rendezvous",
    "nat",
    "transport",
    "routing",
    "proto",
    "node",
    "cli",
];

fn short(package: &str) -> String {
    match package {
        "nodenet" => "node".to_owned(),
        p => p.trim_start_matches("nodenet-").to_owned(),
    }
}

/// The nodenet crates in a manifest's `[dependencies]` section.
fn manifest_deps(root: &Path, krate: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && (line.starts_with("nodenet-") || line.starts_with("nodenet.")) {
            let name = line.split(['.', ' ', '=']).next().unwrap();
            out.insert(short(name));
        }
    }
    out
}

/// The table's rows: crate -> the crates it says it depends on.
fn documented(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| crate | depends on |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let deps = cells[1]
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "(none)")
            .map(str::to_owned)
            .collect();
        rows.insert(cells[0].to_owned(), deps);
    }
    rows
}

#[test]
fn the_documented_crate_graph_is_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let table = documented(root);
    assert_eq!(
        table.keys().cloned().collect::<BTreeSet<_>>(),
        CRATES.iter().map(|c| (*c).to_owned()).collect(),
        "the table lists every crate once"
    );
    for krate in CRATES {
        assert_eq!(
            table[krate],
            manifest_deps(root, krate),
            "docs/ARCHITECTURE.md's row for {krate} disagrees with {krate}/Cargo.toml"
        );
    }
}
