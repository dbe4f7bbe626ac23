//! A fake Kubernetes API server behind kube's `tower-test` mock: a stateful store of the
//! kinds the Kubernetes site uses (Nodes, Pods, Deployments, Services, ConfigMaps,
//! FlinkDeployments), answering LIST, WATCH (streamed JSON events with resource versions),
//! GET, server-side apply and merge PATCH (the `status` subresource kept apart from the
//! spec, as for CRDs with `subresources.status`), DELETE and DELETE-collection by label
//! selector, in the API server's own JSON shapes. Tests drive what a cluster would do
//! (pods appear, the operator writes status) through [`FakeApi`], and can inject a `409
//! Conflict` on the next apply or a `410 Gone` (`Expired`) on every open watch.
//!
//! Watches behave as the API server's: a watch from a `resourceVersion` first replays every
//! later event, and one from a version older than the last [`FakeApi::compact`] ends with
//! `410 Expired`. Lists honour `limit` with `continue` tokens over a snapshot, and
//! [`FakeApi::expire_next_continue`] makes the next continued page `410 Expired`, as when the
//! snapshot was compacted mid-list. StreamJobs get `metadata.generation` (1 when created,
//! one more on every spec change), and keep their status when their spec is replaced.
//!
//! It is not an API server: no validation, no admission, no field ownership (an apply
//! replaces the body but keeps `status`), no garbage collection. What it checks is the
//! adapter's side of the conversation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

pub type FakeBody = BoxBody<Bytes, Infallible>;

/// The fake Flink REST's stop with savepoint: `(job id, target dir) -> savepoint path`.
type RestStopHook = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// (plural, namespace, name) -> object. Cluster-scoped kinds have namespace "".
    objects: BTreeMap<(String, String, String), Value>,
    resource_version: u64,
    watches: Vec<Watch>,
    seen: Vec<Seen>,
    conflict_next_apply: bool,
    /// Every event sent, in order: (resource version, plural, type, object).
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches from a resource version below this one are answered `410 Expired`.
    compacted: u64,
    /// Paginated lists in progress: snapshot id -> (its resource version, its items).
    snapshots: BTreeMap<u64, (u64, Vec<Value>)>,
    expire_next_continue: bool,
    /// Savepoint requests the fake Flink REST answered: (job id, target dir).
    rest_stops: Vec<(String, String)>,
    /// What the fake Flink REST does on `POST /jobs/<id>/stop`: returns the savepoint path.
    on_rest_stop: Option<RestStopHook>,
}

