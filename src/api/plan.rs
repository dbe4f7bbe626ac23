//! `GET /api/v1/plan`: what the planner would do now with every stored job.
//! Must never: act on the plan; it is a dry run on every replica.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use scheduler::model::JobPlacement;
use scheduler::placement::{self, PlacementOptions, PlacementRequest};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState};
use crate::controller::stream_job_of;

/// What the planner would do now with every stored job, without acting.
pub(super) async fn dry_run_plan(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Value>> {
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
