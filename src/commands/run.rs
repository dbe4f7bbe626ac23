//! `twinsite run`: the long-running controller. Builds sites, state store and API from the
//! configuration (or the embedded default), then reconciles while it leads, until Ctrl-C or
//! SIGTERM: then it stops acting, resigns leadership and lets the API drain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use scheduler::generate::{GenerateParams, generate};
use scheduler::input::StreamJob;
use scheduler::model::SiteId;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::{Config, StateConfig};
use crate::controller::Controller;
use crate::controller::guard::Quorum;
use crate::leader::LeaderElector;
use crate::replication::ReplicationDriver;
use crate::site::simulated::{
    SimulatedSite, SimulatedSiteConfig, SimulatedSiteHandle, spawn_ticker,
};
use crate::site::{Site, SystemClock};
use crate::state::{EmbeddedStateStore, EtcdStateStore, KeyLayout, StateStore, connect_etcd};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Controller configuration (YAML); without it, the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API address, overriding the configuration's `api.listen` (e.g. `127.0.0.1:0`).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// How often the leader right-sizes jobs that opted in (`twinsite.io/rightsize: auto`).
const AUTO_RIGHTSIZE_INTERVAL: Duration = Duration::from_secs(3600);

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_controller(config, args.listen))
}

/// The etcd store (to install the leader key in) and the elector of an etcd set-up.
type Elected = (Arc<EtcdStateStore>, LeaderElector);

/// Sites built from the configuration, with the simulated ones' fault handles.
pub struct BuiltSites {
    pub sites: BTreeMap<SiteId, Arc<dyn Site>>,
    pub simulated: BTreeMap<SiteId, SimulatedSite>,
    /// Storage roots of local-Flink sites.
    pub local_roots: BTreeMap<SiteId, String>,
    /// Sample jobs from the generator, for a store that has none and no jobs file.
    pub sample_jobs: Vec<StreamJob>,
}

