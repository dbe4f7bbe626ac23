//! The StreamJob CRD in `deploy/crd/streamjob.yaml` is generated from the Rust types, and the
//! CRD and the StreamJob parser agree on what a job is.
//!
//! No API server runs here, so what the API server would do with the CRD is checked by a
//! small model of it in this file: structural-schema rules, validation and defaulting for
//! the keywords the generated schema uses. The model refuses any keyword it does not know,
//! so a schema that grows one cannot pass unchecked.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::Resource;
use proptest::prelude::*;
use regex::Regex;
use scheduler::generate::{GenerateParams, generate};
use scheduler::input::parse_stream_jobs;
use scheduler::k8s::{Quantity, QuantityError};
use scheduler::schema::QUANTITY_PATTERN;
use serde_json::{Value, json};
use twinsite::controller::{JobPhase, JobStatus};
use twinsite::crd::{StreamJob, StreamJobStatus, crd, crd_yaml};

const CRD_PATH: &str = "deploy/crd/streamjob.yaml";

const REGENERATE: &str = "regenerate it with\n\
    \x20   TWINSITE_UPDATE_CRD=1 cargo test --test crd_drift\n\
    or\n\
    \x20   cargo run -- crd > deploy/crd/streamjob.yaml\n\
    and commit the result";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `openAPIV3Schema` of the generated CRD's only version, as JSON.
fn open_api_schema() -> Value {
    let crd = crd();
    assert_eq!(crd.spec.versions.len(), 1, "one served version");
    let schema = crd.spec.versions[0].schema.as_ref().expect("a schema");
    serde_json::to_value(
        schema
            .open_api_v3_schema
            .as_ref()
            .expect("an openAPIV3Schema"),
    )
    .unwrap()
}

// --- drift -----------------------------------------------------------------------------

/// The file operators apply must be exactly what the types generate today; a change to a
/// spec type (a field, a doc comment, a default) without regenerating fails here.
#[test]
fn the_committed_crd_is_the_one_the_rust_types_generate() {
    let generated = crd_yaml().unwrap();
    let path = repo(CRD_PATH);
    if std::env::var_os("TWINSITE_UPDATE_CRD").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "{CRD_PATH} differs from what the Rust types generate (first difference at line \
             {line}); {REGENERATE}"
        );
    }
}

#[test]
fn the_committed_yaml_reads_back_as_the_generated_crd() {
    let text = std::fs::read_to_string(repo(CRD_PATH)).unwrap();
    let read: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    // Not assert_eq: the Debug of two CRDs is pages long and says less than the message.
    assert!(
        read == crd(),
        "{CRD_PATH} does not read back as crd(); {REGENERATE}"
    );
}

/// `twinsite crd` prints [`crd_yaml`]. Checked through the parser rather than by running the
/// binary: the target directory may be shared, and another build can replace the binary
/// under a running test.
#[test]
fn twinsite_crd_is_a_subcommand() {
    use clap::Parser;
    let cli = twinsite::cli::Cli::try_parse_from(["twinsite", "crd"]).unwrap();
    assert!(matches!(cli.command, twinsite::cli::Command::Crd));
}

#[test]
fn the_crd_names_the_resource_the_parser_reads() {
    let crd = crd();
    assert_eq!(
        StreamJob::api_version(&()),
        scheduler::input::API_VERSION,
        "the CRD's group/version is the apiVersion the parser requires"
    );
    assert_eq!(StreamJob::kind(&()), "StreamJob");
    assert_eq!(crd.metadata.name.as_deref(), Some("streamjobs.twinsite.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert!(version.served && version.storage);
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some(), "status is a subresource");
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Priority",
            "Site",
            "Generation",
            "Phase",
            "Replicated",
            "Age"
        ],
        "printer columns"
    );
}

// --- structural schema -------------------------------------------------------------------

