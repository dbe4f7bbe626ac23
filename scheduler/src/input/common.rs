//! Pieces every twinsite input format shares: reading YAML documents, decoding one into a
//! typed struct while recording the failing field path, and the syntax checks of names,
//! quantities, durations and URIs.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::{InputError, InputProblem, Problems};
use crate::k8s::Quantity;
use crate::k8s::names::{label_value_errors, qualified_name_errors};
use crate::limits::{MAX_INPUT_BYTES, MAX_JOBS_PER_FILE};

/// The API group and version of every twinsite document.
pub const API_VERSION: &str = "twinsite.io/v1alpha1";

/// The non-empty documents of `text`, or one problem naming the line of the syntax error.
/// Empty documents are skipped, so document numbers count documents with content.
///
/// Text whose first non-blank character is `{` or `[` is one JSON document (what
/// `kubectl get -o json` and the API's clients write) and is read by serde_json, several
/// times faster than a YAML reader on the same text; anything else is YAML.
pub(crate) fn yaml_documents(source: &str, text: &str) -> Result<Vec<Value>, InputError> {
    let whole_problem =
        |message: String| InputError::single(InputProblem::new(source, None, None, message));
    if text.len() > MAX_INPUT_BYTES {
        return Err(whole_problem(format!(
            "{} bytes, more than the {MAX_INPUT_BYTES} one input may hold; split it",
            text.len()
        )));
    }
    if is_json(text) {
        // serde_json refuses nesting deeper than 128 levels on its own (its recursion
        // limit), so a deep JSON nest is refused like a deep YAML one; its message names the
        // line and column.
        return serde_json::from_str::<Value>(text)
            .map(|document| vec![document])
            .map_err(|error| whole_problem(format!("not valid JSON: {error}")));
    }
    serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options(text.len()))
        .map_err(|error| whole_problem(format!("not valid YAML: {error}")))
}

/// Whether `text` is JSON rather than YAML: its first non-blank character opens a JSON
/// object or array. (A YAML document starting with a flow collection is JSON-shaped too,
/// and a flow collection followed by more YAML is refused by serde_json, naming where.)
pub(crate) fn is_json(text: &str) -> bool {
    matches!(
        text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
            .as_bytes()
            .first(),
        Some(b'{' | b'[')
    )
}

/// Parser events, nodes and scalar bytes each honest YAML byte can produce, at most. A node
/// takes at least two bytes (`1,` in a flow list, `- ` in a block one) and an event at most
/// two per node (a collection's start and end); the margin covers short documents. Aliases
/// are what make a tree larger than its text, so a file whose tree outgrows this is an
/// alias bomb, refused however large the file.
const YAML_NODES_PER_BYTE: usize = 1;
const YAML_EVENTS_PER_BYTE: usize = 2;

/// serde-saphyr's budget scaled to the input: its defaults (250 000 nodes, 1 000 000
/// events, 1024 documents, 64 MiB of scalars) fit a file of a few thousand jobs, and a
/// `kubectl get -o yaml` of 10 000 StreamJobs is ~30 MB; so each limit is the larger of the
/// default and a constant times the input's bytes. Depth (64), aliases and anchors keep
/// their defaults: no honest input needs more, and the alias/anchor ratio check stays on.
fn yaml_options(input_bytes: usize) -> serde_saphyr::Options {
    let defaults = serde_saphyr::Budget::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = defaults
        .max_nodes
        .max(YAML_NODES_PER_BYTE.saturating_mul(input_bytes));
    budget.max_events = defaults
        .max_events
        .max(YAML_EVENTS_PER_BYTE.saturating_mul(input_bytes));
    budget.max_total_scalar_bytes = defaults.max_total_scalar_bytes.max(input_bytes);
    // One more than a file may hold jobs, so that our own message says what is too many;
    // every document takes at least a byte, which bounds a separator storm.
    budget.max_documents = (MAX_JOBS_PER_FILE + 1).max(input_bytes);
    budget.max_reader_input_bytes = Some(MAX_INPUT_BYTES);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Decodes `value` into `T`, recording a problem (with the field path) when it does not fit.
/// Fields that `T` would silently ignore (those of Kubernetes' own types, which are lenient
/// because they also read kubectl output) are reported as unknown too: in our formats an
/// unknown field is always a mistake.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, problems: &mut Problems) -> Option<T> {
    let mut ignored = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path| ignored.push(ignored_path(&path));
        let deserializer = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize::<_, T>(deserializer)
    };
    let decoded = match result {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let path = error.path().to_string();
            let message = error.inner().to_string();
            let (field, message) = locate_serde_message(&path, message);
            match field {
                Some(field) => problems.field(field, message),
                None => problems.whole(message),
            }
            None
        }
    };
    for path in ignored {
        let (parent, name) = match path.rsplit_once('.') {
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => (String::new(), path.clone()),
        };
        problems.field(
            path.clone(),
            format!(
                "unknown field `{name}`{}",
                if parent.is_empty() {
                    String::new()
                } else {
                    format!(" in {parent}")
                }
            ),
        );
    }
    decoded
}

