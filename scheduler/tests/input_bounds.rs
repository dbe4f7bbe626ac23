//! Issue #13, findings 1 and 6: values a parser used to accept quietly (and some that made
//! the controller abort) are refused at the door with the field and the value named, and
//! placement refuses what slipped past the door instead of sizing anything by it.

mod placement_fixtures;

use placement_fixtures::*;
use proptest::prelude::*;
use scheduler::input::{Policy, parse_policy, parse_stream_jobs};
use scheduler::limits::{
    FLINK_MAX_PARALLELISM, MAX_JOBS_PER_FILE, MAX_JOBS_PER_TENANT, MAX_RETAINED_CHECKPOINTS,
    MAX_SLOTS_PER_TASK_MANAGER, MAX_TASK_MANAGERS_PER_JOB,
};
use scheduler::model::{JobPlacement, PlacementPolicy, PodPlacement, PodRole, SiteId};
use scheduler::placement::{IncrementalPlacer, plan, validate_plan};

/// A valid job with `spec` lines replaced or added: each `key: value` line given replaces
/// the line of the same key in the template (or is appended to the spec).
fn job_with(namespace: &str, name: &str, overrides: &[&str]) -> String {
    let mut lines: Vec<String> = vec![
        "  priority: high".into(),
        "  image: flink:2.0.0".into(),
        "  flinkVersion: v2_0".into(),
        "  jarURI: hdfs:///jars/orders.jar".into(),
        "  parallelism: 4".into(),
        "  jobManager: {resources: {cpu: '1', memory: 2Gi}}".into(),
        "  taskManager: {resources: {cpu: '2', memory: 4Gi}, slots: 2}".into(),
        "  checkpoints: {dir: 'hdfs:///flink/checkpoints/orders', interval: 60s}".into(),
    ];
    for line in overrides {
        let key = line.split(':').next().unwrap_or("");
        match lines
            .iter_mut()
            .find(|l| l.trim_start().split(':').next() == Some(key))
        {
            Some(existing) => *existing = format!("  {line}"),
            None => lines.push(format!("  {line}")),
        }
    }
    format!(
        "apiVersion: twinsite.io/v1alpha1\nkind: StreamJob\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{}\n",
        lines.join("\n")
    )
}

fn error_of(overrides: &[&str]) -> String {
    parse_stream_jobs("jobs.yaml", &job_with("trade", "orders", overrides))
        .expect_err("the job must be refused")
        .to_string()
}

#[test]
fn a_parallelism_above_flinks_bound_is_refused_naming_the_field_and_the_value() {
    for p in [
        4_294_967_295u64,
        50_000_000,
        u64::from(FLINK_MAX_PARALLELISM) + 1,
    ] {
        let message = error_of(&[&format!("parallelism: {p}")]);
        assert!(
            message.contains(&format!(
                "jobs.yaml: document 1 (trade/orders): spec.parallelism: must be at most 32768 (Flink's bound), found {p}"
            )),
            "{message}"
        );
    }
}

#[test]
fn flinks_largest_parallelism_is_accepted_when_the_task_managers_stay_within_bounds() {
    let jobs = parse_stream_jobs(
        "jobs.yaml",
        &job_with(
            "trade",
            "orders",
            &[
                "parallelism: 32768",
                "taskManager: {resources: {cpu: '2', memory: 4Gi}, slots: 8}",
            ],
        ),
    )
    .unwrap();
    assert_eq!(jobs[0].demand().unwrap().task_managers, 4096);
}

#[test]
fn a_job_needing_more_task_managers_than_the_bound_is_refused_naming_parallelism() {
    let message = error_of(&[
        "parallelism: 32768",
        "taskManager: {resources: {cpu: '2', memory: 4Gi}, slots: 1}",
    ]);
    assert!(
        message.contains(&format!(
            "spec.parallelism: 32768 slots at 1 per TaskManager need 32768 TaskManagers, more than the {MAX_TASK_MANAGERS_PER_JOB} twinsite places for one job"
        )),
        "{message}"
    );
}

