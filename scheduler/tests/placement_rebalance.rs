//! Lending windows enforced at runtime: jobs on borrowed offline capacity are moved before the
//! window closes (lead time), at a bounded rate (budget), most important first, never onto
//! capacity that closes within the lead time, and never with a JobManager on an offline node.

mod placement_fixtures;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use placement_fixtures::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::{
    JobDemand, JobPlacement, PlacementPolicy, PodRole, Priority, RebalancePolicy, SiteSnapshot,
};
use scheduler::placement::rebalance::{
    Lending, RebalancePlan, RebalanceRequest, lending_at, plan_rebalance,
};
use scheduler::placement::{plan, validate_plan};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, hour, minute, 0)
        .single()
        .unwrap()
}

fn rebalance(
    sites: &[SiteSnapshot],
    jobs: &[JobDemand],
    policy: &PlacementPolicy,
    rules: RebalancePolicy,
    running: &[JobPlacement],
    now: DateTime<Utc>,
    recent: &[DateTime<Utc>],
) -> RebalancePlan {
    plan_rebalance(&RebalanceRequest {
        sites,
        jobs,
        policy,
        rebalance: rules,
        running,
        at: now,
        recent_moves: recent,
    })
}

/// One offline node and one online node that is busy while the job is first placed, so its
/// TaskManager borrows the offline node at night.
fn one_borrower() -> (
    Vec<SiteSnapshot>,
    Vec<JobDemand>,
    PlacementPolicy,
    Vec<JobPlacement>,
) {
    let sites = vec![site(
        "dc-a",
        vec![
            NodeBuilder::new("hdfs-1").label("pool", "hdfs").obj(),
            NodeBuilder::new("online").cpu(4_000).mem_gi(16).obj(),
        ],
    )];
    let jobs = vec![
        JobBuilder::new("ns/j")
            .allow_offline()
            .tm(2_000, 4)
            .tms(1)
            .obj(),
    ];
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let mut busy = sites.clone();
    busy[0].running_pods.push(foreign_pod("online", 2_500, 8));
    let mut req = request(&busy, &jobs, &policy, &[]);
    req.at = night();
    let first = plan(&req);
    let tm = first.placements[0]
        .pods
        .iter()
        .find(|p| p.role == PodRole::Taskmanager)
        .map(|p| p.node.clone());
    assert_eq!(tm.as_deref(), Some("hdfs-1"));
    (sites, jobs, policy, first.placements)
}

#[test]
fn a_borrowed_task_manager_moves_once_the_lead_time_before_the_close_has_come() {
    let (sites, jobs, policy, running) = one_borrower();
    let rules = RebalancePolicy::default();
    // The window closes at 07:00 UTC; with a 10 minute lead the move is due at 06:50.
    let early = rebalance(&sites, &jobs, &policy, rules, &running, at(6, 49), &[]);
    assert!(early.moves.is_empty(), "{early:#?}");
    assert_eq!(early.waiting.len(), 1);
    assert_eq!(early.waiting[0].deadline, at(6, 50));

    let due = rebalance(&sites, &jobs, &policy, rules, &running, at(6, 50), &[]);
    assert_eq!(due.moves.len(), 1, "{due:#?}");
    let m = &due.moves[0];
    assert_eq!(
        m.reason,
        "lending window of pool hdfs closes at 2026-11-18T07:00:00+00:00 (lead time 10m): pods on node hdfs-1"
    );
    assert_eq!(m.from.pods.len(), 1);
    assert_eq!(m.from.pods[0].node, "hdfs-1");
    let tm_nodes: Vec<&str> =
        m.to.pods
            .iter()
            .filter(|p| p.role == PodRole::Taskmanager)
            .map(|p| p.node.as_str())
            .collect();
    assert_eq!(tm_nodes, ["online"]);
    // The JobManager did not move: only the borrowed pod leaves.
    assert_eq!(
        m.to.pods.iter().find(|p| p.role == PodRole::Jobmanager),
        running[0]
            .pods
            .iter()
            .find(|p| p.role == PodRole::Jobmanager)
    );
}

