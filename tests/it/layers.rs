//! The layers of `docs/architecture.md`, checked against the source: every top-level module imports
//! only modules below it, so no two import each other (issue 13).

use std::collections::BTreeSet;
use std::path::Path;

/// Top-level modules from the top down; each may import only those after it.
/// `testkit` (unit tests' scripted servers, `cfg(test)`) drives everything, so it is on top.
const LAYERS: &[&str] = &[
    "testkit", "lib", "wiring", "main", "cli", "bench", "import", "proxy", "reload", "primary",
    "cluster", "pubsub", "client", "topology", "scripts", "backend", "stats", "router", "tls",
    "config", "logging", "resp", "shutdown", "upgrade",
];

/// Imports that go up, each with the reason it stays (`docs/architecture.md` names them too).
/// None is left: the routing table names its servers (`router::Server`) and `backend` resolves them.
const KEPT: &[(&str, &str, &str)] = &[];

/// The top-level module a source file belongs to (`src/proxy/session.rs` -> `proxy`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().to_string());
    first
        .unwrap_or_default()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules a file's text names through `crate::`, including `use crate::{a::.., b}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut start = true;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        // A module itself (`crate::{backend, ..}`) or a path into one; items
                        // of lib.rs are no layer and are skipped by the check.
                        out.insert(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if rest[name.len()..].starts_with("::") {
                out.insert(name);
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut up = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let from = module_of(rel);
        let Some(from_rank) = rank(&from) else {
            panic!(
                "{}: module `{from}` is in no layer of LAYERS",
                rel.display()
            );
        };
        let text = std::fs::read_to_string(file).expect("a source file");
        for to in named_modules(&text) {
            let Some(to_rank) = rank(&to) else {
                continue; // an item of lib.rs (`crate::start`), not a module
            };
            let kept = KEPT.iter().any(|(f, t, _)| *f == from && *t == to);
            if to != from && to_rank <= from_rank && !kept {
                up.push(format!("{} ({from}) imports {to}", rel.display()));
            }
        }
    }
    assert!(
        up.is_empty(),
        "imports that go up a layer (fix them, or name them in KEPT and docs/architecture.md):\n{}",
        up.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let text = "use crate::{a::X, b, c::{d, e::F}};\nlet x = crate::g::h();\n// crate::i::j\n";
    let got: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "g", "i"]);
}
