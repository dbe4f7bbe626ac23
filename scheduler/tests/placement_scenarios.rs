//! Placement scenarios, one rule per test, on small hand-built clusters.

mod placement_fixtures;

use placement_fixtures::*;
use scheduler::k8s::TaintEffect;
use scheduler::model::{
    JobPlacement, LendBasis, PlacementPolicy, PodRole, Priority, SiteId, SiteSnapshot,
};
use scheduler::placement::{PlacementPlan, plan, validate_plan};

fn placement<'p>(plan: &'p PlacementPlan, job: &str) -> Option<&'p JobPlacement> {
    plan.placements.iter().find(|p| p.job.0 == job)
}

fn reason<'p>(plan: &'p PlacementPlan, job: &str) -> Option<&'p str> {
    plan.unplaced
        .iter()
        .find(|u| u.job.0 == job)
        .map(|u| u.reason.as_str())
}

fn nodes_of(plan: &PlacementPlan, job: &str, role: PodRole) -> Vec<String> {
    placement(plan, job)
        .map(|p| {
            p.pods
                .iter()
                .filter(|x| x.role == role)
                .map(|x| x.node.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_job_that_fits_only_partly_is_not_placed_at_all() {
    // Room for the JobManager and two TaskManagers, but the job wants three.
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").cpu(5_000).mem_gi(64).obj()],
    )];
    let jobs = [JobBuilder::new("ns/big")
        .jm(1_000, 1)
        .tm(2_000, 1)
        .tms(3)
        .obj()];
    let policy = PlacementPolicy::default();
    let req = request(&sites, &jobs, &policy, &[]);
    let p = plan(&req);
    assert!(placement(&p, "ns/big").is_none());
    let why = reason(&p, "ns/big").unwrap();
    assert!(why.contains("room for 2 of 3 TaskManagers"), "{why}");
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn a_one_node_cluster_runs_a_whole_job_on_that_node() {
    let sites = [site("dc-a", vec![NodeBuilder::new("only").obj()])];
    let jobs = [JobBuilder::new("ns/j").tms(3).obj()];
    let policy = PlacementPolicy::default();
    let req = request(&sites, &jobs, &policy, &[]);
    let p = plan(&req);
    let placed = placement(&p, "ns/j").unwrap();
    assert_eq!(placed.pods.len(), 4);
    assert!(placed.pods.iter().all(|x| x.node == "only"));
}

#[test]
fn task_managers_spread_over_nodes_before_doubling_up() {
    let nodes = (1..=3)
        .map(|i| NodeBuilder::new(&format!("n{i}")).obj())
        .collect();
    let sites = [site("dc-a", nodes)];
    let jobs = [JobBuilder::new("ns/j").tms(3).obj()];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    let mut tms = nodes_of(&p, "ns/j", PodRole::Taskmanager);
    tms.sort();
    tms.dedup();
    assert_eq!(tms.len(), 3, "three TaskManagers on three different nodes");
}

#[test]
fn a_job_manager_never_runs_on_a_borrowed_offline_node() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1")
                .label("pool", "hdfs")
                .cpu(32_000)
                .mem_gi(128)
                .obj(),
            NodeBuilder::new("small").cpu(1_500).mem_gi(4).obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/j").allow_offline().tms(2).obj()];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let mut req = request(&sites, &jobs, &policy, &[]);
    req.at = night();
    let p = plan(&req);
    assert_eq!(nodes_of(&p, "ns/j", PodRole::Jobmanager), ["small"]);
    assert_eq!(
        nodes_of(&p, "ns/j", PodRole::Taskmanager),
        ["hdfs-1", "hdfs-1"]
    );
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn offline_nodes_lend_only_inside_their_window() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1").label("pool", "hdfs").obj(),
            NodeBuilder::new("online").cpu(1_000).mem_gi(2).obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/j").allow_offline().tms(1).obj()];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let day = request(&sites, &jobs, &policy, &[]);
    let p = plan(&day);
    assert!(placement(&p, "ns/j").is_none(), "closed at noon");
    let mut at_night = day;
    at_night.at = night();
    assert_eq!(
        nodes_of(&plan(&at_night), "ns/j", PodRole::Taskmanager),
        ["hdfs-1"]
    );
}

#[test]
fn offline_nodes_lend_only_to_jobs_that_allow_offline() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1").label("pool", "hdfs").obj(),
            NodeBuilder::new("online").cpu(1_000).mem_gi(2).obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/j").tms(1).obj()];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let mut req = request(&sites, &jobs, &policy, &[]);
    req.at = night();
    let p = plan(&req);
    assert!(placement(&p, "ns/j").is_none());
}

#[test]
fn borrowing_is_capped_by_fraction_minus_margin() {
    // 16 cpu × 0.5 − 1 = 7 cpu borrowable: three 2-cpu TaskManagers fit, four do not.
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1")
                .label("pool", "hdfs")
                .cpu(16_000)
                .mem_gi(64)
                .obj(),
            NodeBuilder::new("online").cpu(1_000).mem_gi(2).obj(),
        ],
    )];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let three = [JobBuilder::new("ns/j")
        .allow_offline()
        .tm(2_000, 1)
        .tms(3)
        .obj()];
    let mut req = request(&sites, &three, &policy, &[]);
    req.at = night();
    assert!(placement(&plan(&req), "ns/j").is_some());
    let four = [JobBuilder::new("ns/j")
        .allow_offline()
        .tm(2_000, 1)
        .tms(4)
        .obj()];
    let mut req = request(&sites, &four, &policy, &[]);
    req.at = night();
    assert!(placement(&plan(&req), "ns/j").is_none());
}

