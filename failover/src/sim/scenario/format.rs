//! The scenario file's YAML shapes (durations, sizes, sites, jobs, knobs, events) with locations.
//! It must never judge what it reads: `plan` and `events` check values and name the field.

use std::fmt;
use std::time::Duration;

use scheduler::k8s::Quantity;
use scheduler::model::Priority;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::operation::MoveMode;
use crate::types::{FailoverMode, SiteMoves};

/// A duration written as people write them: `500ms`, `60s`, `5m`, `1m30s`, `1h`; a bare
/// number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

/// A Kubernetes quantity written as a string or a number (`16`, `"500m"`, `64Gi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qty(pub String);

/// `key:` with no value, `key: true` or `key: now` (the plain form), or `key: {options}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag<T> {
    Plain,
    With(T),
}

/// A node, as `a-3` or `{site: a, node: a-3}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub site: Option<String>,
    pub node: String,
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
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

pub(super) fn quantity(q: &Option<Qty>, default: &str, milli: bool) -> Result<i64, String> {
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
