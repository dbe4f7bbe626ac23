//! Flink's JSON execution plan, read for one number: how many task slots the job needs.
//!
//! Two shapes are accepted, as Flink writes them:
//! - `env.getExecutionPlan()` (the StreamGraph JSON): `{"nodes":[{"id":1,"type":..,"pact":..,
//!   "contents":..,"parallelism":4,"predecessors":[..]}]}`, with iterations nested under
//!   `step_function`;
//! - the REST API's `GET /jobs/:jobid/plan` (the JobGraph plan): `{"plan":{"jid":..,"name":..,
//!   "type":..,"nodes":[{"id":"<hex>","parallelism":4,"operator":..,"description":..,
//!   "inputs":[..]}]}}`, with or without the outer `plan` wrapper.
//!
//! Read per node: `id` (number or string), `parallelism` (a positive integer, or `-1` for
//! "the job's default parallelism"), and the optional twinsite extension `slotSharingGroup`
//! (also spelled `slot_sharing_group`), a string naming the node's slot sharing group, which
//! Flink's JSON does not carry: without it every node is in group `default`, as in Flink.
//! Other fields are Flink's and vary between versions, so they are ignored.
//!
//! Slot need (Flink's rule for slot sharing): the sum over slot sharing groups of the largest
//! parallelism in the group.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::common::join;
use super::error::{InputError, Problems};
use crate::limits::FLINK_MAX_PARALLELISM;

/// The slot sharing group of nodes that name none, as in Flink.
pub const DEFAULT_SLOT_SHARING_GROUP: &str = "default";

