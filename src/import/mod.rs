//! `haproxy-rs import-haproxy`: an HAProxy config of the usual Redis shape (a write frontend whose
//! backend checks `role:master`, a read frontend checking `role:slave`, a stats page) translated to
//! haproxy-rs TOML, with every line it could not translate named.
//!
//! [`parse`] splits the file as HAProxy does; `model` finds the proxies, their defaults and
//! servers; `checks` reads the `tcp-check` scripts; `plan` decides what each line becomes (`settings` the keys from the backends and `global`);
//! `leftover` says why the lines nothing claimed have no counterpart; `write` renders the TOML.
//! The result is loaded with the proxy's own loader before it is handed back.

mod checks;
mod leftover;
mod model;
mod options;
pub mod parse;
mod plan;
mod settings;
mod write;

use std::collections::BTreeSet;

use crate::config::{Config, ConfigError};
use parse::Line;

/// What the caller adds to the HAProxy file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Sentinels (`host:port`): with them the TOML is in Sentinel mode.
    pub sentinels: Vec<String>,
    /// The master name the sentinels monitor.
    pub master_name: Option<String>,
    /// The HAProxy file's name, for the TOML's first comment.
    pub source: String,
}

/// Whether a line's meaning is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// No counterpart: what the line did, the TOML does not do.
    Untranslated,
    /// No counterpart needed: haproxy-rs does it its own way, or it does not apply.
    NotNeeded,
}

/// One HAProxy line (or part of one) the TOML has no key for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line number.
    pub line: usize,
    /// The line as written (secrets masked).
    pub text: String,
    /// Lost or not needed.
    pub kind: NoteKind,
    /// Why, and what to do instead.
    pub reason: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.text, self.reason)
    }
}

/// The TOML and what it leaves out.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The haproxy-rs config, its report as `#` comments at the top.
    pub toml: String,
    /// The lines without a key, in line order.
    pub notes: Vec<Note>,
    /// Advice on the whole (Sentinel mode recommended, a secret in the file, ...).
    pub advice: Vec<String>,
    /// The TOML holds a password.
    pub holds_secret: bool,
}

impl Translation {
    /// The notes whose meaning is lost.
    pub fn untranslated(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .filter(|n| n.kind == NoteKind::Untranslated)
    }
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// HAProxy would refuse the file.
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
    /// The file has no frontend of the Redis shape.
    #[error("{0}")]
    Shape(String),
    /// A flag's value makes a config the proxy refuses.
    #[error("the config written does not load: {0}")]
    Output(ConfigError),
}

/// Translates an HAProxy config.
///
/// # Errors
/// [`ImportError::Parse`] for a file HAProxy would refuse (the message names the line),
/// [`ImportError::Shape`] when no frontend sends to Redis servers, [`ImportError::Output`] when
/// the flags given make a config the loader refuses.
pub fn translate(text: &str, opts: &Options) -> Result<Translation, ImportError> {
    let sections = parse::parse(text)?;
    let mut ledger = Ledger::default();
    let plan = plan::plan(&sections, opts, &mut ledger)?;
    for section in &sections {
        for line in std::iter::once(&section.header).chain(&section.body) {
            if let Some(open) = line.in_condition {
                ledger.untranslated(line, leftover::in_condition(open));
            }
            if !ledger.claimed.contains(&line.number) {
                let (kind, reason) = leftover::classify(section, line);
                ledger.note(line, kind, reason);
            }
        }
    }
    let mut notes = ledger.notes;
    notes.sort_by_key(|n| n.line);
    let toml = write::render(&plan, &notes, opts);
    let cfg = Config::from_toml(&toml, "the translated config").map_err(ImportError::Output)?;
    crate::check_config(&cfg).map_err(ImportError::Output)?;
    Ok(Translation {
        toml,
        notes,
        advice: plan.advice.clone(),
        holds_secret: plan.holds_secret,
    })
}

/// Which lines are accounted for, and the notes of those without a key.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    claimed: BTreeSet<usize>,
    notes: Vec<Note>,
}

impl Ledger {
    /// `line` became (part of) a key.
    fn used(&mut self, line: &Line) {
        self.claimed.insert(line.number);
    }

    /// `line`, or part of it, has no key.
    fn note(&mut self, line: &Line, kind: NoteKind, reason: impl Into<String>) {
        self.claimed.insert(line.number);
        let reason = reason.into();
        let text = masked(line);
        let dup = self
            .notes
            .iter()
            .any(|n| n.line == line.number && n.reason == reason);
        if !dup {
            self.notes.push(Note {
                line: line.number,
                text,
                kind,
                reason,
            });
        }
    }

    /// Takes `other`'s lines and notes over.
    fn merge(&mut self, other: Ledger) {
        self.claimed.extend(other.claimed);
        for n in other.notes {
            let dup = self
                .notes
                .iter()
                .any(|m| m.line == n.line && m.reason == n.reason);
            if !dup {
                self.notes.push(n);
            }
        }
    }

    fn untranslated(&mut self, line: &Line, reason: impl Into<String>) {
        self.note(line, NoteKind::Untranslated, reason);
    }

    fn not_needed(&mut self, line: &Line, reason: impl Into<String>) {
        self.note(line, NoteKind::NotNeeded, reason);
    }
}

/// The line as written, with passwords replaced by `****`, on one line of printable text.
fn masked(line: &Line) -> String {
    let lower: Vec<String> = line.words.iter().map(|w| w.text.to_lowercase()).collect();
    let secret = match lower
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tcp-check", "send" | "send-lf", data, ..] if data.trim_start().starts_with("auth") => {
            Some("tcp-check send AUTH ****".to_string())
        }
        ["stats", "auth", ..] => Some("stats auth ****".to_string()),
        ["user", _, "password" | "insecure-password", ..] => {
            Some(format!("user {} {} ****", line.word(1), line.word(2)))
        }
        _ => None,
    };
    let text = secret.unwrap_or_else(|| line.raw.clone());
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