/// Serde reports a missing field at its parent's path; point at the field itself.
fn locate_serde_message(path: &str, message: String) -> (Option<String>, String) {
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        let field = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        return (Some(field), "required field is missing".to_string());
    }
    if parent.is_empty() {
        (None, message)
    } else {
        (Some(parent.to_string()), message)
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => join(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

pub(crate) fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// The string at `pointer` in `value`, if it is one.
pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// Checks `apiVersion` and `kind` before anything else, so that a document of another kind
/// gets one clear message instead of a list of unknown fields. True when both are right.
pub(crate) fn check_type_meta(document: &Value, kind: &str, problems: &mut Problems) -> bool {
    let mut right = true;
    match document.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            problems.field(
                "apiVersion",
                format!("expected \"{API_VERSION}\", found {other}"),
            );
            right = false;
        }
        None => {
            problems.field(
                "apiVersion",
                format!("required field is missing (expected \"{API_VERSION}\")"),
            );
            right = false;
        }
    }
    match document.get("kind") {
        Some(Value::String(v)) if v == kind => {}
        Some(other) => {
            problems.field("kind", format!("expected \"{kind}\", found {other}"));
            right = false;
        }
        None => {
            problems.field(
                "kind",
                format!("required field is missing (expected \"{kind}\")"),
            );
            right = false;
        }
    }
    right
}

/// A DNS-1123 label (RFC 1123): what Kubernetes requires of namespaces and of names that
/// become Services and pod labels. twinsite uses it for every name it defines.
pub fn dns1123_label_error(value: &str) -> Option<String> {
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if value.is_empty() {
        Some("must not be empty".to_string())
    } else if value.len() > 63 {
        Some(format!(
            "{value:?} must be no more than 63 characters (a DNS-1123 label)"
        ))
    } else if !valid_chars || !valid_ends {
        Some(format!(
            "{value:?} is not a DNS-1123 label: lower case alphanumeric characters or '-', starting and ending with an alphanumeric character (e.g. 'my-name' or '123-abc')"
        ))
    } else {
        None
    }
}

pub(crate) fn check_name(problems: &mut Problems, field: &str, value: &str) {
    if let Some(message) = dns1123_label_error(value) {
        problems.field(field, message);
    }
}

/// Label keys and values with Kubernetes' rules; `field` is the map's path.
pub(crate) fn check_labels(
    problems: &mut Problems,
    field: &str,
    labels: &BTreeMap<String, String>,
    check_values: bool,
) {
    for (key, value) in labels {
        let at = format!("{field}[{key:?}]");
        for error in qualified_name_errors(key) {
            problems.field(&at, format!("key {key:?}: {error}"));
        }
        if check_values {
            for error in label_value_errors(value) {
                problems.field(&at, format!("value {value:?}: {error}"));
            }
        }
    }
}

/// Deserializes a quantity written as a YAML string or number (`cpu: 2`, `cpu: "500m"`), as
/// Kubernetes' int-or-string quantities allow. Syntax is checked later, with the field path.
pub(crate) fn quantity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Quantity, D::Error> {
    Ok(Quantity(scalar_string(deserializer)?))
}

pub(crate) fn optional_quantity<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Quantity>, D::Error> {
    Ok(Some(Quantity(scalar_string(deserializer)?)))
}

