//! Kubernetes' scheduling vocabulary with Kubernetes' own semantics: quantities, taints and
//! tolerations, node selectors and node affinity. Field names are the API's (camelCase), so
//! the same structs parse `kubectl ... -o json` and the `placement` block of a StreamJob.

pub mod affinity;
pub mod names;
pub mod quantity;
pub mod taints;

pub use affinity::{
    AffinityError, NodeAffinity, NodeSelector, NodeSelectorOperator, NodeSelectorRequirement,
    NodeSelectorTerm, PreferredSchedulingTerm, node_selector_map_matches,
    normalized_node_affinity_scores, preferred_affinity_score, required_node_affinity_matches,
    validate_node_selector_map,
};
pub use quantity::{Quantity, QuantityError};
pub use taints::{
    MAX_NODE_SCORE, Taint, TaintEffect, Toleration, TolerationError, TolerationOperator,
    count_intolerable_prefer_no_schedule, find_untolerated_blocking_taint,
    normalized_taint_toleration_scores, tolerations_tolerate_taint,
};
