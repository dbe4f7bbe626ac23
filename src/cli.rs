//! Command-line surface of the `twinsite` binary. Parsing only; `crate::commands` acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Plan(PlanArgs),
    /// Write a synthetic two-site cluster, jobs and policy in the real input formats.
    Generate(GenerateArgs),
    /// Run the controller (embedded default without --config: two simulated sites).
    Run(RunArgs),
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

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Controller configuration (YAML); without it, the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API address, overriding the configuration's `api.listen` (e.g. `127.0.0.1:0`).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverChoice {
    /// First-fit-decreasing with scoring only.
    Heuristic,
    /// Heuristic, then a MILP on aggregated pools under `--solver-budget`.
    Milp,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A site's nodes as `NAME=FILE`, the file being `kubectl get nodes -o json` output.
    #[arg(long = "site", value_name = "NAME=NODES.json", required = true)]
    pub sites: Vec<String>,
    /// A site's running pods as `NAME=FILE` (`kubectl get pods -A -o json`).
    #[arg(long = "pods", value_name = "NAME=PODS.json")]
    pub pods: Vec<String>,
    /// Multi-document YAML of StreamJob objects.
    #[arg(long, value_name = "JOBS.yaml")]
    pub jobs: PathBuf,
    /// Policy file; without it every node is plain online capacity with no quotas.
    #[arg(long, value_name = "POLICY.yaml")]
    pub policy: Option<PathBuf>,
    /// The current placement (a previous `plan --format json`); running jobs stay put unless forced.
    #[arg(long, value_name = "PLAN.json")]
    pub running: Option<PathBuf>,
    /// Instant at which co-location windows are evaluated (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    #[arg(long, value_enum, default_value_t = SolverChoice::Milp)]
    pub solver: SolverChoice,
    /// Wall-time budget of the MILP, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub solver_budget: String,
    /// Print instead the moves off borrowed offline capacity due at `--at` for the `--running`
    /// placement: what the controller's rebalancer does then (a full hour's budget assumed).
    #[arg(long, requires = "running")]
    pub rebalance: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 2)]
    pub sites: u32,
    #[arg(long, default_value_t = 100)]
    pub nodes_per_site: u32,
    #[arg(long, default_value_t = 100)]
    pub jobs: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory to write `nodes-<site>.json`, `jobs.yaml` and `policy.yaml` into.
    #[arg(long)]
    pub out: PathBuf,
}
