//! Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource), parsed and rounded
//! as apimachinery does.

use serde::{Deserialize, Serialize};

/// A quantity string as written by the user, e.g. `100m`, `1.5`, `1Gi`, `1e3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Format(String),
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

impl Quantity {
    /// `MilliValue()`: the value × 1000, rounded up (ceil) as apimachinery does. CPU.
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        todo!("k8s-semantics helper: implement with apimachinery's parser")
    }

    /// `Value()`: the value rounded up to an integer. Memory bytes, pod counts.
    pub fn value(&self) -> Result<i64, QuantityError> {
        todo!("k8s-semantics helper: implement with apimachinery's parser")
    }
}
