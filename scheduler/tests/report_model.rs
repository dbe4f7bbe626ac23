//! The capacity report's arithmetic: rows add up, headroom is allocatable minus requested,
//! survivability is what a re-plan into the survivor achieves (never above 100 %), lending
//! follows the policy, and right-sizing sums what the recommendations say — no more.

mod placement_fixtures;

use std::collections::BTreeSet;

use placement_fixtures::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::k8s::TaintEffect;
use scheduler::model::{
    JobDemand, JobId, PlacementPolicy, Priority, Resources, SiteId, SiteSnapshot,
};
use scheduler::placement::validate_plan;
use scheduler::report::{
    CapacityReport, DEFAULT_TOP_JOBS, ReportInputs, RightsizingInput, baseline_plan, build_report,
    site_loss_what_if,
};
use scheduler::rightsize::config::MIB;
use scheduler::rightsize::{
    JobMetrics, ProcessMetrics, ProcessSpec, Recommendation, RightsizeConfig, Sample, Series,
    VertexInfo, VertexMetrics, recommend,
};

struct Scenario {
    sites: Vec<SiteSnapshot>,
    jobs: Vec<JobDemand>,
    policy: PlacementPolicy,
    no_failover: BTreeSet<JobId>,
}

impl Scenario {
    fn inputs(&self) -> ReportInputs<'_> {
        ReportInputs {
            sites: &self.sites,
            jobs: &self.jobs,
            policy: &self.policy,
            running: &[],
            no_failover: &self.no_failover,
            at: night(),
            rightsizing: None,
            top_jobs: DEFAULT_TOP_JOBS,
        }
    }
}

/// Two sites of a few random nodes (some offline, cordoned or busy with other pods), random
/// jobs of every tier, quotas and the offline pool open at night.
fn scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sites = Vec::new();
    for s in ["dc-a", "dc-b"] {
        let mut nodes = Vec::new();
        let mut foreign = Vec::new();
        for i in 0..rng.random_range(0..=5) {
            let name = format!("{s}-n{i}");
            let mut b = NodeBuilder::new(&name)
                .cpu(rng.random_range(2..=16) * 1_000)
                .mem_gi(rng.random_range(4..=64))
                .pods(rng.random_range(2..=10));
            if rng.random_bool(0.3) {
                b = b
                    .label("pool", "hdfs")
                    .taint("pool", "hdfs", TaintEffect::NoSchedule);
            }
            if rng.random_bool(0.1) {
                b = b.cordoned();
            }
            if rng.random_bool(0.3) {
                foreign.push(foreign_pod(
                    &name,
                    rng.random_range(0..=4) * 1_000,
                    rng.random_range(0..=16),
                ));
            }
            nodes.push(b.obj());
        }
        let mut snap = site(s, nodes);
        snap.running_pods = foreign;
        sites.push(snap);
    }
    let mut jobs = Vec::new();
    let mut no_failover = BTreeSet::new();
    for i in 0..rng.random_range(0..=10) {
        let tenant = ["trade", "risk"][rng.random_range(0..2)];
        let mut b = JobBuilder::new(&format!("{tenant}/job-{i}"))
            .tenant(tenant)
            .priority(Priority::ALL[rng.random_range(0..4)])
            .jm(500, 1)
            .tm(rng.random_range(1..=4) * 500, rng.random_range(1..=8))
            .tms(rng.random_range(1..=3))
            .preferred(["dc-a", "dc-b"][rng.random_range(0..2)]);
        if rng.random_bool(0.2) {
            b = b.allowed(&["dc-a"]);
        }
        if rng.random_bool(0.3) {
            b = b
                .allow_offline()
                .tolerate("pool", "hdfs", TaintEffect::NoSchedule);
        }
        let job = b.obj();
        if rng.random_bool(0.1) {
            no_failover.insert(job.id.clone());
        }
        jobs.push(job);
    }
    let mut policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..PlacementPolicy::default()
    };
    if rng.random_bool(0.5) {
        policy.quotas.push(quota("trade", "dc-b", 8_000, 32));
    }
    Scenario {
        sites,
        jobs,
        policy,
        no_failover,
    }
}

