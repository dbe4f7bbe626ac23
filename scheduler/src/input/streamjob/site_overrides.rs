//! `spec.siteOverrides`: what a job changes in one site, the checks of its names and
//! templates, and the settings a launch in that site runs with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::StreamJobSpec;
use super::validation::check_flink_option;
use crate::input::common::{self, check_name};
use crate::input::error::Problems;
use crate::input::template::{self, TemplateValues};
use crate::limits::MAX_SITE_OVERRIDES;

/// What changes when the job runs in one particular site, e.g. the Kafka cluster it reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteOverride {
    /// Replaces `spec.args` in this site (`[]`: no arguments); absent: `spec.args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Flink options over `spec.flinkConfiguration` in this site (these win).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "common::scalar_string_map"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::scalar_string_map")
    )]
    pub flink_configuration: BTreeMap<String, String>,
    /// Environment variables of the job's JobManager and TaskManager containers in this site.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "common::scalar_string_map"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::scalar_string_map")
    )]
    pub env: BTreeMap<String, String>,
}

/// What a launch in one site runs with: the job's settings with that site's override
/// applied and every template expanded ([`StreamJobSpec::settings_in`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteSettings {
    pub args: Vec<String>,
    pub flink_configuration: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

/// Environment variables a job may not set: they would replace the Flink configuration
/// twinsite writes (`FLINK_PROPERTIES` in standalone pods, `FLINK_CONF_DIR` everywhere) or
/// what twinsite tells the job itself (`TWINSITE_*`).
pub const RESERVED_ENV_NAMES: [&str; 2] = ["FLINK_PROPERTIES", "FLINK_CONF_DIR"];
pub const RESERVED_ENV_PREFIX: &str = "TWINSITE_";

impl StreamJobSpec {
    /// The settings of a launch in `values.site`: `siteOverrides[site].args` (when set) in
    /// place of `args`, its `flinkConfiguration` over the job's, its `env`, with templates
    /// expanded. `Err((field, reason))` for a template that does not read (admission refuses
    /// those, so only a record that bypassed it gets here).
    pub fn settings_in(&self, values: &TemplateValues) -> Result<SiteSettings, (String, String)> {
        let Some(site) = self.site_overrides.get(&values.site) else {
            return Ok(SiteSettings {
                args: self.args.clone(),
                flink_configuration: self.flink_configuration.clone(),
                env: BTreeMap::new(),
            });
        };
        let at = format!("spec.siteOverrides.{}", values.site);
        let expand = |field: String, text: &str| {
            template::expand(text, values).map_err(|e| (field, e.to_string()))
        };
        let args = match &site.args {
            Some(args) => args
                .iter()
                .enumerate()
                .map(|(i, arg)| expand(format!("{at}.args[{i}]"), arg))
                .collect::<Result<_, _>>()?,
            None => self.args.clone(),
        };
        let mut flink_configuration = self.flink_configuration.clone();
        for (key, value) in &site.flink_configuration {
            let value = expand(format!("{at}.flinkConfiguration[{key:?}]"), value)?;
            flink_configuration.insert(key.clone(), value);
        }
        let env = site
            .env
            .iter()
            .map(|(name, value)| Ok((name.clone(), expand(format!("{at}.env[{name:?}]"), value)?)))
            .collect::<Result<_, (String, String)>>()?;
        Ok(SiteSettings {
            args,
            flink_configuration,
            env,
        })
    }
}

/// Kubernetes' rule for environment variable names before 1.34 (`[-._a-zA-Z][-._a-zA-Z0-9]*`),
/// which every supported cluster accepts.
fn env_name_error(name: &str) -> Option<String> {
    let allowed = |b: u8, first: bool| {
        b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_') || (!first && b.is_ascii_digit())
    };
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| allowed(b, true)) && bytes.all(|b| allowed(b, false));
    if !valid {
        return Some(format!(
            "{name:?} is not an environment variable name: letters, digits, '_', '-' or '.', not starting with a digit"
        ));
    }
    if RESERVED_ENV_NAMES.contains(&name) || name.starts_with(RESERVED_ENV_PREFIX) {
        return Some(format!(
            "{name:?} is set by twinsite itself (reserved: {}, {RESERVED_ENV_PREFIX}*)",
            RESERVED_ENV_NAMES.join(", ")
        ));
    }
    None
}

fn check_template(problems: &mut Problems, field: String, text: &str) {
    if let Err(error) = template::check(text) {
        problems.field(field, error.to_string());
    }
}

pub(super) fn validate_site_overrides(spec: &StreamJobSpec, problems: &mut Problems) {
    if spec.site_overrides.len() > MAX_SITE_OVERRIDES {
        problems.field(
            "spec.siteOverrides",
            format!(
                "{} sites, more than the {MAX_SITE_OVERRIDES} a job may override",
                spec.site_overrides.len()
            ),
        );
        return;
    }
    for (site, settings) in &spec.site_overrides {
        check_name(problems, &format!("spec.siteOverrides[{site:?}]"), site);
        let at = format!("spec.siteOverrides.{site}");
        for (i, arg) in settings.args.iter().flatten().enumerate() {
            check_template(problems, format!("{at}.args[{i}]"), arg);
        }
        let map = format!("{at}.flinkConfiguration");
        for (key, value) in &settings.flink_configuration {
            check_flink_option(problems, &map, key);
            check_template(problems, format!("{map}[{key:?}]"), value);
        }
        for (name, value) in &settings.env {
            let field = format!("{at}.env[{name:?}]");
            if let Some(error) = env_name_error(name) {
                problems.field(field.clone(), error);
            }
            check_template(problems, field, value);
        }
    }
}
