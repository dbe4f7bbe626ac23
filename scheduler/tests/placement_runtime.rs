//! The plan kept true while it runs: the running placement judged again against the cluster
//! and the policy (`recheck_running`), its violations moved by the rebalancer within the
//! budget, most important jobs first; and incremental placement keeping the full planner's
//! failover reserves and preemption rules.

mod placement_fixtures;

use chrono::{DateTime, TimeDelta, Utc};
use placement_fixtures::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::k8s::TaintEffect;
use scheduler::model::{
    JobDemand, JobId, JobPlacement, PlacementPolicy, PodPlacement, PodRole, Priority,
    RebalancePolicy, SiteId, SiteSnapshot,
};
use scheduler::placement::rebalance::{
    RebalancePlan, RebalanceRequest, RunningViolation, RunningViolationKind, plan_rebalance,
    recheck_running,
};
use scheduler::placement::{IncrementalPlacer, plan};

fn rebalance_request<'a>(
    sites: &'a [SiteSnapshot],
    jobs: &'a [JobDemand],
    policy: &'a PlacementPolicy,
    running: &'a [JobPlacement],
    rules: RebalancePolicy,
    recent: &'a [DateTime<Utc>],
) -> RebalanceRequest<'a> {
    RebalanceRequest {
        sites,
        jobs,
        policy,
        rebalance: rules,
        running,
        at: noon(),
        recent_moves: recent,
    }
}

fn recheck(
    sites: &[SiteSnapshot],
    jobs: &[JobDemand],
    policy: &PlacementPolicy,
    running: &[JobPlacement],
) -> Vec<RunningViolation> {
    recheck_running(&rebalance_request(
        sites,
        jobs,
        policy,
        running,
        RebalancePolicy::default(),
        &[],
    ))
}

fn rebalance(
    sites: &[SiteSnapshot],
    jobs: &[JobDemand],
    policy: &PlacementPolicy,
    running: &[JobPlacement],
) -> RebalancePlan {
    plan_rebalance(&rebalance_request(
        sites,
        jobs,
        policy,
        running,
        RebalancePolicy::default(),
        &[],
    ))
}

fn pod(role: PodRole, index: u32, node: &str) -> PodPlacement {
    PodPlacement {
        role,
        index,
        node: node.to_string(),
    }
}

fn placed(job: &str, site: &str, pods: Vec<PodPlacement>) -> JobPlacement {
    JobPlacement {
        job: JobId(job.to_string()),
        site: SiteId(site.to_string()),
        pods,
    }
}

fn node_of(p: &JobPlacement, role: PodRole, index: u32) -> &str {
    p.pods
        .iter()
        .find(|x| x.role == role && x.index == index)
        .map(|x| x.node.as_str())
        .unwrap()
}

/// One job on `n1` (JobManager and one TaskManager), `n2` empty.
fn one_job_on_n1(
    n1: placement_fixtures::NodeBuilder,
    job: JobDemand,
) -> (Vec<SiteSnapshot>, Vec<JobDemand>, Vec<JobPlacement>) {
    let sites = vec![site(
        "dc-a",
        vec![n1.obj(), NodeBuilder::new("n2").label("disk", "ssd").obj()],
    )];
    let running = vec![placed(
        job.id.0.as_str(),
        "dc-a",
        vec![
            pod(PodRole::Jobmanager, 0, "n1"),
            pod(PodRole::Taskmanager, 0, "n1"),
        ],
    )];
    (sites, vec![job], running)
}

#[test]
fn a_running_placement_that_breaks_no_rule_has_no_violation() {
    let (sites, jobs, running) =
        one_job_on_n1(NodeBuilder::new("n1"), JobBuilder::new("ns/j").tms(1).obj());
    let policy = PlacementPolicy::default();
    assert!(recheck(&sites, &jobs, &policy, &running).is_empty());
    let p = rebalance(&sites, &jobs, &policy, &running);
    assert!(p.moves.is_empty() && p.waiting.is_empty() && p.stuck.is_empty());
}

