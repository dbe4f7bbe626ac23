//! The controller's configuration file (`twinsite run --config FILE`) and its embedded default.
//!
//! The file says how to reach things (state store, API, simulated inputs); *what* runs where
//! is the policy file's business (sites, pools, quotas, detection, replication), which the
//! config only points at. Schema: `deploy/config/README.md`; example: `deploy/config/twinsite.yaml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scheduler::input::{InputError, Policy, Problems, decode_document, parse_duration};
use serde::{Deserialize, Serialize};

pub const CONFIG_KIND: &str = "ControllerConfig";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./twinsite-data";
/// Bodies above this are refused with 413 before they are parsed.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The file as written; unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    pub api_version: String,
    pub kind: String,
    /// Policy file (sites, pools, quotas, …), relative to this file; absent: two simulated
    /// sites `dc-a`, `dc-b` with the built-in policy.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Where simulated sites keep their storage and the embedded store its records.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub state: StateSpec,
    #[serde(default)]
    pub api: ApiSpec,
    #[serde(default)]
    pub simulation: SimulationSpec,
    /// StreamJobs (multi-document YAML) created at start when the store lacks them; jobs
    /// already stored are never overwritten from this file.
    #[serde(default)]
    pub jobs: Option<PathBuf>,
    #[serde(default)]
    pub reconcile: ReconcileSpec,
    /// Node loss, job failure and site loss handling (the failover engine).
    #[serde(default)]
    pub failover: FailoverSpec,
    /// Sites run as real Flink processes on this machine instead of simulated.
    #[serde(default)]
    pub local_flink: Option<LocalFlinkSpec>,
    /// Job metrics for right-sizing: a Prometheus URL (`http://…`) or a samples file
    /// (JSON lines, see `scheduler/src/report/README.md`), relative to this file.
    #[serde(default)]
    pub metrics: Option<String>,
    /// StreamJob objects in one site's cluster as a second door to the job store
    /// (`kubectl apply -f job.yaml`); absent: jobs come from the API and `jobs` only.
    #[serde(default)]
    pub stream_jobs: Option<StreamJobsSpec>,
    /// Site agents (`twinsite agent`): which sites have one, and the timing of their leases.
    #[serde(default)]
    pub agents: AgentsSpec,
    /// Where offline pools that lend by usage (policy `offline.lendBy: usage`) read what
    /// their nodes' own workload uses; required by such pools, refused without one.
    #[serde(default)]
    pub node_usage: Option<NodeUsageSpec>,
}

/// The `nodeUsage` section. Queries may name `{namespace}`, replaced by the site's job
/// namespace (policy `sites[].kubernetes.namespace`) as a PromQL string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeUsageSpec {
    /// Prometheus base URL per policy site (each data centre scrapes its own nodes).
    pub prometheus: BTreeMap<String, String>,
    #[serde(default)]
    pub node_cpu_query: Option<String>,
    #[serde(default)]
    pub node_memory_query: Option<String>,
    #[serde(default)]
    pub pods_cpu_query: Option<String>,
    #[serde(default)]
    pub pods_memory_query: Option<String>,
    /// The label naming the node in every query's answer.
    #[serde(default)]
    pub node_label: Option<String>,
    /// How often usage is measured.
    #[serde(default)]
    pub refresh: Option<String>,
    /// How old a measurement may be and still count; older, the site's nodes lend nothing.
    #[serde(default)]
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamJobsSpec {
    /// The policy site (one with `kubernetes`) whose cluster holds the StreamJob objects.
    pub site: String,
    /// Watch this namespace only; absent: every namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Longest wait between two comparisons of objects, store and statuses.
    #[serde(default = "default_status_interval")]
    pub status_interval: String,
    /// A status whose only change is a newer checkpoint is written once the shown one is
    /// this much older.
    #[serde(default = "default_checkpoint_status_interval")]
    pub checkpoint_status_interval: String,
}

fn default_status_interval() -> String {
    "10s".to_string()
}
fn default_checkpoint_status_interval() -> String {
    "2m".to_string()
}

/// The `agents` section: sites guarded by a `twinsite agent` and the agents' lease timing
/// (`failover/README.md`, "Site agents and self-fencing").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentsSpec {
    /// Sites with an agent. Their agent's lease is their peer view, and a site whose agent
    /// holds no lease is not counted alive (its agent has stopped, or is stopping, its jobs).
    /// Needs `state.etcd`: the leases live there.
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default = "default_agent_lease_ttl")]
    pub lease_ttl: String,
    #[serde(default = "default_agent_clock_skew_margin")]
    pub clock_skew_margin: String,
    #[serde(default = "default_agent_stop_within")]
    pub stop_within: String,
    /// How often an agent looks at its site and the store.
    #[serde(default = "default_agent_interval")]
    pub interval: String,
}

fn default_agent_lease_ttl() -> String {
    "10s".into()
}
fn default_agent_clock_skew_margin() -> String {
    "3s".into()
}
fn default_agent_stop_within() -> String {
    "10s".into()
}
fn default_agent_interval() -> String {
    "2s".into()
}

impl Default for AgentsSpec {
    fn default() -> Self {
        AgentsSpec {
            sites: Vec::new(),
            lease_ttl: default_agent_lease_ttl(),
            clock_skew_margin: default_agent_clock_skew_margin(),
            stop_within: default_agent_stop_within(),
            interval: default_agent_interval(),
        }
    }
}

/// Site agents, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentsConfig {
    pub sites: Vec<scheduler::model::SiteId>,
    pub timing: failover::agent::AgentTiming,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalFlinkSpec {
    /// Python of a venv with `apache-flink` (`tests/flink/setup-venv.sh` makes one and
    /// prints this path).
    pub python: PathBuf,
    /// Policy sites (without `kubernetes`) to run this way.
    pub sites: Vec<String>,
    /// Capacity offered to the scheduler per site (one node, `localhost`).
    #[serde(default = "default_local_cpu")]
    pub cpu: String,
    #[serde(default = "default_local_memory")]
    pub memory: String,
}