#[test]
fn a_job_that_fits_nowhere_else_is_reported_stuck_before_the_window_closes() {
    let (mut sites, jobs, policy, running) = one_borrower();
    sites[0].running_pods.push(foreign_pod("online", 3_000, 14));
    let p = rebalance(
        &sites,
        &jobs,
        &policy,
        RebalancePolicy::default(),
        &running,
        at(6, 50),
        &[],
    );
    assert!(p.moves.is_empty());
    assert_eq!(p.stuck.len(), 1, "{p:#?}");
    assert!(p.stuck[0].deadline < at(7, 0));
    assert!(
        p.stuck[0].reason.contains("fits nowhere else: dc-a:"),
        "{}",
        p.stuck[0].reason
    );
}

#[test]
fn the_budget_holds_moves_back_and_says_so() {
    let (sites, jobs, policy, running) = one_borrower();
    let rules = RebalancePolicy {
        moves_per_hour: 2,
        ..Default::default()
    };
    let recent = [at(6, 0), at(6, 30), at(5, 40)];
    let p = rebalance(&sites, &jobs, &policy, rules, &running, at(6, 50), &recent);
    assert_eq!(
        p.budget.started_last_hour, 2,
        "05:40 is more than an hour ago"
    );
    assert_eq!(p.budget.left, 0);
    assert!(p.moves.is_empty());
    assert!(
        p.waiting[0]
            .reason
            .contains("held back by the rebalance budget"),
        "{}",
        p.waiting[0].reason
    );
}

#[test]
fn after_the_window_closed_the_rebalancer_moves_the_jobs_the_planner_says_must_leave() {
    let (sites, jobs, policy, running) = one_borrower();
    let req = request(&sites, &jobs, &policy, &running);
    let planned = plan(&req);
    let r = rebalance(
        &sites,
        &jobs,
        &policy,
        RebalancePolicy::default(),
        &running,
        noon(),
        &[],
    );
    let planned_jobs: Vec<_> = planned.moves.iter().map(|m| &m.job).collect();
    let rebalanced: Vec<_> = r.moves.iter().map(|m| &m.job).collect();
    assert_eq!(planned_jobs, rebalanced);
    assert_eq!(
        planned.placements[0].pods, r.moves[0].to.pods,
        "same packer, same target"
    );
    assert!(
        r.moves[0]
            .reason
            .starts_with("lending window of pool hdfs is closed")
    );
}

/// Two sites, online nodes and `pool=hdfs` nodes (lending 01:00–07:00 UTC), and jobs of every
/// tier, a third of them allowed offline; placed at 02:00 with the online nodes partly taken
/// by foreign pods that are gone later, so that jobs borrow and have somewhere to go.
struct Fleet {
    sites: Vec<SiteSnapshot>,
    jobs: Vec<JobDemand>,
    policy: PlacementPolicy,
    running: Vec<JobPlacement>,
}

fn fleet(seed: u64, nodes_per_site: usize, job_count: usize) -> Fleet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sites = Vec::new();
    let mut busy_sites = Vec::new();
    for s in ["dc-a", "dc-b"] {
        let mut nodes = Vec::new();
        let mut foreign = Vec::new();
        for i in 0..nodes_per_site {
            let name = format!("{s}-n{i}");
            let mut b = NodeBuilder::new(&name)
                .cpu(rng.random_range(4..=16) * 1_000)
                .mem_gi(rng.random_range(16..=64));
            if rng.random_bool(0.3) {
                b = b.label("pool", "hdfs");
            } else if rng.random_bool(0.6) {
                foreign.push(foreign_pod(&name, 3_000, 12));
            }
            nodes.push(b.obj());
        }
        let free = site(s, nodes);
        let mut busy = free.clone();
        busy.running_pods = foreign;
        sites.push(free);
        busy_sites.push(busy);
    }
    let jobs: Vec<JobDemand> = (0..job_count)
        .map(|i| {
            let mut b = JobBuilder::new(&format!("ns/job-{i:03}"))
                .priority(Priority::ALL[rng.random_range(0..4)])
                .jm(500, 1)
                .tm(rng.random_range(1..=4) * 500, rng.random_range(1..=4))
                .tms(rng.random_range(1..=4));
            if rng.random_bool(0.5) {
                b = b.allow_offline();
            }
            b.obj()
        })
        .collect();
    let policy = PlacementPolicy {
        pools: vec![offline_pool()],
        ..Default::default()
    };
    let mut req = request(&busy_sites, &jobs, &policy, &[]);
    req.at = at(2, 0);
    let running = plan(&req).placements;
    Fleet {
        sites,
        jobs,
        policy,
        running,
    }
}

