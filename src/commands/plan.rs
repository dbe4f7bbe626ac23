//! `twinsite plan`: read nodes, pods, jobs, policy and the running placement; print a plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use scheduler::input::{StreamJob, kube_objects, parse_stream_jobs, policy};
use scheduler::model::{
    JobDemand, JobPlacement, PlacementPolicy, PodRole, RebalancePolicy, SiteId, SiteSnapshot,
};
use scheduler::placement::rebalance::{RebalanceRequest, plan_rebalance};
use scheduler::placement::{self, PlacementOptions, PlacementPlan, PlacementRequest, SolverChoice};

use super::{OutputFormat, parse_duration, read_input, split_name_value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// First-fit-decreasing with scoring only.
    Heuristic,
    /// Heuristic, then a MILP on aggregated pools under `--solver-budget`.
    Milp,
}

/// The cluster and job files `plan` and `report capacity` both read.
#[derive(Debug, Clone, Args)]
pub struct ClusterFiles {
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
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterFiles,
    /// The current placement (a previous `plan --format json`); running jobs stay put unless forced.
    #[arg(long, value_name = "PLAN.json")]
    pub running: Option<PathBuf>,
    /// Instant at which co-location windows are evaluated (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    #[arg(long, value_enum, default_value_t = SolverArg::Milp)]
    pub solver: SolverArg,
    /// Wall-time budget of the MILP, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub solver_budget: String,
    /// Print instead the moves off borrowed offline capacity due at `--at` for the `--running`
    /// placement: what the controller's rebalancer does then (a full hour's budget assumed).
    #[arg(long, requires = "running")]
    pub rebalance: bool,
}

/// Everything `plan` reads, parsed and validated.
pub struct PlanInputs {
    pub sites: Vec<SiteSnapshot>,
    /// The StreamJobs as parsed, in file order; `jobs` holds their demands in the same order.
    pub stream_jobs: Vec<StreamJob>,
    pub jobs: Vec<JobDemand>,
    pub policy: PlacementPolicy,
    pub running: Vec<JobPlacement>,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The policy's `rebalance` (lead time, budget); defaults without a policy.
    pub rebalance: RebalancePolicy,
    /// The policy's `scaleProfiles`; none without a policy.
    pub scale_profiles: scheduler::input::scale_profile::ScaleProfiles,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let inputs = load(args)?;
    if args.rebalance {
        return print_rebalance(args, &inputs);
    }
    let budget = parse_duration("--solver-budget", &args.solver_budget)?;
    let solver = match args.solver {
        SolverArg::Heuristic => SolverChoice::Heuristic,
        SolverArg::Milp => SolverChoice::Milp { budget },
    };
    let request = PlacementRequest {
        sites: &inputs.sites,
        jobs: &inputs.jobs,
        policy: &inputs.policy,
        running: &inputs.running,
        at: inputs.at,
        options: PlacementOptions { solver },
    };
    let started = std::time::Instant::now();
    let plan = placement::plan(&request);
    tracing::info!(
        jobs = inputs.jobs.len(),
        placed = plan.placements.len(),
        unplaced = plan.unplaced.len(),
        solver = ?plan.solver.solver,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "planned"
    );
    let out = match args.format {
        OutputFormat::Json => serde_json::to_string_pretty(&plan)? + "\n",
        OutputFormat::Table => render_table(&plan),
    };
    print!("{out}");
    Ok(())
}

