//! Two days on a virtual clock, one step every five minutes, through the functions the
//! controller's reconcile pass runs: new jobs are placed with the placement view of the
//! policy (`placement_view`), running ones are rebalanced (`plan_rebalance`) and its moves
//! applied. The offline pool lends at night and by usage, and the batch workload on its nodes
//! surges in the middle of each night. At every step: no pod on an offline node past its
//! window's close minus the lead time, never a JobManager on an offline node, no hour with
//! more moves than the budget, every move with its reason, a node over what it lends only
//! while the rebalancer lists its borrowers, and the failover reserve still holding.
//!
//! What this does not run: the controller process itself (its passes read the wall clock);
//! `tests/controller_reconcile.rs` drives the same functions through a real controller.

mod placement_fixtures;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
use placement_fixtures::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::{
    JobDemand, JobId, JobPlacement, LendBasis, PlacementPolicy, PodRole, Priority, RebalancePolicy,
    Resources, SiteSnapshot,
};
use scheduler::placement::rebalance::{
    Lending, RebalanceRequest, lending_at, placement_view, plan_rebalance,
};
use scheduler::placement::{IncrementalPlacer, plan, validate_plan};
use scheduler::report::{DEFAULT_TOP_JOBS, ReportInputs, site_loss_what_if};

const STEP: TimeDelta = TimeDelta::minutes(5);
const MOVES_PER_HOUR: u32 = 120;
const LEAD: TimeDelta = TimeDelta::minutes(10);
const JOBS: usize = 120;
/// Job `i` is submitted at `start() + i × ARRIVAL`: jobs keep coming, night and day.
const ARRIVAL: TimeDelta = TimeDelta::minutes(20);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 0, 0, 0)
        .single()
        .unwrap()
}

/// Share of an offline node's CPU its own batch workload uses at `now`: light most of the
/// time, a surge from 03:00 to 04:30 (inside the 01:00-07:00 window), per node a little
/// different so that nodes do not all reclaim at once.
fn batch_share(now: DateTime<Utc>, node: usize) -> f64 {
    let minute = now.hour() * 60 + now.minute();
    let jitter = (node % 5) as f64 * 0.03;
    if (180..270).contains(&minute) {
        0.55 + jitter
    } else {
        0.1 + jitter
    }
}

struct World {
    sites: Vec<SiteSnapshot>,
    jobs: Vec<JobDemand>,
    policy: PlacementPolicy,
    running: Vec<JobPlacement>,
}

fn world(seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sites = Vec::new();
    for s in ["dc-a", "dc-b"] {
        let mut nodes = Vec::new();
        for i in 0..30 {
            let mut b = NodeBuilder::new(&format!("{s}-n{i:02}"))
                .cpu(rng.random_range(8..=16) * 1_000)
                .mem_gi(rng.random_range(32..=64));
            if i % 3 == 0 {
                b = b.label("pool", "hdfs");
            }
            nodes.push(b.obj());
        }
        sites.push(site(s, nodes));
    }
    let jobs: Vec<JobDemand> = (0..JOBS)
        .map(|i| {
            let mut b = JobBuilder::new(&format!("ns/job-{i:03}"))
                .priority(Priority::ALL[rng.random_range(0..4)])
                .preferred(if i % 2 == 0 { "dc-a" } else { "dc-b" })
                .jm(500, 1)
                .tm(rng.random_range(1..=4) * 500, rng.random_range(1..=4))
                .tms(rng.random_range(1..=6));
            if rng.random_bool(0.6) {
                b = b.allow_offline();
            }
            b.obj()
        })
        .collect();
    let mut pool = offline_pool();
    pool.offline.as_mut().unwrap().lend_by = LendBasis::Usage;
    let policy = PlacementPolicy {
        pools: vec![pool],
        reserves: vec![reserve("dc-b", "dc-a", Priority::Critical)],
        ..Default::default()
    };
    World {
        sites,
        jobs,
        policy,
        running: Vec::new(),
    }
}

impl World {
    fn measure_usage(&mut self, now: DateTime<Utc>) {
        for site in &mut self.sites {
            for (i, node) in site.nodes.iter_mut().enumerate() {
                if node.labels.get("pool").is_some_and(|p| p == "hdfs") {
                    let cpu = (node.allocatable.cpu_milli as f64 * batch_share(now, i)) as i64;
                    node.owner_usage = Some(Resources::new(cpu, 4 << 30, 0));
                }
            }
        }
    }

