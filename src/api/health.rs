//! `/healthz`, `/readyz` and `/metrics`: what probes and Prometheus ask.
//! Must never: change anything, or say ready while the store does not answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the state store answers and, on the leader, the first pass is done.
pub(super) async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
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

pub(super) async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.controller.metrics.encode(),
    )
        .into_response()
}
