//! The generator writes the real input formats: the same parsers read them back, the same
//! seed gives the same bytes, and the full-size load is realistic.

use scheduler::generate::{GenerateParams, Generated, generate, site_name};
use scheduler::input::kube_objects::parse_node_list;
use scheduler::input::{parse_policy, parse_stream_jobs};
use scheduler::model::{JobDemand, Node, Priority, Resources};

fn small(seed: u64) -> Generated {
    generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 60,
        jobs: 120,
        seed,
    })
    .unwrap()
}

fn parse_all(generated: &Generated) -> (Vec<Vec<Node>>, Vec<JobDemand>) {
    let nodes = generated
        .nodes_json
        .iter()
        .map(|(site, json)| {
            parse_node_list(&format!("{site}.json"), json).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let jobs =
        parse_stream_jobs("jobs.yaml", &generated.jobs_yaml).unwrap_or_else(|e| panic!("{e}"));
    let demands = jobs.iter().map(|j| j.demand().unwrap()).collect();
    (nodes, demands)
}

#[test]
fn generated_nodes_jobs_and_policy_parse_back() {
    let generated = small(7);
    let (nodes, demands) = parse_all(&generated);
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|site| site.len() == 60));
    assert_eq!(demands.len(), 120);
    let policy =
        parse_policy("policy.yaml", &generated.policy_yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.site_ids().len(), 2);
    assert_eq!(policy.placement_policy().pools.len(), 2);
    assert!(!policy.placement_policy().quotas.is_empty());
    assert_eq!(policy.placement_policy().reserves.len(), 2);
}

#[test]
fn the_same_seed_gives_the_same_output_and_another_seed_does_not() {
    assert_eq!(small(42), small(42));
    assert_ne!(small(42).jobs_yaml, small(43).jobs_yaml);
}

#[test]
fn generated_nodes_look_like_kubectl_output() {
    let generated = small(3);
    let list: serde_json::Value =
        serde_json::from_str(generated.nodes_json.values().next().unwrap()).unwrap();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    let node = &list["items"][0];
    assert_eq!(node["kind"], "Node");
    assert!(node["metadata"]["labels"]["twinsite.io/pool"].is_string());
    assert!(node["status"]["allocatable"]["cpu"].is_string());
    assert!(
        node["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready")
    );
}

#[test]
fn offline_nodes_are_tainted_and_some_jobs_tolerate_them() {
    let generated = small(11);
    let (nodes, demands) = parse_all(&generated);
    let offline: Vec<&Node> = nodes
        .iter()
        .flatten()
        .filter(|n| n.labels["twinsite.io/pool"] == "offline-hdfs")
        .collect();
    assert!(!offline.is_empty());
    assert!(
        offline
            .iter()
            .all(|n| n.taints.iter().any(|t| t.key == "twinsite.io/offline"))
    );
    assert!(
        demands
            .iter()
            .any(|d| d.allow_offline && !d.tolerations.is_empty())
    );
    assert!(
        demands
            .iter()
            .any(|d| !d.node_selector.is_empty() || d.node_affinity.is_some())
    );
}

#[test]
fn some_generated_plans_need_more_slots_than_the_parallelism() {
    let generated = small(5);
    let jobs = parse_stream_jobs("jobs.yaml", &generated.jobs_yaml).unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.slot_need().unwrap() > u64::from(j.spec.parallelism))
    );
}

#[test]
fn site_names_run_through_the_alphabet() {
    assert_eq!(site_name(0), "dc-a");
    assert_eq!(site_name(1), "dc-b");
    assert_eq!(site_name(25), "dc-z");
    assert_eq!(site_name(26), "dc-aa");
}

/// At the reference size the jobs ask for a real share of the online capacity, the
/// priority mix is the documented one, and TaskManager counts span 1 to 64.
#[test]
fn the_reference_size_requests_about_half_of_online_capacity() {
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 1000,
        jobs: 1000,
        seed: 1,
    })
    .unwrap();
    let (nodes, demands) = parse_all(&generated);
    let online: Resources = nodes
        .iter()
        .flatten()
        .filter(|n| n.labels["twinsite.io/pool"] == "online")
        .fold(Resources::ZERO, |sum, n| sum + n.allocatable);
    let requested = demands
        .iter()
        .fold(Resources::ZERO, |sum, d| sum + d.total());
    let cpu_share = requested.cpu_milli as f64 / online.cpu_milli as f64;
    let memory_share = requested.memory_bytes as f64 / online.memory_bytes as f64;
    println!("requested / online: cpu {cpu_share:.2}, memory {memory_share:.2}");
    assert!(
        (0.35..=0.65).contains(&cpu_share),
        "cpu share {cpu_share:.2}"
    );
    assert!(
        (0.2..=0.7).contains(&memory_share),
        "memory share {memory_share:.2}"
    );
    let critical = demands
        .iter()
        .filter(|d| d.priority == Priority::Critical)
        .count();
    assert!((50..=150).contains(&critical), "{critical} critical jobs");
    assert!(demands.iter().any(|d| d.task_managers == 1));
    assert!(demands.iter().any(|d| d.task_managers > 32));
    assert!(demands.iter().all(|d| (1..=64).contains(&d.task_managers)));
}

#[test]
fn quotas_are_generous_except_for_one_tenant_whose_quota_binds() {
    let generated = small(9);
    let (_, demands) = parse_all(&generated);
    let policy = parse_policy("policy.yaml", &generated.policy_yaml).unwrap();
    let quotas = policy.placement_policy().quotas;
    let tenants: std::collections::BTreeSet<_> = quotas.iter().map(|q| q.tenant.clone()).collect();
    let mut binding = 0;
    for tenant in tenants {
        let cpu: i64 = demands
            .iter()
            .filter(|d| d.tenant == tenant)
            .map(|d| d.total().cpu_milli)
            .sum();
        let quota_cpu: Vec<i64> = quotas
            .iter()
            .filter(|q| q.tenant == tenant)
            .map(|q| q.limit.cpu_milli)
            .collect();
        if quota_cpu.iter().sum::<i64>() < cpu {
            binding += 1;
        } else {
            assert!(
                quota_cpu.iter().all(|&q| q >= cpu),
                "{tenant} fits in any one site"
            );
        }
    }
    assert_eq!(binding, 1);
}

#[test]
fn a_fleet_of_thousands_spans_enough_tenants_to_parse_back_within_the_tenant_bound() {
    let generated = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: 3,
        jobs: 5_000,
        seed: 7,
    })
    .unwrap();
    let jobs = parse_stream_jobs("jobs.yaml", &generated.jobs_yaml).expect("parses back");
    assert_eq!(jobs.len(), 5_000);
    let mut per_tenant = std::collections::BTreeMap::<String, usize>::new();
    for job in &jobs {
        *per_tenant.entry(job.tenant().0).or_default() += 1;
    }
    assert!(per_tenant.len() >= 10, "{per_tenant:?}");
    assert!(
        per_tenant
            .values()
            .all(|&n| n <= scheduler::limits::MAX_JOBS_PER_TENANT),
        "{per_tenant:?}"
    );
    parse_policy("policy.yaml", &generated.policy_yaml).expect("the policy names every tenant");
}
