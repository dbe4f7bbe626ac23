//! The formats users hand us (kubectl JSON, StreamJob YAML, policy YAML, Flink plans), parsed
//! from text into the model with errors that name the source, the object and the field.

mod common;
pub mod error;
pub mod flink_plan;
pub mod kube_objects;
pub mod policy;
pub mod streamjob;

pub use common::API_VERSION;
pub use error::{InputError, InputProblem, Problems};
pub use flink_plan::{FlinkPlan, parse_flink_plan};
pub use policy::{Policy, parse_policy};
pub use streamjob::{StreamJob, StreamJobSpec, parse_stream_jobs};
