//! Fuzz target for the failover scenario YAML (`twinsite simulate --scenario`, issue #13):
//! a mutated scenario is parsed and checked, and, when it is small enough to play in a few
//! milliseconds, played; none may panic, hang or allocate without bound. The checked-in
//! corpus (`tests/fuzz-corpus/scenario/`) holds the cases: `refused-*` files must be
//! refused, `accepted-*` ones accepted. Seeds also include every shipped scenario.
//!
//! `TWINSITE_FUZZ_CASES=20000 cargo test -p twinsite-failover --release --test fuzz_scenario`
//! runs longer.

#[path = "../../scheduler/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::path::{Path, PathBuf};

use failover::sim::{Scenario, run};
use fuzz_support::{ALLOCATION_LIMIT, cases, fuzz, seeds};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> =
    cap::Cap::new(std::alloc::System, ALLOCATION_LIMIT);

/// Cases in a plain `cargo test` (debug): well under 20 s.
const DEFAULT_CASES: u32 = 3_000;

/// Scenarios are played only up to this many job-steps: the fuzz is about the parser and the
/// checks; long runs are the simulation tests' business.
const MAX_PLAYED_JOB_STEPS: u128 = 20_000;

fn target(text: &str) {
    let Ok(plan) = Scenario::parse("fuzz.yaml", text).and_then(|s| s.plan()) else {
        return;
    };
    let steps = plan.duration.as_nanos() / plan.step.as_nanos().max(1);
    let nodes: usize = plan.sites.iter().map(|(_, n)| n.len()).sum();
    if steps * (plan.jobs.len() + nodes) as u128 <= MAX_PLAYED_JOB_STEPS {
        let _ = run(&plan);
    }
}

#[test]
fn fuzz_failover_scenario_yaml() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(manifest.join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    shipped.sort();
    let seeds = seeds(&manifest.join("tests/fuzz-corpus/scenario"), &shipped);
    for seed in &seeds {
        let file = Path::new(&seed.name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let outcome = Scenario::parse("corpus.yaml", &String::from_utf8_lossy(&seed.bytes))
            .and_then(|s| s.plan());
        if file.starts_with("refused-") {
            let error = outcome.expect_err(file);
            println!("{file}: {error}");
        } else if file.starts_with("accepted-") {
            outcome.unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let (cases, slowest) = fuzz("scenario YAML", &seeds, cases(DEFAULT_CASES), target);
    println!(
        "fuzz scenario YAML: {cases} mutated cases, slowest case {slowest:?}, peak heap {} KiB",
        ALLOCATOR.max_allocated() / 1024
    );
}
