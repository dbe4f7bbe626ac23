//! `/api/v1/jobs`: list, read, create, replace and delete jobs, shown redacted.
//! Must never: change a job except through the store, or show a secret-looking value unredacted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use super::preconditions::{Preconditions, delete_preconditions};
use super::{ApiError, ApiResult, ApiState, auth};
use crate::controller::{Controller, JobStatus, new_record};
use crate::state::{Expected, StateError};

// Only job writes use it, so it sits with them rather than with the shared state.
impl ApiState {
    /// After a job write: audits its outcome and, when it succeeded, wakes the reconcile loop
    /// and returns the job as now stored. A lost compare-and-set is a 409 in the shape of
    /// Kubernetes' `Status` (someone else changed or deleted the job meanwhile).
    async fn written(
        &self,
        caller: &auth::Caller,
        action: &str,
        namespace: &str,
        name: &str,
        result: Result<i64, StateError>,
    ) -> ApiResult<JobView> {
        let target = format!("{namespace}/{name}");
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("failed: {error}"),
        };
        self.controller
            .audit_as(&caller.actor, action, &target, &outcome)
            .await;
        match result {
            Ok(_) => {}
            Err(StateError::Conflict { actual, .. }) => {
                return Err(ApiError::stale(namespace, name, actual));
            }
            Err(error) => return Err(error.into()),
        }
        self.wake.notify_one();
        let record = self
            .controller
            .store
            .get_job(namespace, name)
            .await?
            .ok_or_else(|| ApiError::stale(namespace, name, None))?;
        job_view(&self.controller, record)
    }
}

/// A job as the API shows it: secret-looking values redacted (`crate::redact`), its
/// revision also as a Kubernetes `resourceVersion` (and, on single-job answers, the `ETag`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobView {
    namespace: String,
    name: String,
    /// Absent for a record that does not decode (its generation is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    revision: i64,
    /// `revision` as a string, as Kubernetes writes it: send it back in
    /// `metadata.resourceVersion` (or `If-Match`) to edit only what was read.
    resource_version: String,
    /// The StreamJob's metadata as stored (annotations redacted) with `resourceVersion`.
    metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    /// Absent for a job not placed; `null` for one placed on nodes not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<Option<scheduler::model::JobPlacement>>,
    status: JobStatus,
    /// RPO exposure per peer site, as the leader judged it last (empty on a follower, and
    /// for jobs it does not replicate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replication: Vec<crate::controller::exposure::PeerExposure>,
    spec: Value,
}

fn job_view(
    controller: &Controller,
    record: crate::state::Versioned<crate::state::JobRecord>,
) -> ApiResult<JobView> {
    let redactor = &controller.redactor;
    let replication = controller.exposure.of(&scheduler::model::JobId::new(
        &record.value.namespace,
        &record.value.name,
    ));
    let status = record.value.status.clone();
    let mut object = record.value.spec.to_json().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "cannot encode the spec of {}/{}: {e}",
                record.value.namespace, record.value.name
            ),
        )
    })?;
    redactor.redact_job(&mut object);
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let resource_version = record.revision.to_string();
    let mut metadata = match object.get("metadata") {
        Some(Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    metadata.insert(
        "resourceVersion".into(),
        Value::String(resource_version.clone()),
    );
    Ok(JobView {
        namespace: record.value.namespace,
        name: record.value.name,
        generation: Some(record.value.generation),
        revision: record.revision,
        resource_version,
        metadata: Value::Object(metadata),
        site: record.value.placement.as_ref().map(|p| p.site.clone()),
        placement: record.value.placement.map(|p| p.detail),
        status,
        replication,
        spec,
    })
}

/// The `ETag` header of a job at `revision`: a strong tag, `"<revision>"`.
fn etag(revision: i64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{revision}\""))]
}

/// A job record that does not decode, as the job list shows it: `failed`, the message
/// naming its key and why; nothing else of it is known.
fn unreadable_job_view(record: crate::state::UnreadableRecord) -> JobView {
    let (namespace, name) = record.job.clone().unwrap_or_default();
    let resource_version = record.revision.to_string();
    JobView {
        namespace,
        name,
        generation: None,
        revision: record.revision,
        metadata: json!({ "resourceVersion": resource_version }),
        resource_version,
        site: None,
        placement: None,
        status: JobStatus {
            phase: crate::controller::JobPhase::Failed,
            ..JobStatus::pending(format!(
                "stored record {} cannot be used: {}; twinsite neither stops, launches nor relaunches this job until the record is deleted (DELETE, then create the job again) or rewritten in the store",
                record.key, record.reason
            ))
        },
        replication: Vec::new(),
        spec: Value::Null,
    }
}

pub(super) async fn list_jobs(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<JobView>>> {
    let scan = state.controller.store.scan_jobs().await?;
    let mut views: Vec<JobView> = scan
        .jobs
        .into_iter()
        .map(|record| job_view(&state.controller, record))
        .chain(
            scan.unreadable
                .into_iter()
                .map(|u| Ok(unreadable_job_view(u))),
        )
        .collect::<ApiResult<_>>()?;
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Json(views))
}