#[test]
fn a_no_execute_taint_the_job_does_not_tolerate_moves_its_pods_off_the_node_with_the_reason() {
    let (sites, jobs, running) = one_job_on_n1(
        NodeBuilder::new("n1").taint("maintenance", "now", TaintEffect::NoExecute),
        JobBuilder::new("ns/j").tms(1).obj(),
    );
    let policy = PlacementPolicy::default();
    let found = recheck(&sites, &jobs, &policy, &running);
    assert_eq!(found.len(), 2, "both pods: {found:#?}");
    assert!(
        found
            .iter()
            .all(|v| v.kind == RunningViolationKind::NoExecuteTaint && v.deadline == noon())
    );
    let p = rebalance(&sites, &jobs, &policy, &running);
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(
        p.moves[0].reason,
        "node n1 has taint maintenance=now:NoExecute the job does not tolerate"
    );
    assert!(p.moves[0].to.pods.iter().all(|x| x.node == "n2"));
    assert_eq!(p.moves[0].kinds, [RunningViolationKind::NoExecuteTaint]);
}

#[test]
fn a_tolerated_no_execute_taint_and_a_no_schedule_taint_are_no_violation() {
    let (sites, jobs, running) = one_job_on_n1(
        NodeBuilder::new("n1")
            .taint("maintenance", "now", TaintEffect::NoExecute)
            .taint("full", "yes", TaintEffect::NoSchedule),
        JobBuilder::new("ns/j")
            .tms(1)
            .tolerate("maintenance", "now", TaintEffect::NoExecute)
            .obj(),
    );
    let policy = PlacementPolicy::default();
    assert!(recheck(&sites, &jobs, &policy, &running).is_empty());
}

#[test]
fn a_node_that_lost_the_label_the_selector_needs_sends_the_pods_to_a_node_that_has_it() {
    // n1 had disk=ssd when the job was placed; it has lost it since.
    let (sites, jobs, running) = one_job_on_n1(
        NodeBuilder::new("n1").label("disk", "hdd"),
        JobBuilder::new("ns/j").tms(1).selector("disk", "ssd").obj(),
    );
    let policy = PlacementPolicy::default();
    let found = recheck(&sites, &jobs, &policy, &running);
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|v| v.kind == RunningViolationKind::NodeLabels),
        "{found:#?}"
    );
    let p = rebalance(&sites, &jobs, &policy, &running);
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert!(
        p.moves[0]
            .reason
            .contains("node n1 no longer has the labels the job's nodeSelector"),
        "{}",
        p.moves[0].reason
    );
    assert_eq!(node_of(&p.moves[0].to, PodRole::Taskmanager, 0), "n2");
}

#[test]
fn a_shrunk_quota_moves_the_least_important_job_of_the_tenant_and_keeps_the_most_important() {
    let sites = vec![
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").obj()]),
    ];
    // Each job: 1 + 2×2 = 5 cpu.
    let jobs = vec![
        JobBuilder::new("ns/critical")
            .priority(Priority::Critical)
            .obj(),
        JobBuilder::new("ns/normal").obj(),
    ];
    let mut policy = PlacementPolicy {
        quotas: vec![quota("trade", "dc-a", 20_000, 100)],
        ..Default::default()
    };
    let running: Vec<JobPlacement> = jobs
        .iter()
        .map(|j| {
            placed(
                &j.id.0,
                "dc-a",
                vec![
                    pod(PodRole::Jobmanager, 0, "a1"),
                    pod(PodRole::Taskmanager, 0, "a1"),
                    pod(PodRole::Taskmanager, 1, "a1"),
                ],
            )
        })
        .collect();
    assert!(recheck(&sites, &jobs, &policy, &running).is_empty());
    policy.quotas = vec![quota("trade", "dc-a", 6_000, 100)];
    let found = recheck(&sites, &jobs, &policy, &running);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].job.0, "ns/normal");
    assert_eq!(found[0].kind, RunningViolationKind::QuotaShrunk);
    assert_eq!(found[0].pods.len(), 3, "the whole job leaves the site");
    assert!(
        found[0]
            .reason
            .starts_with("quota of tenant trade in dc-a shrank below what runs: 4 cpu"),
        "{}",
        found[0].reason
    );
    let p = rebalance(&sites, &jobs, &policy, &running);
    assert_eq!(p.moves.len(), 1, "{p:#?}");
    assert_eq!(p.moves[0].job.0, "ns/normal");
    assert_eq!(p.moves[0].to.site.0, "dc-b");
    assert_eq!(p.moves[0].kinds, [RunningViolationKind::QuotaShrunk]);
}