#[test]
fn a_plan_whose_slot_need_is_past_the_bound_is_refused_naming_the_plan() {
    // Three slot sharing groups of Flink's largest parallelism: 98304 slots.
    let plan = r#"plan: {nodes: [{id: 1, parallelism: 32768, slotSharingGroup: a}, {id: 2, parallelism: 32768, slotSharingGroup: b}, {id: 3, parallelism: 32768, slotSharingGroup: c}]}"#;
    let message = error_of(&[plan]);
    assert!(
        message.contains("spec.plan: 98304 slots at 2 per TaskManager need 49152 TaskManagers"),
        "{message}"
    );
}

#[test]
fn a_plan_vertex_above_flinks_bound_is_refused_naming_the_vertex() {
    let message = error_of(&["plan: {nodes: [{id: 1, parallelism: 4294967296}]}"]);
    assert!(
        message.contains("spec.plan.nodes[0].parallelism: must be at most 32768 (Flink's bound), found 4294967296"),
        "{message}"
    );
}

#[test]
fn slots_above_the_bound_are_refused() {
    let message = error_of(&[&format!(
        "taskManager: {{resources: {{cpu: '2', memory: 4Gi}}, slots: {}}}",
        MAX_SLOTS_PER_TASK_MANAGER + 1
    )]);
    assert!(
        message.contains(&format!(
            "spec.taskManager.slots: must be at most {MAX_SLOTS_PER_TASK_MANAGER}, found {}",
            MAX_SLOTS_PER_TASK_MANAGER + 1
        )),
        "{message}"
    );
}