fn sub(a: Resources, b: Resources) -> Resources {
    Resources::new(
        a.cpu_milli - b.cpu_milli,
        a.memory_bytes - b.memory_bytes,
        a.pods - b.pods,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn headroom_is_allocatable_minus_requested_and_sites_are_the_sum_of_their_pools(seed in any::<u64>()) {
        let s = scenario(seed);
        let report = build_report(&s.inputs());
        for site in &report.sites {
            let mut sum = Resources::ZERO;
            let mut nodes = 0;
            for pool in &site.pools {
                let row = &pool.row;
                prop_assert_eq!(row.requested, row.requested_by_jobs + row.requested_by_other_pods);
                prop_assert_eq!(row.headroom, sub(row.allocatable, row.requested));
                sum += row.allocatable;
                nodes += pool.nodes;
            }
            prop_assert_eq!(sum, site.total.allocatable);
            prop_assert_eq!(nodes, site.nodes);
            prop_assert_eq!(site.total.headroom, sub(site.total.allocatable, site.total.requested));
            for t in &site.tenants {
                if let (Some(q), Some(left)) = (t.quota, t.quota_headroom) {
                    prop_assert_eq!(left, sub(q, t.requested));
                }
            }
        }
        // Every placed pod's request is counted once, in the site the plan put it.
        let requested: Resources = report.sites.iter().flat_map(|s| &s.tenants).map(|t| t.requested).fold(Resources::ZERO, |a, b| a + b);
        let plan = baseline_plan(&s.inputs());
        let placed: Resources = plan.placements.iter()
            .map(|p| s.jobs.iter().find(|j| j.id == p.job).unwrap().total())
            .fold(Resources::ZERO, |a, b| a + b);
        prop_assert_eq!(requested, placed);
    }

    #[test]
    fn survivability_is_what_a_valid_re_plan_into_the_survivor_achieves(seed in any::<u64>()) {
        let s = scenario(seed);
        let inputs = s.inputs();
        let report = build_report(&inputs);
        let baseline = baseline_plan(&inputs);
        prop_assert_eq!(report.failover.len(), 2);
        for surv in &report.failover {
            let what_if = site_loss_what_if(&inputs, &baseline, &surv.lost);
            // The re-plan breaks no rule of the survivor (capacity, taints, quotas, windows).
            let violations = validate_plan(&what_if.request(inputs.at), &what_if.plan);
            prop_assert!(violations.is_empty(), "{:?}", violations);
            prop_assert!(what_if.plan.placements.iter().all(|p| p.site != surv.lost));
            let lost_jobs: Vec<&JobId> = baseline.placements.iter()
                .filter(|p| p.site == surv.lost && !s.no_failover.contains(&p.job))
                .map(|p| &p.job).collect();
            let hosted = what_if.plan.placements.iter().filter(|p| lost_jobs.contains(&&p.job)).count();
            let jobs: usize = surv.tiers.iter().map(|t| t.jobs).sum();
            let hosted_in_tiers: usize = surv.tiers.iter().map(|t| t.hosted).sum();
            prop_assert_eq!(jobs, lost_jobs.len());
            prop_assert_eq!(hosted_in_tiers, hosted);
            prop_assert_eq!(surv.not_hosted.len(), jobs - hosted);
            let mut missing = Resources::ZERO;
            for t in &surv.tiers {
                if let Some(p) = t.percent {
                    prop_assert!((0.0..=100.0).contains(&p), "{p}");
                    prop_assert!((p - 100.0 * t.hosted as f64 / t.jobs as f64).abs() < 1e-9);
                } else {
                    prop_assert_eq!(t.jobs, 0);
                }
                missing += t.missing;
            }
            prop_assert_eq!(missing, surv.missing);
        }
    }
}

fn two_sites(survivor_nodes: Vec<scheduler::model::Node>) -> Vec<SiteSnapshot> {
    vec![
        site(
            "dc-a",
            vec![NodeBuilder::new("a1").cpu(64_000).mem_gi(256).obj()],
        ),
        site("dc-b", survivor_nodes),
    ]
}

fn on_a(id: &str, p: Priority) -> JobDemand {
    JobBuilder::new(id)
        .priority(p)
        .jm(1_000, 2)
        .tm(2_000, 4)
        .tms(2)
        .preferred("dc-a")
        .obj()
}

fn report(
    sites: &[SiteSnapshot],
    jobs: &[JobDemand],
    no_failover: &BTreeSet<JobId>,
) -> CapacityReport {
    let policy = PlacementPolicy::default();
    build_report(&ReportInputs {
        sites,
        jobs,
        policy: &policy,
        running: &[],
        no_failover,
        at: noon(),
        rightsizing: None,
        top_jobs: DEFAULT_TOP_JOBS,
    })
}

#[test]
fn a_survivor_without_room_hosts_nothing_and_reports_what_is_missing() {
    let sites = two_sites(vec![NodeBuilder::new("b1").cpu(1_000).mem_gi(1).obj()]);
    let jobs = vec![on_a("t/c", Priority::Critical), on_a("t/h", Priority::High)];
    let r = report(&sites, &jobs, &BTreeSet::new());
    let lost_a = r.failover.iter().find(|f| f.lost.0 == "dc-a").unwrap();
    assert_eq!(lost_a.survivors, vec![SiteId("dc-b".into())]);
    let critical = &lost_a.tiers[0];
    assert_eq!(
        (critical.priority, critical.jobs, critical.hosted),
        (Priority::Critical, 1, 0)
    );
    assert_eq!(critical.percent, Some(0.0));
    // Each job: 1 + 2 × 2 = 5 cores, 2 + 2 × 4 = 10 GiB.
    assert_eq!(lost_a.missing.cpu_milli, 10_000);
    assert_eq!(lost_a.missing.memory_bytes, 20 * GI);
    assert_eq!(lost_a.not_hosted.len(), 2);
    // dc-b runs nothing, so losing it costs nothing.
    let lost_b = r.failover.iter().find(|f| f.lost.0 == "dc-b").unwrap();
    assert!(lost_b.tiers.iter().all(|t| t.percent.is_none()));
}

#[test]
fn a_survivor_with_room_to_spare_hosts_every_tier_fully() {
    let sites = two_sites(vec![NodeBuilder::new("b1").cpu(64_000).mem_gi(256).obj()]);
    let jobs: Vec<JobDemand> = Priority::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| on_a(&format!("t/j{i}"), *p))
        .collect();
    let r = report(&sites, &jobs, &BTreeSet::new());
    let lost_a = r.failover.iter().find(|f| f.lost.0 == "dc-a").unwrap();
    for t in &lost_a.tiers {
        assert_eq!(t.percent, Some(100.0), "{t:?}");
    }
    assert_eq!(lost_a.missing, Resources::ZERO);
}

