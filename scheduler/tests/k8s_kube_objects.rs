//! kubectl's JSON for nodes and pods becomes the model, with Kubernetes' quantity rounding
//! and pod request arithmetic, and every problem located by file, item and field.

use proptest::prelude::*;
use scheduler::input::kube_objects::{parse_node_list, parse_pod_list};
use scheduler::k8s::{Quantity, Taint, TaintEffect};
use scheduler::model::{Resources, RunningPod};

const NODES: &str = include_str!("fixtures/nodes-dc-a.json");
const PODS: &str = include_str!("fixtures/pods-dc-a.json");

const KI: i64 = 1024;
const MI: i64 = 1024 * KI;
const GI: i64 = 1024 * MI;

fn messages(error: &scheduler::input::InputError) -> Vec<String> {
    error.problems().iter().map(ToString::to_string).collect()
}

#[test]
fn kubectl_get_nodes_output_becomes_model_nodes() {
    let nodes = parse_node_list("nodes-dc-a.json", NODES).unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dc-a-flink-001",
            "dc-a-flink-002",
            "dc-a-hdfs-017",
            "dc-a-flink-003"
        ]
    );

    let flink = &nodes[0];
    assert_eq!(
        flink.allocatable,
        Resources::new(63_770, 263_518_068 * KI, 110)
    );
    assert!(flink.ready && !flink.unschedulable && flink.accepts_new_pods());
    assert_eq!(
        flink.taints,
        vec![Taint {
            key: "dedicated".into(),
            value: "flink".into(),
            effect: TaintEffect::NoSchedule
        }]
    );
    assert_eq!(
        flink
            .labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("dc-a-1")
    );
    assert_eq!(
        flink
            .labels
            .get("node-role.kubernetes.io/flink")
            .map(String::as_str),
        Some("")
    );

    let cordoned = &nodes[1];
    assert!(cordoned.unschedulable && cordoned.ready && !cordoned.accepts_new_pods());
    assert_eq!(
        cordoned.taints.len(),
        2,
        "timeAdded is read past, the taint kept"
    );

    let hdfs = &nodes[2];
    assert_eq!(hdfs.allocatable, Resources::new(47_500, 191 * GI, 80));
    assert_eq!(hdfs.taints[0].effect, TaintEffect::PreferNoSchedule);

    let unreachable = &nodes[3];
    assert!(!unreachable.ready, "Ready=Unknown is not ready");
    assert_eq!(unreachable.taints[1].effect, TaintEffect::NoExecute);
}

#[test]
fn a_single_node_object_and_a_node_list_are_accepted_too() {
    let single = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"solo"},
        "status":{"allocatable":{"cpu":"4","memory":"16Gi","pods":"110"},
                  "conditions":[{"type":"Ready","status":"True"}]}}"#;
    let nodes = parse_node_list("solo.json", single).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].allocatable, Resources::new(4000, 16 * GI, 110));

    let node_list = r#"{"apiVersion":"v1","kind":"NodeList","items":[
        {"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#;
    assert_eq!(parse_node_list("list.json", node_list).unwrap().len(), 2);

    let empty = r#"{"apiVersion":"v1","kind":"List","items":[],"metadata":{"resourceVersion":""}}"#;
    assert!(parse_node_list("empty.json", empty).unwrap().is_empty());
}

#[test]
fn missing_allocatable_entries_and_conditions_mean_zero_capacity_and_not_ready() {
    let json = r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"bare"},"status":{"allocatable":{"cpu":"2"}}}]}"#;
    let nodes = parse_node_list("bare.json", json).unwrap();
    assert_eq!(nodes[0].allocatable, Resources::new(2000, 0, 0));
    assert!(!nodes[0].ready);
    assert!(nodes[0].labels.is_empty() && nodes[0].taints.is_empty());
}

#[test]
fn nulls_where_go_would_write_nil_are_read_as_empty() {
    let json = r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"n","labels":null},
        "spec":{"taints":null},"status":{"allocatable":{"cpu":4,"memory":"1Gi","pods":110},"conditions":null}}]}"#;
    let nodes = parse_node_list("nulls.json", json).unwrap();
    assert_eq!(
        nodes[0].allocatable,
        Resources::new(4000, GI, 110),
        "numbers are quantities too"
    );
}