/// Kubernetes refuses a CRD whose schema is not structural
/// (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>).
#[test]
fn the_crd_schema_is_structural() {
    let schema = open_api_schema();
    let mut problems = Vec::new();
    structural_problems(&schema, "openAPIV3Schema", &mut problems);
    assert!(
        problems.is_empty(),
        "not structural:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_structural_check_finds_what_kubernetes_refuses() {
    let cases = [
        (
            json!({"type": "object", "properties": {"a": {}}}),
            "no type",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
            "additionalProperties: false",
        ),
        (
            json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}),
            "anyOf",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string", "enum": ["x", null]}}}),
            "enum value null",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "integer", "default": "one"}}}),
            "default",
        ),
    ];
    for (schema, what) in cases {
        let mut problems = Vec::new();
        structural_problems(&schema, "s", &mut problems);
        assert!(!problems.is_empty(), "{what} passed the structural check");
    }
}

fn structural_problems(schema: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        problems.push(format!("{at}: a schema must be an object"));
        return;
    };
    let flag = |name: &str| node.get(name) == Some(&Value::Bool(true));
    let int_or_string = flag("x-kubernetes-int-or-string");
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    for key in node.keys() {
        if !KNOWN_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!(
                "{at}: keyword {key:?} is not modelled by this test; extend it"
            ));
        }
    }
    match node.get("type") {
        Some(_) if int_or_string => problems.push(format!(
            "{at}: x-kubernetes-int-or-string must not have a type"
        )),
        None if !int_or_string && !preserve => problems.push(format!("{at}: no type")),
        _ => {}
    }
    for junctor in ["anyOf", "allOf", "oneOf", "not"] {
        if node.contains_key(junctor) {
            problems.push(format!(
                "{at}: {junctor} (only the int-or-string form may carry types; none is needed)"
            ));
        }
    }
    if node.get("additionalProperties") == Some(&Value::Bool(false)) {
        problems.push(format!("{at}: additionalProperties cannot be set to false"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        problems.push(format!(
            "{at}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        for value in values {
            if !has_type(value, node.get("type")) {
                problems.push(format!(
                    "{at}: enum value {value} is not of the node's type"
                ));
            }
        }
    }
    if let Some(default) = node.get("default") {
        let mut errors = Vec::new();
        admit(schema, default, &format!("{at}.default"), &mut errors);
        problems.extend(errors);
    }
    for (name, child) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        structural_problems(child, &format!("{at}.{name}"), problems);
    }
    match node.get("items") {
        Some(items @ Value::Object(_)) => structural_problems(items, &format!("{at}[]"), problems),
        Some(_) => problems.push(format!("{at}: items must be one schema")),
        None => {}
    }
    if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
        structural_problems(values, &format!("{at}{{}}"), problems);
    }
}

/// Every keyword the schema may use; the validator below implements each of them.
const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "nullable",
    "default",
    "description",
    "title",
    "format",
    "minimum",
    "pattern",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    // Junctors are refused above; they are named here so the refusal says why.
    "anyOf",
    "allOf",
    "oneOf",
    "not",
];

fn has_type(value: &Value, declared: Option<&Value>) -> bool {
    match declared.and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => false,
    }
}

// --- validation and defaulting, as the API server does them ------------------------------