#[test]
fn critical_jobs_of_the_lost_site_preempt_best_effort_jobs_of_the_survivor() {
    // dc-b fits exactly one job; it runs a best-effort one when dc-a, with a critical one, dies.
    let sites = two_sites(vec![NodeBuilder::new("b1").cpu(5_000).mem_gi(10).obj()]);
    let mut be = on_a("t/be", Priority::BestEffort);
    be.sites.preferred = Some(SiteId("dc-b".into()));
    let jobs = vec![on_a("t/crit", Priority::Critical), be];
    let r = report(&sites, &jobs, &BTreeSet::new());
    let lost_a = r.failover.iter().find(|f| f.lost.0 == "dc-a").unwrap();
    assert_eq!(lost_a.tiers[0].percent, Some(100.0));
    assert_eq!(lost_a.displaced, vec![JobId("t/be".into())]);
}

#[test]
fn jobs_twinsite_never_relaunches_are_left_out_of_failover() {
    let sites = two_sites(vec![NodeBuilder::new("b1").cpu(64_000).mem_gi(256).obj()]);
    let jobs = vec![
        on_a("t/keep", Priority::High),
        on_a("t/none", Priority::High),
    ];
    let no_failover: BTreeSet<JobId> = [JobId("t/none".into())].into();
    let r = report(&sites, &jobs, &no_failover);
    let lost_a = r.failover.iter().find(|f| f.lost.0 == "dc-a").unwrap();
    assert_eq!(lost_a.not_relaunched, vec![JobId("t/none".into())]);
    assert_eq!(lost_a.tiers[1].jobs, 1);
}

