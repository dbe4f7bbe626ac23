//! Incremental placement: one job at a time against the running placement, between rounds.
//! Never moves what runs; never places a job where the full planner would not.

use super::super::PlacementRequest;
use super::{Packer, expected_pods};
use crate::model::{JobDemand, JobId, JobPlacement};

/// Places extra jobs one at a time against an existing plan, without re-planning: the
/// existing placements are taken as they are. For admission of a new job between rounds.
pub struct IncrementalPlacer<'r, 'a> {
    packer: Packer<'r, 'a>,
}

impl<'r, 'a> IncrementalPlacer<'r, 'a> {
    /// `req.running` is ignored; `existing` is the state to build on.
    pub fn new(req: &'r PlacementRequest<'a>, existing: &'a [JobPlacement]) -> Self {
        let mut packer = Packer::new(req, None);
        packer.adopt(existing);
        IncrementalPlacer { packer }
    }

    /// Places `job` (all pods or none) and keeps it; `Err` says why it does not fit. Never
    /// preempts and ignores failover reserves: admission is checked again by the next round.
    pub fn place_one(&mut self, job: &'a JobDemand) -> Result<JobPlacement, String> {
        if let Some(reason) = super::super::refusal(job) {
            return Err(reason);
        }
        let j = match self.packer.job_by_id(&job.id) {
            Some(j) if self.packer.placed[j].is_some() => {
                return Err(format!("job {} is already placed", job.id));
            }
            Some(j) => j,
            None => self
                .packer
                .add_job(job)
                .ok_or_else(|| format!("job {} is already known", job.id))?,
        };
        let sites = self.packer.site_order(j);
        if sites.is_empty() {
            return Err(format!("no site allowed for {}", job.id));
        }
        let need = expected_pods(job);
        for &s in &sites {
            if !self.packer.quota_ok_with(&self.packer.quota_used, j, s) {
                continue;
            }
            if let Some(pods) = self.packer.pack_live(j, s, &[], &need) {
                self.packer.place_at(j, s, pods.clone());
                return Ok(JobPlacement {
                    job: job.id.clone(),
                    site: self.packer.cluster.sites[s].id.clone(),
                    pods: self.packer.pod_placements(&pods),
                });
            }
        }
        Err(self.packer.diagnose(j, &sites))
    }

    /// Takes a job back out (its pods free their room). False when it was not placed.
    pub fn remove(&mut self, id: &JobId) -> bool {
        self.packer
            .job_by_id(id)
            .and_then(|j| self.packer.release(j))
            .is_some()
    }
}
