//! Command-line surface of the `twinsite` binary: the subcommands only. Each
//! `crate::commands::<x>` owns its arguments and acts on them.

use clap::{Parser, Subcommand};

use crate::commands::{
    agent, diagnose, failover, generate, plan, render, report, run, simulate, sync,
};

#[derive(Debug, Parser)]
#[command(
    name = "twinsite",
    version,
    about = "Places, replicates and fails over Flink jobs across two data-centre sites"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `twinsite=debug`.
    #[arg(long, global = true, env = "TWINSITE_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan where every job runs: its site and the node of every pod.
    Plan(plan::PlanArgs),
    /// Write a synthetic two-site cluster, jobs and policy in the real input formats.
    Generate(generate::GenerateArgs),
    /// Run the controller (embedded default without --config: two simulated sites).
    Run(run::RunArgs),
    /// Print the StreamJob CustomResourceDefinition (YAML) generated from the Rust types.
    Crd,
    /// Replicate complete checkpoints from one site's storage to the other's.
    Sync(sync::SyncArgs),
    /// Write reports (capacity planning).
    Report(report::ReportArgs),
    /// Ask a running controller to move a site's jobs to the other site (`--dry-run`: the plan).
    Failover(failover::FailoverArgs),
    /// Play a failover scenario in a simulated two-site world; print the timeline and RTO/RPO.
    Simulate(simulate::SimulateArgs),
    /// Print the Kubernetes objects a launch would create (YAML), for review and GitOps.
    Render(render::RenderArgs),
    /// Which jobs are in trouble, why, and what to do (Flink metrics, RPO exposure, failover
    /// readiness).
    Diagnose(diagnose::DiagnoseArgs),
    /// Guard one site: hold its lease in etcd, stop generations the store does not place
    /// there, stop every job of the site when the lease runs out (self-fencing).
    Agent(agent::AgentArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Plan(args) => plan::run(&args),
            Command::Generate(args) => generate::run(&args),
            Command::Run(args) => run::run(&args),
            Command::Crd => {
                print!("{}", crate::crd::crd_yaml()?);
                Ok(())
            }
            Command::Sync(args) => sync::run(&args),
            Command::Report(args) => report::run(&args),
            Command::Failover(args) => failover::run(&args),
            Command::Simulate(args) => simulate::run(&args),
            Command::Render(args) => render::run(&args),
            Command::Diagnose(args) => diagnose::run(&args),
            Command::Agent(args) => agent::run(&args),
        }
    }
}
