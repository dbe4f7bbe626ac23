//! The revision a job edit or delete names (`If-Match`, `resourceVersion`, DeleteOptions).
//! Must never: let a stale named revision through; it is a 409, as in Kubernetes.

use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::{ApiError, ApiResult};

/// Most entity tags one `If-Match` may list.
const MAX_IF_MATCH_TAGS: usize = 16;

/// The revision a client says it edits: `If-Match` and `metadata.resourceVersion` (PUT) or
/// `preconditions.resourceVersion` (DELETE). Each one given must hold.
#[derive(Debug, Default)]
pub(super) struct Preconditions {
    if_match: Option<IfMatch>,
    resource_version: Option<i64>,
}

#[derive(Debug)]
enum IfMatch {
    /// `*`: the job must exist.
    Exists,
    /// One of these revisions must be the current one.
    Revisions(Vec<i64>),
}

impl Preconditions {
    /// From the `If-Match` header(s) and a `resourceVersion` (`field` names where it came
    /// from, for a 400). An empty `resourceVersion` means none, as in Kubernetes.
    pub(super) fn of(
        headers: &HeaderMap,
        resource_version: Option<&str>,
        field: &str,
    ) -> ApiResult<Self> {
        let resource_version = match resource_version.map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<i64>() {
                Ok(revision) if revision > 0 => Some(revision),
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "{field}: expected the resourceVersion a GET returned (a positive integer), found {shown:?}"
                        ),
                    ));
                }
            },
        };
        Ok(Preconditions {
            if_match: parse_if_match(headers)?,
            resource_version,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.resource_version.is_none()
    }

    /// 409 (Kubernetes' `Status`) when the job's revision now (`None`: it does not exist)
    /// breaks one of them.
    pub(super) fn check(&self, namespace: &str, name: &str, current: Option<i64>) -> ApiResult<()> {
        let stale = || ApiError::stale(namespace, name, current);
        if let Some(wanted) = self.resource_version
            && current != Some(wanted)
        {
            return Err(stale());
        }
        match (&self.if_match, current) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(stale()),
            (Some(IfMatch::Exists), Some(_)) => Ok(()),
            (Some(IfMatch::Revisions(tags)), Some(revision)) if tags.contains(&revision) => Ok(()),
            (Some(IfMatch::Revisions(_)), Some(_)) => Err(stale()),
        }
    }
}

/// `If-Match: "12"`, `If-Match: "12", "13"` or `If-Match: *` (RFC 9110 13.1.1). Weak tags
/// never match under `If-Match`, so they are refused rather than silently failing.
fn parse_if_match(headers: &HeaderMap) -> ApiResult<Option<IfMatch>> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "If-Match: {why} (send the ETag a GET of the job returned, e.g. If-Match: \"42\", or *)"
            ),
        )
    };
    let mut tags = Vec::new();
    let mut star = false;
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| bad("not visible ASCII".to_owned()))?;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" {
                star = true;
                continue;
            }
            if tags.len() == MAX_IF_MATCH_TAGS {
                return Err(bad(format!("more than {MAX_IF_MATCH_TAGS} entity tags")));
            }
            let shown: String = part.chars().take(40).collect();
            if part.starts_with("W/") {
                return Err(bad(format!(
                    "{shown} is a weak entity tag, which never matches under If-Match"
                )));
            }
            let revision = part
                .strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|r| *r > 0)
                .ok_or_else(|| bad(format!("{shown} is not an entity tag of a job")))?;
            tags.push(revision);
        }
    }
    match (star, tags.is_empty()) {
        (true, true) => Ok(Some(IfMatch::Exists)),
        (true, false) => Err(bad("* cannot be combined with entity tags".to_owned())),
        (false, true) => Err(bad("no entity tag".to_owned())),
        (false, false) => Ok(Some(IfMatch::Revisions(tags))),
    }
}

/// The body a DELETE may carry: Kubernetes' `DeleteOptions`, of which only
/// `preconditions.resourceVersion` means something here; other fields are refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteOptions {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    preconditions: Option<DeletePreconditions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeletePreconditions {
    #[serde(default)]
    resource_version: Option<String>,
}

pub(super) fn delete_preconditions(headers: &HeaderMap, body: &[u8]) -> ApiResult<Preconditions> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Preconditions::of(headers, None, "");
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let options: DeleteOptions = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: {}: {} (expected DeleteOptions, e.g. {{\"preconditions\": {{\"resourceVersion\": \"42\"}}}})",
                e.path(),
                e.inner()
            ),
        )
    })?;
    if let Some(kind) = options.kind.as_deref().filter(|k| *k != "DeleteOptions") {
        let shown: String = kind.chars().take(40).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body: kind: expected DeleteOptions, found {shown:?}"),
        ));
    }
    if let Some(version) = options
        .api_version
        .as_deref()
        .filter(|v| !matches!(*v, "v1" | "meta.k8s.io/v1"))
    {
        let shown: String = version.chars().take(40).collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body: apiVersion: expected v1 or meta.k8s.io/v1, found {shown:?}"),
        ));
    }
    Preconditions::of(
        headers,
        options
            .preconditions
            .as_ref()
            .and_then(|p| p.resource_version.as_deref()),
        "request body: preconditions.resourceVersion",
    )
}
