//! The twinsite controller: CLI, wiring and the I/O adapters around the pure crates.

pub mod leader;
pub mod site;
pub mod state;