#[test]
fn a_bad_quantity_names_the_file_the_item_the_node_and_the_field() {
    let mut document: serde_json::Value = serde_json::from_str(NODES).unwrap();
    document["items"][2]["status"]["allocatable"]["memory"] = "191GiB".into();
    document["items"][3]["status"]["allocatable"]["cpu"] = "-4".into();
    let error = parse_node_list("nodes-dc-a.json", &document.to_string()).unwrap_err();
    let messages = messages(&error);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].starts_with(
            "nodes-dc-a.json: items[2] (node \"dc-a-hdfs-017\"): status.allocatable.memory: quantities must match the regular expression"
        ),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("\"191GiB\""));
    assert!(
        messages[1].starts_with(
            "nodes-dc-a.json: items[3] (node \"dc-a-flink-003\"): status.allocatable.cpu: Invalid value: \"-4\": must be greater than or equal to 0"
        ),
        "{}",
        messages[1]
    );
}

#[test]
fn a_wrongly_typed_field_is_reported_with_its_json_path() {
    let json = r#"{"kind":"List","items":[
        {"kind":"Node","metadata":{"name":"ok"}},
        {"kind":"Node","metadata":{"name":"n-17","labels":{"zone":7}}},
        {"kind":"Node","metadata":{"name":"n-18"},"spec":{"taints":[{"key":"a","effect":"Sometimes"}]}}
    ]}"#;
    let error = parse_node_list("nodes.json", json).unwrap_err();
    let messages = messages(&error);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].starts_with("nodes.json: items[1] (node \"n-17\"): metadata.labels.zone: "),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with("nodes.json: items[2] (node \"n-18\"): spec.taints[0].effect: "),
        "{}",
        messages[1]
    );
    assert!(messages[1].contains("Sometimes"), "{}", messages[1]);
}

#[test]
fn duplicate_node_names_are_an_error_naming_both_places() {
    let json = r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}},{"metadata":{"name":"a"}}]}"#;
    let error = parse_node_list("dup.json", json).unwrap_err();
    assert_eq!(
        messages(&error),
        [
            "dup.json: items[2] (node \"a\"): metadata.name: duplicate node name \"a\", first seen at items[0]"
        ]
    );
}

#[test]
fn input_that_is_not_a_node_list_is_refused_with_a_reason() {
    let error = parse_node_list("x.json", "{not json").unwrap_err();
    assert!(messages(&error)[0].starts_with("x.json: not valid JSON: "));
    let error = parse_node_list("x.json", r#"{"kind":"PodList","items":[]}"#).unwrap_err();
    assert!(
        messages(&error)[0].contains("found kind \"PodList\""),
        "{error}"
    );
    let error = parse_node_list(
        "x.json",
        r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"}}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        messages(&error),
        ["x.json: items[0] (node \"p\"): kind: expected a Node, found \"Pod\""]
    );
    let error =
        parse_node_list("x.json", r#"{"kind":"List","items":[{"metadata":{}}]}"#).unwrap_err();
    assert!(
        messages(&error)[0].starts_with("x.json: items[0] (node without a name): metadata.name")
    );
}

fn pod<'a>(pods: &'a [RunningPod], name: &str) -> &'a RunningPod {
    pods.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn kubectl_get_pods_output_becomes_running_pods_with_kubernetes_requests() {
    let pods = parse_pod_list("pods-dc-a.json", PODS).unwrap();
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "orders-enrich-7d9f8-abcde",
            "risk-scorer-5c6b7-fghij",
            "ledger-api-6f7c8-klmno",
            "report-gen-8a9b0-pqrst",
            "debug-shell-0a1b2-c3d4e"
        ],
        "finished and unbound pods take no capacity"
    );

    let orders = pod(&pods, "orders-enrich-7d9f8-abcde");
    assert_eq!(orders.namespace, "trade");
    assert_eq!(orders.node, "dc-a-flink-001");
    assert_eq!(
        orders.request,
        Resources::new(1500 + 100, 2 * GI + 128 * MI, 1),
        "regular containers add up"
    );

    assert_eq!(
        pod(&pods, "risk-scorer-5c6b7-fghij").request,
        Resources::new(2000, GI, 1),
        "an init container larger than the app sets the cpu peak, the app the memory"
    );

    // istio-proxy (sidecar, 100m/128Mi) runs next to `migrate` (1950m/256Mi) and the app
    // (1/1Gi): init peak 2050m/384Mi, steady state 1100m/1152Mi.
    assert_eq!(
        pod(&pods, "ledger-api-6f7c8-klmno").request,
        Resources::new(2050, 1152 * MI, 1)
    );

    assert_eq!(
        pod(&pods, "report-gen-8a9b0-pqrst").request,
        Resources::new(250 + 250, 300 * MI + 120 * MI, 1),
        "limits stand in for missing requests, and overhead is added"
    );

    assert_eq!(
        pod(&pods, "debug-shell-0a1b2-c3d4e").request,
        Resources::new(0, 0, 1),
        "a best-effort pod still takes a pod slot"
    );
}

fn pod_json(spec: &str) -> String {
    format!(
        r#"{{"kind":"List","items":[{{"kind":"Pod","metadata":{{"name":"p","namespace":"ns"}},
            "spec":{spec},"status":{{"phase":"Running"}}}}]}}"#
    )
}

