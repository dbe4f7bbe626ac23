//! Preemption: best-effort jobs evicted to make room for a job of a higher tier, as few as
//! it takes, then placed again after everyone else. Never evicts anything but best-effort.

use super::super::{Move, Preemption};
use super::{Packer, expected_pods, pod_request};
use crate::model::Priority;

impl Packer<'_, '_> {
    /// Frees room in `site` for `j` by evicting as few best-effort jobs as it can.
    pub(super) fn try_preempt(&mut self, j: usize, site: usize) -> bool {
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

    /// Places the jobs preemption evicted, after everyone else: each becomes a move (to its
    /// new place) or unplaced, with the job that preempted it as the reason.
    pub(super) fn place_victims_again(&mut self) {
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
}
