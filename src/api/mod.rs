//! The HTTP API (axum, JSON): health, metrics, sites, nodes, jobs (read and edit), a dry-run
//! plan, the audit log, the OpenAPI document and, for simulated sites only, fault injection.
//!
//! May use: everything below it (`controller`, `kube_jobs`, `diagnosis`, `failover_plan`,
//! `job`, `site`, `state`, `metrics`). Must never: be used by them (only `commands` wires it),
//! or change a job except through the store (the reconcile loop acts on what it wrote).
//!
//! Every request but `/healthz`, `/readyz` (and `/metrics` when configured open) needs a
//! bearer token (`auth`): the read-only token reads, the admin token does everything.
//! Refusals (401/403) are audited. Job specs and audit entries are shown redacted
//! (`crate::redact`). Reads work on every replica; writes go to the state store, which
//! refuses them on a replica that does not lead (503, with the reason). Every mutation is
//! audited. A job edit or delete that names a revision (`metadata.resourceVersion`,
//! `If-Match`, or a DeleteOptions body) is refused with 409 when the revision is stale.

pub mod auth;
pub mod openapi;
pub mod page;
pub mod reports;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use scheduler::model::{JobPlacement, SiteId};
use scheduler::placement::{self, PlacementOptions, PlacementRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::controller::failover::{DriverError, RequestOutcome};
use crate::controller::{Controller, JobStatus, new_record, stream_job_of};
use crate::site::simulated::{Fault, SimulatedSiteHandle};
use crate::state::{Expected, StateError};

/// What the handlers share.
pub struct ApiState {
    pub controller: Arc<Controller>,
    /// Tokens and what they may do.
    pub access: auth::Access,
    /// Rate limit of refusal audit entries.
    pub refusals: auth::RefusalLog,
    /// Fault injection handles of simulated sites; empty disables `/api/v1/sim`.
    pub simulated: BTreeMap<SiteId, SimulatedSiteHandle>,
    /// Tells the reconcile loop to run a pass now (after an edit).
    pub wake: Arc<tokio::sync::Notify>,
    /// Where right-sizing reads job metrics; `None`: reports say so, recommendations 503.
    pub metrics: Option<Arc<dyn crate::metrics::MetricsSource>>,
}

impl ApiState {
    /// Audits a refused mutation and hands its error back.
    async fn rejected(
        &self,
        caller: &auth::Caller,
        action: &str,
        target: &str,
        error: ApiError,
    ) -> ApiError {
        self.controller
            .audit_as(
                &caller.actor,
                action,
                target,
                &format!("rejected: {}", error.message),
            )
            .await;
        error
    }

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

    /// Audits a refused request (401/403) without the presented token, within the rate
    /// limit; the path is bounded and redacted, the query string is left out.
    async fn audit_refusal(&self, method: &Method, path: &str, refusal: &auth::Refusal) {
        let decision = self.refusals.admit(std::time::Instant::now());
        if decision.suppressed_before > 0 {
            self.controller
                .audit_as(
                    "api",
                    "authorize",
                    "refused requests",
                    &format!(
                        "rejected: {} more refused requests in the previous {} s were not audited one by one (limit {} per window)",
                        decision.suppressed_before,
                        auth::REFUSAL_WINDOW.as_secs(),
                        auth::REFUSALS_AUDITED_PER_WINDOW
                    ),
                )
                .await;
        }
        if !decision.audit_this {
            tracing::debug!(%method, status = %refusal.status, "refused request not audited (rate limit)");
            return;
        }
        let mut shown = path.to_owned();
        if shown.len() > MAX_AUDITED_PATH {
            let mut end = MAX_AUDITED_PATH;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push('…');
        }
        self.controller
            .audit_as(
                &refusal.actor,
                "authorize",
                &format!("{method} {shown}"),
                &format!("rejected: {} {}", refusal.status.as_u16(), refusal.message),
            )
            .await;
    }
}

/// Longest request path an audit entry keeps.
const MAX_AUDITED_PATH: usize = 256;

/// Paths any client may call without a token.
fn open_path(access: &auth::Access, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || (path == "/metrics" && access.open_metrics)
}

/// The operator page and its sign-in: they check a bearer token or the session cookie
/// themselves (`page.rs`), so a browser can be shown the sign-in form.
fn page_path(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::GET | &Method::HEAD, "/") | (&Method::POST, "/login" | "/logout")
    )
}

