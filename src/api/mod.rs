//! The HTTP API (axum, JSON): health, metrics, sites, nodes, jobs (read and edit), a dry-run
//! plan, the audit log, the OpenAPI document and, for simulated sites only, fault injection.
//!
//! Reads work on every replica; writes go to the state store, which refuses them on a
//! replica that does not lead (503, with the reason). Every mutation is audited.

pub mod auth;
pub mod openapi;
pub mod reports;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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
    /// The token mutations must present.
    pub token: String,
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
    /// and returns the job as now stored.
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
        result?;
        self.wake.notify_one();
        let record = self
            .controller
            .store
            .get_job(namespace, name)
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "deleted concurrently"))?;
        Ok(job_view(record))
    }
}

pub fn router(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    let mut router = Router::new()
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
        .route("/api/v1/recoveries", get(recoveries));
    if !state.simulated.is_empty() {
        router = router.route(
            "/api/v1/sim/{site}/faults",
            get(list_faults).post(inject_fault).delete(clear_fault),
        );
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An error body: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
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
}

async fn sites(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<SiteSummary>>> {
    let controller = &state.controller;
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
            state: controller.store.get_site(&id.0).await?.map(|v| v.value),
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

/// A job as the API shows it.
#[derive(Serialize)]
struct JobView {
    namespace: String,
    name: String,
    generation: u64,
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<Value>,
    status: JobStatus,
    spec: Value,
}

fn job_view(record: crate::state::Versioned<crate::state::JobRecord>) -> JobView {
    let status = JobStatus::from_value(&record.value.status);
    let spec = record
        .value
        .spec
        .get("spec")
        .cloned()
        .unwrap_or(Value::Null);
    JobView {
        namespace: record.value.namespace,
        name: record.value.name,
        generation: record.value.generation,
        revision: record.revision,
        site: record.value.placement.as_ref().map(|p| p.site.clone()),
        placement: record.value.placement.map(|p| p.detail),
        status,
        spec,
    }
}

async fn list_jobs(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<JobView>>> {
    let records = state.controller.store.list_jobs().await?;
    Ok(Json(records.into_iter().map(job_view).collect()))
}

async fn get_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<JobView>> {
    match state.controller.store.get_job(&namespace, &name).await? {
        Some(record) => Ok(Json(job_view(record))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job {namespace}/{name}"),
        )),
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

async fn create_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let caller = auth::authorize(&headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
    let job = match parse_job_body(&body).and_then(|job| check_policy(&state, &job).map(|()| job)) {
        Ok(job) => job,
        Err(error) => return Err(state.rejected(&caller, "create", "(unparsed)", error).await),
    };
    let target = job.id().0;
    if let Err(message) = state.controller.tenant_room(&job).await? {
        let error = ApiError::new(StatusCode::FORBIDDEN, message);
        return Err(state.rejected(&caller, "create", &target, error).await);
    }
    let result = state
        .controller
        .store
        .put_job(&new_record(&job), Expected::Absent)
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
    Ok((StatusCode::CREATED, Json(view)))
}

async fn replace_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<JobView>> {
    let caller = auth::authorize(&headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
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
        check_policy(&state, &job).map(|()| job)
    });
    let job = match parsed {
        Ok(job) => job,
        Err(error) => return Err(state.rejected(&caller, "replace", &target, error).await),
    };
    if let Err(message) = controller.tenant_room(&job).await? {
        let error = ApiError::new(StatusCode::FORBIDDEN, message);
        return Err(state.rejected(&caller, "replace", &target, error).await);
    }
    let existing = controller.store.get_job(&namespace, &name).await?;
    let (record, expected) = match existing {
        // Keep generation, placement and status: the loop sees the new spec and relaunches.
        Some(current) => {
            let mut record = current.value;
            record.spec = serde_json::to_value(&job).unwrap_or_default();
            (record, Expected::Revision(current.revision))
        }
        None => (new_record(&job), Expected::Absent),
    };
    let result = controller.store.put_job(&record, expected).await;
    let view = state
        .written(&caller, "replace", &namespace, &name, result)
        .await?;
    Ok(Json(view))
}

async fn delete_job(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let caller = auth::authorize(&headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
    let controller = &state.controller;
    let target = format!("{namespace}/{name}");
    match controller
        .store
        .delete_job(&namespace, &name, Expected::Any)
        .await
    {
        Ok(true) => {
            controller
                .audit_as(&caller.actor, "delete", &target, "ok")
                .await;
            state.wake.notify_one();
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => {
            controller
                .audit_as(&caller.actor, "delete", &target, "rejected: no such job")
                .await;
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no job {target}"),
            ))
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
            && let Ok(p) = serde_json::from_value::<JobPlacement>(p.detail.clone())
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
    Ok(Json(Value::Array(
        entries
            .into_iter()
            .map(|r| json!({ "seq": r.seq, "entry": r.entry }))
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
    headers: &HeaderMap,
    body: &[u8],
    inject: bool,
) -> ApiResult<StatusCode> {
    let caller = auth::authorize(headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
    let handle = simulated_site(state, site)?;
    let action = if inject {
        "inject-fault"
    } else {
        "clear-fault"
    };
    let fault = match parse_fault(body) {
        Ok(fault) => fault,
        Err(error) => return Err(state.rejected(&caller, action, site, error).await),
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
            Err(state.rejected(&caller, action, &target, error).await)
        }
    }
}

async fn inject_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &headers, &body, true).await
}

async fn clear_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &headers, &body, false).await
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
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = auth::authorize(&headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
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
    if request.dry_run && request.kind == FailoverKind::Failover {
        let plan =
            crate::failover_plan::dry_run(&state.controller, &from, &to, request.mode).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({ "dryRun": true, "plan": plan })),
        ));
    }
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
    let outcome = match state.controller.failover_request(ops_request).await {
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
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let caller = auth::authorize(&headers, &state.token).map_err(|(s, m)| ApiError::new(s, m))?;
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

/// `GET /api/v1/recoveries`: every relaunch the failover engine issued (reason, RTO, RPO)
/// and every job it could not relaunch, as this replica saw them.
async fn recoveries(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "relaunched": state.controller.failover.reports(),
        "notRelaunched": state.controller.failover.not_relaunched(),
    }))
}