/// A string from a YAML string, number or boolean (`key: 0.4` in a string map).
pub(crate) fn scalar_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        String(String),
        Integer(i64),
        Unsigned(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(
        match Scalar::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a string or a number"))?
        {
            Scalar::String(s) => s,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Unsigned(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        },
    )
}

/// A string map whose values may be written as YAML numbers or booleans.
pub(crate) fn scalar_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "scalar_string")] String);
    let map = BTreeMap::<String, Wrapped>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, Wrapped(v))| (k, v)).collect())
}

/// CPU in millicores, which must be positive (or zero when `allow_zero`).
pub(crate) fn cpu_milli(
    problems: &mut Problems,
    field: &str,
    quantity: &Quantity,
    allow_zero: bool,
) -> Option<i64> {
    checked(
        problems,
        field,
        quantity,
        quantity.milli_value(),
        allow_zero,
    )
}

/// Memory (or a count) as an integer, which must be positive (or zero when `allow_zero`).
pub(crate) fn integer_value(
    problems: &mut Problems,
    field: &str,
    quantity: &Quantity,
    allow_zero: bool,
) -> Option<i64> {
    checked(problems, field, quantity, quantity.value(), allow_zero)
}

fn checked(
    problems: &mut Problems,
    field: &str,
    quantity: &Quantity,
    value: Result<i64, crate::k8s::QuantityError>,
    allow_zero: bool,
) -> Option<i64> {
    match value {
        Err(error) => {
            problems.field(field, error.to_string());
            None
        }
        Ok(v) if v < 0 || (v == 0 && !allow_zero) => {
            let wanted = if allow_zero {
                "must not be negative"
            } else {
                "must be positive"
            };
            problems.field(field, format!("{wanted}, found {:?}", quantity.0));
            None
        }
        Ok(v) => Some(v),
    }
}

/// A duration as written by people (`500ms`, `60s`, `5m`, `1h30m`, `1h 30m`), which must be
/// positive. Units: ms, s, m (minutes), h, d and their long forms.
pub(crate) fn positive_duration(
    problems: &mut Problems,
    field: &str,
    text: &str,
) -> Option<std::time::Duration> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problems.field(field, format!("must be longer than zero, found {text:?}"));
            None
        }
        Ok(d) => Some(d),
        Err(message) => {
            problems.field(field, message);
            None
        }
    }
}

pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("invalid duration {text:?} ({error}); write e.g. \"500ms\", \"60s\", \"5m\" or \"1h30m\"")
    })
}

/// Checks that `uri` has one of `schemes` and a path; returns the scheme.
pub(crate) fn check_uri(
    problems: &mut Problems,
    field: &str,
    uri: &str,
    schemes: &[&str],
    why: &str,
    need_path: bool,
) -> Option<String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        problems.field(
            field,
            format!(
                "{uri:?} is not a URI: expected {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://..."))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
        return None;
    };
    if !schemes.contains(&scheme) {
        problems.field(
            field,
            format!(
                "unsupported scheme {scheme:?} in {uri:?}: {why}; supported: {}",
                schemes.join(", ")
            ),
        );
        return None;
    }
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    if need_path && path.trim_matches('/').is_empty() {
        problems.field(field, format!("{uri:?} has no path"));
        return None;
    }
    if uri.chars().any(char::is_whitespace) {
        problems.field(field, format!("{uri:?} contains white space"));
        return None;
    }
    Some(scheme.to_string())
}

/// Checks that the path of `uri` (already a valid URI) names a place below its root: no `.`
/// or `..` segment, no backslash, no control character. twinsite places such paths under
/// each site's storage root, and a path that climbs out of it would read or write elsewhere.
pub(crate) fn check_contained_path(problems: &mut Problems, field: &str, uri: &str) {
    let path = uri
        .split_once("://")
        .map_or(uri, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    if let Some(segment) = path.split('/').find(|s| *s == ".." || *s == ".") {
        problems.field(
            field,
            format!(
                "{uri:?} has a {segment:?} segment: the path must stay below the site's storage root"
            ),
        );
    } else if path.contains('\\') {
        problems.field(
            field,
            format!("{uri:?} contains a backslash: write the path with '/'"),
        );
    } else if path.chars().any(char::is_control) {
        problems.field(field, format!("{uri:?} contains a control character"));
    }
}