/// Authenticates and authorises every request before routing (so unknown paths and bodies
/// of refused requests are never looked at), and hands the handlers the [`auth::Caller`].
async fn require_token(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if open_path(&state.access, request.uri().path())
        || page_path(request.method(), request.uri().path())
    {
        return next.run(request).await;
    }
    let needed = if matches!(*request.method(), Method::GET | Method::HEAD) {
        auth::Role::Read
    } else {
        auth::Role::Admin
    };
    match auth::authorize(request.headers(), &state.access, needed) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            state
                .audit_refusal(request.method(), request.uri().path(), &refusal)
                .await;
            let status = refusal.status;
            let mut response = ApiError::new(status, refusal.message).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"twinsite\""),
                );
            }
            response
        }
    }
}

pub fn router(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    let mut router = Router::new()
        .route("/", get(page::page))
        .route("/login", axum::routing::post(page::login))
        .route("/logout", axum::routing::post(page::logout))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/jobs", get(list_jobs).post(create_job))
        .route(
            "/api/v1/jobs/{namespace}/{name}",
            get(get_job).put(replace_job).delete(delete_job),
        )
        .route("/api/v1/plan", get(dry_run_plan))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/reports/capacity", get(reports::capacity))
        .route("/api/v1/recommendations", get(reports::recommendations))
        .route(
            "/api/v1/jobs/{namespace}/{name}/rightsize",
            axum::routing::post(reports::rightsize),
        )
        .route("/api/v1/failover", get(list_failovers).post(failover))
        .route("/api/v1/failover/{id}", get(get_failover))
        .route(
            "/api/v1/failover/{id}/cancel",
            axum::routing::post(cancel_failover),
        )
        .route("/api/v1/recoveries", get(recoveries))
        .route("/api/v1/diagnosis", get(diagnosis));
    if !state.simulated.is_empty() {
        router = router.route(
            "/api/v1/sim/{site}/faults",
            get(list_faults).post(inject_fault).delete(clear_fault),
        );
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ))
        .with_state(state)
}

/// An error body: `{"error": "..."}` with a status; a conflict also carries the fields of
/// Kubernetes' `Status` (`kind`, `reason`, `details`, `code`, ...).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra members of the body, e.g. a Kubernetes `Status`.
    pub extra: Option<serde_json::Map<String, Value>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: None,
        }
    }

    /// 409: the job changed (or was deleted) since the revision the client named, as the
    /// Kubernetes API says it. `current`: the job's revision now, `None` when it is gone.
    pub(crate) fn stale(namespace: &str, name: &str, current: Option<i64>) -> ApiError {
        let message = match current {
            Some(revision) => format!(
                "Operation cannot be fulfilled on streamjobs.twinsite.io \"{namespace}/{name}\": the object has been modified (it is at resourceVersion {revision} now); please apply your changes to the latest version and try again"
            ),
            None => format!(
                "Operation cannot be fulfilled on streamjobs.twinsite.io \"{namespace}/{name}\": the object does not exist any more (deleted since the resourceVersion you named)"
            ),
        };
        let mut details = json!({"name": name, "namespace": namespace, "group": "twinsite.io", "kind": "streamjobs"});
        if let Some(revision) = current {
            details["currentResourceVersion"] = Value::String(revision.to_string());
        }
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Conflict",
            "details": details,
            "code": 409,
        });
        ApiError {
            status: StatusCode::CONFLICT,
            message,
            extra: status.as_object().cloned(),
        }
    }
}

impl ApiError {
    /// 409: the job came from a StreamJob object of the cluster this controller watches,
    /// which is the job's truth; an API edit would be undone by the next sync.
    pub(crate) fn owned_by_object(namespace: &str, name: &str, owner: &str) -> ApiError {
        let message = format!(
            "job {namespace}/{name} is owned by {owner}: change or delete it there (kubectl apply, kubectl delete), not through the API"
        );
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Conflict", "code": 409,
            "details": {"name": name, "namespace": namespace, "group": "twinsite.io", "kind": "streamjobs"},
        });
        ApiError {
            status: StatusCode::CONFLICT,
            message,
            extra: status.as_object().cloned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra.unwrap_or_default();
        body.insert("error".into(), Value::String(self.message));
        (self.status, Json(Value::Object(body))).into_response()
    }
}

