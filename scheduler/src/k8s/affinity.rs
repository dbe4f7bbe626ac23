//! Node selectors and node affinity (k8s.io/component-helpers/scheduling/corev1/nodeaffinity).
//!
//! Matching follows `LazyErrorNodeSelector`: terms are ORed, the expressions and fields of
//! one term ANDed, an empty term never matches, and a term Kubernetes cannot parse (bad key,
//! `In` without values, `Gt` with a non-integer…) simply does not match while the other
//! terms still may. `validate` reports those same problems up front, as the API server does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::{label_value_errors, parse_go_int64, qualified_name_errors};
use crate::model::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum NodeSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl NodeSelectorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeSelectorOperator::In => "In",
            NodeSelectorOperator::NotIn => "NotIn",
            NodeSelectorOperator::Exists => "Exists",
            NodeSelectorOperator::DoesNotExist => "DoesNotExist",
            NodeSelectorOperator::Gt => "Gt",
            NodeSelectorOperator::Lt => "Lt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: NodeSelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

/// Terms are ORed; an empty term list matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

/// One problem the API server would report, with the field path inside the checked value
/// (e.g. `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[1].values`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct AffinityError {
    pub field: String,
    pub message: String,
}

/// The only node field `matchFields` may name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

impl NodeSelectorRequirement {
    /// `labels.Requirement.Matches` on the node's labels. Call only on requirements that
    /// `label_parse_errors` accepts; others are treated as not matching by the callers.
    fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = labels.get(&self.key);
        match self.operator {
            NodeSelectorOperator::In => label.is_some_and(|v| self.values.contains(v)),
            NodeSelectorOperator::NotIn => label.is_none_or(|v| !self.values.contains(v)),
            NodeSelectorOperator::Exists => label.is_some(),
            NodeSelectorOperator::DoesNotExist => label.is_none(),
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                let Some(node_value) = label.and_then(|v| parse_go_int64(v)) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Some(bound) = parse_go_int64(bound) else {
                    return false;
                };
                if self.operator == NodeSelectorOperator::Gt {
                    node_value > bound
                } else {
                    node_value < bound
                }
            }
        }
    }

    /// What `labels.NewRequirement` rejects, with messages and paths as Kubernetes words
    /// them. A term with any such error never matches.
    fn label_parse_errors(&self, path: &str) -> Vec<AffinityError> {
        let mut errors = Vec::new();
        let invalid = |field: String, message: String| AffinityError { field, message };
        for message in qualified_name_errors(&self.key) {
            errors.push(invalid(
                format!("{path}.key"),
                format!("Invalid value: {:?}: {message}", self.key),
            ));
        }
        let values_path = format!("{path}.values");
        match self.operator {
            NodeSelectorOperator::In | NodeSelectorOperator::NotIn => {
                if self.values.is_empty() {
                    errors.push(invalid(
                        values_path.clone(),
                        "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                            .to_owned(),
                    ));
                }
            }
            NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist => {
                if !self.values.is_empty() {
                    errors.push(invalid(
                        values_path.clone(),
                        "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                            .to_owned(),
                    ));
                }
            }
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                if self.values.len() != 1 {
                    errors.push(invalid(
                        values_path.clone(),
                        "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"
                            .to_owned(),
                    ));
                }
                for (i, value) in self.values.iter().enumerate() {
                    if parse_go_int64(value).is_none() {
                        errors.push(invalid(
                            format!("{values_path}[{i}]"),
                            format!(
                                "Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                            ),
                        ));
                    }
                }
            }
        }
        for (i, value) in self.values.iter().enumerate() {
            for message in label_value_errors(value) {
                errors.push(invalid(
                    format!("{values_path}[{i}]"),
                    format!("Invalid value: {value:?}: {message}"),
                ));
            }
        }
        errors
    }

    /// What `nodeSelectorRequirementsAsFieldSelector` and the API server reject in a
    /// `matchFields` entry: only `metadata.name`, only `In`/`NotIn`, exactly one value.
    fn field_parse_errors(&self, path: &str) -> Vec<AffinityError> {
        let mut errors = Vec::new();
        match self.operator {
            NodeSelectorOperator::In | NodeSelectorOperator::NotIn => {
                if self.values.len() != 1 {
                    errors.push(AffinityError {
                        field: format!("{path}.values"),
                        message: "Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector".to_owned(),
                    });
                }
            }
            other => errors.push(AffinityError {
                field: format!("{path}.operator"),
                message: format!(
                    "Invalid value: {:?}: not a valid selector operator",
                    other.as_str()
                ),
            }),
        }
        if self.key != NODE_NAME_FIELD {
            errors.push(AffinityError {
                field: format!("{path}.key"),
                message: format!(
                    "Invalid value: {:?}: not a valid field selector key",
                    self.key
                ),
            });
        }
        errors
    }

    /// A `fields.Selector` term over the node's fields, where the only field is
    /// `metadata.name`; any other key reads as the empty string, as in `fields.Set`.
    fn matches_fields(&self, node_name: &str) -> bool {
        let field_value = if self.key == NODE_NAME_FIELD {
            node_name
        } else {
            ""
        };
        let [value] = self.values.as_slice() else {
            return false;
        };
        match self.operator {
            NodeSelectorOperator::In => field_value == value,
            NodeSelectorOperator::NotIn => field_value != value,
            _ => false,
        }
    }
}

