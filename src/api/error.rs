//! The API's error answer: a status and `{"error": …}`, a Kubernetes `Status` for conflicts.
//! Must never: hide the cause; the message names the field, the job or the store's reason.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::StateError;

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
pub(super) fn state_status(error: &StateError) -> StatusCode {
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
        ApiError::new(state_status(&error), error.to_string())
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/v1/openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that does not lead (or was fenced) refuses writes with 503 and the store's
    /// reason, so a client retries against the leader; no test server can make a follower
    /// without etcd, so the mapping is pinned here.
    #[test]
    fn a_write_refused_for_want_of_leadership_is_503_with_the_stores_reason() {
        let refusals = [
            StateError::NotLeader {
                key: "/twinsite/jobs/ns/a".into(),
            },
            StateError::Fenced {
                key: "/twinsite/jobs/ns/a".into(),
                leader_key: "/twinsite/leader/1".into(),
                leader_rev: 7,
            },
        ];
        for error in refusals {
            let reason = error.to_string();
            let answer = ApiError::from(error);
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{reason}");
            assert_eq!(answer.message, reason);
        }
    }

    #[test]
    fn each_other_store_error_maps_to_the_status_its_cause_calls_for() {
        let cases = [
            (
                StateError::Conflict {
                    key: "k".into(),
                    expected: Some(1),
                    actual: Some(2),
                },
                StatusCode::CONFLICT,
            ),
            (
                StateError::NotFound { key: "k".into() },
                StatusCode::NOT_FOUND,
            ),
            (
                StateError::InvalidName {
                    what: "namespace",
                    value: "A_B".into(),
                    reason: "not a DNS label",
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                StateError::Unavailable {
                    operation: "put",
                    key: "k".into(),
                    reason: "timed out".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                StateError::EpochRegression {
                    key: "k".into(),
                    stored: 2,
                    offered: 1,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            let reason = error.to_string();
            assert_eq!(state_status(&error), status, "{reason}");
            assert_eq!(ApiError::from(error).status, status, "{reason}");
        }
    }
}
