//! `twinsite render`: the Kubernetes objects a launch would apply, as multi-document YAML
//! (like `helm template`), for review and GitOps. Built by the function `KubeSite::launch`
//! uses (`site::kube::launch_objects`) from the `LaunchSpec` the controller would build
//! (`controller::launch::launch_spec`), so what is printed is what would be sent.
//!
//! Pods are pinned to planned nodes, so the jobs are placed first (the scheduler's heuristic,
//! one site): on `--nodes` (kubectl JSON) when given, else on the site's nodes as the
//! controller would see them in the embedded default (generated) or in a configuration's
//! simulation inputs.
//!
//! The `jarURI` printed is the one a launch uses: the site's content-addressed copy
//! (`<storage>/twinsite/jars/<sha256>/<file>`), its address computed from the jar's bytes by
//! the function the publication uses (`controller::jars::launch_jar_uri`), read from the
//! job's sites' storages (`--storage` names one). A jar that cannot be read is an error
//! naming the URI, never a guess. `local://` jars (in the image) print as written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use scheduler::input::{StreamJob, kube_objects, parse_stream_jobs};
use scheduler::model::{JobDemand, SiteId, SiteSnapshot};
use scheduler::placement::{self, PlacementOptions, PlacementRequest, SolverChoice};

use super::read_input;
use crate::config::Config;
use crate::controller::jars::launch_jar_uri;
use crate::controller::launch::{Restore, in_site_storage, launch_spec};
use crate::site::kube::{KubeSiteConfig, LaunchObjects, launch_objects};
use crate::site::{LaunchMode, LaunchSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderMode {
    /// A `FlinkDeployment` for the Apache Flink Kubernetes Operator.
    FlinkOperator,
    /// JobManager/TaskManager Deployments and the JobManager's Service.
    Standalone,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The site to render for (a site of the policy).
    #[arg(long, value_name = "NAME")]
    pub site: String,
    /// Multi-document YAML of StreamJob objects.
    #[arg(long, value_name = "JOBS.yaml")]
    pub jobs: PathBuf,
    /// Only this job (`namespace/name`); default every job of the file the site may run.
    #[arg(long, value_name = "NS/NAME")]
    pub job: Option<String>,
    /// The generation the objects are for.
    #[arg(long, default_value_t = 1)]
    pub generation: u64,
    /// The site's epoch the objects carry (`twinsite.io/epoch`).
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Checkpoint or savepoint directory (holding `_metadata`) to restore from.
    #[arg(long, value_name = "PATH")]
    pub restore: Option<String>,
    /// When the `--restore` checkpoint completed (RFC 3339, e.g. `2026-12-05T10:31:02Z`):
    /// what `${restore.completedAt}` in the jobs' site overrides expands to.
    #[arg(long, value_name = "TIME", requires = "restore", value_parser = parse_time)]
    pub restore_completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Controller configuration: the site's own launch mode, namespace and storage. Without
    /// it, the embedded default's sites are rendered as Kubernetes sites.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Launch mode when no `--config` says it (default `flink-operator`).
    #[arg(long, value_enum)]
    pub mode: Option<RenderMode>,
    /// The site's nodes (`kubectl get nodes -o json`) to place the jobs on.
    #[arg(long, value_name = "NODES.json")]
    pub nodes: Option<PathBuf>,
    /// A site's storage root (`SITE=URI`, repeatable), over the policy's (or, without one,
    /// `<dataDir>/<site>`): where checkpoint paths are placed and jars are read from.
    #[arg(long = "storage", value_name = "SITE=URI")]
    pub storage: Vec<String>,
}

pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let rendered = prepare(args)?;
    let text = to_yaml(&rendered)?;
    print!("{text}");
    tracing::info!(
        jobs = rendered.launches.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rendered"
    );
    Ok(())
}

/// What `render` prints: the site's configuration and, per job, the launch the controller
/// would make and the objects it would apply.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub site: KubeSiteConfig,
    pub launches: Vec<(LaunchSpec, LaunchObjects)>,
}

