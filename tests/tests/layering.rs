//! The house's layering, read from `cargo metadata` and `cargo tree`: a new dependency edge that
//! breaks it fails here, naming the edge.
//!
//! ```text
//! rearview-capture   (recorder core)      → nothing of ours
//! rearview-config    (policy, trust)      → nothing of ours
//! rearview-protocol  (device ↔ console)   → config, evidence at most
//! rearview-uploader  (device side)        → config, protocol
//! rearview-console                        → capture (read side), config, protocol; never
//!                                           agent or uploader
//! rearview-agent                          → anything shipped but the console
//! rearview-evidence  (evidence formats)   → nothing of ours
//! rearview-verify    (offline verifier)   → evidence, capture (open side); and no X11, HTTP
//!                                           or SQLite anywhere in its tree
//! rearview-testkit   (tests and benches)  → never a dependency of a shipped crate
//! ```
//!
//! Normal and build dependencies count; dev-dependencies may take the test kit and the other
//! crates, with one exception: the console and the uploader never depend on each other, not
//! even for tests (a test that needs both ends lives in this crate, `tests/tests/protocol`), so
//! neither end's tests can lean on the other's internals instead of the contract. The console's
//! tree also must not contain a capture backend.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// What each shipped crate may depend on among ours (normal and build edges).
fn allowed(from: &str) -> Option<&'static [&'static str]> {
    Some(match from {
        "rearview-capture" | "rearview-config" | "rearview-evidence" => &[],
        "rearview-verify" => &["rearview-capture", "rearview-evidence"],
        "rearview-protocol" => &["rearview-config", "rearview-evidence"],
        "rearview-uploader" => &["rearview-config", "rearview-protocol"],
        "rearview-console" => {
            &["rearview-capture", "rearview-config", "rearview-evidence", "rearview-protocol"]
        }
        "rearview-agent" => &[
            "rearview-capture",
            "rearview-config",
            "rearview-evidence",
            "rearview-protocol",
            "rearview-uploader",
        ],
        _ => return None,
    })
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Every edge between two of our crates: (from, to, kind), kind `normal`, `build` or `dev`.
fn our_edges() -> Vec<(String, String, String)> {
    let meta: Value = serde_json::from_str(&run(cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ])))
    .expect("cargo metadata prints JSON");
    let ours: Vec<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut edges = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let from = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default();
            if to == from || !ours.iter().any(|o| o == to) {
                continue;
            }
            let kind = d["kind"].as_str().unwrap_or("normal");
            edges.push((from.to_owned(), to.to_owned(), kind.to_owned()));
        }
    }
    edges
}

/// The two ends of the protocol: no edge of any kind (dev included) may join them.
const ENDS: [&str; 2] = ["rearview-console", "rearview-uploader"];

/// The edges of `edges` that break the layering, each with why.
fn forbidden(edges: &[(String, String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, to, kind) in edges {
        if ENDS.contains(&from.as_str()) && ENDS.contains(&to.as_str()) {
            bad.push(format!(
                "{from} → {to} ({kind}): the console and the uploader meet only in \
                 rearview-protocol; a test that needs both belongs in tests/tests/protocol"
            ));
            continue;
        }
        if kind == "dev" {
            continue;
        }
        if to == "rearview-testkit" && allowed(from).is_some() {
            bad.push(format!("{from} → {to} ({kind}): the test kit never ships"));
            continue;
        }
        if let Some(ok) = allowed(from) {
            if !ok.contains(&to.as_str()) {
                bad.push(format!("{from} → {to} ({kind}): {from} may depend only on {ok:?}"));
            }
        }
    }
    bad
}

#[test]
fn no_crate_depends_on_what_its_layer_forbids() {
    let edges = our_edges();
    // The check sees the edges it is about (a metadata read that found nothing proves nothing).
    assert!(
        edges.iter().any(|(f, t, _)| f == "rearview-agent" && t == "rearview-uploader"),
        "no agent → uploader edge found: {edges:?}"
    );
    let bad = forbidden(&edges);
    assert!(bad.is_empty(), "forbidden dependency edges:\n{}", bad.join("\n"));
}

#[test]
fn the_rules_refuse_the_edges_they_name() {
    let edge = |f: &str, t: &str, k: &str| (f.to_owned(), t.to_owned(), k.to_owned());
    let cases = [
        edge("rearview-console", "rearview-uploader", "normal"),
        edge("rearview-console", "rearview-agent", "normal"),
        edge("rearview-config", "rearview-capture", "normal"),
        edge("rearview-capture", "rearview-config", "build"),
        edge("rearview-protocol", "rearview-uploader", "normal"),
        edge("rearview-agent", "rearview-testkit", "normal"),
        edge("rearview-agent", "rearview-console", "normal"),
        edge("rearview-console", "rearview-uploader", "dev"),
        edge("rearview-uploader", "rearview-console", "dev"),
        edge("rearview-uploader", "rearview-console", "normal"),
        edge("rearview-evidence", "rearview-config", "normal"),
        edge("rearview-verify", "rearview-console", "normal"),
        edge("rearview-verify", "rearview-testkit", "normal"),
    ];
    for case in &cases {
        assert_eq!(forbidden(std::slice::from_ref(case)).len(), 1, "{case:?} is let through");
    }
    let fine = [
        edge("rearview-agent", "rearview-testkit", "dev"),
        edge("rearview-agent", "rearview-console", "dev"),
        edge("rearview-tests", "rearview-uploader", "dev"),
        edge("rearview-protocol", "rearview-config", "normal"),
        edge("rearview-bench", "rearview-testkit", "normal"),
    ];
    assert!(forbidden(&fine).is_empty(), "{:?}", forbidden(&fine));
}

/// Every crate in `package`'s normal and build tree.
fn tree_of(package: &str) -> BTreeMap<String, ()> {
    let tree = run(cargo().args(["tree", "-p", package, "-e", "normal,build", "--prefix", "none"]));
    let mut crates = BTreeMap::new();
    for line in tree.lines() {
        if let Some(name) = line.split_whitespace().next() {
            crates.insert(name.to_owned(), ());
        }
    }
    crates
}

/// Whoever receives evidence can read what checks it: the verifier links no X11, no HTTP
/// client or server, no SQLite.
#[test]
fn the_verifier_links_no_x11_http_or_sqlite() {
    let crates = tree_of("rearview-verify");
    assert!(crates.contains_key("rearview-evidence"), "{crates:?}");
    let heavy: Vec<&String> = crates
        .keys()
        .filter(|c| {
            ["x11rb", "xcap", "rdev", "x11", "reqwest", "hyper", "axum", "rusqlite", "tokio"]
                .contains(&c.as_str())
                || c.starts_with("libsqlite")
        })
        .collect();
    assert!(heavy.is_empty(), "the verifier's tree holds {heavy:?}");
}

/// The console opens what devices recorded; it links no capture backend (nor what they pull in).
#[test]
fn the_console_links_no_capture_backend() {
    let crates = tree_of("rearview-console");
    assert!(crates.contains_key("rearview-capture"), "the console reads segments: {crates:?}");
    let backends: Vec<&String> = crates
        .keys()
        .filter(|c| {
            ["x11rb", "xcap", "rdev", "x11"].contains(&c.as_str())
                || c.starts_with("pipewire")
                || c.starts_with("wayland")
        })
        .collect();
    assert!(backends.is_empty(), "the console's tree holds capture backends: {backends:?}");
}
