//! `steadfast-sim`: sweep seeds, replay one, or check determinism.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use steadfast::teeth::Bug;
use steadfast_sim::faults::{Corner, FaultClass};
use steadfast_sim::harness::{self, RunOptions};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a steadfast cluster under faults")]
struct Args {
    /// Seeds to sweep, as a range `A..B`.
    #[arg(long)]
    seeds: Option<String>,
    /// Replay one seed and print its event log.
    #[arg(long)]
    seed: Option<u64>,
    /// Also run this many fresh random seeds.
    #[arg(long, default_value_t = 0)]
    fresh: u64,
    /// Run every seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Simulated seconds of faults per seed.
    #[arg(long, default_value_t = 60)]
    fault_secs: u64,
    /// Stop starting new seeds after this many wall-clock seconds.
    #[arg(long)]
    budget_secs: Option<u64>,
    /// Print every run's event log.
    #[arg(long)]
    verbose: bool,
    /// Do not fail when a fault class never happened (for short sweeps).
    #[arg(long)]
    allow_missing_faults: bool,
    /// Succeed only if some seed finds a violation, and stop at the first (for builds with a
    /// deliberately broken node: proves the suite has teeth).
    #[arg(long)]
    expect_violation: bool,
    /// Long runs: fresh random seeds (after `--seeds`, if given) until `--budget-secs`, one
    /// progress line a minute, and only failing seeds' event logs kept (in `--soak-dir`).
    #[arg(long)]
    soak: bool,
    /// Where `--soak` writes failing seeds' event logs.
    #[arg(long, default_value = "target/soak")]
    soak_dir: std::path::PathBuf,
    /// Plant this bug in every node (a build with `--features teeth` only; see sim/README.md).
    #[arg(long, value_name = "BUG")]
    plant: Option<String>,
    /// Print the names `--plant` takes, one a line, and exit.
    #[arg(long)]
    list_bugs: bool,
}

/// Plants the bug `--plant` names, or says in one line why it cannot.
fn plant(name: &str) -> Result<(), String> {
    let Some(bug) = Bug::from_name(name) else {
        let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        return Err(format!(
            "--plant: no bug named {name:?}; the bugs are {}",
            names.join(", ")
        ));
    };
    #[cfg(feature = "teeth")]
    {
        steadfast::teeth::plant(bug);
        Ok(())
    }
    #[cfg(not(feature = "teeth"))]
    {
        let _ = bug;
        Err(
            "--plant needs a teeth build: cargo build -p steadfast-sim --release --features teeth"
                .into(),
        )
    }
}

fn parse_range(s: &str) -> Option<std::ops::Range<u64>> {
    let (a, b) = s.split_once("..")?;
    Some(a.parse().ok()?..b.parse().ok()?)
}

