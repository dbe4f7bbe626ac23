//! The Kubernetes matching functions placement uses, gathered in one place.

pub(crate) use crate::k8s::affinity::{preferred_affinity_score, required_node_affinity_matches};
pub(crate) use crate::k8s::taints::{
    count_intolerable_prefer_no_schedule, find_untolerated_blocking_taint,
};

pub(crate) fn tolerates(toleration: &crate::k8s::Toleration, taint: &crate::k8s::Taint) -> bool {
    toleration.tolerates(taint)
}
