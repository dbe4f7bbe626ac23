//! Taints and tolerations (k8s.io/api/core/v1 toleration.go, taint.go semantics), with the
//! TaintToleration scheduler plugin's filter and score on top.
//!
//! Not supported: the alpha `Gt`/`Lt` toleration operators (feature gate
//! TaintTolerationComparisonOperators); a StreamJob using them fails to parse.

use serde::{Deserialize, Serialize};

use super::names::{label_value_errors, qualified_name_errors};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: TaintEffect,
}

impl std::fmt::Display for Taint {
    /// `key=value:Effect` as kubectl prints it (`key:Effect` without a value).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty key with `Exists` tolerates everything.
    #[serde(default)]
    pub key: String,
    /// Kubernetes defaults an absent operator to `Equal`.
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default)]
    pub value: String,
    /// `None` (empty) matches every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// A toleration the API server would refuse, with the field and Kubernetes' message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TolerationError {
    /// Path relative to the toleration, e.g. `value`, `operator`.
    pub field: String,
    pub message: String,
}

impl Toleration {
    /// `Toleration.ToleratesTaint`: effects match (an empty toleration effect matches all),
    /// keys match (an empty key with `Exists` matches all), and for `Equal` the values match.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|effect| effect != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            // Keys were compared above; an empty key with Equal (refused by `validate`)
            // therefore matches any key with the same value, exactly as in Kubernetes.
            TolerationOperator::Equal => self.value == taint.value,
        }
    }

    /// apiserver's `ValidateTolerations` for one toleration: a non-empty key is a qualified
    /// name; an empty key needs `Exists`; `tolerationSeconds` only with `NoExecute`; `Equal`
    /// takes a valid label value, `Exists` no value. The first problem is returned.
    pub fn validate(&self) -> Result<(), TolerationError> {
        if let Some(message) = qualified_name_errors(&self.key).into_iter().next()
            && !self.key.is_empty()
        {
            return Err(TolerationError {
                field: "key".to_owned(),
                message: format!("Invalid value: {:?}: {message}", self.key),
            });
        }
        if self.key.is_empty() && self.operator != TolerationOperator::Exists {
            return Err(TolerationError {
                field: "operator".to_owned(),
                message: format!(
                    "Invalid value: {:?}: operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    operator_name(self.operator)
                ),
            });
        }
        if self.operator == TolerationOperator::Equal
            && let Some(message) = label_value_errors(&self.value).into_iter().next()
        {
            return Err(TolerationError {
                field: "value".to_owned(),
                message: format!("Invalid value: {:?}: {message}", self.value),
            });
        }
        if self.operator == TolerationOperator::Exists && !self.value.is_empty() {
            return Err(TolerationError {
                field: "value".to_owned(),
                message: format!(
                    "Invalid value: {:?}: value must be empty when `operator` is 'Exists'",
                    self.value
                ),
            });
        }
        if self.toleration_seconds.is_some() && self.effect != Some(TaintEffect::NoExecute) {
            return Err(TolerationError {
                field: "effect".to_owned(),
                message: format!(
                    "Invalid value: {:?}: effect must be 'NoExecute' when `tolerationSeconds` is set",
                    self.effect.map_or("", TaintEffect::as_str)
                ),
            });
        }
        Ok(())
    }
}

fn operator_name(operator: TolerationOperator) -> &'static str {
    match operator {
        TolerationOperator::Equal => "Equal",
        TolerationOperator::Exists => "Exists",
    }
}

/// True when some toleration tolerates the taint (`TolerationsTolerateTaint`).
pub fn tolerations_tolerate_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| toleration.tolerates(taint))
}

/// The TaintToleration filter: the first `NoSchedule` or `NoExecute` taint no toleration
/// tolerates, if any (`FindMatchingUntoleratedTaint` with the plugin's effect filter).
/// `PreferNoSchedule` taints never block.
pub fn find_untolerated_blocking_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        matches!(
            taint.effect,
            TaintEffect::NoSchedule | TaintEffect::NoExecute
        ) && !tolerations_tolerate_taint(tolerations, taint)
    })
}

/// The TaintToleration score before normalisation: how many `PreferNoSchedule` taints the
/// pod does not tolerate. Fewer is better.
pub fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> usize {
    // Kubernetes first keeps only the tolerations whose effect is empty or
    // PreferNoSchedule; any other toleration cannot match such a taint anyway.
    taints
        .iter()
        .filter(|taint| {
            taint.effect == TaintEffect::PreferNoSchedule
                && !tolerations_tolerate_taint(tolerations, taint)
        })
        .count()
}

/// The scheduler framework's `MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// The TaintToleration plugin's `NormalizeScore` (`DefaultNormalizeScore(MaxNodeScore,
/// reverse=true)`): per candidate node, `100 - 100 × count / max count`, and 100 for every
/// node when no node has an intolerable `PreferNoSchedule` taint.
pub fn normalized_taint_toleration_scores(intolerable_counts: &[usize]) -> Vec<i64> {
    let max_count = intolerable_counts.iter().copied().max().unwrap_or(0) as i64;
    intolerable_counts
        .iter()
        .map(|&count| {
            if max_count == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE - MAX_NODE_SCORE * count as i64 / max_count
            }
        })
        .collect()
}
