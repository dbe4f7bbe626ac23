//! The configuration file as users write it: its serde shapes, their defaults and field docs.
//! Must never: check or interpret a value beyond its type; `resolve` and the section modules do.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
