//! The job status the controller writes: defined with the records it is stored in
//! (`crate::state::status`), named here too because the controller is what writes it.

pub use crate::state::status::{
    Condition, JobPhase, JobStatus, LastCheckpoint, REPLICATION_BEHIND,
};