async fn run_controller(
    config: Config,
    listen_override: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());

    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "dataDir {}: cannot create the directory",
            config.data_dir.display()
        )
    })?;
    // Tokens first: a token file others can read stops the start before anything is opened.
    let access = api_access(&config)?;
    let built = build_sites(&config).await?;
    let storage_roots = storage_roots(&config, &built);
    let seed_jobs = match &config.jobs {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("jobs {}: cannot read the file", path.display()))?;
            let jobs = scheduler::input::parse_stream_jobs(&path.display().to_string(), &text)?;
            config
                .policy
                .check_jobs(&path.display().to_string(), &jobs)?;
            jobs
        }
        None => {
            upload_sample_jars(&built)?;
            built.sample_jobs.clone()
        }
    };

    let mut agents = None;
    let (store, etcd): (Arc<dyn StateStore>, Option<Elected>) = match &config.state {
        StateConfig::Embedded { dir } => {
            let store = EmbeddedStateStore::open(dir)
                .with_context(|| format!("state: embedded store in {}", dir.display()))?;
            (Arc::new(store), None)
        }
        StateConfig::Etcd(etcd) => {
            let client = connect_etcd(&etcd.store).await.with_context(|| {
                format!("state.etcd.endpoints {}", etcd.store.endpoints.join(","))
            })?;
            let store = Arc::new(EtcdStateStore::on_etcd(
                client.clone(),
                &etcd.store.key_prefix,
            )?);
            // Revisions are what compare-and-set compares: refuse a store that has no room
            // left for them (the embedded store checks the same at open).
            store
                .backend()
                .check_revision_headroom(&etcd.store.key_prefix)
                .await
                .context("state.etcd")?;
            let election = KeyLayout::new(&etcd.store.key_prefix)?
                .election(&etcd.election)
                .context("state.etcd.election")?;
            if !config.agents.sites.is_empty() {
                let layout = KeyLayout::new(&etcd.store.key_prefix)?;
                agents = Some(crate::controller::guard::Agents::new(
                    crate::agent::lease::AgentLeases::new(
                        client.clone(),
                        &layout,
                        &config.agents.sites,
                    )
                    .context("agents.sites")?,
                    config.agents.timing,
                ));
            }
            let elector = LeaderElector::new(client, election, &etcd.candidate, etcd.lease_ttl);
            (store.clone(), Some((store, elector)))
        }
    };

    let quorum = match &config.state {
        StateConfig::Embedded { .. } => {
            if !config.failover.automatic_site_failover {
                tracing::warn!(
                    "embedded store with real sites: no witness can tell a dead site from a cut-off one, so automatic site failover is off \
                     (sites move only by `twinsite failover`); set failover.automaticSiteFailover: true to accept the risk"
                );
            }
            Quorum::Fixed(config.failover.automatic_site_failover)
        }
        StateConfig::Etcd(_) => Quorum::Session {
            automatic: config.failover.automatic_site_failover,
            session: std::sync::Mutex::new(None),
        },
    };
    let mut controller = Controller::new(built.sites.clone(), store, config.policy.clone())
        .with_storage_roots(storage_roots)
        .with_failover(
            config
                .failover
                .engine_config(built.sites.keys().cloned().collect()),
            config.failover.enabled,
        )
        .with_quorum(quorum);
    if let Some(agents) = agents {
        controller = controller.with_agents(agents);
    }
    if let Some(watch) = &config.stream_jobs {
        controller = controller.with_stream_jobs(watch.scope.clone());
    }
    let controller = Arc::new(controller);
    // Simulated and local-Flink sites live in this process: their agent does too.
    let in_process_agents: Vec<SiteId> = built
        .sites
        .keys()
        .filter(|id| {
            (built.simulated.contains_key(*id) || built.local_roots.contains_key(*id))
                && !config.agents.sites.contains(id)
        })
        .cloned()
        .collect();
    let site_agents = SiteAgents {
        sites: in_process_agents,
        timing: config.agents.timing,
        interval: config.agents.interval,
    };
    let replication = Arc::new(
        ReplicationDriver::open(
            Arc::clone(&controller),
            config.data_dir.join("replication"),
            config
                .policy
                .replication()
                .bandwidth_bytes_per_second
                .and_then(|b| u64::try_from(b).ok()),
            config.policy.replication().parallel_copies as usize,
        )
        .await
        .context("replication ledgers")?,
    );
    let replication_interval = config.policy.replication().interval;
    let wake = Arc::new(tokio::sync::Notify::new());
    let simulated_handles: BTreeMap<SiteId, SimulatedSiteHandle> =
        if config.simulation.admin_endpoint {
            built
                .simulated
                .iter()
                .map(|(id, s)| (id.clone(), s.handle()))
                .collect()
        } else {
            BTreeMap::new()
        };
    let metrics: Option<Arc<dyn crate::job_metrics::MetricsSource>> = match &config.metrics {
        // Simulated sites produce their jobs' metrics themselves.
        None if !built.simulated.is_empty() => Some(Arc::new(
            crate::job_metrics::simulated::SimulatedMetricsSource::new(
                Arc::clone(&controller.store),
                built.simulated.keys().map(|s| s.0.clone()).collect(),
                config.simulation.generate.seed,
            ),
        )),
        None => None,
        Some(crate::config::MetricsConfig::Prometheus(url)) => Some(Arc::new(
            crate::job_metrics::prometheus::PrometheusSource::new(url)
                .with_context(|| format!("metrics {url}"))?,
        )),
        Some(crate::config::MetricsConfig::File(path)) => Some(Arc::new(
            crate::job_metrics::file::FileSource::open(path)
                .with_context(|| format!("metrics {}", path.display()))?,
        )),
    };
    if let Some(source) = &metrics {
        // Jobs annotated `twinsite.io/rightsize: auto` are right-sized hourly by the leader.
        let (controller, source, stop) = (
            Arc::clone(&controller),
            Arc::clone(source),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(AUTO_RIGHTSIZE_INTERVAL) => {}
                }
                if !controller.is_leading() {
                    continue;
                }
                match controller.auto_rightsize(source.as_ref()).await {
                    Ok(0) => {}
                    Ok(changed) => tracing::info!(changed, "auto right-sizing applied"),
                    Err(error) => tracing::warn!(%error, "auto right-sizing stopped this round"),
                }
            }
        });
    }
    let api_state = Arc::new(ApiState {
        metrics,
        controller: Arc::clone(&controller),
        access,
        refusals: Default::default(),
        simulated: simulated_handles,
        wake: Arc::clone(&wake),
    });
    let listen = listen_override.unwrap_or(config.api.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("api.listen {listen}: cannot listen"))?;
    let bound = listener.local_addr()?;
    let router = api::router(api_state, config.api.max_body_bytes);
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
    });
    if let Some(watch_config) = &config.stream_jobs {
        // Every replica watches (its list is warm when it wins); only the leader writes.
        let site = &watch_config.scope.home;
        let spec = config
            .policy
            .site(site)
            .and_then(|s| s.kubernetes.as_ref())
            .with_context(|| format!("streamJobs.site {site}: not a Kubernetes site"))?;
        let client = kube_client(site, spec).await?;
        let (watch, reflector) = crate::kube_jobs::StreamJobWatch::new(
            client,
            Arc::clone(&controller),
            watch_config.clone(),
            Arc::clone(&wake),
        );
        tokio::spawn(reflector);
        tokio::spawn(watch.run(shutdown.clone()));
        tracing::info!(site = %site, namespace = ?watch_config.scope.namespace, "watching StreamJob objects");
    }
    // Simulated time runs only while this process runs; the "cluster" lives in it.
    let tickers: Vec<_> = built
        .simulated
        .values()
        .map(|s| spawn_ticker(s.clone(), config.simulation.tick))
        .collect();
    tracing::info!(
        api = %format!("http://{bound}"),
        config = %config.source,
        sites = %built.sites.keys().map(|s| s.0.as_str()).collect::<Vec<_>>().join(","),
        data_dir = %config.data_dir.display(),
        "twinsite controller started"
    );

    let result = match etcd {
        None => {
            controller.set_leading(true);
            seed(&controller, &seed_jobs).await?;
            let agents_task = site_agents.spawn(&controller, shutdown.clone());
            let replicating = {
                let replication = Arc::clone(&replication);
                let stop = shutdown.clone();
                tokio::spawn(async move { replication.run(replication_interval, stop).await })
            };
            let outcome = controller
                .reconcile_loop(
                    config.reconcile_interval,
                    Arc::clone(&wake),
                    shutdown.clone(),
                )
                .await;
            replicating.abort();
            agents_task.abort();
            controller.set_leading(false);
            outcome.map_err(anyhow::Error::from)
        }
        Some((store, elector)) => {
            // Several processes may share one simulated cluster: only the leader runs it.
            for site in built.simulated.values() {
                site.set_active(false);
            }
            lead_while_elected(
                &controller,
                &built.simulated,
                &store,
                &elector,
                &seed_jobs,
                &site_agents,
                (&replication, replication_interval),
                config.reconcile_interval,
                wake,
                shutdown.clone(),
            )
            .await
        }
    };
    shutdown.cancel();
    for ticker in tickers {
        ticker.abort();
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "API server ended with an error"),
        Err(error) => tracing::warn!(%error, "API server task failed"),
    }
    tracing::info!("twinsite controller stopped");
    result
}

