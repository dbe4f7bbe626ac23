//! Placement benchmark: prints figures, asserts nothing.
//!
//! `cargo run -p twinsite-scheduler --release --bin placement-bench -- [seed] [milp-budget-secs] [max-tms]`
//! `cargo run -p twinsite-scheduler --release --bin placement-bench -- --generated [--jobs N] [--nodes-per-site N] [--skip-milp] [seed] [milp-budget-secs]`
//! (`--help` lists the options)
//! (the second reads `scheduler::generate`'s 2×1000 nodes / 1000 jobs through the real parsers)
//!
//! A synthetic 2-site × 1000-node cluster with 1000 jobs (≈20k pods) near capacity: heuristic
//! wall time, MILP improvement under a budget, nodes used against a lower bound, one extra
//! job placed incrementally (p50/p99), and peak memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::TimeZone;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::k8s::{Taint, TaintEffect, Toleration, TolerationOperator};
use scheduler::model::{
    FailoverReserve, JobDemand, JobId, LendingWindow, Node, NodePool, OfflineLending,
    PlacementPolicy, Priority, Resources, RunningPod, SiteConstraint, SiteId, SiteSnapshot,
    TenantId, TenantQuota,
};
use scheduler::placement::{
    IncrementalPlacer, PlacementOptions, PlacementPlan, PlacementRequest, SolverChoice, plan,
    validate_plan,
};

const GI: i64 = 1024 * 1024 * 1024;

fn cluster(rng: &mut ChaCha8Rng, sites: &[&str], nodes_per_site: usize) -> Vec<SiteSnapshot> {
    sites
        .iter()
        .map(|s| {
            let mut nodes = Vec::new();
            let mut pods = Vec::new();
            for i in 0..nodes_per_site {
                let name = format!("{s}-node-{i:04}");
                let roll = rng.random_range(0..100);
                let (cpu, mem, offline) = match roll {
                    0..60 => (32_000, 128, false),
                    60..90 => (64_000, 256, false),
                    _ => (48_000, 192, true),
                };
                let mut labels = BTreeMap::new();
                labels.insert("kubernetes.io/hostname".to_string(), name.clone());
                labels.insert("zone".to_string(), format!("{s}-z{}", i % 3));
                labels.insert(
                    "disk".to_string(),
                    if rng.random_bool(0.3) { "ssd" } else { "hdd" }.to_string(),
                );
                if offline {
                    labels.insert("pool".to_string(), "hdfs".to_string());
                }
                let mut taints = Vec::new();
                let t = rng.random_range(0..100);
                if t < 5 {
                    taints.push(Taint {
                        key: "dedicated".into(),
                        value: "gpu".into(),
                        effect: TaintEffect::NoSchedule,
                    });
                } else if t < 8 {
                    taints.push(Taint {
                        key: "spot".into(),
                        value: "true".into(),
                        effect: TaintEffect::PreferNoSchedule,
                    });
                }
                if rng.random_bool(0.3) {
                    pods.push(RunningPod {
                        namespace: "kube-system".into(),
                        name: format!("daemon-{name}"),
                        node: name.clone(),
                        request: Resources::new(
                            rng.random_range(1..=8) * 1_000,
                            rng.random_range(2..=32) * GI,
                            1,
                        ),
                    });
                }
                nodes.push(Node {
                    owner_usage: None,
                    name,
                    labels,
                    taints,
                    unschedulable: rng.random_bool(0.01),
                    ready: !rng.random_bool(0.005),
                    allocatable: Resources::new(cpu, mem * GI, 110),
                });
            }
            SiteSnapshot {
                id: SiteId(s.to_string()),
                nodes,
                running_pods: pods,
            }
        })
        .collect()
}

