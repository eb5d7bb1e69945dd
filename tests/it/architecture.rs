//! The architecture's invariants, checked like rust-analyzer's tidy tests (see
//! docs/architecture.md): which crate may depend on which, what relist-core may not know,
//! and no import cycle between the top-level modules of any crate.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each crate of the workspace and its sources.
const CRATES: [(&str, &str); 5] = [
    ("relist-core", "crates/relist-core/src"),
    ("relist-proto", "crates/relist-proto/src"),
    ("relist-pg", "crates/relist-pg/src"),
    ("relist-server", "crates/relist-server/src"),
    ("relist", "src"),
];

/// The packages `krate` is built from, as `cargo tree` resolves them (normal dependencies
/// only: tests and build scripts may use more).
fn tree(krate: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn relist_core_knows_no_runtime_transport_or_command_line() {
    let deps = tree("relist-core");
    assert!(deps.contains("sled"), "the tree was not read: {deps:?}");
    for banned in ["tokio", "tonic", "axum", "clap", "prost", "anyhow", "hyper"] {
        assert!(
            !deps.contains(banned),
            "relist-core depends on {banned} (cargo tree -p relist-core -e normal -i {banned})"
        );
    }
}

/// The shared store implements the core's storage interface and nothing else: no
/// transport, no protobuf, no command line (its PostgreSQL client runs its own runtime).
#[test]
fn relist_pg_knows_no_transport_or_command_line() {
    let deps = tree("relist-pg");
    assert!(deps.contains("postgres"), "the tree was not read: {deps:?}");
    for banned in ["tonic", "axum", "clap", "prost", "anyhow", "hyper"] {
        assert!(
            !deps.contains(banned),
            "relist-pg depends on {banned} (cargo tree -p relist-pg -e normal -i {banned})"
        );
    }
}

#[test]
fn crates_depend_only_downwards_and_only_the_binary_knows_clap() {
    let allowed: [(&str, &[&str]); 4] = [
        ("relist-core", &[]),
        ("relist-proto", &["relist-core"]),
        ("relist-pg", &["relist-core"]),
        ("relist-server", &["relist-core", "relist-proto", "relist-pg"]),
    ];
    for (krate, may) in allowed {
        let deps = tree(krate);
        let ours: Vec<&String> = deps.iter().filter(|d| d.starts_with("relist") && *d != krate).collect();
        for d in &ours {
            assert!(
                may.contains(&d.as_str()),
                "{krate} depends on {d}; it may depend on {may:?}"
            );
        }
        assert!(
            !deps.contains("clap"),
            "{krate} depends on clap: only the binary parses flags"
        );
        // Libraries say what failed with thiserror types; anyhow is the binary's.
        let manifest = std::fs::read_to_string(
            root()
                .join(CRATES.iter().find(|c| c.0 == krate).unwrap().1)
                .join("../Cargo.toml"),
        )
        .expect("manifest");
        let deps_section = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        assert!(
            !deps_section.contains("anyhow"),
            "{krate} lists anyhow in [dependencies]"
        );
    }
}

/// Every module of a crate: its path (`fingerprint::pdq`; the crate root is "") and file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).expect("under src").with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("lib" | "main" | "mod")) {
                    parts.pop();
                }
                out.insert(parts.join("::"), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// Source without comments, string and char literals, so that prose and messages are not
/// read as paths.
fn code_of(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        if rest.starts_with(&['/', '/']) {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            i += 2;
            while i < c.len() && !c[i..].starts_with(&['*', '/']) {
                i += 1;
            }
            i += 2;
        } else if c[i] == 'r' && rest.iter().skip(1).find(|&&ch| ch != '#') == Some(&'"') && !prev_is_ident(&c, i) {
            // r"..." or r#"..."#: ends at a quote followed by as many hashes.
            let hashes = rest.iter().skip(1).take_while(|&&ch| ch == '#').count();
            i += 2 + hashes;
            while i < c.len()
                && !(c[i] == '"' && c[i + 1..].iter().take(hashes).filter(|&&ch| ch == '#').count() == hashes)
            {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// The paths a piece of code names from `crate::`, `super::` or `self::`, with use trees
/// (`crate::{a, b::{c, d}}`) expanded: each as its segments, the first one the anchor.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    fn ident(s: &str) -> Option<(&str, &str)> {
        let s = s.trim_start();
        let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
        (end > 0).then(|| (&s[..end], &s[end..]))
    }
    /// Reads the rest of a path or use tree after `prefix::`, pushing every full path.
    fn tree(mut s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            let t = s.trim_start();
            if let Some(inner) = t.strip_prefix('{') {
                let mut depth = 1;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' | ',' if depth == 1 => {
                            tree(&inner[start..i], path.clone(), out);
                            start = i + 1;
                            if c == '}' {
                                return;
                            }
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                return;
            }
            let Some((name, rest)) = ident(t) else {
                if path.len() > 1 {
                    out.push(path);
                }
                return;
            };
            path.push(name.to_string());
            match rest.strip_prefix("::") {
                Some(more) => s = more,
                None => {
                    out.push(path);
                    return;
                }
            }
        }
    }
    let mut out = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(anchor) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let head = anchor.trim_end_matches(':').to_string();
            tree(&code[i + anchor.len()..], vec![head], &mut out);
        }
    }
    out
}

