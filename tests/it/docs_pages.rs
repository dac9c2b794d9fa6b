//! The README and the pages of docs/ against the repository: every relative link and anchor
//! resolves, every TOML example is a config the proxy parses (the README's minimal config also
//! validates), and the two commands at the top of the README are the demo and the CI gate.

use std::path::{Path, PathBuf};

use haproxy_rs::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

/// The fenced blocks of `text` whose info string is `lang`.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    let open = format!("```{lang}\n");
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let end = body.find("```").expect("a fenced block is closed");
        out.push(&body[..end]);
        rest = &body[end + 3..];
    }
    out
}

/// The text outside fenced blocks, where links live.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// The targets of the Markdown links `[text](target)` of `text`.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let end = tail.find(')').expect("a link is closed");
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let pages = pages();
    let mut checked = 0;
    for (path, text) in &pages {
        for link in links(text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link.as_str(), ""));
            let target = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            assert!(
                target.exists(),
                "{}: the link {link} names a missing file",
                path.display()
            );
            if !anchor.is_empty() {
                let text = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&text).iter().any(|a| a == anchor),
                    "{}: the link {link} names a missing heading",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

#[test]
fn every_toml_example_parses_and_the_readme_minimal_config_validates() {
    let mut parsed = 0;
    for (path, text) in pages() {
        for block in blocks(&text, "toml") {
            let cfg = Config::from_toml(block, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}\n{block}", path.display()));
            if path.ends_with("README.md") {
                haproxy_rs::check_config(&cfg)
                    .unwrap_or_else(|e| panic!("README.md: {e}\n{block}"));
            }
            parsed += 1;
        }
    }
    assert!(parsed >= 4, "only {parsed} TOML examples found");
}

#[test]
fn the_readme_opens_with_the_demo_and_the_ci_gate() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first = blocks(&readme, "sh")
        .into_iter()
        .next()
        .expect("the README has a shell block");
    let commands: Vec<&str> = first
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(commands, ["scripts/demo.sh", "scripts/test.sh"], "{first}");
    for script in &commands {
        assert!(root().join(script).exists(), "{script} exists");
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec bash scripts/test.sh"),
        "CI runs scripts/test.sh: {ci}"
    );
    // The way to stop what the demo leaves running, as the README gives it, is the scripts' own.
    let demo = std::fs::read_to_string(root().join("scripts/demo.sh")).unwrap();
    let lab = std::fs::read_to_string(root().join("scripts/lab.sh")).unwrap();
    assert!(readme.contains("scripts/demo.sh stop") && demo.contains(r#""${1:-}" = stop"#));
    assert!(readme.contains("scripts/lab.sh down") && lab.contains("down) cmd_down ;;"));
}