/// The in-process agents of this process's simulated and local-Flink sites.
struct SiteAgents {
    sites: Vec<SiteId>,
    timing: failover::agent::AgentTiming,
    interval: Duration,
}

impl SiteAgents {
    fn spawn(
        &self,
        controller: &Arc<Controller>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let controller = Arc::clone(controller);
        let (sites, timing, interval) = (self.sites.clone(), self.timing, self.interval);
        tokio::spawn(async move {
            controller
                .run_site_agents(&sites, timing, interval, stop)
                .await;
        })
    }
}

/// Campaigns, reconciles while leading, steps down when fenced or when the lease is lost,
/// and campaigns again, until shutdown.
#[allow(clippy::too_many_arguments)]
async fn lead_while_elected(
    controller: &Arc<Controller>,
    simulated: &BTreeMap<SiteId, SimulatedSite>,
    store: &Arc<EtcdStateStore>,
    elector: &LeaderElector,
    seed_jobs: &[StreamJob],
    site_agents: &SiteAgents,
    (replication, replication_interval): (&Arc<ReplicationDriver>, Duration),
    interval: Duration,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tracing::info!(
            candidate = elector.candidate(),
            election = elector.election(),
            "campaigning"
        );
        let leadership = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            won = elector.campaign() => won.context("leader election")?,
        };
        tracing::info!(
            candidate = elector.candidate(),
            lease = leadership.lease_id(),
            "became leader"
        );
        store.set_leader(Some(leadership.leader_key.clone()));
        controller.quorum.set_session(Some(leadership.session()));
        for (id, site) in simulated {
            // What the previous leader ran is still running in the simulated cluster.
            if let Err(error) = site.reload() {
                tracing::warn!(site = %id, %error, "cannot load the simulated cluster");
            }
            site.set_active(true);
        }
        controller.set_leading(true);
        let acting = CancellationToken::new();
        let agents_task = site_agents.spawn(controller, acting.clone());
        let outcome = async {
            seed(controller, seed_jobs).await?;
            let replicating = replication.run(replication_interval, acting.clone());
            tokio::select! {
                result = replicating => {
                    result.map_err(anyhow::Error::from)?;
                    Ok(())
                }
                result = controller.reconcile_loop(interval, Arc::clone(&wake), acting.clone()) => {
                    result.map_err(anyhow::Error::from)
                }
                () = leadership.lost.cancelled() => {
                    anyhow::bail!("leadership lost (lease expired or revoked)")
                }
                () = shutdown.cancelled() => Ok(()),
            }
        }
        .await;
        acting.cancel();
        agents_task.abort();
        controller.set_leading(false);
        controller.quorum.set_session(None);
        store.set_leader(None);
        for site in simulated.values() {
            site.set_active(false);
        }
        if shutdown.is_cancelled() {
            if let Err(error) = leadership.resign().await {
                tracing::warn!(%error, "resign failed; the lease expires on its own");
            } else {
                tracing::info!("resigned leadership");
            }
            return Ok(());
        }
        match outcome {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "stepped down; campaigning again")
            }
        }
        drop(leadership);
    }
}

