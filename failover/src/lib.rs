//! Failover engine: events and snapshots in, commands out (see README.md). Pure: time arrives
//! as values, and the driver in `src/` executes every command.

pub mod engine;
pub mod health;
pub mod operation;
pub mod sim;
pub mod types;

pub use engine::{
    AuditEntry, Command, Engine, EngineConfig, Event, JobPhase, JobRecord, OpsRequest, Record,
    RecoveryReport, RequestError, SiteRecord, SiteStatus, StaleGeneration,
};
pub use health::{NodeVerdict, SiteSigns, SiteThresholds, SiteVerdict, judge_node, judge_site};
pub use operation::{
    FailoverPlan, MoveMode, MoveStep, OpJob, OpKind, OpState, Operation, PlannedMove, Progress,
};
pub use types::*;
