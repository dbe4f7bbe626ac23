//! What the controller records about a job in its `JobRecord.status`: phase, site, generation
//! and why, what the next launch restores from, and where the job's jar is published. Part
//! of the store's schema, so it lives with the records; the controller writes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hdfs_sync::jars::JarRef;
use scheduler::model::SiteId;
use serde::{Deserialize, Serialize};

/// Where a job is in its life, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobPhase {
    /// Accepted, not placed yet (no room, no reachable site, or waiting for the next pass).
    Pending,
    /// Placed and launched; the site has not reported it running yet.
    Launching,
    Running,
    /// Flink's own restart strategy is at work.
    Restarting,
    /// Relaunches in its site ran out, or the spec cannot be launched; needs a person.
    Failed,
    Finished,
    /// The job's site is unreachable; the job may still run there.
    Unknown,
}

impl JobPhase {
    pub const ALL: [JobPhase; 7] = [
        JobPhase::Pending,
        JobPhase::Launching,
        JobPhase::Running,
        JobPhase::Restarting,
        JobPhase::Failed,
        JobPhase::Finished,
        JobPhase::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "pending",
            JobPhase::Launching => "launching",
            JobPhase::Running => "running",
            JobPhase::Restarting => "restarting",
            JobPhase::Failed => "failed",
            JobPhase::Finished => "finished",
            JobPhase::Unknown => "unknown",
        }
    }
}

/// The job's status as stored and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// A person-readable reason for the phase (why pending, why failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Relaunches in the current site in a row (reset when the job runs a checkpoint further).
    #[serde(default)]
    pub relaunches: u32,
    /// Checkpoint or savepoint directory the next launch restores from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// When `restore_from` completed (`${restore.completedAt}` of the job's site overrides);
    /// `None` when not known (a record written before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_completed_at: Option<DateTime<Utc>>,
    /// Latest completed checkpoint seen for the running generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<LastCheckpoint>,
    /// Hash of the spec the current generation was launched with; a different hash means
    /// the spec changed and the job is relaunched with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_spec: Option<String>,
    /// Kubernetes-style conditions; [`REPLICATION_BEHIND`] is written by the exposure
    /// monitor (`controller/exposure.rs`) when the job's RPO exposure crosses
    /// `replication.maxLag` either way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The job's jar in each site's storage (see `controller::jars`); absent for a jar in the
    /// image (`local://`) or when no site has a storage root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<JarStatus>,
    /// True when the stored status did not decode and this one stands in for it (never
    /// stored): it is the reconcile pass's to rewrite, nobody else's.
    #[serde(skip)]
    pub rederived: bool,
}

/// What a launch restores from: a checkpoint or savepoint directory (the one holding
/// `_metadata`), and when it completed (`${restore.completedAt}` of the job's site
/// overrides), when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub path: String,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The job's jar as published for its current spec: stored in the job's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JarStatus {
    /// The `jarURI` published, as the spec gives it.
    pub source: String,
    /// Hash of the spec this publication is for (`launch::spec_hash`).
    pub spec: String,
    /// The jar's content address, once its source was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<JarRef>,
    /// Why the source could not be read (naming the URI), while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each target site's copy.
    pub sites: BTreeMap<String, JarSiteStatus>,
    /// Publications of this spec that did not verify everywhere.
    #[serde(default)]
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JarSiteStatus {
    pub state: JarState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JarState {
    /// Not tried yet for this spec.
    Publishing,
    /// The bytes at the site's address hash to the jar.
    Verified,
    /// The last try failed (`reason`); retried.
    Failed,
}

impl JarState {
    pub const ALL: [JarState; 3] = [JarState::Publishing, JarState::Verified, JarState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            JarState::Publishing => "publishing",
            JarState::Verified => "verified",
            JarState::Failed => "failed",
        }
    }
}

impl JarStatus {
    /// Sites the jar of spec `spec` is not verified in, with the reason: what a move there
    /// is refused for. Every site it names when the status is of another spec or URI.
    pub fn missing(&self, source: &str, spec: &str) -> BTreeMap<SiteId, String> {
        let current = self.source == source && self.spec == spec;
        self.sites
            .iter()
            .filter(|(_, s)| !current || s.state != JarState::Verified)
            .map(|(site, s)| {
                let reason = if !current {
                    format!("the job's jar {source} is not published to {site} yet")
                } else {
                    match (&s.state, &s.reason, &self.error) {
                        (_, _, Some(error)) => format!("jar {source}: {error}"),
                        (JarState::Failed, Some(reason), _) => {
                            format!("jar {source} is not verified in {site}'s storage: {reason}")
                        }
                        _ => format!("jar {source} is still being published to {site}"),
                    }
                };
                (SiteId(site.clone()), reason)
            })
            .collect()
    }
}

/// The message of a job no pass has seen yet.
const ACCEPTED: &str = "accepted; waiting for the first reconcile pass";

/// The condition whose status is `True` while a site loss would cost the job more than
/// `replication.maxLag` of processing (or all of its state).
pub const REPLICATION_BEHIND: &str = "ReplicationBehind";

