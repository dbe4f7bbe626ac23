//! Failover engine and its driver (see README.md). Pure: time arrives as values; the
//! engine turns events and snapshots into commands, the driver executes them in rounds
//! through an `Effects` implementation: the controller's (store, sites) or the
//! simulation's (`sim::World`, feature `sim`).
//!
//! May use: the scheduler crate's model and placer (without HiGHS), serde, futures for the
//! driver's concurrency. Must never: do I/O itself, read the wall clock, or keep a second
//! copy of a rule the controller runs (the simulation drives this same engine).

pub mod agent;
pub mod driver;
pub mod engine;
pub mod generation;
pub mod health;
pub mod operation;
pub mod placer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod types;

pub use driver::{
    Driver, DriverLimits, Effects, Launch, MAX_COMMANDS_PER_CALL, Outcome, PassInput, Report,
};
pub use engine::{
    Command, DEFAULT_LAUNCH_BURST, DEFAULT_LAUNCH_RATE, Engine, EngineConfig, Event, FailoverAudit,
    FailoverPhase, OpsRequest, Record, RecoveryReport, RequestError, SiteStatus, StaleGeneration,
    TrackedJob, TrackedSite,
};
pub use generation::{GrantRefused, MAX_GENERATION, next_generation};
pub use health::{NodeVerdict, SiteSigns, SiteThresholds, SiteVerdict, judge_node, judge_site};
pub use operation::{
    FailoverPlan, MoveMode, MoveStep, OpJob, OpKind, OpState, Operation, PlannedMove, Progress,
};
pub use types::*;
