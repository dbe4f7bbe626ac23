//! The twinsite controller: CLI, wiring and the I/O adapters around the pure crates.

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
pub mod kube_jobs;
pub mod leader;
pub mod metrics;
pub mod redact;
pub mod replication;
pub mod site;
pub mod state;
