//! The scenario format (YAML; documented in `failover/scenarios/README.md`) and its
//! validation. It must never run anything nor accept silently: a scenario becomes a checked
//! `Plan` (which `sim::run` plays) or an error naming the source, line, column and field.
//!
//! `format` reads the YAML shapes with their locations, `plan` checks sites, jobs and knobs,
//! `events` checks the timed events and turns them into `Action`s.

mod events;
mod format;
mod plan;

pub use events::Action;
pub use format::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use scheduler::limits::MAX_SCENARIO_SPAN;
use scheduler::model::{JobDemand, Resources, SiteId};
use serde::Deserialize;
use serde_saphyr::Spanned;

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
}
