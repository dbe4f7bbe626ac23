//! `/api/v1/sim/{site}/faults`: fault injection into simulated sites (routed only if any).
//! Must never: reach a real site; a site without a simulated handle is a 404.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use scheduler::model::SiteId;

use super::{ApiError, ApiResult, ApiState, auth};
use crate::site::simulated::{Fault, SimulatedSiteHandle};

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

pub(super) async fn list_faults(
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

pub(super) async fn inject_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &caller, &body, true).await
}

pub(super) async fn clear_fault(
    State(state): State<Arc<ApiState>>,
    Path(site): Path<String>,
    Extension(caller): Extension<auth::Caller>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    change_fault(&state, &site, &caller, &body, false).await
}