/// `plan --rebalance`: the controller's rebalancer over the given running placement.
fn print_rebalance(args: &PlanArgs, inputs: &PlanInputs) -> anyhow::Result<()> {
    let plan = plan_rebalance(&RebalanceRequest {
        sites: &inputs.sites,
        jobs: &inputs.jobs,
        policy: &inputs.policy,
        rebalance: inputs.rebalance,
        running: &inputs.running,
        at: inputs.at,
        recent_moves: &[],
    });
    let out = match args.format {
        OutputFormat::Json => serde_json::to_string_pretty(&plan)? + "\n",
        OutputFormat::Table => {
            let mut out = String::new();
            for m in &plan.moves {
                let _ = writeln!(
                    out,
                    "MOVE   {}  by {}  {} -> {}: {}",
                    m.job,
                    m.deadline.to_rfc3339(),
                    m.from.site,
                    m.to.site,
                    m.reason
                );
            }
            for w in &plan.waiting {
                let _ = writeln!(
                    out,
                    "WAIT   {}  start by {}: {}",
                    w.job,
                    w.start_by.to_rfc3339(),
                    w.reason
                );
            }
            for s in &plan.stuck {
                let _ = writeln!(
                    out,
                    "STUCK  {}  by {}: {}",
                    s.job,
                    s.deadline.to_rfc3339(),
                    s.reason
                );
            }
            if out.is_empty() {
                out.push_str("nothing on borrowed capacity must move\n");
            }
            out
        }
    };
    print!("{out}");
    Ok(())
}

/// The input flags `plan` and `report capacity` share, as given on the command line.
pub struct InputFlags<'a> {
    pub cluster: &'a ClusterFiles,
    pub running: Option<&'a std::path::Path>,
    pub at: Option<&'a str>,
}

pub fn load(args: &PlanArgs) -> anyhow::Result<PlanInputs> {
    load_inputs(&InputFlags {
        cluster: &args.cluster,
        running: args.running.as_deref(),
        at: args.at.as_deref(),
    })
}

/// Reads and checks nodes, pods, jobs, policy and running placement; every error names the
/// flag, the file, the object and the field.
pub fn load_inputs(args: &InputFlags) -> anyhow::Result<PlanInputs> {
    let mut sites: Vec<SiteSnapshot> = Vec::new();
    let cluster = args.cluster;
    for arg in &cluster.sites {
        let (name, file) = split_name_value("--site", arg)?;
        if sites.iter().any(|s| s.id.0 == name) {
            bail!("--site {arg:?}: site {name:?} is given twice");
        }
        let path = std::path::Path::new(file);
        let text = read_input("--site", path)?;
        let nodes = kube_objects::parse_node_list(file, &text)?;
        sites.push(SiteSnapshot {
            id: SiteId(name.to_string()),
            nodes,
            running_pods: Vec::new(),
        });
    }
    for arg in &cluster.pods {
        let (name, file) = split_name_value("--pods", arg)?;
        let Some(site) = sites.iter_mut().find(|s| s.id.0 == name) else {
            bail!("--pods {arg:?}: site {name:?} has no --site {name}=NODES.json");
        };
        let text = read_input("--pods", std::path::Path::new(file))?;
        let pods = kube_objects::parse_pod_list(file, &text)?;
        for pod in &pods {
            if !site.nodes.iter().any(|n| n.name == pod.node) {
                // A pod on a node we were not told about consumes nothing we plan with; say so.
                tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), node = %pod.node, "{file}: pod is bound to a node not in the site's node list; ignored");
            }
        }
        site.running_pods.extend(pods);
    }

    let jobs_source = cluster.jobs.display().to_string();
    let jobs_text = read_input("--jobs", &cluster.jobs)?;
    let stream_jobs = parse_stream_jobs(&jobs_source, &jobs_text)?;
    let mut jobs = Vec::with_capacity(stream_jobs.len());
    for job in &stream_jobs {
        jobs.push(job.demand()?);
    }

    let mut rebalance = RebalancePolicy::default();
    let mut scale_profiles = Default::default();
    let policy = match cluster.policy.as_deref() {
        Some(path) => {
            let text = read_input("--policy", path)?;
            let parsed = policy::parse_policy(&path.display().to_string(), &text)?;
            let known = parsed.site_ids();
            for site in &sites {
                if !known.contains(&site.id) {
                    let names: Vec<&str> = known.iter().map(|s| s.0.as_str()).collect();
                    bail!(
                        "--site {}: the policy {} names no site {:?} (it has {})",
                        site.id,
                        path.display(),
                        site.id.0,
                        names.join(", ")
                    );
                }
            }
            parsed.check_jobs(&jobs_source, &stream_jobs)?;
            rebalance = parsed.rebalance();
            scale_profiles = parsed.scale_profiles().clone();
            parsed.placement_policy()
        }
        None => PlacementPolicy::default(),
    };

    let running = match args.running {
        Some(path) => {
            let text = read_input("--running", path)?;
            let plan: PlacementPlan = serde_json::from_str(&text).with_context(|| {
                format!(
                    "--running {}: expected the JSON of `twinsite plan --format json`",
                    path.display()
                )
            })?;
            plan.placements
        }
        None => Vec::new(),
    };

    let at = match args.at {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--at {text:?}: expected RFC 3339, e.g. 2026-11-22T03:00:00Z")
            })?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };

    Ok(PlanInputs {
        sites,
        stream_jobs,
        jobs,
        policy,
        running,
        at,
        rebalance,
        scale_profiles,
    })
}

