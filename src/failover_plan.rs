//! The scheduler as the failover engine's placer (one adapter, in the failover crate, shared
//! with the simulation). A failover dry run asks the engine itself
//! (`Controller::failover_dry_run`): the leader's live engine, or on a follower one resumed
//! from the store, so that the plan it shows is the one a real request would follow.
//!
//! A view over the controller (like `diagnosis`), for the operator page and diagnosis:
//! may use the controller; must never be used by it (the controller takes the placer from
//! `failover::placer` itself).

pub use failover::placer::SchedulerPlacer;

use failover::{FailoverPlan, MoveMode, OpsRequest, RequestError};
use scheduler::model::SiteId;

use crate::controller::Controller;
use crate::controller::failover::{DriverError, RequestOutcome};
use crate::state::StateError;

/// The plan a `mode` failover of `from` to `to` would follow, asked of the engine that would
/// carry it out (`Controller::failover_dry_run`), for read-only views (the operator page,
/// diagnosis). A request that engine refuses (an operation already running, a site that is
/// not up) comes back as its reason.
pub async fn dry_run(
    controller: &Controller,
    from: &SiteId,
    to: &SiteId,
    mode: MoveMode,
) -> Result<Result<FailoverPlan, RequestError>, StateError> {
    let request = OpsRequest::Failover {
        from: from.clone(),
        to: to.clone(),
        mode,
        dry_run: true,
    };
    match controller.failover_dry_run(request).await {
        Ok(RequestOutcome::Plan(plan)) => Ok(Ok(*plan)),
        Ok(RequestOutcome::Rejected(reason)) => Ok(Err(reason)),
        Ok(RequestOutcome::Operation(op)) => Err(StateError::Unavailable {
            operation: "failover dry run",
            key: "failover".into(),
            reason: format!(
                "a dry run answered with operation {} instead of a plan",
                op.id
            ),
        }),
        Err(DriverError::State(e)) => Err(e),
        Err(DriverError::NotLeading) => Err(StateError::Unavailable {
            operation: "failover dry run",
            key: "failover".into(),
            reason: DriverError::NotLeading.to_string(),
        }),
    }
}
