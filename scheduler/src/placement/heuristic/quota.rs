//! Tenant quota per site, as the packer books it: a job fits a site only if its tenant's use
//! there plus the job stays within the limit. Never changes capacity, never places a pod.

use std::collections::BTreeMap;

use super::Packer;
use crate::model::{Resources, TenantId};

impl<'a> Packer<'_, 'a> {
    pub(super) fn quota_ok_with(
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

    pub(super) fn quota_add(&mut self, j: usize, site: usize) {
        let job = self.jobs[j];
        *self.quota_used.entry((&job.tenant, site)).or_default() += job.total();
    }

    pub(super) fn quota_remove(&mut self, j: usize, site: usize) {
        let job = self.jobs[j];
        if let Some(u) = self.quota_used.get_mut(&(&job.tenant, site)) {
            *u -= job.total();
        }
    }
}
