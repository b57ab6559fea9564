//! Gathers what `tests/perf/run-all` measured into one table against the goals of the hot path
//! (Markdown and JSON) and one latency plot (SVG): workspace lookup percentiles, extauth
//! against nginx, and the distribution of `git credential fill` times against
//! `git credential-store`.
//!
//! Usage: `perf-report DIR`, where DIR holds `run-1/`, `run-2/`, … each written by the
//! benchmarks with `EXTAUTH_BENCH_OUT`. Writes `DIR/report.md`, `DIR/report.json` and
//! `DIR/latency.svg`. Every figure is a ratio to a reference of the same run or a count; a
//! measure's value is the median over the runs, with the lowest and highest beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};

use askama::Template;
use extauth_tests::percentile;
use serde_json::{Value, json};

/// One line of the table: a measure, what it is compared with, the goal, and every run's value.
struct Row {
    measure: String,
    reference: &'static str,
    goal: Goal,
    values: Vec<f64>,
    unit: &'static str,
}

/// A bound the median must respect.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    Exactly(f64),
    /// None: a measure shown beside the others for comparison.
    Context,
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(g) => value >= g,
            Goal::AtMost(g) => value <= g,
            Goal::Exactly(g) => value == g,
            Goal::Context => true,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Goal::AtLeast(g) => format!("≥ {}{unit}", number(g)),
            Goal::AtMost(g) => format!("≤ {}{unit}", number(g)),
            Goal::Exactly(g) => format!("{}{unit}", number(g)),
            Goal::Context => "—".to_owned(),
        }
    }
}

/// Plot coordinates to a tenth of a pixel: enough for the eye, and a file that reads well.
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// 1000000 as "1,000,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn number(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e9) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Row {
    fn median(&self) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    }

    fn range(&self) -> (f64, f64) {
        let lo = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self
            .values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }
}

/// The table as the Markdown template sees it.
struct Line {
    measure: String,
    reference: &'static str,
    goal: String,
    value: String,
    spread: String,
    met: &'static str,
}

#[derive(Template)]
#[template(path = "perf-report.md", escape = "none")]
struct Report<'a> {
    runs: usize,
    machine: &'a str,
    lines: Vec<Line>,
}

/// An axis mark: where (in plot pixels) and what it says.
struct Tick {
    at: f64,
    label: String,
}

/// One line on a panel.
struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: String,
}

/// One chart of the plot, placed at (`x`, `y`) with a `width` × `height` plotting area.
struct Panel {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    x_ticks: Vec<Tick>,
    y_ticks: Vec<Tick>,
    series: Vec<Series>,
    /// Where the legend starts, inside the plotting area, clear of the lines.
    legend_x: f64,
    legend_y: f64,
}

#[derive(Template)]
#[template(path = "latency.svg", escape = "html")]
struct Plot {
    width: f64,
    height: f64,
    panels: Vec<Panel>,
}

const COLORS: [&str; 5] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

