//! `GET /api/v1/diagnosis`: every job's findings with evidence and a suggested action.
//! Must never: act on a finding; `crate::diagnosis` judges, this only asks and shows.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiagnosisQuery {
    /// `namespace/name`: one job only.
    job: Option<String>,
    /// `false`: twinsite's own findings only (no Flink metrics are read).
    metrics: Option<bool>,
    /// `json` (default) or `table`.
    format: Option<String>,
}

/// `GET /api/v1/diagnosis`: every job's findings (worst first) with evidence and a
/// suggested action, from Flink's metrics (the configured source) and twinsite's own state.
pub(super) async fn diagnosis(
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