fn offline_nodes(sites: &[SiteSnapshot]) -> BTreeMap<(String, String), ()> {
    sites
        .iter()
        .flat_map(|s| {
            s.nodes
                .iter()
                .filter(|n| n.labels.get("pool").map(String::as_str) == Some("hdfs"))
                .map(move |n| ((s.id.0.clone(), n.name.clone()), ()))
        })
        .collect()
}

fn borrowed_pods(f: &Fleet) -> usize {
    let offline = offline_nodes(&f.sites);
    f.running
        .iter()
        .flat_map(|p| {
            p.pods
                .iter()
                .map(move |pod| (p.site.0.clone(), pod.node.clone()))
        })
        .filter(|k| offline.contains_key(k))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the fleet, the instant and the moves already made: no more moves than the
    /// budget has left, highest priority first, never onto capacity that closes within the
    /// lead time, never a JobManager on an offline node, and every due job accounted for.
    #[test]
    fn moves_keep_the_budget_the_priority_order_and_stay_off_closing_capacity(
        seed in any::<u64>(),
        minutes_before_close in 0i64..240,
        per_hour in 1u32..20,
        already in 0usize..20,
    ) {
        let f = fleet(seed, 6, 10);
        let rules = RebalancePolicy { lead_time: std::time::Duration::from_secs(600), moves_per_hour: per_hour };
        let now = at(7, 0) - TimeDelta::minutes(minutes_before_close);
        let recent: Vec<DateTime<Utc>> = (0..already).map(|i| now - TimeDelta::minutes(5 * i as i64)).collect();
        let p = rebalance(&f.sites, &f.jobs, &f.policy, rules, &f.running, now, &recent);
        let in_last_hour = recent.iter().filter(|&&t| t > now - TimeDelta::hours(1)).count() as u32;
        prop_assert_eq!(p.budget.left, per_hour.saturating_sub(in_last_hour));
        prop_assert!(p.moves.len() as u32 <= p.budget.left);
        for pair in p.moves.windows(2) {
            prop_assert!(pair[0].priority >= pair[1].priority, "{:?} before {:?}", pair[0].job, pair[1].job);
        }
        let offline = offline_nodes(&f.sites);
        let lending = f.policy.pools[0].offline.as_ref().unwrap();
        for m in &p.moves {
            for pod in &m.to.pods {
                if offline.contains_key(&(m.to.site.0.clone(), pod.node.clone())) {
                    prop_assert!(pod.role != PodRole::Jobmanager, "JobManager of {} on offline {}", m.job, pod.node);
                    match lending_at(lending, now) {
                        Lending::Beyond => {}
                        Lending::Until(close) => prop_assert!(close - TimeDelta::minutes(10) > now,
                            "{} moved onto {} which closes at {close}", m.job, pod.node),
                        Lending::Closed => prop_assert!(false, "{} moved onto closed {}", m.job, pod.node),
                    }
                }
            }
            prop_assert!(!m.reason.is_empty());
        }
        // Every job with a borrowed pod is moved, waiting or stuck: none is forgotten.
        for rp in &f.running {
            let borrows = rp.pods.iter().any(|pod| offline.contains_key(&(rp.site.0.clone(), pod.node.clone())));
            let listed = p.moves.iter().any(|m| m.job == rp.job)
                || p.waiting.iter().any(|w| w.job == rp.job)
                || p.stuck.iter().any(|s| s.job == rp.job);
            prop_assert_eq!(borrows, listed, "{}", rp.job);
        }
    }
}

