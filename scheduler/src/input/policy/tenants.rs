//! The tenant and priority sections: `quotas` per tenant and site, `failoverReserve` between
//! sites, and the preemption rules of each priority tier (`priorities`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::file::{PrioritiesSpec, QuotaSpec, ReserveSpec};
use super::sites::check_known_site;
use crate::input::common::{check_name, cpu_milli, integer_value};
use crate::input::error::Problems;
use crate::model::{FailoverReserve, Priority, Resources, SiteId, TenantId, TenantQuota};

/// Preemption rules of one tier, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRules {
    pub preempts: bool,
    pub preemptible: bool,
}

impl TierRules {
    /// Critical and high preempt and are never preempted; normal and best-effort may be.
    pub fn default_for(priority: Priority) -> TierRules {
        match priority {
            Priority::Critical | Priority::High => TierRules {
                preempts: true,
                preemptible: false,
            },
            Priority::Normal | Priority::BestEffort => TierRules {
                preempts: false,
                preemptible: true,
            },
        }
    }
}

pub(super) fn resolve_quotas(
    specs: &[QuotaSpec],
    site_names: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Vec<TenantQuota> {
    let mut quotas = Vec::new();
    let mut quota_keys = BTreeSet::new();
    for (i, quota) in specs.iter().enumerate() {
        let at = format!("quotas[{i}]");
        check_name(problems, &format!("{at}.tenant"), &quota.tenant);
        check_known_site(problems, site_names, format!("{at}.site"), &quota.site);
        if !quota_keys.insert((quota.tenant.as_str(), quota.site.as_str())) {
            problems.field(
                &at,
                format!(
                    "a second quota for tenant {:?} in site {:?}",
                    quota.tenant, quota.site
                ),
            );
        }
        let cpu = cpu_milli(problems, &format!("{at}.cpu"), &quota.cpu, false);
        let memory = integer_value(problems, &format!("{at}.memory"), &quota.memory, false);
        if quota.pods == Some(0) {
            problems.field(format!("{at}.pods"), "must be positive, found 0");
        }
        if let (Some(cpu), Some(memory)) = (cpu, memory) {
            quotas.push(TenantQuota {
                tenant: TenantId(quota.tenant.clone()),
                site: SiteId(quota.site.clone()),
                limit: Resources::new(cpu, memory, quota.pods.map_or(i64::MAX, i64::from)),
            });
        }
    }
    quotas
}

pub(super) fn resolve_reserves(
    specs: &[ReserveSpec],
    site_names: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Vec<FailoverReserve> {
    let mut reserves = Vec::new();
    let mut reserve_keys = BTreeSet::new();
    for (i, reserve) in specs.iter().enumerate() {
        let at = format!("failoverReserve[{i}]");
        check_known_site(problems, site_names, format!("{at}.site"), &reserve.site);
        check_known_site(
            problems,
            site_names,
            format!("{at}.protects"),
            &reserve.protects,
        );
        if reserve.site == reserve.protects {
            problems.field(
                format!("{at}.protects"),
                "a site cannot keep a reserve for its own loss",
            );
        }
        if !reserve_keys.insert((reserve.site.as_str(), reserve.protects.as_str())) {
            problems.field(
                &at,
                format!(
                    "a second reserve of {:?} for {:?}",
                    reserve.site, reserve.protects
                ),
            );
        }
        reserves.push(FailoverReserve {
            site: SiteId(reserve.site.clone()),
            protects: SiteId(reserve.protects.clone()),
            min_priority: reserve.min_priority,
        });
    }
    reserves
}

/// Each tier's rules: what `priorities` says, its defaults for what it leaves out.
pub(super) fn resolve_tiers(priorities: &PrioritiesSpec) -> BTreeMap<Priority, TierRules> {
    let mut tiers = BTreeMap::new();
    for (priority, spec) in [
        (Priority::Critical, &priorities.critical),
        (Priority::High, &priorities.high),
        (Priority::Normal, &priorities.normal),
        (Priority::BestEffort, &priorities.best_effort),
    ] {
        let default = TierRules::default_for(priority);
        let spec = spec.clone().unwrap_or_default();
        tiers.insert(
            priority,
            TierRules {
                preempts: spec.preempts.unwrap_or(default.preempts),
                preemptible: spec.preemptible.unwrap_or(default.preemptible),
            },
        );
    }
    tiers
}