async fn seed(controller: &Controller, jobs: &[StreamJob]) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let existing = controller.store.scan_jobs().await?;
    if !existing.jobs.is_empty() || !existing.unreadable.is_empty() {
        // A store with jobs is the truth; seeding only fills an empty one, so a job someone
        // deleted through the API is not resurrected by a restart.
        return Ok(());
    }
    let created = controller.seed_jobs(jobs, "seed").await?;
    tracing::info!(created, "seeded an empty store with jobs");
    Ok(())
}

/// The API's access rules from the configuration: the admin token, the read-only token and
/// whether `/metrics` needs one.
fn api_access(config: &Config) -> anyhow::Result<api::auth::Access> {
    let admin = config.api.token.read().map_err(anyhow::Error::msg)?;
    let read = config
        .api
        .read_token
        .read_as("api.readTokenFile", "api.readTokenEnv")
        .map_err(anyhow::Error::msg)?;
    let generated = admin.is_none();
    let admin = match admin {
        Some(token) => token,
        // No token configured: make one, readable only by this user, rather than leave the
        // API open or closed. Its path is logged; the token itself never is.
        None => generated_token(&config.data_dir.join("api-token"), "API requests (admin)")?,
    };
    let read = match read {
        Some(token) => Some(token),
        // A generated read token beside a generated admin token (the embedded default). With
        // a configured admin token there is none unless configured: every replica of a
        // deployment would generate a different one.
        None if generated => Some(generated_token(
            &config.data_dir.join("api-read-token"),
            "API reads (read-only)",
        )?),
        None => {
            tracing::info!(
                "no read-only API token configured (api.readTokenFile/readTokenEnv): reads need the admin token"
            );
            None
        }
    };
    if read.as_deref() == Some(admin.as_str()) {
        bail!(
            "api.readTokenFile/readTokenEnv: the read-only token equals the admin token, so it would not be read-only; give it its own value"
        );
    }
    Ok(api::auth::Access {
        admin_token: admin,
        read_token: read,
        open_metrics: !config.api.metrics_require_token,
    })
}

