//! The exit census: every workload under every interception policy, on the
//! identical seeded event stream, with each guest EOI classified by the
//! simulator's oracle (necessary, unavoidable, avoidable, lost).
//!
//! ```text
//! cargo census [--json] [--workload NAME] [--policy NAME] [--seed N] [--events N] [--svg FILE]
//! ```
//!
//! Workload and policy names are matched without regard to ASCII case.
//! `--svg FILE` also writes a bar chart of the census (see [`svg`]); the
//! table or JSON on stdout is the same with or without it.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eoi_exit::Policy;
use eoi_exit_testkit::sim::{self, Census, DEFAULT_SEED, WORKLOADS, Workload};

struct Args {
    json: bool,
    workload: Option<&'static Workload>,
    policy: Option<Policy>,
    seed: u64,
    events: Option<u64>,
    svg: Option<String>,
}

const USAGE: &str = "usage: cargo census [--json] [--workload NAME] [--policy NAME] [--seed N] [--events N] [--svg FILE]";

/// Why the command line was not accepted.
enum CliError {
    /// `-h` / `--help`.
    Help,
    /// A malformed command line: the message, then the usage line.
    Usage(String),
    /// An unknown workload or policy name: the message lists the valid ones.
    UnknownName(String),
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The message for an unknown `kind` name, listing the valid names.
fn unknown(kind: &str, given: &str, valid: impl Iterator<Item = &'static str>) -> CliError {
    let mut m = format!("unknown {kind} {given:?}; one of:");
    for n in valid {
        m.push_str("\n  ");
        m.push_str(n);
    }
    CliError::UnknownName(m)
}

/// The workload called `name`, ignoring ASCII case.
fn find_workload(name: &str) -> Result<&'static Workload, CliError> {
    WORKLOADS
        .iter()
        .find(|w| w.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| unknown("workload", name, WORKLOADS.iter().map(|w| w.name)))
}

/// Every policy the census runs: `Policy::ALL` and `LineAware`.
const POLICIES: [Policy; 6] = [
    Policy::KvmLegacy,
    Policy::KvmHighestStale,
    Policy::TmrDriven,
    Policy::Exact,
    Policy::NoIntercept,
    Policy::LineAware,
];

/// The policy called `name`, ignoring ASCII case.
fn find_policy(name: &str) -> Result<Policy, CliError> {
    POLICIES
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| unknown("policy", name, POLICIES.into_iter().map(Policy::name)))
}

fn parse() -> Result<Args, CliError> {
    let mut a = Args {
        json: false,
        workload: None,
        policy: None,
        seed: DEFAULT_SEED,
        events: None,
        svg: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| CliError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--json" => a.json = true,
            "--workload" => a.workload = Some(find_workload(&value("--workload")?)?),
            "--policy" => a.policy = Some(find_policy(&value("--policy")?)?),
            "--seed" => {
                let v = value("--seed")?;
                a.seed = parse_u64(&v).ok_or_else(|| CliError::Usage(format!("bad seed {v}")))?;
            }
            "--events" => {
                let v = value("--events")?;
                a.events = Some(
                    parse_u64(&v).ok_or_else(|| CliError::Usage(format!("bad event count {v}")))?,
                );
            }
            "--svg" => a.svg = Some(value("--svg")?),
            "-h" | "--help" => return Err(CliError::Help),
            other => return Err(CliError::Usage(format!("unknown argument {other}"))),
        }
    }
    Ok(a)
}
/// A progress bar on stderr, shown only on a terminal and only once a run has
/// taken more than a second (a dozen lines instead of a dependency).
struct Progress {
    label: String,
    total: u64,
    start: Instant,
    last: Instant,
    shown: bool,
    tty: bool,
}

