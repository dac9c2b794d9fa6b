//! `haproxy-rs import-haproxy`: reads an HAProxy config and writes the haproxy-rs TOML, telling
//! on stderr what it could not translate.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::import::{translate, NoteKind, Options, Translation};

/// The largest HAProxy file read (a config is kilobytes; this bounds what a wrong path costs).
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Flags of `haproxy-rs import-haproxy`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The HAProxy config file (haproxy.cfg).
    #[arg(value_name = "HAPROXY_CFG")]
    pub input: PathBuf,
    /// Write the TOML here instead of stdout (mode 0600 when it holds a password).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A sentinel, HOST:PORT (repeat the flag, or comma-separate): write a Sentinel-mode config
    /// instead of the static servers of the HAProxy file.
    #[arg(long = "sentinel", value_name = "HOST:PORT", value_delimiter = ',')]
    pub sentinels: Vec<String>,
    /// The master name the sentinels monitor (default: the one the HAProxy file's sentinel
    /// checks ask for).
    #[arg(long, value_name = "NAME")]
    pub master_name: Option<String>,
    /// Exit 1 when a line could not be translated (the TOML is written all the same).
    #[arg(long)]
    pub strict: bool,
}

impl ImportArgs {
    /// Translates and writes; 0 when written, 1 with `--strict` and untranslated lines, 2 when
    /// the input cannot be read or translated.
    pub fn execute(self) -> ExitCode {
        let name = self.input.display().to_string();
        let text = match read_input(&self.input) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("haproxy-rs: import-haproxy: {name}: {e}");
                return ExitCode::from(2);
            }
        };
        let opts = Options {
            sentinels: self
                .sentinels
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            master_name: self.master_name.clone(),
            source: name.clone(),
        };
        let t = match translate(&text, &opts) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("haproxy-rs: import-haproxy: {name}: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = self.write(&t) {
            eprintln!("haproxy-rs: import-haproxy: {e}");
            return ExitCode::from(2);
        }
        report(&name, &t);
        if self.strict && t.untranslated().next().is_some() {
            return ExitCode::from(1);
        }
        ExitCode::SUCCESS
    }

    fn write(&self, t: &Translation) -> Result<(), String> {
        let Some(path) = &self.output else {
            let mut out = std::io::stdout().lock();
            return out
                .write_all(t.toml.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"));
        };
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        if t.holds_secret {
            use std::os::unix::fs::OpenOptionsExt as _;
            open.mode(0o600);
        }
        open.open(path)
            .and_then(|mut f| f.write_all(t.toml.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn read_input(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    use std::io::Read as _;
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "larger than {} MiB: not an HAProxy config",
            MAX_INPUT_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.as_bytes().get(..e.utf8_error().valid_up_to());
        let line = valid
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        format!("line {line}: not UTF-8 text")
    })
}

/// The report on stderr: advice, each line not translated, and how many were not needed (the
/// TOML's comments list those).
fn report(name: &str, t: &Translation) {
    let mut err = std::io::stderr().lock();
    for a in &t.advice {
        let _ = writeln!(err, "haproxy-rs: import-haproxy: note: {a}");
    }
    for n in t.notes.iter().filter(|n| n.kind == NoteKind::Untranslated) {
        let _ = writeln!(
            err,
            "{name}:{}: not translated: {}: {}",
            n.line, n.text, n.reason
        );
    }
    let lost = t.untranslated().count();
    let _ = writeln!(
        err,
        "haproxy-rs: import-haproxy: {lost} line(s) not translated; {} not needed (haproxy-rs \
         does it its own way), listed in the TOML's first comments",
        t.notes.len() - lost
    );
}
