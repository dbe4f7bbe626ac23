//! `GET /api/v1/audit`: the audit log, a page at a time, redacted on the way out.
//! Must never: show a secret an older entry still holds, or return an unbounded page.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, ApiState};

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn audit(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(100).min(10_000);
    let entries = state
        .controller
        .store
        .list_audit(query.from.unwrap_or(1), limit)
        .await?;
    let redactor = &state.controller.redactor;
    Ok(Json(Value::Array(
        entries
            .into_iter()
            .map(|r| {
                // Entries written before redaction existed are redacted on the way out.
                let mut entry = r.entry;
                let name = entry.target.rsplit('/').next().unwrap_or("").to_owned();
                entry.result = redactor.redact_text_keeping(&entry.result, &[&name]);
                entry.target = redactor.redact_text(&entry.target);
                json!({ "seq": r.seq, "entry": entry })
            })
            .collect(),
    )))
}
