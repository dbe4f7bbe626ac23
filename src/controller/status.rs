//! What the controller records about a job in its `JobRecord.status`: phase, site, generation
//! and why. Typed here, stored as JSON so the state store stays schema-agnostic.

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
    /// Latest completed checkpoint seen for the running generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<LastCheckpoint>,
    /// Hash of the spec the current generation was launched with; a different hash means
    /// the spec changed and the job is relaunched with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_spec: Option<String>,
    /// The job's jar in each site's storage (see `controller::jars`); absent for a jar in the
    /// image (`local://`) or when no site has a storage root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<super::jars::JarStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    pub id: u64,
    pub path: String,
}

impl JobStatus {
    pub fn pending(message: impl Into<String>) -> JobStatus {
        JobStatus {
            phase: JobPhase::Pending,
            site: None,
            message: Some(message.into()),
            relaunches: 0,
            restore_from: None,
            last_checkpoint: None,
            launched_spec: None,
            jar: None,
        }
    }

    /// Reads a stored status; a record written before any pass (or by an older version that
    /// lacks fields) reads as pending rather than failing the whole pass.
    pub fn from_value(value: &serde_json::Value) -> JobStatus {
        if value.is_null() {
            return JobStatus::pending("accepted; waiting for the first reconcile pass");
        }
        serde_json::from_value(value.clone()).unwrap_or_else(|error| {
            JobStatus::pending(format!(
                "stored status was unreadable ({error}); re-derived"
            ))
        })
    }

    pub fn to_value(&self) -> serde_json::Value {
        // A plain struct of strings and numbers always serialises.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
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
            last_checkpoint: Some(LastCheckpoint {
                id: 4,
                path: "file:///x/chk-4".into(),
            }),
            launched_spec: Some("abc".into()),
            jar: None,
        };
        assert_eq!(JobStatus::from_value(&status.to_value()), status);
    }

    #[test]
    fn an_absent_or_damaged_status_reads_as_pending_with_a_reason() {
        assert_eq!(
            JobStatus::from_value(&serde_json::Value::Null).phase,
            JobPhase::Pending
        );
        let damaged = JobStatus::from_value(&serde_json::json!({"phase": 7}));
        assert_eq!(damaged.phase, JobPhase::Pending);
        assert!(damaged.message.unwrap().contains("unreadable"));
    }
}
