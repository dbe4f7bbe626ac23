//! `GET /api/v1/reports/capacity` and `GET /api/v1/recommendations`: the capacity report and
//! right-sizing of `twinsite report capacity`, computed from the controller's live view
//! (sites' snapshots, stored jobs and their placements) and the configured metrics source.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use scheduler::input::StreamJob;
use scheduler::input::streamjob::FailoverTrigger;
use scheduler::model::{JobDemand, JobPlacement};
use scheduler::report::assemble::JobFacts;
use scheduler::report::{
    DEFAULT_TOP_JOBS, Format, ReportInputs, RightsizingInput, build_report, render,
};
use scheduler::rightsize::{Recommendation, RightsizeConfig};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState};
use crate::controller::stream_job_of;
use crate::job_metrics::recommend_all;

/// Everything a report reads, from the controller's store and sites.
struct LiveInputs {
    sites: Vec<scheduler::model::SiteSnapshot>,
    jobs: Vec<StreamJob>,
    demands: Vec<JobDemand>,
    running: Vec<JobPlacement>,
}

async fn live_inputs(state: &ApiState) -> Result<LiveInputs, ApiError> {
    let controller = &state.controller;
    let mut jobs = Vec::new();
    let mut demands = Vec::new();
    let mut running = Vec::new();
    for record in controller.store.list_jobs().await? {
        let Ok(job) = stream_job_of(&record.value) else {
            continue;
        };
        let Ok(demand) = job.demand() else {
            continue;
        };
        if let Some(p) = &record.value.placement
            && let Some(p) = p.detail.clone()
        {
            running.push(p);
        }
        jobs.push(job);
        demands.push(demand);
    }
    let mut sites = Vec::new();
    for site in controller.sites.values() {
        if let Ok(snapshot) = site.snapshot().await {
            sites.push(snapshot);
        }
    }
    Ok(LiveInputs {
        sites,
        jobs,
        demands,
        running,
    })
}

async fn recommendations_for(
    state: &ApiState,
    inputs: &LiveInputs,
    config: &RightsizeConfig,
) -> Result<
    Option<(
        String,
        Vec<Recommendation>,
        Vec<(scheduler::model::JobId, String)>,
    )>,
    ApiError,
> {
    let Some(source) = &state.metrics else {
        return Ok(None);
    };
    let facts: Vec<JobFacts> = inputs
        .jobs
        .iter()
        .zip(&inputs.demands)
        .map(|(job, demand)| JobFacts::of(job, demand))
        .collect();
    let (recommendations, failures) = recommend_all(
        source.as_ref(),
        &facts,
        chrono::Utc::now().timestamp_millis(),
        config,
    )
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("metrics source {}: {e}", source.describe()),
        )
    })?;
    Ok(Some((source.describe(), recommendations, failures)))
}

#[derive(Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
}

pub async fn capacity(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let format: Format = query.format.as_deref().unwrap_or("json").parse().map_err(
        |e: scheduler::report::UnknownFormat| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("query parameter format: {e}"),
            )
        },
    )?;
    let inputs = live_inputs(&state).await?;
    let config = crate::controller::rightsize::controller_config();
    let fetched = recommendations_for(&state, &inputs, &config).await?;
    let no_failover: BTreeSet<_> = inputs
        .jobs
        .iter()
        .filter(|j| j.spec.failover.mode == FailoverTrigger::None)
        .map(|j| j.id())
        .collect();
    let policy = state.controller.policy.placement_policy();
    let rightsizing =
        fetched
            .as_ref()
            .map(|(source, recommendations, failures)| RightsizingInput {
                source,
                lookback_ms: config.lookback_ms,
                recommendations,
                failures,
            });
    let report_inputs = ReportInputs {
        sites: &inputs.sites,
        jobs: &inputs.demands,
        policy: &policy,
        running: &inputs.running,
        no_failover: &no_failover,
        at: chrono::Utc::now(),
        rightsizing,
        top_jobs: DEFAULT_TOP_JOBS,
    };
    let mut report = build_report(&report_inputs);
    report.scale_profiles = scheduler::report::elasticity::scale_profile_what_ifs(
        &report_inputs,
        &inputs.jobs,
        state.controller.policy.scale_profiles(),
    );
    let content_type = match format {
        Format::Html => "text/html; charset=utf-8",
        Format::Json => "application/json",
        Format::Markdown => "text/markdown; charset=utf-8",
        Format::Table => "text/plain; charset=utf-8",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        render(&report, format),
    )
        .into_response())
}

pub async fn recommendations(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let inputs = live_inputs(&state).await?;
    let config = crate::controller::rightsize::controller_config();
    match recommendations_for(&state, &inputs, &config).await? {
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics source configured: set `metrics` (a Prometheus URL or a samples file) in the controller configuration",
        )),
        Some((source, recommendations, failures)) => Ok(axum::Json(json!({
            "source": source,
            "recommendations": recommendations,
            "failures": failures
                .iter()
                .map(|(job, error)| json!({"job": job.0, "error": error}))
                .collect::<Vec<_>>(),
        }))
        .into_response()),
    }
}

#[derive(Deserialize)]
pub struct RightsizeQuery {
    #[serde(default)]
    apply: bool,
}

/// `POST /api/v1/jobs/{ns}/{name}/rightsize[?apply=true]`: the job's recommendation and merge
/// patch; with `apply=true` the patch is written (audited) and the job relaunched with it.
pub async fn rightsize(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    Query(query): Query<RightsizeQuery>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
) -> Result<Response, ApiError> {
    let Some(source) = &state.metrics else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics source configured: set `metrics` in the controller configuration",
        ));
    };
    use crate::controller::rightsize::RightsizeError;
    match state
        .controller
        .rightsize(
            source.as_ref(),
            &namespace,
            &name,
            query.apply,
            &caller.actor,
        )
        .await
    {
        Ok(outcome) => {
            if outcome.applied {
                state.wake.notify_one();
            }
            Ok(axum::Json(outcome).into_response())
        }
        Err(RightsizeError::NotFound(job)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job {job}"),
        )),
        Err(error @ RightsizeError::Metrics { .. }) => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()))
        }
        Err(error @ RightsizeError::Invalid { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            error.to_string(),
        )),
        Err(RightsizeError::State(error)) => Err(error.into()),
    }
}
