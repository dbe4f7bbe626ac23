//! `/api/v1/failover` and `/api/v1/recoveries`: start, dry-run, follow and cancel operations.
//! Must never: move a job itself; the leader's failover engine does (a follower answers 503).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use scheduler::model::SiteId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::state_status;
use super::{ApiError, ApiResult, ApiState, auth};
use crate::controller::failover::{DriverError, RequestOutcome};

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
pub(super) async fn failover(
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
pub(super) async fn list_failovers(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Value>> {
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
pub(super) async fn get_failover(
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
pub(super) async fn cancel_failover(
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

/// `GET /api/v1/recoveries`: every relaunch the failover engine issued (reason, RTO, RPO)
/// and every job it could not relaunch, as this replica saw them.
pub(super) async fn recoveries(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "relaunched": state.controller.failover.reports(),
        "notRelaunched": state.controller.failover.not_relaunched(),
    }))
}
