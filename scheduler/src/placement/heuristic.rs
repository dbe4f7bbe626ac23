//! The heuristic placer: running jobs pinned first, then first-fit-decreasing per priority
//! tier over the allowed sites (preferred first), with a gang packer per site, best-effort
//! preemption, and failover reserves held back from lower tiers.
//!
//! Node ranking inside a site, per pod: TaskManagers go to the nodes holding the fewest
//! TaskManagers of the same job (spread, to bound what one node's loss takes down); among
//! those, the best class score (preferred affinity weights minus 100 per PreferNoSchedule
//! taint not tolerated); among those, the tightest fit (least room left, which packs jobs
//! onto busy nodes and leaves empty ones whole). Spread is a ranking, not a rule: when fewer
//! nodes fit than TaskManagers, nodes take several.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::state::{Capacity, Cluster, Filtered, uses_match_fields};
use super::{
    Move, MoveEnd, PlacementPlan, PlacementRequest, Preemption, ReserveReport, ReserveScope,
    SolverKind, SolverReport, Unplaced, objective_of,
};
use crate::model::{
    JobDemand, JobId, JobPlacement, PodPlacement, PodRole, Priority, Resources, SiteId, TenantId,
};

/// One pod of ours on one node (global node index).
pub(crate) type Pod = (PodRole, u32, usize);

#[derive(Clone)]
pub(crate) struct Placed {
    pub site: usize,
    pub pods: Vec<Pod>,
}

/// A running job to re-place (whole, or only the pods in `lost`), and why.
struct Displaced {
    job: usize,
    site: usize,
    old: Vec<Pod>,
    /// Pods to re-place; the others are pinned and committed already. Empty `kept` means the
    /// whole job goes through normal placement.
    lost: Vec<Pod>,
    kept: Vec<Pod>,
    reason: String,
}