#[test]
fn a_node_lending_by_usage_lends_less_as_its_batch_workload_grows() {
    // Share: 16 × 0.5 − 1 = 7 cpu. With the batch workload at 10 cpu, 16 − 10 − 1 = 5 cpu
    // are left: two 2-cpu TaskManagers fit, three do not. Idle, three fit again.
    let hdfs = |busy_cpu: Option<i64>| {
        let node = NodeBuilder::new("hdfs-1")
            .label("pool", "hdfs")
            .cpu(16_000)
            .mem_gi(64);
        let node = match busy_cpu {
            Some(cpu) => node.owner_usage(cpu, 8),
            None => node,
        };
        [site(
            "dc-a",
            vec![
                node.obj(),
                NodeBuilder::new("online").cpu(1_000).mem_gi(2).obj(),
            ],
        )]
    };
    let mut pool = offline_pool();
    pool.offline.as_mut().unwrap().lend_by = LendBasis::Usage;
    let policy = PlacementPolicy {
        pools: vec![pool],
        ..Default::default()
    };
    let job = |tms| {
        [JobBuilder::new("ns/j")
            .allow_offline()
            .tm(2_000, 1)
            .tms(tms)
            .obj()]
    };
    let placed = |sites: &[SiteSnapshot], tms: u32| {
        let jobs = job(tms);
        let mut req = request(sites, &jobs, &policy, &[]);
        req.at = night();
        placement(&plan(&req), "ns/j").is_some()
    };
    assert!(placed(&hdfs(Some(10_000)), 2));
    assert!(!placed(&hdfs(Some(10_000)), 3), "5 cpu left cannot hold 6");
    assert!(
        placed(&hdfs(Some(0)), 3),
        "an idle node lends its whole share"
    );
    assert!(!placed(&hdfs(Some(0)), 4), "never beyond the share");
    assert!(
        !placed(&hdfs(None), 1),
        "a node with no usage measurement lends nothing"
    );
}

#[test]
fn an_untolerated_no_schedule_taint_blocks_and_is_named_in_the_reason() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("gpu-1")
                .taint("dedicated", "gpu", TaintEffect::NoSchedule)
                .obj(),
        ],
    )];
    let jobs = [
        JobBuilder::new("ns/plain").obj(),
        JobBuilder::new("ns/tolerant")
            .tolerate("dedicated", "gpu", TaintEffect::NoSchedule)
            .obj(),
    ];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    let why = reason(&p, "ns/plain").unwrap();
    assert!(
        why.contains("no node tolerates taint dedicated=gpu:NoSchedule"),
        "{why}"
    );
    assert!(placement(&p, "ns/tolerant").is_some());
}

