//! The twinsite controller: CLI, wiring and the I/O adapters around the pure crates.

pub mod cli;
pub mod commands;
pub mod leader;
pub mod site;
pub mod state;
