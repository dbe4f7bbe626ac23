//! Issue #17, "Scale past one company": honest input scales with its size (a `kubectl get
//! streamjobs -o yaml` of 10 000 jobs, files of more than 1024 documents, JSON read as
//! JSON), while a bomb (aliases, depth) stays refused with a clear message however large
//! the file around it.

use scheduler::input::{parse_policy, parse_stream_jobs};
use scheduler::limits::{MAX_INPUT_BYTES, MAX_JOBS_PER_TENANT};

/// One StreamJob's `spec`, in block YAML indented by `indent` spaces.
fn spec_yaml(indent: &str, tenant: &str, index: usize) -> String {
    [
        "priority: high".to_string(),
        "image: flink:2.0.0".to_string(),
        "flinkVersion: v2_0".to_string(),
        format!("jarURI: hdfs:///jars/{tenant}/job-{index}.jar"),
        "parallelism: 4".to_string(),
        "jobManager:".to_string(),
        "  resources: {cpu: '1', memory: 2Gi}".to_string(),
        "taskManager:".to_string(),
        "  resources: {cpu: '2', memory: 4Gi}".to_string(),
        "  slots: 2".to_string(),
        "checkpoints:".to_string(),
        format!("  dir: hdfs:///flink/checkpoints/{tenant}/job-{index}"),
        "  interval: 60s".to_string(),
    ]
    .iter()
    .map(|line| format!("{indent}{line}\n"))
    .collect()
}

/// Tenants enough that none holds more than half its bound.
fn tenant_of(index: usize, jobs: usize) -> String {
    let tenants = (2 * jobs).div_ceil(MAX_JOBS_PER_TENANT);
    format!("team-{:02}", index % tenants)
}

/// What `kubectl get streamjobs -A -o yaml` prints for `jobs` StreamJobs: a `v1` `List` whose
/// items carry the server's metadata, the last-applied annotation and twinsite's `status`.
fn kubectl_list_yaml(jobs: usize) -> String {
    let mut yaml = String::from("apiVersion: v1\nitems:\n");
    for i in 0..jobs {
        let tenant = tenant_of(i, jobs);
        yaml.push_str(&format!(
            "- apiVersion: twinsite.io/v1alpha1
  kind: StreamJob
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {{\"apiVersion\":\"twinsite.io/v1alpha1\",\"kind\":\"StreamJob\",\"metadata\":{{\"name\":\"job-{i}\",\"namespace\":\"{tenant}\"}}}}
    creationTimestamp: \"2026-12-01T10:00:00Z\"
    generation: 3
    name: job-{i}
    namespace: {tenant}
    resourceVersion: \"{rv}\"
    uid: 5f0c7a8e-0000-4000-8000-{i:012}
  spec:
{spec}  status:
    phase: Running
    site: dc-a
    observedGeneration: 3
",
            rv = 100_000 + i,
            spec = spec_yaml("    ", &tenant, i),
        ));
    }
    yaml.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    yaml
}

fn documents_yaml(jobs: usize) -> String {
    (0..jobs)
        .map(|i| {
            let tenant = tenant_of(i, jobs);
            format!(
                "---\napiVersion: twinsite.io/v1alpha1\nkind: StreamJob\nmetadata: {{name: job-{i}, namespace: {tenant}}}\nspec:\n{}",
                spec_yaml("  ", &tenant, i)
            )
        })
        .collect()
}

#[test]
fn a_kubectl_list_of_ten_thousand_stream_jobs_is_accepted() {
    let yaml = kubectl_list_yaml(10_000);
    let jobs = parse_stream_jobs("streamjobs.yaml", &yaml).expect("10 000 jobs are accepted");
    assert_eq!(jobs.len(), 10_000);
    assert_eq!(jobs[9_999].metadata.name, "job-9999");
    assert_eq!(jobs[9_999].metadata.generation, Some(3));
}

#[test]
fn a_file_of_more_than_1024_documents_is_accepted() {
    let jobs = parse_stream_jobs("jobs.yaml", &documents_yaml(1_500)).expect("accepted");
    assert_eq!(jobs.len(), 1_500);
    assert_eq!(jobs[1_499].metadata.name, "job-1499");
}

#[test]
fn a_kubectl_list_item_keeps_refusing_unknown_fields_besides_its_status() {
    let yaml = kubectl_list_yaml(2).replace(
        "    observedGeneration: 3\n",
        "    observedGeneration: 3\n  extra: 1\n",
    );
    let message = parse_stream_jobs("streamjobs.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field `extra`"), "{message}");
}

/// "Billion laughs": nine levels of ten aliases each, 10^9 nodes from a few hundred bytes.
const ALIAS_BOMB: &str = "a: &a [x,x,x,x,x,x,x,x,x,x]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
";

#[test]
fn an_alias_bomb_is_refused_naming_the_budget() {
    let message = parse_stream_jobs("bomb.yaml", ALIAS_BOMB)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("bomb.yaml: not valid YAML: "),
        "{message}"
    );
    assert!(message.contains("budget"), "{message}");
}