/// The token in `path`, generated (mode 0600) when the file is missing or too short. An
/// existing file its group or the world may read is refused, not used.
fn generated_token(path: &Path, purpose: &str) -> anyhow::Result<String> {
    crate::config::check_private_file(path, "dataDir").map_err(anyhow::Error::msg)?;
    let token = match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().len() >= 16 => existing.trim().to_string(),
        _ => {
            let token = api::auth::generate_token();
            write_private(path, &token)?;
            token
        }
    };
    tracing::info!(token_file = %path.display(), "{purpose} need the bearer token in this file");
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // `mode` applies only when the file is created: never reuse a leftover with other bits.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", tmp.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Builds every site of the policy: simulated ones in-process, Kubernetes ones via kube.
pub async fn build_sites(config: &Config) -> anyhow::Result<BuiltSites> {
    build_sites_of(config, None).await
}

/// The sites of `config`, or only `only` (a site agent builds the site it guards, and
/// needs no access to the other's cluster).
pub async fn build_sites_of(config: &Config, only: Option<&SiteId>) -> anyhow::Result<BuiltSites> {
    let policy_sites = config.policy.site_ids();
    let generated = generate(&GenerateParams {
        sites: u32::try_from(policy_sites.len()).unwrap_or(2).max(1),
        nodes_per_site: config.simulation.generate.nodes_per_site,
        jobs: config.simulation.generate.sample_jobs,
        seed: config.simulation.generate.seed,
    })
    .context("cannot generate simulated nodes")?;
    let generated_nodes: Vec<&String> = generated.nodes_json.values().collect();
    let mut sample_jobs =
        scheduler::input::parse_stream_jobs("generated sample jobs", &generated.jobs_yaml)?;
    // Generated jobs name the generator's sites; point them at ours.
    let generator_names: Vec<SiteId> = generated.nodes_json.keys().cloned().collect();
    for job in &mut sample_jobs {
        let rename = |name: &mut String| {
            if let Some(i) = generator_names.iter().position(|g| &g.0 == name)
                && let Some(ours) = policy_sites.get(i)
            {
                *name = ours.0.clone();
            }
        };
        let sites = &mut job.spec.placement.sites;
        if let Some(p) = sites.preferred.as_mut() {
            rename(p);
        }
        sites.allowed.iter_mut().for_each(rename);
    }
    if config
        .policy
        .check_jobs("generated sample jobs", &sample_jobs)
        .is_err()
    {
        // The policy's quotas or tenants may not know the generator's tenants: no samples
        // then, rather than jobs that are refused.
        sample_jobs.clear();
    }

    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut simulated = BTreeMap::new();
    let mut local_roots = BTreeMap::new();
    for (index, id) in policy_sites.iter().enumerate() {
        if only.is_some_and(|only| only != id) {
            continue;
        }
        let spec = config
            .policy
            .site(id)
            .with_context(|| format!("policy: site {id} vanished"))?;
        if let Some(kubernetes) = &spec.kubernetes {
            let site = kube_site(
                id,
                kubernetes,
                spec.storage.as_deref(),
                config.policy.detection().pod_eviction_timeout,
            )
            .await?;
            sites.insert(id.clone(), Arc::new(site));
            continue;
        }
        let storage_root = simulated_storage_root(config, id, spec.storage.as_deref())?;
        if let Some(local) = config
            .local_flink
            .as_ref()
            .filter(|l| l.sites.contains(&id.0))
        {
            let site = crate::site::local_flink::LocalFlinkSite::new(
                crate::site::local_flink::LocalFlinkConfig {
                    site: id.clone(),
                    storage_root: storage_root.clone(),
                    python: local.python.clone(),
                    log_dir: config.data_dir.join("flink-logs").join(&id.0),
                    capacity: local.capacity,
                },
            );
            local_roots.insert(id.clone(), format!("file://{}", storage_root.display()));
            sites.insert(id.clone(), Arc::new(site));
            continue;
        }
        std::fs::create_dir_all(&storage_root).with_context(|| {
            format!(
                "site {id}: cannot create its storage directory {}",
                storage_root.display()
            )
        })?;
        let (nodes_json, pods_json) = match config.simulation.sites.get(&id.0) {
            Some(files) => {
                let nodes = std::fs::read_to_string(&files.nodes).with_context(|| {
                    format!(
                        "simulation.sites.{id}.nodes {}: cannot read",
                        files.nodes.display()
                    )
                })?;
                let pods = match &files.pods {
                    Some(p) => Some(std::fs::read_to_string(p).with_context(|| {
                        format!("simulation.sites.{id}.pods {}: cannot read", p.display())
                    })?),
                    None => None,
                };
                (nodes, pods)
            }
            None => match generated_nodes.get(index) {
                Some(nodes) => ((*nodes).clone(), None),
                None => bail!("site {id}: no nodes for the simulation"),
            },
        };
        let site = SimulatedSite::from_kubectl_json(
            id.clone(),
            &nodes_json,
            pods_json.as_deref(),
            storage_root,
            Arc::new(SystemClock),
            SimulatedSiteConfig {
                cluster_file: Some(
                    config
                        .data_dir
                        .join("simulated-clusters")
                        .join(format!("{id}.json")),
                ),
                task_manager_eviction: config.policy.detection().pod_eviction_timeout,
                ..SimulatedSiteConfig::default()
            },
        )?;
        sites.insert(id.clone(), Arc::new(site.clone()));
        simulated.insert(id.clone(), site);
    }
    if let Some(usage) = &config.node_usage {
        for (id, url) in &usage.prometheus {
            let Some(site) = sites.remove(id) else {
                continue;
            };
            let namespace = config
                .policy
                .site(id)
                .and_then(|s| s.kubernetes.as_ref())
                .and_then(|k| k.namespace.as_deref());
            let probe = crate::node_usage::NodeUsageProbe::new(id.clone(), url, usage, namespace)
                .with_context(|| format!("nodeUsage.prometheus.{id}"))?;
            let measured = crate::node_usage::UsageMeasuredSite::start(site, probe, usage);
            sites.insert(id.clone(), Arc::new(measured));
        }
    }
    Ok(BuiltSites {
        sites,
        simulated,
        local_roots,
        sample_jobs,
    })
}

