//! From the file as written to the `Config` the code reads, one section after another.
//! Must never: report problems out of file order, or return a `Config` while a problem stands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scheduler::input::{Policy, Problems, parse_duration};

use super::agents::resolve_agents;
use super::api::resolve_api;
use super::etcd::resolve_etcd;
use super::file::{ConfigFile, DEFAULT_DATA_DIR, FailoverSpec, SimulatedSiteFiles, SimulationSpec};
use super::local_flink::resolve_local_flink;
use super::node_usage::resolve_node_usage;
use super::resolved::{Config, FailoverConfig, MetricsConfig, SimulationConfig, StateConfig};
use super::stream_jobs::resolve_stream_jobs;

pub(super) fn duration(problems: &mut Problems, field: &str, text: &str) -> Option<Duration> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problems.field(field, format!("must be longer than zero, found {text:?}"));
            None
        }
        Ok(d) => Some(d),
        Err(message) => {
            problems.field(field, message);
            None
        }
    }
}

/// Every section is resolved even after a bad one, so one run names every problem; the
/// steps run in the order their problems have always been reported in.
pub(super) fn resolve(
    file: ConfigFile,
    base: &Path,
    source: &str,
    problems: &mut Problems,
) -> Option<Config> {
    let absolute = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let policy = resolve_policy(file.policy.as_deref(), &absolute, problems);
    let data_dir = absolute(
        file.data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR)),
    );
    let state = match &file.state.etcd {
        None => Some(StateConfig::Embedded {
            dir: data_dir.join("state"),
        }),
        Some(etcd) => {
            resolve_etcd(etcd, &absolute, problems).map(|e| StateConfig::Etcd(Box::new(e)))
        }
    };
    let api = resolve_api(&file.api, &absolute, problems);
    let tick = duration(problems, "simulation.tick", &file.simulation.tick);
    let reconcile_interval = duration(problems, "reconcile.interval", &file.reconcile.interval);
    // Real sites: those the policy gives a Kubernetes cluster, and local-Flink ones.
    let real_sites = policy.as_ref().is_some_and(|p| {
        p.site_ids().iter().any(|id| {
            p.site(id).is_some_and(|s| s.kubernetes.is_some())
                || file
                    .local_flink
                    .as_ref()
                    .is_some_and(|l| l.sites.contains(&id.0))
        })
    });
    let automatic_site_failover = file
        .failover
        .automatic_site_failover
        .unwrap_or(file.state.etcd.is_some() || !real_sites);
    let (failover, site_grace) =
        resolve_failover(&file.failover, automatic_site_failover, problems);
    let simulation =
        resolve_simulation(&file.simulation, tick, policy.as_ref(), &absolute, problems);
    let local_flink = resolve_local_flink(
        file.local_flink.as_ref(),
        policy.as_ref(),
        &file.simulation.sites,
        &absolute,
        problems,
    );
    let stream_jobs = file
        .stream_jobs
        .as_ref()
        .map(|spec| resolve_stream_jobs(spec, policy.as_ref(), problems));
    let node_usage = resolve_node_usage(file.node_usage.as_ref(), policy.as_ref(), problems);
    let agents = resolve_agents(
        &file.agents,
        policy.as_ref(),
        file.state.etcd.is_some(),
        site_grace,
        problems,
    );

    Some(Config {
        source: source.to_string(),
        policy: policy?,
        data_dir,
        state: state?,
        api: api?,
        simulation: simulation?,
        jobs: file.jobs.as_deref().map(absolute),
        reconcile_interval: reconcile_interval?,
        failover: failover?,
        local_flink,
        metrics: file.metrics.as_deref().map(|m| {
            if m.starts_with("http://") || m.starts_with("https://") {
                MetricsConfig::Prometheus(m.to_string())
            } else {
                MetricsConfig::File(absolute(Path::new(m)))
            }
        }),
        stream_jobs: match stream_jobs {
            Some(resolved) => Some(resolved?),
            None => None,
        },
        agents: agents?,
        node_usage: node_usage?,
    })
}

