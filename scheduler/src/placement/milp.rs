//! MILP improvement of the heuristic plan (good_lp + HiGHS) on aggregated node pools.
//!
//! Nodes of one site with the same class (labels, taints, pool) and the same allocatable
//! form a pool whose room is summed; a per-pool cap on TaskManagers (how many fit node by
//! node) guards against a pod that fits the sum but no node. Per job: one binary per allowed
//! site, one binary per pool for the JobManager, one integer per pool for the TaskManager
//! count; candidate pools are pruned to feasible classes and, per site, to the roomiest few.
//! Jobs that stay where they run are fixed (their room is taken first). The objective is the
//! placed priority-weighted demand; quotas are exact, reserves are left to the node packer.
//! The solution only chooses sites and which jobs to place; the heuristic's packer then puts
//! pods on nodes, and the result is kept only if it is valid and strictly better, tier by
//! tier, than the heuristic alone. The heuristic plan is passed to HiGHS as a MIP start, and
//! HiGHS's dual bound (plus the fixed jobs) is reported: the model relaxes node packing and
//! reserves, so it bounds every plan.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use good_lp::{Expression, ProblemVariables, SolverModel, Variable, constraint, variable};

use super::heuristic::plan_heuristic;
use super::state::{Capacity, Cluster};
use super::{
    PlacementPlan, PlacementRequest, SolverKind, SolverReport, demand_units, objective_of,
    priority_weight, validate_plan,
};
use crate::model::{JobDemand, JobId, PodRole, Priority, Resources, SiteId};

/// Pools kept per job and site (the roomiest feasible ones).
const POOLS_PER_SITE: usize = 6;

struct Pool {
    site: usize,
    nodes: Vec<usize>,
    room: Resources,
    offline: bool,
}

pub(crate) fn improve(
    req: &PlacementRequest,
    heuristic: PlacementPlan,
    budget: Duration,
) -> PlacementPlan {
    if heuristic.solver.status == "optimal" {
        return heuristic;
    }
    match solve(req, &heuristic, budget) {
        Err(e) => with_status(heuristic, format!("milp-failed: {e}"), None),
        Ok((hint, bound, status)) => {
            let candidate = plan_heuristic(req, Some(&hint));
            let better = tier_vector(req, &candidate) > tier_vector(req, &heuristic);
            if better && validate_plan(req, &candidate).is_empty() {
                let objective = objective_of(req, &candidate);
                PlacementPlan {
                    solver: SolverReport {
                        solver: SolverKind::Milp,
                        objective,
                        bound,
                        status,
                    },
                    ..candidate
                }
            } else {
                with_status(heuristic, "not-improved".to_string(), bound)
            }
        }
    }
}

fn with_status(mut plan: PlacementPlan, status: String, bound: Option<f64>) -> PlacementPlan {
    plan.solver.status = status;
    if bound.is_some() {
        plan.solver.bound = bound;
    }
    plan
}

type Hint = BTreeMap<JobId, Option<SiteId>>;

/// Jobs the heuristic left exactly where they run: fixed, their room taken first.
struct Fixed<'r> {
    site_of: BTreeMap<&'r JobId, usize>,
    /// Their priority-weighted demand, added to the model's bound.
    value: f64,
    /// Quota they use, per (tenant, site).
    used_quota: HashMap<(&'r str, usize), Resources>,
}

/// One free job's columns: a binary per allowed site, per pool a JobManager binary and a
/// TaskManager count.
struct JobVars<'j> {
    job: &'j JobDemand,
    sites: Vec<(usize, Variable)>,
    /// Column of each site binary, in `sites` order.
    site_cols: Vec<usize>,
    jm: Vec<(usize, Variable)>,
    tm: Vec<(usize, Variable)>,
}

/// The model's columns, with the heuristic's plan as their start.
struct Columns<'j> {
    vars: ProblemVariables,
    initial: Vec<f64>,
    objective: Expression,
    jobs: Vec<JobVars<'j>>,
}