/// Validates `value` against `schema` the way the API server does on create. Unknown fields
/// are reported: the API server would prune them (and `kubectl apply`'s default strict
/// field validation refuses them).
fn admit(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let node = schema.as_object().expect("schema object");
    let flag = |name: &str| node.get(name) == Some(&Value::Bool(true));
    if value.is_null() {
        if !flag("nullable") {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!("{at}: {value} must be of type integer or string"));
        }
    } else if let Some(declared) = node.get("type") {
        if !has_type(value, Some(declared)) {
            errors.push(format!("{at}: {value} must be of type {declared}"));
            return;
        }
    } else if !flag("x-kubernetes-preserve-unknown-fields") {
        errors.push(format!("{at}: the schema has no type"));
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    if let (Some(pattern), Some(text)) =
        (node.get("pattern").and_then(Value::as_str), value.as_str())
        && !Regex::new(pattern).unwrap().is_match(text)
    {
        errors.push(format!("{at}: {text:?} does not match {pattern}"));
    }
    if let (Some(minimum), Some(number)) =
        (node.get("minimum").and_then(Value::as_f64), value.as_f64())
        && number < minimum
    {
        errors.push(format!("{at}: {number} is less than {minimum}"));
    }
    if let Some(format) = node.get("format").and_then(Value::as_str) {
        let fits = match format {
            "int32" => value.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
            "int64" => value.is_i64(),
            "uint32" => value.as_u64().is_some_and(|v| u32::try_from(v).is_ok()),
            "uint64" => value.is_u64(),
            other => panic!("{at}: format {other:?} is not modelled by this test"),
        };
        if !fits {
            errors.push(format!("{at}: {value} is not a valid {format}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = node.get("properties").and_then(Value::as_object);
        for required in node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                errors.push(format!("{at}.{name}: required"));
            }
        }
        for (name, child) in object {
            let child_at = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                node.get("additionalProperties"),
            ) {
                (Some(child_schema), _) => admit(child_schema, child, &child_at, errors),
                (None, Some(values @ Value::Object(_))) => admit(values, child, &child_at, errors),
                (None, _) if flag("x-kubernetes-preserve-unknown-fields") => {}
                (None, _) => errors.push(format!("{child_at}: unknown field")),
            }
        }
    }
    if let (Some(items), Some(array)) = (node.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            admit(items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Structural defaulting: absent properties with a `default` get it, then their own
/// properties are defaulted in turn.
fn apply_defaults(schema: &Value, value: &mut Value) {
    let node = schema.as_object().expect("schema object");
    if let Some(object) = value.as_object_mut() {
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, child_schema) in properties {
                if let (false, Some(default)) =
                    (object.contains_key(name), child_schema.get("default"))
                {
                    object.insert(name.clone(), default.clone());
                }
                if let Some(child) = object.get_mut(name) {
                    apply_defaults(child_schema, child);
                }
            }
        }
        if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
            for child in object.values_mut() {
                apply_defaults(values, child);
            }
        }
    }
    if let (Some(items), Some(array)) = (node.get("items"), value.as_array_mut()) {
        for item in array {
            apply_defaults(items, item);
        }
    }
}

/// What the API server would say about one StreamJob document; the CRD's schema covers
/// `spec` and `status` (it validates `apiVersion`, `kind` and `metadata` itself).
fn api_server_errors(document: &Value) -> Vec<String> {
    let schema = open_api_schema();
    let mut body = document.as_object().cloned().unwrap_or_default();
    for own in ["apiVersion", "kind", "metadata"] {
        body.remove(own);
    }
    let mut errors = Vec::new();
    admit(&schema, &Value::Object(body), "", &mut errors);
    errors
}

// --- the examples ------------------------------------------------------------------------

/// Every StreamJob document that ships with the repository, with where it came from: YAML
/// files holding `kind: StreamJob`, the example in the StreamJobSpec module docs, and
/// generator output (which `twinsite generate` writes for users).
fn example_documents() -> Vec<(String, String)> {
    let mut examples = Vec::new();
    let mut files = Vec::new();
    yaml_files(Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("kind: StreamJob") {
            let name = file
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap()
                .display()
                .to_string();
            examples.push((name, text));
        }
    }
    let module = std::fs::read_to_string(repo("scheduler/src/input/streamjob/mod.rs")).unwrap();
    let doc_example: String = module
        .lines()
        .skip_while(|l| *l != "//! ```yaml")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| {
            format!(
                "{}\n",
                l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
            )
        })
        .collect();
    assert!(
        doc_example.contains("kind: StreamJob"),
        "the StreamJob module docs lost their example"
    );
    examples.push((
        "scheduler/src/input/streamjob/mod.rs docs".into(),
        doc_example,
    ));
    for seed in 1..=3 {
        let generated = generate(&GenerateParams {
            sites: 2,
            nodes_per_site: 4,
            jobs: 40,
            seed,
        })
        .unwrap();
        examples.push((
            format!("twinsite generate --seed {seed}"),
            generated.jobs_yaml,
        ));
    }
    examples
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            // Fuzz corpora hold inputs that must be refused: not examples.
            if !name.starts_with('.') && name != "target" && name != "fuzz-corpus" {
                yaml_files(&path, out);
            }
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !path.ends_with(CRD_PATH) {
            out.push(path);
        }
    }
}