fn job(rng: &mut ChaCha8Rng, i: usize, prefix: &str, tm_max: u32) -> JobDemand {
    let sites = ["dc-a", "dc-b"];
    let priority = match rng.random_range(0..100) {
        0..10 => Priority::Critical,
        10..35 => Priority::High,
        35..80 => Priority::Normal,
        _ => Priority::BestEffort,
    };
    let mut tolerations = Vec::new();
    if rng.random_bool(0.05) {
        tolerations.push(Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Equal,
            value: "gpu".into(),
            effect: Some(TaintEffect::NoSchedule),
            toleration_seconds: None,
        });
    }
    let mut node_selector = BTreeMap::new();
    if rng.random_bool(0.1) {
        node_selector.insert("disk".to_string(), "ssd".to_string());
    }
    let allowed = match rng.random_range(0..10) {
        0 => vec![SiteId("dc-a".into())],
        1 => vec![SiteId("dc-b".into())],
        _ => Vec::new(),
    };
    JobDemand {
        id: JobId(format!("{prefix}-{:02}/job-{i:04}", i % 20)),
        tenant: TenantId(format!("tenant-{}", i % 8)),
        priority,
        job_manager: Resources::new(1_000, rng.random_range(2..=4) * GI, 1),
        task_manager: Resources::new(
            rng.random_range(1..=4) * 1_000,
            rng.random_range(2..=8) * 2 * GI,
            1,
        ),
        task_managers: rng.random_range(5..=tm_max.max(5)),
        sites: SiteConstraint {
            preferred: Some(SiteId(sites[rng.random_range(0..2)].into())),
            allowed,
        },
        node_selector,
        node_affinity: None,
        tolerations,
        allow_offline: rng.random_bool(0.3),
    }
}

