//! twinsite's placement core: the cluster model, Kubernetes' matching semantics, the inputs
//! users hand us, and gang placement across two sites. Pure: no network, clock or filesystem.
//!
//! May use: serde and the parsers, chrono (times arrive as values), and HiGHS through
//! `good_lp` only behind the `milp` feature. Must never: do I/O, read the wall clock, or
//! depend on another twinsite crate (failover and the binary depend on it, not the reverse).

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