/// kubectl-style columns for people; JSON is for machines.
pub fn render_table(plan: &PlacementPlan) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "JOB".into(),
        "SITE".into(),
        "JOBMANAGER".into(),
        "TASKMANAGERS".into(),
        "NODES".into(),
    ]];
    for p in &plan.placements {
        let jm = p
            .pods
            .iter()
            .find(|pod| pod.role == PodRole::Jobmanager)
            .map(|pod| pod.node.clone())
            .unwrap_or_else(|| "-".into());
        let tms = p
            .pods
            .iter()
            .filter(|pod| pod.role == PodRole::Taskmanager)
            .count();
        let nodes: BTreeMap<&str, ()> = p.pods.iter().map(|pod| (pod.node.as_str(), ())).collect();
        rows.push([
            p.job.0.clone(),
            p.site.0.clone(),
            jm,
            tms.to_string(),
            nodes.len().to_string(),
        ]);
    }
    let mut out = String::new();
    write_columns(&mut out, &rows);
    if !plan.unplaced.is_empty() {
        let _ = writeln!(out, "\nUNPLACED ({}):", plan.unplaced.len());
        for u in &plan.unplaced {
            let _ = writeln!(out, "  {}  {}", u.job, u.reason);
        }
    }
    if !plan.preemptions.is_empty() {
        let _ = writeln!(out, "\nPREEMPTIONS ({}):", plan.preemptions.len());
        for p in &plan.preemptions {
            let _ = writeln!(out, "  {} preempted by {} in {}", p.victim, p.by, p.site);
        }
    }
    if !plan.moves.is_empty() {
        let _ = writeln!(out, "\nMOVES ({}):", plan.moves.len());
        for m in &plan.moves {
            let to =
                m.to.as_ref()
                    .map(|t| t.site.0.as_str())
                    .unwrap_or("(unplaced)");
            let _ = writeln!(out, "  {}  {} -> {}  {}", m.job, m.from.site, to, m.reason);
        }
    }
    for (site, r) in &plan.reserve {
        let verdict = if r.holds { "holds" } else { "DOES NOT HOLD" };
        let scopes: Vec<String> = r
            .protects
            .iter()
            .map(|s| format!("{} {}+", s.site, s.min_priority))
            .collect();
        let _ = writeln!(
            out,
            "\nRESERVE in {site} for {}: {verdict} (needed {}; missing {}; {} job(s) would not fit)",
            scopes.join(", "),
            r.needed,
            r.missing,
            r.jobs_not_fitting.len()
        );
    }
    let bound = plan
        .solver
        .bound
        .map(|b| format!("{b:.1}"))
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        out,
        "\nSOLVER {:?}: objective {:.1}, bound {bound}, {}; {} placed, {} unplaced",
        plan.solver.solver,
        plan.solver.objective,
        plan.solver.status,
        plan.placements.len(),
        plan.unplaced.len()
    );
    out
}

fn write_columns(out: &mut String, rows: &[[String; 5]]) {
    let mut widths = [0usize; 5];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}   ", width = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