#[test]
fn on_an_over_committed_node_the_higher_tier_keeps_its_place_and_the_lower_one_moves() {
    let sites = vec![site(
        "dc-a",
        vec![
            NodeBuilder::new("n1").cpu(8_000).obj(),
            NodeBuilder::new("n2").cpu(8_000).obj(),
        ],
    )];
    let jobs = vec![
        // 1 + 2×2 = 5 cpu
        JobBuilder::new("ns/high").priority(Priority::High).obj(),
        // 1 + 3 = 4 cpu
        JobBuilder::new("ns/low")
            .priority(Priority::BestEffort)
            .tm(3_000, 4)
            .tms(1)
            .obj(),
    ];
    let running = vec![
        placed(
            "ns/low",
            "dc-a",
            vec![
                pod(PodRole::Jobmanager, 0, "n1"),
                pod(PodRole::Taskmanager, 0, "n1"),
            ],
        ),
        placed(
            "ns/high",
            "dc-a",
            vec![
                pod(PodRole::Jobmanager, 0, "n1"),
                pod(PodRole::Taskmanager, 0, "n1"),
                pod(PodRole::Taskmanager, 1, "n1"),
            ],
        ),
    ];
    let policy = PlacementPolicy::default();
    let found = recheck(&sites, &jobs, &policy, &running);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].job.0, "ns/low");
    assert_eq!(found[0].kind, RunningViolationKind::OverCapacity);
    assert_eq!(
        found[0].reason,
        "node n1 over capacity: its room is held by jobs at least as important: ns/high"
    );
    let p = rebalance(&sites, &jobs, &policy, &running);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(p.moves[0].job.0, "ns/low");
    assert_eq!(node_of(&p.moves[0].to, PodRole::Taskmanager, 0), "n2");
}

#[test]
fn a_violation_that_fits_nowhere_is_reported_stuck_with_its_reason() {
    // The only node with the label the job needs lost it, and no other node has it.
    let sites = vec![site(
        "dc-a",
        vec![NodeBuilder::new("n1").obj(), NodeBuilder::new("n2").obj()],
    )];
    let jobs = vec![JobBuilder::new("ns/j").tms(1).selector("disk", "ssd").obj()];
    let running = vec![placed(
        "ns/j",
        "dc-a",
        vec![
            pod(PodRole::Jobmanager, 0, "n1"),
            pod(PodRole::Taskmanager, 0, "n1"),
        ],
    )];
    let p = rebalance(&sites, &jobs, &PlacementPolicy::default(), &running);
    assert!(p.moves.is_empty());
    assert_eq!(p.stuck.len(), 1, "{p:#?}");
    assert_eq!(p.stuck[0].kinds, [RunningViolationKind::NodeLabels]);
    assert!(
        p.stuck[0].reason.contains("no longer has the labels")
            && p.stuck[0].reason.contains("fits nowhere else"),
        "{}",
        p.stuck[0].reason
    );
}

// ---- incremental placement -----------------------------------------------------------------

/// dc-a runs a critical job (5 cpu); dc-b (one 8-cpu node) keeps a failover reserve for dc-a's
/// high and critical jobs.
fn reserve_scene() -> (Vec<SiteSnapshot>, PlacementPolicy, Vec<JobDemand>) {
    let sites = vec![
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").cpu(8_000).obj()]),
    ];
    let policy = PlacementPolicy {
        reserves: vec![reserve("dc-b", "dc-a", Priority::High)],
        ..Default::default()
    };
    let jobs = vec![
        JobBuilder::new("ns/critical")
            .priority(Priority::Critical)
            .preferred("dc-a")
            .obj(),
    ];
    (sites, policy, jobs)
}