/// The HTTP status a state-store error maps to.
fn state_status(error: &StateError) -> StatusCode {
    match error {
        StateError::NotLeader { .. } | StateError::Fenced { .. } => StatusCode::SERVICE_UNAVAILABLE,
        StateError::Conflict { .. } => StatusCode::CONFLICT,
        StateError::NotFound { .. } => StatusCode::NOT_FOUND,
        StateError::InvalidName { .. } => StatusCode::BAD_REQUEST,
        StateError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> ApiError {
        let status = match &error {
            StateError::NotLeader { .. } | StateError::Fenced { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StateError::Conflict { .. } => StatusCode::CONFLICT,
            StateError::NotFound { .. } => StatusCode::NOT_FOUND,
            StateError::InvalidName { .. } => StatusCode::BAD_REQUEST,
            StateError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/v1/openapi.json",
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the state store answers and, on the leader, the first pass is done.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let controller = &state.controller;
    if let Err(error) = controller.store.list_sites().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store: {error}\n"),
        )
            .into_response();
    }
    if controller.is_leading() && *controller.passes().borrow() == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "leading; first reconcile pass not done yet\n",
        )
            .into_response();
    }
    let role = if controller.is_leading() {
        "leader"
    } else {
        "follower"
    };
    (StatusCode::OK, format!("ready ({role})\n")).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.controller.metrics.encode(),
    )
        .into_response()
}

#[derive(Serialize)]
struct SiteSummary {
    site: String,
    kind: &'static str,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    nodes: usize,
    ready_nodes: usize,
    jobs: usize,
    storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::state::SiteRecord>,
    /// The failover engine's judgement (the leader's): up, suspect, lost, returning,
    /// unreachable-without-quorum, with the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<crate::controller::health::SiteHealth>,
}

async fn sites(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<SiteSummary>>> {
    let controller = &state.controller;
    let judged = controller.site_health();
    let mut out = Vec::new();
    for (id, site) in &controller.sites {
        let health = site.health().await;
        let snapshot = site.snapshot().await.ok();
        let jobs = site.jobs().await.map(|j| j.len()).unwrap_or(0);
        let spec = controller.policy.site(id);
        out.push(SiteSummary {
            site: id.0.clone(),
            kind: if state.simulated.contains_key(id) {
                "simulated"
            } else {
                "kubernetes"
            },
            reachable: health.api_reachable,
            detail: health.detail,
            nodes: snapshot.as_ref().map_or(0, |s| s.nodes.len()),
            ready_nodes: snapshot
                .as_ref()
                .map_or(0, |s| s.nodes.iter().filter(|n| n.ready).count()),
            jobs,
            storage: spec.and_then(|s| s.storage.clone()),
            // An unreadable site record is shown as none (it is reported with the others).
            state: match controller.store.get_site(&id.0).await {
                Err(StateError::Corrupt { .. }) => None,
                record => record?.map(|v| v.value),
            },
            health: judged.iter().find(|h| h.site == id.0).cloned(),
        });
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct NodesQuery {
    site: Option<String>,
}

async fn nodes(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<NodesQuery>,
) -> ApiResult<Json<Value>> {
    let controller = &state.controller;
    if let Some(name) = &query.site
        && !controller.sites.contains_key(&SiteId(name.clone()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("query parameter site: no site {name:?}"),
        ));
    }
    let mut out = Vec::new();
    for (id, site) in &controller.sites {
        if query.site.as_ref().is_some_and(|s| s != &id.0) {
            continue;
        }
        match site.snapshot().await {
            Ok(snapshot) => {
                for node in snapshot.nodes {
                    out.push(json!({ "site": id.0, "node": node }));
                }
            }
            Err(error) => out.push(json!({ "site": id.0, "error": error.to_string() })),
        }
    }
    Ok(Json(Value::Array(out)))
}

/// A job as the API shows it: secret-looking values redacted (`crate::redact`), its
/// revision also as a Kubernetes `resourceVersion` (and, on single-job answers, the `ETag`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
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

async fn list_jobs(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<JobView>>> {
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

async fn get_job(
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

async fn create_job(
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

/// Most entity tags one `If-Match` may list.
const MAX_IF_MATCH_TAGS: usize = 16;

/// The revision a client says it edits: `If-Match` and `metadata.resourceVersion` (PUT) or
/// `preconditions.resourceVersion` (DELETE). Each one given must hold.
#[derive(Debug, Default)]
struct Preconditions {
    if_match: Option<IfMatch>,
    resource_version: Option<i64>,
}

#[derive(Debug)]
enum IfMatch {
    /// `*`: the job must exist.
    Exists,
    /// One of these revisions must be the current one.
    Revisions(Vec<i64>),
}

impl Preconditions {
    /// From the `If-Match` header(s) and a `resourceVersion` (`field` names where it came
    /// from, for a 400). An empty `resourceVersion` means none, as in Kubernetes.
    fn of(headers: &HeaderMap, resource_version: Option<&str>, field: &str) -> ApiResult<Self> {
        let resource_version = match resource_version.map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(revision) if revision > 0 => Some(revision),
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "{field}: expected the resourceVersion a GET returned (a positive integer), found {shown:?}"
                        ),
                    ));
                }
            },
        };
        Ok(Preconditions {
            if_match: parse_if_match(headers)?,
            resource_version,
        })
    }

    fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.resource_version.is_none()
    }

    /// 409 (Kubernetes' `Status`) when the job's revision now (`None`: it does not exist)
    /// breaks one of them.
    fn check(&self, namespace: &str, name: &str, current: Option<i64>) -> ApiResult<()> {
        let stale = || ApiError::stale(namespace, name, current);
        if let Some(wanted) = self.resource_version
            && current != Some(wanted)
        {
            return Err(stale());
        }
        match (&self.if_match, current) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(stale()),
            (Some(IfMatch::Exists), Some(_)) => Ok(()),
            (Some(IfMatch::Revisions(tags)), Some(revision)) if tags.contains(&revision) => Ok(()),
            (Some(IfMatch::Revisions(_)), Some(_)) => Err(stale()),
        }
    }
}