#[test]
fn an_alias_bomb_behind_a_large_honest_file_is_still_refused() {
    // The budgets grow with the file's bytes; 10 000 honest jobs (~10 MB) must not buy a
    // bomb of 10^9 nodes room to expand.
    let yaml = format!("{}---\n{ALIAS_BOMB}", documents_yaml(10_000));
    let message = parse_stream_jobs("bomb.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("bomb.yaml: not valid YAML: "),
        "{message}"
    );
    assert!(message.contains("budget"), "{message}");
}

#[test]
fn a_deep_yaml_nest_is_refused_naming_the_depth() {
    let yaml = format!("a: {}{}", "[".repeat(500), "]".repeat(500));
    let message = parse_stream_jobs("deep.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("deep.yaml: not valid YAML: "),
        "{message}"
    );
    let block: String = (0..200)
        .map(|depth| format!("{}k{depth}:\n", "  ".repeat(depth)))
        .collect();
    let message = parse_stream_jobs("deep.yaml", &block)
        .unwrap_err()
        .to_string();
    assert!(message.contains("depth"), "{message}");
}

fn json_job(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "twinsite.io/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name, "namespace": "trade"},
        "spec": {
            "priority": "high",
            "image": "flink:2.0.0",
            "flinkVersion": "v2_0",
            "jarURI": "hdfs:///jars/orders.jar",
            "parallelism": 4,
            "jobManager": {"resources": {"cpu": "1", "memory": "2Gi"}},
            "taskManager": {"resources": {"cpu": 2, "memory": "4Gi"}, "slots": 2},
            "checkpoints": {"dir": "hdfs:///flink/checkpoints/orders", "interval": "60s"},
        },
    })
    .to_string()
}

#[test]
fn a_json_stream_job_and_a_json_list_are_accepted() {
    let jobs = parse_stream_jobs("job.json", &format!("\n  {}", json_job("orders"))).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].spec.parallelism, 4);
    let list = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{}, {}]}}",
        json_job("orders"),
        json_job("payments")
    );
    let jobs = parse_stream_jobs("jobs.json", &list).unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.metadata.name.as_str()).collect();
    assert_eq!(names, ["orders", "payments"]);
}

#[test]
fn a_json_syntax_error_is_named_by_line_and_column() {
    let text = "{\n  \"apiVersion\": \"twinsite.io/v1alpha1\",\n  \"kind\": \"StreamJob\"\n  \"metadata\": {}\n}";
    let message = parse_stream_jobs("job.json", text).unwrap_err().to_string();
    assert_eq!(
        message,
        "job.json: not valid JSON: expected `,` or `}` at line 4 column 3"
    );
}

#[test]
fn a_json_field_error_is_named_by_its_path_as_in_yaml() {
    let text = json_job("orders").replace("\"parallelism\":4", "\"parallelism\":\"four\"");
    let message = parse_stream_jobs("job.json", &text)
        .unwrap_err()
        .to_string();
    assert!(message.contains("spec.parallelism"), "{message}");
}

#[test]
fn a_deep_json_nest_is_refused_by_serde_jsons_recursion_limit() {
    let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let message = parse_stream_jobs("deep.json", &text)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("deep.json: not valid JSON: recursion limit exceeded at line 1"),
        "{message}"
    );
}

#[test]
fn a_policy_written_in_json_is_read_as_json() {
    let policy = parse_policy(
        "policy.json",
        r#"{"apiVersion": "twinsite.io/v1alpha1", "kind": "Policy", "sites": [{"name": "dc-a"}, {"name": "dc-b"}]}"#,
    )
    .unwrap();
    assert_eq!(policy.site_ids().len(), 2);
    let message = parse_policy("policy.json", "{\"kind\": }")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("policy.json: not valid JSON: ") && message.contains("line 1 column"),
        "{message}"
    );
}

#[test]
fn an_input_larger_than_the_byte_cap_is_refused_before_parsing() {
    let text = " ".repeat(MAX_INPUT_BYTES + 1);
    let message = parse_stream_jobs("huge.yaml", &text)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "huge.yaml: {} bytes, more than the {MAX_INPUT_BYTES} one input may hold; split it",
            MAX_INPUT_BYTES + 1
        )
    );
}