/// The documents of a file, with `List`s opened into their items (as the parser does).
fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .flat_map(|d| match d.get("kind").and_then(Value::as_str) {
            Some("List" | "StreamJobList") => d["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![d],
        })
        .collect()
}

/// An example the parser accepts must also be admitted by the API server, read by the
/// controller's kube type as the same spec, and mean the same after the API server has
/// filled in the schema's defaults.
#[test]
fn every_example_stream_job_is_admitted_by_the_crd_and_read_the_same_by_kube_and_the_parser() {
    let examples = example_documents();
    assert!(
        examples
            .iter()
            .any(|(name, _)| name.ends_with("scheduler/tests/fixtures/input/jobs.yaml")),
        "the scheduler's StreamJob fixture was not found: {:?}",
        examples.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let schema = open_api_schema();
    let mut checked = 0;
    for (name, text) in &examples {
        let parsed = parse_stream_jobs(name, text).unwrap_or_else(|e| panic!("{e}"));
        let documents = documents(text);
        assert_eq!(
            parsed.len(),
            documents.len(),
            "{name}: one job per document"
        );
        for (job, document) in parsed.iter().zip(documents) {
            let id = format!("{name}: {}", job.id());

            let errors = api_server_errors(&document);
            assert!(
                errors.is_empty(),
                "{id}: the API server would refuse it:\n{}",
                errors.join("\n")
            );

            assert_eq!(
                document["apiVersion"],
                StreamJob::api_version(&()).as_ref(),
                "{id}"
            );
            assert_eq!(document["kind"], StreamJob::kind(&()).as_ref(), "{id}");
            let object: StreamJob = serde_json::from_value(document.clone())
                .unwrap_or_else(|e| panic!("{id}: the kube type cannot read it: {e}"));
            assert_eq!(
                object.spec.0, job.spec,
                "{id}: kube and the parser read different specs"
            );
            assert_eq!(
                object.metadata.name.as_deref(),
                Some(job.metadata.name.as_str())
            );
            assert_eq!(
                object.metadata.namespace.as_deref(),
                Some(job.metadata.namespace.as_str())
            );

            let mut defaulted = document.clone();
            apply_defaults(&schema, &mut defaulted);
            let text = serde_json::to_string(&defaulted).unwrap();
            let reparsed = parse_stream_jobs(&id, &text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                reparsed[0].spec, job.spec,
                "{id}: the CRD's defaults change the job"
            );
            checked += 1;
        }
    }
    assert!(checked >= 120, "only {checked} example jobs were checked");
}

const MINIMAL_JOB: &str = "\
apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: trade}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 2
  jobManager: {resources: {cpu: 500m, memory: 1Gi}}
  taskManager: {resources: {cpu: 1, memory: 2Gi}}
  checkpoints: {dir: hdfs:///flink/checkpoints/orders}
";

fn only_document(yaml: &str) -> Value {
    documents(yaml).remove(0)
}

#[test]
fn the_minimal_job_is_accepted_everywhere() {
    assert!(parse_stream_jobs("job.yaml", MINIMAL_JOB).is_ok());
    assert_eq!(
        api_server_errors(&only_document(MINIMAL_JOB)),
        Vec::<String>::new()
    );
}

#[test]
fn a_job_with_a_misspelled_field_is_rejected_by_the_parser() {
    let yaml = MINIMAL_JOB.replace("  parallelism: 2", "  parallelism: 2\n  paralelism: 4");
    let message = parse_stream_jobs("job.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "job.yaml: document 1 (trade/orders): spec.paralelism: unknown field `paralelism`"
        ),
        "{message}"
    );
    let kube = serde_json::from_value::<StreamJob>(only_document(&yaml));
    assert!(
        kube.is_err(),
        "the kube type read a misspelled field: {kube:?}"
    );
    assert_eq!(
        api_server_errors(&only_document(&yaml)),
        [".spec.paralelism: unknown field"],
        "the CRD must not declare it, so the API server prunes it or (strict) refuses it"
    );
}

#[test]
fn a_misspelled_field_inside_a_toleration_is_rejected_by_the_parser() {
    let yaml = MINIMAL_JOB.replace(
        "  parallelism: 2",
        "  parallelism: 2\n  placement:\n    tolerations: [{key: a, operater: Exists}]",
    );
    let message = parse_stream_jobs("job.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(message.contains("operater"), "{message}");
    assert_eq!(
        api_server_errors(&only_document(&yaml)),
        [".spec.placement.tolerations[0].operater: unknown field"]
    );
}

/// The one documented disagreement, and it is Kubernetes' own: an int-or-string admits no
/// fractional number, while the parser (like `kubectl` for a Pod) reads `0.5` as `"0.5"`.
#[test]
fn a_fractional_number_as_quantity_is_read_by_the_parser_but_refused_by_the_crd() {
    let yaml = MINIMAL_JOB.replace("cpu: 500m", "cpu: 0.5");
    assert!(parse_stream_jobs("job.yaml", &yaml).is_ok());
    assert_eq!(
        api_server_errors(&only_document(&yaml)),
        [".spec.jobManager.resources.cpu: 0.5 must be of type integer or string"]
    );
    let quoted = MINIMAL_JOB.replace("cpu: 500m", "cpu: \"0.5\"");
    assert_eq!(
        api_server_errors(&only_document(&quoted)),
        Vec::<String>::new()
    );
}

#[test]
fn a_malformed_quantity_is_refused_by_the_crd_pattern_and_the_parser() {
    let yaml = MINIMAL_JOB.replace("memory: 1Gi", "memory: 1GB");
    assert!(parse_stream_jobs("job.yaml", &yaml).is_err());
    let errors = api_server_errors(&only_document(&yaml));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(".spec.jobManager.resources.memory: \"1GB\" does not match"));
}

/// Where the schema is looser than the parser: a value no structural type describes
/// (`flinkConfiguration` takes strings, numbers and booleans) passes the API server and is
/// refused by the parser, which the controller reports on the object.
#[test]
fn a_nested_flink_configuration_value_passes_the_crd_but_the_parser_refuses_it() {
    let base = MINIMAL_JOB.to_string() + "  flinkConfiguration:\n";
    let numbers = base.clone() + "    taskmanager.memory.managed.fraction: 0.4\n";
    assert!(parse_stream_jobs("job.yaml", &numbers).is_ok());
    assert_eq!(
        api_server_errors(&only_document(&numbers)),
        Vec::<String>::new()
    );

    let nested = base + "    state.backend: {type: rocksdb}\n";
    assert!(parse_stream_jobs("job.yaml", &nested).is_err());
    assert_eq!(
        api_server_errors(&only_document(&nested)),
        Vec::<String>::new()
    );
}

#[test]
fn an_unknown_priority_is_refused_by_the_crd_and_the_parser() {
    let yaml = MINIMAL_JOB.replace("priority: high", "priority: urgent");
    assert!(parse_stream_jobs("job.yaml", &yaml).is_err());
    let errors = api_server_errors(&only_document(&yaml));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(".spec.priority: \"urgent\" is not one of"));
}

