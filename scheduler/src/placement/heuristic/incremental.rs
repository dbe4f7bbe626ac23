//! Incremental placement: one job at a time against the running placement, between rounds.
//! Never moves what runs except best-effort jobs it preempts; never breaks a rule the full round keeps.

use super::super::{PlacementRequest, Preemption};
use super::Packer;
use crate::model::{JobDemand, JobId, JobPlacement, Priority};

/// Places extra jobs one at a time against an existing placement, without re-planning: the
/// existing placements are taken as they are. For admission of new jobs between rounds.
///
/// The rules are the full round's, through the same code: the quota, the site order, the
/// gang packer, the failover reserves held back from lower tiers ([`Packer::hold_reserves_for`]
/// gives each job the reserves the full round would hold when it comes), and preemption of
/// best-effort jobs for a higher tier (the victims are placed again at once, or left out,
/// as the full round's last step does).
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

    /// Places `job` (all pods or none) and keeps it; `Err` says why it does not fit. It may
    /// preempt best-effort jobs ([`Self::preemptions`]); where they went, if anywhere, is
    /// [`Self::placement_of`].
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
        self.packer.hold_reserves_for(job.priority);
        self.packer.place_job(j)?;
        let placement = self
            .packer
            .placement_of(j)
            .ok_or_else(|| format!("job {} placed but not found", job.id))?;
        if !self.packer.pending_victims.is_empty() {
            self.packer.hold_reserves_for(Priority::BestEffort);
            self.packer.place_victims_again();
        }
        Ok(placement)
    }

    /// Every preemption so far: the best-effort job, the job that needed its room, where.
    pub fn preemptions(&self) -> &[Preemption] {
        &self.packer.preemptions
    }

    /// Where `id` runs in this placer's view (`None`: not placed, or preempted and fitting
    /// nowhere else).
    pub fn placement_of(&self, id: &JobId) -> Option<JobPlacement> {
        self.packer
            .job_by_id(id)
            .and_then(|j| self.packer.placement_of(j))
    }

    /// Takes a job back out (its pods free their room). False when it was not placed.
    pub fn remove(&mut self, id: &JobId) -> bool {
        self.packer
            .job_by_id(id)
            .and_then(|j| self.packer.release(j))
            .is_some()
    }
}
