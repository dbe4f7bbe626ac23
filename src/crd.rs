//! The `StreamJob` custom resource (`twinsite.io/v1alpha1`) as kube-rs sees it, and the CRD
//! generated from it. The spec is the scheduler's [`scheduler::input::StreamJobSpec`] itself,
//! so the CRD cannot describe a different job from the one the parser reads;
//! `tests/crd_drift.rs` fails when `deploy/crd/streamjob.yaml` no longer matches.

use std::ops::Deref;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::state::{JarState, JarStatus, JobPhase, JobStatus};

// The spec of a `StreamJob` object: the parser's spec type, unchanged on the wire. A newtype
// because kube's derive must sit on a type of this crate while the scheduler crate stays free
// of kube. No doc comment on purpose: schemars would put it in the CRD in place of the
// user-facing description of `StreamJobSpec`.
#[allow(clippy::duplicated_attributes)] // each printer column's `type_ = "string"`, not a mistake
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[kube(
    group = "twinsite.io",
    version = "v1alpha1",
    kind = "StreamJob",
    plural = "streamjobs",
    shortname = "sj",
    category = "twinsite",
    namespaced,
    status = "StreamJobStatus",
    derive = "PartialEq",
    doc = "One Flink streaming job that twinsite places, replicates and fails over across two sites.",
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(name = "Site", type_ = "string", json_path = ".status.site"),
    printcolumn(
        name = "Generation",
        type_ = "integer",
        json_path = ".status.generation",
        description = "twinsite's launch generation (not metadata.generation)"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    // A date column prints as an age: how old the newest checkpoint copied to the other site
    // is (the job's recovery point), without a status write every second.
    printcolumn(
        name = "Replicated",
        type_ = "date",
        json_path = ".status.replicatedCheckpoint.completedAt",
        description = "age of the newest checkpoint verified in the other site"
    ),
    // Declaring columns replaces kubectl's default Age column; keep it.
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct Spec(pub scheduler::input::StreamJobSpec);

impl Deref for Spec {
    type Target = scheduler::input::StreamJobSpec;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What the controller last observed and did for the job (the published part of its own job
/// status). Written only by the controller, with server-side apply on the status subresource
/// (field manager `twinsite`): the subresource keeps users' edits of `spec` and the
/// controller's of `status` apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the job is in its life, as the controller sees it; `invalid`: the spec was
    /// refused (the message names the field) and nothing of it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<StreamJobPhase>,
    /// The site running (or launching) the job's current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// twinsite's launch generation: increases on every launch, and no two generations of
    /// one job ever run at once. Not `metadata.generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The newest checkpoint completed in the job's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<PublishedCheckpoint>,
    /// The newest checkpoint whose every file is verified in another site: what a failover
    /// there restores from. Its `completedAt` against the clock is the job's RPO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_checkpoint: Option<PublishedCheckpoint>,
    /// The job's jar as published for its current spec: its content address and whether
    /// each site it may run in holds a verified copy (a launch or move goes only to those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<PublishedJar>,
    /// Why the job is in its phase, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The job's jar replication as a StreamJob's status shows it (the controller's
/// [`JarStatus`], without its retry bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedJar {
    /// The `jarURI` published, as the spec gives it.
    pub source: String,
    /// SHA-256 of the jar's bytes, once the source was read: each site's copy is at
    /// `<storage>/twinsite/jars/<sha256>/<file name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the source cannot be read (naming the URI), while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per site the job may run in: its copy's state and, when it failed, why.
    pub sites: std::collections::BTreeMap<String, PublishedJarSite>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedJarSite {
    /// `publishing` (not tried yet for this spec), `verified` (the bytes there hash to the
    /// jar) or `failed` (retried).
    #[schemars(schema_with = "jar_state_schema")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PublishedJar {
    /// `bound` cuts every free text (reasons, errors) to what a status may hold.
    pub fn of(jar: &JarStatus, bound: impl Fn(String) -> String) -> PublishedJar {
        PublishedJar {
            source: jar.source.clone(),
            sha256: jar.jar.as_ref().map(|j| j.sha256.clone()),
            error: jar.error.clone().map(&bound),
            sites: jar
                .sites
                .iter()
                .map(|(site, s)| {
                    (
                        site.clone(),
                        PublishedJarSite {
                            state: s.state.as_str().to_string(),
                            reason: s.reason.clone().map(&bound),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One checkpoint as a StreamJob's status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedCheckpoint {
    /// The site whose storage holds this copy.
    pub site: String,
    /// Flink's checkpoint id (`chk-<id>`).
    pub id: u64,
    /// The directory holding `_metadata`, as that site reads it.
    pub path: String,
    /// When the checkpoint completed in the job's site (RFC 3339).
    #[schemars(schema_with = "date_time_schema")]
    pub completed_at: String,
}

/// A StreamJob's phase: the controller's [`JobPhase`], or `invalid` for a spec refused at
/// admission (the job never entered the store in that form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamJobPhase {
    Job(JobPhase),
    Invalid,
}

impl StreamJobPhase {
    pub const INVALID: &str = "invalid";

    pub fn as_str(self) -> &'static str {
        match self {
            StreamJobPhase::Job(phase) => phase.as_str(),
            StreamJobPhase::Invalid => Self::INVALID,
        }
    }
}

impl Serialize for StreamJobPhase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StreamJobPhase {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == Self::INVALID {
            return Ok(StreamJobPhase::Invalid);
        }
        JobPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .map(StreamJobPhase::Job)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown phase {text:?}")))
    }
}

impl From<JobPhase> for StreamJobPhase {
    fn from(phase: JobPhase) -> Self {
        StreamJobPhase::Job(phase)
    }
}

impl StreamJobStatus {
    /// The status to publish for a job whose controller status is `status` and whose latest
    /// launch generation is `generation` (0: never launched); checkpoints are added by the
    /// caller, which reads them from the store.
    pub fn of(status: &JobStatus, generation: u64) -> StreamJobStatus {
        StreamJobStatus {
            observed_generation: None,
            phase: Some(status.phase.into()),
            site: status.site.clone(),
            generation: (generation > 0).then_some(generation),
            last_checkpoint: None,
            replicated_checkpoint: None,
            jar: None,
            message: status.message.clone(),
        }
    }
}

/// The controller's phases, taken from [`JobPhase::ALL`] so the CRD follows when one is added,
/// and `invalid`.
fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut phases: Vec<&str> = JobPhase::ALL.iter().map(|p| p.as_str()).collect();
    phases.push(StreamJobPhase::INVALID);
    schemars::json_schema!({"type": "string", "nullable": true, "enum": phases})
}

fn jar_state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let states: Vec<&str> = JarState::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": states})
}

fn date_time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

/// The StreamJob CRD: kube's derived one, with every `null` taken out of `enum` lists.
///
/// schemars lists `null` among the values of an optional enum (`effect` of a toleration);
/// `nullable: true`, which kube adds as well, already admits null, and neither Kubernetes'
/// built-in schemas nor controller-gen's ever put `null` in an `enum`.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = StreamJob::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_null_enum_values(schema);
        }
    }
    crd
}

fn drop_null_enum_values(schema: &mut JSONSchemaProps) {
    if let Some(values) = &mut schema.enum_ {
        values.retain(|value| !value.0.is_null());
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_null_enum_values(child);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(child)) => drop_null_enum_values(child),
        Some(JSONSchemaPropsOrArray::Schemas(children)) => {
            children.iter_mut().for_each(drop_null_enum_values)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &mut schema.additional_properties {
        drop_null_enum_values(child);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(drop_null_enum_values);
    }
}

/// The CRD as `kubectl apply -f` takes it: the text of `deploy/crd/streamjob.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(&crd())?;
    Ok(format!("{HEADER}{body}"))
}

const HEADER: &str = "\
# Generated by `twinsite crd` from the Rust types (src/crd.rs, scheduler/src/input/streamjob/spec.rs).
# Do not edit: change the types, then `TWINSITE_UPDATE_CRD=1 cargo test --test crd_drift`.
";