/// Edges between top-level modules: (from, to) -> the first file that makes it.
fn module_graph(src: &Path) -> BTreeMap<(String, String), String> {
    let mods = modules(src);
    // `pub use module::Name;` at the crate root: `crate::Name` means that module.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    for root_file in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root_file)) else {
            continue;
        };
        for line in code_of(&text).lines() {
            if let Some(rest) = line.trim().strip_prefix("pub use ") {
                let parts: Vec<&str> = rest.trim_end_matches(';').split("::").collect();
                if parts.len() == 2 && mods.contains_key(parts[0]) {
                    reexports.insert(parts[1].trim().to_string(), parts[0].to_string());
                }
            }
        }
    }
    let mut edges = BTreeMap::new();
    for (module, file) in &mods {
        if module.is_empty() {
            continue;
        }
        let here: Vec<&str> = module.split("::").collect();
        let text = std::fs::read_to_string(file).expect("read source");
        for path in named_paths(&code_of(&text)) {
            let mut full: Vec<String> = match path[0].as_str() {
                "crate" => Vec::new(),
                "self" => here.iter().map(|s| s.to_string()).collect(),
                _ => here[..here.len() - 1].iter().map(|s| s.to_string()).collect(),
            };
            let mut rest = &path[1..];
            while rest.first().is_some_and(|s| s == "super") {
                full.pop();
                rest = &rest[1..];
            }
            full.extend(rest.iter().cloned());
            let target = (1..=full.len())
                .rev()
                .map(|k| full[..k].join("::"))
                .find(|m| mods.contains_key(m))
                .or_else(|| full.first().and_then(|n| reexports.get(n).cloned()));
            let Some(target) = target else { continue };
            let (from, to) = (here[0].to_string(), target.split("::").next().unwrap_or("").to_string());
            if !to.is_empty() && from != to {
                edges
                    .entry((from, to))
                    .or_insert_with(|| format!("{} names {}", file.display(), path.join("::")));
            }
        }
    }
    edges
}

/// A cycle through `start`, if there is one: the modules in order.
fn cycle_through(start: &str, edges: &BTreeMap<(String, String), String>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for (_, to) in edges.keys().filter(|(from, _)| *from == at) {
            if to == start {
                return Some(path.clone());
            }
            if seen.insert(to.clone()) {
                let mut p = path.clone();
                p.push(to.clone());
                stack.push((to.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_cycle_between_its_top_level_modules() {
    let mut cycles = Vec::new();
    for (krate, dir) in CRATES {
        let edges = module_graph(&root().join(dir));
        assert!(
            !edges.is_empty() || krate == "relist-proto" || krate == "relist-pg",
            "{krate}: no imports found"
        );
        let nodes: BTreeSet<&String> = edges.keys().map(|(from, _)| from).collect();
        for node in nodes {
            if let Some(cycle) = cycle_through(node, &edges) {
                let evidence: Vec<&String> = cycle
                    .iter()
                    .zip(cycle.iter().cycle().skip(1))
                    .filter_map(|(a, b)| edges.get(&(a.clone(), b.clone())))
                    .collect();
                cycles.push(format!(
                    "{krate}: {} -> {node}\n  {}",
                    cycle.join(" -> "),
                    evidence.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
                ));
                break;
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_use_trees_relative_paths_and_cycles() {
    let code = code_of(concat!(
        "use crate::{a::X, b::{c::Y, Z}};\n// crate::commented::Out\n",
        "let s = \"crate::quoted \\\" crate::escaped\"; let q = '\"'; let r = r#\"crate::raw \"x\" \"#;\n",
        "fn f<'a>(x: &'a str) { super::super::d::f(); self::e::g(); }",
    ));
    let paths: Vec<String> = named_paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "crate::a::X",
            "crate::b::c::Y",
            "crate::b::Z",
            "super::super::d::f",
            "self::e::g"
        ]
    );
    let edges: BTreeMap<(String, String), String> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .into_iter()
        .map(|(f, t)| ((f.to_string(), t.to_string()), String::new()))
        .collect();
    assert_eq!(
        cycle_through("a", &edges),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(cycle_through("d", &edges), None);
}
