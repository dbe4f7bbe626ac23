//! The formats users hand us (kubectl JSON, StreamJob YAML, policy YAML, Flink plans), parsed
//! from text into the model with errors that name the source, the object and the field.

mod common;
pub mod diagnosis_policy;
pub mod error;
pub mod flink_plan;
pub mod kube_objects;
pub mod policy;
pub mod scale_profile;
pub mod streamjob;
pub mod template;

pub use common::{API_VERSION, dns1123_label_error};
pub use error::{InputError, InputProblem, Problems};
pub use flink_plan::{FlinkPlan, parse_flink_plan};
pub use policy::{Policy, parse_policy};
pub use streamjob::{SiteOverride, SiteSettings, StreamJob, StreamJobSpec, parse_stream_jobs};
pub use template::TemplateValues;

/// Decodes the one YAML document of `yaml` as a `kind` object of twinsite's `apiVersion`,
/// with the same rules as every other input: unknown fields are errors, every problem names
/// `source` and the field path. For documents defined outside this crate (the controller's
/// configuration); their own semantic checks go into the returned `Problems`.
pub fn decode_document<T: serde::de::DeserializeOwned>(
    source: &str,
    yaml: &str,
    kind: &str,
) -> Result<(T, Problems), InputError> {
    let mut documents = common::yaml_documents(source, yaml)?;
    let mut problems = Problems::new(source);
    if documents.len() != 1 {
        problems.whole(format!(
            "expected exactly one {kind} document, found {}",
            documents.len()
        ));
        return Err(problems.into_error("not a valid document"));
    }
    let document = documents.remove(0);
    if !document.is_object() {
        problems.whole(format!("expected a {kind} (a YAML mapping)"));
        return Err(problems.into_error("not a valid document"));
    }
    if !common::check_type_meta(&document, kind, &mut problems) {
        return Err(problems.into_error("not a valid document"));
    }
    match common::decode::<T>(document, &mut problems) {
        Some(value) if problems.is_empty() => Ok((value, problems)),
        _ => Err(problems.into_error(&format!("not a valid {kind}"))),
    }
}

/// A duration as people write it (`500ms`, `60s`, `5m`, `1h30m`); the error says what to write.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    common::parse_duration(text)
}
