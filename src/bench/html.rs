//! The `--html` report: one self-contained page, a summary of each run at the top (requests, errors,
//! acknowledged writes lost, error window, worst latency), inline SVG charts of throughput, latency (p50,
//! p99, max) and errors per second, with the failover, the error window and the sentinel events marked.

use std::fmt::Write as _;

use super::hist::fmt_us;
use super::report::RunReport;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
/// Steps between the value axis's grid lines.
const GRID_STEPS: f64 = 4.0;
/// The colour of a chart's main line.
const BLUE: &str = "#1f6feb";

/// A vertical marker on a chart; `caption` ones are labelled on the chart and drawn over the others.
struct Mark<'a> {
    t: f64,
    label: &'a str,
    color: &'a str,
    caption: bool,
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`, for round axis ticks.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let pow = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * pow)
}

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A count for an axis: `850`, `12.5k`, `1.2M`.
fn count(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", (v / 1e5).round() / 10.0),
        v if v >= 1e3 => format!("{}k", (v / 1e2).round() / 10.0),
        v => format!("{v:.0}"),
    }
}

/// One line of a chart: its name (in the legend), colour and points (x in seconds).
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// A line chart of `lines` with markers and an optional shaded window; `whole` when the values
/// are counts (the grid then falls on whole numbers).
fn chart(
    title: &str,
    lines: &[Series<'_>],
    fmt: &dyn Fn(f64) -> String,
    whole: bool,
    marks: &[Mark<'_>],
    window: Option<(f64, f64)>,
) -> String {
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    let plot = Plot::of(&all, whole);
    let (plot_w, plot_h) = (plot.w, plot.h);
    let mut s = String::new();
    let _ = write!(s, "<h3>{}", escape(title));
    if lines.len() > 1 {
        for l in lines {
            let _ = write!(
                s,
                r#" <span style="color:{}">&#9473; {}</span>"#,
                l.color,
                escape(l.name)
            );
        }
    }
    let _ = write!(
        s,
        r##"</h3><svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>"##
    );
    if let Some((a, b)) = window {
        plot.window(&mut s, a, b);
    }
    plot.axes(&mut s, fmt);
    plot.marks(&mut s, marks);
    for l in lines {
        plot.line(&mut s, l);
    }
    s.push_str("</svg>");
    s
}

/// A chart's plotting area and scales: seconds from 0 to `x_max` across, values from 0 to
/// `y_max` up.
struct Plot {
    x_max: f64,
    y_max: f64,
    w: f64,
    h: f64,
}

impl Plot {
    /// The scales that show every point, the value axis rounded up to four round steps (whole
    /// ones for counts).
    fn of(points: &[(f64, f64)], whole: bool) -> Plot {
        let top = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let step = nice_ceiling(top / GRID_STEPS);
        let step = if whole { step.max(1.0) } else { step };
        Plot {
            x_max: points.iter().map(|p| p.0).fold(1.0_f64, f64::max),
            y_max: step * GRID_STEPS,
            w: WIDTH - LEFT - 10.0,
            h: HEIGHT - TOP - BOTTOM,
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + t.clamp(0.0, self.x_max) / self.x_max * self.w
    }

    fn y(&self, v: f64) -> f64 {
        TOP + self.h - v / self.y_max * self.h
    }

    /// The shaded window from `a` to `b` seconds.
    fn window(&self, s: &mut String, a: f64, b: f64) {
        let plot_h = self.h;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#f4c7c3" opacity="0.6"><title>error window {a:.3}s .. {b:.3}s</title></rect>"##,
            self.x(a),
            (self.x(b) - self.x(a)).max(1.0)
        );
    }

    /// Five value grid lines labelled with `fmt`, and a seconds tick about every tenth.
    fn axes(&self, s: &mut String, fmt: &dyn Fn(f64) -> String) {
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / GRID_STEPS;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                LEFT + self.w,
                LEFT - 4.0,
                self.y(v) + 3.0,
                escape(&fmt(v)),
                y = self.y(v)
            );
        }
        let step = (self.x_max / 10.0).ceil().max(1.0);
        let mut t = 0.0;
        while t <= self.x_max {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{t}s</text>"#,
                self.x(t),
                HEIGHT - 8.0
            );
            t += step;
        }
    }

    /// The markers, captioned ones last (over the others) and labelled.
    fn marks(&self, s: &mut String, marks: &[Mark<'_>]) {
        let ordered = marks
            .iter()
            .filter(|m| !m.caption)
            .chain(marks.iter().filter(|m| m.caption));
        // Captions close to the previous one go one row lower, so they do not overprint each other.
        let (mut last_caption_x, mut row) = (f64::NEG_INFINITY, 0u8);
        for m in ordered {
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="{}" stroke-width="{}" stroke-dasharray="4 2"><title>{:.3}s {}</title></line>"#,
                TOP + self.h,
                m.color,
                if m.caption { 2.5 } else { 1.0 },
                m.t,
                escape(m.label),
                x = self.x(m.t)
            );
            if m.caption {
                row = if self.x(m.t) - last_caption_x < 90.0 {
                    (row + 1) % 4
                } else {
                    0
                };
                last_caption_x = self.x(m.t);
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{}">{}</text>"#,
                    self.x(m.t) + 3.0,
                    TOP + 10.0 + 11.0 * f64::from(row),
                    m.color,
                    escape(m.label)
                );
            }
        }
    }

    /// The line of `series`.
    fn line(&self, s: &mut String, series: &Series<'_>) {
        let path: Vec<String> = series
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            series.color,
            path.join(" "),
            escape(series.name)
        );
    }
}

/// The charts and figures of one run.
fn section(r: &RunReport) -> String {
    let mut s = String::new();
    let l = &r.latency_us;
    let _ = write!(
        s,
        "<h2>{}</h2>{}<pre>{}</pre>",
        escape(&r.setup.name),
        summary(r),
        escape(&r.table())
    );
    let mut marks = Vec::new();
    let f = r.failover.as_ref();
    if let Some(at) = f.and_then(|f| f.at_s) {
        marks.push(Mark {
            t: at,
            label: "failover triggered",
            color: "#d1242f",
            caption: true,
        });
    }
    for e in &r.events {
        let switch = e.channel == "+switch-master";
        marks.push(Mark {
            t: e.t,
            label: &e.channel,
            color: if switch { "#8250df" } else { "#bbb" },
            caption: switch,
        });
    }
    let window = f.and_then(|f| match (f.error_window_start_s, f.error_window_end_s) {
        (Some(a), Some(b)) => Some((a, b)),
        (Some(a), None) => Some((a, r.duration_s)),
        _ => None,
    });
    // Each row covers [t, t+1): plot it at its middle.
    let series = |v: &dyn Fn(&super::report::TimelineRow) -> f64| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .map(|row| (row.t as f64 + 0.5, v(row)))
            .collect()
    };
    let one = |name, points| {
        [Series {
            name,
            color: BLUE,
            points,
        }]
    };
    s.push_str(&chart(
        "Throughput (req/s)",
        &one("req/s", series(&|row| row.ops as f64)),
        &count,
        true,
        &marks,
        window,
    ));
    let latency = [
        Series {
            name: "p50",
            color: "#2da44e",
            points: series(&|row| row.p50_us as f64),
        },
        Series {
            name: "p99",
            color: BLUE,
            points: series(&|row| row.p99_us as f64),
        },
        Series {
            name: "max",
            color: "#bf8700",
            points: series(&|row| row.max_us as f64),
        },
    ];
    s.push_str(&chart(
        "Latency",
        &latency,
        &|v| fmt_us(v as u64),
        false,
        &marks,
        window,
    ));
    s.push_str(&chart(
        "Errors per second",
        &one("errors", series(&|row| row.errors as f64)),
        &count,
        true,
        &marks,
        window,
    ));
    let _ = write!(
        s,
        "<p>p50 {} · p99 {} · p99.9 {} · max {}. Dashed lines: red, the failover trigger; violet, \
         <code>+switch-master</code>; grey, other sentinel events (hover for names). Shaded: the error window.</p>",
        fmt_us(l.p50),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.max)
    );
    s
}

/// The figures a reader looks for first: requests, errors, acknowledged writes lost, the error
/// window and the worst latency.
fn summary(r: &RunReport) -> String {
    let f = r.failover.as_ref();
    let lost = f.map_or_else(
        || "not tracked (run with --track)".to_string(),
        |f| format!("{} of {} acknowledged", f.lost_writes, f.acked_writes),
    );
    let window = match f.map(|f| (f.error_window_start_s, f.error_window_end_s)) {
        Some((Some(a), Some(b))) => format!("{:.2} s ({a:.2} s to {b:.2} s)", b - a),
        Some((Some(a), None)) => format!("from {a:.2} s to the end"),
        _ => "none".to_string(),
    };
    let rows = [
        ("requests", (r.ops + r.errors).to_string()),
        ("errors", r.errors.to_string()),
        ("acknowledged writes lost", lost),
        ("error window", window),
        ("worst latency", fmt_us(r.latency_us.max)),
    ];
    let mut s = String::from(r#"<table class="summary">"#);
    for (name, value) in rows {
        let _ = write!(s, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    s.push_str("</table>");
    s
}

/// The whole page for one or more runs (several: `--compare`).
pub fn render(reports: &[RunReport]) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>haproxy-rs bench</title><style>\
         body{font-family:sans-serif;margin:2em;color:#222}pre{background:#f6f8fa;padding:1em}\
         h3{margin:1em 0 .2em;font-size:1em}\
         table.summary{border-collapse:collapse;margin:.5em 0}\
         table.summary th{text-align:left;padding:.2em 1em .2em 0;font-weight:normal;color:#555}\
         table.summary td{font-weight:bold}</style></head><body><h1>haproxy-rs bench</h1>",
    );
    for r in reports {
        s.push_str(&section(r));
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::failover::FailoverReport;
    use crate::bench::report::tests::sample;
    use crate::bench::sentinel::SentinelEvent;

    #[test]
    fn page_has_three_charts_and_marks_the_failover() {
        let mut r = sample(&[100, 100, 0, 100], &[500, 500, 500, 900]);
        r.failover = Some(FailoverReport {
            at_s: Some(1.5),
            error_window_start_s: Some(1.6),
            error_window_end_s: Some(2.9),
            ..FailoverReport::default()
        });
        r.events.push(SentinelEvent {
            t: 2.5,
            sentinel: "127.0.0.1:26391".into(),
            channel: "+switch-master".into(),
            payload: "mymaster <a> b".into(),
        });
        let page = render(&[r]);
        assert_eq!(page.matches("<svg").count(), 3);
        // On each chart: the line's tooltip and its caption.
        assert_eq!(page.matches("failover triggered").count(), 6);
        assert!(page.contains("+switch-master"));
        assert!(page.contains("error window 1.600s"));
        assert!(!page.contains("<a>"), "payloads are escaped");
        assert!(!page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(34_998.0), 50_000.0);
        assert_eq!(nice_ceiling(16_190.0), 20_000.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(count(850.0), "850");
        assert_eq!(count(12_500.0), "12.5k");
        assert_eq!(count(100_000.0), "100k");
        assert_eq!(count(1_200_000.0), "1.2M");
    }

    /// The value axis's labels of a chart, bottom up.
    fn value_labels(svg: &str) -> Vec<String> {
        svg.split(r#"text-anchor="end">"#)
            .skip(1)
            .filter_map(|t| t.split('<').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn count_axes_tick_on_whole_numbers() {
        let errors = [Series {
            name: "errors",
            color: BLUE,
            points: vec![(0.5, 1.0), (1.5, 0.0), (2.5, 0.0)],
        }];
        let svg = chart("Errors", &errors, &count, true, &[], None);
        assert_eq!(value_labels(&svg), ["0", "1", "2", "3", "4"]);
        let busy = [Series {
            name: "req/s",
            color: BLUE,
            points: vec![(0.5, 34_998.0)],
        }];
        let svg = chart("Throughput", &busy, &count, true, &[], None);
        assert_eq!(value_labels(&svg), ["0", "10k", "20k", "30k", "40k"]);
    }

    #[test]
    fn the_summary_comes_first_and_latency_has_three_lines() {
        let mut r = sample(&[100, 100, 0, 100], &[500, 500, 500, 900]);
        r.failover = Some(FailoverReport {
            acked_writes: 300,
            lost_writes: 0,
            error_window_start_s: Some(1.6),
            error_window_end_s: Some(2.9),
            ..FailoverReport::default()
        });
        let page = render(&[r]);
        let summary = page.find(r#"<table class="summary">"#).expect("a summary");
        assert!(summary < page.find("<svg").expect("charts"));
        for row in [
            "<th>acknowledged writes lost</th><td>0 of 300 acknowledged</td>",
            "<th>error window</th><td>1.30 s (1.60 s to 2.90 s)</td>",
            "<th>worst latency</th>",
        ] {
            assert!(page.contains(row), "{row}: {page}");
        }
        for line in [
            "<title>p50</title>",
            "<title>p99</title>",
            "<title>max</title>",
        ] {
            assert!(page.contains(line), "{line}");
        }
    }

    #[test]
    fn an_empty_run_still_renders() {
        let page = render(&[sample(&[], &[])]);
        assert!(page.ends_with("</html>\n"));
    }
}