/// Flink's `ExecutionConfig.PARALLELISM_DEFAULT`: use the job's parallelism.
const PARALLELISM_DEFAULT: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlinkPlan {
    pub vertices: Vec<PlanVertex>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanVertex {
    pub id: String,
    /// `None`: the job's default parallelism (`-1` in the JSON).
    pub parallelism: Option<u32>,
    pub slot_sharing_group: String,
}

impl FlinkPlan {
    /// Slots the plan needs when its default parallelism is `default_parallelism`.
    pub fn slot_need(&self, default_parallelism: u32) -> u64 {
        let mut widest: BTreeMap<&str, u32> = BTreeMap::new();
        for vertex in &self.vertices {
            let parallelism = vertex.parallelism.unwrap_or(default_parallelism);
            let entry = widest
                .entry(vertex.slot_sharing_group.as_str())
                .or_insert(0);
            *entry = (*entry).max(parallelism);
        }
        widest.values().map(|&p| u64::from(p)).sum()
    }

    /// Names of the slot sharing groups, sorted.
    pub fn slot_sharing_groups(&self) -> BTreeSet<&str> {
        self.vertices
            .iter()
            .map(|v| v.slot_sharing_group.as_str())
            .collect()
    }
}

/// Parses a plan file (`source` names it in errors).
pub fn parse_flink_plan(source: &str, json: &str) -> Result<FlinkPlan, InputError> {
    let mut problems = Problems::new(source);
    let plan = plan_from_value(&Value::String(json.to_string()), "", &mut problems);
    match plan {
        Some(plan) if problems.is_empty() => Ok(plan),
        _ => problems.finish(FlinkPlan {
            vertices: Vec::new(),
        }),
    }
}

/// Reads a plan given as a JSON object or as a string holding JSON (as in a StreamJob's
/// `spec.plan`); `at` is the field path of the plan, used in every problem.
pub(crate) fn plan_from_value(
    value: &Value,
    at: &str,
    problems: &mut Problems,
) -> Option<FlinkPlan> {
    let parsed;
    let value = match value {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                parsed = v;
                &parsed
            }
            Err(error) => {
                problems.field(field_or_root(at), format!("not valid JSON: {error}"));
                return None;
            }
        },
        other => other,
    };
    let Value::Object(object) = value else {
        problems.field(
            field_or_root(at),
            format!(
                "expected a Flink execution plan (a JSON object with \"nodes\"), found {}",
                kind(value)
            ),
        );
        return None;
    };
    // The REST API wraps the plan: {"plan": {"jid":.., "nodes": [..]}}.
    let (object, at) = match (object.get("nodes"), object.get("plan")) {
        (None, Some(Value::Object(inner))) => (inner, join(at, "plan")),
        _ => (object, at.to_string()),
    };
    let nodes_at = join(&at, "nodes");
    let Some(nodes) = object.get("nodes") else {
        problems.field(
            nodes_at,
            "required field is missing (the plan's list of operators)",
        );
        return None;
    };
    let before = problems.len();
    let mut vertices = Vec::new();
    read_nodes(nodes, &nodes_at, problems, &mut vertices);
    if problems.len() > before {
        return None;
    }
    if vertices.is_empty() {
        problems.field(nodes_at, "a plan needs at least one node");
        return None;
    }
    let mut seen = BTreeSet::new();
    for vertex in &vertices {
        if !seen.insert(vertex.id.as_str()) {
            problems.field(&nodes_at, format!("node id {:?} appears twice", vertex.id));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(FlinkPlan { vertices })
}

fn read_nodes(nodes: &Value, at: &str, problems: &mut Problems, out: &mut Vec<PlanVertex>) {
    let Value::Array(nodes) = nodes else {
        problems.field(
            at,
            format!("expected a list of nodes, found {}", kind(nodes)),
        );
        return;
    };
    for (i, node) in nodes.iter().enumerate() {
        let node_at = format!("{at}[{i}]");
        let Value::Object(node) = node else {
            problems.field(
                node_at,
                format!("expected a node object, found {}", kind(node)),
            );
            continue;
        };
        let id = match node.get("id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                problems.field(
                    join(&node_at, "id"),
                    format!("expected a number or a non-empty string, found {other}"),
                );
                None
            }
            None => {
                problems.field(join(&node_at, "id"), "required field is missing");
                None
            }
        };
        let parallelism_at = join(&node_at, "parallelism");
        let parallelism = match node.get("parallelism") {
            Some(Value::Number(n)) => {
                match n.as_i64() {
                    Some(PARALLELISM_DEFAULT) => Some(None),
                    Some(p) if p >= 1 => match u32::try_from(p) {
                        Ok(p) if p <= FLINK_MAX_PARALLELISM => Some(Some(p)),
                        _ => {
                            problems.field(
                                parallelism_at,
                                format!(
                                    "must be at most {FLINK_MAX_PARALLELISM} (Flink's bound), found {p}"
                                ),
                            );
                            None
                        }
                    },
                    _ => {
                        problems.field(
                        parallelism_at,
                        format!("expected a positive integer (or -1 for the job's default), found {n}"),
                    );
                        None
                    }
                }
            }
            Some(other) => {
                problems.field(
                    parallelism_at,
                    format!("expected a positive integer, found {other}"),
                );
                None
            }
            None => {
                problems.field(parallelism_at, "required field is missing");
                None
            }
        };
        let group = slot_sharing_group(node, &node_at, problems);
        if let (Some(id), Some(parallelism), Some(group)) = (id, parallelism, group) {
            out.push(PlanVertex {
                id,
                parallelism,
                slot_sharing_group: group,
            });
        }
        // Iterations (StreamGraph JSON) nest their operators under `step_function`.
        if let Some(steps) = node.get("step_function") {
            read_nodes(steps, &join(&node_at, "step_function"), problems, out);
        }
    }
}

fn slot_sharing_group(
    node: &serde_json::Map<String, Value>,
    node_at: &str,
    problems: &mut Problems,
) -> Option<String> {
    let mut group = None;
    for name in ["slotSharingGroup", "slot_sharing_group"] {
        match node.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() => {
                if group.as_ref().is_some_and(|g| g != s) {
                    problems.field(
                        join(node_at, name),
                        "slotSharingGroup and slot_sharing_group disagree",
                    );
                    return None;
                }
                group = Some(s.clone());
            }
            Some(other) => {
                problems.field(
                    join(node_at, name),
                    format!("expected a non-empty string, found {other}"),
                );
                return None;
            }
        }
    }
    Some(group.unwrap_or_else(|| DEFAULT_SLOT_SHARING_GROUP.to_string()))
}

fn field_or_root(at: &str) -> String {
    if at.is_empty() {
        "(plan)".to_string()
    } else {
        at.to_string()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
