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
//!
//! Here: the shared state, the token check every request passes and the router. Each
//! resource's handlers have their own module: `health`, `sites`, `jobs` (its revision
//! checks in `preconditions`), `plan`, `audit`, `operations` (failover operations and
//! recoveries), `diagnosis`, `reports`, `faults` (simulated sites), the operator `page` with
//! its `session`s, and `openapi`; `error` is the error answer they share.

mod audit;
pub mod auth;
mod diagnosis;
mod error;
mod faults;
mod health;
mod jobs;
pub mod openapi;
mod operations;
pub mod page;
mod plan;
mod preconditions;
pub mod reports;
pub mod session;
mod sites;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use scheduler::model::SiteId;

use crate::controller::Controller;
use crate::site::simulated::SimulatedSiteHandle;

pub use error::ApiError;
use error::{ApiResult, not_found};

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
    pub metrics: Option<Arc<dyn crate::job_metrics::MetricsSource>>,
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
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/sites", get(sites::sites))
        .route("/api/v1/nodes", get(sites::nodes))
        .route("/api/v1/jobs", get(jobs::list_jobs).post(jobs::create_job))
        .route(
            "/api/v1/jobs/{namespace}/{name}",
            get(jobs::get_job)
                .put(jobs::replace_job)
                .delete(jobs::delete_job),
        )
        .route("/api/v1/plan", get(plan::dry_run_plan))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/reports/capacity", get(reports::capacity))
        .route("/api/v1/recommendations", get(reports::recommendations))
        .route(
            "/api/v1/jobs/{namespace}/{name}/rightsize",
            axum::routing::post(reports::rightsize),
        )
        .route(
            "/api/v1/failover",
            get(operations::list_failovers).post(operations::failover),
        )
        .route("/api/v1/failover/{id}", get(operations::get_failover))
        .route(
            "/api/v1/failover/{id}/cancel",
            axum::routing::post(operations::cancel_failover),
        )
        .route("/api/v1/recoveries", get(operations::recoveries))
        .route("/api/v1/diagnosis", get(diagnosis::diagnosis));
    if !state.simulated.is_empty() {
        router = router.route(
            "/api/v1/sim/{site}/faults",
            get(faults::list_faults)
                .post(faults::inject_fault)
                .delete(faults::clear_fault),
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
