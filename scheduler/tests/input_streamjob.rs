//! StreamJob YAML: valid files resolve to demands; every kind of mistake is reported with
//! the file, the document and job, and the field path.

use scheduler::input::streamjob::FailoverTrigger;
use scheduler::input::{InputError, parse_flink_plan, parse_stream_jobs};
use scheduler::model::Priority;

const JOBS: &str = include_str!("fixtures/input/jobs.yaml");

fn job(extra_spec: &str) -> String {
    format!(
        "apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: orders-enrich, namespace: trade}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 4
  jobManager: {{resources: {{cpu: '1', memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: '2', memory: 4Gi}}, slots: 2}}
  checkpoints: {{dir: hdfs:///flink/checkpoints/orders}}
{extra_spec}"
    )
}

fn error_of(yaml: &str) -> String {
    let error: InputError = parse_stream_jobs("jobs.yaml", yaml).unwrap_err();
    error.to_string()
}

#[test]
fn the_fixture_jobs_parse_and_resolve_to_demands() {
    let jobs = parse_stream_jobs("jobs.yaml", JOBS).unwrap();
    assert_eq!(jobs.len(), 3);
    let orders = jobs[0].demand().unwrap();
    assert_eq!(orders.id.0, "trade/orders-enrich");
    assert_eq!(orders.tenant.0, "trade");
    assert_eq!(orders.priority, Priority::Critical);
    assert_eq!(orders.job_manager.cpu_milli, 1000);
    assert_eq!(orders.task_manager.cpu_milli, 2000);
    assert_eq!(orders.task_manager.memory_bytes, 4 << 30);
    assert_eq!(orders.task_managers, 4, "8 slots / 2 per TaskManager");
    assert!(orders.allow_offline);
    assert_eq!(orders.tolerations.len(), 1);
    assert!(orders.node_affinity.is_some());
    assert_eq!(
        jobs[0].spec.flink_configuration["taskmanager.memory.managed.fraction"],
        "0.4"
    );

    let clicks = jobs[1].demand().unwrap();
    assert_eq!(
        clicks.tenant.0, "marketing",
        "spec.tenant overrides the namespace"
    );
    assert_eq!(clicks.job_manager.cpu_milli, 500);
    assert_eq!(clicks.task_managers, 2, "slots default to 1");
    assert_eq!(jobs[1].spec.failover.mode, FailoverTrigger::None);
}

#[test]
fn a_plan_needing_more_slots_than_the_parallelism_sizes_the_job() {
    let jobs = parse_stream_jobs("jobs.yaml", JOBS).unwrap();
    // Default group: max(12, 4) = 12; group "sinks": 4. 16 slots / 4 per TaskManager.
    assert_eq!(jobs[2].slot_need().unwrap(), 16);
    assert_eq!(jobs[2].demand().unwrap().task_managers, 4);
}

#[test]
fn jobs_serialized_back_to_yaml_parse_to_the_same_jobs() {
    let jobs = parse_stream_jobs("jobs.yaml", JOBS).unwrap();
    let yaml = scheduler::input::streamjob::stream_jobs_to_yaml(&jobs).unwrap();
    let again = parse_stream_jobs("again.yaml", &yaml).unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.demand().unwrap()).collect::<Vec<_>>(),
        again
            .iter()
            .map(|j| j.demand().unwrap())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_kubectl_list_of_stream_jobs_is_read_item_by_item() {
    let jobs = parse_stream_jobs("jobs.yaml", JOBS).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": jobs});
    let parsed = parse_stream_jobs("list.json", &list.to_string()).unwrap();
    assert_eq!(parsed, jobs);
}

#[test]
fn an_unknown_spec_field_is_named_with_file_document_job_and_path() {
    let message = error_of(&job("  taskManagr: {slots: 1}\n"));
    assert!(message.contains("jobs.yaml: document 1 (trade/orders-enrich): spec.taskManagr: unknown field `taskManagr`, expected one of"), "{message}");
}

#[test]
fn an_unknown_field_inside_a_toleration_is_an_error_too() {
    let message = error_of(&job(
        "  placement: {tolerations: [{key: a, operator: Exists, efect: NoSchedule}]}\n",
    ));
    assert!(message.contains("document 1 (trade/orders-enrich): spec.placement.tolerations[0].efect: unknown field `efect`"), "{message}");
}

#[test]
fn a_bad_quantity_names_the_field_and_kubernetes_rule() {
    let yaml = job("").replace("memory: 4Gi", "memory: 4GB");
    let message = error_of(&yaml);
    assert!(message.contains("jobs.yaml: document 1 (trade/orders-enrich): spec.taskManager.resources.memory: quantities must match"), "{message}");
}

#[test]
fn a_zero_cpu_request_is_refused() {
    let message = error_of(&job("").replace("cpu: '2'", "cpu: '0'"));
    assert!(
        message.contains("spec.taskManager.resources.cpu: must be positive"),
        "{message}"
    );
}

#[test]
fn a_bad_priority_lists_the_tiers() {
    let message = error_of(&job("").replace("priority: high", "priority: urgent"));
    assert!(
        message
            .contains("document 1 (trade/orders-enrich): spec.priority: unknown variant `urgent`"),
        "{message}"
    );
    assert!(message.contains("best-effort"), "{message}");
}

#[test]
fn a_missing_name_is_reported_at_metadata_name() {
    let message = error_of(&job("").replace("name: orders-enrich, ", ""));
    assert!(
        message.contains("jobs.yaml: document 1: metadata.name: required field is missing"),
        "{message}"
    );
}

#[test]
fn a_name_that_is_not_a_dns_label_is_refused() {
    let message = error_of(&job("").replace("name: orders-enrich", "name: Orders_Enrich"));
    assert!(
        message.contains(
            "(trade/Orders_Enrich): metadata.name: \"Orders_Enrich\" is not a DNS-1123 label"
        ),
        "{message}"
    );
}

#[test]
fn a_duplicate_job_names_both_documents() {
    let yaml = format!("{}---\n{}", job(""), job(""));
    let message = error_of(&yaml);
    assert!(message.contains("jobs.yaml: document 2 (trade/orders-enrich): duplicate StreamJob trade/orders-enrich: already defined in document 1 (trade/orders-enrich)"), "{message}");
}

#[test]
fn a_wrong_api_version_or_kind_is_named() {
    let yaml = job("")
        .replace("twinsite.io/v1alpha1", "twinsite.io/v1")
        .replace("kind: StreamJob", "kind: FlinkDeployment");
    let message = error_of(&yaml);
    assert!(message.contains("document 1 (trade/orders-enrich): apiVersion: expected \"twinsite.io/v1alpha1\", found \"twinsite.io/v1\""), "{message}");
    assert!(
        message.contains("kind: expected \"StreamJob\", found \"FlinkDeployment\""),
        "{message}"
    );
}

#[test]
fn problems_in_several_documents_are_all_reported() {
    let yaml = format!(
        "{}---\n{}",
        job("").replace("parallelism: 4", "parallelism: 0"),
        job("")
            .replace("orders-enrich", "other")
            .replace("interval: 60s", "")
            .replace(
                "checkpoints: {dir: hdfs:///flink/checkpoints/orders}",
                "checkpoints: {dir: s3://bucket/x, interval: soon}"
            )
    );
    let error = parse_stream_jobs("jobs.yaml", &yaml).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("document 1 (trade/orders-enrich): spec.parallelism: must be at least 1"),
        "{message}"
    );
    assert!(
        message
            .contains("document 2 (trade/other): spec.checkpoints.dir: unsupported scheme \"s3\""),
        "{message}"
    );
    assert!(
        message.contains(
            "document 2 (trade/other): spec.checkpoints.interval: invalid duration \"soon\""
        ),
        "{message}"
    );
}

#[test]
fn a_job_without_checkpoints_must_opt_out_of_failover() {
    let yaml = job("").replace(
        "  checkpoints: {dir: hdfs:///flink/checkpoints/orders}\n",
        "",
    );
    let message = error_of(&yaml);
    assert!(
        message.contains("spec.checkpoints: required unless spec.failover.mode is none"),
        "{message}"
    );
    assert!(parse_stream_jobs("jobs.yaml", &format!("{yaml}  failover: {{mode: none}}\n")).is_ok());
}

#[test]
fn a_preferred_site_outside_the_allowed_ones_is_refused() {
    let message = error_of(&job(
        "  placement: {sites: {preferred: dc-c, allowed: [dc-a, dc-b]}}\n",
    ));
    assert!(
        message.contains(
            "spec.placement.sites.preferred: site \"dc-c\" is not in spec.placement.sites.allowed"
        ),
        "{message}"
    );
}

#[test]
fn a_flink_option_the_spec_owns_is_refused_with_the_field_to_use() {
    let message = error_of(&job(
        "  flinkConfiguration: {taskmanager.numberOfTaskSlots: 4}\n",
    ));
    assert!(message.contains("spec.flinkConfiguration[\"taskmanager.numberOfTaskSlots\"]: set by twinsite from spec.taskManager.slots"), "{message}");
}

#[test]
fn an_invalid_toleration_uses_kubernetes_message() {
    let message = error_of(&job(
        "  placement: {tolerations: [{operator: Equal, value: x}]}\n",
    ));
    assert!(
        message.contains("spec.placement.tolerations[0].operator: Invalid value"),
        "{message}"
    );
}

#[test]
fn a_malformed_plan_names_the_plan_field() {
    let message = error_of(&job("  plan: {nodes: [{id: 1, parallelism: many}]}\n"));
    assert!(message.contains("document 1 (trade/orders-enrich): spec.plan.nodes[0].parallelism: expected a positive integer"), "{message}");
    let message = error_of(&job("  plan: '{\"nodes\": [}'\n"));
    assert!(message.contains("spec.plan: not valid JSON"), "{message}");
}

#[test]
fn yaml_syntax_errors_name_the_file_and_line() {
    let message = error_of("apiVersion: [twinsite\nkind: StreamJob\n");
    assert!(
        message.starts_with("jobs.yaml: not valid YAML"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn the_rest_api_plan_sums_the_widest_vertex_of_each_group() {
    let plan = parse_flink_plan(
        "plan.json",
        include_str!("fixtures/input/flink-rest-plan.json"),
    )
    .unwrap();
    assert_eq!(plan.vertices.len(), 3);
    assert_eq!(plan.slot_need(1), 16, "one default group, widest vertex 16");
}

#[test]
fn the_stream_graph_plan_honours_slot_sharing_groups_and_default_parallelism() {
    let plan = parse_flink_plan(
        "plan.json",
        include_str!("fixtures/input/flink-stream-graph-plan.json"),
    )
    .unwrap();
    // default: max(6, 6, sink -1 → job parallelism); enrich: 10.
    assert_eq!(plan.slot_need(4), 16);
    assert_eq!(plan.slot_need(8), 18);
}

#[test]
fn a_plan_without_nodes_is_refused() {
    let error = parse_flink_plan("plan.json", r#"{"jid": "x"}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "plan.json: nodes: required field is missing (the plan's list of operators)"
    );
}

#[test]
fn server_set_metadata_is_tolerated_but_other_metadata_is_not() {
    let tolerated = job("").replace(
        "metadata: {name: orders-enrich, namespace: trade}",
        "metadata: {name: orders-enrich, namespace: trade, uid: 1c2d, generation: 3, resourceVersion: '981', creationTimestamp: '2026-01-05T03:12:40Z'}",
    );
    assert!(parse_stream_jobs("jobs.yaml", &tolerated).is_ok());
    let message = error_of(&job("").replace(
        "metadata: {name: orders-enrich, namespace: trade}",
        "metadata: {name: orders-enrich, namespace: trade, finalizers: [x]}",
    ));
    assert!(
        message.contains("(trade/orders-enrich): metadata.finalizers: unknown field `finalizers`"),
        "{message}"
    );
}

#[test]
fn pod_affinity_is_refused_rather_than_ignored() {
    let message = error_of(&job("  placement: {affinity: {podAntiAffinity: {}}}\n"));
    assert!(message.contains("spec.placement.affinity.podAntiAffinity: unknown field `podAntiAffinity`, expected `nodeAffinity`"), "{message}");
}

const SOURCE_VERTEX: &str = "cbc357ccb763df2852fee8c4fc7d55f2";
const SINK_VERTEX: &str = "90bea66de1c231edf33913ecd54406c1";

#[test]
fn vertex_parallelism_sizes_the_job_by_its_widest_vertex() {
    let yaml = job(&format!(
        "  vertexParallelism: {{{SOURCE_VERTEX}: 2, {SINK_VERTEX}: 6}}\n"
    ));
    let jobs = parse_stream_jobs("jobs.yaml", &yaml).unwrap();
    // parallelism 4, but the sink runs 6 subtasks: 6 slots, 3 TaskManagers of 2 slots.
    assert_eq!(jobs[0].slot_need().unwrap(), 6);
    assert_eq!(jobs[0].demand().unwrap().task_managers, 3);
    assert_eq!(
        jobs[0].spec.parallelism_overrides().as_deref(),
        Some(format!("{SINK_VERTEX}:6,{SOURCE_VERTEX}:2").as_str())
    );
}

#[test]
fn a_vertex_id_flink_would_not_match_is_refused_naming_the_entry() {
    for id in [
        "Source",
        "CBC357CCB763DF2852FEE8C4FC7D55F2",
        "cbc357ccb763df28",
    ] {
        let e = error_of(&job(&format!("  vertexParallelism: {{{id}: 2}}\n")));
        assert!(
            e.contains(&format!("spec.vertexParallelism[\"{id}\"]"))
                && e.contains("32 lowercase hex"),
            "{e}"
        );
    }
}

#[test]
fn a_vertex_parallelism_above_max_parallelism_or_zero_is_refused() {
    // No maxParallelism: Flink's default for parallelism 4 is 128.
    let e = error_of(&job(&format!(
        "  vertexParallelism: {{{SOURCE_VERTEX}: 129}}\n"
    )));
    assert!(e.contains("max parallelism 128, found 129"), "{e}");
    let e = error_of(&job(&format!(
        "  maxParallelism: 16\n  vertexParallelism: {{{SOURCE_VERTEX}: 32}}\n"
    )));
    assert!(e.contains("max parallelism 16, found 32"), "{e}");
    let e = error_of(&job(&format!(
        "  vertexParallelism: {{{SOURCE_VERTEX}: 0}}\n"
    )));
    assert!(e.contains("between 1 and"), "{e}");
}

#[test]
fn the_flink_overrides_option_is_refused_in_flink_configuration() {
    let e = error_of(&job(
        "  flinkConfiguration: {pipeline.jobvertex-parallelism-overrides: 'a:1'}\n",
    ));
    assert!(e.contains("spec.vertexParallelism"), "{e}");
}
