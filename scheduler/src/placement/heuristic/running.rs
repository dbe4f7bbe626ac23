//! What runs: jobs pinned where they run, or displaced with the reason they cannot stay,
//! and re-placed; running jobs relocated on request. Never evicts for a rule Kubernetes would not.

use super::super::rebalance::{RunningViolation, RunningViolationKind};
use super::super::{Move, MoveEnd, is_whole_gang};
use super::{Packer, Placed, Pod, expected_pods, fmt_resources, fmt_taint, pod_request};
use crate::model::{JobPlacement, PodPlacement, PodRole};

/// A running job to re-place (whole, or only the pods in `lost`), and why.
/// Why a running pod cannot stay, as far as the callers tell causes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaveCause {
    NotReady,
    Cordoned,
    NoExecuteTaint,
    /// A JobManager, a job no longer allowing it, or a closed lending window.
    Offline,
}

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
    pub(super) fn pod_must_leave(
        &self,
        j: usize,
        role: PodRole,
        node: usize,
    ) -> Option<(LeaveCause, String)> {
        let job = self.jobs[j];
        let info = &self.cluster.nodes[node];
        let name = &info.node.name;
        if !info.node.ready {
            return Some((LeaveCause::NotReady, format!("node {name} NotReady")));
        }
        if info.node.unschedulable {
            return Some((LeaveCause::Cordoned, format!("node {name} cordoned")));
        }
        if let Some(t) = info.node.taints.iter().find(|t| {
            t.effect == crate::k8s::TaintEffect::NoExecute
                && !job
                    .tolerations
                    .iter()
                    .any(|tol| super::super::compat::tolerates(tol, t))
        }) {
            return Some((
                LeaveCause::NoExecuteTaint,
                format!(
                    "node {name} has taint {} the job does not tolerate",
                    fmt_taint(t)
                ),
            ));
        }
        if info.offline {
            if role == PodRole::Jobmanager {
                return Some((
                    LeaveCause::Offline,
                    format!("JobManager on offline node {name}"),
                ));
            }
            if !job.allow_offline {
                return Some((
                    LeaveCause::Offline,
                    format!("job no longer allows offline node {name}"),
                ));
            }
            if !info.lending_open {
                return Some((
                    LeaveCause::Offline,
                    format!("offline lending window closed on node {name}"),
                ));
            }
        }
        None
    }

    /// The running placement judged again by the rules placement keeps while a job runs,
    /// most important job first so that it keeps its place: a tenant's quota is filled in
    /// that order (the jobs past a shrunk limit must leave the site), and so is each node's
    /// room (a pod that no longer fits beside more important ones must leave it). A pod must
    /// also leave a node with a NoExecute taint it does not tolerate, and a node that no
    /// longer has the labels its nodeSelector or required affinity needs (Kubernetes ignores
    /// that during execution; twinsite's policy does not, and moves it at the budget's rate).
    ///
    /// Not judged here: NotReady and vanished nodes, sites out of reach (node and site loss
    /// belong to the failover engine), cordoned nodes (a drain evicts by itself), and
    /// offline capacity (the rebalancer's lending windows, which know the lead time).
    pub(crate) fn recheck(&mut self, running: &[JobPlacement]) -> Vec<RunningViolation> {
        let at = self.req.at;
        let mut order: Vec<(usize, &JobPlacement)> = running
            .iter()
            .filter_map(|rp| self.job_by_id(&rp.job).map(|j| (j, rp)))
            .collect();
        order.sort_by(|a, b| {
            (
                std::cmp::Reverse(self.jobs[a.0].priority),
                &self.jobs[a.0].id,
            )
                .cmp(&(
                    std::cmp::Reverse(self.jobs[b.0].priority),
                    &self.jobs[b.0].id,
                ))
        });
        order.dedup_by_key(|(j, _)| *j);
        let mut found = Vec::new();
        for (j, rp) in order {
            let job = self.jobs[j];
            let Some(&site) = self.cluster.site_index.get(&rp.site) else {
                continue;
            };
            let pods: Vec<(PodPlacement, usize)> = rp
                .pods
                .iter()
                .filter_map(|p| {
                    self.cluster.sites[site]
                        .node_by_name
                        .get(p.node.as_str())
                        .map(|&n| (p.clone(), n))
                })
                .collect();
            let violation = |kind, pods: Vec<PodPlacement>, reason: String| RunningViolation {
                job: job.id.clone(),
                priority: job.priority,
                kind,
                site: rp.site.clone(),
                pods,
                deadline: at,
                reason,
            };
            if let Some(short) = self.quota_shortfall(j, site) {
                // It runs until it moves: its pods keep their room, not its quota.
                for (p, n) in &pods {
                    self.cap.take(&self.cluster, *n, pod_request(job, p.role));
                }
                let mut all: Vec<PodPlacement> = rp.pods.clone();
                all.sort();
                found.push(violation(
                    RunningViolationKind::QuotaShrunk,
                    all,
                    format!(
                        "quota of tenant {} in {} shrank below what runs: {} over with this job",
                        job.tenant,
                        rp.site,
                        fmt_resources(&short)
                    ),
                ));
                continue;
            }
            self.quota_add(j, site);
            let mut kept: Vec<Pod> = Vec::new();
            for (pod, n) in pods {
                let info = &self.cluster.nodes[n];
                let name = &info.node.name;
                let request = pod_request(job, pod.role);
                let why = match self.pod_must_leave(j, pod.role, n) {
                    Some((LeaveCause::NoExecuteTaint, why)) => {
                        Some((RunningViolationKind::NoExecuteTaint, why))
                    }
                    _ if !super::super::compat::required_node_affinity_matches(
                        &job.node_selector,
                        job.node_affinity.as_ref(),
                        info.node,
                    ) =>
                    {
                        Some((
                            RunningViolationKind::NodeLabels,
                            format!(
                                "node {name} no longer has the labels the job's nodeSelector or required node affinity needs"
                            ),
                        ))
                    }
                    // A closed lending window leaves an offline node no room: that is the
                    // windows' verdict, with its deadline, not a capacity one.
                    // An offline node lending by usage with no fresh measurement: a missing
                    // figure is not a grown workload, so what runs there stays.
                    _ if info.lends_by_usage == Some(None) => None,
                    _ if (!info.offline || info.lending_open)
                        && !request.fits_in(&self.cap.room(&self.cluster, n)) =>
                    {
                        let mut holders: Vec<String> = self
                            .placed
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| {
                                p.as_ref()
                                    .is_some_and(|p| p.pods.iter().any(|&(_, _, m)| m == n))
                            })
                            .map(|(o, _)| self.jobs[o].id.to_string())
                            .collect();
                        holders.sort();
                        let by = if holders.is_empty() {
                            "pods of other workloads".to_string()
                        } else {
                            format!("jobs at least as important: {}", holders.join(", "))
                        };
                        let reason = match info.lends_by_usage {
                            Some(Some(usage)) => format!(
                                "node {name} needs its capacity back: its own workload uses {usage}, so it lends {}; its room is held by {by}",
                                info.borrow_cap
                            ),
                            _ => format!("node {name} over capacity: its room is held by {by}"),
                        };
                        Some((RunningViolationKind::OverCapacity, reason))
                    }
                    _ => None,
                };
                match why {
                    None => {
                        self.cap.take(&self.cluster, n, request);
                        kept.push((pod.role, pod.index, n));
                    }
                    Some((kind, reason)) => {
                        // Still there until it moves, unless it does not fit at all.
                        if kind != RunningViolationKind::OverCapacity {
                            self.cap.take(&self.cluster, n, request);
                        }
                        found.push(violation(kind, vec![pod], reason));
                    }
                }
            }
            self.placed[j] = Some(Placed { site, pods: kept });
        }
        found
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
                let why = self
                    .pod_must_leave(j, role, n)
                    .map(|(_, why)| why)
                    .or_else(|| {
                        (!r.fits_in(&self.cap.room(&self.cluster, n))).then(|| {
                            format!("node {} over capacity", self.cluster.nodes[n].node.name)
                        })
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