/// `If-Match: "12"`, `If-Match: "12", "13"` or `If-Match: *` (RFC 9110 13.1.1). Weak tags
/// never match under `If-Match`, so they are refused rather than silently failing.
fn parse_if_match(headers: &HeaderMap) -> ApiResult<Option<IfMatch>> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "If-Match: {why} (send the ETag a GET of the job returned, e.g. If-Match: \"42\", or *)"
            ),
        )
    };
    let mut tags = Vec::new();
    let mut star = false;
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| bad("not visible ASCII".to_owned()))?;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" {
                star = true;
                continue;
            }
            if tags.len() == MAX_IF_MATCH_TAGS {
                return Err(bad(format!("more than {MAX_IF_MATCH_TAGS} entity tags")));
            }
            let shown: String = part.chars().take(40).collect();
            if part.starts_with("W/") {
                return Err(bad(format!(
                    "{shown} is a weak entity tag, which never matches under If-Match"
                )));
            }
            let revision = part
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|r| *r > 0)
                .ok_or_else(|| bad(format!("{shown} is not an entity tag of a job")))?;
            tags.push(revision);
        }
    }
    match (star, tags.is_empty()) {
        (true, true) => Ok(Some(IfMatch::Exists)),
        (true, false) => Err(bad("* cannot be combined with entity tags".to_owned())),
        (false, true) => Err(bad("no entity tag".to_owned())),
        (false, false) => Ok(Some(IfMatch::Revisions(tags))),
    }
}

async fn replace_job(
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

/// The body a DELETE may carry: Kubernetes' `DeleteOptions`, of which only
/// `preconditions.resourceVersion` means something here; other fields are refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteOptions {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    preconditions: Option<DeletePreconditions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeletePreconditions {
    #[serde(default)]
    resource_version: Option<String>,
}

