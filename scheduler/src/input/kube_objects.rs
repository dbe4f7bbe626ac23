//! `kubectl get nodes -o json` and `kubectl get pods -A -o json` output, read into
//! [`model::Node`]s and [`model::RunningPod`]s with Kubernetes' own quantity rules and pod
//! request arithmetic. Unknown fields (managedFields, images, addresses…) are ignored.
//!
//! Every problem names the source, the item (`items[3] (node "n-17")`) and the field path
//! (`status.allocatable.memory`); all problems of one input are reported together.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::{InputError, InputProblem, Problems};
use crate::k8s::{Quantity, Taint};
use crate::limits::MAX_INPUT_BYTES;
use crate::model::{Node, Resources, RunningPod};

/// The error of both parsers: the crate's input error, a list of located problems.
pub type KubeInputError = InputError;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;

/// Reads the nodes of `kubectl get nodes -o json` (a `v1` `List` or `NodeList`, or one
/// `Node`).
///
/// `allocatable` comes from `status.allocatable`: `cpu` in millicores, `memory` in bytes and
/// `pods` as a count, each rounded up as apimachinery rounds. An entry that is missing means
/// zero capacity of that resource (no defaults such as the kubelet's 110 pods are assumed:
/// a node that reports no allocatable pods cannot take any). A node is `ready` only when
/// its `Ready` condition has status `"True"`; without a `Ready` condition it is not.
pub fn parse_node_list(source: &str, json: &str) -> Result<Vec<Node>, KubeInputError> {
    let items = list_items(source, json, "Node", "NodeList")?;
    let mut problems = Problems::new(source);
    let mut nodes = Vec::with_capacity(items.len());
    let mut first_index_of_name: HashMap<String, String> = HashMap::new();
    for item in items {
        let name = item.value.pointer("/metadata/name").and_then(Value::as_str);
        problems.set_object(Some(item.describe("node", name)));
        let Some(object) = typed_item::<NodeObject>(&mut problems, &item, "Node") else {
            continue;
        };
        if let Some(node) = node_from_object(&mut problems, object) {
            match first_index_of_name.get(&node.name) {
                Some(first) => problems.field(
                    "metadata.name",
                    format!("duplicate node name {:?}, first seen at {first}", node.name),
                ),
                None => {
                    first_index_of_name.insert(node.name.clone(), item.position.clone());
                    nodes.push(node);
                }
            }
        }
    }
    problems.finish(nodes)
}

/// Reads the pods of `kubectl get pods -A -o json` that occupy node capacity: bound to a
/// node (`spec.nodeName`) and not finished (phase neither `Succeeded` nor `Failed`), which
/// are the pods the kube-scheduler counts. Each pod's request is Kubernetes' `PodRequests`:
/// regular containers summed; init containers taken at their peak (a restartable sidecar,
/// `restartPolicy: Always`, keeps running and adds to everything after it); then
/// `spec.overhead` added. A container resource with a limit but no request requests its
/// limit, as the API server defaults it. Pod-level `spec.resources.requests` (cpu, memory)
/// override the containers' sum, as with the PodLevelResources feature.
pub fn parse_pod_list(source: &str, json: &str) -> Result<Vec<RunningPod>, KubeInputError> {
    let items = list_items(source, json, "Pod", "PodList")?;
    let mut problems = Problems::new(source);
    let mut pods = Vec::new();
    for item in items {
        let name = item.value.pointer("/metadata/name").and_then(Value::as_str);
        let namespace = item
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let full_name = match (namespace, name) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, name) => name.map(str::to_owned),
            (Some(_), None) => None,
        };
        problems.set_object(Some(item.describe("pod", full_name.as_deref())));
        let Some(object) = typed_item::<PodObject>(&mut problems, &item, "Pod") else {
            continue;
        };
        if object.spec.node_name.is_empty()
            || matches!(object.status.phase.as_str(), "Succeeded" | "Failed")
        {
            continue;
        }
        if object.metadata.name.is_empty() {
            problems.field("metadata.name", "Required value: a pod needs a name");
            continue;
        }
        if let Some(request) = pod_request(&mut problems, &object.spec) {
            pods.push(RunningPod {
                namespace: object.metadata.namespace,
                name: object.metadata.name,
                node: object.spec.node_name,
                request,
            });
        }
    }
    problems.finish(pods)
}

