//! The scheduler as the failover engine's placer (one adapter, in the failover crate, shared
//! with the simulation). A failover dry run asks the engine itself
//! (`Controller::failover_dry_run`): the leader's live engine, or on a follower one resumed
//! from the store, so that the plan it shows is the one a real request would follow.

pub use failover::sim::SchedulerPlacer;
