//! The controller's configuration file (`twinsite run --config FILE`) and its embedded default.
//!
//! The file says how to reach things (state store, API, simulated inputs); *what* runs where
//! is the policy file's business (sites, pools, quotas, detection, replication), which the
//! config only points at. Schema: `deploy/config/README.md`; example: `deploy/config/twinsite.yaml`.
//!
//! `file` holds the shapes users write and `resolved` the [`Config`] the code reads; `resolve`
//! turns one into the other, handing each section with rules of its own to its module (`api`,
//! `etcd`, `local_flink`, `stream_jobs`, `agents`, `node_usage`); `token` reads the API
//! tokens at start. Must never: start or connect to anything (it reads the files the
//! configuration names, and the token's variable), stop at the first problem (every bad field
//! is reported, in file order), or fill in a value the file got wrong.

mod agents;
mod api;
mod etcd;
mod file;
mod local_flink;
mod node_usage;
mod resolve;
mod resolved;
mod stream_jobs;
mod token;

use std::path::Path;

use scheduler::input::{InputError, Problems, decode_document};

pub use file::{
    AgentsSpec, ApiSpec, CONFIG_KIND, ConfigFile, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES, EtcdSpec, EtcdTlsSpec, FailoverSpec, GenerateSpec, LocalFlinkSpec,
    NodeUsageSpec, ReconcileSpec, SimulatedSiteFiles, SimulationSpec, StateSpec, StreamJobsSpec,
};
pub use resolved::{
    AgentsConfig, ApiConfig, Config, EtcdConfigResolved, FailoverConfig, LocalFlinkConfig,
    MetricsConfig, NodeUsageConfig, NodeUsageQueries, SimulationConfig, StateConfig, TokenSource,
};
pub use token::check_private_file;

use resolve::resolve;

/// A configuration error: every problem names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] InputError),
}

impl Config {
    /// The embedded default: two simulated sites, local storage under `./twinsite-data`,
    /// embedded state, API on localhost, sample jobs.
    pub fn embedded_default() -> Config {
        let file = ConfigFile {
            api_version: scheduler::input::API_VERSION.to_string(),
            kind: CONFIG_KIND.to_string(),
            policy: None,
            data_dir: None,
            state: StateSpec::default(),
            api: ApiSpec::default(),
            simulation: SimulationSpec::default(),
            jobs: None,
            reconcile: ReconcileSpec::default(),
            failover: FailoverSpec::default(),
            local_flink: None,
            metrics: None,
            stream_jobs: None,
            agents: AgentsSpec::default(),
            node_usage: None,
        };
        let mut problems = Problems::new("embedded default");
        let config = resolve(file, Path::new("."), "embedded default", &mut problems);
        // The default is built from constants that the tests check resolve cleanly.
        match (config, problems.is_empty()) {
            (Some(config), true) => config,
            _ => unreachable!("the embedded default configuration resolves"),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&path.display().to_string(), &text, base)
    }

    /// Parses config text; relative paths in it are taken relative to `base`.
    pub fn parse(source: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let (file, mut problems) = decode_document::<ConfigFile>(source, text, CONFIG_KIND)?;
        let config = resolve(file, base, source, &mut problems);
        match config {
            Some(config) => Ok(problems.finish(config)?),
            None => Err(problems.into_error("not a valid configuration").into()),
        }
    }
}

#[cfg(test)]
mod tests;