fn request_of(spec: &str) -> Resources {
    let pods = parse_pod_list("pods.json", &pod_json(spec)).unwrap();
    assert_eq!(pods.len(), 1);
    pods[0].request
}

#[test]
fn sidecars_count_before_the_init_container_that_follows_them_only() {
    // Kubernetes' own example (KEP-753): sidecar 1 started, init 2 runs with it, sidecar 3
    // starts after init 2 finished, then the app containers.
    let spec = r#"{"nodeName":"n","initContainers":[
        {"name":"s1","restartPolicy":"Always","resources":{"requests":{"cpu":"1","memory":"1Gi"}}},
        {"name":"i2","resources":{"requests":{"cpu":"5","memory":"1Gi"}}},
        {"name":"s3","restartPolicy":"Always","resources":{"requests":{"cpu":"1","memory":"3Gi"}}},
        {"name":"i4","resources":{"requests":{"cpu":"1","memory":"2Gi"}}}],
      "containers":[{"name":"app","resources":{"requests":{"cpu":"2","memory":"1Gi"}}}]}"#;
    // i2 peak: 1+5 cpu; i4 peak: 1+1+1 cpu, 1+3+2 Gi; steady: 1+1+2 cpu, 1+3+1 Gi.
    assert_eq!(request_of(spec), Resources::new(6000, 6 * GI, 1));
}

#[test]
fn tiny_requests_are_summed_exactly_before_rounding_up_as_kubernetes_sums_quantities() {
    let spec = r#"{"nodeName":"n","containers":[
        {"name":"a","resources":{"requests":{"cpu":"0.0004","memory":"0.5"}}},
        {"name":"b","resources":{"requests":{"cpu":"0.0004","memory":"0.5"}}}]}"#;
    assert_eq!(request_of(spec), Resources::new(1, 1, 1));
}

#[test]
fn pod_level_requests_replace_the_container_sum() {
    let spec = r#"{"nodeName":"n","resources":{"requests":{"cpu":"3","memory":"4Gi"}},
        "containers":[{"name":"a","resources":{"requests":{"cpu":"1","memory":"1Gi"}}}],
        "overhead":{"cpu":"100m"}}"#;
    assert_eq!(request_of(spec), Resources::new(3100, 4 * GI, 1));
}

#[test]
fn a_bad_pod_quantity_names_the_pod_and_the_container_field() {
    let spec = r#"{"nodeName":"n","initContainers":[{"name":"i","resources":{"limits":{"memory":"2 Gi"}}}],
        "containers":[{"name":"a","resources":{"requests":{"cpu":"1.2.3"}}}]}"#;
    let error = parse_pod_list("pods.json", &pod_json(spec)).unwrap_err();
    let messages = messages(&error);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].starts_with(
            "pods.json: items[0] (pod \"ns/p\"): spec.containers[0].resources.requests.cpu: quantities must match"
        ),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with(
            "pods.json: items[0] (pod \"ns/p\"): spec.initContainers[0].resources.limits.memory: quantities must match"
        ),
        "{}",
        messages[1]
    );
}

#[test]
fn a_pod_list_is_refused_as_a_node_list_and_the_other_way_round() {
    assert!(parse_pod_list("nodes-dc-a.json", NODES).is_err());
    assert!(parse_node_list("pods-dc-a.json", PODS).is_err());
}

proptest! {
    #[test]
    fn any_text_is_either_parsed_or_refused_without_panicking(text in ".{0,200}") {
        let _ = parse_node_list("fuzz.json", &text);
        let _ = parse_pod_list("fuzz.json", &text);
    }

    #[test]
    fn node_allocatable_is_the_quantitys_own_milli_and_plain_value_or_a_located_error(
        cpu in "[+-]?[0-9.]{1,6}[numkMGTPEi]{0,2}",
        memory in "[0-9]{1,8}(Ki|Mi|Gi|k|M|G|)",
    ) {
        let json = serde_json::json!({
            "kind": "List",
            "items": [{"kind": "Node", "metadata": {"name": "n"},
                       "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}}]
        })
        .to_string();
        let expected_cpu = Quantity::new(cpu.as_str()).milli_value();
        match parse_node_list("n.json", &json) {
            Ok(nodes) => {
                prop_assert_eq!(Ok(nodes[0].allocatable.cpu_milli), expected_cpu);
                prop_assert_eq!(Ok(nodes[0].allocatable.memory_bytes), Quantity::new(memory.as_str()).value());
            }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.starts_with("n.json: items[0] (node \"n\"): status.allocatable.cpu: "), "{}", message);
            }
        }
    }
}