/// The generator's sample jobs name jars nobody uploaded: a small stand-in for each is put
/// where its `jarURI` points in its preferred simulated site's storage (unless a file is
/// already there), so the demo's jobs are published and launched as real ones would be.
/// Simulated sites never open a jar; other sites' storage is never written here.
fn upload_sample_jars(built: &BuiltSites) -> anyhow::Result<()> {
    for job in &built.sample_jobs {
        let site = job
            .spec
            .placement
            .sites
            .preferred
            .as_ref()
            .map(|s| SiteId(s.clone()))
            .filter(|s| built.simulated.contains_key(s))
            .or_else(|| built.simulated.keys().next().cloned());
        let Some(sim) = site.and_then(|s| built.simulated.get(&s)) else {
            continue;
        };
        let path = crate::controller::launch::in_site_storage(
            &format!("file://{}", sim.storage_root().display()),
            &job.spec.jar_uri,
        )
        .map_err(anyhow::Error::msg)
        .and_then(|uri| {
            hdfs_sync::StorageUrl::parse(&uri)
                .map(|url| PathBuf::from(url.path()))
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("sample job {}: jarURI {}", job.id(), job.spec.jar_uri))?;
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, format!("twinsite sample jar for {}\n", job.id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Each site's storage root URL: the policy's `storage`, or a simulated site's directory.
fn storage_roots(config: &Config, built: &BuiltSites) -> BTreeMap<SiteId, String> {
    let mut roots = BTreeMap::new();
    for id in built.sites.keys() {
        if let Some(sim) = built.simulated.get(id) {
            roots.insert(
                id.clone(),
                format!("file://{}", sim.storage_root().display()),
            );
        } else if let Some(storage) = config.policy.site(id).and_then(|s| s.storage.clone()) {
            roots.insert(id.clone(), storage);
        }
    }
    roots
}

/// A simulated site's "HDFS": its policy `storage` (a `file://` URI) or `<dataDir>/<site>`.
fn simulated_storage_root(
    config: &Config,
    id: &SiteId,
    storage: Option<&str>,
) -> anyhow::Result<PathBuf> {
    match storage {
        // Absolute: checkpoint URIs (`file:///…`) name it.
        None => std::path::absolute(config.data_dir.join(&id.0))
            .with_context(|| format!("site {id}: storage directory")),
        Some(uri) => match uri.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => bail!(
                "policy: sites[{id}].storage {uri:?}: a simulated site needs a file:///absolute/path (or no storage, for {}/{id})",
                config.data_dir.display()
            ),
        },
    }
}

/// A client of the cluster the policy gives `id` (its kubeconfig and context).
async fn kube_client(
    id: &SiteId,
    spec: &scheduler::input::policy::KubernetesSpec,
) -> anyhow::Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: spec.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match &spec.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("policy: sites[{id}].kubernetes.kubeconfig {path}"))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("policy: sites[{id}].kubernetes.context"))?
        }
        None => kube::Config::infer().await.with_context(|| {
            format!("policy: sites[{id}].kubernetes: no kubeconfig given and none found")
        })?,
    };
    kube::Client::try_from(kube_config)
        .with_context(|| format!("site {id}: cannot build a Kubernetes client"))
}

