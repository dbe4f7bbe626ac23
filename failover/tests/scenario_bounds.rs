//! Issue #13: a scenario that would make `twinsite simulate` allocate or work without bound
//! is refused before it runs, with the file, the line and the field to change.

use failover::sim::{Scenario, ScenarioError, run_yaml};
use scheduler::limits::{MAX_SCENARIO_JOBS, MAX_SCENARIO_WORK, MAX_TASK_MANAGERS_PER_JOB};

fn scenario(duration: &str, job_lines: &str) -> String {
    format!(
        "duration: {duration}
sites:
  a: {{nodes: 3}}
  b: {{nodes: 3}}
jobs:
  - id: shop/orders
    site: a
{job_lines}"
    )
}

fn refusal(yaml: &str) -> ScenarioError {
    Scenario::parse("bounds.yaml", yaml)
        .and_then(|s| s.plan())
        .expect_err("the scenario must be refused")
}

/// The finding: `checkpoint-interval: 1ns` ran without bound (the step count was capped, the
/// checkpoints taken within each step were not).
#[test]
fn a_checkpoint_interval_below_flinks_minimum_is_refused_naming_the_job() {
    let error = refusal(&scenario("10m", "    checkpoint-interval: 1ns\n"));
    assert_eq!(error.field.as_deref(), Some("jobs[0].checkpoint-interval"));
    assert_eq!(error.line, Some(6), "the job's line");
    assert_eq!(
        error.message,
        "must be at least 10ms (Flink's shortest checkpoint interval), found 1ns"
    );
}

#[test]
fn checkpoints_past_the_work_bound_are_refused_naming_the_shortest_interval() {
    // 10 ms over a year: 3.15e9 checkpoints of one job.
    let error = refusal(&format!(
        "{}  - id: shop/slow\n    site: b\n    checkpoint-interval: 1h\n",
        scenario("365d\nstep: 1h", "    checkpoint-interval: 10ms\n")
    ));
    assert_eq!(error.field.as_deref(), Some("jobs[0].checkpoint-interval"));
    assert!(
        error.message.contains(&format!(
            "checkpoints over 8760h00m), more than {MAX_SCENARIO_WORK}: make the checkpoint interval (10ms) longer or the duration shorter"
        )),
        "{}",
        error.message
    );
}

#[test]
fn steps_times_jobs_past_the_work_bound_are_refused_naming_the_step() {
    let jobs: String = (0..400)
        .map(|i| format!("  - id: shop/j{i}\n    site: b\n    checkpoint-interval: 1h\n"))
        .collect();
    // 1 000 000 steps × 401 jobs.
    let yaml = format!(
        "{}{jobs}",
        scenario("1000000s", "    checkpoint-interval: 1h\n")
    );
    let error = refusal(&yaml);
    assert_eq!(error.field.as_deref(), Some("step"));
    assert!(
        error.message.contains("(1000000 steps × 401 jobs"),
        "{}",
        error.message
    );
}

#[test]
fn task_managers_past_the_bound_are_refused_before_anything_is_allocated_for_them() {
    let error = refusal(&scenario("10m", "    task-managers: 4294967295\n"));
    assert_eq!(error.field.as_deref(), Some("jobs[0].task-managers"));
    assert_eq!(
        error.message,
        format!("must be between 1 and {MAX_TASK_MANAGERS_PER_JOB}, found 4294967295")
    );
}

#[test]
fn more_jobs_than_the_bound_are_refused() {
    let jobs: String = (0..=MAX_SCENARIO_JOBS)
        .map(|i| format!("  - {{id: shop/j{i}, site: a}}\n"))
        .collect();
    let yaml = format!("duration: 1m\nsites:\n  a: {{nodes: 1}}\n  b: {{nodes: 1}}\njobs:\n{jobs}");
    let error = refusal(&yaml);
    assert_eq!(error.field.as_deref(), Some("jobs"));
}

#[test]
fn a_scenario_within_the_bounds_still_runs() {
    let outcome = run_yaml(
        "bounds.yaml",
        &scenario("2m", "    checkpoint-interval: 10ms\n"),
    )
    .unwrap();
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
}

/// Found by the fuzzer: an interval of 2^64-1 seconds overflowed the virtual clock.
#[test]
fn a_duration_longer_than_a_scenario_may_be_is_refused_naming_the_field() {
    let error = refusal(&scenario(
        "12h",
        "    checkpoint-interval: 18446744073709551615\n",
    ));
    assert_eq!(error.field.as_deref(), Some("jobs[0].checkpoint-interval"));
    assert!(
        error
            .message
            .ends_with("is longer than a scenario may be (3650 days)"),
        "{}",
        error.message
    );
    let error = refusal(&format!(
        "{}world: {{restart-delay: 99999999d}}\n",
        scenario("12h", "")
    ));
    assert_eq!(error.field.as_deref(), Some("world.restart-delay"));
    let error = refusal(&scenario("3651d\nstep: 1d", ""));
    assert_eq!(error.field.as_deref(), Some("duration"));
}
