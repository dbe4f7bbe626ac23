//! From a StreamJob object in the home cluster to the job the store keeps, through the
//! admission rules the HTTP API applies to a request body (the StreamJob parser's bounds and
//! field checks, the policy's tenants and sites), without I/O.

use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::SiteId;
use serde_json::{Map, Value, json};

pub use crate::job::origin::{ORIGIN_ANNOTATION, origin, origin_of};

/// Annotations of an object that are not part of the job: kubectl's copy of the whole last
/// applied object (it would double the stored size and show every spec value again).
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// One StreamJob object as the watch sees it (any JSON the API server returned: the watch
/// reads objects untyped, so one that does not decode is refused alone, never the list).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterObject {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`: moves with every change of the spec.
    pub generation: Option<i64>,
    pub body: Value,
}

impl ClusterObject {
    /// `None` for an object without a name or namespace (the API server never sends one).
    pub fn from_value(body: Value) -> Option<ClusterObject> {
        let metadata = body.get("metadata")?;
        Some(ClusterObject {
            namespace: metadata.get("namespace")?.as_str()?.to_owned(),
            name: metadata.get("name")?.as_str()?.to_owned(),
            generation: metadata.get("generation").and_then(Value::as_i64),
            body,
        })
    }

    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    /// The object's `.status`, as last written (by twinsite or anyone with the right).
    pub fn status(&self) -> Option<&Value> {
        self.body.get("status").filter(|s| !s.is_null())
    }
}

/// The job `object` stands for, checked as an API request body is checked, with the origin
/// annotation naming `home`; `Err` says what is wrong, naming each field
/// (`spec.parallelism: must be at least 1, found 0; …`).
pub fn admit(object: &ClusterObject, home: &SiteId, policy: &Policy) -> Result<StreamJob, String> {
    let body = &object.body;
    let metadata = body.get("metadata").cloned().unwrap_or(Value::Null);
    let mut clean = Map::new();
    for field in ["name", "namespace", "labels", "uid", "generation"] {
        if let Some(value) = metadata.get(field).filter(|v| !v.is_null()) {
            clean.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(annotations) = metadata.get("annotations").filter(|v| !v.is_null()) {
        let mut annotations = annotations.clone();
        if let Some(map) = annotations.as_object_mut() {
            if map.contains_key(ORIGIN_ANNOTATION) {
                return Err(format!(
                    "metadata.annotations[{ORIGIN_ANNOTATION:?}]: set by twinsite on the jobs it stores from StreamJob objects; remove it from the object"
                ));
            }
            for dropped in DROPPED_ANNOTATIONS {
                map.remove(dropped);
            }
        }
        clean.insert("annotations".to_owned(), annotations);
    }
    let mut document = json!({
        "apiVersion": body.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": body.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": clean,
    });
    if let Some(spec) = body.get("spec") {
        document["spec"] = spec.clone();
    }
    // JSON is YAML: the very parser (and bounds) every other door uses.
    let text = serde_json::to_string(&document).map_err(|e| format!("cannot read it: {e}"))?;
    let source = "StreamJob object";
    let mut jobs = parse_stream_jobs(source, &text).map_err(|e| fields_of(&e))?;
    let mut job = match jobs.len() {
        1 => jobs.remove(0),
        n => return Err(format!("expected one StreamJob, found {n}")),
    };
    policy
        .check_jobs(source, std::slice::from_ref(&job))
        .map_err(|e| fields_of(&e))?;
    job.metadata
        .annotations
        .insert(ORIGIN_ANNOTATION.to_owned(), origin(home));
    Ok(job)
}

/// Every problem as `field: message`, without the source and object (the status is the
/// object's own).
fn fields_of(error: &scheduler::input::InputError) -> String {
    error
        .problems()
        .iter()
        .map(|p| match &p.field {
            Some(field) => format!("{field}: {}", p.message),
            None => p.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: Value) -> ClusterObject {
        ClusterObject::from_value(json!({
            "apiVersion": "twinsite.io/v1alpha1",
            "kind": "StreamJob",
            "metadata": {
                "name": "orders", "namespace": "shop", "uid": "u-1", "generation": 3,
                "resourceVersion": "77", "creationTimestamp": "2026-12-05T10:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "finalizers": ["example.com/x"],
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\": true}",
                    "team": "payments"
                },
            },
            "spec": spec,
            "status": {"phase": "running"},
        }))
        .unwrap()
    }

    fn spec() -> Value {
        json!({
            "priority": "high", "image": "flink:2.0.0", "flinkVersion": "v2_0",
            "jarURI": "hdfs:///jars/orders.jar", "parallelism": 2,
            "jobManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
            "taskManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
            "checkpoints": {"dir": "hdfs:///flink/checkpoints/shop/orders"},
        })
    }

    #[test]
    fn an_object_becomes_the_job_with_its_origin_and_without_server_fields() {
        let home = SiteId("dc-a".into());
        let job = admit(&object(spec()), &home, &Policy::default_two_sites()).unwrap();
        assert_eq!(job.id().0, "shop/orders");
        assert_eq!(job.metadata.generation, Some(3));
        assert_eq!(job.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(
            job.metadata.resource_version, None,
            "moves with every status write"
        );
        assert_eq!(
            job.metadata.annotations,
            [
                ("team".to_owned(), "payments".to_owned()),
                (ORIGIN_ANNOTATION.to_owned(), "kubernetes/dc-a".to_owned()),
            ]
            .into()
        );
        let stored = crate::state::StoredSpec::from(job);
        assert_eq!(origin_of(&stored), Some("kubernetes/dc-a"));
    }

    #[test]
    fn a_refusal_names_every_bad_field_as_the_api_would() {
        let mut bad = spec();
        bad["parallelism"] = json!(0);
        bad["placement"] = json!({"sites": {"preferred": "dc-z"}});
        let error = admit(
            &object(bad),
            &SiteId("dc-a".into()),
            &Policy::default_two_sites(),
        )
        .unwrap_err();
        assert!(
            error.contains("spec.parallelism: must be at least 1"),
            "{error}"
        );
        let mut unknown_site = spec();
        unknown_site["placement"] = json!({"sites": {"preferred": "dc-z"}});
        let error = admit(
            &object(unknown_site),
            &SiteId("dc-a".into()),
            &Policy::default_two_sites(),
        )
        .unwrap_err();
        assert!(
            error.contains("spec.placement.sites.preferred: unknown site \"dc-z\""),
            "{error}"
        );
        let mut misspelled = spec();
        misspelled["paralelism"] = json!(2);
        let error = admit(
            &object(misspelled),
            &SiteId("dc-a".into()),
            &Policy::default_two_sites(),
        )
        .unwrap_err();
        assert!(error.contains("paralelism"), "{error}");
    }

    #[test]
    fn an_object_may_not_claim_an_origin_itself() {
        let mut claimed = object(spec());
        claimed.body["metadata"]["annotations"][ORIGIN_ANNOTATION] = json!("kubernetes/dc-b");
        let error = admit(
            &claimed,
            &SiteId("dc-a".into()),
            &Policy::default_two_sites(),
        )
        .unwrap_err();
        assert!(error.contains(ORIGIN_ANNOTATION), "{error}");
    }
}