fn delete_preconditions(headers: &HeaderMap, body: &[u8]) -> ApiResult<Preconditions> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Preconditions::of(headers, None, "");
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let options: DeleteOptions = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: {}: {} (expected DeleteOptions, e.g. {{\"preconditions\": {{\"resourceVersion\": \"42\"}}}})",
                e.path(),
                e.inner()
            ),
        )
    })?;
    if let Some(kind) = options.kind.as_deref().filter(|k| *k != "DeleteOptions") {
        let shown: String = kind.chars().take(40).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body: kind: expected DeleteOptions, found {shown:?}"),
        ));
    }
    if let Some(version) = options
        .api_version
        .as_deref()
        .filter(|v| !matches!(*v, "v1" | "meta.k8s.io/v1"))
    {
        let shown: String = version.chars().take(40).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body: apiVersion: expected v1 or meta.k8s.io/v1, found {shown:?}"),
        ));
    }
    Preconditions::of(
        headers,
        options
            .preconditions
            .as_ref()
            .and_then(|p| p.resource_version.as_deref()),
        "request body: preconditions.resourceVersion",
    )
}

async fn delete_job(
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

/// What the planner would do now with every stored job, without acting.
async fn dry_run_plan(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Value>> {
    let controller = &state.controller;
    let records = controller.store.list_jobs().await?;
    let mut demands = Vec::new();
    let mut running: Vec<JobPlacement> = Vec::new();
    let mut problems = Vec::new();
    for record in &records {
        match stream_job_of(&record.value).and_then(|j| j.demand().map_err(|e| e.to_string())) {
            Ok(demand) => demands.push(demand),
            Err(error) => problems.push(json!({
                "job": format!("{}/{}", record.value.namespace, record.value.name),
                "error": error,
            })),
        }
        if let Some(p) = &record.value.placement
            && let Some(p) = p.detail.clone()
        {
            running.push(p);
        }
    }
    let mut snapshots = Vec::new();
    let mut unreachable = Vec::new();
    for (id, site) in &controller.sites {
        match site.snapshot().await {
            Ok(s) => snapshots.push(s),
            Err(e) => unreachable.push(json!({ "site": id.0, "error": e.to_string() })),
        }
    }
    let policy = controller.policy.placement_policy();
    // Planning a thousand jobs takes tens of milliseconds: keep it off the async workers.
    let plan = tokio::task::spawn_blocking(move || {
        placement::plan(&PlacementRequest {
            sites: &snapshots,
            jobs: &demands,
            policy: &policy,
            running: &running,
            at: chrono::Utc::now(),
            options: PlacementOptions::default(),
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("planner failed: {e}"),
        )
    })?;
    Ok(Json(json!({
        "plan": plan,
        "unreachableSites": unreachable,
        "unusableJobs": problems,
    })))
}

#[derive(Deserialize)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn audit(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(100).min(10_000);
    let entries = state
        .controller
        .store
        .list_audit(query.from.unwrap_or(1), limit)
        .await?;
    let redactor = &state.controller.redactor;
    Ok(Json(Value::Array(
        entries
            .into_iter()
            .map(|r| {
                // Entries written before redaction existed are redacted on the way out.
                let mut entry = r.entry;
                let name = entry.target.rsplit('/').next().unwrap_or("").to_owned();
                entry.result = redactor.redact_text_keeping(&entry.result, &[&name]);
                entry.target = redactor.redact_text(&entry.target);
                json!({ "seq": r.seq, "entry": entry })
            })
            .collect(),
    )))
}

fn simulated_site(state: &ApiState, site: &str) -> ApiResult<SimulatedSiteHandle> {
    state
        .simulated
        .get(&SiteId(site.to_string()))
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no simulated site {site:?}; fault injection exists only for simulated sites"
                ),
            )
        })
}

async fn list_faults(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
) -> ApiResult<Json<Vec<Fault>>> {
    Ok(Json(simulated_site(&state, &site)?.active_faults()))
}

fn parse_fault(body: &[u8]) -> ApiResult<Fault> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: {}: {} (expected e.g. {{\"kind\":\"node-down\",\"node\":\"n1\"}})",
                e.path(),
                e.inner()
            ),
        )
    })
}

async fn change_fault(
    state: &ApiState,
    site: &str,
    caller: &auth::Caller,
    body: &[u8],
    inject: bool,
) -> ApiResult<StatusCode> {
    let handle = simulated_site(state, site)?;
    let action = if inject {
        "inject-fault"
    } else {
        "clear-fault"
    };
    let fault = match parse_fault(body) {
        Ok(fault) => fault,
        Err(error) => return Err(state.rejected(caller, action, site, error).await),
    };
    let target = format!(
        "{site}: {}",
        serde_json::to_string(&fault).unwrap_or_default()
    );
    let result = if inject {
        handle.inject(fault)
    } else {
        handle.clear(fault)
    };
    match result {
        Ok(()) => {
            state
                .controller
                .audit_as(&caller.actor, action, &target, "ok")
                .await;
            state.wake.notify_one();
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            let error = ApiError::new(StatusCode::BAD_REQUEST, error.to_string());
            Err(state.rejected(caller, action, &target, error).await)
        }
    }
}

