//! The gang packer: all pods of one job onto nodes of one site, ranked (spread, class score,
//! tightest fit), or none of them. Never changes the packer's state: it answers on a capacity.

use super::super::state::{Capacity, uses_match_fields};
use super::{Packer, Pod};
use crate::model::{PodRole, Resources};

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

impl Packer<'_, '_> {
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
    pub(super) fn pack_fresh(
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
    pub(super) fn pack_spread(
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
                super::super::state::min_res(job.job_manager, job.task_manager)
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
