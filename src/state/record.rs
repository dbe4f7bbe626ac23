//! The typed records the controller keeps. Values the store does not interpret (job spec,
//! placement detail) stay JSON so the store never depends on their schema.

use serde::{Deserialize, Serialize};

/// A record as read, with the mod revision to pass back for a compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: i64,
}

/// The precondition of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Write whatever is stored.
    Any,
    /// Write only if the record does not exist (create).
    Absent,
    /// Write only if the record's mod revision is still this one (optimistic update).
    Revision(i64),
}

/// One job as the controller tracks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub namespace: String,
    pub name: String,
    /// The `StreamJob` spec as given.
    pub spec: serde_json::Value,
    /// Increases on every launch; two generations of one job never run at once.
    pub generation: u64,
    #[serde(default)]
    pub placement: Option<JobPlacement>,
    #[serde(default)]
    pub status: serde_json::Value,
}

/// Where a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlacement {
    pub site: String,
    /// Node of every pod, as the scheduler's plan reports it.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Which checkpoint pointer of a job and site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Latest checkpoint completed in the site where the job ran.
    Completed,
    /// Latest checkpoint whose every file is verified at the (peer) site.
    Replicated,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Completed => "completed",
            CheckpointKind::Replicated => "replicated",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "completed" => Some(CheckpointKind::Completed),
            "replicated" => Some(CheckpointKind::Replicated),
            _ => None,
        }
    }
}

/// A pointer to one Flink checkpoint (`chk-N` directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub checkpoint_id: u64,
    /// The checkpoint directory as the site holding it reads it.
    pub uri: String,
    pub recorded_at_unix_ms: i64,
}

/// A checkpoint pointer with the site and kind its key names.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEntry {
    pub kind: CheckpointKind,
    pub site: String,
    pub pointer: Versioned<CheckpointPointer>,
}

/// A checkpoint pointer with the job it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCheckpoint {
    pub namespace: String,
    pub name: String,
    pub entry: CheckpointEntry,
}

/// The controller's view of one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site: String,
    /// Only ever increases: a write with a lower epoch comes from a stale decision.
    pub epoch: u64,
    /// E.g. `active`, `lost`, `fenced`, `recovering`.
    pub state: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Who did what, when, with what result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub at_unix_ms: i64,
    pub result: String,
}

/// An audit entry with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: u64,
    pub entry: AuditEntry,
}

/// What a stored record is, by the part of the key space it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Job,
    Checkpoint,
    Site,
    /// A failover engine record (`<prefix>/failover/…`).
    Failover,
    Audit,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Job,
        RecordKind::Checkpoint,
        RecordKind::Site,
        RecordKind::Failover,
        RecordKind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Job => "job",
            RecordKind::Checkpoint => "checkpoint",
            RecordKind::Site => "site",
            RecordKind::Failover => "failover",
            RecordKind::Audit => "audit",
        }
    }
}

/// A stored record this version cannot use: its bytes do not decode as the record its key
/// promises (a hand-written value, another schema version), or its key is not one this
/// version writes. Listings leave it out and report it here; nothing acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableRecord {
    pub key: String,
    pub kind: RecordKind,
    /// The record's mod revision (what a compare-and-set delete of it would name).
    pub revision: i64,
    /// Why it cannot be used, naming what failed.
    pub reason: String,
    /// `(namespace, name)` of the job the key belongs to, for job and checkpoint keys whose
    /// segments are valid names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<(String, String)>,
}

/// Every job record, one listing: those that decode, and apart those that do not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobScan {
    /// Ordered by namespace then name.
    pub jobs: Vec<Versioned<JobRecord>>,
    /// Ordered by key.
    pub unreadable: Vec<UnreadableRecord>,
}