async fn inject_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &caller, &body, true).await
}

async fn clear_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &caller, &body, false).await
}

/// `POST /api/v1/failover` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailoverRequest {
    from: String,
    /// Absent: the other site, when there are exactly two.
    #[serde(default)]
    to: Option<String>,
    mode: failover::MoveMode,
    #[serde(default)]
    dry_run: bool,
    /// `failback`: move home the jobs whose preferred site is `to` and that run in `from`.
    #[serde(default)]
    kind: FailoverKind,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum FailoverKind {
    #[default]
    Failover,
    Failback,
}

/// Ops-triggered failover or failback. The dry run returns the engine's plan (what moves
/// where, what does not fit and why, expected RPO per job) and changes nothing; otherwise the
/// leader's failover engine starts an operation (202 with it; progress at
/// `GET /api/v1/failover/{id}`).
async fn failover(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let request: FailoverRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: {}: {} (expected {{\"from\": \"dc-a\", \"to\": \"dc-b\", \"mode\": \"planned\"|\"forced\", \"dryRun\": true}})",
                e.path(),
                e.inner()
            ),
        )
    })?;
    let sites: Vec<&SiteId> = state.controller.sites.keys().collect();
    let known = |name: &str, field: &str| -> ApiResult<SiteId> {
        let id = SiteId(name.to_string());
        if state.controller.sites.contains_key(&id) {
            Ok(id)
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body: {field}: no site {name:?} (sites: {})",
                    sites
                        .iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    };
    let from = known(&request.from, "from")?;
    let to = match &request.to {
        Some(to) => known(to, "to")?,
        None => match sites
            .iter()
            .filter(|s| **s != &from)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [only] => (**only).clone(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request body: to: required when there are more than two sites",
                ));
            }
        },
    };
    if from == to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body: to: must differ from from",
        ));
    }
    let target = format!("{from} -> {to}");
    let action = match request.kind {
        FailoverKind::Failover => "failover",
        FailoverKind::Failback => "failback",
    };
    let ops_request = match request.kind {
        FailoverKind::Failover => failover::OpsRequest::Failover {
            from,
            to,
            mode: request.mode,
            dry_run: request.dry_run,
        },
        FailoverKind::Failback => failover::OpsRequest::Failback {
            from,
            to,
            mode: request.mode,
            dry_run: request.dry_run,
        },
    };
    // A dry run asks the engine that would carry the request out (on a follower, one
    // resumed from the store); anything else only the leader's.
    let answered = if request.dry_run {
        state.controller.failover_dry_run(ops_request).await
    } else {
        state.controller.failover_request(ops_request).await
    };
    let outcome = match answered {
        Ok(outcome) => outcome,
        Err(error) => {
            let status = match error {
                DriverError::NotLeading => StatusCode::SERVICE_UNAVAILABLE,
                DriverError::State(ref e) => state_status(e),
            };
            let error = ApiError::new(status, error.to_string());
            return Err(state.rejected(&caller, action, &target, error).await);
        }
    };
    match outcome {
        RequestOutcome::Plan(plan) => Ok((
            StatusCode::OK,
            Json(json!({ "dryRun": true, "plan": plan })),
        )),
        RequestOutcome::Rejected(error) => {
            let error = ApiError::new(StatusCode::CONFLICT, error.to_string());
            Err(state.rejected(&caller, action, &target, error).await)
        }
        RequestOutcome::Operation(op) => {
            state
                .controller
                .audit_as(
                    &caller.actor,
                    action,
                    &target,
                    &format!("ok: operation {} started", op.id),
                )
                .await;
            state.wake.notify_one();
            Ok((StatusCode::ACCEPTED, Json(operation_view(&op))))
        }
    }
}

/// An operation as the API shows it: the persisted state machine plus its progress counts.
fn operation_view(op: &failover::Operation) -> Value {
    let mut value = serde_json::to_value(op).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "progress".into(),
            serde_json::to_value(op.progress()).unwrap_or(Value::Null),
        );
        map.insert("finished".into(), Value::Bool(!op.is_active()));
    }
    value
}