/// One object of the input and where it sits (`items[3]`, or `object` for a lone object).
struct Item {
    position: String,
    value: Value,
}

impl Item {
    fn describe(&self, kind: &str, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("{} ({kind} {name:?})", self.position),
            None => format!("{} ({kind} without a name)", self.position),
        }
    }
}

/// The objects of a `List`/`<Kind>List`, or the one object when the input is a `<Kind>`.
fn list_items(
    source: &str,
    json: &str,
    kind: &str,
    list_kind: &str,
) -> Result<Vec<Item>, KubeInputError> {
    let whole_problem =
        |message: String| InputError::single(InputProblem::new(source, None, None, message));
    if json.len() > MAX_INPUT_BYTES {
        return Err(whole_problem(format!(
            "{} bytes, more than the {MAX_INPUT_BYTES} one input may hold; split it",
            json.len()
        )));
    }
    let document: Value =
        serde_json::from_str(json).map_err(|e| whole_problem(format!("not valid JSON: {e}")))?;
    let document_kind = document.get("kind").and_then(Value::as_str);
    match document_kind {
        Some(k) if k == kind => Ok(vec![Item {
            position: "object".to_owned(),
            value: document,
        }]),
        Some("List") | None if document.get("items").is_some() => items_of(source, document),
        Some(k) if k == list_kind => items_of(source, document),
        other => Err(whole_problem(format!(
            "expected the output of `kubectl get ... -o json`: kind List, {list_kind} or {kind}, found {}",
            other.map_or_else(|| "no kind".to_owned(), |k| format!("kind {k:?}"))
        ))),
    }
}

fn items_of(source: &str, mut document: Value) -> Result<Vec<Item>, KubeInputError> {
    match document.get_mut("items").map(Value::take) {
        Some(Value::Array(values)) => Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Item {
                position: format!("items[{i}]"),
                value,
            })
            .collect()),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err(InputError::single(InputProblem::new(
            source,
            None,
            Some("items".to_owned()),
            "must be an array of objects",
        ))),
    }
}

/// Deserialises one item, recording a located problem when its shape is wrong.
fn typed_item<T: for<'de> Deserialize<'de>>(
    problems: &mut Problems,
    item: &Item,
    kind: &str,
) -> Option<T> {
    if let Some(item_kind) = item.value.get("kind").and_then(Value::as_str)
        && item_kind != kind
    {
        problems.field("kind", format!("expected a {kind}, found {item_kind:?}"));
        return None;
    }
    match serde_path_to_error::deserialize::<_, T>(&item.value) {
        Ok(object) => Some(object),
        Err(error) => {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            if path == "." {
                problems.whole(message);
            } else {
                problems.field(path, message);
            }
            None
        }
    }
}

fn node_from_object(problems: &mut Problems, object: NodeObject) -> Option<Node> {
    if object.metadata.name.is_empty() {
        problems.field("metadata.name", "Required value: a node needs a name");
        return None;
    }
    let allocatable = &object.status.allocatable;
    let found_before = problems.len();
    let cpu_milli = allocatable_amount(problems, allocatable, "cpu", Scale::Milli);
    let memory_bytes = allocatable_amount(problems, allocatable, "memory", Scale::Unit);
    let pods = allocatable_amount(problems, allocatable, "pods", Scale::Unit);
    if problems.len() != found_before {
        return None;
    }
    let ready = object
        .status
        .conditions
        .iter()
        .any(|c| c.condition_type == "Ready" && c.status == "True");
    Some(Node {
        owner_usage: None,
        name: object.metadata.name,
        labels: object.metadata.labels,
        taints: object.spec.taints,
        unschedulable: object.spec.unschedulable,
        ready,
        allocatable: Resources {
            cpu_milli,
            memory_bytes,
            pods,
        },
    })
}