fn policy() -> PlacementPolicy {
    PlacementPolicy {
        pools: vec![NodePool {
            name: "hdfs".into(),
            site: None,
            selector: [("pool".to_string(), "hdfs".to_string())].into(),
            offline: Some(OfflineLending {
                windows: vec![LendingWindow {
                    days: vec![
                        chrono::Weekday::Mon,
                        chrono::Weekday::Tue,
                        chrono::Weekday::Wed,
                        chrono::Weekday::Thu,
                        chrono::Weekday::Fri,
                    ],
                    start_minute: 60,
                    end_minute: 420,
                    timezone: chrono_tz::Asia::Shanghai,
                }],
                max_borrow_fraction: 0.5,
                safety_margin: Resources::new(2_000, 8 * GI, 0),
                lend_by: Default::default(),
            }),
        }],
        quotas: (0..2)
            .map(|t| TenantQuota {
                tenant: TenantId(format!("tenant-{t}")),
                site: SiteId("dc-a".into()),
                limit: Resources::new(6_000_000, 20_000 * GI, i64::MAX),
            })
            .collect(),
        reserves: vec![FailoverReserve {
            site: SiteId("dc-b".into()),
            protects: SiteId("dc-a".into()),
            min_priority: Priority::Critical,
        }],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Time this thread spent on a CPU (`/proc/thread-self/schedstat`): what a plan costs when
/// other processes share the cores, where wall time also counts the waiting.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type Input = (Vec<SiteSnapshot>, Vec<JobDemand>, PlacementPolicy);

/// Times of reading the generated input through the real parsers.
struct ParseTimes {
    nodes: Duration,
    policy: Duration,
    jobs: Duration,
    jobs_bytes: usize,
}

fn generated(seed: u64, scale: &Scale) -> Result<(Input, ParseTimes), String> {
    use scheduler::generate::{GenerateParams, generate};
    use scheduler::input::{
        kube_objects::parse_node_list, policy::parse_policy, streamjob::parse_stream_jobs,
    };
    let g = generate(&GenerateParams {
        sites: 2,
        nodes_per_site: scale.nodes_per_site,
        jobs: scale.jobs,
        seed,
    })
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut sites = Vec::new();
    for (id, json) in &g.nodes_json {
        let nodes =
            parse_node_list(&format!("{id}-nodes.json"), json).map_err(|e| e.to_string())?;
        sites.push(SiteSnapshot {
            id: id.clone(),
            nodes,
            running_pods: Vec::new(),
        });
    }
    let nodes = t.elapsed();
    let t = Instant::now();
    let policy = parse_policy("policy.yaml", &g.policy_yaml).map_err(|e| e.to_string())?;
    let policy_time = t.elapsed();
    let t = Instant::now();
    let mut jobs = Vec::new();
    for sj in parse_stream_jobs("jobs.yaml", &g.jobs_yaml).map_err(|e| e.to_string())? {
        jobs.push(sj.demand().map_err(|e| e.to_string())?);
    }
    let times = ParseTimes {
        nodes,
        policy: policy_time,
        jobs: t.elapsed(),
        jobs_bytes: g.jobs_yaml.len(),
    };
    Ok(((sites, jobs, policy.placement_policy()), times))
}

/// The size of the bench's cluster and fleet.
struct Scale {
    jobs: u32,
    nodes_per_site: u32,
}

const USAGE: &str = "placement-bench [--generated] [--jobs N] [--nodes-per-site N] [--skip-milp] [seed] [milp-budget-secs] [max-tms]

  --generated         read scheduler::generate's cluster and jobs through the real parsers
                      (kubectl node JSON, policy YAML, StreamJob YAML) and time the parsing
  --jobs N            jobs to place (default 1000)
  --nodes-per-site N  nodes in each of the two sites (default 1000)
  --skip-milp         do not run the MILP solver
  --rebalance         after the plan (placed inside the offline window), step a virtual clock
                      a minute at a time to 30 minutes past the window's close, applying the
                      rebalancer's moves (default lead time and budget): borrowers, moves,
                      stuck jobs, pods left on offline nodes, and the time of each round
  seed                random seed (default 7)
  milp-budget-secs    MILP time budget (default 5)
  max-tms             most TaskManagers per synthetic job (default 35; 60 overloads 2x1000 nodes)";

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let use_generated = args.iter().any(|a| a == "--generated");
    let skip_milp = args.iter().any(|a| a == "--skip-milp");
    let rebalance_figures = args.iter().any(|a| a == "--rebalance");
    args.retain(|a| a != "--generated" && a != "--skip-milp" && a != "--rebalance");
    let mut scale = Scale {
        jobs: 1000,
        nodes_per_site: 1000,
    };
    for (flag, target) in [
        ("--jobs", &mut scale.jobs),
        ("--nodes-per-site", &mut scale.nodes_per_site),
    ] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            match args.get(i + 1).and_then(|v| v.parse().ok()) {
                Some(value) => *target = value,
                None => {
                    eprintln!("{flag} needs a number\n\n{USAGE}");
                    std::process::exit(2);
                }
            }
            args.drain(i..=i + 1);
        }
    }
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    let budget: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    // Most TaskManagers per job: 35 fits the cluster (~21k pods); 60 overloads it.
    let tm_max: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(35);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (sites, jobs, policy) = if use_generated {
        match generated(seed, &scale) {
            Ok((input, times)) => {
                println!(
                    "parse: nodes (kubectl JSON, {} sites) {:?}, policy {:?}, jobs ({} StreamJobs, {:.1} MB YAML, with demands) {:?}; total {:?}",
                    input.0.len(),
                    times.nodes,
                    times.policy,
                    input.1.len(),
                    times.jobs_bytes as f64 / 1e6,
                    times.jobs,
                    times.nodes + times.policy + times.jobs
                );
                input
            }
            Err(e) => {
                eprintln!("generated input failed: {e}");
                std::process::exit(1);
            }
        }
    } else {
        let sites = cluster(&mut rng, &["dc-a", "dc-b"], scale.nodes_per_site as usize);
        let jobs: Vec<JobDemand> = (0..scale.jobs as usize)
            .map(|i| job(&mut rng, i, "ns", tm_max))
            .collect();
        (sites, jobs, policy())
    };
    let mut extra: Vec<JobDemand> = (0..1000).map(|i| job(&mut rng, i, "extra", 35)).collect();
    if use_generated {
        // Extra jobs shaped like the generated ones (rotating through them), renamed.
        for (i, e) in extra.iter_mut().enumerate() {
            let mut twin = jobs[i % jobs.len()].clone();
            twin.id = JobId(format!("extra/job-{i:04}"));
            *e = twin;
        }
    }
    // Wednesday 02:00 Asia/Shanghai: the offline window is open.
    let at = chrono::Utc
        .with_ymd_and_hms(2026, 11, 17, 18, 0, 0)
        .single()
        .unwrap_or_default();
    let pods: u64 = jobs.iter().map(|j| 1 + u64::from(j.task_managers)).sum();
    let mut req = PlacementRequest {
        sites: &sites,
        jobs: &jobs,
        policy: &policy,
        running: &[],
        at,
        options: PlacementOptions::default(),
    };
    println!(
        "cluster ({}): {} sites, {} nodes, {} jobs, {pods} pods, seed {seed}",
        if use_generated {
            "scheduler::generate"
        } else {
            "bench synthetic"
        },
        sites.len(),
        sites.iter().map(|s| s.nodes.len()).sum::<usize>(),
        jobs.len()
    );

    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    let mut heuristic = plan(&req);
    for _ in 0..5 {
        let t = Instant::now();
        let cpu = thread_cpu_time();
        heuristic = plan(&req);
        times.push(t.elapsed());
        if let (Some(before), Some(after)) = (cpu, thread_cpu_time()) {
            cpu_times.push(after.saturating_sub(before));
        }
    }
    times.sort();
    cpu_times.sort();
    println!(
        "heuristic full plan: median {:?}, min {:?} (5 runs; on-CPU median {}); placed {} / unplaced {}; objective {:.1}; violations {}",
        times[2],
        times[0],
        cpu_times
            .get(cpu_times.len() / 2)
            .map_or("unavailable".to_string(), |d| format!("{d:?}")),
        heuristic.placements.len(),
        heuristic.unplaced.len(),
        heuristic.solver.objective,
        validate_plan(&req, &heuristic).len()
    );
    println!(
        "plan digest: {:016x} (placements, unplaced, moves; equal digests are equal plans)",
        plan_digest(&heuristic)
    );
    for u in heuristic.unplaced.iter().take(3) {
        println!("  e.g. unplaced {}: {}", u.job, u.reason);
    }
    for (site, r) in &heuristic.reserve {
        println!(
            "  reserve {site}: holds {}, needed {}, missing {}, {} jobs not fitting",
            r.holds,
            r.needed,
            r.missing,
            r.jobs_not_fitting.len()
        );
    }

    // Nodes used against a lower bound (placed demand / largest node, per dimension).
    let by_id: BTreeMap<&JobId, &JobDemand> = jobs.iter().map(|j| (&j.id, j)).collect();
    let used: BTreeSet<(&SiteId, &str)> = heuristic
        .placements
        .iter()
        .flat_map(|p| p.pods.iter().map(move |x| (&p.site, x.node.as_str())))
        .collect();
    let demand = heuristic
        .placements
        .iter()
        .filter_map(|p| by_id.get(&p.job))
        .fold(Resources::ZERO, |a, j| a + j.total());
    let largest =
        sites
            .iter()
            .flat_map(|s| s.nodes.iter())
            .fold(Resources::new(1, 1, 1), |a, n| {
                Resources::new(
                    a.cpu_milli.max(n.allocatable.cpu_milli),
                    a.memory_bytes.max(n.allocatable.memory_bytes),
                    a.pods.max(n.allocatable.pods),
                )
            });
    let lb_cpu = (demand.cpu_milli + largest.cpu_milli - 1) / largest.cpu_milli;
    let lb_mem = (demand.memory_bytes + largest.memory_bytes - 1) / largest.memory_bytes;
    let lb_pods = (demand.pods + largest.pods - 1) / largest.pods;
    println!(
        "nodes used: {} (lower bound cpu {lb_cpu}, memory {lb_mem}, pods {lb_pods}; TaskManager spreading trades packing for blast radius)",
        used.len()
    );

    if rebalance_figures {
        window_close_figures(&req, &heuristic);
    }

    if skip_milp {
        println!("milp: skipped");
    } else {
        milp_figures(&mut req, budget, &heuristic);
    }

    req.options.solver = SolverChoice::Heuristic;
    let mut placer = IncrementalPlacer::new(&req, &heuristic.placements);
    let mut samples = Vec::with_capacity(extra.len());
    let mut placed = 0;
    for j in &extra {
        let t = Instant::now();
        let r = placer.place_one(j);
        samples.push(t.elapsed());
        if r.is_ok() {
            placed += 1;
            placer.remove(&j.id);
        }
    }
    samples.sort();
    println!(
        "place_one over {} trials: p50 {:?}, p99 {:?}, max {:?} ({placed} placed)",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    match peak_memory_kib() {
        Some(k) => println!("peak memory (VmHWM): {:.1} MiB", k as f64 / 1024.0),
        None => println!("peak memory: unavailable"),
    }
}