    fn offline(&self) -> BTreeSet<(String, String)> {
        self.sites
            .iter()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter(|n| n.labels.get("pool").is_some_and(|p| p == "hdfs"))
                    .map(move |n| (s.id.0.clone(), n.name.clone()))
            })
            .collect()
    }

    /// Jobs submitted by `now` and not running are placed as the reconcile pass places
    /// pending jobs: the full planner when nothing runs, else the incremental placer around
    /// what runs, most important first.
    fn place_pending(&mut self, rules: RebalancePolicy, now: DateTime<Utc>) {
        let view = placement_view(&self.policy, rules, now);
        let submitted = ((now - start()).num_minutes() / ARRIVAL.num_minutes() + 1) as usize;
        let running: BTreeSet<JobId> = self.running.iter().map(|r| r.job.clone()).collect();
        let mut pending: Vec<&JobDemand> = self.jobs[..submitted.min(JOBS)]
            .iter()
            .filter(|j| !running.contains(&j.id))
            .collect();
        pending.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
        let demands: Vec<JobDemand> = self
            .jobs
            .iter()
            .filter(|j| running.contains(&j.id))
            .chain(pending.iter().copied())
            .cloned()
            .collect();
        let mut req = request(&self.sites, &demands, &view, &[]);
        req.at = now;
        if self.running.is_empty() {
            self.running = plan(&req).placements;
            return;
        }
        let existing = self.running.clone();
        let mut placer = IncrementalPlacer::new(&req, &existing);
        for job in pending {
            if let Ok(placement) = placer.place_one(job) {
                self.running.push(placement);
            }
        }
        // A preempted job runs where the placer put it again, or nowhere until placed anew.
        for preemption in placer.preemptions() {
            let victim = &preemption.victim;
            self.running.retain(|r| &r.job != victim);
            if let Some(again) = placer.placement_of(victim) {
                self.running.push(again);
            }
        }
    }

    /// Our requests on each offline node, and what it lends now.
    fn over_lent_nodes(&self) -> Vec<String> {
        let lending = self.policy.pools[0].offline.as_ref().unwrap();
        let demand: BTreeMap<&JobId, &JobDemand> = self.jobs.iter().map(|j| (&j.id, j)).collect();
        let mut out = Vec::new();
        for site in &self.sites {
            for node in &site.nodes {
                if node.labels.get("pool").is_none_or(|p| p != "hdfs") {
                    continue;
                }
                let mut borrowed = Resources::ZERO;
                for r in self.running.iter().filter(|r| r.site == site.id) {
                    for pod in r.pods.iter().filter(|p| p.node == node.name) {
                        let job = demand[&r.job];
                        borrowed += match pod.role {
                            PodRole::Jobmanager => job.job_manager,
                            PodRole::Taskmanager => job.task_manager,
                        };
                    }
                }
                if borrowed != Resources::ZERO && !borrowed.fits_in(&lending.borrowable_on(node)) {
                    out.push(node.name.clone());
                }
            }
        }
        out
    }

    /// dc-b could host every critical job of dc-a should dc-a be lost.
    fn reserve_holds(&self, now: DateTime<Utc>) -> bool {
        let (hosted, critical) = self.critical_hosted_if_dc_a_is_lost(now);
        hosted == critical
    }

    /// dc-a lost: the share of its Critical jobs the survivor hosts.
    fn critical_hosted_if_dc_a_is_lost(&self, now: DateTime<Utc>) -> (usize, usize) {
        let no_failover = BTreeSet::new();
        let inputs = ReportInputs {
            sites: &self.sites,
            jobs: &self.jobs,
            policy: &self.policy,
            running: &self.running,
            no_failover: &no_failover,
            at: now,
            rightsizing: None,
            top_jobs: DEFAULT_TOP_JOBS,
        };
        let baseline = plan_of(&self.running);
        let what_if =
            site_loss_what_if(&inputs, &baseline, &scheduler::model::SiteId("dc-a".into()));
        let critical: Vec<&JobId> = what_if
            .failing_over
            .iter()
            .filter(|id| {
                self.jobs
                    .iter()
                    .any(|j| &j.id == *id && j.priority == Priority::Critical)
            })
            .collect();
        let hosted = critical
            .iter()
            .filter(|id| what_if.plan.placements.iter().any(|p| &p.job == **id))
            .count();
        (hosted, critical.len())
    }
}

/// A plan holding exactly `placements` (what runs), for the validator and the what-if.
fn plan_of(placements: &[JobPlacement]) -> scheduler::placement::PlacementPlan {
    let empty = PlacementPolicy::default();
    let mut p = plan(&request(&[], &[], &empty, &[]));
    p.placements = placements.to_vec();
    p.placements.sort_by(|a, b| a.job.cmp(&b.job));
    p
}