/// Builds the model, solves it within `budget` from the heuristic's start, and reads back
/// which site each job goes to (`None`: not placed), HiGHS's bound and its status.
fn solve(
    req: &PlacementRequest,
    heuristic: &PlacementPlan,
    budget: Duration,
) -> Result<(Hint, Option<f64>, String), String> {
    let cluster = Cluster::new(req);
    let mut cap = Capacity::new(&cluster);
    let fixed = fix_unchanged(req, heuristic, &cluster, &mut cap);
    let pools = pools_of(&cluster, &cap);
    let columns = columns(req, heuristic, &cluster, &cap, &pools, &fixed);
    let Columns {
        vars,
        initial,
        objective,
        jobs: job_vars,
    } = columns;
    let mut model = vars.maximise(objective).using(good_lp::highs);
    add_pool_capacity(&mut model, &job_vars, &pools);
    add_quotas(&mut model, req, &cluster, &job_vars, &fixed);

    let mut highs = model.try_into_inner().map_err(|e| e.to_string())?;
    let secs = budget.as_secs_f64().max(0.05);
    highs
        .try_set_option("time_limit", secs)
        .map_err(|e| format!("time_limit: {e:?}"))?;
    highs
        .try_set_option("mip_rel_gap", 1e-4)
        .map_err(|e| format!("mip_rel_gap: {e:?}"))?;
    highs
        .try_set_option("threads", 1)
        .map_err(|e| format!("threads: {e:?}"))?;
    // A rejected start only costs the warm start, not the solve.
    let _ = highs.try_set_solution(Some(&initial), None, None, None);
    let solved = highs.try_solve().map_err(|e| format!("{e:?}"))?;
    let status_text = format!("{:?}", solved.status());
    let status = match status_text.as_str() {
        "Optimal" => "optimal".to_string(),
        "ReachedTimeLimit" => "time-limit".to_string(),
        other => other.to_lowercase(),
    };
    let bound = trusted_bound(
        req,
        heuristic,
        solved.double_info_value(c"mip_dual_bound").ok(),
        fixed.value,
    );
    let feasible = solved
        .int_info_value(c"primal_solution_status")
        .is_ok_and(|s| s == 2);
    if !feasible {
        return Err(format!("no solution ({status})"));
    }
    let values = solved.get_solution();
    let cols = values.columns();
    let mut hint: Hint = BTreeMap::new();
    for jv in &job_vars {
        let site = jv
            .sites
            .iter()
            .zip(&jv.site_cols)
            .find(|(_, col)| cols.get(**col).is_some_and(|v| *v > 0.5))
            .map(|(&(s, _), _)| cluster.sites[s].id.clone());
        hint.insert(jv.job.id.clone(), site);
    }
    for (id, &s) in &fixed.site_of {
        hint.insert((*id).clone(), Some(cluster.sites[s].id.clone()));
    }
    Ok((hint, bound, status))
}

/// Fixes the jobs the heuristic left exactly where they run, taking their room.
fn fix_unchanged<'r>(
    req: &'r PlacementRequest,
    heuristic: &'r PlacementPlan,
    cluster: &Cluster,
    cap: &mut Capacity,
) -> Fixed<'r> {
    let jobs: BTreeMap<&JobId, &JobDemand> = req.jobs.iter().map(|j| (&j.id, j)).collect();
    let mut fixed = Fixed {
        site_of: BTreeMap::new(),
        value: 0.0,
        used_quota: HashMap::new(),
    };
    for p in &heuristic.placements {
        let Some(job) = jobs.get(&p.job) else {
            continue;
        };
        let unchanged = req.running.iter().any(|r| {
            let mut a = r.pods.clone();
            a.sort();
            r.job == p.job && r.site == p.site && a == p.pods
        });
        let Some(&s) = cluster.site_index.get(&p.site) else {
            continue;
        };
        if !unchanged {
            continue;
        }
        fixed.site_of.insert(&p.job, s);
        fixed.value += priority_weight(job.priority) * demand_units(job);
        *fixed
            .used_quota
            .entry((job.tenant.0.as_str(), s))
            .or_default() += job.total();
        for pod in &p.pods {
            if let Some(&n) = cluster.sites[s].node_by_name.get(pod.node.as_str()) {
                let r = match pod.role {
                    PodRole::Jobmanager => job.job_manager,
                    PodRole::Taskmanager => job.task_manager,
                };
                cap.take(cluster, n, r);
            }
        }
    }
    fixed
}