#[test]
fn a_job_allowed_only_in_the_lost_site_is_reported_not_moved() {
    let sites = two_sites(vec![NodeBuilder::new("b1").cpu(64_000).mem_gi(256).obj()]);
    let pinned = JobBuilder::new("t/pinned")
        .priority(Priority::Critical)
        .allowed(&["dc-a"])
        .obj();
    let r = report(&sites, &[pinned], &BTreeSet::new());
    let lost_a = r.failover.iter().find(|f| f.lost.0 == "dc-a").unwrap();
    assert_eq!(lost_a.tiers[0].percent, Some(0.0));
    assert_eq!(
        lost_a.not_hosted[0].reason,
        "spec.placement.sites.allowed is [dc-a]: no surviving site may run it"
    );
}

#[test]
fn an_offline_pool_lends_half_of_each_node_minus_the_margin_during_its_night_window() {
    let hdfs = |n: &str| {
        NodeBuilder::new(n)
            .cpu(16_000)
            .mem_gi(64)
            .label("pool", "hdfs")
            .obj()
    };
    let mut b = site("dc-b", vec![hdfs("h1"), hdfs("h2")]);
    // Other pods leave h2 only 2 cores free: it lends 2, not 8 − 1.
    b.running_pods.push(foreign_pod("h2", 14_000, 0));
    let sites = vec![site("dc-a", vec![]), b];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..PlacementPolicy::default()
    };
    let r = build_report(&ReportInputs {
        sites: &sites,
        jobs: &[],
        policy: &policy,
        running: &[],
        no_failover: &BTreeSet::new(),
        at: night(),
        rightsizing: None,
        top_jobs: DEFAULT_TOP_JOBS,
    });
    assert_eq!(r.colocation.len(), 1);
    let pool = &r.colocation[0];
    assert_eq!(pool.nodes, 2);
    assert_eq!(pool.lendable.cpu_milli, 7_000 + 2_000);
    assert_eq!(pool.lendable.memory_bytes, 2 * 30 * GI);
    assert!(pool.open_at_report_time);
    // Every day 01:00–07:00.
    assert_eq!(pool.open_hours_per_week, 42.0);
    assert_eq!(pool.windows[0].days, "every day");
    assert_eq!(pool.windows[0].from, "01:00");
}

// ---- right-sizing summary ----

const END: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn flat(value: f64) -> Series {
    Series::gauge(
        (0..=60)
            .map(|i| Sample::new(END - 15 * MIN + i * 15_000, value))
            .collect(),
    )
}

/// A job whose one vertex sits at its target utilisation and whose TaskManagers use
/// `tm_heap_mib` of a 2048 MiB heap in 4096 MiB pods, with CPU load `tm_load`; the
/// JobManager sits at its targets (load 0.7 of 1 core, heap 850 of 1024 MiB).
fn metrics(job: &JobDemand, tm_heap_mib: f64, tm_load: f64) -> JobMetrics {
    let process = |heap: f64, heap_max: i64, memory: i64, cpu: i64, load: f64| ProcessMetrics {
        heap_used_bytes: flat(heap * MIB as f64),
        heap_max_bytes: Some(heap_max * MIB),
        cpu_load: Some(flat(load)),
        spec: ProcessSpec {
            memory_bytes: memory * MIB,
            cpu_milli: cpu,
            max_memory_bytes: None,
            max_cpu_milli: None,
        },
    };
    JobMetrics {
        job: job.id.clone(),
        observed_until_ms: END,
        configured_parallelism: 2 * job.task_managers,
        slots_per_task_manager: 2,
        plan_slot_need: None,
        vertices: vec![VertexMetrics {
            info: VertexInfo {
                id: "v".into(),
                name: "Source: orders".into(),
                parallelism: 2 * job.task_managers,
                max_parallelism: 128,
                keyed_input: false,
                is_source: true,
                source_partitions: None,
                pinned_parallelism: false,
            },
            busy_time_ms_per_second: flat(700.0),
            records_in: flat(1000.0),
            pending_records: None,
        }],
        task_manager: process(tm_heap_mib, 2048, 4096, 2000, tm_load),
        job_manager: process(850.0, 1024, 2048, 1000, 0.7),
    }
}