#[test]
fn over_two_days_windows_and_usage_move_and_every_rule_holds_at_every_step() {
    let mut w = world(5);
    let rules = RebalancePolicy {
        lead_time: LEAD.to_std().unwrap(),
        moves_per_hour: MOVES_PER_HOUR,
    };
    let lending = w.policy.pools[0].offline.clone().unwrap();
    let offline = w.offline();
    let mut moved_at: Vec<DateTime<Utc>> = Vec::new();
    let mut reclaim_moves = 0;
    let mut window_moves = 0;
    let mut most_borrowed = 0;
    let mut now = start();
    let end = start() + TimeDelta::days(2);
    let mut reserve_checked = 0;
    while now < end {
        w.measure_usage(now);
        let reserve_held = w.reserve_holds(now);
        let in_dc_b_before: BTreeSet<JobId> = w
            .running
            .iter()
            .filter(|r| r.site.0 == "dc-b")
            .map(|r| r.job.clone())
            .collect();
        w.place_pending(rules, now);
        let p = plan_rebalance(&RebalanceRequest {
            sites: &w.sites,
            jobs: &w.jobs,
            policy: &w.policy,
            rebalance: rules,
            running: &w.running,
            at: now,
            recent_moves: &moved_at,
        });
        for m in &p.moves {
            assert!(!m.reason.is_empty(), "at {now}: a move without a reason");
            if m.reason.contains("needs its capacity back") {
                reclaim_moves += 1;
            } else {
                window_moves += 1;
            }
            let slot = w.running.iter_mut().find(|r| r.job == m.job).unwrap();
            *slot = m.to.clone();
            moved_at.push(now);
        }
        // A stuck job is taken off borrowed capacity by stopping it, as an operator would
        // after the report; it is placed again when room allows.
        for s in &p.stuck {
            w.running.retain(|r| r.job != s.job);
        }
        let in_last_hour = moved_at
            .iter()
            .filter(|&&t| t > now - TimeDelta::hours(1))
            .count();
        assert!(
            in_last_hour <= MOVES_PER_HOUR as usize,
            "at {now}: {in_last_hour} moves in an hour"
        );

        let deadline_passed = match lending_at(&lending, now) {
            Lending::Closed => true,
            Lending::Until(close) => close - LEAD <= now,
            Lending::Beyond => false,
        };
        let mut borrowed = 0;
        for r in &w.running {
            for pod in &r.pods {
                if offline.contains(&(r.site.0.clone(), pod.node.clone())) {
                    borrowed += 1;
                    assert!(
                        pod.role != PodRole::Jobmanager,
                        "at {now}: JobManager of {} on {}",
                        r.job,
                        pod.node
                    );
                    assert!(
                        !deadline_passed,
                        "at {now}: {} still on offline {}",
                        r.job, pod.node
                    );
                }
            }
        }
        most_borrowed = most_borrowed.max(borrowed);
        let over = w.over_lent_nodes();
        assert!(
            over.is_empty() || !p.waiting.is_empty(),
            "at {now}: {over:?} lend more than they can and the rebalancer lists nobody waiting"
        );
        // No hard rule broken by what runs (capacity, taints, quotas, borrow caps).
        let mut req = request(&w.sites, &w.jobs, &w.policy, &w.running);
        req.at = now;
        let kept = plan_of(&w.running);
        let broken: Vec<_> = validate_plan(&req, &kept)
            .into_iter()
            .filter(|v| !matches!(v.kind, scheduler::placement::ViolationKind::JobMissing))
            // Over a cap only while waiting for the budget (checked above).
            .filter(|v| {
                let over_cap = matches!(
                    v.kind,
                    scheduler::placement::ViolationKind::BorrowCapExceeded
                );
                !over_cap || p.waiting.is_empty()
            })
            .collect();
        assert!(broken.is_empty(), "at {now}: {broken:#?}");
        // The reserve: dc-b keeps room for dc-a's critical jobs. It may fall short because
        // critical work grew, never because a lower tier took its room.
        if reserve_held && !w.reserve_holds(now) {
            let lower_entered: Vec<&JobId> = w
                .running
                .iter()
                .filter(|r| r.site.0 == "dc-b" && !in_dc_b_before.contains(&r.job))
                .filter(|r| {
                    w.jobs
                        .iter()
                        .any(|j| j.id == r.job && j.priority < Priority::Critical)
                })
                .map(|r| &r.job)
                .collect();
            assert!(
                lower_entered.is_empty(),
                "at {now}: {lower_entered:?} (below critical) entered dc-b and took the room reserved for dc-a's critical jobs"
            );
        }
        reserve_checked += 1;
        now += STEP;
    }
    assert!(
        most_borrowed > 10,
        "the fleet borrowed: at most {most_borrowed} pods"
    );
    assert!(window_moves > 5, "window closes moved jobs: {window_moves}");
    assert!(
        reclaim_moves > 0,
        "the batch surge reclaimed capacity: {reclaim_moves}"
    );
    assert_eq!(reserve_checked, 2 * 24 * 12);
    eprintln!(
        "two days: {} moves ({window_moves} for closing windows, {reclaim_moves} for batch surges), at most {most_borrowed} borrowed pods",
        moved_at.len()
    );
}