fn read(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: perf-report DIR (holding run-1/, run-2/, …)"),
    );
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
        })
        .collect();
    runs.sort();
    assert!(
        !runs.is_empty(),
        "no run-N directories in {}",
        dir.display()
    );
    let each =
        |file: &str| -> Vec<Value> { runs.iter().filter_map(|r| read(&r.join(file))).collect() };
    let lookups = each("lookup.json");
    let credentials = each("credential.json");

    let mut rows = Vec::new();
    let setup = |doc: &Value, name: &str, field: &str| -> Option<f64> {
        doc["setups"]
            .as_array()?
            .iter()
            .find(|s| s["setup"] == name)?[field]
            .as_f64()
    };
    let clients = lookups
        .first()
        .map_or(0, |l| l["clients"].as_u64().unwrap_or(0));
    rows.push(Row {
        measure: format!(
            "workspace lookup throughput, embedded store (wrk, {clients} connections)"
        ),
        reference: "nginx, static file of the same size",
        goal: Goal::AtLeast(0.8),
        values: lookups
            .iter()
            .filter_map(|l| setup(l, "sled, 1 broker", "vs_nginx"))
            .collect(),
        unit: "×",
    });
    rows.push(Row {
        measure: "workspace lookup throughput, two replicas on PostgreSQL".into(),
        reference: "the embedded store",
        goal: Goal::AtLeast(0.6),
        values: lookups
            .iter()
            .filter_map(|l| setup(l, "PostgreSQL, 2 replicas", "vs_sled"))
            .collect(),
        unit: "×",
    });
    let helper = |doc: &Value, name: &str| -> Option<f64> {
        doc["helpers"]
            .as_array()?
            .iter()
            .find(|h| h["name"] == name)?["ratio_to_credential_store"]
            .as_f64()
    };
    for (measure, name, goal) in [
        (
            "`git credential fill` through the helper, plain HTTP broker on loopback (median)",
            "extauth",
            1.15,
        ),
        (
            "the same over HTTPS with a private CA",
            "extauth (https, private CA)",
            1.3,
        ),
        (
            "for comparison: HTTP, each helper run on its own (`EXTAUTH_AGENT=off`)",
            "extauth (no agent)",
            0.0,
        ),
        (
            "for comparison: HTTPS, each helper run on its own, a full handshake each",
            "extauth (https, no agent)",
            0.0,
        ),
    ] {
        rows.push(Row {
            measure: measure.into(),
            reference: "`git credential-store`",
            goal: if goal > 0.0 {
                Goal::AtMost(goal)
            } else {
                Goal::Context
            },
            values: credentials.iter().filter_map(|c| helper(c, name)).collect(),
            unit: "×",
        });
    }
    for store in ["sled", "postgres"] {
        let scales = each(&format!("scale-{store}.json"));
        let Some(first) = scales.first() else {
            continue;
        };
        let users = thousands(first["users"].as_u64().unwrap_or(0));
        let name = if store == "sled" {
            "embedded store"
        } else {
            "PostgreSQL"
        };
        let of =
            |f: &dyn Fn(&Value) -> Option<f64>| scales.iter().filter_map(f).collect::<Vec<_>>();
        rows.push(Row {
            measure: format!("{users} users × 3 links, {name}: broker RSS (highest seen)"),
            reference: "",
            goal: Goal::AtMost(300.0),
            values: of(&|s| Some(s["rss_start_mb"].as_f64()?.max(s["rss_after_mb"].as_f64()?))),
            unit: " MB",
        });
        rows.push(Row {
            measure: format!("{users} users × 3 links, {name}: lookup p99 at 4 clients"),
            reference: "",
            goal: Goal::AtMost(2.0),
            values: of(&|s| s["light"]["p99_ms"].as_f64()),
            unit: " ms",
        });
        rows.push(Row {
            measure: format!("{users} users × 3 links, {name}: ready after start"),
            reference: "",
            goal: Goal::AtMost(1.0),
            values: of(&|s| s["ready_s"].as_f64()),
            unit: " s",
        });
        rows.push(Row {
            measure: format!("lookups of 10,000 workspace tokens at random, {name}"),
            reference: "the same with one token",
            goal: Goal::AtLeast(0.7),
            values: of(&|s| {
                Some(
                    s["ten_thousand_tokens_per_second"].as_f64()?
                        / s["one_token_per_second"].as_f64()?,
                )
            }),
            unit: "×",
        });
    }
    for setup in ["1-broker", "2-replicas"] {
        let storms = each(&format!("refresh-storm-{setup}.json"));
        let mut sizes: Vec<u64> = storms
            .iter()
            .flat_map(|s| s["storms"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["lookups"].as_u64())
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let values = storms
                .iter()
                .flat_map(|s| s["storms"].as_array().cloned().unwrap_or_default())
                .filter(|s| s["lookups"].as_u64() == Some(size))
                // A storm with failed lookups did not show what it claims: counted as a miss.
                .map(|s| {
                    if s["errors"].as_u64() == Some(0) {
                        s["refreshes"].as_f64().unwrap_or(f64::NAN)
                    } else {
                        f64::NAN
                    }
                })
                .collect();
            let on = if setup == "1-broker" {
                "one broker"
            } else {
                "two replicas on PostgreSQL"
            };
            rows.push(Row {
                measure: format!(
                    "upstream refreshes for {size} concurrent lookups of one expired token, {on}"
                ),
                reference: "",
                goal: Goal::Exactly(1.0),
                values,
                unit: "",
            });
        }
    }

    let lines: Vec<Line> = rows
        .iter()
        .map(|r| {
            let (lo, hi) = r.range();
            let median = r.median();
            let all_met = r.values.iter().all(|v| r.goal.met(*v));
            Line {
                measure: r.measure.clone(),
                reference: r.reference,
                goal: r.goal.text(r.unit),
                value: if r.values.is_empty() {
                    "not measured".into()
                } else {
                    format!("{}{}", number(median), r.unit)
                },
                spread: if r.values.len() > 1 {
                    format!("{}–{} ({} runs)", number(lo), number(hi), r.values.len())
                } else {
                    format!("{} run", r.values.len())
                },
                met: if r.values.is_empty() || matches!(r.goal, Goal::Context) {
                    "—"
                } else if all_met {
                    "yes"
                } else if r.goal.met(median) {
                    "median"
                } else {
                    "no"
                },
            }
        })
        .collect();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let machine = format!("{cores} cores, {machine}");
    let markdown = Report {
        runs: runs.len(),
        machine: &machine,
        lines,
    }
    .render()
    .unwrap();
    std::fs::write(dir.join("report.md"), &markdown).unwrap();
    let doc = json!({
        "runs": runs.len(),
        "machine": machine,
        "measures": rows.iter().map(|r| json!({
            "measure": r.measure,
            "reference": r.reference,
            "goal": r.goal.text(r.unit),
            "median": r.median(),
            "values": r.values,
            "unit": r.unit.trim(),
            "met": (!matches!(r.goal, Goal::Context))
                .then(|| !r.values.is_empty() && r.goal.met(r.median())),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();

    let plot = Plot {
        width: 1000.0,
        height: 420.0,
        panels: vec![
            lookup_panel(&lookups, clients),
            credential_panel(&credentials),
        ],
    };
    std::fs::write(dir.join("latency.svg"), plot.render().unwrap()).unwrap();
    print!("{markdown}");
    println!(
        "\nwritten: {0}/report.md, {0}/report.json, {0}/latency.svg",
        dir.display()
    );
}

/// Lookup latency by percentile (log scale), the median of every run at each percentile.
fn lookup_panel(lookups: &[Value], clients: u64) -> Panel {
    let setups = [
        ("sled, 1 broker", "extauth, embedded store", false),
        (
            "PostgreSQL, 2 replicas",
            "extauth, 2 replicas on PostgreSQL",
            false,
        ),
        (
            "nginx, static file of the same size",
            "nginx, static file",
            true,
        ),
    ];
    // (name, dashed, (percentile, ms) points)
    type Curve = (String, bool, Vec<(f64, f64)>);
    let mut curves: Vec<Curve> = Vec::new();
    let mut quantiles: Vec<f64> = Vec::new();
    for (setup, name, dashed) in setups {
        // percentile → ms per run
        let mut at: Vec<(f64, Vec<f64>)> = Vec::new();
        for doc in lookups {
            let Some(s) = doc["setups"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["setup"] == setup))
            else {
                continue;
            };
            for pair in s["percentiles_ms"].as_array().into_iter().flatten() {
                let (Some(q), Some(ms)) = (pair[0].as_f64(), pair[1].as_f64()) else {
                    continue;
                };
                match at.iter_mut().find(|(p, _)| *p == q) {
                    Some((_, v)) => v.push(ms),
                    None => at.push((q, vec![ms])),
                }
            }
        }
        let points: Vec<(f64, f64)> = at
            .into_iter()
            .map(|(q, mut v)| {
                v.sort_by(f64::total_cmp);
                (q, percentile(&v, 0.5))
            })
            .collect();
        for (q, _) in &points {
            if !quantiles.contains(q) {
                quantiles.push(*q);
            }
        }
        curves.push((name.to_owned(), dashed, points));
    }
    quantiles.sort_by(f64::total_cmp);
    let (x, y, width, height) = (70.0, 50.0, 380.0, 300.0);
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.01);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lo_exp, hi_exp) = (lo.log10().floor(), hi.log10().ceil());
    let ys = |ms: f64| {
        round(height - (ms.max(10f64.powf(lo_exp)).log10() - lo_exp) / (hi_exp - lo_exp) * height)
    };
    let step = width / (quantiles.len().max(2) - 1) as f64;
    let xs = |q: f64| round(quantiles.iter().position(|p| *p == q).unwrap_or(0) as f64 * step);
    let series = curves
        .into_iter()
        .enumerate()
        .map(|(i, (name, dashed, points))| Series {
            name,
            color: COLORS[i % COLORS.len()],
            dashed,
            points: points
                .iter()
                .map(|(q, ms)| format!("{:.1},{:.1}", xs(*q), ys(*ms)))
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    let mut y_ticks = Vec::new();
    let mut e = lo_exp;
    while e <= hi_exp {
        let ms = 10f64.powf(e);
        y_ticks.push(Tick {
            at: ys(ms),
            label: if ms < 1.0 {
                format!("{ms}")
            } else {
                format!("{ms:.0}")
            },
        });
        e += 1.0;
    }
    Panel {
        x,
        y,
        width,
        height,
        title: format!("Workspace lookup latency ({clients} connections, median of runs)"),
        x_label: "percentile",
        y_label: "ms (log scale)",
        x_ticks: quantiles
            .iter()
            .map(|q| Tick {
                at: xs(*q),
                label: format!("p{q}"),
            })
            .collect(),
        y_ticks,
        series,
        // The lines rise to the right: the upper left is clear.
        legend_x: 10.0,
        legend_y: 16.0,
    }
}

/// The distribution of `git credential fill` times (every sample of every run), as the share
/// of fills done within a time.
fn credential_panel(credentials: &[Value]) -> Panel {
    let helpers = [
        ("extauth", "extauth helper, HTTP", false),
        (
            "extauth (https, private CA)",
            "extauth helper, HTTPS",
            false,
        ),
        (
            "extauth (https, no agent)",
            "extauth helper, HTTPS, no agent",
            true,
        ),
        ("credential-store", "git credential-store", true),
    ];
    let mut curves = Vec::new();
    for (helper, name, dashed) in helpers {
        let mut samples: Vec<f64> = credentials
            .iter()
            .filter_map(|c| {
                c["helpers"]
                    .as_array()?
                    .iter()
                    .find(|h| h["name"] == helper)
                    .cloned()
            })
            .flat_map(|h| h["samples_ms"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        samples.sort_by(f64::total_cmp);
        curves.push((name, dashed, samples));
    }
    let pooled: Vec<f64> = {
        let mut all: Vec<f64> = curves.iter().flat_map(|c| c.2.iter().copied()).collect();
        all.sort_by(f64::total_cmp);
        all
    };
    // From the fastest fill to the 99th percentile of all: the slowest one per cent are noise.
    let lo = pooled.first().copied().unwrap_or(0.0).floor();
    let hi = percentile(&pooled, 0.99).ceil().max(lo + 1.0);
    let (x, y, width, height) = (570.0, 50.0, 380.0, 300.0);
    let xs = |ms: f64| round((ms.clamp(lo, hi) - lo) / (hi - lo) * width);
    let ys = |share: f64| round(height - share * height);
    let series = curves
        .into_iter()
        .enumerate()
        .map(|(i, (name, dashed, samples))| {
            let n = samples.len().max(1) as f64;
            let points = samples
                .iter()
                .enumerate()
                .filter(|(_, ms)| **ms <= hi)
                .map(|(k, ms)| format!("{:.1},{:.1}", xs(*ms), ys((k + 1) as f64 / n)))
                .collect::<Vec<_>>()
                .join(" ");
            Series {
                name: name.to_owned(),
                color: COLORS[i % COLORS.len()],
                dashed,
                points,
            }
        })
        .collect();
    let span = hi - lo;
    let tick = [0.5, 1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|t| span / t <= 8.0)
        .unwrap_or(20.0);
    let mut x_ticks = Vec::new();
    let mut at = (lo / tick).ceil() * tick;
    while at <= hi {
        x_ticks.push(Tick {
            at: xs(at),
            label: format!("{at}"),
        });
        at += tick;
    }
    Panel {
        x,
        y,
        width,
        height,
        title: "git credential fill, every sample of every run".into(),
        x_label: "ms",
        y_label: "share of fills done",
        x_ticks,
        y_ticks: [0.0, 0.25, 0.5, 0.75, 1.0]
            .into_iter()
            .map(|s| Tick {
                at: ys(s),
                label: format!("{:.0}%", s * 100.0),
            })
            .collect(),
        series,
        // Distributions climb from the lower left to the upper right: the upper left is
        // clear (a high share is reached only at larger times).
        legend_x: 10.0,
        legend_y: 16.0,
    }
}
