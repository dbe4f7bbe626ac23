//! Command-line surface of the `twinsite` binary: the subcommands only. Each
//! `crate::commands::<x>` owns its arguments and acts on them.

use clap::{Parser, Subcommand};

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
    Plan(crate::commands::plan::PlanArgs),
    /// Write a synthetic two-site cluster, jobs and policy in the real input formats.
    Generate(crate::commands::generate::GenerateArgs),
    /// Run the controller (embedded default without --config: two simulated sites).
    Run(crate::commands::run::RunArgs),
    /// Print the StreamJob CustomResourceDefinition (YAML) generated from the Rust types.
    Crd,
    /// Replicate complete checkpoints from one site's storage to the other's.
    Sync(crate::commands::sync::SyncArgs),
    /// Write reports (capacity planning).
    Report(crate::commands::report::ReportArgs),
    /// Ask a running controller to move a site's jobs to the other site (`--dry-run`: the plan).
    Failover(crate::commands::failover::FailoverArgs),
    /// Play a failover scenario in a simulated two-site world; print the timeline and RTO/RPO.
    Simulate(crate::commands::simulate::SimulateArgs),
    /// Print the Kubernetes objects a launch would create (YAML), for review and GitOps.
    Render(crate::commands::render::RenderArgs),
    /// Which jobs are in trouble, why, and what to do (Flink metrics, RPO exposure, failover
    /// readiness).
    Diagnose(crate::commands::diagnose::DiagnoseArgs),
    /// Guard one site: hold its lease in etcd, stop generations the store does not place
    /// there, stop every job of the site when the lease runs out (self-fencing).
    Agent(crate::commands::agent::AgentArgs),
}
