//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`. Written by hand
//! from `ROUTES`; a test checks every route in it answers (no 404 from the router).
//! Security: every operation but `/healthz` and `/readyz` needs a bearer token (read-only for
//! GET, admin for the rest); `/metrics` as configured (`api.metricsRequireToken`).

use axum::Json;
use serde_json::{Value, json};

/// Every documented route: method, path (OpenAPI template), summary, whether it mutates.
pub const ROUTES: &[(&str, &str, &str, bool)] = &[
    (
        "get",
        "/",
        "The operator page (HTML): sites, jobs and their RPO exposure, failover operations, recoveries, dry-run plans (query: plan=SITE, mode=planned|forced). A bearer token or the session cookie of /login; without either, the sign-in form",
        false,
    ),
    (
        "post",
        "/login",
        "Sign-in form post (token, csrf): sets the page's session cookie (HttpOnly, SameSite=Strict)",
        false,
    ),
    (
        "post",
        "/logout",
        "Sign-out form post (csrf): clears the page's session cookie",
        false,
    ),
    ("get", "/healthz", "Liveness: the process answers", false),
    (
        "get",
        "/readyz",
        "Readiness: state store reachable; leader has done a pass",
        false,
    ),
    (
        "get",
        "/metrics",
        "Prometheus metrics (OpenMetrics text)",
        false,
    ),
    ("get", "/api/v1/openapi.json", "This document", false),
    (
        "get",
        "/api/v1/sites",
        "Sites: reachability, nodes, jobs, stored state",
        false,
    ),
    (
        "get",
        "/api/v1/nodes",
        "Nodes of every site (query: site)",
        false,
    ),
    (
        "get",
        "/api/v1/jobs",
        "Every job with generation, placement and status",
        false,
    ),
    (
        "post",
        "/api/v1/jobs",
        "Create a job from a StreamJob (YAML or JSON)",
        true,
    ),
    ("get", "/api/v1/jobs/{namespace}/{name}", "One job", false),
    (
        "put",
        "/api/v1/jobs/{namespace}/{name}",
        "Create or replace a job; a changed spec is relaunched from a savepoint",
        true,
    ),
    (
        "delete",
        "/api/v1/jobs/{namespace}/{name}",
        "Delete a job; its running generation is stopped",
        true,
    ),
    (
        "get",
        "/api/v1/plan",
        "Dry run: the plan the scheduler would make now",
        false,
    ),
    (
        "get",
        "/api/v1/audit",
        "Audit log (query: from, limit)",
        false,
    ),
    (
        "get",
        "/api/v1/reports/capacity",
        "Capacity report from the live view (query: format=json|html|md|table)",
        false,
    ),
    (
        "get",
        "/api/v1/recommendations",
        "Right-sizing of every job from the configured metrics source",
        false,
    ),
    (
        "post",
        "/api/v1/failover",
        "Ops-triggered failover or failback {from, to, mode: planned|forced, dryRun, kind: failover|failback}; the dry run returns the plan, otherwise 202 with the started operation",
        true,
    ),
    (
        "get",
        "/api/v1/failover",
        "Every failover operation (site loss, failover, failback) with its progress",
        false,
    ),
    (
        "get",
        "/api/v1/failover/{id}",
        "One operation: per-job step, progress, and the RTO/RPO of each job it relaunched",
        false,
    ),
    (
        "post",
        "/api/v1/failover/{id}/cancel",
        "Cancel an operation: jobs not yet moving stay where they run; moving ones finish",
        true,
    ),
    (
        "get",
        "/api/v1/recoveries",
        "Every relaunch the failover engine issued (reason, RTO, RPO) and every job it could not relaunch",
        false,
    ),
    (
        "get",
        "/api/v1/diagnosis",
        "Every job's findings, worst first, with evidence and a suggested action: Flink metrics (consumer lag, backpressure, checkpoints, restarts, GC, skew, right-sizing) and twinsite's own (RPO exposure, failover readiness). Query: job=namespace/name, metrics=false (twinsite's findings only), format=json|table",
        false,
    ),
    (
        "post",
        "/api/v1/jobs/{namespace}/{name}/rightsize",
        "One job's right-sizing and merge patch; with apply=true the patch is applied (audited)",
        true,
    ),
    (
        "get",
        "/api/v1/sim/{site}/faults",
        "Simulated sites only: active faults",
        false,
    ),
    (
        "post",
        "/api/v1/sim/{site}/faults",
        "Simulated sites only: inject a fault",
        true,
    ),
    (
        "delete",
        "/api/v1/sim/{site}/faults",
        "Simulated sites only: clear a fault",
        true,
    ),
];

/// The document for an API whose `/metrics` needs a token.
pub fn build() -> Value {
    build_for(false)
}