struct Watch {
    plural: String,
    namespace: Option<String>,
    selector: Vec<(String, String)>,
    events: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

/// The fake server's state, shared with the test.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// `a=b,c=d` (equality selectors, all twinsite uses).
fn parse_selector(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn matches(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

fn decode(text: &str) -> String {
    let mut out = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b as char);
            i += 3;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect()
}

fn kind_of(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "nodes" => ("Node", "v1"),
        "pods" => ("Pod", "v1"),
        "services" => ("Service", "v1"),
        "configmaps" => ("ConfigMap", "v1"),
        "deployments" => ("Deployment", "apps/v1"),
        "flinkdeployments" => ("FlinkDeployment", "flink.apache.org/v1beta1"),
        "streamjobs" => ("StreamJob", "twinsite.io/v1alpha1"),
        _ => ("Unknown", "v1"),
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn respond(code: u16, body: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
        .unwrap()
}

/// A parsed resource path: `/api/v1/...` or `/apis/<group>/<version>/...`.
struct Path {
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    /// `status`, or `proxy/<rest>` of a service proxy.
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Path> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match *parts.first()? {
        "api" => &parts[2..],
        "apis" => &parts[3..],
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let plural = rest.first()?.to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let sub = (rest.len() > 2).then(|| rest[2..].join("/"));
    Some(Path {
        namespace,
        plural,
        name,
        sub,
    })
}

impl FakeApi {
    /// A kube client talking to a new fake server, and the server's state.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<FakeBody>>();
        let api = FakeApi::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = server.handle(request).await;
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), api)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.with(|s| {
            s.objects
                .get(&(plural.into(), namespace.into(), name.into()))
                .cloned()
        })
    }

    /// Objects of a kind, sorted by namespace and name.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.with(|s| {
            s.objects
                .iter()
                .filter(|((p, _, _), _)| p == plural)
                .map(|(_, v)| v.clone())
                .collect()
        })
    }

    /// Creates or replaces an object as the cluster would (a kubelet's pod, a node), and
    /// tells the watches.
    pub fn put(&self, plural: &str, mut object: Value) {
        self.with(|s| {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let key = (plural.to_owned(), namespace, name);
            let kind = if s.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let (k, api_version) = kind_of(plural);
            object["kind"] = json!(k);
            object["apiVersion"] = json!(api_version);
            if object["metadata"]["uid"].is_null() {
                object["metadata"]["uid"] = json!(format!("uid-{}", key.2));
            }
            let existing = s.objects.get(&key).cloned();
            Self::spec_update(plural, existing.as_ref(), &mut object);
            Self::store(s, key, object, kind);
        });
    }

    /// Removes an object as the cluster would (a pod gone).
    pub fn remove(&self, plural: &str, namespace: &str, name: &str) {
        self.with(|s| {
            if let Some(object) =
                s.objects
                    .remove(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
            {
                Self::deleted(s, plural, object);
            }
        });
    }

    /// Forgets the event history: a watch resumed from any version seen so far is answered
    /// `410 Expired` (the API server's watch cache or etcd compacted it).
    pub fn compact(&self) {
        self.with(|s| {
            s.compacted = s.resource_version + 1;
            s.history.clear();
        });
    }

    /// Ends every open watch normally, as the API server does when a watch's timeout is up:
    /// clients watch again from the last version they saw.
    pub fn end_watches(&self) {
        self.with(|s| s.watches.clear());
    }

    /// The next `continue` of a paginated list is answered `410 Expired`.
    pub fn expire_next_continue(&self) {
        self.with(|s| s.expire_next_continue = true);
    }

    /// What the API server does to an object's `metadata` when it is written: a StreamJob's
    /// `generation` is 1 when created and grows with every change of its spec, and a write
    /// of the main resource keeps its status (the status subresource owns it).
    fn spec_update(plural: &str, existing: Option<&Value>, object: &mut Value) {
        if plural != "streamjobs" {
            return;
        }
        let generation = match existing {
            None => 1,
            Some(old) => {
                let old_generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
                old_generation + u64::from(old["spec"] != object["spec"])
            }
        };
        object["metadata"]["generation"] = json!(generation);
        if let Some(old) = existing {
            object["status"] = old["status"].clone();
        }
        if object["status"].is_null()
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
    }

    /// Tells the watches an object is gone, stamped with the deletion's version.
    fn deleted(s: &mut State, plural: &str, mut object: Value) {
        s.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        Self::notify(s, plural, "DELETED", &object);
    }

    /// The operator's status of a FlinkDeployment (the `status` subresource).
    pub fn set_status(&self, plural: &str, namespace: &str, name: &str, status: Value) {
        self.with(|s| {
            let key = (plural.to_owned(), namespace.to_owned(), name.to_owned());
            if let Some(mut object) = s.objects.get(&key).cloned() {
                object["status"] = status;
                Self::store(s, key, object, "MODIFIED");
            }
        });
    }

    /// The next server-side apply answers `409 Conflict`.
    pub fn conflict_next_apply(&self) {
        self.with(|s| s.conflict_next_apply = true);
    }

    /// Every open watch ends with an `ERROR` event `410 Expired`, as when the API server's
    /// watch cache no longer holds the resource version: clients must list again.
    pub fn expire_watches(&self) {
        self.with(|s| {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure", "code": 410, "reason": "Expired",
                "message": "too old resource version: 1 (2)"}});
            for watch in s.watches.drain(..) {
                let mut line = serde_json::to_vec(&gone).unwrap();
                line.push(b'\n');
                let _ = watch
                    .events
                    .unbounded_send(Ok(Frame::data(Bytes::from(line))));
            }
        });
    }

    /// Number of watches currently open.
    pub fn open_watches(&self) -> usize {
        self.with(|s| {
            s.watches.retain(|w| !w.events.is_closed());
            s.watches.len()
        })
    }

    /// What the fake Flink REST (reached through the service proxy) does on a stop with
    /// savepoint: `(job id, target dir) -> savepoint path`.
    pub fn on_rest_stop(&self, f: impl Fn(&str, &str) -> String + Send + Sync + 'static) {
        self.with(|s| s.on_rest_stop = Some(Arc::new(f)));
    }

    fn store(s: &mut State, key: (String, String, String), mut object: Value, event: &'static str) {
        s.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        let plural = key.0.clone();
        s.objects.insert(key, object.clone());
        Self::notify(s, &plural, event, &object);
    }

    fn notify(s: &mut State, plural: &str, event: &'static str, object: &Value) {
        s.history
            .push((s.resource_version, plural.to_owned(), event, object.clone()));
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        s.watches.retain(|watch| {
            if watch.plural != plural
                || (watch.namespace.is_some() && watch.namespace != namespace)
                || !matches(object, &watch.selector)
            {
                return !watch.events.is_closed();
            }
            let mut line = serde_json::to_vec(&json!({"type": event, "object": object})).unwrap();
            line.push(b'\n');
            watch
                .events
                .unbounded_send(Ok(Frame::data(Bytes::from(line))))
                .is_ok()
        });
    }

    async fn handle(&self, request: Request<Body>) -> Response<FakeBody> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        self.with(|s| {
            s.seen.push(Seen {
                method: method.clone(),
                path: path.clone(),
                query: decode(&query),
                content_type: content_type.clone(),
                body: body.clone(),
            })
        });
        let params = query_map(&query);
        let Some(target) = parse_path(&path) else {
            let (code, body) = status(404, "NotFound", &format!("no route {path}"));
            return respond(code, &body);
        };
        let selector = parse_selector(params.get("labelSelector").map_or("", String::as_str));
        match (method.as_str(), &target.name, target.sub.as_deref()) {
            ("GET", None, None) if params.get("watch").is_some_and(|w| w == "true") => {
                let (events, stream) = mpsc::unbounded();
                let since = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v > 0);
                self.with(|s| {
                    let line = |event: &str, object: &Value| {
                        let mut line =
                            serde_json::to_vec(&json!({"type": event, "object": object})).unwrap();
                        line.push(b'\n');
                        Ok(Frame::data(Bytes::from(line)))
                    };
                    if let Some(since) = since {
                        if since < s.compacted {
                            let gone = json!({"kind": "Status", "apiVersion": "v1",
                                "metadata": {}, "status": "Failure", "code": 410,
                                "reason": "Expired",
                                "message": format!("too old resource version: {since} ({})", s.compacted)});
                            let _ = events.unbounded_send(line("ERROR", &gone));
                            return;
                        }
                        for (version, plural, event, object) in &s.history {
                            let namespace = object["metadata"]["namespace"].as_str();
                            if *version > since
                                && *plural == target.plural
                                && target.namespace.as_deref().is_none_or(|n| Some(n) == namespace)
                                && matches(object, &selector)
                            {
                                let _ = events.unbounded_send(line(event, object));
                            }
                        }
                    }
                    s.watches.push(Watch {
                        plural: target.plural.clone(),
                        namespace: target.namespace.clone(),
                        selector,
                        events,
                    })
                });
                Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(StreamBody::new(stream).boxed())
                    .unwrap()
            }
            ("GET", None, None) => {
                let limit = params
                    .get("limit")
                    .and_then(|l| l.parse::<usize>().ok())
                    .filter(|l| *l > 0);
                let page = self.with(|s| {
                    // A continued list reads the snapshot its first page was cut from.
                    let (snapshot, offset) = match params.get("continue") {
                        Some(token) => {
                            if std::mem::take(&mut s.expire_next_continue) {
                                return Err(status(
                                    410,
                                    "Expired",
                                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                                ));
                            }
                            let parsed = token
                                .split_once(':')
                                .and_then(|(id, at)| Some((id.parse::<u64>().ok()?, at.parse::<usize>().ok()?)));
                            match parsed {
                                Some((id, at)) if s.snapshots.contains_key(&id) => (id, at),
                                _ => return Err(status(400, "BadRequest", "bad continue token")),
                            }
                        }
                        None => {
                            let items: Vec<Value> = s
                                .objects
                                .iter()
                                .filter(|((p, ns, _), v)| {
                                    p == &target.plural
                                        && target.namespace.as_ref().is_none_or(|n| n == ns)
                                        && matches(v, &selector)
                                })
                                .map(|(_, v)| v.clone())
                                .collect();
                            let id = s.snapshots.len() as u64 + 1;
                            s.snapshots.insert(id, (s.resource_version, items));
                            (id, 0)
                        }
                    };
                    let (version, items) = &s.snapshots[&snapshot];
                    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
                    let page: Vec<Value> = items[offset.min(end)..end].to_vec();
                    let next = (end < items.len()).then(|| format!("{snapshot}:{end}"));
                    Ok((page, *version, next))
                });
                let (kind, api_version) = kind_of(&target.plural);
                match page {
                    Ok((items, version, next)) => {
                        let mut metadata = json!({"resourceVersion": version.to_string()});
                        if let Some(next) = next {
                            metadata["continue"] = json!(next);
                        }
                        respond(
                            200,
                            &json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                                    "metadata": metadata, "items": items}),
                        )
                    }
                    Err((code, body)) => respond(code, &body),
                }
            }
            ("GET", Some(name), None) => {
                let namespace = target.namespace.clone().unwrap_or_default();
                match self.get(&target.plural, &namespace, name) {
                    Some(object) => respond(200, &object),
                    None => {
                        let (code, body) = status(
                            404,
                            "NotFound",
                            &format!("{} \"{name}\" not found", target.plural),
                        );
                        respond(code, &body)
                    }
                }
            }
            ("PATCH", Some(name), sub) => self.patch(&target, name, sub, content_type, body),
            ("DELETE", None, None) => {
                let deleted = self.with(|s| {
                    let keys: Vec<_> = s
                        .objects
                        .iter()
                        .filter(|((p, ns, _), v)| {
                            p == &target.plural
                                && target.namespace.as_ref().is_none_or(|n| n == ns)
                                && matches(v, &selector)
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    let mut deleted = Vec::new();
                    for key in keys {
                        if let Some(object) = s.objects.remove(&key) {
                            Self::deleted(s, &target.plural, object.clone());
                            deleted.push(object);
                        }
                    }
                    deleted
                });
                let (kind, api_version) = kind_of(&target.plural);
                respond(
                    200,
                    &json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                            "metadata": {}, "items": deleted}),
                )
            }
            ("POST", Some(service), Some(sub)) if sub.starts_with("proxy/jobs/") => {
                self.rest(service, sub, &body)
            }
            ("GET", Some(service), Some(sub)) if sub.starts_with("proxy/jobs/") => {
                self.rest(service, sub, &body)
            }
            _ => {
                let (code, body) = status(405, "MethodNotAllowed", &format!("{method} {path}"));
                respond(code, &body)
            }
        }
    }

    fn patch(
        &self,
        target: &Path,
        name: &str,
        sub: Option<&str>,
        content_type: Option<String>,
        body: Value,
    ) -> Response<FakeBody> {
        let namespace = target.namespace.clone().unwrap_or_default();
        let key = (target.plural.clone(), namespace.clone(), name.to_owned());
        let apply = content_type.as_deref() == Some("application/apply-patch+yaml");
        let outcome = self.with(|s| {
            if apply && std::mem::take(&mut s.conflict_next_apply) {
                return Err(status(
                    409,
                    "Conflict",
                    &format!(
                        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas ({} {name})",
                        target.plural
                    ),
                ));
            }
            let existing = s.objects.get(&key).cloned();
            let object = match (sub, apply, existing) {
                // Status subresource: only the status changes.
                (Some("status"), _, Some(mut current)) => {
                    current["status"] = body["status"].clone();
                    current
                }
                (Some("status"), _, None) | (_, false, None) => {
                    return Err(status(
                        404,
                        "NotFound",
                        &format!("{} \"{name}\" not found", target.plural),
                    ));
                }
                // Server-side apply on the main resource never touches status.
                (None, true, existing) => {
                    let mut object = body.clone();
                    Self::spec_update(&target.plural, existing.as_ref(), &mut object);
                    object["metadata"]["namespace"] = json!(namespace);
                    let uid = existing
                        .as_ref()
                        .and_then(|e| e["metadata"]["uid"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| format!("uid-{name}-{}", s.resource_version + 1));
                    object["metadata"]["uid"] = json!(uid);
                    if let Some(status) = existing.as_ref().map(|e| e["status"].clone())
                        && !status.is_null()
                    {
                        object["status"] = status;
                    }
                    object
                }
                (None, false, Some(mut current)) => {
                    merge(&mut current, &body);
                    current
                }
                (Some(_), _, _) => {
                    return Err(status(404, "NotFound", "no such subresource"));
                }
            };
            let event = if s.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            Self::store(s, key.clone(), object, event);
            Ok(s.objects[&key].clone())
        });
        match outcome {
            Ok(object) => respond(200, &object),
            Err((code, body)) => respond(code, &body),
        }
    }

    /// Flink's REST API behind `services/<svc>:rest/proxy`: `POST jobs/<id>/stop` and the
    /// savepoint operation's status.
    fn rest(&self, _service: &str, sub: &str, body: &Value) -> Response<FakeBody> {
        let parts: Vec<&str> = sub.split('/').collect();
        match parts.as_slice() {
            ["proxy", "jobs", job_id, "stop"] => {
                let target = body["targetDirectory"].as_str().unwrap_or("").to_owned();
                let hook = self.with(|s| {
                    s.rest_stops.push((job_id.to_string(), target.clone()));
                    s.on_rest_stop.clone()
                });
                let location = match hook {
                    Some(hook) => hook(job_id, &target),
                    None => format!("{target}/savepoint-{}-000000000000", &job_id[..6]),
                };
                self.with(|s| {
                    s.objects.insert(
                        (
                            "savepoint-operations".into(),
                            String::new(),
                            job_id.to_string(),
                        ),
                        json!({"location": location}),
                    )
                });
                respond(200, &json!({"request-id": format!("r-{job_id}")}))
            }
            ["proxy", "jobs", job_id, "savepoints", _] => {
                let location = self
                    .get("savepoint-operations", "", job_id)
                    .map(|v| v["location"].clone());
                match location {
                    Some(location) => respond(
                        200,
                        &json!({"status": {"id": "COMPLETED"}, "operation": {"location": location}}),
                    ),
                    None => respond(404, &json!({"errors": ["no such operation"]})),
                }
            }
            _ => respond(404, &json!({"errors": ["not found"]})),
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A Ready node with room for Flink pods.
pub fn node(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    })
}

/// A running pod of a launched object: its labels, annotations and node, as the
/// Deployment controller or the operator would create it.
pub fn running_pod(owner: &Value, name: &str, component: &str, node: &str) -> Value {
    let template_labels = owner
        .pointer("/spec/template/metadata/labels")
        .or_else(|| owner.pointer("/spec/podTemplate/metadata/labels"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template_labels;
    labels["component"] = json!(component);
    let annotations = owner
        .pointer("/spec/template/metadata/annotations")
        .or_else(|| owner.pointer("/spec/podTemplate/metadata/annotations"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"nodeName": node, "containers": [{"name": "flink-main-container",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "flink-main-container",
            "ready": true, "restartCount": 0, "image": "flink", "imageID": "", "state": {"running": {}}}]},
    })
}