/// Multi-document YAML, one comment line per job, one document per object in apply order.
pub fn to_yaml(rendered: &Rendered) -> anyhow::Result<String> {
    let mut out = String::new();
    for (spec, launch) in &rendered.launches {
        out.push_str(&format!(
            "# {} generation {} epoch {} in site {} ({} mode)\n",
            spec.job, spec.generation, spec.epoch, rendered.site.site, rendered.site.mode
        ));
        for object in &launch.objects {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(&object.body)
                    .with_context(|| format!("cannot write {} as YAML", object.name))?,
            );
        }
    }
    Ok(out)
}

/// Reads, places and builds everything `render` prints.
pub fn prepare(args: &RenderArgs) -> anyhow::Result<Rendered> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let site = SiteId(args.site.clone());
    let Some(site_spec) = config.policy.site(&site) else {
        bail!(
            "--site {}: the policy of {} has no such site (it has {})",
            args.site,
            config.source,
            config
                .policy
                .site_ids()
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let kube_config = match (&args.config, &site_spec.kubernetes) {
        (Some(_), Some(kubernetes)) => {
            if args.mode.is_some() {
                bail!(
                    "--mode: the site's launch mode comes from {} (sites[{site}].kubernetes.launchMode); leave --mode out",
                    config.source
                );
            }
            let mode = match kubernetes.launch_mode {
                scheduler::input::policy::LaunchMode::FlinkOperator => LaunchMode::FlinkDeployment,
                scheduler::input::policy::LaunchMode::Standalone => LaunchMode::Standalone,
            };
            KubeSiteConfig {
                namespace: kubernetes.namespace.clone(),
                pod_eviction_timeout: config.policy.detection().pod_eviction_timeout,
                ..KubeSiteConfig::new(site.clone(), mode)
            }
        }
        (Some(path), None) => bail!(
            "--site {site}: {} runs this site in-process (no sites[{site}].kubernetes in its policy), so a launch there creates no Kubernetes objects; render a Kubernetes site, or leave --config out to render the default sites as Kubernetes sites",
            path.display()
        ),
        (None, _) => {
            let mode = match args.mode.unwrap_or(RenderMode::FlinkOperator) {
                RenderMode::FlinkOperator => LaunchMode::FlinkDeployment,
                RenderMode::Standalone => LaunchMode::Standalone,
            };
            KubeSiteConfig {
                pod_eviction_timeout: config.policy.detection().pod_eviction_timeout,
                ..KubeSiteConfig::new(site.clone(), mode)
            }
        }
    };
    // Every site's storage, as the controller would have it: the jar of a launch is read
    // from the job's sites like a publication reads it.
    let mut storage_roots = BTreeMap::new();
    for id in config.policy.site_ids() {
        let root = match config.policy.site(&id).and_then(|s| s.storage.clone()) {
            Some(storage) => storage,
            None => format!(
                "file://{}",
                std::path::absolute(config.data_dir.join(&id.0))
                    .context("the default storage directory")?
                    .display()
            ),
        };
        storage_roots.insert(id, root);
    }
    for arg in &args.storage {
        let (name, uri) = super::split_name_value("--storage", arg)?;
        let id = SiteId(name.to_string());
        if !storage_roots.contains_key(&id) {
            bail!(
                "--storage {arg}: the policy of {} has no site {name}",
                config.source
            );
        }
        storage_roots.insert(id, uri.to_string());
    }
    let storage_root = storage_roots[&site].clone();

    let text = read_input("--jobs", &args.jobs)?;
    let source = args.jobs.display().to_string();
    let mut jobs = parse_stream_jobs(&source, &text)?;
    if let Some(wanted) = &args.job {
        jobs.retain(|job| &job.id().0 == wanted);
        if jobs.is_empty() {
            bail!("--job {wanted}: {source} has no StreamJob with that namespace/name");
        }
    }
    config.policy.check_jobs(&source, &jobs).with_context(|| {
        format!(
            "{source}: the jobs do not fit the policy of {}",
            config.source
        )
    })?;
    let demands: Vec<JobDemand> = jobs
        .iter()
        .map(|job| job.demand())
        .collect::<Result<_, _>>()?;
    // Jobs that may not run in this site are not rendered (named on stderr).
    let (jobs, demands): (Vec<&StreamJob>, Vec<JobDemand>) = jobs
        .iter()
        .zip(demands)
        .filter(|(job, demand)| {
            let allowed = demand.sites.allows(&site);
            if !allowed {
                tracing::info!(job = %job.id(), %site, "not rendered: the job may not run in this site");
            }
            allowed
        })
        .unzip();
    if jobs.is_empty() && args.job.is_some() {
        bail!(
            "--job {}: its spec.placement.sites does not allow site {site}",
            args.job.as_deref().unwrap_or_default()
        );
    }

    let snapshot = site_nodes(args, &config, &site)?;
    let request = PlacementRequest {
        sites: std::slice::from_ref(&snapshot),
        jobs: &demands,
        policy: &config.policy.placement_policy(),
        running: &[],
        at: chrono::Utc::now(),
        options: PlacementOptions {
            solver: SolverChoice::Heuristic,
        },
    };
    let plan = placement::plan(&request);
    if let Some(unplaced) = plan.unplaced.first() {
        bail!(
            "job {} does not fit in site {site}'s nodes ({} of {} jobs do not): {}",
            unplaced.job,
            plan.unplaced.len(),
            demands.len(),
            unplaced.reason
        );
    }

    let restore = args
        .restore
        .as_deref()
        .map(|path| in_site_storage(&storage_root, path))
        .transpose()
        .map_err(|reason| anyhow::anyhow!("--restore: {reason}"))?
        .map(|path| Restore {
            path,
            completed_at: args.restore_completed_at,
        });
    let mut launches = Vec::new();
    for job in jobs {
        let id = job.id();
        let Some(placement) = plan.placements.iter().find(|p| p.job == id) else {
            continue;
        };
        let mut spec = launch_spec(
            job,
            args.generation,
            placement,
            restore.clone(),
            Some(&storage_root),
            args.epoch,
        )?;
        // A launch uses the site's content-addressed copy of the jar: its address comes
        // from the jar's bytes, so a jar that cannot be read cannot be rendered.
        if let Some(uri) =
            block_on(launch_jar_uri(job, &site, &storage_roots))?.map_err(|reason| {
                anyhow::anyhow!(
                    "job {id}: cannot render the jarURI a launch in {site} would use: {reason}"
                )
            })?
        {
            spec.jar_uri = uri;
        }
        let launch = launch_objects(&spec, &kube_config)?;
        launches.push((spec, launch));
    }
    Ok(Rendered {
        site: kube_config,
        launches,
    })
}

/// Runs `future` to completion on a runtime of its own, in a thread of its own, so that
/// `prepare` may be called from synchronous and asynchronous code alike.
fn block_on<T: Send>(future: impl std::future::Future<Output = T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("reading the jars panicked"))?
            .context("cannot start a runtime to read the jars")
    })
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (e.g. 2026-12-05T10:31:02Z): {e}"))
}