pub(super) async fn get_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    match readable_job(&state.controller, &namespace, &name).await? {
        Err(unreadable) => {
            let view = unreadable_job_view(unreadable);
            Ok((etag(view.revision), Json(view)))
        }
        Ok(Some(record)) => {
            let view = job_view(&state.controller, record)?;
            Ok((etag(view.revision), Json(view)))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job {namespace}/{name}"),
        )),
    }
}

/// The stored job, or (`Err`) its record that does not decode, as the store reports it.
async fn readable_job(
    controller: &crate::controller::Controller,
    namespace: &str,
    name: &str,
) -> Result<
    Result<
        Option<crate::state::Versioned<crate::state::JobRecord>>,
        crate::state::UnreadableRecord,
    >,
    StateError,
> {
    match controller.store.get_job(namespace, name).await {
        Err(StateError::Corrupt { location, reason }) => controller
            .store
            .unreadable_records()
            .into_iter()
            .find(|u| u.key == location)
            .map(Err)
            .ok_or(StateError::Corrupt { location, reason }),
        result => result.map(Ok),
    }
}

/// Parses a request body as one StreamJob (YAML or JSON); 400 names every bad field.
fn parse_job_body(body: &[u8]) -> ApiResult<scheduler::input::StreamJob> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "request body is not UTF-8"))?;
    let mut jobs = scheduler::input::parse_stream_jobs("request body", text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if jobs.len() != 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body: expected one StreamJob, found {}", jobs.len()),
        ));
    }
    let job = jobs.remove(0);
    if job
        .metadata
        .annotations
        .contains_key(crate::kube_jobs::ORIGIN_ANNOTATION)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: metadata.annotations[{:?}]: set by twinsite on jobs that come from StreamJob objects; remove it",
                crate::kube_jobs::ORIGIN_ANNOTATION
            ),
        ));
    }
    // Sizing errors (bad quantities, plan) are the user's to fix now, not the loop's later.
    job.demand()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(job)
}

fn check_policy(state: &ApiState, job: &scheduler::input::StreamJob) -> ApiResult<()> {
    state
        .controller
        .policy
        .check_jobs("request body", std::slice::from_ref(job))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The job as it will be stored: `resourceVersion` dropped (it is the client's
/// precondition, the store keeps the revision), and every `<redacted>` placeholder replaced
/// by the value it stands for in `stored`, or refused with 422 naming its field.
fn job_to_store(
    state: &ApiState,
    job: &scheduler::input::StreamJob,
    stored: Option<&crate::state::StoredSpec>,
) -> ApiResult<crate::state::StoredSpec> {
    let mut job = job.clone();
    job.metadata.resource_version = None;
    let mut object = serde_json::to_value(&job).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the job: {e}"),
        )
    })?;
    let stored = stored
        .map(crate::state::StoredSpec::to_json)
        .transpose()
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the stored job: {e}"),
            )
        })?;
    state
        .controller
        .redactor
        .restore(&mut object, stored.as_ref())
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("request body: {e}"),
            )
        })?;
    // The placeholders stood for strings and were replaced by strings: still a StreamJob.
    let restored = serde_json::from_value::<scheduler::input::StreamJob>(object).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request body with its redacted values restored: {e}"),
        )
    })?;
    Ok(restored.into())
}

pub(super) async fn create_job(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let prepared = parse_job_body(&body)
        .and_then(|job| check_policy(&state, &job).map(|()| job))
        .and_then(|job| {
            if job.metadata.resource_version.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request body: metadata.resourceVersion: must not be set when creating a job (the store assigns it; PUT edits an existing job)",
                ));
            }
            let object = job_to_store(&state, &job, None)?;
            Ok((job, object))
        });
    let (job, object) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return Err(state.rejected(&caller, "create", "(unparsed)", error).await),
    };
    let target = job.id().0;
    let _admission = match state.controller.tenant_room(&job).await? {
        Ok(admission) => admission,
        Err(message) => {
            let error = ApiError::new(StatusCode::FORBIDDEN, message);
            return Err(state.rejected(&caller, "create", &target, error).await);
        }
    };
    let mut record = new_record(&job);
    record.spec = object;
    let result = state
        .controller
        .store
        .put_job(&record, Expected::Absent)
        .await;
    if let Err(StateError::Conflict { .. }) = result {
        let error = ApiError::new(
            StatusCode::CONFLICT,
            format!("job {target} exists; PUT /api/v1/jobs/{target} replaces it"),
        );
        return Err(state.rejected(&caller, "create", &target, error).await);
    }
    let view = state
        .written(
            &caller,
            "create",
            &job.metadata.namespace,
            &job.metadata.name,
            result,
        )
        .await?;
    Ok((StatusCode::CREATED, etag(view.revision), Json(view)))
}

