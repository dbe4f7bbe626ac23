//! `GET /api/v1/sites` and `GET /api/v1/nodes`: each site's health, nodes, jobs and stored state.
//! Must never: change a site; an unreachable one is shown as such, not left out.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use scheduler::model::SiteId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState};
use crate::state::StateError;

#[derive(Serialize)]
pub(super) struct SiteSummary {
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

pub(super) async fn sites(State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<SiteSummary>>> {
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
pub(super) struct NodesQuery {
    site: Option<String>,
}

pub(super) async fn nodes(
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