#[test]
fn incremental_placement_keeps_the_failover_reserve_from_a_lower_tier_and_lends_it_to_its_own() {
    let (sites, policy, mut jobs) = reserve_scene();
    // 1 + 2×2 = 5 cpu each; dc-b has 8, the reserve holds 5 of them.
    jobs.push(JobBuilder::new("ns/normal").allowed(&["dc-b"]).obj());
    jobs.push(
        JobBuilder::new("ns/high")
            .priority(Priority::High)
            .allowed(&["dc-b"])
            .obj(),
    );
    let req = request(&sites, &jobs, &policy, &[]);
    let running = vec![placed(
        "ns/critical",
        "dc-a",
        vec![
            pod(PodRole::Jobmanager, 0, "a1"),
            pod(PodRole::Taskmanager, 0, "a1"),
            pod(PodRole::Taskmanager, 1, "a1"),
        ],
    )];
    let mut placer = IncrementalPlacer::new(&req, &running);
    let refused = placer.place_one(&jobs[1]).unwrap_err();
    assert!(refused.contains("reserve"), "{refused}");
    // A job of the reserve's own tier may use its room, as in a full round.
    let high = placer.place_one(&jobs[2]).unwrap();
    assert_eq!(high.site.0, "dc-b");
}

#[test]
fn the_reserve_follows_the_protected_jobs_placed_and_removed_between_placements() {
    let sites = vec![
        site("dc-a", vec![NodeBuilder::new("a1").obj()]),
        site("dc-b", vec![NodeBuilder::new("b1").cpu(13_000).obj()]),
    ];
    let policy = PlacementPolicy {
        reserves: vec![reserve("dc-b", "dc-a", Priority::High)],
        ..Default::default()
    };
    let critical = |name: &str| {
        JobBuilder::new(name)
            .priority(Priority::Critical)
            .preferred("dc-a")
            .obj()
    };
    // Critical jobs: 1 + 2×2 = 5 cpu; normal ones 1 + 2 = 3 cpu, dc-b only.
    let normal = |name: &str| JobBuilder::new(name).tms(1).allowed(&["dc-b"]).obj();
    let jobs = vec![
        critical("ns/critical-1"),
        normal("ns/normal-1"),
        critical("ns/critical-2"),
        normal("ns/normal-2"),
    ];
    let req = request(&sites, &jobs, &policy, &[]);
    let mut placer = IncrementalPlacer::new(&req, &[]);
    placer.place_one(&jobs[0]).unwrap();
    // The reserve holds 5 of dc-b's 13 cpu: 3 go to the first normal job.
    placer.place_one(&jobs[1]).unwrap();
    assert_eq!(placer.place_one(&jobs[2]).unwrap().site.0, "dc-a");
    // Now both critical jobs need 10 cpu of dc-b's 10 left: nothing for the second normal job.
    let refused = placer.place_one(&jobs[3]).unwrap_err();
    assert!(refused.contains("reserve"), "{refused}");
    // The second critical job goes: the reserve no longer holds its room back.
    assert!(placer.remove(&jobs[2].id));
    assert_eq!(placer.place_one(&jobs[3]).unwrap().site.0, "dc-b");
}

