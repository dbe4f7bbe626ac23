//! `twinsite simulate --scenario FILE`: plays one failover scenario (node or site loss,
//! partitions, ops requests, leader crashes) against the real failover engine in a simulated
//! two-site world on a virtual clock, and prints the timeline and the RTO/RPO of every job.
//! The scenario format is documented in `failover/scenarios/README.md`.
//!
//! Exit status: 0 when the run kept every invariant, 1 for a scenario that cannot be read
//! (the message names the file, line and field), 2 when an invariant was violated.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use super::OutputFormat;
use super::read_input;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario file (YAML): sites, jobs, engine settings and timed events.
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// `table`: the timeline and the RTO/RPO table; `json`: everything, machine-readable.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let yaml = read_input("--scenario", &args.scenario)?;
    let source = args.scenario.display().to_string();
    let outcome = failover::sim::run_yaml(&source, &yaml).map_err(|e| anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Table => write!(out, "{}", outcome.render())?,
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&outcome)?)?,
    }
    out.flush()?;
    if !outcome.violations.is_empty() {
        eprintln!(
            "error: {source}: {} invariant violation(s), the first at {}: {}",
            outcome.violations.len(),
            failover::sim::fmt_offset(outcome.violations[0].at),
            outcome.violations[0].message
        );
        std::process::exit(2);
    }
    Ok(())
}