impl Progress {
    fn new(label: String, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            label,
            total: total.max(1),
            start: now,
            last: now,
            shown: false,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        let now = Instant::now();
        if !self.tty
            || now - self.start < Duration::from_secs(1)
            || now - self.last < Duration::from_millis(100)
        {
            return;
        }
        self.last = now;
        self.shown = true;
        let frac = done.min(self.total) as f64 / self.total as f64;
        let width = 30;
        let filled = (frac * width as f64) as usize;
        eprint!(
            "\r{:<34} [{}{}] {:>5.1}% {:>6.1}s",
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            (now - self.start).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    fn done(self) {
        if self.shown {
            eprint!("\r{:80}\r", "");
            let _ = std::io::stderr().flush();
        }
    }
}

fn run_one(w: &Workload, policy: Policy, seed: u64, events: u64) -> (Census, sim::Trace, Duration) {
    let mut bar = Progress::new(format!("{} / {}", w.name, policy.name()), events);
    let start = Instant::now();
    let (c, t) = sim::run_traced(w, policy, seed, events, &mut |d| bar.update(d));
    let wall = start.elapsed();
    bar.done();
    (c, t, wall)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(CliError::Help) => {
            eprintln!("{USAGE}");
            eprintln!("workloads (--workload, any case):");
            for w in WORKLOADS.iter() {
                eprintln!("  {:<18} {}", w.name, w.doc);
            }
            eprintln!("policies (--policy, any case):");
            for p in POLICIES {
                eprintln!("  {}", p.name());
            }
            return ExitCode::SUCCESS;
        }
        Err(CliError::Usage(e)) => {
            eprintln!("{e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        Err(CliError::UnknownName(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let selected: Vec<&Workload> = match args.workload {
        Some(w) => vec![w],
        None => WORKLOADS.iter().collect(),
    };

    let mut rows = Vec::new();
    for w in selected {
        let events = args.events.unwrap_or(w.events);
        // The reference semantics (every necessary EOI exits): `Exact`'s
        // guest-visible trace, which every other run is compared with.
        let mut reference: Option<sim::Trace> = None;
        for policy in POLICIES {
            if args.policy.is_some_and(|p| p != policy) {
                continue;
            }
            let (mut c, t, wall) = run_one(w, policy, args.seed, events);
            let r = match &reference {
                Some(r) => r,
                None if policy == Policy::Exact => reference.insert(t.clone()),
                None => reference
                    .insert(sim::run_traced(w, Policy::Exact, args.seed, events, &mut |_| {}).1),
            };
            c.divergences = sim::divergences(&t, r);
            rows.push((c, wall));
        }
    }

    if args.json {
        // Flat objects of numbers and two fixed-alphabet names: written by
        // hand, so the census binary needs no serde (it builds in seconds).
        println!("[");
        for (i, (c, wall)) in rows.iter().enumerate() {
            let fields: [(&str, u64); 24] = [
                ("deferred", c.deferred),
                ("lazy_resolutions", c.lazy_resolutions),
                ("exit_kicks", c.exit_kicks),
                ("divergences", c.divergences),
                ("events", c.events),
                ("exits", c.exits),
                ("necessary", c.necessary),
                ("unavoidable", c.unavoidable),
                ("avoidable", c.avoidable),
                ("lost", c.lost),
                ("rescans", c.rescans),
                ("vmcs_words", c.vmcs_words),
                ("eois", c.eois),
                ("entries_scanned", c.entries_scanned),
                ("stuck_remote_irr", c.stuck_remote_irr),
                ("storms_throttled", c.storms_throttled),
                ("deliveries", c.deliveries),
                ("rtc_coalesced", c.rtc_coalesced),
                ("avoidable_masked_route", c.avoidable_masked_route),
                ("edge_eoi_rirr_clears", c.edge_eoi_rirr_clears),
                ("suppressed", c.suppressed),
                ("suppressed_exits", c.suppressed_exits),
                ("ioapic_eoi_writes", c.ioapic_eoi_writes),
                ("seed", args.seed),
            ];
            print!(
                "  {{ \"workload\": \"{}\", \"policy\": \"{}\"",
                c.workload,
                c.policy.name()
            );
            for (k, v) in fields {
                print!(", \"{k}\": {v}");
            }
            let comma = if i + 1 < rows.len() { "," } else { "" };
            println!(", \"wall_ms\": {:.3} }}{comma}", wall.as_secs_f64() * 1e3);
        }
        println!("]");
    } else {
        println!(
            "seed {:#x}; exits = necessary + unavoidable + avoidable; lost = necessary EOIs not intercepted (LineAware: deferred ones never resolved); divergences from Exact's acknowledged vectors",
            args.seed
        );
        println!();
        println!(
            "| workload | policy | EOIs | exits | necessary | unavoidable | avoidable | lost | suppressed (exits) | rescans | VMCS words | stuck RIRR | storms | deferred | lazy | kicks | divergences | wall |"
        );
        println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (c, wall) in &rows {
            let suppressed = if c.ioapic_eoi_writes == 0 {
                "-".to_string()
            } else {
                format!("{} ({})", c.suppressed, c.suppressed_exits)
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s |",
                c.workload,
                c.policy.name(),
                c.eois,
                c.exits,
                c.necessary,
                c.unavoidable,
                c.avoidable,
                c.lost,
                suppressed,
                c.rescans,
                c.vmcs_words,
                c.stuck_remote_irr,
                c.storms_throttled,
                c.deferred,
                c.lazy_resolutions,
                c.exit_kicks,
                c.divergences,
                wall.as_secs_f64()
            );
        }
    }

    if let Some(path) = &args.svg {
        let censuses: Vec<Census> = rows.iter().map(|(c, _)| *c).collect();
        if let Err(e) = std::fs::write(path, svg::chart(&censuses, args.seed)) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        // On stderr, so that the table or JSON on stdout is unchanged.
        eprintln!("wrote {path}");
    }
    if args.json {
        // As before `--svg` existed: in JSON mode oracle/LAPIC disagreements
        // are not reported and do not set the exit status.
        return ExitCode::SUCCESS;
    }

    let bad: Vec<&Census> = rows
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.oracle_mismatches != 0)
        .collect();
    if !bad.is_empty() {
        eprintln!("oracle/LAPIC disagreements (a simulator or crate bug):");
        for c in bad {
            eprintln!(
                "  {} {}: {}",
                c.workload,
                c.policy.name(),
                c.oracle_mismatches
            );
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The census as a hand-written SVG bar chart.
///
/// One group per workload, one bar per policy. Above the zero line a bar
/// stacks the run's necessary, unavoidable and avoidable exits; below it a
/// hatched red bar shows the lost EOIs (necessary EOIs that did not exit).
/// Workloads differ tenfold in scale, so every count is drawn as a share of
/// the guest EOIs of its own run; the absolute exit count is printed above
/// each bar and a nonzero lost count below it. The output depends on the
/// census numbers and the seed only: the same run gives the same bytes.
mod svg {
    use std::fmt::Write as _;

    use eoi_exit::Policy;
    use eoi_exit_testkit::sim::Census;

    const NECESSARY: &str = "#0077bb";
    const UNAVOIDABLE: &str = "#33bbee";
    const AVOIDABLE: &str = "#ee7733";
    const LOST: &str = "#cc3311";
    const INK: &str = "#222222";
    const FAINT: &str = "#666666";

    const BAR_W: f64 = 18.0;
    const BAR_GAP: f64 = 5.0;
    const GROUP_GAP: f64 = 30.0;
    const LEFT: f64 = 84.0;
    const RIGHT: f64 = 24.0;
    /// The top of the y range (room for the rotated exit counts above it).
    const PLOT_TOP: f64 = 188.0;
    /// Height of the whole y range, exits above and lost below the zero line.
    const PLOT_H: f64 = 380.0;
    /// Room under the lost range for the lost counts.
    const LOST_LABEL_H: f64 = 18.0;
    /// Room for the rotated policy names.
    const POLICY_LABEL_H: f64 = 104.0;

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    /// `n` with thousands separators.
    fn thousands(n: u64) -> String {
        let d = n.to_string();
        let mut out = String::new();
        for (i, ch) in d.chars().enumerate() {
            if i > 0 && (d.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    }

    fn share(c: &Census, n: u64) -> f64 {
        if c.eois == 0 {
            0.0
        } else {
            n as f64 / c.eois as f64
        }
    }

    /// `x` rounded up to a multiple of `step` (at least one step).
    fn ceil_to(x: f64, step: f64) -> f64 {
        ((x / step - 1e-9).ceil().max(1.0)) * step
    }

    /// The smallest "nice" tick step at least `min_px` apart at `unit` px per 1.0.
    fn tick_step(unit: f64, min_px: f64) -> f64 {
        [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0]
            .into_iter()
            .find(|s| s * unit >= min_px)
            .unwrap_or(1.0)
    }

    fn pct(x: f64) -> String {
        let p = x * 100.0;
        if (p - p.round()).abs() < 1e-6 {
            format!("{p:.0}%")
        } else {
            format!("{p:.1}%")
        }
    }

    /// A bar segment `h` px high with its top at `y`.
    fn rect(out: &mut String, x: f64, y: f64, h: f64, fill: &str) {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{BAR_W:.0}" height="{h:.1}" fill="{fill}"/>"#
        );
    }

    pub fn chart(rows: &[Census], seed: u64) -> String {
        // Workloads in run order, each with its runs in policy order.
        let mut groups: Vec<(&str, Vec<&Census>)> = Vec::new();
        for c in rows {
            match groups.last_mut() {
                Some((w, cs)) if *w == c.workload => cs.push(c),
                _ => groups.push((c.workload, vec![c])),
            }
        }
        let policies: Vec<Policy> = super::POLICIES
            .into_iter()
            .filter(|p| rows.iter().any(|c| c.policy == *p))
            .collect();

        let top = rows.iter().map(|c| share(c, c.exits)).fold(0.0, f64::max);
        let top = ceil_to(top, 0.1).min(1.0);
        let max_lost = rows.iter().map(|c| share(c, c.lost)).fold(0.0, f64::max);
        let bottom = if max_lost > 0.0 {
            ceil_to(max_lost, 0.05).min(1.0)
        } else {
            0.0
        };
        let unit = PLOT_H / (top + bottom);
        let y0 = PLOT_TOP + top * unit;
        let y_bottom = y0 + bottom * unit;

        let group_w = |n: usize| n as f64 * BAR_W + (n.max(1) - 1) as f64 * BAR_GAP;
        let plot_w: f64 = groups.iter().map(|(_, cs)| group_w(cs.len())).sum::<f64>()
            + groups.len() as f64 * GROUP_GAP;
        // Wide enough for the title, captions and legend; a narrow census
        // (one workload, say) is centred.
        let width = (LEFT + plot_w + RIGHT).max(1080.0);
        let plot_mid = LEFT + (width - LEFT - RIGHT) / 2.0;
        let label_top = y_bottom + LOST_LABEL_H;
        let name_y = label_top + POLICY_LABEL_H + 16.0;
        let height = name_y + 50.0;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Verdana, Arial, sans-serif" fill="{INK}">"#
        );
        let _ = writeln!(
            s,
            r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="{LOST}"/><rect width="2" height="6" fill="#ffffff" fill-opacity="0.55"/></pattern></defs>"##
        );
        let _ = writeln!(
            s,
            r##"<rect width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
        );

        // Title and how to read the chart.
        let events: Vec<u64> = groups.iter().map(|(_, cs)| cs[0].events).collect();
        let events_note = if events.windows(2).all(|w| w[0] == w[1]) && !events.is_empty() {
            format!("{} events per run", thousands(events[0]))
        } else {
            "each workload's default event count (under its name)".to_string()
        };
        let _ = writeln!(
            s,
            r#"<text x="{LEFT:.0}" y="30" font-size="19" font-weight="bold">EOI exit census: exits and lost EOIs per workload and policy</text>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT:.0}" y="52" font-size="13">seed {seed:#x}, {}</text>"#,
            esc(&events_note)
        );
        for (y, line) in [
            (
                72,
                "Normalised per run: bar height = count ÷ the guest EOIs of that run, so workloads that differ tenfold in scale share one y axis.",
            ),
            (
                88,
                "Numbers above the bars: exits. Hatched red bars below the axis: lost EOIs, with their count (a nonzero one is drawn at least 3 px high).",
            ),
        ] {
            let _ = writeln!(
                s,
                r#"<text x="{LEFT:.0}" y="{y}" font-size="12" fill="{FAINT}">{}</text>"#,
                esc(line)
            );
        }

        // Legend.
        let legend: [(&str, &str); 4] = [
            (NECESSARY, "necessary exit"),
            (
                UNAVOIDABLE,
                "unavoidable exit (not needed, indistinguishable per vector)",
            ),
            (AVOIDABLE, "avoidable exit (not needed)"),
            (
                "url(#hatch)",
                "lost EOI (necessary, not intercepted) ↓ below the axis",
            ),
        ];
        let mut lx = LEFT;
        for (fill, label) in legend {
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.0}" y="106" width="14" height="14" fill="{fill}"/><text x="{:.0}" y="118" font-size="12">{}</text>"#,
                lx + 20.0,
                esc(label)
            );
            lx += 20.0 + label.chars().count() as f64 * 6.6 + 30.0;
        }

        // Y axis: grid, ticks, labels.
        let step = tick_step(unit, 26.0);
        let mut v = 0.0;
        while v <= top + 1e-9 {
            let y = y0 - v * unit;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#dddddd"/><text x="{:.0}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                width - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                pct(v)
            );
            v += step;
        }
        let lstep = tick_step(unit, 16.0);
        let mut v = lstep;
        while v <= bottom + 1e-9 {
            let y = y0 + v * unit;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#f0dcd8"/><text x="{:.0}" y="{:.1}" font-size="11" text-anchor="end" fill="{LOST}">{}</text>"##,
                width - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                pct(v)
            );
            v += lstep;
        }
        let mid = PLOT_TOP + top * unit / 2.0;
        let _ = writeln!(
            s,
            r#"<text transform="translate(22,{mid:.1}) rotate(-90)" font-size="13" text-anchor="middle">exits ÷ guest EOIs of the run</text>"#
        );
        if bottom > 0.0 {
            let _ = writeln!(
                s,
                r#"<text transform="translate(22,{:.1}) rotate(-90)" font-size="12" text-anchor="middle" fill="{LOST}">lost</text>"#,
                y0 + bottom * unit / 2.0
            );
        }

        // Bars.
        let mut gx = plot_mid - plot_w / 2.0 + GROUP_GAP / 2.0;
        for (gi, (name, cs)) in groups.iter().enumerate() {
            let gw = group_w(cs.len());
            if gi % 2 == 1 {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#000000" fill-opacity="0.035"/>"##,
                    gx - GROUP_GAP / 2.0,
                    PLOT_TOP - 44.0,
                    gw + GROUP_GAP,
                    name_y + 22.0 - (PLOT_TOP - 44.0)
                );
            }
            for (bi, c) in cs.iter().enumerate() {
                let x = gx + bi as f64 * (BAR_W + BAR_GAP);
                let cx = x + BAR_W / 2.0;
                let _ = writeln!(
                    s,
                    "<g><title>{} / {}: {} EOIs, {} exits ({} necessary, {} unavoidable, {} avoidable), {} lost</title>",
                    esc(name),
                    c.policy.name(),
                    c.eois,
                    c.exits,
                    c.necessary,
                    c.unavoidable,
                    c.avoidable,
                    c.lost
                );
                let mut y = y0;
                for (n, fill) in [
                    (c.necessary, NECESSARY),
                    (c.unavoidable, UNAVOIDABLE),
                    (c.avoidable, AVOIDABLE),
                ] {
                    if n == 0 {
                        continue;
                    }
                    let h = (share(c, n) * unit).max(1.5);
                    y -= h;
                    rect(&mut s, x, y, h, fill);
                }
                let _ = writeln!(
                    s,
                    r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="10" fill="{FAINT}">{}</text>"#,
                    cx + 3.5,
                    y - 4.0,
                    c.exits
                );
                if c.lost > 0 {
                    let h = (share(c, c.lost) * unit).max(3.0);
                    rect(&mut s, x, y0, h, "url(#hatch)");
                    let _ = writeln!(
                        s,
                        r#"<text x="{cx:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="{LOST}" font-weight="bold">{}</text>"#,
                        y0 + h + 11.0,
                        c.lost
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="11" text-anchor="end">{}</text></g>"#,
                    cx + 4.0,
                    label_top,
                    c.policy.name()
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{name_y:.1}" font-size="13" font-weight="bold" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="{FAINT}">{} events</text>"#,
                gx + gw / 2.0,
                esc(name),
                gx + gw / 2.0,
                name_y + 14.0,
                thousands(cs[0].events)
            );
            gx += gw + GROUP_GAP;
        }
        // The zero line on top of the bars.
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT:.0}" y1="{y0:.1}" x2="{:.0}" y2="{y0:.1}" stroke="{INK}" stroke-width="1.2"/>"#,
            width - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{FAINT}">workload (one bar per interception policy: {})</text>"#,
            plot_mid,
            name_y + 36.0,
            policies
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str("</svg>\n");
        s
    }
}