#[test]
fn a_checkpoint_directory_that_climbs_out_of_the_storage_root_is_refused_naming_the_field() {
    for dir in [
        "hdfs:///../../../../tmp/x",
        "hdfs:///flink/../../tmp/x",
        "file:///flink/./x",
        "hdfs://ns/flink/..",
    ] {
        let message = error_of(&[&format!("checkpoints: {{dir: '{dir}'}}")]);
        assert!(
            message.contains(&format!("spec.checkpoints.dir: \"{dir}\" has a")),
            "{dir}: {message}"
        );
        assert!(message.contains("must stay below the site's storage root"));
    }
    let message = error_of(&[r#"checkpoints: {dir: "hdfs:///flink\\x"}"#]);
    assert!(message.contains("spec.checkpoints.dir"), "{message}");
    assert!(message.contains("backslash"), "{message}");
    // `..` inside a name is a name, not a step up.
    parse_stream_jobs(
        "jobs.yaml",
        &job_with(
            "trade",
            "orders",
            &["checkpoints: {dir: 'hdfs:///flink/a..b'}"],
        ),
    )
    .unwrap();
}

#[test]
fn a_jar_path_that_climbs_is_refused_too() {
    let message = error_of(&["jarURI: hdfs:///jars/../../etc/passwd"]);
    assert!(
        message.contains("spec.jarURI: \"hdfs:///jars/../../etc/passwd\" has a \"..\" segment"),
        "{message}"
    );
}

#[test]
fn memory_past_int64_is_refused_as_cpu_of_the_same_size_is() {
    let message = error_of(&[
        "taskManager: {resources: {cpu: '99999999999999999999Ei', memory: '99999999999999999999Ei'}, slots: 2}",
    ]);
    assert!(
        message.contains(
            "spec.taskManager.resources.cpu: quantity \"99999999999999999999Ei\" is too large"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "spec.taskManager.resources.memory: quantity \"99999999999999999999Ei\" is too large"
        ),
        "{message}"
    );
}

#[test]
fn a_checkpoint_interval_below_flinks_minimum_is_refused_and_the_minimum_accepted() {
    for interval in ["1ns", "9ms", "999us"] {
        let message = error_of(&[&format!(
            "checkpoints: {{dir: 'hdfs:///flink/x', interval: {interval}}}"
        )]);
        assert!(
            message.contains(&format!(
                "spec.checkpoints.interval: must be at least 10ms (Flink's shortest checkpoint interval), found \"{interval}\""
            )),
            "{message}"
        );
    }
    parse_stream_jobs(
        "jobs.yaml",
        &job_with(
            "trade",
            "orders",
            &["checkpoints: {dir: 'hdfs:///flink/x', interval: 10ms}"],
        ),
    )
    .unwrap();
}

#[test]
fn retained_checkpoints_above_the_bound_are_refused() {
    let message = error_of(&[&format!(
        "checkpoints: {{dir: 'hdfs:///flink/x', retained: {}}}",
        MAX_RETAINED_CHECKPOINTS + 1
    )]);
    assert!(
        message.contains(&format!(
            "spec.checkpoints.retained: must be at most {MAX_RETAINED_CHECKPOINTS}"
        )),
        "{message}"
    );
}

#[test]
fn a_job_in_a_kubernetes_system_namespace_is_refused() {
    let message = parse_stream_jobs("jobs.yaml", &job_with("kube-system", "orders", &[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "metadata.namespace: \"kube-system\": namespaces starting with \"kube-\" are reserved"
        ),
        "{message}"
    );
}

fn many_jobs(count: usize, tenant_of: impl Fn(usize) -> String) -> String {
    (0..count)
        .map(|i| format!("---\n{}", job_with(&tenant_of(i), &format!("job-{i}"), &[])))
        .collect()
}

#[test]
fn a_file_with_more_jobs_than_the_bound_is_refused_as_a_whole() {
    // Spread over enough tenants that none reaches its own bound: only the file's is tested.
    let tenants = MAX_JOBS_PER_FILE.div_ceil(MAX_JOBS_PER_TENANT) + 1;
    let yaml = many_jobs(MAX_JOBS_PER_FILE + 1, |i| format!("team-{}", i % tenants));
    let message = parse_stream_jobs("jobs.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "jobs.yaml: {} StreamJobs, more than the {MAX_JOBS_PER_FILE} one file may hold; split it",
            MAX_JOBS_PER_FILE + 1
        )
    );
    let at_bound = many_jobs(MAX_JOBS_PER_FILE, |i| format!("team-{}", i % tenants));
    assert_eq!(
        parse_stream_jobs("jobs.yaml", &at_bound).unwrap().len(),
        MAX_JOBS_PER_FILE
    );
}

#[test]
fn a_tenant_with_more_jobs_than_the_bound_is_refused_at_the_first_job_too_many() {
    let yaml = many_jobs(MAX_JOBS_PER_TENANT + 1, |_| "trade".to_string());
    let message = parse_stream_jobs("jobs.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "jobs.yaml: document {n} (trade/job-{last}): metadata.namespace: tenant \"trade\" has more than {MAX_JOBS_PER_TENANT} jobs in this file, the most one tenant may have",
            n = MAX_JOBS_PER_TENANT + 1,
            last = MAX_JOBS_PER_TENANT
        )
    );
}

const QUOTA_POLICY: &str = "apiVersion: twinsite.io/v1alpha1
kind: Policy
sites: [{name: dc-a}, {name: dc-b}]
quotas:
  - {tenant: trade, site: dc-a, cpu: 100, memory: 400Gi}
  - {tenant: growth, site: dc-b, cpu: 100, memory: 400Gi}
";

#[test]
fn a_tenant_the_policys_quotas_do_not_name_is_refused_listing_the_known_ones() {
    let policy = parse_policy("policy.yaml", QUOTA_POLICY).unwrap();
    let jobs = parse_stream_jobs("jobs.yaml", &job_with("ads", "banner", &[])).unwrap();
    assert_eq!(
        policy
            .check_jobs("jobs.yaml", &jobs)
            .unwrap_err()
            .to_string(),
        "jobs.yaml: ads/banner: metadata.namespace: tenant \"ads\" is not in the policy, whose quotas name the tenants it admits: \"growth\", \"trade\""
    );
    let jobs =
        parse_stream_jobs("jobs.yaml", &job_with("ads", "banner", &["tenant: growth"])).unwrap();
    policy.check_jobs("jobs.yaml", &jobs).unwrap();
    let jobs =
        parse_stream_jobs("jobs.yaml", &job_with("ads", "banner", &["tenant: shop"])).unwrap();
    assert!(
        policy
            .check_jobs("jobs.yaml", &jobs)
            .unwrap_err()
            .to_string()
            .contains("spec.tenant: tenant \"shop\" is not in the policy")
    );
}

#[test]
fn a_policy_without_quotas_admits_every_tenant() {
    let jobs = parse_stream_jobs("jobs.yaml", &job_with("ads", "banner", &[])).unwrap();
    Policy::default_two_sites()
        .check_jobs("jobs.yaml", &jobs)
        .unwrap();
}

// ---- placement, the second line ---------------------------------------------------------

fn two_small_sites() -> Vec<scheduler::model::SiteSnapshot> {
    vec![
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").obj()]),
    ]
}

#[test]
fn placement_refuses_a_job_with_more_task_managers_than_the_bound_without_sizing_anything_by_it() {
    let sites = two_small_sites();
    let jobs = vec![
        JobBuilder::new("trade/poison").tms(u32::MAX).obj(),
        JobBuilder::new("trade/fine").tms(1).obj(),
    ];
    let policy = PlacementPolicy::default();
    let result = plan(&request(&sites, &jobs, &policy, &[]));
    assert_eq!(result.placements.len(), 1, "the other job is placed");
    assert_eq!(result.placements[0].job.0, "trade/fine");
    assert_eq!(result.unplaced.len(), 1);
    assert_eq!(result.unplaced[0].job.0, "trade/poison");
    assert_eq!(
        result.unplaced[0].reason,
        "1 JobManager + 4294967295 TaskManagers is more than the 4097 pods twinsite places for one job"
    );

    let req = request(&sites, &jobs, &policy, &[]);
    let mut placer = IncrementalPlacer::new(&req, &[]);
    assert!(
        placer
            .place_one(&jobs[0])
            .unwrap_err()
            .contains("4097 pods")
    );
}

#[test]
fn a_running_placement_of_an_oversize_job_is_judged_without_building_its_gang() {
    let sites = two_small_sites();
    let jobs = vec![JobBuilder::new("trade/poison").tms(u32::MAX).obj()];
    let policy = PlacementPolicy::default();
    let running = vec![JobPlacement {
        job: jobs[0].id.clone(),
        site: SiteId("dc-a".into()),
        pods: vec![
            PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: "a1".into(),
            },
            PodPlacement {
                role: PodRole::Taskmanager,
                index: 0,
                node: "a1".into(),
            },
        ],
    }];
    let req = request(&sites, &jobs, &policy, &running);
    let result = plan(&req);
    assert_eq!(result.unplaced.len(), 1);
    let violations = validate_plan(
        &req,
        &scheduler::placement::PlacementPlan {
            placements: running.clone(),
            ..result
        },
    );
    assert!(
        violations.iter().any(|v| v
            .message
            .contains("not exactly one JobManager and 4294967295")),
        "{violations:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever TaskManager count a demand carries, placement answers (placed or unplaced
    /// with a reason), and never places more pods than the bound.
    #[test]
    fn any_task_manager_count_gets_an_answer(
        counts in proptest::collection::vec(prop_oneof![0u32..8, Just(MAX_TASK_MANAGERS_PER_JOB), Just(MAX_TASK_MANAGERS_PER_JOB + 1), any::<u32>()], 1..5)
    ) {
        let sites = two_small_sites();
        let jobs: Vec<_> = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| JobBuilder::new(&format!("trade/j{i}")).tm(100, 1).tms(n).obj())
            .collect();
        let policy = PlacementPolicy::default();
        let result = plan(&request(&sites, &jobs, &policy, &[]));
        prop_assert_eq!(result.placements.len() + result.unplaced.len(), jobs.len());
        for p in &result.placements {
            prop_assert!(p.pods.len() <= scheduler::limits::MAX_PODS_PER_JOB as usize);
        }
        for (job, &n) in jobs.iter().zip(&counts) {
            if n > MAX_TASK_MANAGERS_PER_JOB {
                prop_assert!(result.unplaced.iter().any(|u| u.job == job.id));
            }
        }
    }
}

/// Found by the fuzzer: checking `siteGrace >= 2 × probeInterval` overflowed `Duration`.
/// Both fields are refused now (the controller configuration's `failover.siteGrace` and
/// `reconcile.interval` do the work), still without a panic.
#[test]
fn a_probe_interval_whose_double_overflows_is_refused_not_a_panic() {
    let message = parse_policy(
        "policy.yaml",
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}]\ndetection: {probeInterval: 9999999999999999999s, siteGrace: 60s}\n",
    )
    .unwrap_err()
    .to_string();
    for (field, instead) in [
        ("detection.siteGrace", "failover.siteGrace"),
        ("detection.probeInterval", "reconcile.interval"),
    ] {
        assert!(
            message.contains(field) && message.contains(&format!("set {instead}")),
            "{message}"
        );
    }
}
