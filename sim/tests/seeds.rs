//! Fixed simulation seeds as a `cargo test` target. `harness = false`: seeds run one at a time
//! on the main thread, because crash faults are only deterministic one simulation at a time per
//! process (DESIGN §4). `SIM_SEEDS=A..B` and `SIM_FAULT_SECS=N` override the defaults.

use std::process::ExitCode;

use steadfast_sim::harness::{self, RunOptions};

fn main() -> ExitCode {
    let range = std::env::var("SIM_SEEDS").unwrap_or_else(|_| "0..12".into());
    let (a, b) = range.split_once("..").expect("SIM_SEEDS is A..B");
    let seeds: std::ops::Range<u64> = a.parse().expect("start")..b.parse().expect("end");
    let fault_secs = std::env::var("SIM_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let options = RunOptions {
        fault_secs,
        ..RunOptions::default()
    };
    let (mut passed, mut failed) = (0, 0);
    for seed in seeds {
        let report = harness::run(seed, &options);
        let again = (seed % 4 == 0).then(|| harness::run(seed, &options).trace_hash);
        let verdict = match (&report.violation, again) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(h)) if h != report.trace_hash => Some(format!(
                "non-deterministic: {:016x} vs {h:016x}",
                report.trace_hash
            )),
            _ => None,
        };
        match verdict {
            None => {
                passed += 1;
                println!(
                    "test sim seed={seed} trace={:016x} ... ok",
                    report.trace_hash
                );
            }
            Some(v) => {
                failed += 1;
                println!(
                    "test sim seed={seed} trace={:016x} ... FAILED: {v}",
                    report.trace_hash
                );
                println!("  replay: cargo run -p steadfast-sim --release -- --seed {seed} --fault-secs {fault_secs} --verbose");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