async fn kube_site(
    id: &SiteId,
    spec: &scheduler::input::policy::KubernetesSpec,
    storage: Option<&str>,
    pod_eviction_timeout: std::time::Duration,
) -> anyhow::Result<crate::site::kube::KubeSite> {
    let client = kube_client(id, spec).await?;
    let mode = match spec.launch_mode {
        scheduler::input::policy::LaunchMode::FlinkOperator => {
            crate::site::LaunchMode::FlinkDeployment
        }
        scheduler::input::policy::LaunchMode::Standalone => crate::site::LaunchMode::Standalone,
    };
    let config = crate::site::kube::KubeSiteConfig {
        namespace: spec.namespace.clone(),
        pod_eviction_timeout,
        ..crate::site::kube::KubeSiteConfig::new(id.clone(), mode)
    };
    // Its checkpoints are read where its jobs write them: the site's storage.
    let storage = match storage {
        Some(root) => {
            let root = hdfs_sync::StorageUrl::parse(root)
                .with_context(|| format!("policy: sites[{id}].storage {root:?}"))?;
            let storage = hdfs_sync::storage_for(&root)
                .with_context(|| format!("site {id}: cannot open its storage {root}"))?;
            Some(crate::site::kube::CheckpointStorage { root, storage })
        }
        None => {
            tracing::warn!(site = %id, "no sites[].storage in the policy: this Kubernetes site reports no checkpoints");
            None
        }
    };
    let (site, reflectors) = crate::site::kube::KubeSite::with_storage(client, config, storage);
    tokio::spawn(reflectors);
    Ok(site)
}

pub(crate) fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            () = terminate => tracing::info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    });
}