#[test]
fn a_prefer_no_schedule_taint_only_lowers_the_score() {
    let tainted =
        NodeBuilder::new("a-tainted").taint("spot", "true", TaintEffect::PreferNoSchedule);
    let both = [site(
        "dc-a",
        vec![tainted.obj(), NodeBuilder::new("b-clean").obj()],
    )];
    let jobs = [JobBuilder::new("ns/j").tms(1).obj()];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&both, &jobs, &policy, &[]));
    assert!(
        placement(&p, "ns/j")
            .unwrap()
            .pods
            .iter()
            .all(|x| x.node == "b-clean")
    );
    let only_tainted = [site(
        "dc-a",
        vec![
            NodeBuilder::new("a-tainted")
                .taint("spot", "true", TaintEffect::PreferNoSchedule)
                .obj(),
        ],
    )];
    assert!(placement(&plan(&request(&only_tainted, &jobs, &policy, &[])), "ns/j").is_some());
}

#[test]
fn a_node_selector_restricts_the_nodes() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("a").obj(),
            NodeBuilder::new("b").label("disk", "ssd").obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/j").selector("disk", "ssd").obj()];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    assert!(
        placement(&p, "ns/j")
            .unwrap()
            .pods
            .iter()
            .all(|x| x.node == "b")
    );
}

#[test]
fn a_tenant_quota_is_a_hard_limit_and_the_reason_says_how_much_is_missing() {
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").cpu(64_000).mem_gi(256).obj()],
    )];
    // Each job totals 5 cpu; the quota allows 8.
    let jobs = [JobBuilder::new("ns/a").obj(), JobBuilder::new("ns/b").obj()];
    let policy = PlacementPolicy {
        quotas: vec![quota("trade", "dc-a", 8_000, 100)],
        ..Default::default()
    };
    let req = request(&sites, &jobs, &policy, &[]);
    let p = plan(&req);
    assert_eq!(p.placements.len(), 1);
    let why = reason(&p, "ns/b").unwrap();
    assert!(
        why.contains("quota: tenant trade in dc-a needs 2 cpu more"),
        "{why}"
    );
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn the_preferred_site_is_tried_first() {
    let sites = [
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").obj()]),
    ];
    let jobs = [
        JobBuilder::new("ns/j").preferred("dc-b").obj(),
        JobBuilder::new("ns/k").obj(),
    ];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    assert_eq!(placement(&p, "ns/j").unwrap().site, SiteId("dc-b".into()));
    assert_eq!(placement(&p, "ns/k").unwrap().site, SiteId("dc-a".into()));
}

#[test]
fn a_job_runs_only_in_its_allowed_sites() {
    let sites = [
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").obj()]),
    ];
    let jobs = [
        JobBuilder::new("ns/j").allowed(&["dc-b"]).obj(),
        JobBuilder::new("ns/x").allowed(&["dc-c"]).obj(),
    ];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    assert_eq!(placement(&p, "ns/j").unwrap().site, SiteId("dc-b".into()));
    assert_eq!(
        reason(&p, "ns/x"),
        Some("no site allowed: allowed [dc-c] not in policy")
    );
}

#[test]
fn higher_tiers_are_placed_first_when_room_is_short() {
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").cpu(6_000).mem_gi(64).obj()],
    )];
    let jobs = [
        JobBuilder::new("ns/a-normal")
            .priority(Priority::Normal)
            .obj(),
        JobBuilder::new("ns/z-critical")
            .priority(Priority::Critical)
            .obj(),
    ];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    assert!(placement(&p, "ns/z-critical").is_some());
    assert!(placement(&p, "ns/a-normal").is_none());
}

fn running_of(p: &PlacementPlan) -> Vec<JobPlacement> {
    p.placements.clone()
}

#[test]
fn a_new_job_preempts_best_effort_jobs_but_never_its_own_tier_or_above() {
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").cpu(6_000).mem_gi(64).obj()],
    )];
    let policy = PlacementPolicy::default();
    for (victim_tier, preempted) in [
        (Priority::BestEffort, true),
        (Priority::Normal, false),
        (Priority::High, false),
    ] {
        let before = [JobBuilder::new("ns/old").priority(victim_tier).obj()];
        let first = plan(&request(&sites, &before, &policy, &[]));
        let running = running_of(&first);
        let jobs = [
            before[0].clone(),
            JobBuilder::new("ns/new").priority(Priority::Normal).obj(),
        ];
        let req = request(&sites, &jobs, &policy, &running);
        let p = plan(&req);
        assert_eq!(
            placement(&p, "ns/new").is_some(),
            preempted,
            "victim tier {victim_tier}"
        );
        assert_eq!(placement(&p, "ns/old").is_some(), !preempted);
        if preempted {
            assert_eq!(p.preemptions.len(), 1);
            assert_eq!(p.preemptions[0].victim.0, "ns/old");
            assert_eq!(p.preemptions[0].by.0, "ns/new");
            assert_eq!(reason(&p, "ns/old"), Some("preempted by ns/new"));
        } else {
            assert!(p.preemptions.is_empty());
        }
        assert!(validate_plan(&req, &p).is_empty());
    }
}

