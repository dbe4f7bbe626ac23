//! twinsite's placement core: the cluster model, Kubernetes' matching semantics, the inputs
//! users hand us, and gang placement across two sites. Pure: no network, clock or filesystem.

pub mod diagnosis;
pub mod generate;
pub mod input;
pub mod k8s;
pub mod limits;
pub mod model;
pub mod placement;
pub mod report;
pub mod rightsize;
#[cfg(feature = "schema")]
pub mod schema;