/// Moves needed and made around the offline window's close, with the production rebalancer.
fn window_close_figures(req: &PlacementRequest<'_>, planned: &PlacementPlan) {
    use scheduler::model::RebalancePolicy;
    use scheduler::placement::rebalance::{RebalanceRequest, plan_rebalance};
    let rules = RebalancePolicy::default();
    let offline: BTreeSet<(&SiteId, &str)> = req
        .sites
        .iter()
        .flat_map(|s| {
            s.nodes
                .iter()
                .filter(|n| {
                    req.policy
                        .pools
                        .iter()
                        .find(|p| p.matches(&s.id, n))
                        .is_some_and(|p| p.offline.is_some())
                })
                .map(move |n| (&s.id, n.name.as_str()))
        })
        .collect();
    let borrowers = |running: &[scheduler::model::JobPlacement]| {
        running
            .iter()
            .filter(|p| {
                p.pods
                    .iter()
                    .any(|pod| offline.contains(&(&p.site, pod.node.as_str())))
            })
            .count()
    };
    let mut running = planned.placements.clone();
    let at_start = borrowers(&running);
    let mut moved_at: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    let mut stuck: BTreeSet<JobId> = BTreeSet::new();
    let mut rounds: Vec<Duration> = Vec::new();
    let mut first_move = None;
    let mut now = req.at;
    let end = req.at + chrono::TimeDelta::hours(6);
    let mut closed_at = None;
    while now <= end {
        let t = Instant::now();
        let p = plan_rebalance(&RebalanceRequest {
            sites: req.sites,
            jobs: req.jobs,
            policy: req.policy,
            rebalance: rules,
            running: &running,
            at: now,
            recent_moves: &moved_at,
        });
        rounds.push(t.elapsed());
        for m in p.moves {
            first_move.get_or_insert(now);
            if let Some(slot) = running.iter_mut().find(|r| r.job == m.job) {
                *slot = m.to;
            }
            moved_at.push(now);
        }
        stuck.extend(p.stuck.into_iter().map(|s| s.job));
        let open = req
            .policy
            .pools
            .iter()
            .filter_map(|p| p.offline.as_ref())
            .any(|l| l.is_open_at(now));
        if !open && closed_at.is_none() {
            closed_at = Some(now);
        }
        if closed_at.is_some_and(|c| now >= c + chrono::TimeDelta::minutes(30)) {
            break;
        }
        now += chrono::TimeDelta::minutes(1);
    }
    rounds.sort();
    println!(
        "window close (lead {:?}, {} moves/hour): {at_start} jobs borrowing at {}; window closed {}; first move {}; {} moves made, {} jobs stuck, {} jobs still on offline nodes 30 min after the close",
        rules.lead_time,
        rules.moves_per_hour,
        req.at,
        closed_at.map_or("not within 6h".to_string(), |c| c.to_string()),
        first_move.map_or("none".to_string(), |t| t.to_string()),
        moved_at.len(),
        stuck.len(),
        borrowers(&running),
    );
    println!(
        "rebalance round ({} rounds, one a minute): median {:?}, p99 {:?}, max {:?}",
        rounds.len(),
        percentile(&rounds, 0.5),
        percentile(&rounds, 0.99),
        rounds[rounds.len() - 1]
    );
}

