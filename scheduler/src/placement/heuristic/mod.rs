//! The heuristic placer: running jobs pinned first, then first-fit-decreasing per priority
//! tier over the allowed sites (preferred first), with a gang packer per site, best-effort
//! preemption, and failover reserves held back from lower tiers. Never does I/O, never reads
//! the clock, never trades a higher tier's place for a lower one's.
//!
//! Node ranking inside a site, per pod: TaskManagers go to the nodes holding the fewest
//! TaskManagers of the same job (spread, to bound what one node's loss takes down); among
//! those, the best class score (preferred affinity weights minus 100 per PreferNoSchedule
//! taint not tolerated); among those, the tightest fit (least room left, which packs jobs
//! onto busy nodes and leaves empty ones whole). Spread is a ranking, not a rule: when fewer
//! nodes fit than TaskManagers, nodes take several.
//!
//! The [`Packer`] holds one round's state (capacity, quota use, what is placed, reserve
//! shadows); its steps live in the files below, each a seam of the round:
//!
//! ```text
//! quota.rs        tenant quota per site: the check, the shortfall, the bookkeeping
//! gang.rs         the gang packer: all pods of a job on nodes of one site, or none
//! running.rs      what runs: pinned as it is, or displaced (and why), relocated on request
//! preemption.rs   best-effort jobs evicted for a higher tier, and placed again after
//! reserves.rs     failover reserves: room held back from lower tiers, and their reports
//! incremental.rs  IncrementalPlacer: one job at a time against a running placement
//! ```

mod gang;
mod incremental;
mod preemption;
mod quota;
mod reserves;
mod running;

use std::collections::{BTreeMap, HashMap};

use super::state::{Capacity, Cluster, Filtered, uses_match_fields};
use super::{
    Move, MoveEnd, PlacementPlan, PlacementRequest, Preemption, SolverKind, SolverReport, Unplaced,
    objective_of,
};
use crate::model::{
    JobDemand, JobId, JobPlacement, PodPlacement, PodRole, Priority, Resources, SiteId, TenantId,
};

pub use incremental::IncrementalPlacer;
use running::Displaced;

/// One pod of ours on one node (global node index).
pub(crate) type Pod = (PodRole, u32, usize);

#[derive(Clone)]
pub(crate) struct Placed {
    pub site: usize,
    pub pods: Vec<Pod>,
}

/// One placement round's state. Named for what it does (packs gangs onto nodes); the
/// failover crate's `Engine` is a different thing.
pub(crate) struct Packer<'r, 'a> {
    pub req: &'r PlacementRequest<'a>,
    pub cluster: Cluster<'a>,
    pub cap: Capacity,
    pub jobs: Vec<&'a JobDemand>,
    job_index: HashMap<&'a JobId, usize>,
    verdicts: Vec<Option<Vec<Result<i64, Filtered>>>>,
    pub placed: Vec<Option<Placed>>,
    quota_used: BTreeMap<(&'a TenantId, usize), Resources>,
    quota_limit: HashMap<(&'a TenantId, usize), Resources>,
    /// Room held back for failover reserves: (reserve index, node, pod request).
    shadow: Vec<(usize, usize, Resources)>,
    reserves_installed: Vec<bool>,
    /// Per reserve, whether a placement since its install may have changed what it holds
    /// (read by incremental placement only; the full round installs each reserve once).
    reserve_stale: Vec<bool>,
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
    let mut packer = Packer::new(req, hint);
    packer.run();
    let mut plan = packer.into_plan();
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

fn expected_pods(job: &JobDemand) -> Vec<(PodRole, u32)> {
    let mut v = vec![(PodRole::Jobmanager, 0)];
    v.extend((0..job.task_managers).map(|i| (PodRole::Taskmanager, i)));
    v
}

impl<'r, 'a> Packer<'r, 'a> {
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
        Packer {
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
            reserves_installed: vec![false; req.policy.reserves.len()],
            reserve_stale: vec![false; req.policy.reserves.len()],
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

    fn commit(&mut self, j: usize, pods: &[Pod]) {
        for &(role, _, n) in pods {
            let r = pod_request(self.jobs[j], role);
            self.cap.take(&self.cluster, n, r);
        }
    }

    fn place_at(&mut self, j: usize, site: usize, pods: Vec<Pod>) {
        self.commit(j, &pods);
        self.quota_add(j, site);
        self.note_reserve_change(j, site, false);
        self.placed[j] = Some(Placed { site, pods });
    }

    /// Where placed job `j` runs, as the plan shows it.
    pub(crate) fn placement_of(&self, j: usize) -> Option<JobPlacement> {
        self.placed[j].as_ref().map(|p| JobPlacement {
            job: self.jobs[j].id.clone(),
            site: self.cluster.sites[p.site].id.clone(),
            pods: self.pod_placements(&p.pods),
        })
    }

    pub(crate) fn release(&mut self, j: usize) -> Option<Placed> {
        let placed = self.placed[j].take()?;
        for &(role, _, n) in &placed.pods {
            let r = pod_request(self.jobs[j], role);
            self.cap.give_back(&self.cluster, n, r);
        }
        self.quota_remove(j, placed.site);
        self.note_reserve_change(j, placed.site, true);
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
        // Victims are best-effort and placed anew: every reserve above them holds first
        // (when all best-effort jobs of the round were running, none was installed yet).
        if !self.pending_victims.is_empty() {
            self.install_reserves_above(Priority::BestEffort);
        }
        self.place_victims_again();
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
