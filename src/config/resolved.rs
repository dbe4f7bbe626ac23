//! The configuration the controller reads: paths absolute, durations parsed, the policy loaded.
//! Must never: hold an unchecked value: outside tests only `resolve` builds it, after its checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use scheduler::input::Policy;

use super::file::{GenerateSpec, SimulatedSiteFiles};

/// Site agents, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentsConfig {
    pub sites: Vec<scheduler::model::SiteId>,
    pub timing: failover::agent::AgentTiming,
    pub interval: Duration,
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
