//! The TOML text: the report as `#` comments at the top, then each key with the HAProxy lines it
//! came from.

use std::fmt::Write as _;

use super::plan::{Entry, Plan};
use super::{Note, NoteKind, Options};

/// Renders `plan` with its notes.
pub(super) fn render(plan: &Plan, notes: &[Note], opts: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# haproxy-rs config written by `haproxy-rs import-haproxy` from {}.",
        one_line(&opts.source)
    );
    out.push_str("# Review it, then: haproxy-rs run -c <this file>\n");
    for a in &plan.advice {
        comment(&mut out, &format!("NOTE: {a}"));
    }
    for (kind, title) in [
        (
            NoteKind::Untranslated,
            "Not translated (no counterpart in haproxy-rs):",
        ),
        (
            NoteKind::NotNeeded,
            "Not needed (haproxy-rs does it its own way):",
        ),
    ] {
        let of_kind: Vec<&Note> = notes.iter().filter(|n| n.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        out.push_str("#\n");
        comment(&mut out, title);
        for n in of_kind {
            comment(&mut out, &format!("  {n}"));
        }
    }
    out.push('\n');
    entries(&mut out, &plan.top);
    for (table, list) in [
        ("sentinel", &plan.sentinel),
        ("backend", &plan.backend),
        ("tls", &plan.tls),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "\n[{table}]");
            entries(&mut out, list);
        }
    }
    out
}

fn entries(out: &mut String, list: &[Entry]) {
    for e in list {
        comment(out, &e.from);
        let _ = writeln!(out, "{} = {}", e.key, e.value);
    }
}

/// `text` as `#` comment lines.
fn comment(out: &mut String, text: &str) {
    let _ = writeln!(out, "# {}", one_line(text));
}

/// Control characters (a newline would end the comment) shown as `?`.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