#[test]
fn a_job_without_checkpoints_or_failover_gets_the_parsers_defaults_from_the_api_server() {
    let mut document = only_document(MINIMAL_JOB);
    apply_defaults(&open_api_schema(), &mut document);
    let spec = &document["spec"];
    assert_eq!(spec["taskManager"]["slots"], 1);
    assert_eq!(spec["checkpoints"]["interval"], "60s");
    assert_eq!(spec["checkpoints"]["retained"], 1);
    assert_eq!(spec["checkpoints"]["incremental"], false);
    // Objects the user left out stay out: defaulting only fills in absent fields of objects
    // that are present.
    assert!(spec.get("failover").is_none() && spec.get("placement").is_none());
}

#[test]
fn the_status_of_every_controller_phase_is_admitted_by_the_crd() {
    for phase in JobPhase::ALL {
        let mut controller_status = JobStatus::pending("waiting for room in dc-a");
        controller_status.phase = phase;
        controller_status.site = Some("dc-b".into());
        let mut status = StreamJobStatus::of(&controller_status, 7);
        status.observed_generation = Some(3);

        let mut document = only_document(MINIMAL_JOB);
        document["status"] = serde_json::to_value(&status).unwrap();
        assert_eq!(
            api_server_errors(&document),
            Vec::<String>::new(),
            "{phase:?}"
        );
        let object: StreamJob = serde_json::from_value(document).unwrap();
        assert_eq!(object.status, Some(status));
    }
}