fn config() -> RightsizeConfig {
    RightsizeConfig {
        lookback_ms: 15 * MIN,
        ..RightsizeConfig::default()
    }
}

#[test]
fn right_sizing_sums_exactly_what_the_recommendations_change() {
    let job = |id: &str| JobBuilder::new(id).jm(1_000, 2).tm(2_000, 4).tms(2).obj();
    let (big, hot, quiet) = (job("t/big"), job("t/hot"), job("t/quiet"));
    let jobs = vec![big.clone(), hot.clone(), quiet.clone()];
    // big: heap 1024 of 2048 MiB → 1280 MiB heap, pod 4096 − 2048 + 1280 = 3328 MiB: 768 MiB
    // back per TaskManager. hot: CPU load 1.0 of 2 cores at target 0.7 → 2.9 cores: +900 m.
    // quiet: has no metrics at all.
    let mut quiet_metrics = metrics(&quiet, 1700.0, 0.7);
    quiet_metrics.task_manager.heap_used_bytes = Series::empty_gauge();
    let recs: Vec<Recommendation> = [
        metrics(&big, 1024.0, 0.7),
        metrics(&hot, 1700.0, 1.0),
        quiet_metrics,
    ]
    .iter()
    .map(|m| recommend(m, &config()).unwrap())
    .collect();
    let sites = two_sites(vec![]);
    let policy = PlacementPolicy::default();
    let r = build_report(&ReportInputs {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &[],
        no_failover: &BTreeSet::new(),
        at: noon(),
        rightsizing: Some(RightsizingInput {
            source: "test",
            lookback_ms: 15 * MIN,
            recommendations: &recs,
            failures: &[(JobId("t/gone".into()), "no such job in Prometheus".into())],
        }),
        top_jobs: DEFAULT_TOP_JOBS,
    });
    let z = r.rightsizing.unwrap();
    assert_eq!(z.jobs, 4);
    assert_eq!(z.reclaimable_memory_bytes, 2 * 768 * MIB);
    assert_eq!(z.lacking_cpu_milli, 2 * 900);
    assert_eq!(z.under_provisioned, vec![JobId("t/hot".into())]);
    assert_eq!(z.over_provisioned, 1);
    // The biggest change first: 1.8 cores outweighs 1.5 GiB / 4.
    assert_eq!(z.top[0].job.0, "t/hot");
    assert_eq!(z.top[0].recommended.cpu_milli, 1_000 + 2 * 2_900);
    // Jobs without data are listed with the metric at fault, never given a number.
    let refused: Vec<&str> = z.refused.iter().map(|f| f.job.0.as_str()).collect();
    assert_eq!(refused, vec!["t/gone", "t/quiet"]);
    assert!(
        z.refused[1].reasons[0].contains("taskManager heap used"),
        "{:?}",
        z.refused[1]
    );
    assert!(z.top.iter().all(|c| c.job.0 != "t/quiet"));
}