/// The policy file, read and checked; absent: the built-in two simulated sites.
fn resolve_policy(
    path: Option<&Path>,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<Policy> {
    let Some(path) = path else {
        return Some(Policy::default_two_sites());
    };
    let path = absolute(path);
    match std::fs::read_to_string(&path) {
        Ok(text) => match scheduler::input::parse_policy(&path.display().to_string(), &text) {
            Ok(policy) => Some(policy),
            Err(error) => {
                problems.field("policy", format!("the policy file is invalid:\n{error}"));
                None
            }
        },
        Err(error) => {
            problems.field("policy", format!("cannot read {}: {error}", path.display()));
            None
        }
    }
}

/// The `failover` section, and its site grace on its own: the agents' timing is checked
/// against the grace even when another failover field is bad.
fn resolve_failover(
    spec: &FailoverSpec,
    automatic_site_failover: bool,
    problems: &mut Problems,
) -> (Option<FailoverConfig>, Option<Duration>) {
    let node_grace = duration(problems, "failover.nodeGrace", &spec.node_grace);
    let site_grace = duration(problems, "failover.siteGrace", &spec.site_grace);
    let tm_bound = duration(
        problems,
        "failover.taskManagerRecoveryBound",
        &spec.task_manager_recovery_bound,
    );
    if spec.max_in_flight == 0 {
        problems.field("failover.maxInFlight", "must be at least 1");
    }
    // Zero would leave an operation's later jobs waiting forever.
    if spec.launch_rate == 0 {
        problems.field(
            "failover.launchRate",
            "must be at least 1 (moves per second)",
        );
    }
    if spec.launch_burst == 0 {
        problems.field("failover.launchBurst", "must be at least 1");
    }
    let config = match (node_grace, site_grace, tm_bound) {
        (Some(node_grace), Some(site_grace), Some(task_manager_recovery_bound)) => {
            Some(FailoverConfig {
                enabled: spec.enabled,
                node_grace,
                site_grace,
                task_manager_recovery_bound,
                relaunches_before_other_site: spec.relaunches_before_other_site,
                max_in_flight: spec.max_in_flight,
                launch_rate: spec.launch_rate,
                launch_burst: spec.launch_burst,
                auto_failback: spec.auto_failback,
                automatic_site_failover,
            })
        }
        _ => None,
    };
    (config, site_grace)
}

/// The `simulation` section: generated nodes and the simulated sites' files, which must be
/// policy sites without a Kubernetes cluster. `tick` is parsed by the caller, in file order.
fn resolve_simulation(
    spec: &SimulationSpec,
    tick: Option<Duration>,
    policy: Option<&Policy>,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<SimulationConfig> {
    if spec.generate.nodes_per_site == 0 {
        problems.field("simulation.generate.nodesPerSite", "must be at least 1");
    }
    if let Some(policy) = policy {
        let known = policy.site_ids();
        for name in spec.sites.keys() {
            match policy.site(&scheduler::model::SiteId(name.clone())) {
                None => problems.field(
                    format!("simulation.sites.{name}"),
                    format!(
                        "the policy has no site {name:?} (it has {})",
                        known
                            .iter()
                            .map(|s| s.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some(site) if site.kubernetes.is_some() => problems.field(
                    format!("simulation.sites.{name}"),
                    "the policy gives this site a kubernetes cluster; it is not simulated",
                ),
                Some(_) => {}
            }
        }
    }
    Some(SimulationConfig {
        sites: spec
            .sites
            .iter()
            .map(|(name, files)| {
                (
                    name.clone(),
                    SimulatedSiteFiles {
                        nodes: absolute(&files.nodes),
                        pods: files.pods.as_deref().map(absolute),
                    },
                )
            })
            .collect(),
        generate: spec.generate.clone(),
        tick: tick?,
        admin_endpoint: spec.admin_endpoint,
    })
}
