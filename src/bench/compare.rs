//! `--compare name=host:port,...`: the same workload against each target in turn, figures as ratios to the
//! first target.

use std::fmt::Write as _;

use anyhow::{bail, Context as _};

use super::args::LoadArgs;
use super::hist::fmt_us;
use super::merge::{merge_with, Timing};
use super::report::RunReport;
use super::run::run_load;

/// Parses `name=host:port` (a bare `host:port` is its own name).
///
/// # Errors
/// An empty entry.
pub fn parse_targets(list: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (name, addr) = item.split_once('=').unwrap_or((item, item));
        if name.is_empty() || addr.is_empty() {
            bail!("`{item}` is not NAME=HOST:PORT");
        }
        out.push((name.to_string(), addr.to_string()));
    }
    if out.is_empty() {
        bail!("--compare needs at least one NAME=HOST:PORT");
    }
    Ok(out)
}

/// Runs every target `rounds` times (alternating), merges each target's rounds, prints the comparison and
/// writes the files (JSON: an array of reports; CSV: the timelines with a `name` column).
///
/// # Errors
/// A run fails or a file cannot be written.
pub async fn compare(args: &LoadArgs) -> anyhow::Result<()> {
    let targets = parse_targets(&args.compare)?;
    let mut runs: Vec<Vec<RunReport>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds.max(1) {
        for (i, (name, addr)) in targets.iter().enumerate() {
            eprintln!(
                "== round {} of {}: {name} ({addr})",
                round + 1,
                args.rounds.max(1)
            );
            let r = run_load(args, name, Some(addr))
                .await
                .with_context(|| format!("run against {name}"))?;
            if let Some(slot) = runs.get_mut(i) {
                slot.push(r);
            }
        }
    }
    let reports = runs
        .iter()
        .map(|rs| merge_with(rs, Timing::Sequential))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for r in &reports {
        print!("{}", r.table());
    }
    print!("{}", comparison_table(&reports));
    if let Some(p) = &args.out.json {
        std::fs::write(p, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.out.csv {
        let mut csv = String::from("name,t,ops,errors,connects,p50_us,p99_us,max_us\n");
        for r in &reports {
            for line in r.csv().lines().skip(1) {
                let _ = writeln!(csv, "{},{line}", r.setup.name);
            }
        }
        std::fs::write(p, csv).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.out.html {
        std::fs::write(p, super::html::render(&reports))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Each target's figures with their ratio to the first target's.
pub fn comparison_table(reports: &[RunReport]) -> String {
    let mut s = String::new();
    let Some(base) = reports.first() else {
        return s;
    };
    let _ = writeln!(
        s,
        "{:<16} {:>18} {:>18} {:>18} {:>18} {:>8}",
        "target", "req/s", "p50", "p99", "p99.9", "errors"
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("x{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    for r in reports {
        let (l, b) = (&r.latency_us, &base.latency_us);
        let cell = |v: u64, bv: u64| format!("{} {}", fmt_us(v), ratio(v as f64, bv as f64));
        let _ = writeln!(
            s,
            "{:<16} {:>18} {:>18} {:>18} {:>18} {:>8}",
            r.setup.name,
            format!(
                "{:.0} {}",
                r.throughput,
                ratio(r.throughput, base.throughput)
            ),
            cell(l.p50, b.p50),
            cell(l.p99, b.p99),
            cell(l.p999, b.p999),
            r.errors
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample;

    #[test]
    fn targets_parse() {
        let t = parse_targets(&["redis=127.0.0.1:6391".into(), " 127.0.0.1:1 ".into()]).unwrap();
        assert_eq!(t[0], ("redis".into(), "127.0.0.1:6391".into()));
        assert_eq!(t[1], ("127.0.0.1:1".into(), "127.0.0.1:1".into()));
        assert!(parse_targets(&["x=".into()]).is_err());
        assert!(parse_targets(&[]).is_err());
    }

    #[test]
    fn ratios_are_to_the_first_target() {
        let mut a = sample(&[100, 100], &[1000, 1000]);
        a.setup.name = "direct".into();
        let mut b = sample(&[50, 50], &[2000, 2000]);
        b.setup.name = "proxy".into();
        let t = comparison_table(&[a, b]);
        let proxy = t.lines().find(|l| l.starts_with("proxy")).unwrap();
        assert!(proxy.contains("50 x0.50"), "{t}");
        assert!(proxy.contains("2.00ms x2.00"), "{t}");
    }
}