/// A day on a virtual clock, one step a minute from 01:30 (window open, jobs borrowing) to
/// 01:30 the next day: each step plans with the production function and applies its moves.
/// At no step is a pod on an offline node past its window's close minus the lead time, never
/// is a JobManager on an offline node, no hour holds more moves than the budget, and every
/// move carries its reason.
#[test]
fn over_a_day_no_borrowed_pod_outlives_its_window_minus_the_lead_time() {
    let mut f = fleet(11, 40, 120);
    let rules = RebalancePolicy {
        lead_time: std::time::Duration::from_secs(600),
        moves_per_hour: 120,
    };
    let borrowed_at_start = borrowed_pods(&f);
    assert!(
        borrowed_at_start > 20,
        "the fleet borrows: {borrowed_at_start}"
    );
    let offline = offline_nodes(&f.sites);
    let lending = f.policy.pools[0].offline.clone().unwrap();
    let mut moved_at: Vec<DateTime<Utc>> = Vec::new();
    let mut now = at(1, 30);
    let end = at(1, 30) + TimeDelta::days(1);
    let mut first_due: Option<DateTime<Utc>> = None;
    while now <= end {
        let p = rebalance(
            &f.sites, &f.jobs, &f.policy, rules, &f.running, now, &moved_at,
        );
        assert!(p.stuck.is_empty(), "at {now}: {:#?}", p.stuck);
        if !p.moves.is_empty() && first_due.is_none() {
            first_due = Some(now);
        }
        for m in p.moves {
            assert!(!m.reason.is_empty());
            let slot = f.running.iter_mut().find(|r| r.job == m.job).unwrap();
            *slot = m.to;
            moved_at.push(now);
        }
        let in_last_hour = moved_at
            .iter()
            .filter(|&&t| t > now - TimeDelta::hours(1))
            .count();
        assert!(
            in_last_hour <= 120,
            "at {now}: {in_last_hour} moves in the last hour"
        );
        let deadline_passed = match lending_at(&lending, now) {
            Lending::Closed => true,
            Lending::Until(close) => close - TimeDelta::minutes(10) <= now,
            Lending::Beyond => false,
        };
        for rp in &f.running {
            for pod in &rp.pods {
                if offline.contains_key(&(rp.site.0.clone(), pod.node.clone())) {
                    assert!(
                        pod.role != PodRole::Jobmanager,
                        "at {now}: JobManager of {} on {}",
                        rp.job,
                        pod.node
                    );
                    assert!(
                        !deadline_passed,
                        "at {now}: {} still on offline {}",
                        rp.job, pod.node
                    );
                }
            }
        }
        now += TimeDelta::minutes(1);
    }
    assert_eq!(borrowed_pods(&f), 0);
    let moves = moved_at.len();
    assert!(moves > 10, "moves made: {moves}");
    // The moves began early enough for the budget, not at the last minute.
    assert!(first_due.unwrap() < at(6, 50) - TimeDelta::minutes(5));
    // The placement after the day breaks no hard rule at noon.
    let req = request(&f.sites, &f.jobs, &f.policy, &f.running);
    let after = plan(&req);
    assert!(validate_plan(&req, &after).is_empty());
    assert!(after.moves.is_empty(), "{:#?}", after.moves);
}

/// Two jobs, each with one 2-cpu TaskManager borrowing `hdfs-1` (16 cpu, lending by usage:
/// share 8 − 1 = 7 cpu), their JobManagers on an online node; the batch workload on `hdfs-1`
/// uses `batch_cpu` (None: not measured).
fn two_borrowers_by_usage(
    batch_cpu: Option<i64>,
) -> (
    Vec<SiteSnapshot>,
    Vec<JobDemand>,
    PlacementPolicy,
    Vec<JobPlacement>,
) {
    let hdfs = NodeBuilder::new("hdfs-1")
        .label("pool", "hdfs")
        .cpu(16_000)
        .mem_gi(64);
    let hdfs = match batch_cpu {
        Some(cpu) => hdfs.owner_usage(cpu, 8),
        None => hdfs,
    };
    let sites = vec![site(
        "dc-a",
        vec![
            hdfs.obj(),
            NodeBuilder::new("online-1").cpu(8_000).mem_gi(32).obj(),
            NodeBuilder::new("online-2").cpu(8_000).mem_gi(32).obj(),
        ],
    )];
    let jobs = vec![
        JobBuilder::new("ns/important")
            .priority(Priority::High)
            .allow_offline()
            .tm(2_000, 4)
            .tms(1)
            .obj(),
        JobBuilder::new("ns/batchy")
            .priority(Priority::BestEffort)
            .allow_offline()
            .tm(2_000, 4)
            .tms(1)
            .obj(),
    ];
    let mut pool = offline_pool();
    pool.offline.as_mut().unwrap().lend_by = scheduler::model::LendBasis::Usage;
    let policy = PlacementPolicy {
        pools: vec![pool],
        ..Default::default()
    };
    let running = jobs
        .iter()
        .map(|j| JobPlacement {
            job: j.id.clone(),
            site: scheduler::model::SiteId("dc-a".into()),
            pods: vec![
                scheduler::model::PodPlacement {
                    role: PodRole::Jobmanager,
                    index: 0,
                    node: "online-1".into(),
                },
                scheduler::model::PodPlacement {
                    role: PodRole::Taskmanager,
                    index: 0,
                    node: "hdfs-1".into(),
                },
            ],
        })
        .collect();
    (sites, jobs, policy, running)
}

