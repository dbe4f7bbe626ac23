//! The `StreamJob` resource (`twinsite.io/v1alpha1`): one Flink streaming job as users write
//! it, read from multi-document YAML, validated field by field, and resolved into the
//! [`JobDemand`] placement works with. `StreamJobSpec` is also the spec of the StreamJob CRD.
//!
//! ```yaml
//! apiVersion: twinsite.io/v1alpha1
//! kind: StreamJob
//! metadata: {name: orders-enrich, namespace: trade}
//! spec:
//!   priority: critical
//!   image: flink:2.0.0
//!   flinkVersion: v2_0
//!   jarURI: hdfs:///jars/orders-enrich-1.4.jar
//!   parallelism: 8
//!   jobManager: {resources: {cpu: "1", memory: 2Gi}}
//!   taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 2}
//!   checkpoints: {dir: hdfs:///flink/checkpoints/orders-enrich, interval: 60s}
//!   siteOverrides:                  # per site: its own Kafka, and where to resume reading
//!     dc-a:
//!       env: {KAFKA_BOOTSTRAP: kafka-a.dc-a:9092}
//!       args: [--start-from, "${restore.completedAt:-earliest}"]
//!     dc-b:
//!       env: {KAFKA_BOOTSTRAP: kafka-b.dc-b:9092}
//!       args: [--start-from, "${restore.completedAt:-earliest}"]
//! ```
//!
//! `siteOverrides` values are templates (`scheduler::input::template`): `${site}`,
//! `${restore.completedAt}` and `${restore.completedAtEpochMillis}`, with `:-default` for a
//! launch that restores nothing.
//!
//! A file may also hold a `List` (`kubectl get streamjobs -o yaml`) whose `items` are
//! StreamJobs. Unknown fields anywhere, including inside the Kubernetes-shaped `affinity`
//! and `tolerations`, are errors.
//!
//! Layout: `spec` holds the resource's shapes, `site_overrides` what a job changes per site,
//! `validation` the field checks and `demand` the resolution into a [`JobDemand`]; reading
//! files (`List`s included) is here.

mod demand;
mod site_overrides;
mod spec;
mod validation;

use std::collections::HashMap;

use serde_json::Value;

use super::common::{self, check_type_meta, decode, str_at};
use super::error::{InputError, Problems};
use crate::limits::{MAX_JOBS_PER_FILE, MAX_JOBS_PER_TENANT};
use crate::model::{JobDemand, JobId, TenantId};

pub use site_overrides::{RESERVED_ENV_NAMES, RESERVED_ENV_PREFIX, SiteOverride, SiteSettings};
pub use spec::{
    AffinitySpec, CheckpointSpec, FailoverSpec, FailoverTrigger, JobManagerSpec, ObjectMeta,
    PlacementSpec, ResourceSpec, SitesSpec, StreamJob, StreamJobSpec, TaskManagerSpec,
};
pub use validation::effective_max_parallelism;

pub use super::common::API_VERSION;
pub const STREAM_JOB_KIND: &str = "StreamJob";

pub use crate::limits::FLINK_MAX_PARALLELISM;

/// Flink's `PipelineOptions.PARALLELISM_OVERRIDES`: a map `<job vertex id>:<parallelism>,…`
/// applied to a submitted job graph (the key the Flink operator's autoscaler writes).
pub const PARALLELISM_OVERRIDES_OPTION: &str = "pipeline.jobvertex-parallelism-overrides";

/// Most entries `spec.vertexParallelism` may hold: a job graph of more vertices than this is
/// not one job a person can review.
pub const MAX_VERTEX_OVERRIDES: usize = 1000;

/// Kubernetes reserves namespaces with this prefix for its own system components
/// (`kube-system`, `kube-public`, `kube-node-lease`); a job's objects never go there.
pub const RESERVED_NAMESPACE_PREFIX: &str = "kube-";

/// Jar locations a site can launch from: `local://` (inside the image), `file://` and
/// `hdfs://` (replicated to the peer site by twinsite).
pub const JAR_SCHEMES: [&str; 3] = ["hdfs", "file", "local"];

/// Checkpoint locations twinsite can replicate between sites.
pub const CHECKPOINT_SCHEMES: [&str; 2] = ["hdfs", "file"];

impl StreamJob {
    pub fn id(&self) -> JobId {
        JobId::new(&self.metadata.namespace, &self.metadata.name)
    }

    /// `spec.tenant`, or the namespace when it is not set.
    pub fn tenant(&self) -> TenantId {
        TenantId(
            self.spec
                .tenant
                .clone()
                .unwrap_or_else(|| self.metadata.namespace.clone()),
        )
    }

