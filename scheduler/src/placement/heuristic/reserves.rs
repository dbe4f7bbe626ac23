//! Failover reserves: the room a site keeps for the protected jobs of the site it backs up,
//! held back from lower tiers, and the reports. Never lets a lower tier take that room.

use std::collections::BTreeMap;

use super::super::state::Capacity;
use super::super::{ReserveReport, ReserveScope};
use super::{Packer, Pod, expected_pods, pod_request};
use crate::model::{Priority, Resources, SiteId};

impl Packer<'_, '_> {
    /// Jobs placed in `protects` with at least `min` priority that may run in `site` (a job
    /// pinned to its own site cannot fail over, so no reserve can be kept for it).
    pub(super) fn protected_jobs(
        &self,
        site: &SiteId,
        protects: usize,
        min: Priority,
    ) -> Vec<usize> {
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
    pub(super) fn reserve_trial(
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
    pub(super) fn install_reserves_above(&mut self, priority: Priority) {
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
                    self.shadow.push((ri, n, pod_request(self.jobs[j], role)));
                }
            }
            self.reserve_stale[ri] = false;
        }
    }

    /// Incremental placement: the reserves as the full round holds them when a job of
    /// `priority` comes. Those above it are held (installed again when a placement since may
    /// have changed them), the others lifted: a job of a reserve's tier may use its room, as
    /// the full round places the higher tiers before any reserve is held. A protected job
    /// placed since always lifts the reserve (its tier is not below it), so a held shadow is
    /// never short of a protected job; staleness only keeps it from holding more than it must.
    pub(super) fn hold_reserves_for(&mut self, priority: Priority) {
        for ri in 0..self.req.policy.reserves.len() {
            let wanted = priority < self.req.policy.reserves[ri].min_priority;
            if self.reserves_installed[ri] && (!wanted || self.reserve_stale[ri]) {
                self.lift_reserve(ri);
            }
        }
        self.install_reserves_above(priority);
    }

    /// Gives the room reserve `ri` holds back.
    fn lift_reserve(&mut self, ri: usize) {
        let cluster = &self.cluster;
        let cap = &mut self.cap;
        self.shadow.retain(|&(owner, n, r)| {
            if owner == ri {
                cap.give_back(cluster, n, r);
            }
            owner != ri
        });
        self.reserves_installed[ri] = false;
        self.reserve_outcome.remove(&ri);
    }

    /// Job `j` was placed in or released from `site`: a reserve whose protected jobs changed
    /// must hold something else now; one that could not hold them all may fit more when its
    /// site gets room back. (Room given back never makes a held shadow wrong, so a reserve
    /// that holds everything stays as it is: recomputing it costs a trial packing of every
    /// protected job.)
    pub(super) fn note_reserve_change(&mut self, j: usize, site: usize, released: bool) {
        let priority = self.jobs[j].priority;
        for (ri, r) in self.req.policy.reserves.iter().enumerate() {
            let at = |id| self.cluster.site_index.get(id) == Some(&site);
            let short = self
                .reserve_outcome
                .get(&ri)
                .is_some_and(|(_, not)| !not.is_empty());
            if (at(&r.protects) && priority >= r.min_priority) || (released && short && at(&r.site))
            {
                self.reserve_stale[ri] = true;
            }
        }
    }

    /// Capacity with the reserve shadows given back (what a job would see without reserves).
    pub(crate) fn capacity_without_shadow(&self) -> Capacity {
        let mut cap = self.cap.clone();
        for &(_, n, r) in &self.shadow {
            cap.give_back(&self.cluster, n, r);
        }
        cap
    }

    pub(crate) fn has_shadow_in(&self, site: usize) -> bool {
        self.req.policy.reserves.iter().enumerate().any(|(ri, r)| {
            self.reserves_installed[ri] && self.cluster.site_index.get(&r.site) == Some(&site)
        })
    }

    /// Installed reserves report what their shadow held; protected jobs that arrived later
    /// and reserves never installed are trial-packed on the final capacity (shadows still
    /// taken, so reserves sharing a site do not count the same room twice).
    pub(super) fn reserve_reports(&mut self) -> BTreeMap<SiteId, ReserveReport> {
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