pub(crate) struct Engine<'r, 'a> {
    pub req: &'r PlacementRequest<'a>,
    pub cluster: Cluster<'a>,
    pub cap: Capacity,
    pub jobs: Vec<&'a JobDemand>,
    job_index: HashMap<&'a JobId, usize>,
    verdicts: Vec<Option<Vec<Result<i64, Filtered>>>>,
    pub placed: Vec<Option<Placed>>,
    quota_used: BTreeMap<(&'a TenantId, usize), Resources>,
    quota_limit: HashMap<(&'a TenantId, usize), Resources>,
    /// Room held back for failover reserves, per reserving site.
    shadow: Vec<(usize, Resources)>,
    shadow_sites: BTreeSet<usize>,
    reserves_installed: Vec<bool>,
    /// Per installed reserve, the protected jobs its shadow holds room for and those it
    /// could not: the shadow stays intact until the end, so these are final.
    reserve_outcome: BTreeMap<usize, (Vec<usize>, Vec<usize>)>,
    unplaced: BTreeMap<usize, String>,
    preemptions: Vec<Preemption>,
    preempted_by: BTreeMap<usize, usize>,
    moves: Vec<Move>,
    /// Victims evicted by preemption, placed again after everyone else.
    pending_victims: Vec<(usize, Placed)>,
    /// MILP guidance: the site to try first, and jobs the solver left out (tried last).
    hint: Option<&'r BTreeMap<JobId, Option<SiteId>>>,
    /// Jobs placement refuses outright ([`super::refusal`]), with the reason; they never
    /// enter `jobs`, so no step below sizes anything by their pod count.
    refused: Vec<Unplaced>,
    /// The packer's node ranking, kept between calls so it is allocated once.
    rank_scratch: Vec<(i64, i64, usize)>,
}

pub(crate) fn plan_heuristic(
    req: &PlacementRequest,
    hint: Option<&BTreeMap<JobId, Option<SiteId>>>,
) -> PlacementPlan {
    let mut engine = Engine::new(req, hint);
    engine.run();
    let mut plan = engine.into_plan();
    let objective = objective_of(req, &plan);
    let everything: f64 = req
        .jobs
        .iter()
        .map(|j| super::priority_weight(j.priority) * super::demand_units(j))
        .sum();
    let all_placed = plan.unplaced.is_empty() && plan.moves.is_empty();
    plan.solver = SolverReport {
        solver: SolverKind::Heuristic,
        objective,
        bound: all_placed.then_some(everything),
        status: if all_placed { "optimal" } else { "heuristic" }.to_string(),
    };
    plan
}

fn fmt_cpu(milli: i64) -> String {
    if milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        let s = format!("{:.3}", milli as f64 / 1000.0);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn fmt_mem(bytes: i64) -> String {
    let gib = bytes as f64 / super::GIB;
    if (gib - gib.round()).abs() < 1e-9 {
        format!("{} GiB", gib.round() as i64)
    } else {
        format!("{gib:.1} GiB")
    }
}

pub(crate) fn fmt_resources(r: &Resources) -> String {
    format!(
        "{} cpu, {} memory, {} pods",
        fmt_cpu(r.cpu_milli),
        fmt_mem(r.memory_bytes),
        r.pods
    )
}

fn fmt_taint(t: &crate::k8s::Taint) -> String {
    let effect = match t.effect {
        crate::k8s::TaintEffect::NoSchedule => "NoSchedule",
        crate::k8s::TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        crate::k8s::TaintEffect::NoExecute => "NoExecute",
    };
    if t.value.is_empty() {
        format!("{}:{effect}", t.key)
    } else {
        format!("{}={}:{effect}", t.key, t.value)
    }
}

fn pod_request(job: &JobDemand, role: PodRole) -> Resources {
    match role {
        PodRole::Jobmanager => job.job_manager,
        PodRole::Taskmanager => job.task_manager,
    }
}

/// Room left after a pod, normalised per dimension by the node's size (smaller = tighter).
#[inline]
fn leftover(room: Resources, pod: Resources, alloc: Resources) -> i64 {
    let cpu = div_trunc(
        (room.cpu_milli - pod.cpu_milli) * 1024,
        alloc.cpu_milli.max(1),
    );
    let mem = div_trunc(
        room.memory_bytes - pod.memory_bytes,
        (alloc.memory_bytes.max(1) / 1024).max(1),
    );
    cpu + mem
}

/// Integer division rounding toward zero, as `a / b`, for `b > 0`. The packer divides for
/// every node of a site per job, and 64-bit integer division is several times slower than an
/// f64 estimate corrected by one multiplication: the estimate of a quotient of operands below
/// 2^52 is within one of the exact one, and the correction makes it exact.
#[inline]
pub(crate) fn div_trunc(a: i64, b: i64) -> i64 {
    const EXACT: i64 = 1 << 52;
    if !(0..EXACT).contains(&a) || !(1..EXACT).contains(&b) {
        return a / b;
    }
    let mut q = (a as f64 / b as f64) as i64;
    if q * b > a {
        q -= 1;
    } else if (q + 1) * b <= a {
        q += 1;
    }
    q
}

/// Keeps the `k` smallest elements of `items`, sorted: what sorting all of them and keeping
/// the first `k` gives, in linear time plus `k log k`.
pub(crate) fn take_smallest<T: Ord>(items: &mut Vec<T>, k: usize) {
    if k == 0 {
        items.clear();
        return;
    }
    if k < items.len() {
        items.select_nth_unstable(k - 1);
        items.truncate(k);
    }
    items.sort_unstable();
}

fn expected_pods(job: &JobDemand) -> Vec<(PodRole, u32)> {
    let mut v = vec![(PodRole::Jobmanager, 0)];
    v.extend((0..job.task_managers).map(|i| (PodRole::Taskmanager, i)));
    v
}

impl<'r, 'a> Engine<'r, 'a> {
    pub fn new(
        req: &'r PlacementRequest<'a>,
        hint: Option<&'r BTreeMap<JobId, Option<SiteId>>>,
    ) -> Self {
        let cluster = Cluster::new(req);
        let cap = Capacity::new(&cluster);
        let mut jobs: Vec<&'a JobDemand> = Vec::with_capacity(req.jobs.len());
        let mut job_index = HashMap::new();
        let mut refused: Vec<Unplaced> = Vec::new();
        for job in req.jobs {
            // A repeated job id: the first definition wins.
            if job_index.contains_key(&job.id) || refused.iter().any(|r| r.job == job.id) {
                continue;
            }
            if let Some(reason) = super::refusal(job) {
                refused.push(Unplaced {
                    job: job.id.clone(),
                    reason,
                });
                continue;
            }
            job_index.insert(&job.id, jobs.len());
            jobs.push(job);
        }
        let mut quota_limit = HashMap::new();
        for q in &req.policy.quotas {
            if let Some(&s) = cluster.site_index.get(&q.site) {
                quota_limit.entry((&q.tenant, s)).or_insert(q.limit);
            }
        }
        let n = jobs.len();
        Engine {
            req,
            cluster,
            cap,
            jobs,
            job_index,
            verdicts: vec![None; n],
            placed: vec![None; n],
            quota_used: BTreeMap::new(),
            quota_limit,
            shadow: Vec::new(),
            shadow_sites: BTreeSet::new(),
            reserves_installed: vec![false; req.policy.reserves.len()],
            reserve_outcome: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            preemptions: Vec::new(),
            preempted_by: BTreeMap::new(),
            moves: Vec::new(),
            pending_victims: Vec::new(),
            hint,
            refused,
            rank_scratch: Vec::new(),
        }
    }

    pub fn add_job(&mut self, job: &'a JobDemand) -> Option<usize> {
        if self.job_index.contains_key(&job.id) {
            return None;
        }
        self.job_index.insert(&job.id, self.jobs.len());
        self.jobs.push(job);
        self.verdicts.push(None);
        self.placed.push(None);
        Some(self.jobs.len() - 1)
    }

    pub fn job_by_id(&self, id: &JobId) -> Option<usize> {
        self.job_index.get(id).copied()
    }

    fn size_key(&self, j: usize) -> i64 {
        let t = self.jobs[j].total();
        let l = self.cluster.largest;
        let cpu = i128::from(t.cpu_milli) * 1_000_000 / i128::from(l.cpu_milli.max(1));
        let mem = i128::from(t.memory_bytes) * 1_000_000 / i128::from(l.memory_bytes.max(1));
        i64::try_from(cpu.max(mem)).unwrap_or(i64::MAX)
    }

    fn verdicts_of(&mut self, j: usize) -> &[Result<i64, Filtered>] {
        if self.verdicts[j].is_none() {
            let job = self.jobs[j];
            let v = (0..self.cluster.classes.len())
                .map(|c| self.cluster.judge_class(job, c))
                .collect();
            self.verdicts[j] = Some(v);
        }
        self.verdicts[j].as_deref().unwrap_or(&[])
    }

    pub(crate) fn verdict(&mut self, j: usize, node: usize) -> Result<i64, Filtered> {
        if uses_match_fields(self.jobs[j]) {
            return self.cluster.judge_node(self.jobs[j], node);
        }
        let class = self.cluster.nodes[node].class;
        self.verdicts_of(j)[class].clone()
    }

    // ---- quota -------------------------------------------------------------------------

    fn quota_ok_with(
        &self,
        used: &BTreeMap<(&'a TenantId, usize), Resources>,
        j: usize,
        site: usize,
    ) -> bool {
        let job = self.jobs[j];
        match self.quota_limit.get(&(&job.tenant, site)) {
            None => true,
            Some(limit) => {
                let now = used.get(&(&job.tenant, site)).copied().unwrap_or_default();
                (now + job.total()).fits_in(limit)
            }
        }
    }

    /// What the tenant's quota in `site` lacks for `j`, per dimension (zero where it fits).
    pub(crate) fn quota_shortfall(&self, j: usize, site: usize) -> Option<Resources> {
        let job = self.jobs[j];
        let limit = self.quota_limit.get(&(&job.tenant, site))?;
        let now = self
            .quota_used
            .get(&(&job.tenant, site))
            .copied()
            .unwrap_or_default();
        let after = now + job.total();
        if after.fits_in(limit) {
            return None;
        }
        Some(Resources::new(
            (after.cpu_milli - limit.cpu_milli).max(0),
            (after.memory_bytes - limit.memory_bytes).max(0),
            (after.pods - limit.pods).max(0),
        ))
    }

    fn quota_add(&mut self, j: usize, site: usize) {
        let job = self.jobs[j];
        *self.quota_used.entry((&job.tenant, site)).or_default() += job.total();
    }

    fn quota_remove(&mut self, j: usize, site: usize) {
        let job = self.jobs[j];
        if let Some(u) = self.quota_used.get_mut(&(&job.tenant, site)) {
            *u -= job.total();
        }
    }

    // ---- the gang packer -----------------------------------------------------------------

    /// Pods for `need` of job `j` in `site` given `kept` pods already there, against `cap`;
    /// all of them or `None`.
    pub(crate) fn pack(
        &mut self,
        cap: &Capacity,
        j: usize,
        site: usize,
        kept: &[Pod],
        need: &[(PodRole, u32)],
    ) -> Option<Vec<Pod>> {
        if kept.is_empty()
            && let Some(pods) = self.pack_fresh(cap, j, site, need)
        {
            return pods;
        }
        self.pack_spread(cap, j, site, kept, need)
    }

    /// `pack_spread` for a job with no pods in the site yet, in one pass over the site's
    /// nodes, when every TaskManager gets a node of its own (the common case: a job needs a
    /// few dozen, a site has thousands of nodes). Its answer is `pack_spread`'s: the
    /// JobManager on the online node with the best (score, fit, index), then the TaskManagers
    /// on the best-ranked nodes, one each. `None` when they do not get a node each: the
    /// caller then runs `pack_spread`.
    fn pack_fresh(
        &mut self,
        cap: &Capacity,
        j: usize,
        site: usize,
        need: &[(PodRole, u32)],
    ) -> Option<Option<Vec<Pod>>> {
        let job = self.jobs[j];
        let jm_index = need
            .iter()
            .find(|(r, _)| *r == PodRole::Jobmanager)
            .map(|&(_, i)| i);
        let tm_need: Vec<u32> = need
            .iter()
            .filter(|(r, _)| *r == PodRole::Taskmanager)
            .map(|(_, i)| *i)
            .collect();
        let (jm, tm) = (job.job_manager, job.task_manager);
        if !uses_match_fields(job) {
            self.verdicts_of(j);
        }
        let per_class = self.verdicts[j]
            .as_deref()
            .filter(|_| !uses_match_fields(job));
        let cluster = &self.cluster;
        let nodes = &cluster.sites.get(site)?.nodes;
        // (−score, leftover after the JobManager, node) of the best JobManager node so far.
        let mut best_jm: Option<((i64, i64, usize), Resources, i64)> = None;
        let ranks = &mut self.rank_scratch;
        ranks.clear();
        for &n in nodes {
            let room = cap.room(cluster, n);
            let jm_fits = jm_index.is_some() && jm.fits_in(&room);
            let tm_fits = !tm_need.is_empty() && tm.fits_in(&room);
            if !jm_fits && !tm_fits {
                continue;
            }
            let score = match per_class {
                Some(verdicts) => verdicts[cluster.nodes[n].class].as_ref().ok().copied(),
                None => cluster.judge_node(job, n).ok(),
            };
            let Some(score) = score else {
                continue;
            };
            let alloc = cluster.nodes[n].node.allocatable;
            if jm_fits && !cluster.nodes[n].offline {
                let key = (-score, leftover(room, jm, alloc), n);
                if best_jm.is_none_or(|(best, _, _)| key < best) {
                    best_jm = Some((key, room, score));
                }
            }
            if tm_fits {
                ranks.push((-score, leftover(room, tm, alloc), n));
            }
        }
        let mut out = Vec::with_capacity(need.len());
        if let Some(idx) = jm_index {
            let Some(((_, _, node), room, score)) = best_jm else {
                return Some(None);
            };
            out.push((PodRole::Jobmanager, idx, node));
            // The JobManager's node has less room for TaskManagers now.
            if let Some(at) = ranks.iter().position(|&(_, _, n)| n == node) {
                let room = room - jm;
                if tm.fits_in(&room) {
                    let alloc = cluster.nodes[node].node.allocatable;
                    ranks[at] = (-score, leftover(room, tm, alloc), node);
                } else {
                    ranks.swap_remove(at);
                }
            }
        }
        if ranks.len() < tm_need.len() {
            return None;
        }
        take_smallest(ranks, tm_need.len());
        for (&(_, _, node), idx) in ranks.iter().zip(tm_need) {
            out.push((PodRole::Taskmanager, idx, node));
        }
        Some(Some(out))
    }

    /// The general packer: TaskManagers spread level by level over the nodes holding the
    /// fewest of the job's TaskManagers (`kept` counted).
    fn pack_spread(
        &mut self,
        cap: &Capacity,
        j: usize,
        site: usize,
        kept: &[Pod],
        need: &[(PodRole, u32)],
    ) -> Option<Vec<Pod>> {
        let job = self.jobs[j];
        struct Cand {
            node: usize,
            score: i64,
            room: Resources,
            offline: bool,
            tms: u32,
        }
        let smallest =
            if need.iter().any(|(r, _)| *r == PodRole::Jobmanager) && job.task_managers == 0 {
                job.job_manager
            } else {
                super::state::min_res(job.job_manager, job.task_manager)
            };
        // Class verdicts are cached once per job; jobs that select on node names are judged
        // per node. Borrowed immutably from here on, so the site's node list is not copied.
        if !uses_match_fields(job) {
            self.verdicts_of(j);
        }
        let per_class = self.verdicts[j]
            .as_deref()
            .filter(|_| !uses_match_fields(job));
        let cluster = &self.cluster;
        let mut cands: Vec<Cand> = Vec::with_capacity(cluster.sites.get(site)?.nodes.len());
        for &n in &cluster.sites.get(site)?.nodes {
            let room = cap.room(cluster, n);
            if !smallest.fits_in(&room) {
                continue;
            }
            let score = match per_class {
                Some(verdicts) => verdicts[cluster.nodes[n].class].as_ref().ok().copied(),
                None => cluster.judge_node(job, n).ok(),
            };
            let Some(score) = score else {
                continue;
            };
            let tms = kept
                .iter()
                .filter(|(r, _, node)| *r == PodRole::Taskmanager && *node == n)
                .count() as u32;
            cands.push(Cand {
                node: n,
                score,
                room,
                offline: cluster.nodes[n].offline,
                tms,
            });
        }
        let mut out = Vec::with_capacity(need.len());
        if let Some(&(_, idx)) = need.iter().find(|(r, _)| *r == PodRole::Jobmanager) {
            let jm = job.job_manager;
            let best = cands
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.offline && jm.fits_in(&c.room))
                .min_by_key(|(_, c)| {
                    let alloc = self.cluster.nodes[c.node].node.allocatable;
                    (-c.score, leftover(c.room, jm, alloc), c.node)
                })
                .map(|(i, _)| i)?;
            cands[best].room -= jm;
            out.push((PodRole::Jobmanager, idx, cands[best].node));
        }
        let tm_need: Vec<u32> = need
            .iter()
            .filter(|(r, _)| *r == PodRole::Taskmanager)
            .map(|(_, i)| *i)
            .collect();
        if tm_need.is_empty() {
            return Some(out);
        }
        let tm = job.task_manager;
        cands.retain(|c| tm.fits_in(&c.room));
        // Rank: best score, then tightest fit, then node index (unique, so the order is total
        // and the same whichever way it is computed).
        let rank = |(i, c): (usize, &Cand)| {
            let alloc = self.cluster.nodes[c.node].node.allocatable;
            (-c.score, leftover(c.room, tm, alloc), c.node, i)
        };
        // The spreading loop below starts at level 0, where it gives one TaskManager to each
        // candidate holding none of the job's yet, in rank order. When there are at least as
        // many such candidates as TaskManagers to place, it ends there: the TaskManagers go to
        // the best-ranked of them, and only those need sorting (a job needs a few dozen
        // TaskManagers; a site has thousands of nodes).
        let fresh = cands.iter().filter(|c| c.tms == 0).count();
        if fresh >= tm_need.len() {
            let mut best: Vec<(i64, i64, usize, usize)> = cands
                .iter()
                .enumerate()
                .filter(|(_, c)| c.tms == 0)
                .map(rank)
                .collect();
            take_smallest(&mut best, tm_need.len());
            for (&(_, _, node, _), idx) in best.iter().zip(tm_need) {
                out.push((PodRole::Taskmanager, idx, node));
            }
            return Some(out);
        }
        let mut order: Vec<(i64, i64, usize, usize)> = cands.iter().enumerate().map(rank).collect();
        order.sort_unstable();
        let max_existing = cands.iter().map(|c| c.tms).max().unwrap_or(0);
        let mut next = tm_need.into_iter();
        let mut pending = next.next();
        let mut level = 0u32;
        while pending.is_some() {
            let mut progress = false;
            for &(_, _, _, i) in &order {
                let Some(idx) = pending else { break };
                let c = &mut cands[i];
                if c.tms <= level && tm.fits_in(&c.room) {
                    c.room -= tm;
                    c.tms += 1;
                    out.push((PodRole::Taskmanager, idx, c.node));
                    pending = next.next();
                    progress = true;
                }
            }
            if pending.is_some() && !progress && level >= max_existing {
                return None;
            }
            level += 1;
        }
        Some(out)
    }

    fn commit(&mut self, j: usize, pods: &[Pod]) {
        for &(role, _, n) in pods {
            let r = pod_request(self.jobs[j], role);
            self.cap.take(&self.cluster, n, r);
        }
    }

    fn place_at(&mut self, j: usize, site: usize, pods: Vec<Pod>) {
        self.commit(j, &pods);
        self.quota_add(j, site);
        self.placed[j] = Some(Placed { site, pods });
    }

    /// Takes `existing` placements as they are (capacity and quota), whatever rule they may
    /// break now: what runs, runs. Pods on nodes the snapshot does not have are dropped.
    pub(crate) fn adopt(&mut self, existing: &[JobPlacement]) {
        for p in existing {
            let Some(j) = self.job_by_id(&p.job) else {
                continue;
            };
            if self.placed[j].is_some() {
                continue;
            }
            let Some(&site) = self.cluster.site_index.get(&p.site) else {
                continue;
            };
            let pods: Vec<Pod> = p
                .pods
                .iter()
                .filter_map(|pod| {
                    self.cluster.sites[site]
                        .node_by_name
                        .get(pod.node.as_str())
                        .map(|&n| (pod.role, pod.index, n))
                })
                .collect();
            self.place_at(j, site, pods);
        }
    }

    /// Where placed job `j` runs, as the plan shows it.
    pub(crate) fn placement_of(&self, j: usize) -> Option<JobPlacement> {
        self.placed[j].as_ref().map(|p| JobPlacement {
            job: self.jobs[j].id.clone(),
            site: self.cluster.sites[p.site].id.clone(),
            pods: self.pod_placements(&p.pods),
        })
    }

    /// Moves the pods `leaving` of the placed job `j` elsewhere: in its site keeping its other
    /// pods where they are, else the whole job in its site, else the whole job in another
    /// allowed site (quota checked, no preemption). `Err` says why it fits nowhere, and
    /// leaves the job as it was.
    pub(crate) fn relocate(&mut self, j: usize, leaving: &[(PodRole, u32)]) -> Result<(), String> {
        let Some(old) = self.release(j) else {
            return Err(format!("{} is not running", self.jobs[j].id));
        };
        let mut shape: Vec<(PodRole, u32)> = old.pods.iter().map(|&(r, i, _)| (r, i)).collect();
        shape.sort_unstable();
        let whole = expected_pods(self.jobs[j]);
        if super::is_whole_gang(&shape, self.jobs[j].task_managers)
            && self.quota_ok_with(&self.quota_used, j, old.site)
        {
            let kept: Vec<Pod> = old
                .pods
                .iter()
                .filter(|&&(r, i, _)| !leaving.contains(&(r, i)))
                .copied()
                .collect();
            let mut need: Vec<(PodRole, u32)> = leaving.to_vec();
            need.sort_unstable();
            self.place_at(j, old.site, kept.clone());
            if let Some(new) = self.pack_live(j, old.site, &kept, &need) {
                self.commit(j, &new);
                if let Some(p) = self.placed[j].as_mut() {
                    p.pods.extend(new);
                }
                return Ok(());
            }
            self.release(j);
        }
        let mut sites = vec![old.site];
        sites.extend(self.site_order(j).into_iter().filter(|&s| s != old.site));
        sites.retain(|&s| self.jobs[j].sites.allows(self.cluster.sites[s].id));
        for &s in &sites {
            if !self.quota_ok_with(&self.quota_used, j, s) {
                continue;
            }
            if let Some(pods) = self.pack_live(j, s, &[], &whole) {
                self.place_at(j, s, pods);
                return Ok(());
            }
        }
        let reason = if sites.is_empty() {
            "no site allowed".to_string()
        } else {
            self.diagnose(j, &sites)
        };
        self.place_at(j, old.site, old.pods);
        Err(reason)
    }

    pub(crate) fn release(&mut self, j: usize) -> Option<Placed> {
        let placed = self.placed[j].take()?;
        for &(role, _, n) in &placed.pods {
            let r = pod_request(self.jobs[j], role);
            self.cap.give_back(&self.cluster, n, r);
        }
        self.quota_remove(j, placed.site);
        Some(placed)
    }

    /// Allowed sites in trial order: the MILP's pick, the preferred site, then the others
    /// in snapshot order.
    fn site_order(&self, j: usize) -> Vec<usize> {
        let job = self.jobs[j];
        let hinted = self
            .hint
            .and_then(|h| h.get(&job.id))
            .and_then(|s| s.as_ref())
            .and_then(|s| self.cluster.site_index.get(s).copied());
        let preferred = job
            .sites
            .preferred
            .as_ref()
            .and_then(|s| self.cluster.site_index.get(s).copied());
        let mut rest: Vec<usize> = self.cluster.site_index.values().copied().collect();
        rest.sort_unstable();
        let mut order: Vec<usize> = Vec::new();
        for s in hinted.into_iter().chain(preferred).chain(rest) {
            if job.sites.allows(self.cluster.sites[s].id) && !order.contains(&s) {
                order.push(s);
            }
        }
        order
    }

    /// Places the whole gang of `j` somewhere, preempting best-effort jobs if it must.
    /// `Err` carries the reason for `unplaced`.
    pub(crate) fn place_job(&mut self, j: usize) -> Result<(), String> {
        let sites = self.site_order(j);
        if sites.is_empty() {
            let job = self.jobs[j];
            let names: Vec<String> = job.sites.allowed.iter().map(|s| s.0.clone()).collect();
            return Err(format!(
                "no site allowed: allowed [{}] not in policy",
                names.join(", ")
            ));
        }
        let need = expected_pods(self.jobs[j]);
        for &s in &sites {
            if !self.quota_ok_with(&self.quota_used, j, s) {
                continue;
            }
            let cap = std::mem::replace(
                &mut self.cap,
                Capacity {
                    free: Vec::new(),
                    borrowed: Vec::new(),
                },
            );
            let packed = self.pack(&cap, j, s, &[], &need);
            self.cap = cap;
            if let Some(pods) = packed {
                self.place_at(j, s, pods);
                return Ok(());
            }
        }
        if self.jobs[j].priority > Priority::BestEffort {
            for &s in &sites {
                if self.try_preempt(j, s) {
                    return Ok(());
                }
            }
        }
        Err(self.diagnose(j, &sites))
    }

    /// Frees room in `site` for `j` by evicting as few best-effort jobs as it can.
    fn try_preempt(&mut self, j: usize, site: usize) -> bool {
        let mut victims: Vec<(i64, usize)> = Vec::new();
        for (v, p) in self.placed.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.site != site || self.jobs[v].priority != Priority::BestEffort || v == j {
                continue;
            }
            let used: i64 = p
                .pods
                .iter()
                .map(|&(role, _, _)| {
                    let r = pod_request(self.jobs[v], role);
                    r.cpu_milli / 1000 + r.memory_bytes / (1 << 30)
                })
                .sum();
            victims.push((-used, v));
        }
        if victims.is_empty() {
            return false;
        }
        victims.sort_unstable();
        let need = expected_pods(self.jobs[j]);
        let mut cap = self.cap.clone();
        let mut used = self.quota_used.clone();
        let mut chosen: Vec<usize> = Vec::new();
        let mut found = false;
        for &(_, v) in &victims {
            if let Some(p) = &self.placed[v] {
                for &(role, _, n) in &p.pods {
                    cap.give_back(&self.cluster, n, pod_request(self.jobs[v], role));
                }
                let job = self.jobs[v];
                if let Some(u) = used.get_mut(&(&job.tenant, site)) {
                    *u -= job.total();
                }
            }
            chosen.push(v);
            if self.quota_ok_with(&used, j, site) && self.pack(&cap, j, site, &[], &need).is_some()
            {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
        // Spare the victims that turned out unnecessary, largest first.
        let mut kept_out: Vec<usize> = Vec::new();
        for &v in chosen.iter() {
            let Some(p) = self.placed[v].clone() else {
                continue;
            };
            let mut trial = cap.clone();
            for &(role, _, n) in &p.pods {
                trial.take(&self.cluster, n, pod_request(self.jobs[v], role));
            }
            let fits_back = p.pods.iter().all(|&(_, _, n)| {
                let f = trial.free[n];
                f.cpu_milli >= 0 && f.memory_bytes >= 0 && f.pods >= 0
            });
            let mut trial_used = used.clone();
            let job = self.jobs[v];
            *trial_used.entry((&job.tenant, site)).or_default() += job.total();
            if fits_back
                && self.quota_ok_with(&trial_used, j, site)
                && self.pack(&trial, j, site, &[], &need).is_some()
            {
                cap = trial;
                used = trial_used;
                kept_out.push(v);
            }
        }
        let Some(pods) = self.pack(&cap, j, site, &[], &need) else {
            return false;
        };
        for &v in chosen.iter().filter(|v| !kept_out.contains(v)) {
            if let Some(p) = self.release(v) {
                let mut nodes: Vec<String> = p
                    .pods
                    .iter()
                    .map(|&(_, _, n)| self.cluster.nodes[n].node.name.clone())
                    .collect();
                nodes.sort();
                nodes.dedup();
                self.preemptions.push(Preemption {
                    victim: self.jobs[v].id.clone(),
                    by: self.jobs[j].id.clone(),
                    site: self.cluster.sites[site].id.clone(),
                    nodes,
                });
                self.preempted_by.insert(v, j);
                self.pending_victims.push((v, p));
            }
        }
        self.place_at(j, site, pods);
        true
    }

    /// `pack` against the live capacity.
    pub(crate) fn pack_live(
        &mut self,
        j: usize,
        site: usize,
        kept: &[Pod],
        need: &[(PodRole, u32)],
    ) -> Option<Vec<Pod>> {
        let cap = std::mem::replace(
            &mut self.cap,
            Capacity {
                free: Vec::new(),
                borrowed: Vec::new(),
            },
        );
        let packed = self.pack(&cap, j, site, kept, need);
        self.cap = cap;
        packed
    }

    fn pod_placements(&self, pods: &[Pod]) -> Vec<PodPlacement> {
        let mut out: Vec<PodPlacement> = pods
            .iter()
            .map(|&(role, index, n)| PodPlacement {
                role,
                index,
                node: self.cluster.nodes[n].node.name.clone(),
            })
            .collect();
        out.sort();
        out
    }

    fn end_of(&self, site: usize, pods: &[Pod]) -> MoveEnd {
        MoveEnd {
            site: self.cluster.sites[site].id.clone(),
            pods: self.pod_placements(pods),
        }
    }

    // ---- running jobs --------------------------------------------------------------------

    /// Why a running pod of `j` on `node` cannot stay, if it cannot. Capacity is checked by
    /// the caller. A NoSchedule taint added under a running pod does not evict it (Kubernetes
    /// keeps it too); NoExecute does. Selectors and affinity are IgnoredDuringExecution.
    fn pod_must_leave(&self, j: usize, role: PodRole, node: usize) -> Option<String> {
        let job = self.jobs[j];
        let info = &self.cluster.nodes[node];
        let name = &info.node.name;
        if !info.node.ready {
            return Some(format!("node {name} NotReady"));
        }
        if info.node.unschedulable {
            return Some(format!("node {name} cordoned"));
        }
        if let Some(t) = info.node.taints.iter().find(|t| {
            t.effect == crate::k8s::TaintEffect::NoExecute
                && !job
                    .tolerations
                    .iter()
                    .any(|tol| super::compat::tolerates(tol, t))
        }) {
            return Some(format!(
                "node {name} has taint {} the job does not tolerate",
                fmt_taint(t)
            ));
        }
        if info.offline {
            if role == PodRole::Jobmanager {
                return Some(format!("JobManager on offline node {name}"));
            }
            if !job.allow_offline {
                return Some(format!("job no longer allows offline node {name}"));
            }
            if !info.lending_open {
                return Some(format!("offline lending window closed on node {name}"));
            }
        }
        None
    }

    fn pin_running(&mut self) -> Vec<Displaced> {
        let req = self.req;
        let mut running: Vec<(usize, &JobPlacement)> = req
            .running
            .iter()
            .filter_map(|rp| self.job_by_id(&rp.job).map(|j| (j, rp)))
            .collect();
        running.sort_by(|a, b| {
            (
                std::cmp::Reverse(self.jobs[a.0].priority),
                &self.jobs[a.0].id,
            )
                .cmp(&(
                    std::cmp::Reverse(self.jobs[b.0].priority),
                    &self.jobs[b.0].id,
                ))
        });
        running.dedup_by_key(|(j, _)| *j);
        let mut displaced = Vec::new();
        for (j, rp) in running {
            let job = self.jobs[j];
            let whole = |reason: String, site: usize, old: Vec<Pod>| Displaced {
                job: j,
                site,
                old,
                lost: Vec::new(),
                kept: Vec::new(),
                reason,
            };
            let Some(&site) = self.cluster.site_index.get(&rp.site) else {
                self.moves.push(Move {
                    job: job.id.clone(),
                    reason: format!("site {} is gone", rp.site),
                    from: MoveEnd {
                        site: rp.site.clone(),
                        pods: {
                            let mut p = rp.pods.clone();
                            p.sort();
                            p
                        },
                    },
                    to: None,
                });
                displaced.push(whole(String::new(), usize::MAX, Vec::new()));
                continue;
            };
            let mut old: Vec<Pod> = Vec::new();
            let mut missing_node: Option<String> = None;
            for p in &rp.pods {
                match self.cluster.sites[site].node_by_name.get(p.node.as_str()) {
                    Some(&n) => old.push((p.role, p.index, n)),
                    None => {
                        missing_node.get_or_insert_with(|| p.node.clone());
                    }
                }
            }
            let mut shape: Vec<(PodRole, u32)> =
                rp.pods.iter().map(|p| (p.role, p.index)).collect();
            shape.sort();
            if !super::is_whole_gang(&shape, job.task_managers) {
                displaced.push(whole(
                    format!(
                        "job resized: now 1 JobManager + {} TaskManagers, {} pods running",
                        job.task_managers,
                        rp.pods.len()
                    ),
                    site,
                    old,
                ));
                continue;
            }
            if !job.sites.allows(&rp.site) {
                displaced.push(whole(
                    format!("site {} no longer allowed", rp.site),
                    site,
                    old,
                ));
                continue;
            }
            if !self.quota_ok_with(&self.quota_used, j, site) {
                displaced.push(whole(
                    format!("quota: tenant {} in {} over its limit", job.tenant, rp.site),
                    site,
                    old,
                ));
                continue;
            }
            let mut kept = Vec::new();
            let mut lost: Vec<Pod> = Vec::new();
            let mut reason: Option<String> = missing_node.map(|n| format!("node {n} is gone"));
            let mut lost_unknown = rp.pods.len() - old.len();
            for &(role, index, n) in &old {
                let r = pod_request(job, role);
                let why = self.pod_must_leave(j, role, n).or_else(|| {
                    (!r.fits_in(&self.cap.room(&self.cluster, n)))
                        .then(|| format!("node {} over capacity", self.cluster.nodes[n].node.name))
                });
                match why {
                    None => {
                        self.cap.take(&self.cluster, n, r);
                        kept.push((role, index, n));
                    }
                    Some(w) => {
                        reason.get_or_insert(w);
                        lost.push((role, index, n));
                    }
                }
            }
            self.quota_add(j, site);
            let reason = reason.unwrap_or_default();
            if lost.is_empty() && lost_unknown == 0 {
                self.placed[j] = Some(Placed { site, pods: kept });
                continue;
            }
            // Pods on vanished nodes: re-place them with the others that must leave.
            for p in &rp.pods {
                if !self.cluster.sites[site]
                    .node_by_name
                    .contains_key(p.node.as_str())
                    && lost_unknown > 0
                {
                    lost.push((p.role, p.index, usize::MAX));
                    lost_unknown -= 1;
                }
            }
            self.placed[j] = Some(Placed {
                site,
                pods: kept.clone(),
            });
            displaced.push(Displaced {
                job: j,
                site,
                old,
                lost,
                kept,
                reason,
            });
        }
        displaced
    }

    fn pods_of_end(&self, site: usize, pods: &[Pod], names: &JobPlacement) -> MoveEnd {
        // Pods on vanished nodes keep the node name the caller gave us.
        let mut out: Vec<PodPlacement> = pods
            .iter()
            .map(|&(role, index, n)| PodPlacement {
                role,
                index,
                node: if n == usize::MAX {
                    names
                        .pods
                        .iter()
                        .find(|p| p.role == role && p.index == index)
                        .map(|p| p.node.clone())
                        .unwrap_or_default()
                } else {
                    self.cluster.nodes[n].node.name.clone()
                },
            })
            .collect();
        out.sort();
        MoveEnd {
            site: self.cluster.sites[site].id.clone(),
            pods: out,
        }
    }

    fn running_of(&self, j: usize) -> Option<&'r JobPlacement> {
        let id = &self.jobs[j].id;
        self.req.running.iter().find(|rp| &rp.job == id)
    }

    fn handle_displaced(&mut self, d: Displaced) {
        let j = d.job;
        if d.site == usize::MAX {
            // Its site vanished: the move is recorded; place it like a new job.
            if let Err(reason) = self.place_job(j) {
                self.unplaced.insert(j, reason);
            } else if let (Some(m), Some(p)) = (
                self.moves.iter().rposition(|m| m.job == self.jobs[j].id),
                self.placed[j].clone(),
            ) {
                let end = self.end_of(p.site, &p.pods);
                self.moves[m].to = Some(end);
            }
            return;
        }
        let Some(rp) = self.running_of(j) else { return };
        if !d.kept.is_empty() {
            let need: Vec<(PodRole, u32)> = d.lost.iter().map(|&(r, i, _)| (r, i)).collect();
            if let Some(new) = self.pack_live(j, d.site, &d.kept, &need) {
                self.commit(j, &new);
                if let Some(p) = self.placed[j].as_mut() {
                    p.pods.extend(new.iter().copied());
                }
                let from = self.pods_of_end(d.site, &d.lost, rp);
                let to = self.end_of(d.site, &new);
                self.moves.push(Move {
                    job: self.jobs[j].id.clone(),
                    reason: d.reason,
                    from,
                    to: Some(to),
                });
                return;
            }
            self.release(j);
        } else if self.placed[j].is_some() {
            self.release(j);
        }
        let mut all_old = d.kept.clone();
        all_old.extend(d.lost.iter().copied());
        if all_old.is_empty() {
            all_old = d.old.clone();
        }
        let from = self.pods_of_end(d.site, &all_old, rp);
        let result = self.place_job(j);
        let to = self.placed[j]
            .as_ref()
            .map(|p| self.end_of(p.site, &p.pods));
        let mut reason = d.reason;
        if !d.kept.is_empty() {
            reason.push_str("; no room for the replacement pods in the same site");
        }
        if let Err(r) = result {
            self.unplaced.insert(j, r);
        }
        self.moves.push(Move {
            job: self.jobs[j].id.clone(),
            reason,
            from,
            to,
        });
    }

    // ---- failover reserves -----------------------------------------------------------------

    /// Jobs placed in `protects` with at least `min` priority that may run in `site` (a job
    /// pinned to its own site cannot fail over, so no reserve can be kept for it).
    fn protected_jobs(&self, site: &SiteId, protects: usize, min: Priority) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| {
                self.jobs[j].priority >= min
                    && self.jobs[j].sites.allows(site)
                    && self.placed[j].as_ref().is_some_and(|p| p.site == protects)
            })
            .collect();
        v.sort_by_key(|&j| {
            (
                std::cmp::Reverse(self.jobs[j].priority),
                std::cmp::Reverse(self.size_key(j)),
                &self.jobs[j].id,
            )
        });
        v
    }

    /// Trial-packs the protected jobs into `site` on `cap`; returns the ones that fit with
    /// their pods, and the ones that do not. Quotas do not apply to a failover.
    fn reserve_trial(
        &mut self,
        cap: &mut Capacity,
        site: usize,
        protects: usize,
        min: Priority,
    ) -> (Vec<(usize, Vec<Pod>)>, Vec<usize>) {
        let mut fit = Vec::new();
        let mut not = Vec::new();
        for j in self.protected_jobs(self.cluster.sites[site].id, protects, min) {
            if !self.jobs[j].sites.allows(self.cluster.sites[site].id) {
                not.push(j);
                continue;
            }
            let need = expected_pods(self.jobs[j]);
            match self.pack(cap, j, site, &[], &need) {
                Some(pods) => {
                    for &(role, _, n) in &pods {
                        cap.take(&self.cluster, n, pod_request(self.jobs[j], role));
                    }
                    fit.push((j, pods));
                }
                None => not.push(j),
            }
        }
        (fit, not)
    }

    /// Before placing a job of `priority`, hold back the room of every reserve it may not
    /// take (`priority < min_priority`): the protected jobs are packed into the reserving
    /// site as if failed over, and that packing is kept as occupied until the end. Exact for
    /// that packing, conservative otherwise.
    fn install_reserves_above(&mut self, priority: Priority) {
        for ri in 0..self.req.policy.reserves.len() {
            let r = &self.req.policy.reserves[ri];
            if self.reserves_installed[ri] || priority >= r.min_priority {
                continue;
            }
            self.reserves_installed[ri] = true;
            let (Some(&s), Some(&p)) = (
                self.cluster.site_index.get(&r.site),
                self.cluster.site_index.get(&r.protects),
            ) else {
                continue;
            };
            let mut cap = std::mem::replace(
                &mut self.cap,
                Capacity {
                    free: Vec::new(),
                    borrowed: Vec::new(),
                },
            );
            let (fit, not) = self.reserve_trial(&mut cap, s, p, r.min_priority);
            self.cap = cap;
            self.reserve_outcome
                .insert(ri, (fit.iter().map(|(j, _)| *j).collect(), not));
            for (j, pods) in fit {
                for (role, _, n) in pods {
                    self.shadow.push((n, pod_request(self.jobs[j], role)));
                }
            }
            self.shadow_sites.insert(s);
        }
    }

    /// Capacity with the reserve shadows given back (what a job would see without reserves).
    pub(crate) fn capacity_without_shadow(&self) -> Capacity {
        let mut cap = self.cap.clone();
        for &(n, r) in &self.shadow {
            cap.give_back(&self.cluster, n, r);
        }
        cap
    }

    pub(crate) fn has_shadow_in(&self, site: usize) -> bool {
        self.shadow_sites.contains(&site)
    }

    /// Installed reserves report what their shadow held; protected jobs that arrived later
    /// and reserves never installed are trial-packed on the final capacity (shadows still
    /// taken, so reserves sharing a site do not count the same room twice).
    fn reserve_reports(&mut self) -> BTreeMap<SiteId, ReserveReport> {
        let mut cap = self.cap.clone();
        let mut reports: BTreeMap<SiteId, ReserveReport> = BTreeMap::new();
        let reserves = self.req.policy.reserves.clone();
        for (ri, r) in reserves.iter().enumerate() {
            let mut report = reports.remove(&r.site).unwrap_or_else(empty_report);
            report.protects.push(ReserveScope {
                site: r.protects.clone(),
                min_priority: r.min_priority,
            });
            if let Some(&p) = self.cluster.site_index.get(&r.protects) {
                let protected = self.protected_jobs(&r.site, p, r.min_priority);
                let (mut fit, mut not) = self.reserve_outcome.get(&ri).cloned().unwrap_or_default();
                fit.retain(|j| protected.contains(j));
                not.retain(|j| protected.contains(j));
                let covered = self.reserve_outcome.contains_key(&ri);
                for j in protected {
                    if covered && (fit.contains(&j) || not.contains(&j)) {
                        continue;
                    }
                    let site = self.cluster.site_index.get(&r.site).copied();
                    let packed = match site {
                        Some(s) if self.jobs[j].sites.allows(&r.site) => {
                            let need = expected_pods(self.jobs[j]);
                            self.pack(&cap, j, s, &[], &need)
                        }
                        _ => None,
                    };
                    match packed {
                        Some(pods) => {
                            for &(role, _, n) in &pods {
                                cap.take(&self.cluster, n, pod_request(self.jobs[j], role));
                            }
                            fit.push(j);
                        }
                        None => not.push(j),
                    }
                }
                for &j in &fit {
                    report.needed += self.jobs[j].total();
                }
                for &j in &not {
                    report.needed += self.jobs[j].total();
                    report.missing += self.jobs[j].total();
                    report.jobs_not_fitting.push(self.jobs[j].id.clone());
                    report.holds = false;
                }
            }
            report.jobs_not_fitting.sort();
            reports.insert(r.site.clone(), report);
        }
        reports
    }

    // ---- the round -------------------------------------------------------------------------

    pub(crate) fn run(&mut self) {
        let displaced = self.pin_running();
        enum Item {
            Displaced(Displaced),
            New(usize),
        }
        let mut busy = vec![false; self.jobs.len()];
        for (j, p) in self.placed.iter().enumerate() {
            busy[j] = p.is_some();
        }
        for d in &displaced {
            busy[d.job] = true;
        }
        let mut items: Vec<(usize, Item)> = displaced
            .into_iter()
            .map(|d| (d.job, Item::Displaced(d)))
            .collect();
        items.extend(
            (0..self.jobs.len())
                .filter(|&j| !busy[j])
                .map(|j| (j, Item::New(j))),
        );
        let excluded = |j: usize| {
            self.hint
                .is_some_and(|h| h.get(&self.jobs[j].id).is_none_or(|s| s.is_none()))
        };
        let mut keyed: Vec<_> = items
            .into_iter()
            .map(|(j, item)| {
                let is_new = matches!(item, Item::New(_));
                (
                    (
                        excluded(j),
                        std::cmp::Reverse(self.jobs[j].priority),
                        is_new,
                        std::cmp::Reverse(self.size_key(j)),
                        self.jobs[j].id.clone(),
                    ),
                    item,
                )
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, item) in keyed {
            match item {
                Item::Displaced(d) => {
                    self.install_reserves_above(self.jobs[d.job].priority);
                    self.handle_displaced(d);
                }
                Item::New(j) => {
                    self.install_reserves_above(self.jobs[j].priority);
                    if let Err(reason) = self.place_job(j) {
                        self.unplaced.insert(j, reason);
                    }
                }
            }
        }
        let victims = std::mem::take(&mut self.pending_victims);
        for (v, old) in victims {
            let by = self.preempted_by.get(&v).map(|&b| self.jobs[b].id.clone());
            let by = by.map(|b| b.0).unwrap_or_default();
            match self.place_job(v) {
                Ok(()) => {
                    let to = self.placed[v]
                        .as_ref()
                        .map(|p| self.end_of(p.site, &p.pods));
                    let from = self.end_of(old.site, &old.pods);
                    self.moves.push(Move {
                        job: self.jobs[v].id.clone(),
                        reason: format!("preempted by {by}"),
                        from,
                        to,
                    });
                }
                Err(_) => {
                    self.unplaced.insert(v, format!("preempted by {by}"));
                }
            }
        }
    }

    pub(crate) fn into_plan(mut self) -> PlacementPlan {
        let reserve = self.reserve_reports();
        let mut placements: Vec<JobPlacement> = self
            .placed
            .iter()
            .enumerate()
            .filter_map(|(j, p)| {
                p.as_ref().map(|p| JobPlacement {
                    job: self.jobs[j].id.clone(),
                    site: self.cluster.sites[p.site].id.clone(),
                    pods: self.pod_placements(&p.pods),
                })
            })
            .collect();
        placements.sort_by(|a, b| a.job.cmp(&b.job));
        let mut unplaced: Vec<Unplaced> = self
            .unplaced
            .iter()
            .filter(|(j, _)| self.placed[**j].is_none())
            .map(|(&j, reason)| Unplaced {
                job: self.jobs[j].id.clone(),
                reason: reason.clone(),
            })
            .collect();
        unplaced.append(&mut self.refused);
        unplaced.sort_by(|a, b| a.job.cmp(&b.job));
        let mut moves = std::mem::take(&mut self.moves);
        moves.sort_by(|a, b| a.job.cmp(&b.job));
        let mut preemptions = std::mem::take(&mut self.preemptions);
        preemptions.sort_by(|a, b| (&a.by, &a.victim).cmp(&(&b.by, &b.victim)));
        PlacementPlan {
            placements,
            unplaced,
            preemptions,
            moves,
            reserve,
            solver: SolverReport {
                solver: SolverKind::Heuristic,
                objective: 0.0,
                bound: None,
                status: String::new(),
            },
        }
    }
}

fn empty_report() -> ReserveReport {
    ReserveReport {
        protects: Vec::new(),
        holds: true,
        needed: Resources::ZERO,
        missing: Resources::ZERO,
        jobs_not_fitting: Vec::new(),
    }
}

/// Places extra jobs one at a time against an existing plan, without re-planning: the
/// existing placements are taken as they are. For admission of a new job between rounds.
pub struct IncrementalPlacer<'r, 'a> {
    engine: Engine<'r, 'a>,
}

impl<'r, 'a> IncrementalPlacer<'r, 'a> {
    /// `req.running` is ignored; `existing` is the state to build on.
    pub fn new(req: &'r PlacementRequest<'a>, existing: &'a [JobPlacement]) -> Self {
        let mut engine = Engine::new(req, None);
        engine.adopt(existing);
        IncrementalPlacer { engine }
    }

    /// Places `job` (all pods or none) and keeps it; `Err` says why it does not fit. Never
    /// preempts and ignores failover reserves: admission is checked again by the next round.
    pub fn place_one(&mut self, job: &'a JobDemand) -> Result<JobPlacement, String> {
        if let Some(reason) = super::refusal(job) {
            return Err(reason);
        }
        let j = match self.engine.job_by_id(&job.id) {
            Some(j) if self.engine.placed[j].is_some() => {
                return Err(format!("job {} is already placed", job.id));
            }
            Some(j) => j,
            None => self
                .engine
                .add_job(job)
                .ok_or_else(|| format!("job {} is already known", job.id))?,
        };
        let sites = self.engine.site_order(j);
        if sites.is_empty() {
            return Err(format!("no site allowed for {}", job.id));
        }
        let need = expected_pods(job);
        for &s in &sites {
            if !self.engine.quota_ok_with(&self.engine.quota_used, j, s) {
                continue;
            }
            if let Some(pods) = self.engine.pack_live(j, s, &[], &need) {
                self.engine.place_at(j, s, pods.clone());
                return Ok(JobPlacement {
                    job: job.id.clone(),
                    site: self.engine.cluster.sites[s].id.clone(),
                    pods: self.engine.pod_placements(&pods),
                });
            }
        }
        Err(self.engine.diagnose(j, &sites))
    }

    /// Takes a job back out (its pods free their room). False when it was not placed.
    pub fn remove(&mut self, id: &JobId) -> bool {
        self.engine
            .job_by_id(id)
            .and_then(|j| self.engine.release(j))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{div_trunc, take_smallest};

    proptest! {
        #[test]
        fn the_fast_division_is_integer_division(a in any::<i64>(), b in 1i64..=i64::MAX) {
            prop_assert_eq!(div_trunc(a, b), a / b);
        }

        #[test]
        fn the_fast_division_is_exact_for_the_packers_operands(
            a in 0i64..(1 << 52),
            b in 1i64..(1 << 40),
        ) {
            prop_assert_eq!(div_trunc(a, b), a / b);
        }

        #[test]
        fn taking_the_smallest_is_sorting_and_truncating(
            items in proptest::collection::vec(any::<(i8, u8)>(), 0..200),
            k in 0usize..220,
        ) {
            let mut sorted = items.clone();
            sorted.sort_unstable();
            sorted.truncate(k);
            let mut taken = items;
            take_smallest(&mut taken, k);
            prop_assert_eq!(taken, sorted);
        }
    }
}