impl NodeSelectorTerm {
    /// An empty term (no expressions, no fields) selects nothing.
    pub fn is_empty(&self) -> bool {
        self.match_expressions.is_empty() && self.match_fields.is_empty()
    }

    /// The problems that make Kubernetes refuse to parse this term.
    fn parse_errors(&self, path: &str) -> Vec<AffinityError> {
        let mut errors = Vec::new();
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            errors.extend(requirement.label_parse_errors(&format!("{path}.matchExpressions[{i}]")));
        }
        for (i, requirement) in self.match_fields.iter().enumerate() {
            errors.extend(requirement.field_parse_errors(&format!("{path}.matchFields[{i}]")));
        }
        errors
    }

    fn is_parseable(&self) -> bool {
        self.match_expressions
            .iter()
            .all(|r| r.label_parse_errors("").is_empty())
            && self
                .match_fields
                .iter()
                .all(|r| r.field_parse_errors("").is_empty())
    }

    /// `nodeSelectorTerm.match`: every expression and every field requirement holds. Field
    /// requirements are skipped for a node without a name, as Kubernetes skips an empty
    /// field set. An empty or unparseable term matches nothing.
    pub fn matches(&self, node: &Node) -> bool {
        if self.is_empty() || !self.is_parseable() {
            return false;
        }
        let labels_match = self
            .match_expressions
            .iter()
            .all(|r| r.matches_labels(&node.labels));
        let fields_match = node.name.is_empty()
            || self
                .match_fields
                .iter()
                .all(|r| r.matches_fields(&node.name));
        labels_match && fields_match
    }

    fn validate(&self, path: &str) -> Result<(), AffinityError> {
        first_error(self.parse_errors(path))
    }
}

impl NodeSelector {
    /// `NodeSelector.Match`: true when any term matches.
    pub fn matches(&self, node: &Node) -> bool {
        self.node_selector_terms
            .iter()
            .any(|term| term.matches(node))
    }

    /// `ValidateNodeSelector`: at least one term, and every term parseable. `path` is the
    /// selector's own field path (e.g. `requiredDuringSchedulingIgnoredDuringExecution`).
    pub fn validate(&self, path: &str) -> Result<(), AffinityError> {
        if self.node_selector_terms.is_empty() {
            return Err(AffinityError {
                field: format!("{path}.nodeSelectorTerms"),
                message: "Required value: must have at least one node selector term".to_owned(),
            });
        }
        for (i, term) in self.node_selector_terms.iter().enumerate() {
            term.validate(&format!("{path}.nodeSelectorTerms[{i}]"))?;
        }
        Ok(())
    }
}