/// `GET /api/v1/failover`: every operation, oldest first.
async fn list_failovers(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Value>> {
    let ops = state.controller.failover_operations().await?;
    Ok(Json(Value::Array(ops.iter().map(operation_view).collect())))
}

fn operation_id(id: &str) -> ApiResult<u64> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("operation id {id:?} is not a number"),
        )
    })
}

/// `GET /api/v1/failover/{id}`: one operation, its progress, and the RTO/RPO of each job
/// it relaunched so far.
async fn get_failover(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = operation_id(&id)?;
    let Some(op) = state.controller.failover_operation(id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no failover operation {id}"),
        ));
    };
    let mut view = operation_view(&op);
    let reports: Vec<_> = state
        .controller
        .failover
        .reports()
        .into_iter()
        .filter(|r| r.op == Some(id))
        .collect();
    if let Value::Object(map) = &mut view {
        map.insert(
            "recoveries".into(),
            serde_json::to_value(reports).unwrap_or(Value::Null),
        );
    }
    Ok(Json(view))
}

/// `POST /api/v1/failover/{id}/cancel`: pending jobs stay where they run; jobs already
/// moving finish; every job ends running exactly once.
async fn cancel_failover(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Extension(caller): Extension<auth::Caller>,
) -> ApiResult<Json<Value>> {
    let op = operation_id(&id)?;
    let target = format!("operation {op}");
    match state
        .controller
        .failover_request(failover::OpsRequest::Cancel { op })
        .await
    {
        Ok(RequestOutcome::Operation(operation)) => {
            state
                .controller
                .audit_as(&caller.actor, "cancel", &target, "ok")
                .await;
            state.wake.notify_one();
            Ok(Json(operation_view(&operation)))
        }
        Ok(RequestOutcome::Rejected(error)) => {
            let status = match error {
                failover::RequestError::UnknownOperation { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            let error = ApiError::new(status, error.to_string());
            Err(state.rejected(&caller, "cancel", &target, error).await)
        }
        Ok(RequestOutcome::Plan(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cancel answered with a plan",
        )),
        Err(error) => {
            let status = match error {
                DriverError::NotLeading => StatusCode::SERVICE_UNAVAILABLE,
                DriverError::State(ref e) => state_status(e),
            };
            let error = ApiError::new(status, error.to_string());
            Err(state.rejected(&caller, "cancel", &target, error).await)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiagnosisQuery {
    /// `namespace/name`: one job only.
    job: Option<String>,
    /// `false`: twinsite's own findings only (no Flink metrics are read).
    metrics: Option<bool>,
    /// `json` (default) or `table`.
    format: Option<String>,
}

/// `GET /api/v1/diagnosis`: every job's findings (worst first) with evidence and a
/// suggested action, from Flink's metrics (the configured source) and twinsite's own state.
async fn diagnosis(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<DiagnosisQuery>,
) -> ApiResult<Response> {
    let only = match query.job.as_deref() {
        None => None,
        Some(job) => {
            let Some((namespace, name)) = job.split_once('/') else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter job: {job:?} is not namespace/name"),
                ));
            };
            if state
                .controller
                .store
                .get_job(namespace, name)
                .await?
                .is_none()
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no job {namespace}/{name}"),
                ));
            }
            Some(scheduler::model::JobId::new(namespace, name))
        }
    };
    let table = match query.format.as_deref() {
        None | Some("json") => false,
        Some("table") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("query parameter format: {other:?} is not json or table"),
            ));
        }
    };
    let report = crate::diagnosis::diagnose(
        &state.controller,
        state.metrics.as_deref(),
        only.as_ref(),
        query.metrics.unwrap_or(true),
    )
    .await?;
    if table {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::diagnosis::render_table(&report),
        )
            .into_response());
    }
    Ok(Json(report).into_response())
}

/// `GET /api/v1/recoveries`: every relaunch the failover engine issued (reason, RTO, RPO)
/// and every job it could not relaunch, as this replica saw them.
async fn recoveries(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "relaunched": state.controller.failover.reports(),
        "notRelaunched": state.controller.failover.not_relaunched(),
    }))
}