/// Pools: the nodes of one (site, class, allocatable), with their summed room.
fn pools_of(cluster: &Cluster, cap: &Capacity) -> Vec<Pool> {
    let mut pool_of: BTreeMap<(usize, usize, i64, i64, i64), usize> = BTreeMap::new();
    let mut pools: Vec<Pool> = Vec::new();
    for (n, info) in cluster.nodes.iter().enumerate() {
        let a = info.node.allocatable;
        let key = (info.site, info.class, a.cpu_milli, a.memory_bytes, a.pods);
        let p = *pool_of.entry(key).or_insert_with(|| {
            pools.push(Pool {
                site: info.site,
                nodes: Vec::new(),
                room: Resources::ZERO,
                offline: info.offline,
            });
            pools.len() - 1
        });
        let room = cap.room(cluster, n);
        pools[p].nodes.push(n);
        pools[p].room += Resources::new(
            room.cpu_milli.max(0),
            room.memory_bytes.max(0),
            room.pods.max(0),
        );
    }
    pools
}

/// How many `pod`s fit in `pool`, node by node.
fn per_node_fit(cluster: &Cluster, cap: &Capacity, pool: &Pool, pod: Resources) -> i64 {
    let per = |free: i64, need: i64| {
        if need <= 0 {
            i64::MAX
        } else {
            free.max(0) / need
        }
    };
    pool.nodes
        .iter()
        .map(|&n| {
            let r = cap.room(cluster, n);
            per(r.cpu_milli, pod.cpu_milli)
                .min(per(r.memory_bytes, pod.memory_bytes))
                .min(per(r.pods, pod.pods))
        })
        .fold(0i64, |a, b| a.saturating_add(b))
}

/// The pools of site `s` that may host `job`, roomiest first: (pool, JobManagers that fit,
/// TaskManagers that fit up to the job's count). Empty when the site cannot host the whole
/// job.
fn candidate_pools(
    job: &JobDemand,
    s: usize,
    cluster: &Cluster,
    cap: &Capacity,
    pools: &[Pool],
) -> Vec<(usize, i64, i64)> {
    let k = i64::from(job.task_managers);
    let mut feasible: Vec<(usize, i64, i64)> = Vec::new();
    for (pi, pool) in pools.iter().enumerate().filter(|(_, p)| p.site == s) {
        let Some(&rep) = pool.nodes.first() else {
            continue;
        };
        if cluster.judge_node(job, rep).is_err() {
            continue;
        }
        let jm_fit = if pool.offline {
            0
        } else {
            per_node_fit(cluster, cap, pool, job.job_manager)
        };
        let tm_fit = if k > 0 {
            per_node_fit(cluster, cap, pool, job.task_manager).min(k)
        } else {
            0
        };
        if jm_fit > 0 || tm_fit > 0 {
            feasible.push((pi, jm_fit, tm_fit));
        }
    }
    feasible.sort_by_key(|&(pi, _, tm)| {
        (
            std::cmp::Reverse(tm),
            std::cmp::Reverse(pools[pi].room.cpu_milli),
            pi,
        )
    });
    let mut kept: Vec<(usize, i64, i64)> = feasible.iter().take(POOLS_PER_SITE).copied().collect();
    // Keep the best JobManager pool even when it is not among the roomiest.
    if !kept.iter().any(|&(_, jm, _)| jm > 0)
        && let Some(&best) = feasible.iter().find(|&&(_, jm, _)| jm > 0)
    {
        kept.push(best);
    }
    let total_tm: i64 = kept.iter().map(|&(_, _, t)| t).sum();
    if !kept.iter().any(|&(_, jm, _)| jm > 0) || total_tm < k {
        return Vec::new();
    }
    kept
}

