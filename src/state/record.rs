//! The typed records the controller keeps. Their JSON is the store's schema (see
//! `store::SCHEMA_VERSION`): records written before the types existed decode into them
//! unchanged (`tests/fixtures/store-v1/`).

use scheduler::input::StreamJob;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::status::JobStatus;

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
    /// The `StreamJob` as given (the whole object).
    pub spec: StoredSpec,
    /// Increases on every launch; two generations of one job never run at once.
    pub generation: u64,
    #[serde(default)]
    pub placement: Option<JobPlacement>,
    /// Absent or `null` (a job no pass has seen yet) reads as [`JobStatus::accepted`]; a
    /// status that does not decode reads as pending with the reason, and the next pass
    /// writes it anew (it is derived from the sites, never the only copy of anything).
    #[serde(
        default = "JobStatus::accepted",
        deserialize_with = "JobStatus::deserialize_lenient"
    )]
    pub status: JobStatus,
}

/// A job's StreamJob as stored: typed when it decodes. One that does not (written past
/// admission, by hand or by a version with another StreamJob schema) is kept as it is, so
/// that the record stays readable and nothing of it is lost, and is never acted on:
/// `job::stream_job_of` reports it with the reason, and the controller marks the job failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredSpec {
    StreamJob(Box<StreamJob>),
    Undecodable {
        raw: serde_json::Value,
        /// Why it is no StreamJob, as the decoder says.
        reason: String,
    },
}

impl StoredSpec {
    /// The StreamJob, or why there is none.
    pub fn stream_job(&self) -> Result<&StreamJob, &str> {
        match self {
            StoredSpec::StreamJob(job) => Ok(job),
            StoredSpec::Undecodable { reason, .. } => Err(reason),
        }
    }

    /// The spec's tenant, if it names one (also of an undecodable spec: admission counts
    /// every stored job against a tenant).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            StoredSpec::StreamJob(job) => job.spec.tenant.as_deref(),
            StoredSpec::Undecodable { raw, .. } => raw
                .pointer("/spec/tenant")
                .and_then(serde_json::Value::as_str),
        }
    }

    /// One of the spec's `metadata.annotations`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            StoredSpec::StreamJob(job) => job.metadata.annotations.get(key).map(String::as_str),
            StoredSpec::Undecodable { raw, .. } => {
                raw.get("metadata")?.get("annotations")?.get(key)?.as_str()
            }
        }
    }
}

impl StoredSpec {
    /// The spec as JSON, as it is stored.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

impl From<StreamJob> for StoredSpec {
    fn from(job: StreamJob) -> Self {
        StoredSpec::StreamJob(Box::new(job))
    }
}

impl Serialize for StoredSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StoredSpec::StreamJob(job) => job.serialize(serializer),
            StoredSpec::Undecodable { raw, .. } => raw.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StoredSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        Ok(match serde_json::from_value::<StreamJob>(raw.clone()) {
            Ok(job) => StoredSpec::StreamJob(Box::new(job)),
            Err(error) => StoredSpec::Undecodable {
                raw,
                reason: error.to_string(),
            },
        })
    }
}

/// Where a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlacement {
    pub site: String,
    /// Node of every pod, as the scheduler's plan reports it. Absent, `null`, or a value
    /// that is no plan (never written by twinsite) reads as `None`: the job is placed in
    /// `site` on nodes nobody knows, as every reader treated it before this was typed.
    #[serde(default, deserialize_with = "lenient_detail")]
    pub detail: Option<scheduler::model::JobPlacement>,
}

fn lenient_detail<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<scheduler::model::JobPlacement>, D::Error> {
    let raw = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(raw).ok())
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
    pub state: SiteState,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// What the failover engine last judged a site: the states the controller writes. A
/// stored record with any other state is unreadable (reported; its epoch unknown, so
/// nothing is launched there until the next mark rewrites it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteState {
    /// Up, or back after a loss (its stale generations fenced).
    Active,
    /// Judged lost: its jobs fail over.
    Lost,
}

impl SiteState {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteState::Active => "active",
            SiteState::Lost => "lost",
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Any JSON, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 :/.]{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A StreamJob as a door stores it (the parser's own form), varied where users vary it.
    fn any_stream_job() -> impl Strategy<Value = StreamJob> {
        (
            1u32..=32_768,
            proptest::option::of("[a-z]{1,8}"),
            prop::collection::btree_map("[a-z.]{1,12}", "[a-zA-Z0-9 ]{0,12}", 0..3),
        )
            .prop_map(|(parallelism, tenant, annotations)| {
                let yaml = "apiVersion: twinsite.io/v1alpha1\nkind: StreamJob\nmetadata: {name: orders, namespace: shop}\nspec:\n  priority: high\n  image: flink:2.0.0\n  flinkVersion: v2_0\n  jarURI: hdfs:///jars/orders.jar\n  parallelism: 2\n  jobManager: {resources: {cpu: \"1\", memory: 2Gi}}\n  taskManager: {resources: {cpu: \"2\", memory: 4Gi}, slots: 1}\n  checkpoints: {dir: \"hdfs:///flink/checkpoints/shop/orders\", interval: 10s}\n";
                let mut job = scheduler::input::parse_stream_jobs("t", yaml)
                    .unwrap()
                    .remove(0);
                job.spec.parallelism = parallelism;
                job.spec.tenant = tenant;
                job.metadata.annotations = annotations.into_iter().collect::<BTreeMap<_, _>>();
                job
            })
    }

    proptest! {
        /// Typing the spec loses nothing: JSON that is no StreamJob is written back exactly
        /// as it was read, with the decoder's reason beside it.
        #[test]
        fn a_spec_that_is_no_stream_job_is_kept_as_it_was_stored(raw in any_json()) {
            let spec: StoredSpec = serde_json::from_value(raw.clone()).unwrap();
            if let StoredSpec::Undecodable { reason, .. } = &spec {
                prop_assert!(!reason.is_empty());
            }
            prop_assert_eq!(serde_json::to_value(&spec).unwrap(), raw);
        }

        /// A StreamJob as twinsite stores it reads back as the same StreamJob and is written
        /// back as the same JSON (schema-1 records are the StreamJob's own JSON).
        #[test]
        fn a_stream_job_reads_back_as_itself_and_writes_the_same_json(job in any_stream_job()) {
            let stored = serde_json::to_value(&job).unwrap();
            let spec: StoredSpec = serde_json::from_value(stored.clone()).unwrap();
            prop_assert_eq!(spec.stream_job().ok(), Some(&job));
            prop_assert_eq!(spec.tenant(), job.spec.tenant.as_deref());
            prop_assert_eq!(serde_json::to_value(&spec).unwrap(), stored);
        }
    }

    #[test]
    fn a_placement_detail_that_is_no_plan_reads_as_none_and_a_null_status_as_accepted() {
        let record: JobRecord = serde_json::from_value(json!({
            "namespace": "shop", "name": "orders", "spec": {"not": "a job"}, "generation": 0,
            "placement": {"site": "dc-a", "detail": {"jobmanager": "n1"}}, "status": null
        }))
        .unwrap();
        assert_eq!(record.placement.unwrap().detail, None);
        assert!(record.status.is_accepted());
        assert!(record.spec.stream_job().is_err());
    }
}