#[test]
fn used_counts_measured_pods_and_says_how_many_had_no_metrics() {
    let sites = two_sites(vec![]);
    let measured = JobBuilder::new("t/m").preferred("dc-a").tms(2).obj();
    let unmeasured = JobBuilder::new("t/u").preferred("dc-a").tms(1).obj();
    let recs = vec![recommend(&metrics(&measured, 1024.0, 0.5), &config()).unwrap()];
    let policy = PlacementPolicy::default();
    let jobs = vec![measured, unmeasured];
    let r = build_report(&ReportInputs {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &[],
        no_failover: &BTreeSet::new(),
        at: noon(),
        rightsizing: Some(RightsizingInput {
            source: "test",
            lookback_ms: 15 * MIN,
            recommendations: &recs,
            failures: &[],
        }),
        top_jobs: DEFAULT_TOP_JOBS,
    });
    let a = &r.sites[0].total;
    // t/m: JobManager 0.7 × 1 core + 2 TaskManagers × 0.5 × 2 cores = 2.7 cores.
    assert!(
        (a.used_cpu_milli.value - 2_700.0).abs() < 1e-6,
        "{:?}",
        a.used_cpu_milli
    );
    assert_eq!(a.used_cpu_milli.pods_measured, 3);
    assert_eq!(
        a.used_cpu_milli.pods_unmeasured, 2,
        "t/u's JobManager and TaskManager"
    );
    assert!(!a.used_cpu_milli.complete());
    // Memory: non-heap part whole plus peak heap: JM 2048 − 1024 + 850, TMs 4096 − 2048 + 1024.
    let expected = ((2048 - 1024 + 850) + 2 * (4096 - 2048 + 1024)) as f64 * MIB as f64;
    assert!((a.used_memory_bytes.value - expected).abs() < 1.0);
}

#[test]
fn the_report_shows_each_vertex_of_a_job_to_fix_with_its_key_group_snapping() {
    let job = JobBuilder::new("t/orders")
        .jm(1_000, 2)
        .tm(2_000, 4)
        .tms(2)
        .obj();
    let mut m = metrics(&job, 1700.0, 0.7);
    // The source idles (10 % busy); a keyed window is 90 % busy and needs 4 × 1595 / 1111
    // = 5.7 → 6, snapped to 8, the next divisor of its 128 key groups.
    m.vertices[0].busy_time_ms_per_second = flat(100.0);
    m.vertices[0].info.parallelism = 4;
    m.configured_parallelism = 4;
    m.vertices.push(VertexMetrics {
        info: VertexInfo {
            id: "w".into(),
            name: "Window".into(),
            parallelism: 4,
            max_parallelism: 128,
            keyed_input: true,
            is_source: false,
            source_partitions: None,
            pinned_parallelism: false,
        },
        busy_time_ms_per_second: flat(900.0),
        records_in: flat(1000.0),
        pending_records: None,
    });
    let recs = vec![recommend(&m, &config()).unwrap()];
    let sites = two_sites(vec![]);
    let policy = PlacementPolicy::default();
    let jobs = vec![job];
    let r = build_report(&ReportInputs {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &[],
        no_failover: &BTreeSet::new(),
        at: noon(),
        rightsizing: Some(RightsizingInput {
            source: "test",
            lookback_ms: 15 * MIN,
            recommendations: &recs,
            failures: &[],
        }),
        top_jobs: DEFAULT_TOP_JOBS,
    });
    let z = r.rightsizing.as_ref().unwrap();
    let vertices = &z.top[0].vertices;
    let row = |id: &str| vertices.iter().find(|v| v.id == id).unwrap();
    assert_eq!(
        (
            row("v").current_parallelism,
            row("v").recommended_parallelism
        ),
        (4, 2)
    );
    assert_eq!(
        (
            row("w").recommended_parallelism,
            row("w").alignment.as_str()
        ),
        (8, "divides 128")
    );
    assert_eq!(z.top[0].recommended_parallelism, 8);
    for format in [
        scheduler::report::Format::Table,
        scheduler::report::Format::Markdown,
        scheduler::report::Format::Html,
    ] {
        let out = scheduler::report::render(&r, format);
        assert!(
            out.contains("jobvertex-parallelism-overrides"),
            "{format:?}"
        );
        assert!(
            out.contains("4 → 8") && out.contains("divides 128"),
            "{format:?}: {out}"
        );
        assert!(
            out.contains("Window") && out.contains("4 → 2"),
            "{format:?}"
        );
    }
}