impl NodeAffinity {
    /// The API server's checks of a node affinity, plus the ones the scheduler's parser
    /// makes (label-value syntax, integer `Gt`/`Lt` values), so that nothing we accept is
    /// silently ignored at placement. Field paths are relative to the `nodeAffinity` value.
    pub fn validate(&self) -> Result<(), AffinityError> {
        if let Some(required) = &self.required_during_scheduling_ignored_during_execution {
            required.validate("requiredDuringSchedulingIgnoredDuringExecution")?;
        }
        for (i, preferred) in self
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            let path = format!("preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            if !(1..=100).contains(&preferred.weight) {
                return Err(AffinityError {
                    field: format!("{path}.weight"),
                    message: format!(
                        "Invalid value: {}: must be in the range 1-100",
                        preferred.weight
                    ),
                });
            }
            preferred
                .preference
                .validate(&format!("{path}.preference"))?;
        }
        Ok(())
    }

    /// Sum of the weights of the preferred terms the node matches (`PreferredSchedulingTerms.
    /// Score`); zero-weight and empty terms count for nothing.
    pub fn preferred_score(&self, node: &Node) -> i64 {
        self.preferred_during_scheduling_ignored_during_execution
            .iter()
            .filter(|term| term.weight != 0 && term.preference.matches(node))
            .map(|term| i64::from(term.weight))
            .sum()
    }
}

fn first_error(errors: Vec<AffinityError>) -> Result<(), AffinityError> {
    match errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// `pod.spec.nodeSelector`: every pair must be a label of the node. Empty matches all.
pub fn node_selector_map_matches(selector: &BTreeMap<String, String>, node: &Node) -> bool {
    selector
        .iter()
        .all(|(key, value)| node.labels.get(key) == Some(value))
}

/// apiserver's check of `pod.spec.nodeSelector`: keys are qualified names, values label
/// values. `path` is the map's field path, e.g. `spec.nodeSelector`.
pub fn validate_node_selector_map(
    selector: &BTreeMap<String, String>,
    path: &str,
) -> Result<(), AffinityError> {
    for (key, value) in selector {
        if let Some(message) = qualified_name_errors(key).into_iter().next() {
            return Err(AffinityError {
                field: path.to_owned(),
                message: format!("Invalid value: {key:?}: {message}"),
            });
        }
        if let Some(message) = label_value_errors(value).into_iter().next() {
            return Err(AffinityError {
                field: format!("{path}.{key}"),
                message: format!("Invalid value: {value:?}: {message}"),
            });
        }
    }
    Ok(())
}

/// `RequiredNodeAffinity.Match`: the nodeSelector map AND the required node affinity (when
/// present). This is the NodeAffinity filter plugin's test.
pub fn required_node_affinity_matches(
    node_selector: &BTreeMap<String, String>,
    affinity: Option<&NodeAffinity>,
    node: &Node,
) -> bool {
    node_selector_map_matches(node_selector, node)
        && affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_none_or(|required| required.matches(node))
}

/// The NodeAffinity score plugin before normalisation: the sum of the weights of the
/// matching preferred terms, 0 without affinity.
pub fn preferred_affinity_score(affinity: Option<&NodeAffinity>, node: &Node) -> i64 {
    affinity.map_or(0, |a| a.preferred_score(node))
}

/// The NodeAffinity plugin's `NormalizeScore` (`DefaultNormalizeScore(MaxNodeScore,
/// reverse=false)`): `100 × score / max score` over the candidate nodes, all 0 when the
/// highest is 0.
pub fn normalized_node_affinity_scores(raw_scores: &[i64]) -> Vec<i64> {
    let max = raw_scores.iter().copied().max().unwrap_or(0);
    raw_scores
        .iter()
        .map(|&score| {
            if max <= 0 {
                score
            } else {
                super::taints::MAX_NODE_SCORE * score / max
            }
        })
        .collect()
}
