//! Kubernetes' scheduling vocabulary with Kubernetes' own semantics: quantities, taints and
//! tolerations, node selectors and node affinity. Field names are the API's (camelCase), so
//! the same structs parse `kubectl ... -o json` and the `placement` block of a StreamJob.

pub mod affinity;
pub mod quantity;
pub mod taints;

pub use affinity::{
    NodeAffinity, NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    PreferredSchedulingTerm,
};
pub use quantity::{Quantity, QuantityError};
pub use taints::{Taint, TaintEffect, Toleration, TolerationOperator};