/// The document; `open_metrics`: `/metrics` answers without a token.
pub fn build_for(open_metrics: bool) -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, mutates) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Bad request; the body names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "Not found"},
                "503": {"description": "Not the leader, or the state store is unavailable"}
            }
        });
        let open = matches!(*path, "/healthz" | "/readyz" | "/login" | "/logout")
            || (*path == "/metrics" && open_metrics);
        if matches!(*path, "/login" | "/logout") {
            operation["requestBody"] = json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "properties": {"token": {"type": "string"}, "csrf": {"type": "string"}}, "required": ["csrf"]}}}});
            operation["responses"]["303"] = json!({"description": "Signed in (or out): the session cookie is set (or cleared); back to /"});
            operation["responses"]["403"] = json!({"description": "Not sent from this server's form (csrf cookie, Origin, Sec-Fetch-Site)"});
        }
        if !open {
            operation["security"] = if *path == "/" {
                json!([{"bearer": []}, {"session": []}])
            } else {
                json!([{"bearer": []}])
            };
            let responses = &mut operation["responses"];
            responses["401"] = json!({"description": "No bearer token (WWW-Authenticate: Bearer)"});
            responses["403"] = if *mutates {
                json!({"description": "Wrong token, or the read-only token (changes need the admin token)"})
            } else {
                json!({"description": "Wrong token"})
            };
        }
        if path.starts_with("/api/v1/jobs/{namespace}/{name}") && !path.ends_with("/rightsize") {
            let etag = json!({"ETag": {"description": "The job's revision as a strong entity tag, \"<resourceVersion>\"", "schema": {"type": "string"}}});
            match *method {
                "get" | "put" => operation["responses"]["200"]["headers"] = etag,
                _ => {}
            }
            if matches!(*method, "put" | "delete") {
                let params = operation["parameters"]
                    .as_array_mut()
                    .expect("parameters is an array");
                params.push(json!({"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
                    "description": "The job's ETag (\"42\") or *: the change applies only to that revision"}));
                operation["responses"]["409"] = json!({
                    "description": "The revision named by If-Match, metadata.resourceVersion (PUT) or preconditions.resourceVersion (DELETE) is not current; or the job is owned by a StreamJob object of the watched cluster (config streamJobs), the message naming it: change it there (Kubernetes Status, reason Conflict)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
                });
            }
        }
        if *path == "/api/v1/jobs" && *method == "post" {
            operation["responses"]["409"] =
                json!({"description": "The job exists; PUT replaces it"});
        }
        if *mutates {
            let responses = &mut operation["responses"];
            responses["413"] = json!({"description": "Body larger than api.maxBodyBytes"});
            if path.starts_with("/api/v1/jobs")
                && !path.ends_with("/rightsize")
                && *method != "delete"
            {
                responses["422"] = json!({"description": "A <redacted> placeholder where no stored value exists (the body names the field)"});
            }
            if *method == "delete" && path.starts_with("/api/v1/jobs/") {
                operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeleteOptions"}}}});
            } else if (*method != "delete"
                && !path.ends_with("/rightsize")
                && !path.ends_with("/cancel"))
                || path.contains("/sim/")
            {
                operation["requestBody"] = if *path == "/api/v1/failover" {
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FailoverRequest"}}}})
                } else if path.contains("/sim/") {
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}}})
                } else {
                    json!({"required": true, "content": {
                        "application/yaml": {"schema": {"$ref": "#/components/schemas/StreamJob"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/StreamJob"}}
                    }})
                };
            }
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "twinsite", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "The read-only token (api.readTokenFile/readTokenEnv) may GET; the admin token (api.tokenFile/tokenEnv) may do everything"},
                "session": {"type": "apiKey", "in": "cookie", "name": "twinsite_session",
                "description": "The operator page's session, from POST /login; valid for the page (/) only"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Status": {"type": "object", "description": "Kubernetes' Status, plus error", "properties": {
                    "error": {"type": "string"},
                    "kind": {"const": "Status"},
                    "apiVersion": {"const": "v1"},
                    "status": {"const": "Failure"},
                    "message": {"type": "string"},
                    "reason": {"const": "Conflict"},
                    "details": {"type": "object", "properties": {
                        "name": {"type": "string"}, "namespace": {"type": "string"},
                        "group": {"type": "string"}, "kind": {"type": "string"},
                        "currentResourceVersion": {"type": "string"}
                    }},
                    "code": {"const": 409}
                }, "required": ["error", "kind", "reason", "code"]},
                "DeleteOptions": {"type": "object", "additionalProperties": false, "properties": {
                    "kind": {"const": "DeleteOptions"},
                    "apiVersion": {"enum": ["v1", "meta.k8s.io/v1"]},
                    "preconditions": {"type": "object", "additionalProperties": false, "properties": {"resourceVersion": {"type": "string"}}}
                }},
                "StreamJob": {"type": "object", "description": "A StreamJob (twinsite.io/v1alpha1); schema in deploy/crd/"},
                "FailoverRequest": {"type": "object", "properties": {
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "mode": {"enum": ["planned", "forced"]},
                    "dryRun": {"type": "boolean"},
                    "kind": {"enum": ["failover", "failback"]}
                }, "required": ["from", "mode"]},
                "Fault": {"type": "object", "properties": {
                    "kind": {"enum": ["node-down", "site-down", "partition", "slow-storage"]},
                    "node": {"type": "string"},
                    "delay_ms": {"type": "integer"}
                }, "required": ["kind"]}
            }
        }
    })
}

pub async fn document(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<super::ApiState>>,
) -> Json<Value> {
    Json(build_for(state.access.open_metrics))
}
