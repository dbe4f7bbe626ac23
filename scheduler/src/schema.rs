//! JSON schemas (OpenAPI v3 as Kubernetes reads it) for the types a StreamJob spec is made
//! of, so that `src/` can generate the StreamJob CRD from the very types the parser reads.
//!
//! The types derive `schemars::JsonSchema` (feature `schema`); this module holds the few
//! schemas a derive cannot get right. The rule they follow: the API server must admit every
//! document [`crate::input::parse_stream_jobs`] accepts, so a file and a cluster object are
//! interchangeable; the parser stays the stricter gate (names, URIs, quantity values, plan
//! contents). One exception is Kubernetes' own: a quantity written as a fractional YAML
//! number (`cpu: 0.5`) is not an int-or-string, so the API server refuses it.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::k8s::Quantity;

/// The pattern Kubernetes CRDs (controller-gen) put on `resource.Quantity`. It only applies to
/// strings; every quantity string the parser accepts matches it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// As Kubernetes publishes `resource.Quantity` for CRDs: an integer or a string. Without
/// `anyOf`: kube's structural rewriter strips the types out of an `anyOf`, and
/// `x-kubernetes-int-or-string` alone already means "integer or string" to the API server
/// (it is also what k8s-openapi's own `Quantity` schema says).
impl JsonSchema for Quantity {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true,
        })
    }
}

/// Any JSON value, kept as given: `spec.plan` is a Flink plan object or a string holding one.
/// Kubernetes allows a node without a type only when it preserves unknown fields.
pub(crate) fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `flinkConfiguration`: the parser reads numbers and booleans as their text (`fraction: 0.4`),
/// and no structural type admits string-or-number, so values are left untyped and the
/// parser refuses anything that is not a scalar.
pub(crate) fn scalar_string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": true},
    })
}