#[expect(
    clippy::disallowed_methods,
    reason = "wall time only measures the sweep's speed"
)]
fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_bugs {
        for bug in Bug::ALL {
            println!("{}", bug.name());
        }
        return ExitCode::SUCCESS;
    }
    if let Some(name) = &args.plant {
        if let Err(e) = plant(name) {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .init();
    }
    let mut seeds: Vec<u64> = match (&args.seeds, args.seed) {
        (Some(r), _) => match parse_range(r) {
            Some(r) => r.collect(),
            None => {
                eprintln!("--seeds takes A..B");
                return ExitCode::from(2);
            }
        },
        (None, Some(s)) => vec![s],
        (None, None) => (0..20).collect(),
    };
    for _ in 0..args.fresh {
        seeds.push(rand::random::<u64>() >> 1);
    }
    if args.soak {
        if args.seeds.is_none() && args.seed.is_none() {
            seeds.clear();
        }
        if let Err(e) = std::fs::create_dir_all(&args.soak_dir) {
            eprintln!("--soak-dir {}: {e}", args.soak_dir.display());
            return ExitCode::from(2);
        }
    }
    let options = RunOptions {
        fault_secs: args.fault_secs,
        ..RunOptions::default()
    };
    let started = Instant::now();
    let mut totals: BTreeMap<FaultClass, u32> = BTreeMap::new();
    let mut corners: BTreeMap<Corner, u32> = BTreeMap::new();
    let (mut ran, mut failed, mut sim_secs) = (0u64, 0u64, 0u64);
    let mut next_progress = 60;
    let mut queue = seeds.into_iter();
    loop {
        if args
            .budget_secs
            .is_some_and(|b| started.elapsed().as_secs() >= b)
        {
            println!("budget exhausted after {ran} seeds");
            break;
        }
        let Some(seed) = queue
            .next()
            .or_else(|| args.soak.then(|| rand::random::<u64>() >> 1))
        else {
            break;
        };
        if args.soak && started.elapsed().as_secs() >= next_progress {
            next_progress += 60;
            println!(
                "soak: {ran} seeds in {:.0} s, {failed} failed",
                started.elapsed().as_secs_f64()
            );
        }
        let report = harness::run(seed, &options);
        let mut verdict = report.violation.clone();
        if args.check_determinism {
            let again = harness::run(seed, &options);
            if again.trace_hash != report.trace_hash && verdict.is_none() {
                verdict = Some(format!(
                    "non-deterministic: trace {:016x} then {:016x}",
                    report.trace_hash, again.trace_hash
                ));
            }
        }
        ran += 1;
        sim_secs += args.fault_secs;
        for (c, n) in &report.faults {
            *totals.entry(*c).or_default() += n;
        }
        for (c, n) in &report.corners {
            *corners.entry(*c).or_default() += n;
        }
        let faults: u32 = report.faults.values().sum();
        match &verdict {
            None if args.soak => {}
            None => println!(
                "seed={seed} trace={:016x} nodes={} ops={} faults={faults} result=ok",
                report.trace_hash, report.nodes, report.ops
            ),
            Some(v) => {
                failed += 1;
                if args.expect_violation {
                    println!("seed={seed} found the planted bug as expected: {v}");
                    println!(
                        "teeth: caught by seed {seed} after {ran} seeds in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                    return ExitCode::SUCCESS;
                }
                if args.soak {
                    let path = args.soak_dir.join(format!("seed-{seed}.log"));
                    let log = format!("{v}\n{}\n", report.trace.join("\n"));
                    if let Err(e) = std::fs::write(&path, log) {
                        eprintln!("{}: {e}", path.display());
                    }
                    println!("  log: {}", path.display());
                }
                println!("seed={seed} trace={:016x} nodes={} ops={} faults={faults} result=VIOLATION {v}", report.trace_hash, report.nodes, report.ops);
                println!("  replay: cargo run -p steadfast-sim --release -- --seed {seed} --fault-secs {} --verbose", args.fault_secs);
            }
        }
        if args.verbose || (verdict.is_some() && args.seed.is_some()) {
            for line in &report.trace {
                println!("  {line}");
            }
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!("fault coverage:");
    let mut missing = Vec::new();
    for class in FaultClass::ALL {
        let n = totals.get(&class).copied().unwrap_or(0);
        println!("  {class:<18} {n}");
        if n == 0 {
            missing.push(class.to_string());
        }
    }
    println!("workload corners:");
    for corner in Corner::ALL {
        let n = corners.get(&corner).copied().unwrap_or(0);
        println!("  {corner:<18} {n}");
        if n == 0 {
            missing.push(corner.to_string());
        }
    }
    println!(
        "swept {ran} seeds ({sim_secs} simulated s of faults) in {:.1} min: {:.1} seeds/min; {failed} failed",
        minutes,
        ran as f64 / minutes.max(1e-9)
    );
    if args.expect_violation {
        println!("teeth: NO violation found in {ran} seeds; the planted bug went unnoticed");
        return ExitCode::FAILURE;
    }
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    if !missing.is_empty() && !args.allow_missing_faults && ran > 1 {
        println!("fault classes or corners that never happened: {missing:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