#[test]
fn incremental_placement_preempts_a_best_effort_job_for_a_higher_tier_and_the_next_pass_moves_it() {
    let sites = vec![site(
        "dc-a",
        vec![
            NodeBuilder::new("n1").cpu(6_000).obj(),
            NodeBuilder::new("n2").cpu(3_000).obj(),
        ],
    )];
    let jobs = vec![
        // 1 + 2×2 = 5 cpu, on n1: no node has room for the urgent job's 4-cpu TaskManager.
        JobBuilder::new("ns/spare")
            .priority(Priority::BestEffort)
            .obj(),
        // 1 + 4 = 5 cpu
        JobBuilder::new("ns/urgent")
            .priority(Priority::Critical)
            .tms(1)
            .tm(4_000, 4)
            .obj(),
    ];
    let policy = PlacementPolicy::default();
    let spare = placed(
        "ns/spare",
        "dc-a",
        vec![
            pod(PodRole::Jobmanager, 0, "n1"),
            pod(PodRole::Taskmanager, 0, "n1"),
            pod(PodRole::Taskmanager, 1, "n1"),
        ],
    );
    let running = vec![spare.clone()];
    let req = request(&sites, &jobs, &policy, &[]);
    let mut placer = IncrementalPlacer::new(&req, &running);
    let urgent = placer.place_one(&jobs[1]).unwrap();
    assert_eq!(node_of(&urgent, PodRole::Taskmanager, 0), "n1");
    let pre = placer.preemptions();
    assert_eq!(pre.len(), 1, "{pre:#?}");
    assert_eq!(
        (pre[0].victim.0.as_str(), pre[0].by.0.as_str()),
        ("ns/spare", "ns/urgent")
    );
    // The victim fits nowhere else in this placer's view (5 cpu left, split over two nodes).
    assert_eq!(placer.placement_of(&JobId("ns/spare".into())), None);

    // The controller launched the urgent job; the next pass finds the victim in its way.
    let after = vec![spare, urgent];
    let found = recheck(&sites, &jobs, &policy, &after);
    assert!(
        found
            .iter()
            .all(|v| v.job.0 == "ns/spare" && v.kind == RunningViolationKind::OverCapacity),
        "{found:#?}"
    );
    assert!(!found.is_empty());
}

#[test]
fn incremental_placement_never_preempts_for_a_best_effort_job() {
    let sites = vec![site("dc-a", vec![NodeBuilder::new("n1").cpu(6_000).obj()])];
    let jobs = vec![
        JobBuilder::new("ns/first")
            .priority(Priority::BestEffort)
            .obj(),
        JobBuilder::new("ns/second")
            .priority(Priority::BestEffort)
            .obj(),
    ];
    let policy = PlacementPolicy::default();
    let req = request(&sites, &jobs, &policy, &[]);
    let mut placer = IncrementalPlacer::new(&req, &[]);
    placer.place_one(&jobs[0]).unwrap();
    assert!(placer.place_one(&jobs[1]).is_err());
    assert!(placer.preemptions().is_empty());
    assert!(placer.placement_of(&jobs[0].id).is_some());
}

// ---- properties ----------------------------------------------------------------------------

/// Two sites of random nodes (some `disk=ssd`), jobs of every tier and two tenants (some
/// selecting `disk=ssd`), placed at noon; then the world drifts: labels lost, NoExecute
/// taints, foreign pods grown, a tenant's quota shrunk.
struct Drifted {
    sites: Vec<SiteSnapshot>,
    jobs: Vec<JobDemand>,
    policy: PlacementPolicy,
    running: Vec<JobPlacement>,
}

fn drifted(seed: u64, nodes_per_site: usize, job_count: usize) -> Drifted {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sites = Vec::new();
    for s in ["dc-a", "dc-b"] {
        let nodes = (0..nodes_per_site)
            .map(|i| {
                let mut b = NodeBuilder::new(&format!("{s}-n{i}"))
                    .cpu(rng.random_range(4..=16) * 1_000)
                    .mem_gi(rng.random_range(16..=64));
                if rng.random_bool(0.5) {
                    b = b.label("disk", "ssd");
                }
                b.obj()
            })
            .collect();
        sites.push(site(s, nodes));
    }
    let jobs: Vec<JobDemand> = (0..job_count)
        .map(|i| {
            let mut b = JobBuilder::new(&format!("ns/job-{i:03}"))
                .tenant(if rng.random_bool(0.5) {
                    "trade"
                } else {
                    "risk"
                })
                .priority(Priority::ALL[rng.random_range(0..4)])
                .jm(500, 1)
                .tm(rng.random_range(1..=4) * 500, rng.random_range(1..=4))
                .tms(rng.random_range(1..=4));
            if rng.random_bool(0.3) {
                b = b.selector("disk", "ssd");
            }
            b.obj()
        })
        .collect();
    let mut policy = PlacementPolicy::default();
    let running = plan(&request(&sites, &jobs, &policy, &[])).placements;
    for s in &mut sites {
        for node in &mut s.nodes {
            if rng.random_bool(0.15) {
                node.labels.remove("disk");
            }
            if rng.random_bool(0.1) {
                node.taints.push(scheduler::k8s::Taint {
                    key: "drain".into(),
                    value: String::new(),
                    effect: TaintEffect::NoExecute,
                });
            }
            if rng.random_bool(0.15) {
                s.running_pods.push(foreign_pod(&node.name, 3_000, 12));
            }
        }
    }
    if rng.random_bool(0.5) {
        let cpu = rng.random_range(0..=20) * 1_000;
        policy.quotas.push(quota("trade", "dc-a", cpu, 1_000));
    }
    Drifted {
        sites,
        jobs,
        policy,
        running,
    }
}