#[test]
fn a_best_effort_job_never_preempts() {
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").cpu(6_000).mem_gi(64).obj()],
    )];
    let policy = PlacementPolicy::default();
    let before = [JobBuilder::new("ns/old")
        .priority(Priority::BestEffort)
        .obj()];
    let running = running_of(&plan(&request(&sites, &before, &policy, &[])));
    let jobs = [
        before[0].clone(),
        JobBuilder::new("ns/new")
            .priority(Priority::BestEffort)
            .obj(),
    ];
    let p = plan(&request(&sites, &jobs, &policy, &running));
    assert!(p.preemptions.is_empty());
    assert!(placement(&p, "ns/old").is_some());
}

#[test]
fn a_failover_reserve_holds_back_room_from_lower_tiers_and_reports_what_is_missing() {
    // dc-b keeps room for dc-a's critical job (5 cpu); a normal job may not take it.
    let sites = [
        site("dc-a", vec![NodeBuilder::new("a1").cpu(8_000).obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").cpu(8_000).obj()]),
    ];
    let jobs = [
        JobBuilder::new("ns/crit")
            .priority(Priority::Critical)
            .allowed(&["dc-a", "dc-b"])
            .preferred("dc-a")
            .obj(),
        JobBuilder::new("ns/low")
            .priority(Priority::Normal)
            .allowed(&["dc-b"])
            .obj(),
    ];
    let policy = PlacementPolicy {
        reserves: vec![reserve("dc-b", "dc-a", Priority::Critical)],
        ..Default::default()
    };
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    assert!(placement(&p, "ns/low").is_none());
    let why = reason(&p, "ns/low").unwrap();
    assert!(
        why.contains("reserve in dc-b for dc-a critical jobs"),
        "{why}"
    );
    let r = &p.reserve[&SiteId("dc-b".into())];
    assert!(r.holds);

    // Without a reserve-abiding choice (the low job already runs there), it is reported missing.
    let no_reserve = PlacementPolicy::default();
    let running = running_of(&plan(&request(&sites, &jobs, &no_reserve, &[])));
    let p = plan(&request(&sites, &jobs, &policy, &running));
    let r = &p.reserve[&SiteId("dc-b".into())];
    assert!(!r.holds);
    assert_eq!(r.jobs_not_fitting, [jobs[0].id.clone()]);
    assert_eq!(r.missing, jobs[0].total());
}

#[test]
fn running_jobs_stay_exactly_where_they_are() {
    let nodes = (1..=4)
        .map(|i| NodeBuilder::new(&format!("n{i}")).obj())
        .collect();
    let sites = [site("dc-a", nodes)];
    let jobs: Vec<_> = (0..3)
        .map(|i| JobBuilder::new(&format!("ns/j{i}")).obj())
        .collect();
    let policy = PlacementPolicy::default();
    // A different (reversed) layout than the heuristic would pick fresh.
    let mut running = running_of(&plan(&request(&sites, &jobs, &policy, &[])));
    for r in &mut running {
        for pod in &mut r.pods {
            pod.node = format!("n{}", 5 - pod.node[1..].parse::<u32>().unwrap());
        }
    }
    let p = plan(&request(&sites, &jobs, &policy, &running));
    assert_eq!(p.placements, running);
    assert!(p.moves.is_empty());
}

fn one_job_running_on(
    node_state: impl Fn(NodeBuilder) -> NodeBuilder,
) -> (PlacementPlan, JobPlacement) {
    let sites = [site(
        "dc-a",
        vec![NodeBuilder::new("n1").obj(), NodeBuilder::new("n2").obj()],
    )];
    let jobs = [JobBuilder::new("ns/j").tms(1).obj()];
    let policy = PlacementPolicy::default();
    let running = vec![JobPlacement {
        job: jobs[0].id.clone(),
        site: SiteId("dc-a".into()),
        pods: vec![
            scheduler::model::PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: "n1".into(),
            },
            scheduler::model::PodPlacement {
                role: PodRole::Taskmanager,
                index: 0,
                node: "n2".into(),
            },
        ],
    }];
    let changed = [site(
        "dc-a",
        vec![
            NodeBuilder::new("n1").obj(),
            node_state(NodeBuilder::new("n2")).obj(),
        ],
    )];
    let req = request(&changed, &jobs, &policy, &running);
    let p = plan(&req);
    assert!(validate_plan(&req, &p).is_empty());
    let _ = sites;
    (p, running[0].clone())
}

#[test]
fn a_pod_on_a_cordoned_node_moves_and_the_move_says_why() {
    let (p, _) = one_job_running_on(|n| n.cordoned());
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].reason, "node n2 cordoned");
    assert_eq!(p.moves[0].from.pods[0].node, "n2");
    assert_eq!(p.moves[0].to.as_ref().unwrap().pods[0].node, "n1");
    assert_eq!(
        nodes_of(&p, "ns/j", PodRole::Jobmanager),
        ["n1"],
        "the JobManager stays"
    );
}

