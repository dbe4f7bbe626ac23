//! Engine tests in openraft's style: feed events at given instants, compare the commands.
//! One binary; a module per theme, over one harness (`harness.rs`).

#[path = "../common/mod.rs"]
mod common;

mod generations;
mod harness;
mod jobs;
mod operations;
mod rounds;
mod sites;

/// What every test module uses.
mod prelude {
    pub use std::collections::{BTreeMap, BTreeSet};
    pub use std::time::Duration;

    pub use super::common::*;
    pub use super::harness::*;
    pub use failover::*;
    pub use scheduler::model::Priority;
}