fn priority_of(jobs: &[JobDemand], id: &JobId) -> Priority {
    jobs.iter().find(|j| &j.id == id).unwrap().priority
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Every job the re-check finds breaking a rule is moved, waiting for the budget, or
    /// stuck, each with a reason: none is dropped. The moves stay within the budget and go
    /// most important first.
    #[test]
    fn every_violation_is_moved_waiting_or_stuck_within_the_budget_in_priority_order(
        seed in any::<u64>(),
        per_hour in 1u32..12,
        already in 0usize..12,
    ) {
        let d = drifted(seed, 6, 12);
        let rules = RebalancePolicy { lead_time: std::time::Duration::from_secs(600), moves_per_hour: per_hour };
        let recent: Vec<DateTime<Utc>> = (0..already).map(|i| noon() - TimeDelta::minutes(4 * i as i64)).collect();
        let req = rebalance_request(&d.sites, &d.jobs, &d.policy, &d.running, rules, &recent);
        let found = recheck_running(&req);
        let p = plan_rebalance(&req);
        prop_assert!(p.moves.len() as u32 <= p.budget.left);
        prop_assert_eq!(p.budget.left, per_hour.saturating_sub(already as u32));
        for pair in p.moves.windows(2) {
            prop_assert!(pair[0].priority >= pair[1].priority, "{} before {}", pair[0].job, pair[1].job);
        }
        for v in &found {
            prop_assert!(!v.reason.is_empty());
            let listed = p.moves.iter().find(|m| m.job == v.job).map(|m| &m.reason)
                .or_else(|| p.waiting.iter().find(|w| w.job == v.job).map(|w| &w.reason))
                .or_else(|| p.stuck.iter().find(|s| s.job == v.job).map(|s| &s.reason));
            match listed {
                Some(reason) => prop_assert!(reason.contains(&v.reason), "{}: {} lacks {}", v.job, reason, v.reason),
                None => prop_assert!(false, "{} ({:?}) dropped", v.job, v.kind),
            }
        }
        // Nothing is moved that the re-check did not find.
        for m in &p.moves {
            prop_assert!(found.iter().any(|v| v.job == m.job), "{} moved for nothing", m.job);
        }
    }

    /// Pass after pass on a virtual clock (one every 5 minutes for 3 hours), applying the
    /// moves: no sliding hour holds more moves than the budget, each pass's moves go most
    /// important first, and a job fixed once is not found again.
    #[test]
    fn across_passes_the_budget_is_never_exceeded(seed in any::<u64>(), per_hour in 1u32..6) {
        let mut d = drifted(seed, 6, 14);
        let rules = RebalancePolicy { lead_time: std::time::Duration::from_secs(600), moves_per_hour: per_hour };
        let mut moved_at: Vec<DateTime<Utc>> = Vec::new();
        let mut now = noon();
        for _ in 0..36 {
            let req = RebalanceRequest {
                at: now,
                ..rebalance_request(&d.sites, &d.jobs, &d.policy, &d.running, rules, &moved_at)
            };
            let p = plan_rebalance(&req);
            for pair in p.moves.windows(2) {
                prop_assert!(pair[0].priority >= pair[1].priority);
            }
            for m in p.moves {
                let slot = d.running.iter_mut().find(|r| r.job == m.job).unwrap();
                *slot = m.to;
                moved_at.push(now);
            }
            let in_hour = moved_at.iter().filter(|&&t| t > now - TimeDelta::hours(1)).count();
            prop_assert!(in_hour as u32 <= per_hour, "at {}: {} moves in the hour, budget {}", now, in_hour, per_hour);
            now += TimeDelta::minutes(5);
        }
    }

    /// Incremental placement of lower-tier jobs never eats the failover reserve: a reserve
    /// that held before still holds after (judged by the full planner over the result), and
    /// every preemption evicts a strictly lower tier. Pods are all one size, so whether
    /// protected jobs fit is a count of free slots and the judgement is exact.
    #[test]
    fn incremental_placement_keeps_the_reserve_and_preempts_only_a_lower_tier(
        seed in any::<u64>(),
        arrivals in 1usize..14,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sites = Vec::new();
        for s in ["dc-a", "dc-b"] {
            let nodes = (0..4).map(|i| {
                let k = rng.random_range(2..=8i64);
                NodeBuilder::new(&format!("{s}-n{i}")).cpu(k * 1_000).mem_gi(k).obj()
            }).collect();
            sites.push(site(s, nodes));
        }
        let policy = PlacementPolicy {
            reserves: vec![reserve("dc-b", "dc-a", Priority::High)],
            ..Default::default()
        };
        let job = |name: String, priority: Priority, tms: u32, allowed: &[&str]| {
            JobBuilder::new(&name).priority(priority).jm(1_000, 1).tm(1_000, 1).tms(tms)
                .allowed(allowed).obj()
        };
        let mut jobs: Vec<JobDemand> = Vec::new();
        for i in 0..rng.random_range(1..4) {
            let p = if rng.random_bool(0.5) { Priority::Critical } else { Priority::High };
            jobs.push(job(format!("ns/protected-{i}"), p, rng.random_range(1..4), &["dc-a", "dc-b"]).clone());
            let last = jobs.len() - 1;
            jobs[last].sites.preferred = Some(SiteId("dc-a".into()));
        }
        for i in 0..rng.random_range(0..4) {
            jobs.push(job(format!("ns/spare-{i}"), Priority::BestEffort, rng.random_range(1..4), &["dc-b"]));
        }
        let initial = plan(&request(&sites, &jobs, &policy, &[]));
        let before = plan(&request(&sites, &jobs, &policy, &initial.placements));
        prop_assume!(before.reserve.get(&SiteId("dc-b".into())).is_some_and(|r| r.holds));
        let base = jobs.len();
        for i in 0..arrivals {
            let p = if rng.random_bool(0.5) { Priority::Normal } else { Priority::BestEffort };
            let allowed: &[&str] = if rng.random_bool(0.7) { &["dc-b"] } else { &["dc-a", "dc-b"] };
            jobs.push(job(format!("ns/new-{i:02}"), p, rng.random_range(1..4), allowed));
        }
        let req = request(&sites, &jobs, &policy, &[]);
        let mut placer = IncrementalPlacer::new(&req, &initial.placements);
        for j in &jobs[base..] {
            let _ = placer.place_one(j);
        }
        for pre in placer.preemptions() {
            prop_assert!(priority_of(&jobs, &pre.victim) < priority_of(&jobs, &pre.by),
                "{} ({:?}) preempted by {} ({:?})", pre.victim, priority_of(&jobs, &pre.victim), pre.by, priority_of(&jobs, &pre.by));
        }
        let now: Vec<JobPlacement> = jobs.iter().filter_map(|j| placer.placement_of(&j.id)).collect();
        let after = plan(&request(&sites, &jobs, &policy, &now));
        let report = &after.reserve[&SiteId("dc-b".into())];
        prop_assert!(report.holds, "reserve broken: {:?} do not fit", report.jobs_not_fitting);
    }
}