#[derive(Clone, Copy)]
enum Scale {
    Milli,
    Unit,
}

/// One `status.allocatable` entry in model units; 0 when absent.
fn allocatable_amount(
    problems: &mut Problems,
    allocatable: &BTreeMap<String, JsonQuantity>,
    resource: &str,
    scale: Scale,
) -> i64 {
    let Some(quantity) = allocatable.get(resource) else {
        return 0;
    };
    let field = format!("status.allocatable.{resource}");
    let nanos = match non_negative_nanos(&quantity.0) {
        Ok(nanos) => nanos,
        Err(message) => {
            problems.field(field, message);
            return 0;
        }
    };
    match round_up(nanos, scale) {
        Some(amount) => amount,
        None => {
            problems.field(field, format!("quantity {:?} is too large", quantity.0.0));
            0
        }
    }
}

/// A quantity in nanos, refusing negative ones as the API server does for resources.
fn non_negative_nanos(quantity: &Quantity) -> Result<i128, String> {
    let nanos = quantity.nano_value().map_err(|e| e.to_string())?;
    if nanos < 0 {
        return Err(format!(
            "Invalid value: {:?}: must be greater than or equal to 0",
            quantity.0
        ));
    }
    Ok(nanos)
}

/// `MilliValue()` / `Value()` of an exact nano amount: rounded up, within i64.
fn round_up(nanos: i128, scale: Scale) -> Option<i64> {
    let per = match scale {
        Scale::Milli => NANOS_PER_MILLI,
        Scale::Unit => NANOS_PER_UNIT,
    };
    i64::try_from(nanos.div_euclid(per) + i128::from(nanos.rem_euclid(per) != 0)).ok()
}

/// cpu and memory in nanos, summed exactly as `Quantity.Add` sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ExactRequest {
    cpu: i128,
    memory: i128,
}