fn default_local_cpu() -> String {
    "8".to_string()
}
fn default_local_memory() -> String {
    "16Gi".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateSpec {
    /// Absent: an embedded store in `<dataDir>/state` (single instance, no election).
    #[serde(default)]
    pub etcd: Option<EtcdSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub tls: Option<EtcdTlsSpec>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Name of the election every replica campaigns in.
    #[serde(default = "default_election")]
    pub election: String,
    /// Lease TTL of the leadership: how long a dead leader keeps it.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: String,
    /// This replica's name in the election; absent: `<hostname>-<pid>`.
    #[serde(default)]
    pub candidate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdTlsSpec {
    pub ca: PathBuf,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub domain: Option<String>,
}

fn default_key_prefix() -> String {
    crate::state::keys::DEFAULT_PREFIX.to_string()
}
fn default_election() -> String {
    "twinsite-leader".to_string()
}
fn default_lease_ttl() -> String {
    "10s".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSpec {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// File holding the admin bearer token (every request; trailing newline ignored). At
    /// most one of `tokenFile`, `tokenEnv`; neither: a generated `<dataDir>/api-token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the admin token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the read-only token (GET and HEAD only). At most one of
    /// `readTokenFile`, `readTokenEnv`; neither: generated in `<dataDir>/api-read-token`
    /// when the admin token is generated too, otherwise none (reads need the admin token).
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// Environment variable holding the read-only token.
    #[serde(default)]
    pub read_token_env: Option<String>,
    /// `/metrics` needs a token (read-only or admin) like every read; `false` serves it to
    /// anyone who can reach the port.
    #[serde(default = "yes")]
    pub metrics_require_token: bool,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for ApiSpec {
    fn default() -> Self {
        ApiSpec {
            listen: default_listen(),
            token_file: None,
            token_env: None,
            read_token_file: None,
            read_token_env: None,
            metrics_require_token: true,
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// Inputs of the in-process simulated sites (policy sites without `kubernetes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulationSpec {
    /// Per simulated site, its nodes (and optional foreign pods) as kubectl JSON files.
    #[serde(default)]
    pub sites: BTreeMap<String, SimulatedSiteFiles>,
    /// Sites without files get generated nodes, shaped like `twinsite generate`'s.
    #[serde(default)]
    pub generate: GenerateSpec,
    /// How often simulated time advances (checkpoints, fault effects).
    #[serde(default = "default_tick")]
    pub tick: String,
    /// Serves `/api/v1/sim/...` (fault injection). Only ever on simulated sites.
    #[serde(default = "yes")]
    pub admin_endpoint: bool,
}

fn default_tick() -> String {
    "1s".to_string()
}
fn yes() -> bool {
    true
}

impl Default for SimulationSpec {
    fn default() -> Self {
        SimulationSpec {
            sites: BTreeMap::new(),
            generate: GenerateSpec::default(),
            tick: default_tick(),
            admin_endpoint: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedSiteFiles {
    pub nodes: PathBuf,
    #[serde(default)]
    pub pods: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateSpec {
    #[serde(default = "default_nodes_per_site")]
    pub nodes_per_site: u32,
    /// Sample jobs created when neither the store nor `jobs` has any.
    #[serde(default = "default_sample_jobs")]
    pub sample_jobs: u32,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_nodes_per_site() -> u32 {
    40
}
fn default_sample_jobs() -> u32 {
    20
}
fn default_seed() -> u64 {
    1
}

impl Default for GenerateSpec {
    fn default() -> Self {
        GenerateSpec {
            nodes_per_site: default_nodes_per_site(),
            sample_jobs: default_sample_jobs(),
            seed: default_seed(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcileSpec {
    /// Longest wait between passes; a change in a site or a job starts one sooner.
    #[serde(default = "default_reconcile_interval")]
    pub interval: String,
}

fn default_reconcile_interval() -> String {
    "5s".to_string()
}

impl Default for ReconcileSpec {
    fn default() -> Self {
        ReconcileSpec {
            interval: default_reconcile_interval(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverSpec {
    /// `false`: no automatic failover at all; failed jobs are relaunched in their site only.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A node silent (not Ready) for longer is lost; jobs whose JobManager ran there move.
    #[serde(default = "default_node_grace")]
    pub node_grace: String,
    /// A site whose API, nodes and peer are all silent for longer is lost (with quorum).
    #[serde(default = "default_site_grace")]
    pub site_grace: String,
    /// How long Flink gets to recover from lost TaskManager nodes before a relaunch.
    #[serde(default = "default_tm_bound")]
    pub task_manager_recovery_bound: String,
    /// Failed relaunches in a job's site before the next goes to the other site.
    #[serde(default = "default_relaunches_before_other_site")]
    pub relaunches_before_other_site: u32,
    /// Jobs of one planned failover operation moving at once (each is stopped with a
    /// savepoint first).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Moves one failover operation starts per second after `launchBurst`.
    #[serde(default = "default_launch_rate")]
    pub launch_rate: u32,
    /// Moves one failover operation starts at once before the rate applies.
    #[serde(default = "default_launch_burst")]
    pub launch_burst: u32,
    /// Start a failback on its own once a lost site is healthy again.
    #[serde(default)]
    pub auto_failback: bool,
    /// Fail a silent site over without an operator. Absent: on with etcd (the controller's
    /// session is the quorum) and with the embedded store when every site is simulated
    /// (nothing there can be partitioned from anything else); off with the embedded store
    /// and any real site (local Flink, Kubernetes), where no witness can tell a dead site
    /// from a cut-off one.
    #[serde(default)]
    pub automatic_site_failover: Option<bool>,
}

fn default_true() -> bool {
    true
}
fn default_node_grace() -> String {
    "20s".into()
}
fn default_site_grace() -> String {
    "30s".into()
}
fn default_tm_bound() -> String {
    "3m".into()
}
fn default_relaunches_before_other_site() -> u32 {
    3
}
fn default_launch_rate() -> u32 {
    failover::DEFAULT_LAUNCH_RATE
}
fn default_launch_burst() -> u32 {
    failover::DEFAULT_LAUNCH_BURST
}
fn default_max_in_flight() -> usize {
    16
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec {
            enabled: true,
            node_grace: default_node_grace(),
            site_grace: default_site_grace(),
            task_manager_recovery_bound: default_tm_bound(),
            relaunches_before_other_site: default_relaunches_before_other_site(),
            max_in_flight: default_max_in_flight(),
            launch_rate: default_launch_rate(),
            launch_burst: default_launch_burst(),
            auto_failback: false,
            automatic_site_failover: None,
        }
    }
}

/// The failover engine's settings, resolved (sites are filled in by `twinsite run`).
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub enabled: bool,
    pub node_grace: Duration,
    pub site_grace: Duration,
    pub task_manager_recovery_bound: Duration,
    pub relaunches_before_other_site: u32,
    pub max_in_flight: usize,
    pub launch_rate: u32,
    pub launch_burst: u32,
    pub auto_failback: bool,
    /// Resolved: whether a silent site may be judged lost without an operator (see
    /// `FailoverSpec::automatic_site_failover`).
    pub automatic_site_failover: bool,
}

impl FailoverConfig {
    pub fn engine_config(&self, sites: Vec<scheduler::model::SiteId>) -> failover::EngineConfig {
        let mut config = failover::EngineConfig::new(sites);
        config.node_grace = self.node_grace;
        config.site.grace = self.site_grace;
        // Suspect after a third of the grace (10 s of the default 30 s).
        config.site.suspect_after = self.site_grace / 3;
        config.task_manager_recovery_bound = self.task_manager_recovery_bound;
        config.relaunches_before_other_site = self.relaunches_before_other_site;
        config.max_in_flight = self.max_in_flight;
        config.launch_rate = self.launch_rate;
        config.launch_burst = self.launch_burst;
        config.auto_failback = self.auto_failback;
        config
    }
}

/// The configuration resolved: paths made absolute against the file's directory, durations
/// parsed, the policy loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or `embedded default`), for messages.
    pub source: String,
    pub policy: Policy,
    pub data_dir: PathBuf,
    pub state: StateConfig,
    pub api: ApiConfig,
    pub simulation: SimulationConfig,
    pub jobs: Option<PathBuf>,
    pub reconcile_interval: Duration,
    pub failover: FailoverConfig,
    pub local_flink: Option<LocalFlinkConfig>,
    pub metrics: Option<MetricsConfig>,
    /// Where StreamJob objects are watched; `None`: nowhere.
    pub stream_jobs: Option<crate::kube_jobs::StreamJobWatchConfig>,
    pub agents: AgentsConfig,
    /// `None` unless a pool lends by usage.
    pub node_usage: Option<NodeUsageConfig>,
}

/// The `nodeUsage` section, resolved: one Prometheus per site, the four queries, timing.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsageConfig {
    pub prometheus: BTreeMap<scheduler::model::SiteId, String>,
    pub queries: NodeUsageQueries,
    pub node_label: String,
    pub refresh: Duration,
    pub max_age: Duration,
}

/// PromQL giving, per node: what it uses in all (cores, bytes) and what our pods on it use.
/// A node's own workload is the difference, so our borrowed pods never shrink their own
/// lending.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsageQueries {
    pub node_cpu: String,
    pub node_memory: String,
    pub pods_cpu: String,
    pub pods_memory: String,
}

impl NodeUsageQueries {
    /// Replaced by the site's job namespace, quoted as a PromQL string.
    pub const NAMESPACE: &'static str = "{namespace}";
    /// node_exporter and cAdvisor series, with the `node` label kube-prometheus adds.
    pub const DEFAULT_NODE_CPU: &'static str =
        r#"sum by (node) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))"#;
    pub const DEFAULT_NODE_MEMORY: &'static str =
        r#"sum by (node) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)"#;
    pub const DEFAULT_PODS_CPU: &'static str = r#"sum by (node) (rate(container_cpu_usage_seconds_total{namespace={namespace}, container!=""}[5m]))"#;
    pub const DEFAULT_PODS_MEMORY: &'static str = r#"sum by (node) (container_memory_working_set_bytes{namespace={namespace}, container!=""})"#;
}

/// Longest query text accepted; PromQL this long is a mistake, not a query.
const MAX_USAGE_QUERY_BYTES: usize = 4096;
const DEFAULT_USAGE_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_USAGE_MAX_AGE: Duration = Duration::from_secs(300);
/// A measurement older than this says nothing about a node's workload now.
const MAX_USAGE_AGE: Duration = Duration::from_secs(3600);

/// Where job metrics come from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsConfig {
    Prometheus(String),
    File(PathBuf),
}

/// Local-Flink sites, resolved.
#[derive(Debug, Clone)]
pub struct LocalFlinkConfig {
    pub python: PathBuf,
    pub sites: Vec<String>,
    pub capacity: scheduler::model::Resources,
}

#[derive(Debug, Clone)]
pub enum StateConfig {
    Embedded { dir: PathBuf },
    Etcd(Box<EtcdConfigResolved>),
}

#[derive(Debug, Clone)]
pub struct EtcdConfigResolved {
    pub store: crate::state::EtcdConfig,
    pub election: String,
    pub lease_ttl: Duration,
    pub candidate: String,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The admin token: every request.
    pub token: TokenSource,
    /// The read-only token: GET and HEAD.
    pub read_token: TokenSource,
    pub metrics_require_token: bool,
    pub max_body_bytes: usize,
}

/// Where the API token comes from; read at start, never logged.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    None,
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone)]
pub struct SimulationConfig {
    pub sites: BTreeMap<String, SimulatedSiteFiles>,
    pub generate: GenerateSpec,
    pub tick: Duration,
    pub admin_endpoint: bool,
}

/// A configuration error: every problem names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] InputError),
}

impl Config {
    /// The embedded default: two simulated sites, local storage under `./twinsite-data`,
    /// embedded state, API on localhost, sample jobs.
    pub fn embedded_default() -> Config {
        let file = ConfigFile {
            api_version: scheduler::input::API_VERSION.to_string(),
            kind: CONFIG_KIND.to_string(),
            policy: None,
            data_dir: None,
            state: StateSpec::default(),
            api: ApiSpec::default(),
            simulation: SimulationSpec::default(),
            jobs: None,
            reconcile: ReconcileSpec::default(),
            failover: FailoverSpec::default(),
            local_flink: None,
            metrics: None,
            stream_jobs: None,
            agents: AgentsSpec::default(),
            node_usage: None,
        };
        let mut problems = Problems::new("embedded default");
        let config = resolve(file, Path::new("."), "embedded default", &mut problems);
        // The default is built from constants that the tests check resolve cleanly.
        match (config, problems.is_empty()) {
            (Some(config), true) => config,
            _ => unreachable!("the embedded default configuration resolves"),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&path.display().to_string(), &text, base)
    }

    /// Parses config text; relative paths in it are taken relative to `base`.
    pub fn parse(source: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let (file, mut problems) = decode_document::<ConfigFile>(source, text, CONFIG_KIND)?;
        let config = resolve(file, base, source, &mut problems);
        match config {
            Some(config) => Ok(problems.finish(config)?),
            None => Err(problems.into_error("not a valid configuration").into()),
        }
    }
}

fn duration(problems: &mut Problems, field: &str, text: &str) -> Option<Duration> {
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

fn resolve(file: ConfigFile, base: &Path, source: &str, problems: &mut Problems) -> Option<Config> {
    let absolute = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let policy = match &file.policy {
        None => Some(Policy::default_two_sites()),
        Some(path) => {
            let path = absolute(path);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    match scheduler::input::parse_policy(&path.display().to_string(), &text) {
                        Ok(policy) => Some(policy),
                        Err(error) => {
                            problems
                                .field("policy", format!("the policy file is invalid:\n{error}"));
                            None
                        }
                    }
                }
                Err(error) => {
                    problems.field("policy", format!("cannot read {}: {error}", path.display()));
                    None
                }
            }
        }
    };

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

    let listen = match file.api.listen.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.field(
                "api.listen",
                format!(
                    "expected HOST:PORT with an IP address, e.g. 127.0.0.1:8080, found {:?}",
                    file.api.listen
                ),
            );
            None
        }
    };
    let mut token_source = |file_field: &str,
                            env_field: &str,
                            path: &Option<PathBuf>,
                            var: &Option<String>| match (path, var) {
        (Some(_), Some(_)) => {
            problems.field(
                "api",
                format!("set only one of {file_field} and {env_field}"),
            );
            TokenSource::None
        }
        (Some(path), None) => TokenSource::File(absolute(path)),
        (None, Some(var)) if var.is_empty() => {
            problems.field(
                format!("api.{env_field}"),
                "must name an environment variable",
            );
            TokenSource::None
        }
        (None, Some(var)) => TokenSource::Env(var.clone()),
        (None, None) => TokenSource::None,
    };
    let token = token_source(
        "tokenFile",
        "tokenEnv",
        &file.api.token_file,
        &file.api.token_env,
    );
    let read_token = token_source(
        "readTokenFile",
        "readTokenEnv",
        &file.api.read_token_file,
        &file.api.read_token_env,
    );
    if token != TokenSource::None && token == read_token {
        problems.field(
            "api.readTokenFile",
            "names the same source as the admin token: the read-only role would be an admin",
        );
    }
    if file.api.max_body_bytes == 0 {
        problems.field("api.maxBodyBytes", "must be at least 1");
    }

    let tick = duration(problems, "simulation.tick", &file.simulation.tick);
    let reconcile_interval = duration(problems, "reconcile.interval", &file.reconcile.interval);
    let node_grace = duration(problems, "failover.nodeGrace", &file.failover.node_grace);
    let site_grace = duration(problems, "failover.siteGrace", &file.failover.site_grace);
    let tm_bound = duration(
        problems,
        "failover.taskManagerRecoveryBound",
        &file.failover.task_manager_recovery_bound,
    );
    if file.failover.max_in_flight == 0 {
        problems.field("failover.maxInFlight", "must be at least 1");
    }
    // Zero would leave an operation's later jobs waiting forever.
    if file.failover.launch_rate == 0 {
        problems.field(
            "failover.launchRate",
            "must be at least 1 (moves per second)",
        );
    }
    if file.failover.launch_burst == 0 {
        problems.field("failover.launchBurst", "must be at least 1");
    }
    if file.simulation.generate.nodes_per_site == 0 {
        problems.field("simulation.generate.nodesPerSite", "must be at least 1");
    }

    if let Some(policy) = &policy {
        let known = policy.site_ids();
        for name in file.simulation.sites.keys() {
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

    let local_flink = file.local_flink.as_ref().and_then(|spec| {
        let mut ok = true;
        for (i, name) in spec.sites.iter().enumerate() {
            let field = format!("localFlink.sites[{i}]");
            match policy
                .as_ref()
                .map(|p| p.site(&scheduler::model::SiteId(name.clone())))
            {
                Some(None) => {
                    problems.field(field.clone(), format!("the policy has no site {name:?}"));
                    ok = false;
                }
                Some(Some(site)) if site.kubernetes.is_some() => {
                    problems.field(
                        field.clone(),
                        format!("site {name:?} is a Kubernetes site in the policy"),
                    );
                    ok = false;
                }
                _ => {}
            }
            if file.simulation.sites.contains_key(name) {
                problems.field(
                    field,
                    format!("site {name:?} also has simulation.sites files; choose one kind"),
                );
                ok = false;
            }
        }
        let cpu = scheduler::k8s::Quantity::new(spec.cpu.clone())
            .milli_value()
            .ok()
            .filter(|v| *v > 0);
        let memory = scheduler::k8s::Quantity::new(spec.memory.clone())
            .value()
            .ok()
            .filter(|v| *v > 0);
        if cpu.is_none() {
            problems.field("localFlink.cpu", format!("not a quantity: {:?}", spec.cpu));
        }
        if memory.is_none() {
            problems.field(
                "localFlink.memory",
                format!("not a quantity: {:?}", spec.memory),
            );
        }
        Some(LocalFlinkConfig {
            python: absolute(&spec.python),
            sites: spec.sites.clone(),
            capacity: scheduler::model::Resources::new(cpu?, memory?, 110),
        })
        .filter(|_| ok)
    });

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

    let simulation = SimulationConfig {
        sites: file
            .simulation
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
        generate: file.simulation.generate.clone(),
        tick: tick?,
        admin_endpoint: file.simulation.admin_endpoint,
    };

    Some(Config {
        source: source.to_string(),
        policy: policy?,
        data_dir,
        state: state?,
        api: ApiConfig {
            listen: listen?,
            token,
            read_token,
            metrics_require_token: file.api.metrics_require_token,
            max_body_bytes: file.api.max_body_bytes,
        },
        simulation,
        jobs: file.jobs.as_deref().map(absolute),
        reconcile_interval: reconcile_interval?,
        failover: FailoverConfig {
            enabled: file.failover.enabled,
            node_grace: node_grace?,
            site_grace: site_grace?,
            task_manager_recovery_bound: tm_bound?,
            relaunches_before_other_site: file.failover.relaunches_before_other_site,
            max_in_flight: file.failover.max_in_flight,
            launch_rate: file.failover.launch_rate,
            launch_burst: file.failover.launch_burst,
            auto_failback: file.failover.auto_failback,
            automatic_site_failover,
        },
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

/// The `nodeUsage` section against the policy: present exactly when a pool lends by usage,
/// a URL for every site such a pool covers, and no other site.
fn resolve_node_usage(
    spec: Option<&NodeUsageSpec>,
    policy: Option<&Policy>,
    problems: &mut Problems,
) -> Option<Option<NodeUsageConfig>> {
    use scheduler::model::{LendBasis, SiteId};
    let policy = policy?;
    let sites = policy.site_ids();
    let placement = policy.placement_policy();
    let mut needing: Vec<(&str, SiteId)> = Vec::new();
    for pool in &placement.pools {
        if pool
            .offline
            .as_ref()
            .is_some_and(|l| l.lend_by == LendBasis::Usage)
        {
            match &pool.site {
                Some(site) => needing.push((&pool.name, site.clone())),
                None => needing.extend(sites.iter().map(|s| (pool.name.as_str(), s.clone()))),
            }
        }
    }
    let Some(spec) = spec else {
        if let Some((pool, _)) = needing.first() {
            problems.field(
                "nodeUsage",
                format!(
                    "pool {pool:?} lends by usage (policy offline.lendBy: usage), so the \
                     configuration needs a nodeUsage section naming each site's Prometheus"
                ),
            );
            return None;
        }
        return Some(None);
    };
    let before = problems.len();
    if needing.is_empty() {
        problems.field(
            "nodeUsage",
            "no policy pool lends by usage (offline.lendBy: usage); remove the section or set \
             lendBy in the policy",
        );
    }
    let mut prometheus = BTreeMap::new();
    for (site, url) in &spec.prometheus {
        let field = format!("nodeUsage.prometheus.{site}");
        let id = SiteId(site.clone());
        if !sites.contains(&id) {
            problems.field(&field, format!("the policy has no site {site:?}"));
            continue;
        }
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                prometheus.insert(id, url.clone());
            }
            Ok(parsed) => problems.field(
                &field,
                format!(
                    "expected an http(s) URL, found scheme {:?}",
                    parsed.scheme()
                ),
            ),
            Err(e) => problems.field(&field, format!("not a URL ({e}): {url:?}")),
        }
    }
    for (pool, site) in &needing {
        if !spec.prometheus.contains_key(&site.0) {
            problems.field(
                format!("nodeUsage.prometheus.{site}"),
                format!("missing: pool {pool:?} lends by usage in site {site}"),
            );
        }
    }
    let mut query = |field: &str, given: &Option<String>, default: &str| -> String {
        match given {
            None => default.to_string(),
            Some(q) if q.trim().is_empty() => {
                problems.field(format!("nodeUsage.{field}"), "must not be empty");
                String::new()
            }
            Some(q) if q.len() > MAX_USAGE_QUERY_BYTES => {
                problems.field(
                    format!("nodeUsage.{field}"),
                    format!(
                        "{} bytes is over the bound of {MAX_USAGE_QUERY_BYTES}",
                        q.len()
                    ),
                );
                String::new()
            }
            Some(q) => q.clone(),
        }
    };
    let queries = NodeUsageQueries {
        node_cpu: query(
            "nodeCpuQuery",
            &spec.node_cpu_query,
            NodeUsageQueries::DEFAULT_NODE_CPU,
        ),
        node_memory: query(
            "nodeMemoryQuery",
            &spec.node_memory_query,
            NodeUsageQueries::DEFAULT_NODE_MEMORY,
        ),
        pods_cpu: query(
            "podsCpuQuery",
            &spec.pods_cpu_query,
            NodeUsageQueries::DEFAULT_PODS_CPU,
        ),
        pods_memory: query(
            "podsMemoryQuery",
            &spec.pods_memory_query,
            NodeUsageQueries::DEFAULT_PODS_MEMORY,
        ),
    };
    for site in prometheus.keys() {
        let namespace = policy
            .site(site)
            .and_then(|s| s.kubernetes.as_ref())
            .and_then(|k| k.namespace.as_deref());
        let named = [&queries.pods_cpu, &queries.pods_memory]
            .iter()
            .any(|q| q.contains(NodeUsageQueries::NAMESPACE));
        if named && namespace.is_none() {
            problems.field(
                format!("nodeUsage.prometheus.{site}"),
                format!(
                    "the pods queries name {{namespace}} but site {site} has no \
                     kubernetes.namespace in the policy: set it, or give podsCpuQuery and \
                     podsMemoryQuery selecting our pods another way"
                ),
            );
        }
    }
    let node_label = spec
        .node_label
        .clone()
        .unwrap_or_else(|| "node".to_string());
    if !is_prometheus_label(&node_label) {
        problems.field(
            "nodeUsage.nodeLabel",
            format!("{node_label:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        );
    }
    let refresh = match &spec.refresh {
        None => Some(DEFAULT_USAGE_REFRESH),
        Some(text) => duration(problems, "nodeUsage.refresh", text),
    };
    let max_age = match &spec.max_age {
        None => Some(DEFAULT_USAGE_MAX_AGE),
        Some(text) => duration(problems, "nodeUsage.maxAge", text),
    };
    if let (Some(refresh), Some(max_age)) = (refresh, max_age) {
        if max_age < refresh {
            problems.field(
                "nodeUsage.maxAge",
                format!(
                    "{} is shorter than nodeUsage.refresh ({}): every measurement would be too old",
                    humantime::format_duration(max_age),
                    humantime::format_duration(refresh)
                ),
            );
        }
        if max_age > MAX_USAGE_AGE {
            problems.field(
                "nodeUsage.maxAge",
                format!(
                    "at most {}: an older measurement says nothing about the node now",
                    humantime::format_duration(MAX_USAGE_AGE)
                ),
            );
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Some(NodeUsageConfig {
        prometheus,
        queries,
        node_label,
        refresh: refresh?,
        max_age: max_age?,
    }))
}

fn is_prometheus_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `agents` section: durations, sites the policy knows, etcd present when any site has
/// an agent, and the timing argument against `failover.siteGrace`.
fn resolve_agents(
    spec: &AgentsSpec,
    policy: Option<&Policy>,
    etcd: bool,
    site_grace: Option<Duration>,
    problems: &mut Problems,
) -> Option<AgentsConfig> {
    let lease_ttl = duration(problems, "agents.leaseTtl", &spec.lease_ttl);
    let clock_skew_margin = match parse_duration(&spec.clock_skew_margin) {
        Ok(d) => Some(d),
        Err(message) => {
            problems.field("agents.clockSkewMargin", message);
            None
        }
    };
    let stop_within = duration(problems, "agents.stopWithin", &spec.stop_within);
    let interval = duration(problems, "agents.interval", &spec.interval);
    let mut sites = Vec::new();
    for (i, name) in spec.sites.iter().enumerate() {
        let id = scheduler::model::SiteId(name.clone());
        if let Some(policy) = policy
            && policy.site(&id).is_none()
        {
            problems.field(
                format!("agents.sites[{i}]"),
                format!("the policy has no site {name:?}"),
            );
        }
        if sites.contains(&id) {
            problems.field(
                format!("agents.sites[{i}]"),
                format!("{name:?} is listed twice"),
            );
        }
        sites.push(id);
    }
    if !sites.is_empty() && !etcd {
        problems.field(
            "agents.sites",
            "site agents keep their leases in etcd: configure state.etcd, or list no sites",
        );
    }
    let timing = failover::agent::AgentTiming {
        lease_ttl: lease_ttl?,
        clock_skew_margin: clock_skew_margin?,
        stop_within: stop_within?,
    };
    let interval = interval?;
    // The timing binds only sites guarded by a `twinsite agent`; in-process agents hold the
    // controller's own session as their lease.
    if let Some(grace) = site_grace.filter(|_| !sites.is_empty()) {
        match timing.check(grace) {
            Ok(()) => {}
            Err(failover::agent::TimingError::TtlTooShort { found }) => problems.field(
                "agents.leaseTtl",
                format!("must be at least 2s (etcd's lease granularity is 1s), found {found:?}"),
            ),
            Err(failover::agent::TimingError::SlowerThanGrace { sum, grace, .. }) => {
                problems.field(
                    "agents.leaseTtl",
                    format!(
                        "agents.leaseTtl + agents.clockSkewMargin + agents.stopWithin = {sum:?} must be below failover.siteGrace ({grace:?}): \
                         otherwise the controller may relaunch a cut-off site's jobs before its agent has stopped them"
                    ),
                )
            }
        }
    }
    if interval * 2 > timing.lease_ttl {
        problems.field(
            "agents.interval",
            format!(
                "{interval:?} must be at most half of agents.leaseTtl ({:?}): an agent looks at its lease once per interval",
                timing.lease_ttl
            ),
        );
    }
    Some(AgentsConfig {
        sites,
        timing,
        interval,
    })
}

fn resolve_stream_jobs(
    spec: &StreamJobsSpec,
    policy: Option<&Policy>,
    problems: &mut Problems,
) -> Option<crate::kube_jobs::StreamJobWatchConfig> {
    let mut ok = true;
    let site = scheduler::model::SiteId(spec.site.clone());
    match policy.map(|p| (p.site(&site), p)) {
        Some((None, policy)) => {
            problems.field(
                "streamJobs.site",
                format!(
                    "the policy has no site {:?} (it has {})",
                    spec.site,
                    policy
                        .site_ids()
                        .iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            ok = false;
        }
        Some((Some(found), _)) if found.kubernetes.is_none() => {
            problems.field(
                "streamJobs.site",
                format!(
                    "site {:?} has no sites[].kubernetes in the policy: StreamJob objects live in a Kubernetes cluster",
                    spec.site
                ),
            );
            ok = false;
        }
        _ => {}
    }
    if let Some(namespace) = &spec.namespace
        && let Some(error) = scheduler::input::dns1123_label_error(namespace)
    {
        problems.field("streamJobs.namespace", error);
        ok = false;
    }
    let status_interval = duration(problems, "streamJobs.statusInterval", &spec.status_interval)
        .and_then(|interval| {
            // A round reads every job and its checkpoint pointers: not a busy loop.
            if interval < Duration::from_secs(1) {
                problems.field(
                    "streamJobs.statusInterval",
                    format!("must be at least 1s, found {:?}", spec.status_interval),
                );
                return None;
            }
            Some(interval)
        });
    let checkpoint_status_interval = duration(
        problems,
        "streamJobs.checkpointStatusInterval",
        &spec.checkpoint_status_interval,
    );
    let mut config = crate::kube_jobs::StreamJobWatchConfig::new(site);
    config.scope.namespace = spec.namespace.clone();
    config.status_interval = status_interval?;
    config.checkpoint_status_interval = checkpoint_status_interval?;
    ok.then_some(config)
}

fn resolve_etcd(
    etcd: &EtcdSpec,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<EtcdConfigResolved> {
    let mut ok = true;
    if etcd.endpoints.is_empty() {
        problems.field("state.etcd.endpoints", "list at least one endpoint");
        ok = false;
    }
    for (i, endpoint) in etcd.endpoints.iter().enumerate() {
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !scheme_ok {
            problems.field(
                format!("state.etcd.endpoints[{i}]"),
                format!("expected http://HOST:PORT or https://HOST:PORT, found {endpoint:?}"),
            );
            ok = false;
        }
        if endpoint.starts_with("https://") && etcd.tls.is_none() {
            problems.field(
                format!("state.etcd.endpoints[{i}]"),
                "an https endpoint needs state.etcd.tls (at least its ca)",
            );
            ok = false;
        }
    }
    if !etcd.key_prefix.starts_with('/') {
        problems.field(
            "state.etcd.keyPrefix",
            format!("must start with '/', found {:?}", etcd.key_prefix),
        );
        ok = false;
    }
    if etcd.election.is_empty() {
        problems.field("state.etcd.election", "must not be empty");
        ok = false;
    }
    let lease_ttl = duration(problems, "state.etcd.leaseTtl", &etcd.lease_ttl);
    if let Some(ttl) = lease_ttl
        && ttl < Duration::from_secs(2)
    {
        problems.field(
            "state.etcd.leaseTtl",
            format!("must be at least 2s (etcd's lease granularity is 1s), found {ttl:?}"),
        );
        ok = false;
    }
    let tls = etcd.tls.as_ref().map(|tls| {
        if tls.cert.is_some() != tls.key.is_some() {
            problems.field("state.etcd.tls", "give both cert and key, or neither");
        }
        crate::state::EtcdTls {
            ca: absolute(&tls.ca),
            client_cert: tls.cert.as_deref().map(absolute),
            client_key: tls.key.as_deref().map(absolute),
            domain: tls.domain.clone(),
        }
    });
    let mut store = crate::state::EtcdConfig::new(etcd.endpoints.clone());
    store.tls = tls;
    store.key_prefix = etcd.key_prefix.clone();
    let candidate = etcd.candidate.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "twinsite".to_string());
        format!("{host}-{}", std::process::id())
    });
    if !ok {
        return None;
    }
    Some(EtcdConfigResolved {
        store,
        election: etcd.election.clone(),
        lease_ttl: lease_ttl?,
        candidate,
    })
}

impl TokenSource {
    /// Reads the admin token; `Ok(None)` when none is configured.
    pub fn read(&self) -> Result<Option<String>, String> {
        self.read_as("api.tokenFile", "api.tokenEnv")
    }

    /// Reads a token; errors name `file_field` or `env_field`, never the token. A file
    /// other users may read is refused (see [`check_private_file`]).
    pub fn read_as(&self, file_field: &str, env_field: &str) -> Result<Option<String>, String> {
        let token = match self {
            TokenSource::None => return Ok(None),
            TokenSource::File(path) => {
                check_private_file(path, file_field)?;
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{file_field} {}: cannot read: {e}", path.display()))?
            }
            TokenSource::Env(var) => std::env::var(var)
                .map_err(|_| format!("{env_field}: environment variable {var} is not set"))?,
        };
        let token = token.trim_end_matches(['\n', '\r']).to_string();
        if token.len() < 16 {
            return Err(format!(
                "{}: the API token must be at least 16 characters",
                match self {
                    TokenSource::File(path) => format!("{file_field} {}", path.display()),
                    TokenSource::Env(var) => format!("{env_field} {var}"),
                    TokenSource::None => String::new(),
                }
            ));
        }
        Ok(Some(token))
    }
}

/// Refuses a token file that its group or other users may read or write: anyone who can
/// read it holds the API. A missing file passes here (reading it then fails, naming it).
/// `field` names the setting in the message (`api.tokenFile`).
pub fn check_private_file(path: &Path, field: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{field} {path}: mode {mode:04o} lets other users read or replace the token (the group or the world has access); run `chmod 600 {path}` (for a Kubernetes Secret volume: defaultMode: 0400)",
            path = path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\n";

    fn parse(body: &str) -> Result<Config, ConfigError> {
        Config::parse(
            "twinsite.yaml",
            &format!("{HEAD}{body}"),
            Path::new("/etc/twinsite"),
        )
    }

    #[test]
    fn the_embedded_default_is_two_simulated_sites_with_embedded_state_on_localhost() {
        let config = Config::embedded_default();
        let sites: Vec<_> = config.policy.site_ids().into_iter().map(|s| s.0).collect();
        assert_eq!(sites, ["dc-a", "dc-b"]);
        assert!(matches!(config.state, StateConfig::Embedded { .. }));
        assert_eq!(config.api.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.data_dir.ends_with("twinsite-data"));
    }

    #[test]
    fn an_empty_config_means_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.reconcile_interval, Duration::from_secs(5));
        assert_eq!(config.api.token, TokenSource::None);
        assert_eq!(config.data_dir, Path::new("/etc/twinsite/./twinsite-data"));
    }

    #[test]
    fn launch_pacing_reaches_the_engine_and_zero_is_refused_naming_the_field() {
        let config = parse("failover:\n  launchRate: 50\n  launchBurst: 10\n").unwrap();
        let engine = config.failover.engine_config(Vec::new());
        assert_eq!((engine.launch_rate, engine.launch_burst), (50, 10));
        let defaults = parse("").unwrap().failover.engine_config(Vec::new());
        assert_eq!(
            (defaults.launch_rate, defaults.launch_burst),
            (
                failover::DEFAULT_LAUNCH_RATE,
                failover::DEFAULT_LAUNCH_BURST
            )
        );
        let err = parse("failover:\n  launchRate: 0\n  launchBurst: 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("failover.launchRate"), "{err}");
        assert!(err.contains("failover.launchBurst"), "{err}");
    }

    #[test]
    fn a_misspelled_field_is_named() {
        let err = parse("api:\n  listn: 1.2.3.4:80\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.listn"), "{err}");
        assert!(err.contains("twinsite.yaml"), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_field() {
        let err = parse(
            "api:\n  listen: localhost\n  tokenFile: t\n  tokenEnv: T\nreconcile:\n  interval: 0s\n\
             state:\n  etcd:\n    endpoints: [\"etcd:2379\"]\n    leaseTtl: 1s\n",
        )
        .unwrap_err()
        .to_string();
        for field in [
            "api.listen",
            "api:",
            "reconcile.interval",
            "state.etcd.endpoints[0]",
            "state.etcd.leaseTtl",
        ] {
            assert!(err.contains(field), "{field} missing from:\n{err}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_files_directory() {
        let config = parse(
            "jobs: jobs.yaml\napi:\n  tokenFile: /run/secrets/token\n\
             state:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    candidate: c1\n",
        )
        .unwrap();
        assert_eq!(config.jobs.unwrap(), Path::new("/etc/twinsite/jobs.yaml"));
        assert_eq!(
            config.api.token,
            TokenSource::File(PathBuf::from("/run/secrets/token"))
        );
        let StateConfig::Etcd(etcd) = config.state else {
            panic!("expected etcd")
        };
        assert_eq!(etcd.candidate, "c1");
        assert_eq!(etcd.lease_ttl, Duration::from_secs(10));
    }

    #[test]
    fn local_flink_sites_must_be_policy_sites_with_usable_capacity() {
        let config = parse("localFlink:\n  python: venv/bin/python\n  sites: [dc-a]\n").unwrap();
        let local = config.local_flink.unwrap();
        assert_eq!(local.python, Path::new("/etc/twinsite/venv/bin/python"));
        assert_eq!(local.capacity.cpu_milli, 8000);
        let err = parse("localFlink:\n  python: p\n  sites: [dc-q]\n  memory: lots\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("localFlink.sites[0]") && err.contains("localFlink.memory"),
            "{err}"
        );
    }

    #[test]
    fn stream_jobs_must_name_a_kubernetes_site_of_the_policy_and_every_bad_field_is_named() {
        let err = parse(
            "streamJobs:\n  site: dc-z\n  namespace: Not_A_Label\n  statusInterval: 10ms\n  checkpointStatusInterval: soon\n",
        )
        .unwrap_err()
        .to_string();
        for field in [
            "streamJobs.site",
            "dc-z",
            "streamJobs.namespace",
            "streamJobs.statusInterval: must be at least 1s",
            "streamJobs.checkpointStatusInterval",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
        // The embedded default's sites are simulated: no cluster to hold objects.
        let err = parse("streamJobs: {site: dc-a}\n").unwrap_err().to_string();
        assert!(
            err.contains("streamJobs.site") && err.contains("kubernetes"),
            "{err}"
        );
        assert!(parse("streamJobs: {site: dc-a, colour: blue}\n").is_err());
    }

    #[test]
    fn stream_jobs_of_a_kubernetes_site_resolve_with_their_namespace_and_intervals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example-two-sites.yaml"),
            dir.path().join("policy.yaml"),
        )
        .unwrap();
        let text = format!(
            "{HEAD}policy: policy.yaml\nstreamJobs: {{site: dc-b, namespace: streaming, statusInterval: 30s}}\n"
        );
        let config = Config::parse("twinsite.yaml", &text, dir.path()).unwrap();
        let watch = config.stream_jobs.unwrap();
        assert_eq!(watch.scope.home.0, "dc-b");
        assert_eq!(watch.scope.namespace.as_deref(), Some("streaming"));
        assert_eq!(watch.status_interval, Duration::from_secs(30));
        assert_eq!(watch.checkpoint_status_interval, Duration::from_secs(120));
        assert!(parse("").unwrap().stream_jobs.is_none(), "off by default");
    }

    /// Parses `body` beside a copy of the daytime-lending example policy (a pool lending by
    /// usage in every site, both sites with a job namespace).
    fn parse_with_daytime_policy(body: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example-daytime-lending.yaml"),
            dir.path().join("policy.yaml"),
        )
        .unwrap();
        Config::parse(
            "twinsite.yaml",
            &format!("{HEAD}policy: policy.yaml\n{body}"),
            dir.path(),
        )
    }

    const BOTH_PROMETHEUS: &str =
        "nodeUsage:\n  prometheus: {dc-a: 'http://prom-a:9090', dc-b: 'http://prom-b:9090'}\n";

    #[test]
    fn node_usage_resolves_with_default_queries_and_timing() {
        let config = parse_with_daytime_policy(BOTH_PROMETHEUS).unwrap();
        let usage = config.node_usage.expect("a pool lends by usage");
        assert_eq!(usage.prometheus.len(), 2);
        assert_eq!(usage.node_label, "node");
        assert_eq!(usage.refresh, Duration::from_secs(60));
        assert_eq!(usage.max_age, Duration::from_secs(300));
        assert!(usage.queries.pods_cpu.contains(NodeUsageQueries::NAMESPACE));
        assert!(parse("").unwrap().node_usage.is_none());
    }

    #[test]
    fn a_pool_lending_by_usage_without_node_usage_is_refused_naming_the_pool() {
        let error = parse_with_daytime_policy("").unwrap_err().to_string();
        assert!(
            error.contains("nodeUsage") && error.contains("hdfs-offline"),
            "{error}"
        );
    }

    #[test]
    fn node_usage_the_policy_never_reads_is_refused() {
        let error = parse(BOTH_PROMETHEUS).unwrap_err().to_string();
        assert!(error.contains("no policy pool lends by usage"), "{error}");
    }

    #[test]
    fn bad_node_usage_fields_are_named() {
        let cases = [
            (
                "nodeUsage:\n  prometheus: {dc-a: 'http://prom-a:9090'}\n",
                "nodeUsage.prometheus.dc-b: missing",
            ),
            (
                "nodeUsage:\n  prometheus: {dc-a: 'ftp://a', dc-b: 'http://b'}\n",
                "nodeUsage.prometheus.dc-a: expected an http(s) URL",
            ),
            (
                "nodeUsage:\n  prometheus: {dc-a: 'http://a', dc-b: 'http://b', dc-c: 'http://c'}\n",
                "nodeUsage.prometheus.dc-c: the policy has no site",
            ),
            (
                &format!("{BOTH_PROMETHEUS}  refresh: 10m\n  maxAge: 5m\n"),
                "nodeUsage.maxAge: 5m is shorter than nodeUsage.refresh",
            ),
            (
                &format!("{BOTH_PROMETHEUS}  maxAge: 2h\n"),
                "nodeUsage.maxAge: at most 1h",
            ),
            (
                &format!("{BOTH_PROMETHEUS}  nodeLabel: 'kubernetes node'\n"),
                "nodeUsage.nodeLabel",
            ),
            (
                &format!("{BOTH_PROMETHEUS}  nodeCpuQuery: '  '\n"),
                "nodeUsage.nodeCpuQuery: must not be empty",
            ),
            (
                &format!("{BOTH_PROMETHEUS}  podsCpuQuery: '{}'\n", "x".repeat(5000)),
                "nodeUsage.podsCpuQuery: 5000 bytes is over the bound",
            ),
            (&format!("{BOTH_PROMETHEUS}  colour: blue\n"), "colour"),
        ];
        for (body, expected) in cases {
            let error = parse_with_daytime_policy(body).unwrap_err().to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn automatic_site_failover_is_off_on_the_embedded_store_with_real_sites_unless_turned_on() {
        assert!(Config::embedded_default().failover.automatic_site_failover);
        let local = "localFlink:\n  python: venv/bin/python\n  sites: [dc-a]\n";
        assert!(!parse(local).unwrap().failover.automatic_site_failover);
        let explicit = format!("{local}failover:\n  automaticSiteFailover: true\n");
        assert!(parse(&explicit).unwrap().failover.automatic_site_failover);
        let etcd = "state:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n";
        assert!(
            parse(&format!("{local}{etcd}"))
                .unwrap()
                .failover
                .automatic_site_failover
        );
    }

    #[test]
    fn an_agent_timing_slower_than_the_site_grace_is_refused_naming_the_fields() {
        const ETCD: &str = "state:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n";
        let slow =
            "agents:\n  sites: [dc-a]\n  leaseTtl: 20s\n  clockSkewMargin: 5s\n  stopWithin: 5s\n";
        let err = parse(&format!("{ETCD}{slow}")).unwrap_err().to_string();
        for field in [
            "agents.leaseTtl",
            "agents.clockSkewMargin",
            "agents.stopWithin",
            "failover.siteGrace",
            "30s",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
        let longer_grace = format!("{ETCD}{slow}  interval: 5s\nfailover:\n  siteGrace: 31s\n");
        assert!(parse(&longer_grace).is_ok());
        // Without guarded sites the timing binds nothing (a short grace for tests is fine).
        assert!(parse("failover:\n  siteGrace: 3s\n").is_ok());
        let short = format!("{ETCD}agents:\n  sites: [dc-a]\n  leaseTtl: 1s\n  interval: 500ms\n");
        let short = parse(&short).unwrap_err().to_string();
        assert!(
            short.contains("agents.leaseTtl") && short.contains("at least 2s"),
            "{short}"
        );
    }

    #[test]
    fn agent_sites_need_etcd_and_must_be_policy_sites() {
        let err = parse("agents:\n  sites: [dc-a, dc-q]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agents.sites[1]") && err.contains("dc-q"),
            "{err}"
        );
        assert!(err.contains("state.etcd"), "{err}");
        let ok = parse(
            "agents:\n  sites: [dc-a]\nstate:\n  etcd:\n    endpoints: [http://127.0.0.1:2379]\n",
        )
        .unwrap();
        assert_eq!(ok.agents.sites, [scheduler::model::SiteId("dc-a".into())]);
    }

    #[test]
    fn a_missing_policy_file_is_named() {
        let err = parse("policy: nowhere.yaml\n").unwrap_err().to_string();
        assert!(
            err.contains("policy") && err.contains("nowhere.yaml"),
            "{err}"
        );
    }

    #[test]
    fn simulated_site_files_must_name_a_policy_site() {
        let err = parse("simulation:\n  sites:\n    dc-z:\n      nodes: n.json\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("simulation.sites.dc-z"), "{err}");
    }

    fn private_file(path: &Path, contents: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_short_token_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        private_file(&path, "hunter2\n");
        let err = TokenSource::File(path).read().unwrap_err();
        assert!(err.contains("at least 16"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// Issue #13, finding 2: a token file its group or the world can read is refused,
    /// naming the file, its mode and the fix, without echoing the token.
    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_mode_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-token");
        private_file(&path, "0123456789abcdef0123\n");
        let source = TokenSource::File(path.clone());
        assert_eq!(
            source
                .read_as("api.readTokenFile", "api.readTokenEnv")
                .unwrap()
                .as_deref(),
            Some("0123456789abcdef0123")
        );
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = source
                .read_as("api.readTokenFile", "api.readTokenEnv")
                .unwrap_err();
            assert!(err.contains("api.readTokenFile"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(source.read().is_ok());
    }

    #[test]
    fn the_read_token_is_configured_like_the_admin_token_and_must_differ() {
        let config = parse(
            "api:\n  tokenFile: /run/secrets/token\n  readTokenEnv: TWINSITE_READ_TOKEN\n  metricsRequireToken: false\n",
        )
        .unwrap();
        assert_eq!(
            config.api.read_token,
            TokenSource::Env("TWINSITE_READ_TOKEN".into())
        );
        assert!(!config.api.metrics_require_token);
        assert!(parse("").unwrap().api.metrics_require_token);
        let err = parse("api:\n  readTokenFile: a\n  readTokenEnv: B\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("readTokenFile and readTokenEnv"), "{err}");
        let err = parse("api:\n  tokenFile: t\n  readTokenFile: t\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.readTokenFile"), "{err}");
    }

    #[test]
    fn an_unset_token_variable_is_named() {
        let err = TokenSource::Env("TWINSITE_TEST_NO_SUCH_VAR".into())
            .read()
            .unwrap_err();
        assert!(err.contains("TWINSITE_TEST_NO_SUCH_VAR"), "{err}");
    }
}