/// A condition as Kubernetes writes them (`metav1.Condition`): one per `type`, `status`
/// `True`/`False`, a CamelCase `reason`, a message, and when the status last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    pub id: u64,
    pub path: String,
    /// When the site reported it complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

impl JobStatus {
    pub fn pending(message: impl Into<String>) -> JobStatus {
        JobStatus {
            phase: JobPhase::Pending,
            site: None,
            message: Some(message.into()),
            relaunches: 0,
            restore_from: None,
            restore_completed_at: None,
            last_checkpoint: None,
            launched_spec: None,
            conditions: Vec::new(),
            jar: None,
            rederived: false,
        }
    }

    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Sets the condition of `condition.kind`, keeping its transition time when the status
    /// did not change. Returns whether anything changed.
    pub fn set_condition(&mut self, mut condition: Condition) -> bool {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.kind == condition.kind)
        {
            Some(existing) => {
                if existing.status == condition.status {
                    condition.last_transition_time = existing.last_transition_time.clone();
                }
                let changed = *existing != condition;
                *existing = condition;
                changed
            }
            None => {
                self.conditions.push(condition);
                true
            }
        }
    }

    /// What the next launch restores from, with its completion time when known.
    pub fn restore(&self) -> Option<Restore> {
        self.restore_from.as_ref().map(|path| Restore {
            path: path.clone(),
            completed_at: self.restore_completed_at,
        })
    }

    /// Sets what the next launch restores from.
    pub fn set_restore(&mut self, restore: Option<Restore>) {
        self.restore_completed_at = restore.as_ref().and_then(|r| r.completed_at);
        self.restore_from = restore.map(|r| r.path);
    }

    /// The next launch restores from the latest checkpoint of the running generation, or,
    /// without one, from what the current generation was restored from.
    pub fn restore_from_last_checkpoint(&mut self) {
        if let Some(checkpoint) = &self.last_checkpoint {
            self.restore_from = Some(checkpoint.path.clone());
            self.restore_completed_at = checkpoint.completed_at;
        }
    }

    /// The status of a job no pass has seen yet.
    pub fn accepted() -> JobStatus {
        JobStatus::pending(ACCEPTED)
    }

    /// Whether this is the status a new job is stored with (no pass wrote one yet).
    pub fn is_accepted(&self) -> bool {
        *self == JobStatus::accepted()
    }

    /// Reads a stored status; a record written before any pass (or by an older version that
    /// lacks fields) reads as pending rather than failing the whole pass.
    pub fn from_value(value: &serde_json::Value) -> JobStatus {
        if value.is_null() {
            return JobStatus::accepted();
        }
        serde_json::from_value(value.clone()).unwrap_or_else(|error| JobStatus {
            rederived: true,
            ..JobStatus::pending(format!(
                "stored status was unreadable ({error}); re-derived"
            ))
        })
    }

    /// [`JobStatus::from_value`] as a field's deserializer: a job record whose status is
    /// damaged stays readable.
    pub fn deserialize_lenient<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<JobStatus, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(JobStatus::from_value(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_through_json() {
        let status = JobStatus {
            phase: JobPhase::Running,
            site: Some("dc-a".into()),
            message: None,
            relaunches: 1,
            restore_from: Some("file:///x/chk-3".into()),
            restore_completed_at: Some(
                chrono::TimeZone::timestamp_millis_opt(&Utc, 1_000).unwrap(),
            ),
            last_checkpoint: Some(LastCheckpoint {
                id: 4,
                path: "file:///x/chk-4".into(),
                completed_at: Some(chrono::TimeZone::timestamp_millis_opt(&Utc, 2_000).unwrap()),
            }),
            launched_spec: Some("abc".into()),
            conditions: vec![Condition {
                kind: REPLICATION_BEHIND.into(),
                status: "True".into(),
                reason: "LagAboveMaxLag".into(),
                message: "chk-3 is 7m old".into(),
                last_transition_time: "2026-12-05T10:00:00Z".into(),
            }],
            jar: None,
            rederived: false,
        };
        assert_eq!(
            JobStatus::from_value(&serde_json::to_value(&status).unwrap()),
            status
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut status = JobStatus::pending("x");
        let condition = |state: &str, message: &str, at: &str| Condition {
            kind: REPLICATION_BEHIND.into(),
            status: state.into(),
            reason: "R".into(),
            message: message.into(),
            last_transition_time: at.into(),
        };
        assert!(status.set_condition(condition("True", "a", "t1")));
        assert!(!status.set_condition(condition("True", "a", "t2")));
        assert!(status.set_condition(condition("True", "b", "t3")));
        assert_eq!(status.conditions[0].last_transition_time, "t1");
        assert!(status.set_condition(condition("False", "c", "t4")));
        assert_eq!(status.conditions[0].last_transition_time, "t4");
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn an_absent_or_damaged_status_reads_as_pending_with_a_reason() {
        assert_eq!(
            JobStatus::from_value(&serde_json::Value::Null).phase,
            JobPhase::Pending
        );
        let damaged = JobStatus::from_value(&serde_json::json!({"phase": 7}));
        assert_eq!(damaged.phase, JobPhase::Pending);
        assert!(damaged.rederived);
        assert!(damaged.message.unwrap().contains("unreadable"));
    }
}