#[test]
fn a_phase_the_controller_does_not_have_is_refused_by_the_crd() {
    let mut document = only_document(MINIMAL_JOB);
    document["status"] = json!({"phase": "exploded"});
    let errors = api_server_errors(&document);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(".status.phase: \"exploded\" is not one of"));
}

#[test]
fn a_job_never_launched_publishes_no_generation() {
    let status = StreamJobStatus::of(&JobStatus::pending("no room"), 0);
    assert_eq!(status.generation, None);
    assert_eq!(status.phase, Some(JobPhase::Pending.into()));
    assert_eq!(status.message.as_deref(), Some("no room"));
}

// --- quantities ----------------------------------------------------------------------------

/// Quantities the parser accepts, from apimachinery's own test tables, in every form.
const VALID_QUANTITIES: &[&str] = &[
    "0", "1", "100m", "1.5", ".5", "5.", "+1", "-1", "1n", "1u", "1k", "1M", "1G", "1T", "1P",
    "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei", "1e3", "1E3", "1e-3", "1.5e+3", "0.5Gi",
];

#[test]
fn every_listed_quantity_the_parser_accepts_matches_the_crd_pattern() {
    let pattern = Regex::new(QUANTITY_PATTERN).unwrap();
    for text in VALID_QUANTITIES {
        assert!(
            Quantity::new(*text).validate().is_ok(),
            "{text} is no longer a quantity"
        );
        assert!(
            pattern.is_match(text),
            "{text} does not match the CRD pattern"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The pattern is the API server's check; the parser must never accept what it refuses,
    /// or a valid file would be an invalid cluster object.
    #[test]
    fn the_crd_pattern_admits_every_quantity_the_parser_accepts(
        text in "[+-]?[0-9]{0,3}[.]?[0-9]{0,3}([eEinumkKMGTP]{0,2}[-+]?[0-9]{0,2})?",
    ) {
        let accepted = match Quantity::new(text.clone()).validate() {
            Ok(()) | Err(QuantityError::TooLarge(_)) => true,
            Err(_) => false,
        };
        if accepted {
            prop_assert!(Regex::new(QUANTITY_PATTERN).unwrap().is_match(&text), "{text:?}");
        }
    }
}
