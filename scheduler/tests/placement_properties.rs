//! Invariants of every plan, over random small clusters, jobs and policies: whatever the
//! input, the independent validator finds no broken rule, every job is listed exactly once,
//! and the same input gives the same plan, fresh or incremental.

mod placement_fixtures;

use placement_fixtures::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::k8s::TaintEffect;
use scheduler::model::{
    JobDemand, JobPlacement, LendBasis, PlacementPolicy, PodRole, Priority, Resources, SiteSnapshot,
};
use scheduler::placement::{plan, validate_plan};

struct Scenario {
    sites: Vec<SiteSnapshot>,
    jobs: Vec<JobDemand>,
    policy: PlacementPolicy,
    at_night: bool,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let site_names = ["dc-a", "dc-b"];
    let mut sites = Vec::new();
    for s in site_names {
        let mut nodes = Vec::new();
        let mut foreign = Vec::new();
        for i in 0..rng.random_range(1..=5) {
            let name = format!("{s}-n{i}");
            let mut b = NodeBuilder::new(&name)
                .cpu(rng.random_range(2..=16) * 1_000)
                .mem_gi(rng.random_range(4..=64))
                .pods(rng.random_range(2..=10));
            match rng.random_range(0..3) {
                0 => b = b.label("disk", "ssd"),
                1 => b = b.label("disk", "hdd"),
                _ => {}
            }
            match rng.random_range(0..6) {
                0 => b = b.taint("dedicated", "gpu", TaintEffect::NoSchedule),
                1 => b = b.taint("spot", "true", TaintEffect::PreferNoSchedule),
                2 => b = b.taint("maint", "now", TaintEffect::NoExecute),
                _ => {}
            }
            if rng.random_bool(0.1) {
                b = b.cordoned();
            }
            if rng.random_bool(0.1) {
                b = b.not_ready();
            }
            if rng.random_bool(0.25) {
                b = b.label("pool", "hdfs");
            }
            // What the node's own batch workload uses now; read when the pool lends by usage.
            if rng.random_bool(0.7) {
                b = b.owner_usage(rng.random_range(0..=16) * 1_000, rng.random_range(0..=64));
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
    for i in 0..rng.random_range(1..=8) {
        let mut b = JobBuilder::new(&format!("ns/job-{i}"))
            .tenant(["a", "b"][rng.random_range(0..2)])
            .priority(Priority::ALL[rng.random_range(0..4)])
            .jm(rng.random_range(1..=4) * 500, rng.random_range(1..=4))
            .tm(rng.random_range(1..=8) * 500, rng.random_range(1..=8))
            .tms(rng.random_range(0..=4));
        match rng.random_range(0..4) {
            0 => b = b.allowed(&["dc-a"]),
            1 => b = b.allowed(&["dc-b"]),
            _ => {}
        }
        if rng.random_bool(0.5) {
            b = b.preferred(site_names[rng.random_range(0..2)]);
        }
        if rng.random_bool(0.3) {
            b = b.selector("disk", "ssd");
        }
        if rng.random_bool(0.3) {
            b = b.tolerate("dedicated", "gpu", TaintEffect::NoSchedule);
        }
        if rng.random_bool(0.5) {
            b = b.allow_offline();
        }
        jobs.push(b.obj());
    }
    let mut pool = offline_pool();
    if rng.random_bool(0.5)
        && let Some(lending) = pool.offline.as_mut()
    {
        lending.lend_by = LendBasis::Usage;
    }
    let mut policy = PlacementPolicy {
        pools: vec![pool],
        ..Default::default()
    };
    if rng.random_bool(0.5) {
        policy.quotas.push(quota(
            "a",
            "dc-a",
            rng.random_range(2..=20) * 1_000,
            rng.random_range(4..=64),
        ));
    }
    if rng.random_bool(0.5) {
        policy
            .reserves
            .push(reserve("dc-b", "dc-a", Priority::High));
    }
    Scenario {
        sites,
        jobs,
        policy,
        at_night: rng.random_bool(0.5),
    }
}

/// Checked here from the policy's words, not through the planner's or validator's code: on a
/// node of a pool lending by usage, what our pods request stays within what the node's own
/// workload leaves unused minus the margin, and an unmeasured node holds none of our pods.
fn borrowing_stays_within_what_each_node_lends(
    s: &Scenario,
    placements: &[JobPlacement],
) -> Result<(), TestCaseError> {
    let lending = s.policy.pools[0].offline.as_ref().expect("an offline pool");
    if lending.lend_by != LendBasis::Usage {
        return Ok(());
    }
    for site in &s.sites {
        for node in site
            .nodes
            .iter()
            .filter(|n| n.labels.get("pool").is_some_and(|p| p == "hdfs"))
        {
            let mut borrowed = Resources::ZERO;
            for placement in placements.iter().filter(|p| p.site == site.id) {
                let job = s
                    .jobs
                    .iter()
                    .find(|j| j.id == placement.job)
                    .expect("a placed job");
                for pod in placement.pods.iter().filter(|p| p.node == node.name) {
                    borrowed += match pod.role {
                        PodRole::Jobmanager => job.job_manager,
                        PodRole::Taskmanager => job.task_manager,
                    };
                }
            }
            if borrowed == Resources::ZERO {
                continue;
            }
            let usage = node.owner_usage.ok_or_else(|| {
                TestCaseError::fail(format!(
                    "{} has no usage measurement yet lends {borrowed}",
                    node.name
                ))
            })?;
            let left_cpu =
                node.allocatable.cpu_milli - usage.cpu_milli - lending.safety_margin.cpu_milli;
            let left_mem = node.allocatable.memory_bytes
                - usage.memory_bytes
                - lending.safety_margin.memory_bytes;
            prop_assert!(
                borrowed.cpu_milli <= left_cpu && borrowed.memory_bytes <= left_mem,
                "{} lends {borrowed} while its own workload leaves {left_cpu}m and {left_mem} bytes",
                node.name
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_plan_breaks_a_hard_rule_and_every_job_is_listed_once(seed in any::<u64>()) {
        let s = scenario(seed);
        let mut req = request(&s.sites, &s.jobs, &s.policy, &[]);
        if s.at_night { req.at = night(); }
        let p = plan(&req);
        let violations = validate_plan(&req, &p);
        prop_assert!(violations.is_empty(), "{violations:#?}");
        prop_assert_eq!(p.placements.len() + p.unplaced.len(), s.jobs.len());
        borrowing_stays_within_what_each_node_lends(&s, &p.placements)?;
    }

    #[test]
    fn the_same_input_always_gives_the_same_plan(seed in any::<u64>()) {
        let s = scenario(seed);
        let req = request(&s.sites, &s.jobs, &s.policy, &[]);
        prop_assert_eq!(plan(&req), plan(&req));
    }

    #[test]
    fn replanning_after_the_cluster_changes_breaks_no_rule(seed in any::<u64>(), change in 0usize..4) {
        let s = scenario(seed);
        let first = plan(&request(&s.sites, &s.jobs, &s.policy, &[]));
        let running = first.placements.clone();
        // Change the world under the running jobs: cordon, taint or lose a node, or the window.
        let mut sites = s.sites.clone();
        let mut at = noon();
        match change {
            0 => if let Some(n) = sites[0].nodes.first_mut() { n.unschedulable = true },
            1 => if let Some(n) = sites[1].nodes.first_mut() {
                n.taints.push(scheduler::k8s::Taint { key: "x".into(), value: "y".into(), effect: TaintEffect::NoExecute });
            },
            2 => { sites[0].nodes.pop(); }
            _ => at = night(),
        }
        let mut req = request(&sites, &s.jobs, &s.policy, &running);
        req.at = at;
        let p = plan(&req);
        let violations = validate_plan(&req, &p);
        prop_assert!(violations.is_empty(), "{violations:#?}");
        prop_assert_eq!(p.placements.len() + p.unplaced.len(), s.jobs.len());
        prop_assert_eq!(&p, &plan(&req));
        // Nothing moves without a reported reason.
        for before in &running {
            if let Some(now) = p.placements.iter().find(|x| x.job == before.job)
                && now != before
            {
                prop_assert!(p.moves.iter().any(|m| m.job == before.job && !m.reason.is_empty()),
                    "{} changed without a move", before.job);
            }
        }
    }
}