/// A fingerprint of what a plan decides, to compare the plans of two builds.
fn plan_digest(plan: &PlacementPlan) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let decided =
        serde_json::to_string(&(&plan.placements, &plan.unplaced, &plan.moves)).unwrap_or_default();
    decided.hash(&mut hasher);
    hasher.finish()
}

/// The MILP solver's plan under `budget`, against the heuristic's.
fn milp_figures(req: &mut PlacementRequest<'_>, budget: f64, heuristic: &PlacementPlan) {
    req.options.solver = SolverChoice::Milp {
        budget: Duration::from_secs_f64(budget),
    };
    let t = Instant::now();
    let milp = plan(req);
    let milp_time = t.elapsed();
    println!(
        "milp (budget {budget}s): {:?}; solver {:?}, status {}, objective {:.1} (heuristic {:.1}, {:+.2}%), bound {}, placed {}, violations {}",
        milp_time,
        milp.solver.solver,
        milp.solver.status,
        milp.solver.objective,
        heuristic.solver.objective,
        100.0 * (milp.solver.objective - heuristic.solver.objective)
            / heuristic.solver.objective.max(1e-9),
        milp.solver.bound.map_or("unknown".to_string(), |b| format!(
            "{b:.1} (heuristic gap {:.2}%)",
            100.0 * (b - heuristic.solver.objective) / b.max(1e-9)
        )),
        milp.placements.len(),
        validate_plan(req, &milp).len()
    );
}