#[test]
fn a_no_execute_taint_evicts_but_a_no_schedule_taint_does_not() {
    let (p, _) = one_job_running_on(|n| n.taint("maint", "now", TaintEffect::NoExecute));
    assert_eq!(p.moves.len(), 1);
    assert!(
        p.moves[0].reason.contains("maint=now:NoExecute"),
        "{}",
        p.moves[0].reason
    );
    let (p, running) = one_job_running_on(|n| n.taint("maint", "soon", TaintEffect::NoSchedule));
    assert!(p.moves.is_empty());
    assert_eq!(p.placements, [running]);
}

#[test]
fn a_pod_on_a_lost_node_moves() {
    let sites = [site("dc-a", vec![NodeBuilder::new("n1").obj()])];
    let jobs = [JobBuilder::new("ns/j").tms(1).obj()];
    let policy = PlacementPolicy::default();
    let running = vec![JobPlacement {
        job: jobs[0].id.clone(),
        site: SiteId("dc-a".into()),
        pods: vec![
            scheduler::model::PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: "n1".into(),
            },
            scheduler::model::PodPlacement {
                role: PodRole::Taskmanager,
                index: 0,
                node: "gone".into(),
            },
        ],
    }];
    let req = request(&sites, &jobs, &policy, &running);
    let p = plan(&req);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].reason, "node gone is gone");
    assert_eq!(p.moves[0].from.pods[0].node, "gone");
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn insufficient_memory_names_the_largest_free_and_the_need() {
    let sites = [site("dc-a", vec![NodeBuilder::new("n1").mem_gi(64).obj()])];
    let mut s = sites.clone();
    s[0].running_pods.push(foreign_pod("n1", 1_000, 58));
    let jobs = [JobBuilder::new("ns/j").jm(500, 1).tm(1_000, 8).tms(1).obj()];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&s, &jobs, &policy, &[]));
    let why = reason(&p, "ns/j").unwrap();
    assert!(
        why.contains("insufficient memory: largest free 6 GiB, TaskManager needs 8 GiB"),
        "{why}"
    );
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let nodes: Vec<_> = (0..6)
        .map(|i| {
            NodeBuilder::new(&format!("n{i}"))
                .cpu(8_000 + i * 1_000)
                .obj()
        })
        .collect();
    let sites = [site("dc-a", nodes.clone()), site("dc-b", nodes)];
    let jobs: Vec<_> = (0..12)
        .map(|i| {
            JobBuilder::new(&format!("ns/j{i:02}"))
                .tms(1 + i % 4)
                .priority(Priority::ALL[(i % 4) as usize])
                .obj()
        })
        .collect();
    let policy = PlacementPolicy::default();
    let req = request(&sites, &jobs, &policy, &[]);
    let a = serde_json::to_string(&plan(&req)).unwrap();
    let b = serde_json::to_string(&plan(&req)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_plan_serialises_to_the_cli_shape_and_placements_read_back() {
    let sites = [site("dc-a", vec![NodeBuilder::new("n1").obj()])];
    let jobs = [
        JobBuilder::new("ns/j").tms(1).obj(),
        JobBuilder::new("ns/x").allowed(&["dc-z"]).obj(),
    ];
    let policy = PlacementPolicy::default();
    let p = plan(&request(&sites, &jobs, &policy, &[]));
    let v: serde_json::Value = serde_json::to_value(&p).unwrap();
    for key in [
        "placements",
        "unplaced",
        "preemptions",
        "moves",
        "reserve",
        "solver",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["placements"][0]["job"], "ns/j");
    assert_eq!(v["placements"][0]["pods"][0]["role"], "jobmanager");
    assert_eq!(v["unplaced"][0]["job"], "ns/x");
    assert_eq!(v["solver"]["solver"], "heuristic");
    let back: Vec<JobPlacement> = serde_json::from_value(v["placements"].clone()).unwrap();
    assert_eq!(back, p.placements);
}

#[test]
fn the_milp_places_what_first_fit_strands_and_reports_a_bound() {
    // First fit puts the big job in dc-a (tried first), stranding the dc-a-only job; the
    // MILP sends the big one to dc-b instead.
    let sites = [
        site("dc-a", vec![NodeBuilder::new("a1").cpu(10_000).obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").cpu(8_000).obj()]),
    ];
    let jobs = [
        JobBuilder::new("ns/big").jm(7_000, 1).tms(0).obj(),
        JobBuilder::new("ns/a-only")
            .jm(6_000, 1)
            .tms(0)
            .allowed(&["dc-a"])
            .obj(),
    ];
    let policy = PlacementPolicy::default();
    let mut req = request(&sites, &jobs, &policy, &[]);
    let first_fit = plan(&req);
    assert_eq!(first_fit.unplaced.len(), 1);
    req.options.solver = scheduler::placement::SolverChoice::Milp {
        budget: std::time::Duration::from_secs(5),
    };
    let p = plan(&req);
    assert_eq!(
        p.solver.solver,
        scheduler::placement::SolverKind::Milp,
        "{:?}",
        p.solver
    );
    assert!(p.unplaced.is_empty());
    assert_eq!(placement(&p, "ns/big").unwrap().site, SiteId("dc-b".into()));
    assert!(p.solver.objective > first_fit.solver.objective);
    assert!(p.solver.bound.unwrap() >= p.solver.objective - 1e-6);
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn a_borrowed_pod_moves_when_the_lending_window_closes() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1").label("pool", "hdfs").obj(),
            NodeBuilder::new("online").cpu(4_000).mem_gi(16).obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/j")
        .allow_offline()
        .tm(2_000, 4)
        .tms(1)
        .obj()];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    // Placed at night with the online node nearly full, so the TaskManager borrows.
    let mut busy = sites.clone();
    busy[0].running_pods.push(foreign_pod("online", 2_500, 8));
    let mut req = request(&busy, &jobs, &policy, &[]);
    req.at = night();
    let first = plan(&req);
    assert_eq!(nodes_of(&first, "ns/j", PodRole::Taskmanager), ["hdfs-1"]);
    // By noon the window is closed and the online node has room again.
    let running = first.placements.clone();
    let req = request(&sites, &jobs, &policy, &running);
    let p = plan(&req);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(
        p.moves[0].reason,
        "offline lending window closed on node hdfs-1"
    );
    assert_eq!(nodes_of(&p, "ns/j", PodRole::Taskmanager), ["online"]);
    assert!(validate_plan(&req, &p).is_empty());
}

#[test]
fn place_one_adds_a_job_to_an_existing_plan_without_moving_others() {
    let sites = [site(
        "dc-a",
        vec![
            NodeBuilder::new("n1").cpu(8_000).obj(),
            NodeBuilder::new("n2").cpu(8_000).obj(),
        ],
    )];
    let jobs = [JobBuilder::new("ns/a").obj()];
    let policy = PlacementPolicy::default();
    let req = request(&sites, &jobs, &policy, &[]);
    let base = plan(&req);
    let mut placer = scheduler::placement::IncrementalPlacer::new(&req, &base.placements);
    let extra = JobBuilder::new("ns/b").obj();
    let too_big = JobBuilder::new("ns/c").tm(8_000, 1).tms(2).obj();
    let placed = placer.place_one(&extra).unwrap();
    assert_eq!(placed.pods.len(), 3);
    let why = placer.place_one(&too_big).unwrap_err();
    assert!(why.contains("dc-a:"), "{why}");
    assert!(placer.remove(&extra.id));
    assert!(!placer.remove(&extra.id), "removing twice finds nothing");
}