    /// The field the tenant comes from: `spec.tenant`, or `metadata.namespace` without it.
    pub fn tenant_field(&self) -> &'static str {
        if self.spec.tenant.is_some() {
            "spec.tenant"
        } else {
            "metadata.namespace"
        }
    }

    /// Checks the job as [`parse_stream_jobs`] checks each job of a file: for a job that
    /// did not come from one (a stored record, a patched spec), before acting on it.
    pub fn validate(&self) -> Result<(), InputError> {
        let mut problems = self.own_problems();
        if self.api_version != API_VERSION {
            problems.field(
                "apiVersion",
                format!("expected \"{API_VERSION}\", found {:?}", self.api_version),
            );
        }
        if self.kind != STREAM_JOB_KIND {
            problems.field(
                "kind",
                format!("expected \"{STREAM_JOB_KIND}\", found {:?}", self.kind),
            );
        }
        validation::validate(self, &mut problems);
        problems.finish(())
    }

    /// Slots the job needs: `parallelism`, or the plan's slot need when that is larger.
    pub fn slot_need(&self) -> Result<u64, InputError> {
        let mut problems = self.own_problems();
        let need = demand::slot_need(&self.spec, &mut problems);
        problems.finish(need.unwrap_or(0))
    }

    /// The job as placement sees it: resources resolved to integers and the TaskManager
    /// count `ceil(slot need / slots)`.
    pub fn demand(&self) -> Result<JobDemand, InputError> {
        let mut problems = self.own_problems();
        let demand = demand::demand(self, &mut problems);
        match demand {
            Some(demand) => problems.finish(demand),
            None => Err(problems.into_error("could not be resolved")),
        }
    }

    fn own_problems(&self) -> Problems {
        let mut problems = Problems::new("StreamJob");
        problems.set_object(Some(self.id().to_string()));
        problems
    }
}

/// Reads every StreamJob in `yaml` (from `source`, named in errors). All problems in all
/// documents are reported together; each names the document, the job and the field.
pub fn parse_stream_jobs(source: &str, yaml: &str) -> Result<Vec<StreamJob>, InputError> {
    let documents = common::yaml_documents(source, yaml)?;
    let mut problems = Problems::new(source);
    let mut items = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let document_label = format!("document {}", index + 1);
        items.extend(list_items(document, &document_label, &mut problems));
    }
    if items.len() > MAX_JOBS_PER_FILE {
        problems.set_object(None);
        problems.whole(format!(
            "{} StreamJobs, more than the {MAX_JOBS_PER_FILE} one file may hold; split it",
            items.len()
        ));
        return Err(problems.into_error("too many StreamJobs"));
    }
    let mut jobs: Vec<StreamJob> = Vec::new();
    let mut first_seen: HashMap<JobId, String> = HashMap::new();
    let mut per_tenant: HashMap<TenantId, usize> = HashMap::new();
    for (label, item) in items {
        let object = describe(&label, &item);
        problems.set_object(Some(object.clone()));
        if let Some(job) = read_job(item, &mut problems) {
            let id = job.id();
            if let Some(first) = first_seen.get(&id) {
                problems.whole(format!(
                    "duplicate StreamJob {id}: already defined in {first}"
                ));
                continue;
            }
            let tenant_jobs = per_tenant.entry(job.tenant()).or_insert(0);
            *tenant_jobs += 1;
            if *tenant_jobs == MAX_JOBS_PER_TENANT + 1 {
                problems.field(
                    job.tenant_field(),
                    format!(
                        "tenant {:?} has more than {MAX_JOBS_PER_TENANT} jobs in this file, the most one tenant may have",
                        job.tenant().0
                    ),
                );
            }
            first_seen.insert(id, object);
            jobs.push(job);
        }
    }
    problems.set_object(None);
    problems.finish(jobs)
}

/// The documents of a `List` (as `kubectl get -o yaml` prints), or the document itself.
fn list_items(document: Value, label: &str, problems: &mut Problems) -> Vec<(String, Value)> {
    let is_list = matches!(str_at(&document, "/kind"), Some("List" | "StreamJobList"));
    if !is_list {
        return vec![(label.to_string(), document)];
    }
    match document {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, mut item)| {
                    // A list is what `kubectl get streamjobs -o yaml` prints: each item carries
                    // the `status` twinsite itself wrote, which is the cluster's view, not
                    // part of the job; it is set aside, as the cluster watch does.
                    if let Some(fields) = item.as_object_mut() {
                        fields.remove("status");
                    }
                    (format!("{label}, items[{i}]"), item)
                })
                .collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                problems.set_object(Some(label.to_string()));
                problems.field("items", "expected a list of StreamJobs");
                Vec::new()
            }
        },
        _ => Vec::new(),
    }
}

fn describe(label: &str, item: &Value) -> String {
    match (
        str_at(item, "/metadata/namespace"),
        str_at(item, "/metadata/name"),
    ) {
        (Some(namespace), Some(name)) => format!("{label} ({namespace}/{name})"),
        (None, Some(name)) => format!("{label} ({name})"),
        _ => label.to_string(),
    }
}

fn read_job(document: Value, problems: &mut Problems) -> Option<StreamJob> {
    if !document.is_object() {
        problems.whole("expected a StreamJob (a YAML mapping)");
        return None;
    }
    if !check_type_meta(&document, STREAM_JOB_KIND, problems) {
        return None;
    }
    let job: StreamJob = decode(document, problems)?;
    let before = problems.len();
    validation::validate(&job, problems);
    if problems.len() > before {
        return None;
    }
    Some(job)
}

/// Serializes jobs back to multi-document YAML that [`parse_stream_jobs`] reads.
pub fn stream_jobs_to_yaml(jobs: &[StreamJob]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for job in jobs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(job)?);
    }
    Ok(out)
}