/// The nodes of site `s` the heuristic put `job`'s pods on, by role.
fn heuristic_pods(
    heuristic: &PlacementPlan,
    job: &JobDemand,
    s: usize,
    cluster: &Cluster,
) -> Vec<(PodRole, usize)> {
    heuristic
        .placements
        .iter()
        .find(|p| p.job == job.id)
        .map(|p| {
            p.pods
                .iter()
                .filter_map(|pod| {
                    cluster.sites[s]
                        .node_by_name
                        .get(pod.node.as_str())
                        .map(|&n| (pod.role, n))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every free job's columns, started at the heuristic's plan.
fn columns<'j>(
    req: &'j PlacementRequest,
    heuristic: &PlacementPlan,
    cluster: &Cluster,
    cap: &Capacity,
    pools: &[Pool],
    fixed: &Fixed<'_>,
) -> Columns<'j> {
    let mut out = Columns {
        vars: ProblemVariables::new(),
        initial: Vec::new(),
        objective: Expression::default(),
        jobs: Vec::new(),
    };
    let heuristic_site: BTreeMap<&JobId, &SiteId> = heuristic
        .placements
        .iter()
        .map(|p| (&p.job, &p.site))
        .collect();
    for job in req
        .jobs
        .iter()
        .filter(|j| !fixed.site_of.contains_key(&j.id))
    {
        let mut jv = JobVars {
            job,
            sites: Vec::new(),
            site_cols: Vec::new(),
            jm: Vec::new(),
            tm: Vec::new(),
        };
        let warm_site = heuristic_site
            .get(&job.id)
            .and_then(|s| cluster.site_index.get(*s).copied());
        for (s, site) in cluster.sites.iter().enumerate() {
            if !job.sites.allows(site.id) || cluster.site_index.get(site.id) != Some(&s) {
                continue;
            }
            let kept = candidate_pools(job, s, cluster, cap, pools);
            if kept.is_empty() {
                continue;
            }
            let warm = warm_site == Some(s);
            let start = if warm { 1.0 } else { 0.0 };
            jv.site_cols.push(out.initial.len());
            let z = out.vars.add(variable().binary().initial(start));
            out.initial.push(start);
            out.objective
                .add_mul(priority_weight(job.priority) * demand_units(job), z);
            jv.sites.push((s, z));
            // Warm values per pool from the heuristic's pods.
            let warm_pods = if warm {
                heuristic_pods(heuristic, job, s, cluster)
            } else {
                Vec::new()
            };
            for &(pi, jm_fit, tm_fit) in &kept {
                let in_pool = |role: PodRole| {
                    warm_pods
                        .iter()
                        .filter(|(r, n)| *r == role && pools[pi].nodes.contains(n))
                        .count() as f64
                };
                if jm_fit > 0 {
                    let w = in_pool(PodRole::Jobmanager);
                    jv.jm
                        .push((pi, out.vars.add(variable().binary().initial(w))));
                    out.initial.push(w);
                }
                if tm_fit > 0 {
                    let w = in_pool(PodRole::Taskmanager);
                    let count = variable().integer().min(0).max(tm_fit as f64).initial(w);
                    jv.tm.push((pi, out.vars.add(count)));
                    out.initial.push(w);
                }
            }
        }
        out.jobs.push(jv);
    }
    out
}

/// Each job in at most one site, all of its pods in that site's pools, and every pool's
/// summed room per dimension.
fn add_pool_capacity(model: &mut impl SolverModel, job_vars: &[JobVars<'_>], pools: &[Pool]) {
    let mut pool_use: Vec<[Expression; 3]> = (0..pools.len())
        .map(|_| {
            [
                Expression::default(),
                Expression::default(),
                Expression::default(),
            ]
        })
        .collect();
    for jv in job_vars {
        let job = jv.job;
        let one_site: Expression = jv.sites.iter().map(|&(_, z)| Expression::from(z)).sum();
        model.add_constraint(constraint!(one_site <= 1));
        for &(s, z) in &jv.sites {
            let in_site = |p: usize| pools[p].site == s;
            let jms: Expression = jv
                .jm
                .iter()
                .filter(|(p, _)| in_site(*p))
                .map(|&(_, v)| Expression::from(v))
                .sum();
            model.add_constraint(constraint!(jms == z));
            let tms: Expression = jv
                .tm
                .iter()
                .filter(|(p, _)| in_site(*p))
                .map(|&(_, v)| Expression::from(v))
                .sum();
            let k = f64::from(job.task_managers);
            model.add_constraint(constraint!(tms == k * z));
        }
        for (pods, r) in [(&jv.jm, job.job_manager), (&jv.tm, job.task_manager)] {
            for &(p, v) in pods {
                pool_use[p][0].add_mul(r.cpu_milli as f64 / 1000.0, v);
                pool_use[p][1].add_mul(r.memory_bytes as f64 / super::GIB, v);
                pool_use[p][2].add_mul(r.pods as f64, v);
            }
        }
    }
    for (p, uses) in pool_use.into_iter().enumerate() {
        let room = pools[p].room;
        let [cpu, mem, pods] = uses;
        model.add_constraint(constraint!(cpu <= room.cpu_milli as f64 / 1000.0));
        model.add_constraint(constraint!(mem <= room.memory_bytes as f64 / super::GIB));
        model.add_constraint(constraint!(pods <= room.pods as f64));
    }
}

/// Quotas, exact: the fixed jobs' use is taken off the limit.
fn add_quotas(
    model: &mut impl SolverModel,
    req: &PlacementRequest,
    cluster: &Cluster,
    job_vars: &[JobVars<'_>],
    fixed: &Fixed<'_>,
) {
    for q in &req.policy.quotas {
        let Some(&s) = cluster.site_index.get(&q.site) else {
            continue;
        };
        let used = fixed
            .used_quota
            .get(&(q.tenant.0.as_str(), s))
            .copied()
            .unwrap_or_default();
        let mut cpu = Expression::default();
        let mut mem = Expression::default();
        let mut pods = Expression::default();
        for jv in job_vars.iter().filter(|jv| jv.job.tenant == q.tenant) {
            let t = jv.job.total();
            for &(_, z) in jv.sites.iter().filter(|(site, _)| *site == s) {
                cpu.add_mul(t.cpu_milli as f64 / 1000.0, z);
                mem.add_mul(t.memory_bytes as f64 / super::GIB, z);
                pods.add_mul(t.pods as f64, z);
            }
        }
        let left = q.limit - used;
        model.add_constraint(constraint!(cpu <= left.cpu_milli as f64 / 1000.0));
        model.add_constraint(constraint!(mem <= left.memory_bytes as f64 / super::GIB));
        if q.limit.pods < i64::MAX / 2 {
            model.add_constraint(constraint!(pods <= left.pods as f64));
        }
    }
}

/// HiGHS's dual bound plus the fixed jobs, trusted only when it is consistent: not below
/// the heuristic's objective (a feasible point of the model, since the model relaxes the
/// real rules) and not above placing every job. Under a short budget HiGHS can stop before
/// its root relaxation settles and report a value outside that range; the trivial bound
/// (everything placed) is used then.
fn trusted_bound(
    req: &PlacementRequest,
    heuristic: &PlacementPlan,
    dual_bound: Option<f64>,
    fixed_value: f64,
) -> Option<f64> {
    let everything: f64 = req
        .jobs
        .iter()
        .map(|j| priority_weight(j.priority) * demand_units(j))
        .sum();
    dual_bound
        .map(|b| b + fixed_value)
        .filter(|b| {
            b.is_finite()
                && *b >= heuristic.solver.objective - 1e-6 * everything.max(1.0)
                && *b <= everything * (1.0 + 1e-9)
        })
        .or(Some(everything))
}

/// Placed demand per tier, highest tier first: plans compare lexicographically on it, so a
/// plan never wins by dropping a higher tier's demand.
fn tier_vector(req: &PlacementRequest, plan: &PlacementPlan) -> [i64; 4] {
    let by_id: BTreeMap<&JobId, &JobDemand> = req.jobs.iter().map(|j| (&j.id, j)).collect();
    let mut v = [0i64; 4];
    for p in &plan.placements {
        if let Some(j) = by_id.get(&p.job) {
            let slot = match j.priority {
                Priority::Critical => 0,
                Priority::High => 1,
                Priority::Normal => 2,
                Priority::BestEffort => 3,
            };
            // Milli-units keep the comparison exact enough without floats.
            v[slot] += (demand_units(j) * 1000.0) as i64;
        }
    }
    v
}
