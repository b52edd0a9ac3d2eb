//! The exit census: every workload under every interception policy, on the
//! identical seeded event stream, with each guest EOI classified by the
//! simulator's oracle (necessary, unavoidable, avoidable, lost).
//!
//! ```text
//! cargo run --release --example exit_census [--json] [--workload NAME] [--policy NAME] [--seed N] [--events N]
//! ```

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eoi_exit::Policy;
use eoi_exit::sim::{self, Census, DEFAULT_SEED, WORKLOADS, Workload};

struct Args {
    json: bool,
    workload: Option<String>,
    policy: Option<Policy>,
    seed: u64,
    events: Option<u64>,
}

const USAGE: &str =
    "usage: exit_census [--json] [--workload NAME] [--policy NAME] [--seed N] [--events N]";

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        workload: None,
        policy: None,
        seed: DEFAULT_SEED,
        events: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--workload" => a.workload = Some(value("--workload")?),
            "--policy" => {
                let v = value("--policy")?;
                a.policy = Some(
                    Policy::ALL
                        .into_iter()
                        .find(|p| p.name() == v)
                        .ok_or(format!("unknown policy {v}"))?,
                );
            }
            "--seed" => {
                let v = value("--seed")?;
                a.seed = parse_u64(&v).ok_or(format!("bad seed {v}"))?;
            }
            "--events" => {
                let v = value("--events")?;
                a.events = Some(parse_u64(&v).ok_or(format!("bad event count {v}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
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

fn run_one(w: &Workload, policy: Policy, seed: u64, events: u64) -> (Census, Duration) {
    let mut bar = Progress::new(format!("{} / {}", w.name, policy.name()), events);
    let start = Instant::now();
    let c = sim::run_with_progress(w, policy, seed, events, &mut |d| bar.update(d));
    let wall = start.elapsed();
    bar.done();
    (c, wall)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            eprintln!("workloads:");
            for w in WORKLOADS.iter() {
                eprintln!("  {:<18} {}", w.name, w.doc);
            }
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let selected: Vec<&Workload> = match &args.workload {
        Some(n) => match sim::workload(n) {
            Some(w) => vec![w],
            None => {
                eprintln!("unknown workload {n}; one of:");
                for w in WORKLOADS.iter() {
                    eprintln!("  {}", w.name);
                }
                return ExitCode::from(2);
            }
        },
        None => WORKLOADS.iter().collect(),
    };

    let mut rows = Vec::new();
    for w in selected {
        let events = args.events.unwrap_or(w.events);
        for policy in Policy::ALL {
            if args.policy.is_some_and(|p| p != policy) {
                continue;
            }
            rows.push(run_one(w, policy, args.seed, events));
        }
    }

    if args.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|(c, wall)| {
                serde_json::json!({
                    "workload": c.workload,
                    "policy": c.policy.name(),
                    "events": c.events,
                    "exits": c.exits,
                    "necessary": c.necessary,
                    "unavoidable": c.unavoidable,
                    "avoidable": c.avoidable,
                    "lost": c.lost,
                    "rescans": c.rescans,
                    "vmcs_words": c.vmcs_words,
                    "eois": c.eois,
                    "entries_scanned": c.entries_scanned,
                    "stuck_remote_irr": c.stuck_remote_irr,
                    "storms_throttled": c.storms_throttled,
                    "deliveries": c.deliveries,
                    "rtc_coalesced": c.rtc_coalesced,
                    "avoidable_masked_route": c.avoidable_masked_route,
                    "edge_eoi_rirr_clears": c.edge_eoi_rirr_clears,
                    "seed": args.seed,
                    "wall_ms": wall.as_secs_f64() * 1e3,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON of plain numbers")
        );
        return ExitCode::SUCCESS;
    }

    println!(
        "seed {:#x}; exits = necessary + unavoidable + avoidable; lost = necessary EOIs not intercepted",
        args.seed
    );
    println!();
    println!(
        "| workload | policy | EOIs | exits | necessary | unavoidable | avoidable | lost | rescans | VMCS words | stuck RIRR | storms | wall |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (c, wall) in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s |",
            c.workload,
            c.policy.name(),
            c.eois,
            c.exits,
            c.necessary,
            c.unavoidable,
            c.avoidable,
            c.lost,
            c.rescans,
            c.vmcs_words,
            c.stuck_remote_irr,
            c.storms_throttled,
            wall.as_secs_f64()
        );
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
