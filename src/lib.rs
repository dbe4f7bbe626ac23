//! The twinsite controller: CLI, wiring and the I/O adapters around the pure crates
//! (`scheduler`, `failover`, `hdfs-sync`), which decide; this crate observes and acts.
//!
//! Its modules are layered one way; a module uses only modules below it (checked by
//! `tests/layering.rs`: no import circle, and the floor uses nothing above it):
//!
//! ```text
//! cli → commands                      wiring: every subcommand, `twinsite run`
//!          ↓
//!        api                          HTTP doors and views
//!          ↓
//!   kube_jobs · diagnosis · failover_plan · config     doors/views over the controller
//!   node_usage (above config)         sites wrapped with measured node usage
//!          ↓
//!     controller                      the leader's loop, the failover driver's effects
//!          ↓
//!   replication · agent · leader · job_metrics · redact · crd
//!          ↓
//!        job                          StreamJob ↔ record ↔ launch, written once
//!          ↓
//!    site · state                     the sites' and the store's interfaces (floor)
//!          ↓
//!   scheduler · failover · hdfs-sync  the pure crates
//! ```
//!
//! Must never: decide in `src/` what a pure crate can decide from a snapshot, or let a
//! module below call one above it (invert it: a trait the upper one implements, as
//! `replication::ReplicationContext`).

pub mod agent;
pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod crd;
pub mod diagnosis;
pub mod failover_plan;
pub mod job;
pub mod job_metrics;
pub mod kube_jobs;
pub mod leader;
pub mod node_usage;
pub mod redact;
pub mod replication;
pub mod site;
pub mod state;