/// One rebalance round at night over [`two_borrowers_by_usage`], with the default rules.
fn night_round_by_usage(batch_cpu: Option<i64>) -> RebalancePlan {
    let (sites, jobs, policy, running) = two_borrowers_by_usage(batch_cpu);
    rebalance(
        &sites,
        &jobs,
        &policy,
        RebalancePolicy::default(),
        &running,
        night(),
        &[],
    )
}

#[test]
fn when_the_batch_workload_grows_the_least_important_borrower_leaves_and_no_more() {
    // Batch at 11 cpu: 16 − 11 − 1 = 4 cpu lent, both TaskManagers (4 cpu) still fit.
    let quiet = night_round_by_usage(Some(11_000));
    assert!(
        quiet.moves.is_empty() && quiet.stuck.is_empty(),
        "{quiet:#?}"
    );

    // Batch at 12 cpu: 3 cpu lent, one TaskManager must go, the best-effort one.
    let plan = night_round_by_usage(Some(12_000));
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    let m = &plan.moves[0];
    assert_eq!(m.job.0, "ns/batchy");
    assert!(
        m.reason.contains("node hdfs-1 needs its capacity back"),
        "{}",
        m.reason
    );
    assert_eq!(m.deadline, night(), "due now");
    assert!(
        m.to.pods.iter().all(|p| p.node != "hdfs-1"),
        "it leaves the node: {:?}",
        m.to
    );
}

#[test]
fn a_node_without_a_usage_measurement_moves_nobody() {
    let plan = night_round_by_usage(None);
    assert!(plan.moves.is_empty() && plan.stuck.is_empty(), "{plan:#?}");
}

proptest! {
    #[test]
    fn a_reclaiming_node_sheds_only_what_it_must_least_important_first(
        batch_cpu in 0i64..=16_000,
        important_first in any::<bool>(),
    ) {
        let (sites, mut jobs, policy, running) = two_borrowers_by_usage(Some(batch_cpu));
        if !important_first {
            jobs[0].priority = Priority::BestEffort;
            jobs[1].priority = Priority::High;
        }
        let plan = rebalance(&sites, &jobs, &policy, RebalancePolicy::default(), &running, night(), &[]);
        // What hdfs-1 lends now, from the policy's words: min(16 − batch, 8) − 1 cpu.
        let lends = (16_000 - batch_cpu).min(8_000) - 1_000;
        let leaving: Vec<&str> = plan
            .moves
            .iter()
            .map(|m| m.job.0.as_str())
            .chain(plan.stuck.iter().map(|s| s.job.0.as_str()))
            .collect();
        let staying_cpu = 2_000 * (2 - leaving.len() as i64);
        prop_assert!(staying_cpu <= lends.max(0), "{staying_cpu}m stay on a node lending {lends}m: {plan:#?}");
        if !leaving.is_empty() {
            prop_assert!(staying_cpu + 2_000 > lends, "more left than needed: {plan:#?}");
        }
        if leaving.len() == 1 {
            let least = jobs.iter().min_by_key(|j| j.priority).unwrap();
            prop_assert_eq!(leaving[0], least.id.0.as_str());
        }
    }
}
