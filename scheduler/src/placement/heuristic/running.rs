//! What runs: jobs pinned where they run, or displaced with the reason they cannot stay,
//! and re-placed; running jobs relocated on request. Never evicts for a rule Kubernetes would not.

use super::super::{Move, MoveEnd, is_whole_gang};
use super::{Packer, Placed, Pod, expected_pods, fmt_taint, pod_request};
use crate::model::{JobPlacement, PodPlacement, PodRole};

/// A running job to re-place (whole, or only the pods in `lost`), and why.
pub(super) struct Displaced {
    pub(super) job: usize,
    site: usize,
    old: Vec<Pod>,
    /// Pods to re-place; the others are pinned and committed already. Empty `kept` means the
    /// whole job goes through normal placement.
    lost: Vec<Pod>,
    kept: Vec<Pod>,
    reason: String,
}

impl<'r> Packer<'r, '_> {
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
        if is_whole_gang(&shape, self.jobs[j].task_managers)
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

    /// Why a running pod of `j` on `node` cannot stay, if it cannot. Capacity is checked by
    /// the caller. A NoSchedule taint added under a running pod does not evict it (Kubernetes
    /// keeps it too); NoExecute does. Selectors and affinity are IgnoredDuringExecution.
    pub(super) fn pod_must_leave(&self, j: usize, role: PodRole, node: usize) -> Option<String> {
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
                    .any(|tol| super::super::compat::tolerates(tol, t))
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

    pub(super) fn pin_running(&mut self) -> Vec<Displaced> {
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
            if !is_whole_gang(&shape, job.task_managers) {
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

    pub(super) fn pods_of_end(&self, site: usize, pods: &[Pod], names: &JobPlacement) -> MoveEnd {
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

    pub(super) fn running_of(&self, j: usize) -> Option<&'r JobPlacement> {
        let id = &self.jobs[j].id;
        self.req.running.iter().find(|rp| &rp.job == id)
    }

    pub(super) fn handle_displaced(&mut self, d: Displaced) {
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
}