impl ExactRequest {
    fn plus(self, other: ExactRequest) -> ExactRequest {
        ExactRequest {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    fn max(self, other: ExactRequest) -> ExactRequest {
        ExactRequest {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }
}

/// Kubernetes' `PodRequests` for cpu and memory, with `pods: 1`.
fn pod_request(problems: &mut Problems, spec: &PodSpec) -> Option<Resources> {
    let found_before = problems.len();
    let mut total = ExactRequest::default();
    for (i, container) in spec.containers.iter().enumerate() {
        total = total.plus(container_request(
            problems,
            &container.resources,
            &format!("spec.containers[{i}].resources"),
        ));
    }
    let mut running_sidecars = ExactRequest::default();
    let mut init_peak = ExactRequest::default();
    for (i, container) in spec.init_containers.iter().enumerate() {
        let request = container_request(
            problems,
            &container.resources,
            &format!("spec.initContainers[{i}].resources"),
        );
        let in_use_while_this_runs = if container.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running next to the app containers and later init containers.
            total = total.plus(request);
            running_sidecars = running_sidecars.plus(request);
            running_sidecars
        } else {
            request.plus(running_sidecars)
        };
        init_peak = init_peak.max(in_use_while_this_runs);
    }
    total = total.max(init_peak);

    for (resource, quantity) in &spec.resources.requests {
        let field = format!("spec.resources.requests.{resource}");
        let slot = match resource.as_str() {
            "cpu" => &mut total.cpu,
            "memory" => &mut total.memory,
            _ => continue,
        };
        match non_negative_nanos(&quantity.0) {
            Ok(nanos) => *slot = nanos,
            Err(message) => problems.field(field, message),
        }
    }
    total = total.plus(resource_list(problems, &spec.overhead, "spec.overhead"));
    if problems.len() != found_before {
        return None;
    }
    let cpu_milli = round_up(total.cpu, Scale::Milli);
    let memory_bytes = round_up(total.memory, Scale::Unit);
    match (cpu_milli, memory_bytes) {
        (Some(cpu_milli), Some(memory_bytes)) => Some(Resources {
            cpu_milli,
            memory_bytes,
            pods: 1,
        }),
        _ => {
            problems.whole("the pod's total cpu or memory request is too large");
            None
        }
    }
}

/// One container's requests, a limit standing in for a missing request.
fn container_request(
    problems: &mut Problems,
    resources: &ResourceRequirements,
    path: &str,
) -> ExactRequest {
    let mut request = ExactRequest::default();
    for (resource, slot) in [("cpu", &mut request.cpu), ("memory", &mut request.memory)] {
        let (list, quantity) = match (
            resources.requests.get(resource),
            resources.limits.get(resource),
        ) {
            (Some(quantity), _) => ("requests", quantity),
            (None, Some(limit)) => ("limits", limit),
            (None, None) => continue,
        };
        match non_negative_nanos(&quantity.0) {
            Ok(nanos) => *slot = nanos,
            Err(message) => problems.field(format!("{path}.{list}.{resource}"), message),
        }
    }
    request
}

fn resource_list(
    problems: &mut Problems,
    list: &BTreeMap<String, JsonQuantity>,
    path: &str,
) -> ExactRequest {
    let mut request = ExactRequest::default();
    for (resource, slot) in [("cpu", &mut request.cpu), ("memory", &mut request.memory)] {
        if let Some(quantity) = list.get(resource) {
            match non_negative_nanos(&quantity.0) {
                Ok(nanos) => *slot = nanos,
                Err(message) => problems.field(format!("{path}.{resource}"), message),
            }
        }
    }
    request
}

/// A quantity as JSON carries it: normally a string, but Kubernetes also accepts a number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonQuantity(Quantity);

impl<'de> Deserialize<'de> for JsonQuantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Text(text)) => Ok(JsonQuantity(Quantity(text))),
            Ok(Raw::Number(number)) => Ok(JsonQuantity(Quantity(number.to_string()))),
            Err(_) => Err(serde::de::Error::custom(
                "a quantity must be a string such as \"500m\" or \"4Gi\", or a number",
            )),
        }
    }
}

/// `null` reads as the default, as Go's JSON decoding leaves a nil slice or map.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Debug, Default, Deserialize)]
struct ObjectMeta {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    namespace: String,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct NodeObject {
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    spec: NodeSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    status: NodeStatus,
}

#[derive(Debug, Default, Deserialize)]
struct NodeSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    taints: Vec<Taint>,
    #[serde(default, deserialize_with = "null_as_default")]
    unschedulable: bool,
}

#[derive(Debug, Default, Deserialize)]
struct NodeStatus {
    #[serde(default, deserialize_with = "null_as_default")]
    allocatable: BTreeMap<String, JsonQuantity>,
    #[serde(default, deserialize_with = "null_as_default")]
    conditions: Vec<NodeCondition>,
}

#[derive(Debug, Deserialize)]
struct NodeCondition {
    #[serde(rename = "type")]
    condition_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    status: String,
}

#[derive(Debug, Deserialize)]
struct PodObject {
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    spec: PodSpec,
    #[serde(default, deserialize_with = "null_as_default")]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    node_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    containers: Vec<Container>,
    #[serde(default, deserialize_with = "null_as_default")]
    init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "null_as_default")]
    overhead: BTreeMap<String, JsonQuantity>,
    /// Pod-level resources (PodLevelResources feature).
    #[serde(default, deserialize_with = "null_as_default")]
    resources: ResourceRequirements,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default, deserialize_with = "null_as_default")]
    resources: ResourceRequirements,
    #[serde(default)]
    restart_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ResourceRequirements {
    #[serde(default, deserialize_with = "null_as_default")]
    requests: BTreeMap<String, JsonQuantity>,
    #[serde(default, deserialize_with = "null_as_default")]
    limits: BTreeMap<String, JsonQuantity>,
}

#[derive(Debug, Default, Deserialize)]
struct PodStatus {
    #[serde(default, deserialize_with = "null_as_default")]
    phase: String,
}
