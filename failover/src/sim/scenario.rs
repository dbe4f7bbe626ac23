//! The scenario format (YAML; documented in `failover/scenarios/README.md`) and its
//! validation. Every error names the source, the line and column, and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use scheduler::k8s::Quantity;
use scheduler::limits::{
    MAX_SCENARIO_JOBS, MAX_SCENARIO_NODES_PER_SITE, MAX_SCENARIO_SPAN, MAX_SCENARIO_STEPS,
    MAX_SCENARIO_WORK, MAX_TASK_MANAGERS_PER_JOB, MIN_CHECKPOINT_INTERVAL,
};
use scheduler::model::{JobDemand, JobId, Priority, Resources, SiteConstraint, SiteId, TenantId};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::operation::MoveMode;
use crate::types::{FailoverMode, SiteMoves};

/// A bad scenario: where (source, line, column, field) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// Where the text came from, usually the file name.
    pub file: String,
    /// 1-based; `None` when no single place is at fault.
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// Field path, e.g. `events[2].node-lost.node` or `jobs[0].priority`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A duration written as people write them: `500ms`, `60s`, `5m`, `1m30s`, `1h`; a bare
/// number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"60s\", \"5m\" or \"1m30s\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("a duration must not be negative, found {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Duration::try_from_secs_f64(v)
                    .map(Dur)
                    .map_err(|_| E::custom(format!("invalid duration {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                humantime::parse_duration(v.trim()).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {v:?} ({e}); write e.g. \"500ms\", \"60s\", \"5m\" or \"1m30s\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes quantity written as a string or a number (`16`, `"500m"`, `64Gi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qty(pub String);

impl<'de> Deserialize<'de> for Qty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Qty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity such as 2, \"500m\" or \"4Gi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Qty, E> {
                Ok(Qty(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Qty, E> {
                Ok(Qty(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Qty, E> {
                Ok(Qty(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Qty, E> {
                Ok(Qty(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `key:` with no value, `key: true` or `key: now` (the plain form), or `key: {options}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag<T> {
    Plain,
    With(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Flag<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Flag<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("nothing, `true`, `now`, or a mapping of options")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Flag<T>, E> {
                Ok(Flag::Plain)
            }
            fn visit_none<E: de::Error>(self) -> Result<Flag<T>, E> {
                Ok(Flag::Plain)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag<T>, E> {
                if v {
                    Ok(Flag::Plain)
                } else {
                    Err(E::custom("`false` means nothing here: remove the event"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag<T>, E> {
                match v {
                    "" | "now" | "true" => Ok(Flag::Plain),
                    _ => Err(E::custom(format!(
                        "expected nothing, `now` or a mapping of options, found {v:?}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Flag<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Flag::With)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A node, as `a-3` or `{site: a, node: a-3}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub site: Option<String>,
    pub node: String,
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            site: Option<String>,
            node: String,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a node name, or {site: SITE, node: NODE}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeRef, E> {
                Ok(NodeRef {
                    site: None,
                    node: v.to_string(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NodeRef, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(NodeRef {
                    site: f.site,
                    node: f.node,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One site: `nodes` identical nodes named `<site>-1` … `<site>-<nodes>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SiteSpec {
    pub nodes: u32,
    /// Allocatable CPU per node (default 16).
    #[serde(default)]
    pub cpu: Option<Qty>,
    /// Allocatable memory per node (default 64Gi).
    #[serde(default)]
    pub memory: Option<Qty>,
    /// Pods per node (default 110).
    #[serde(default)]
    pub pods: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PodSize {
    #[serde(default)]
    pub cpu: Option<Qty>,
    #[serde(default)]
    pub memory: Option<Qty>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobSpecYaml {
    /// `namespace/name`.
    pub id: String,
    /// The site it runs in at the start (its preferred site).
    pub site: String,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// `restore-required` (default) or `fresh-start-allowed`.
    #[serde(default)]
    pub failover: Option<FailoverMode>,
    /// `automatic` (default) or `operator-only` (a StreamJob's `failover.mode: manual`).
    #[serde(default)]
    pub site_moves: Option<SiteMoves>,
    /// Default 60s.
    #[serde(default)]
    pub checkpoint_interval: Option<Dur>,
    /// Whether its checkpoints are replicated to the other site (default true).
    #[serde(default)]
    pub replicate: Option<bool>,
    /// Default 1.
    #[serde(default)]
    pub task_managers: Option<u32>,
    /// Default cpu 1, memory 2Gi.
    #[serde(default)]
    pub job_manager: Option<PodSize>,
    /// Default cpu 2, memory 4Gi.
    #[serde(default)]
    pub task_manager: Option<PodSize>,
    /// Pins the pods at the start: the JobManager's node, then one per TaskManager. Without
    /// it the scheduler places the job in its site.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Sites the job may run in (default: both).
    #[serde(default)]
    pub allowed_sites: Option<Vec<String>>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Engine settings; unset ones keep the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EngineKnobs {
    pub node_grace: Option<Dur>,
    pub site_grace: Option<Dur>,
    pub site_suspect_after: Option<Dur>,
    pub task_manager_recovery_bound: Option<Dur>,
    pub crash_loop_restarts: Option<u32>,
    pub relaunches_before_other_site: Option<u32>,
    pub max_in_flight: Option<usize>,
    pub launch_rate: Option<u32>,
    pub launch_burst: Option<u32>,
    pub fence_retry: Option<Dur>,
    pub max_launches_per_move: Option<u32>,
    pub auto_failback: Option<bool>,
}

/// How the fake world answers; unset ones keep [`super::WorldConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorldKnobs {
    pub launch_time: Option<Dur>,
    pub fence_time: Option<Dur>,
    pub savepoint_time: Option<Dur>,
    pub replication_delay: Option<Dur>,
    pub restart_delay: Option<Dur>,
    pub max_restart_delay: Option<Dur>,
    /// How long after a node's last heartbeat its TaskManager pods are scheduled on
    /// another node (the pods' `tolerationSeconds`).
    pub task_manager_eviction: Option<Dur>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PartitionSpec {
    /// The site the controller can no longer reach.
    pub controller_from: String,
    /// Whether the other site (the peer observer) still hears it (default true).
    #[serde(default)]
    pub peer_sees: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealSpec {
    /// Only this site's partition (default: every partition).
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CrashSpec {
    /// Die part-way through the next command list longer than this, after this many commands.
    pub after_commands: Option<usize>,
    /// Die right after issuing this many more relaunches (the rest of that list is lost).
    pub after_relaunches: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MoveSpec {
    pub from: String,
    /// Default: the other site.
    #[serde(default)]
    pub to: Option<String>,
    pub mode: MoveMode,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OpsSpec {
    Failover(MoveSpec),
    Failback(MoveSpec),
}

/// One timed event: `at` and exactly one of the other keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventSpec {
    pub at: Dur,
    #[serde(default)]
    pub node_lost: Option<NodeRef>,
    #[serde(default)]
    pub node_returns: Option<NodeRef>,
    #[serde(default)]
    pub site_lost: Option<String>,
    #[serde(default)]
    pub site_returns: Option<String>,
    #[serde(default)]
    pub partition: Option<PartitionSpec>,
    #[serde(default, deserialize_with = "present")]
    pub heal: Option<Flag<HealSpec>>,
    #[serde(default)]
    pub quorum: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub leader_crash: Option<Flag<CrashSpec>>,
    #[serde(default)]
    pub job_fails: Option<String>,
    #[serde(default)]
    pub replication_delay: Option<Dur>,
    #[serde(default)]
    pub ops: Option<OpsSpec>,
    #[serde(default)]
    pub cancel: Option<u64>,
}

/// A key written with no value still counts as present.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Seeds the checkpoint phases of the jobs (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
    pub duration: Dur,
    /// Virtual time per step (default 1s).
    #[serde(default)]
    pub step: Option<Dur>,
    /// Whether the controller holds quorum with the witness at the start (default true).
    #[serde(default)]
    pub quorum: Option<bool>,
    pub sites: BTreeMap<String, SiteSpec>,
    pub jobs: Vec<Spanned<JobSpecYaml>>,
    #[serde(default)]
    pub engine: EngineKnobs,
    #[serde(default)]
    pub world: WorldKnobs,
    #[serde(default)]
    pub events: Vec<Spanned<EventSpec>>,
    /// Filled in by [`Scenario::parse`]: where the text came from.
    #[serde(skip)]
    pub source: String,
}

/// What one event does, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    NodeLost { site: SiteId, node: String },
    NodeReturns { site: SiteId, node: String },
    SiteLost(SiteId),
    SiteReturns(SiteId),
    Partition { site: SiteId, peer_sees: bool },
    Heal(Option<SiteId>),
    Quorum(bool),
    LeaderCrash(Option<super::world::CrashTrigger>),
    JobFails(JobId),
    ReplicationDelay(Duration),
    Ops(crate::engine::OpsRequest),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::world::CrashTrigger as C;
        use crate::engine::OpsRequest as R;
        match self {
            Action::NodeLost { site, node } => write!(f, "node-lost {node} (site {site})"),
            Action::NodeReturns { site, node } => write!(f, "node-returns {node} (site {site})"),
            Action::SiteLost(s) => write!(f, "site-lost {s}"),
            Action::SiteReturns(s) => write!(f, "site-returns {s}"),
            Action::Partition { site, peer_sees } => write!(
                f,
                "partition: the controller cannot reach site {site}; the peer {} it",
                if *peer_sees {
                    "still hears"
                } else {
                    "does not hear"
                }
            ),
            Action::Heal(None) => write!(f, "heal: every partition ends"),
            Action::Heal(Some(s)) => write!(f, "heal: the partition of site {s} ends"),
            Action::Quorum(q) => write!(
                f,
                "quorum with the witness {}",
                if *q { "held" } else { "lost" }
            ),
            Action::LeaderCrash(None) => write!(f, "leader-crash now"),
            Action::LeaderCrash(Some(C::AfterCommands(n))) => {
                write!(f, "leader-crash armed: after {n} commands of the next list")
            }
            Action::LeaderCrash(Some(C::AfterRelaunches(n))) => {
                write!(f, "leader-crash armed: right after {n} more relaunches")
            }
            Action::JobFails(j) => write!(f, "job-fails {j}"),
            Action::ReplicationDelay(d) => {
                write!(f, "replication-delay {}", super::report::fmt_duration(*d))
            }
            Action::Ops(R::Failover {
                from,
                to,
                mode,
                dry_run,
            }) => write!(
                f,
                "ops: failover {from} -> {to} ({mode:?}{})",
                if *dry_run { ", dry run" } else { "" }
            ),
            Action::Ops(R::Failback {
                from,
                to,
                mode,
                dry_run,
            }) => write!(
                f,
                "ops: failback {from} -> {to} ({mode:?}{})",
                if *dry_run { ", dry run" } else { "" }
            ),
            Action::Ops(R::Cancel { op }) => write!(f, "ops: cancel operation {op}"),
        }
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub demand: JobDemand,
    pub mode: FailoverMode,
    pub site_moves: SiteMoves,
    pub checkpoint_interval: Duration,
    pub replicate: bool,
    /// JobManager node, then TaskManager nodes; empty: the scheduler places it.
    pub nodes: Vec<String>,
    pub line: Option<u64>,
}

/// A validated scenario, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub source: String,
    pub seed: u64,
    pub duration: Duration,
    pub step: Duration,
    pub quorum: bool,
    /// Sites in name order, each with its nodes and their allocatable capacity.
    pub sites: Vec<(SiteId, Vec<(String, Resources)>)>,
    pub jobs: Vec<JobPlan>,
    pub engine: crate::engine::EngineConfig,
    pub world: super::world::WorldConfig,
    /// In time order (file order among equal times).
    pub events: Vec<(Duration, Action)>,
}

/// What events may name: the sites, their nodes (site, node), the job ids.
struct Known<'a> {
    sites: Vec<&'a SiteId>,
    nodes: BTreeSet<(&'a str, &'a str)>,
    jobs: &'a BTreeSet<String>,
}

struct Checker<'a> {
    source: &'a str,
}

impl Checker<'_> {
    fn err(
        &self,
        at: Option<&serde_saphyr::Location>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        let known = at.filter(|l| l.line() > 0);
        ScenarioError {
            file: self.source.to_string(),
            line: known.map(|l| l.line()),
            column: known.map(|l| l.column()),
            field: Some(field.into()).filter(|f: &String| !f.is_empty()),
            message: message.into(),
        }
    }
}

fn quantity(q: &Option<Qty>, default: &str, milli: bool) -> Result<i64, String> {
    let text = q.as_ref().map_or(default, |q| q.0.as_str());
    let parsed = Quantity::new(text);
    let v = if milli {
        parsed.milli_value()
    } else {
        parsed.value()
    }
    .map_err(|e| format!("{text:?}: {e}"))?;
    if v <= 0 {
        return Err(format!("must be positive, found {text:?}"));
    }
    Ok(v)
}

impl Scenario {
    /// Parses a scenario from YAML; `source` names it in errors (usually the file name).
    pub fn parse(source: &str, yaml: &str) -> Result<Scenario, ScenarioError> {
        let mut path = None;
        let parsed = serde_saphyr::with_deserializer_from_str(yaml, |de| {
            serde_path_to_error::deserialize::<_, Scenario>(de).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        });
        match parsed {
            Ok(mut s) => {
                s.source = source.to_string();
                Ok(s)
            }
            Err(e) => {
                let at = e.location();
                let known = at.filter(|l| l.line() > 0);
                let message = e.without_snippet().to_string();
                // The message may carry its own location; ours is in front.
                let message = strip_location(&message);
                Err(ScenarioError {
                    file: source.to_string(),
                    line: known.map(|l| l.line()),
                    column: known.map(|l| l.column()),
                    field: path.map(|p| tidy_path(&p)).filter(|p| !p.is_empty()),
                    message,
                })
            }
        }
    }

    /// Checks every reference and value, and resolves defaults.
    pub fn plan(&self) -> Result<Plan, ScenarioError> {
        let c = Checker {
            source: &self.source,
        };
        let duration = self.duration.0;
        if duration.is_zero() {
            return Err(c.err(None, "duration", "must be longer than zero"));
        }
        within_span(&c, None, "duration", duration)?;
        self.check_knob_spans(&c)?;
        let step = self.step.map_or(Duration::from_secs(1), |s| s.0);
        if step.is_zero() || step > duration {
            return Err(c.err(
                None,
                "step",
                format!(
                    "must be longer than zero and at most the duration ({})",
                    super::report::fmt_duration(duration)
                ),
            ));
        }
        let steps = duration.as_nanos().div_ceil(step.as_nanos());
        if steps > u128::from(MAX_SCENARIO_STEPS) {
            return Err(c.err(
                None,
                "step",
                format!(
                    "{steps} steps, more than {MAX_SCENARIO_STEPS}: make the step longer or the duration shorter"
                ),
            ));
        }
        if self.jobs.len() > MAX_SCENARIO_JOBS {
            return Err(c.err(
                None,
                "jobs",
                format!(
                    "{} jobs, more than the {MAX_SCENARIO_JOBS} a scenario may have",
                    self.jobs.len()
                ),
            ));
        }
        if self.sites.len() != 2 {
            return Err(c.err(
                None,
                "sites",
                format!("expected exactly two sites, found {}", self.sites.len()),
            ));
        }
        let mut sites = Vec::new();
        for (name, spec) in &self.sites {
            let field = format!("sites.{name}");
            if name.is_empty() || name.contains(['/', ' ']) {
                return Err(c.err(
                    None,
                    field,
                    "a site name must not be empty nor contain '/' or spaces",
                ));
            }
            if spec.nodes == 0 || spec.nodes > MAX_SCENARIO_NODES_PER_SITE {
                return Err(c.err(
                    None,
                    format!("{field}.nodes"),
                    format!(
                        "must be between 1 and {MAX_SCENARIO_NODES_PER_SITE}, found {}",
                        spec.nodes
                    ),
                ));
            }
            let cpu = quantity(&spec.cpu, "16", true)
                .map_err(|m| c.err(None, format!("{field}.cpu"), m))?;
            let memory = quantity(&spec.memory, "64Gi", false)
                .map_err(|m| c.err(None, format!("{field}.memory"), m))?;
            let pods = i64::from(spec.pods.unwrap_or(110));
            let nodes: Vec<(String, Resources)> = (1..=spec.nodes)
                .map(|i| (format!("{name}-{i}"), Resources::new(cpu, memory, pods)))
                .collect();
            sites.push((SiteId(name.clone()), nodes));
        }
        let site_names: Vec<String> = self.sites.keys().cloned().collect();
        let site_of = |name: &str| site_names.iter().any(|s| s == name);
        let node_names: BTreeSet<(&str, &str)> = sites
            .iter()
            .flat_map(|(s, nodes)| nodes.iter().map(move |(n, _)| (s.0.as_str(), n.as_str())))
            .collect();
        let has_node = |site: &str, node: &str| node_names.contains(&(site, node));
        let mut jobs = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, spanned) in self.jobs.iter().enumerate() {
            let j = &spanned.value;
            let at = Some(&spanned.referenced);
            let field = |f: &str| format!("jobs[{i}].{f}");
            let valid_id =
                j.id.split_once('/')
                    .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
            if !valid_id {
                return Err(c.err(at, field("id"), format!("{:?} is not namespace/name", j.id)));
            }
            if !ids.insert(j.id.clone()) {
                return Err(c.err(at, field("id"), format!("job {} is defined twice", j.id)));
            }
            if !site_of(&j.site) {
                return Err(c.err(
                    at,
                    field("site"),
                    format!(
                        "unknown site {:?}; the sites are {}",
                        j.site,
                        site_names.join(", ")
                    ),
                ));
            }
            let task_managers = j.task_managers.unwrap_or(1);
            if task_managers == 0 || task_managers > MAX_TASK_MANAGERS_PER_JOB {
                return Err(c.err(
                    at,
                    field("task-managers"),
                    format!(
                        "must be between 1 and {MAX_TASK_MANAGERS_PER_JOB}, found {task_managers}"
                    ),
                ));
            }
            let size = |p: &Option<PodSize>, f: &str, cpu: &str, mem: &str| {
                let (cq, mq) = p
                    .as_ref()
                    .map_or((None, None), |p| (p.cpu.clone(), p.memory.clone()));
                let cpu = quantity(&cq, cpu, true)
                    .map_err(|m| c.err(at, field(&format!("{f}.cpu")), m))?;
                let mem = quantity(&mq, mem, false)
                    .map_err(|m| c.err(at, field(&format!("{f}.memory")), m))?;
                Ok::<_, ScenarioError>(Resources::new(cpu, mem, 1))
            };
            let job_manager = size(&j.job_manager, "job-manager", "1", "2Gi")?;
            let task_manager = size(&j.task_manager, "task-manager", "2", "4Gi")?;
            let interval = j
                .checkpoint_interval
                .map_or(Duration::from_secs(60), |d| d.0);
            within_span(&c, at, field("checkpoint-interval"), interval)?;
            if interval < MIN_CHECKPOINT_INTERVAL {
                return Err(c.err(
                    at,
                    field("checkpoint-interval"),
                    format!(
                        "must be at least {}ms (Flink's shortest checkpoint interval), found {}",
                        MIN_CHECKPOINT_INTERVAL.as_millis(),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            let nodes = j.nodes.clone().unwrap_or_default();
            if !nodes.is_empty() {
                if nodes.len() != 1 + task_managers as usize {
                    return Err(c.err(
                        at,
                        field("nodes"),
                        format!(
                            "lists {} nodes; expected {} (the JobManager's, then one per TaskManager)",
                            nodes.len(),
                            1 + task_managers
                        ),
                    ));
                }
                if let Some(n) = nodes.iter().find(|n| !has_node(&j.site, n)) {
                    return Err(c.err(
                        at,
                        field("nodes"),
                        format!("node {n:?} is not a node of site {}", j.site),
                    ));
                }
            }
            let allowed: Vec<SiteId> = match &j.allowed_sites {
                None => Vec::new(),
                Some(list) => {
                    if let Some(s) = list.iter().find(|s| !site_of(s)) {
                        return Err(c.err(
                            at,
                            field("allowed-sites"),
                            format!("unknown site {s:?}"),
                        ));
                    }
                    if !list.contains(&j.site) {
                        return Err(c.err(
                            at,
                            field("allowed-sites"),
                            format!("must include the job's own site {}", j.site),
                        ));
                    }
                    list.iter().map(|s| SiteId(s.clone())).collect()
                }
            };
            let (ns, name) = j.id.split_once('/').unwrap_or(("", ""));
            jobs.push(JobPlan {
                demand: JobDemand {
                    id: JobId::new(ns, name),
                    tenant: TenantId(j.tenant.clone().unwrap_or_else(|| ns.to_string())),
                    priority: j.priority.unwrap_or(Priority::Normal),
                    job_manager,
                    task_manager,
                    task_managers,
                    sites: SiteConstraint {
                        preferred: Some(SiteId(j.site.clone())),
                        allowed,
                    },
                    node_selector: BTreeMap::new(),
                    node_affinity: None,
                    tolerations: Vec::new(),
                    allow_offline: false,
                },
                mode: j.failover.unwrap_or_default(),
                site_moves: j.site_moves.unwrap_or_default(),
                checkpoint_interval: interval,
                replicate: j.replicate.unwrap_or(true),
                nodes,
                line: Some(spanned.referenced.line()).filter(|l| *l > 0),
            });
        }
        self.check_work(&c, duration, steps, &jobs)?;
        let mut engine =
            crate::engine::EngineConfig::new(sites.iter().map(|(s, _)| s.clone()).collect());
        let k = &self.engine;
        let set = |v: Option<Dur>, d: &mut Duration| {
            if let Some(v) = v {
                *d = v.0;
            }
        };
        set(k.node_grace, &mut engine.node_grace);
        set(k.site_grace, &mut engine.site.grace);
        set(k.site_suspect_after, &mut engine.site.suspect_after);
        set(
            k.task_manager_recovery_bound,
            &mut engine.task_manager_recovery_bound,
        );
        set(k.fence_retry, &mut engine.fence_retry);
        if let Some(v) = k.crash_loop_restarts {
            engine.crash_loop_restarts = v;
        }
        if let Some(v) = k.relaunches_before_other_site {
            engine.relaunches_before_other_site = v;
        }
        if let Some(v) = k.max_in_flight {
            if v == 0 {
                return Err(c.err(None, "engine.max-in-flight", "must be at least 1"));
            }
            engine.max_in_flight = v;
        }
        // Zero would leave an operation's later jobs waiting forever.
        if let Some(v) = k.launch_rate {
            if v == 0 {
                return Err(c.err(None, "engine.launch-rate", "must be at least 1 per second"));
            }
            engine.launch_rate = v;
        }
        if let Some(v) = k.launch_burst {
            if v == 0 {
                return Err(c.err(None, "engine.launch-burst", "must be at least 1"));
            }
            engine.launch_burst = v;
        }
        if let Some(v) = k.max_launches_per_move {
            engine.max_launches_per_move = v;
        }
        if let Some(v) = k.auto_failback {
            engine.auto_failback = v;
        }
        if engine.site.suspect_after > engine.site.grace {
            return Err(c.err(
                None,
                "engine.site-suspect-after",
                "must not be longer than site-grace",
            ));
        }
        let mut world = super::world::WorldConfig::default();
        let w = &self.world;
        set(w.launch_time, &mut world.launch_time);
        set(w.fence_time, &mut world.fence_time);
        set(w.savepoint_time, &mut world.savepoint_time);
        set(w.replication_delay, &mut world.replication_delay);
        set(w.restart_delay, &mut world.restart_delay);
        set(w.max_restart_delay, &mut world.max_restart_delay);
        set(w.task_manager_eviction, &mut world.task_manager_eviction);
        let known = Known {
            sites: sites.iter().map(|(s, _)| s).collect(),
            nodes: node_names,
            jobs: &ids,
        };
        let mut events = Vec::new();
        for (i, spanned) in self.events.iter().enumerate() {
            let at = Some(&spanned.referenced);
            let action = self.action(&c, i, at, &spanned.value, &known)?;
            if spanned.value.at.0 > duration {
                return Err(c.err(
                    at,
                    format!("events[{i}].at"),
                    format!(
                        "{} is after the end of the scenario ({})",
                        super::report::fmt_duration(spanned.value.at.0),
                        super::report::fmt_duration(duration)
                    ),
                ));
            }
            events.push((spanned.value.at.0, action));
        }
        events.sort_by_key(|(at, _)| *at);
        Ok(Plan {
            name: self.name.clone().unwrap_or_else(|| {
                self.source
                    .rsplit('/')
                    .next()
                    .unwrap_or("scenario")
                    .trim_end_matches(".yaml")
                    .to_string()
            }),
            source: self.source.clone(),
            seed: self.seed.unwrap_or(1),
            duration,
            step,
            quorum: self.quorum.unwrap_or(true),
            sites,
            jobs,
            engine,
            world,
            events,
        })
    }

    /// Every duration among the engine and world settings is within [`MAX_SCENARIO_SPAN`].
    fn check_knob_spans(&self, c: &Checker) -> Result<(), ScenarioError> {
        let (k, w) = (&self.engine, &self.world);
        let knobs = [
            ("engine.node-grace", k.node_grace),
            ("engine.site-grace", k.site_grace),
            ("engine.site-suspect-after", k.site_suspect_after),
            (
                "engine.task-manager-recovery-bound",
                k.task_manager_recovery_bound,
            ),
            ("engine.fence-retry", k.fence_retry),
            ("world.launch-time", w.launch_time),
            ("world.fence-time", w.fence_time),
            ("world.savepoint-time", w.savepoint_time),
            ("world.replication-delay", w.replication_delay),
            ("world.restart-delay", w.restart_delay),
            ("world.max-restart-delay", w.max_restart_delay),
            ("world.task-manager-eviction", w.task_manager_eviction),
        ];
        for (field, value) in knobs {
            if let Some(value) = value {
                within_span(c, None, field, value.0)?;
            }
        }
        Ok(())
    }

    /// Refuses a scenario whose run would do more than [`MAX_SCENARIO_WORK`] units of work:
    /// every step visits every job, and every checkpoint a job takes over the duration is one
    /// more. The step count alone does not bound it: a 1 ms checkpoint interval over a day is
    /// 86 million checkpoints of one job.
    fn check_work(
        &self,
        c: &Checker,
        duration: Duration,
        steps: u128,
        jobs: &[JobPlan],
    ) -> Result<(), ScenarioError> {
        let visits = steps.saturating_mul(jobs.len() as u128);
        let checkpoints: u128 = jobs
            .iter()
            .map(|j| {
                duration
                    .as_nanos()
                    .div_ceil(j.checkpoint_interval.as_nanos().max(1))
            })
            .sum();
        let work = visits.saturating_add(checkpoints);
        if work <= u128::from(MAX_SCENARIO_WORK) {
            return Ok(());
        }
        let what = format!(
            "the run would do {work} units of work ({steps} steps × {} jobs + {checkpoints} checkpoints over {}), more than {MAX_SCENARIO_WORK}",
            jobs.len(),
            super::report::fmt_duration(duration)
        );
        if checkpoints >= visits {
            // Name the job whose checkpoints cost most: the shortest interval.
            let (i, job) = jobs
                .iter()
                .enumerate()
                .min_by_key(|(_, j)| j.checkpoint_interval)
                .ok_or_else(|| c.err(None, "duration", what.clone()))?;
            let at = self.jobs.get(i).map(|s| &s.referenced);
            return Err(c.err(
                at,
                format!("jobs[{i}].checkpoint-interval"),
                format!(
                    "{what}: make the checkpoint interval ({}) longer or the duration shorter",
                    humantime::format_duration(job.checkpoint_interval)
                ),
            ));
        }
        Err(c.err(
            None,
            "step",
            format!("{what}: make the step longer, the duration shorter or the jobs fewer"),
        ))
    }

    fn action(
        &self,
        c: &Checker,
        i: usize,
        at: Option<&serde_saphyr::Location>,
        e: &EventSpec,
        known: &Known,
    ) -> Result<Action, ScenarioError> {
        let (sites, node_names, jobs) = (&known.sites, &known.nodes, known.jobs);
        use super::world::CrashTrigger;
        use crate::engine::OpsRequest;
        let field = |f: &str| format!("events[{i}].{f}");
        let site = |f: &str, name: &str| {
            if sites.iter().any(|s| s.0 == name) {
                Ok(SiteId(name.to_string()))
            } else {
                Err(c.err(
                    at,
                    field(f),
                    format!(
                        "unknown site {name:?}; the sites are {}",
                        sites
                            .iter()
                            .map(|s| s.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        let node = |f: &str, r: &NodeRef| {
            let found = sites.iter().find(|s| {
                r.site.as_ref().is_none_or(|want| &s.0 == want)
                    && node_names.contains(&(s.0.as_str(), r.node.as_str()))
            });
            match found {
                Some(s) => Ok(((*s).clone(), r.node.clone())),
                None => Err(c.err(
                    at,
                    field(f),
                    match &r.site {
                        Some(s) => format!("node {:?} is not a node of site {s:?}", r.node),
                        None => format!("unknown node {:?}", r.node),
                    },
                )),
            }
        };
        let other = |from: &SiteId| {
            sites
                .iter()
                .find(|s| **s != from)
                .map_or_else(|| from.clone(), |s| (*s).clone())
        };
        let mut found: Vec<(&str, Action)> = Vec::new();
        if let Some(r) = &e.node_lost {
            let (site, node) = node("node-lost", r)?;
            found.push(("node-lost", Action::NodeLost { site, node }));
        }
        if let Some(r) = &e.node_returns {
            let (site, node) = node("node-returns", r)?;
            found.push(("node-returns", Action::NodeReturns { site, node }));
        }
        if let Some(s) = &e.site_lost {
            found.push(("site-lost", Action::SiteLost(site("site-lost", s)?)));
        }
        if let Some(s) = &e.site_returns {
            found.push((
                "site-returns",
                Action::SiteReturns(site("site-returns", s)?),
            ));
        }
        if let Some(p) = &e.partition {
            found.push((
                "partition",
                Action::Partition {
                    site: site("partition.controller-from", &p.controller_from)?,
                    peer_sees: p.peer_sees.unwrap_or(true),
                },
            ));
        }
        if let Some(h) = &e.heal {
            let which = match h {
                Flag::With(HealSpec { site: Some(s) }) => Some(site("heal.site", s)?),
                _ => None,
            };
            found.push(("heal", Action::Heal(which)));
        }
        if let Some(q) = e.quorum {
            found.push(("quorum", Action::Quorum(q)));
        }
        if let Some(crash) = &e.leader_crash {
            let trigger = match crash {
                Flag::Plain => None,
                Flag::With(CrashSpec {
                    after_commands: Some(n),
                    after_relaunches: None,
                }) => Some(CrashTrigger::AfterCommands(*n)),
                Flag::With(CrashSpec {
                    after_commands: None,
                    after_relaunches: Some(n),
                }) if *n > 0 => Some(CrashTrigger::AfterRelaunches(*n)),
                Flag::With(CrashSpec {
                    after_commands: None,
                    after_relaunches: None,
                }) => None,
                Flag::With(_) => {
                    return Err(c.err(
                        at,
                        field("leader-crash"),
                        "give at most one of after-commands and after-relaunches (at least 1)",
                    ));
                }
            };
            found.push(("leader-crash", Action::LeaderCrash(trigger)));
        }
        if let Some(j) = &e.job_fails {
            if !jobs.contains(j) {
                return Err(c.err(at, field("job-fails"), format!("unknown job {j:?}")));
            }
            let (ns, name) = j.split_once('/').unwrap_or(("", ""));
            found.push(("job-fails", Action::JobFails(JobId::new(ns, name))));
        }
        if let Some(d) = e.replication_delay {
            within_span(c, at, field("replication-delay"), d.0)?;
            found.push(("replication-delay", Action::ReplicationDelay(d.0)));
        }
        if let Some(ops) = &e.ops {
            let (m, failback, f) = match ops {
                OpsSpec::Failover(m) => (m, false, "ops.failover"),
                OpsSpec::Failback(m) => (m, true, "ops.failback"),
            };
            let from = site(&format!("{f}.from"), &m.from)?;
            let to = match &m.to {
                Some(t) => site(&format!("{f}.to"), t)?,
                None => other(&from),
            };
            let request = if failback {
                OpsRequest::Failback {
                    from,
                    to,
                    mode: m.mode,
                    dry_run: m.dry_run,
                }
            } else {
                OpsRequest::Failover {
                    from,
                    to,
                    mode: m.mode,
                    dry_run: m.dry_run,
                }
            };
            found.push(("ops", Action::Ops(request)));
        }
        if let Some(op) = e.cancel {
            found.push(("cancel", Action::Ops(OpsRequest::Cancel { op })));
        }
        match found.len() {
            1 => Ok(found.remove(0).1),
            0 => Err(c.err(
                at,
                format!("events[{i}]"),
                "no event given: add one of node-lost, node-returns, site-lost, site-returns, partition, heal, quorum, leader-crash, job-fails, replication-delay, ops, cancel",
            )),
            _ => Err(c.err(
                at,
                format!("events[{i}]"),
                format!(
                    "one event per entry, found {}: split them into entries with the same `at`",
                    found
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )),
        }
    }
}

/// `Err` naming `field` when `value` is longer than [`MAX_SCENARIO_SPAN`].
fn within_span(
    c: &Checker,
    at: Option<&serde_saphyr::Location>,
    field: impl Into<String>,
    value: Duration,
) -> Result<(), ScenarioError> {
    if value <= MAX_SCENARIO_SPAN {
        return Ok(());
    }
    Err(c.err(
        at,
        field,
        format!(
            "{} is longer than a scenario may be ({} days)",
            humantime::format_duration(value),
            MAX_SCENARIO_SPAN.as_secs() / 86_400
        ),
    ))
}

/// A serde path as a person reads it: without the `value` of the located wrappers, nor a
/// trailing `?` (an unknown position inside a mapping).
fn tidy_path(path: &str) -> String {
    let p = path.replace("].value", "]");
    let p = p.trim_end_matches(".?").trim_end_matches('?');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Drops a trailing " at line N column M" the parser may append (the caller prints its own).
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].trim_end_matches(',').to_string(),
        None => first.to_string(),
    }
}