/// The nodes the jobs are placed on: `--nodes`, or the site's nodes as `twinsite run` with
/// this configuration would simulate them.
fn site_nodes(args: &RenderArgs, config: &Config, site: &SiteId) -> anyhow::Result<SiteSnapshot> {
    let (source, json) = match &args.nodes {
        Some(path) => (path.display().to_string(), read_input("--nodes", path)?),
        None => match config.simulation.sites.get(&site.0) {
            Some(files) => (
                files.nodes.display().to_string(),
                read_input("simulation.sites nodes", &files.nodes)?,
            ),
            None if args.config.is_some()
                && config
                    .policy
                    .site(site)
                    .is_some_and(|s| s.kubernetes.is_some()) =>
            {
                bail!(
                    "--site {site} is a Kubernetes site: give its nodes with --nodes FILE (kubectl get nodes -o json) so the jobs can be placed"
                )
            }
            None => {
                let sites = config.policy.site_ids();
                let index = sites.iter().position(|s| s == site).unwrap_or(0);
                let generated =
                    scheduler::generate::generate(&scheduler::generate::GenerateParams {
                        sites: u32::try_from(sites.len()).unwrap_or(2).max(1),
                        nodes_per_site: config.simulation.generate.nodes_per_site,
                        jobs: 0,
                        seed: config.simulation.generate.seed,
                    })
                    .context("cannot generate the default site's nodes")?;
                let json = generated
                    .nodes_json
                    .values()
                    .nth(index)
                    .cloned()
                    .context("no generated nodes for the site")?;
                ("generated nodes".to_owned(), json)
            }
        },
    };
    let nodes = kube_objects::parse_node_list(&source, &json)?;
    Ok(SiteSnapshot {
        id: site.clone(),
        nodes,
        running_pods: Vec::new(),
    })
}