pub(super) async fn replace_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    Extension(caller): Extension<auth::Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let controller = &state.controller;
    let target = format!("{namespace}/{name}");
    let parsed = parse_job_body(&body).and_then(|job| {
        if job.metadata.namespace != namespace || job.metadata.name != name {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body: metadata names {}/{}, the path names {target}",
                    job.metadata.namespace, job.metadata.name
                ),
            ));
        }
        check_policy(&state, &job)?;
        let preconditions = Preconditions::of(
            &headers,
            job.metadata.resource_version.as_deref(),
            "request body: metadata.resourceVersion",
        )?;
        Ok((job, preconditions))
    });
    let (job, preconditions) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Err(state.rejected(&caller, "replace", &target, error).await),
    };
    let _admission = match controller.tenant_room(&job).await? {
        Ok(admission) => admission,
        Err(message) => {
            let error = ApiError::new(StatusCode::FORBIDDEN, message);
            return Err(state.rejected(&caller, "replace", &target, error).await);
        }
    };
    let existing = match readable_job(controller, &namespace, &name).await? {
        Ok(existing) => existing,
        // Its generation is unknown, so nothing of it can be kept: the job must go through
        // a delete (which stops what runs of it) before it is created again.
        Err(unreadable) => {
            let error = ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "stored record {} cannot be used ({}): it cannot be replaced in place; delete the job, then create it again",
                    unreadable.key, unreadable.reason
                ),
            );
            return Err(state.rejected(&caller, "replace", &target, error).await);
        }
    };
    if let Some(owner) = existing
        .as_ref()
        .and_then(|c| controller.watch_owner(&c.value))
    {
        let error = ApiError::owned_by_object(&namespace, &name, &owner);
        return Err(state.rejected(&caller, "replace", &target, error).await);
    }
    let prepared = preconditions
        .check(&namespace, &name, existing.as_ref().map(|c| c.revision))
        .and_then(|()| job_to_store(&state, &job, existing.as_ref().map(|c| &c.value.spec)));
    let object = match prepared {
        Ok(object) => object,
        Err(error) => return Err(state.rejected(&caller, "replace", &target, error).await),
    };
    let (record, expected) = match existing {
        // Keep generation, placement and status: the loop sees the new spec and relaunches.
        // The write is conditional on the revision just read (and checked against the
        // client's), so an edit racing in between makes this one fail with 409.
        Some(current) => {
            let mut record = current.value;
            record.spec = object;
            (record, Expected::Revision(current.revision))
        }
        None => {
            let mut record = new_record(&job);
            record.spec = object;
            (record, Expected::Absent)
        }
    };
    let result = controller.store.put_job(&record, expected).await;
    let view = state
        .written(&caller, "replace", &namespace, &name, result)
        .await?;
    Ok((etag(view.revision), Json(view)))
}

pub(super) async fn delete_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    Extension(caller): Extension<auth::Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let controller = &state.controller;
    let target = format!("{namespace}/{name}");
    let preconditions = match delete_preconditions(&headers, &body) {
        Ok(preconditions) => preconditions,
        Err(error) => return Err(state.rejected(&caller, "delete", &target, error).await),
    };
    let no_such_job = || ApiError::new(StatusCode::NOT_FOUND, format!("no job {target}"));
    let owned = match &controller.stream_jobs {
        // Only with a watch configured: the check needs a read, and the delete then applies
        // to the revision read, so the job cannot become watch-owned in between.
        Some(_) => match readable_job(controller, &namespace, &name).await? {
            Ok(Some(current)) => match controller.watch_owner(&current.value) {
                Some(owner) => {
                    let error = ApiError::owned_by_object(&namespace, &name, &owner);
                    return Err(state.rejected(&caller, "delete", &target, error).await);
                }
                None => Some(current.revision),
            },
            // No owner can be read from a record that does not decode: the API may delete it
            // (the watch recreates the job if its object still exists).
            Err(unreadable) => Some(unreadable.revision),
            Ok(None) => None,
        },
        None => None,
    };
    let expected = if preconditions.is_empty() {
        Expected::Any
    } else {
        // An unreadable record is deleted like any other, at the revision it is stored at.
        let revision = match readable_job(controller, &namespace, &name).await? {
            Ok(Some(current)) => current.revision,
            Err(unreadable) => unreadable.revision,
            Ok(None) => {
                return Err(state
                    .rejected(&caller, "delete", &target, no_such_job())
                    .await);
            }
        };
        if let Err(error) = preconditions.check(&namespace, &name, Some(revision)) {
            return Err(state.rejected(&caller, "delete", &target, error).await);
        }
        Expected::Revision(revision)
    };
    let expected = match (expected, owned) {
        (Expected::Any, Some(revision)) => Expected::Revision(revision),
        (expected, _) => expected,
    };
    match controller
        .store
        .delete_job(&namespace, &name, expected)
        .await
    {
        Ok(true) => {
            controller
                .audit_as(&caller.actor, "delete", &target, "ok")
                .await;
            state.wake.notify_one();
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(state
            .rejected(&caller, "delete", &target, no_such_job())
            .await),
        Err(StateError::Conflict { actual, .. }) => {
            let error = ApiError::stale(&namespace, &name, actual);
            Err(state.rejected(&caller, "delete", &target, error).await)
        }
        Err(error) => {
            controller
                .audit_as(
                    &caller.actor,
                    "delete",
                    &target,
                    &format!("failed: {error}"),
                )
                .await;
            Err(error.into())
        }
    }
}
