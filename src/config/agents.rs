//! The `agents` section: the sites guarded by a `twinsite agent` and their lease timing.
//! Must never: accept a timing under which a cut-off site could run on after its jobs moved.

use std::time::Duration;

use scheduler::input::{Policy, Problems, parse_duration};

use super::file::AgentsSpec;
use super::resolve::duration;
use super::resolved::AgentsConfig;

/// The `agents` section: durations, sites the policy knows, etcd present when any site has
/// an agent, and the timing argument against `failover.siteGrace`.
pub(super) fn resolve_agents(
    spec: &AgentsSpec,
    policy: Option<&Policy>,
    etcd: bool,
    site_grace: Option<Duration>,
    problems: &mut Problems,
) -> Option<AgentsConfig> {
    let lease_ttl = duration(problems, "agents.leaseTtl", &spec.lease_ttl);
    let clock_skew_margin = match parse_duration(&spec.clock_skew_margin) {
        Ok(d) => Some(d),
        Err(message) => {
            problems.field("agents.clockSkewMargin", message);
            None
        }
    };
    let stop_within = duration(problems, "agents.stopWithin", &spec.stop_within);
    let interval = duration(problems, "agents.interval", &spec.interval);
    let mut sites = Vec::new();
    for (i, name) in spec.sites.iter().enumerate() {
        let id = scheduler::model::SiteId(name.clone());
        if let Some(policy) = policy
            && policy.site(&id).is_none()
        {
            problems.field(
                format!("agents.sites[{i}]"),
                format!("the policy has no site {name:?}"),
            );
        }
        if sites.contains(&id) {
            problems.field(
                format!("agents.sites[{i}]"),
                format!("{name:?} is listed twice"),
            );
        }
        sites.push(id);
    }
    if !sites.is_empty() && !etcd {
        problems.field(
            "agents.sites",
            "site agents keep their leases in etcd: configure state.etcd, or list no sites",
        );
    }
    let timing = failover::agent::AgentTiming {
        lease_ttl: lease_ttl?,
        clock_skew_margin: clock_skew_margin?,
        stop_within: stop_within?,
    };
    let interval = interval?;
    // The timing binds only sites guarded by a `twinsite agent`; in-process agents hold the
    // controller's own session as their lease.
    if let Some(grace) = site_grace.filter(|_| !sites.is_empty()) {
        match timing.check(grace) {
            Ok(()) => {}
            Err(failover::agent::TimingError::TtlTooShort { found }) => problems.field(
                "agents.leaseTtl",
                format!("must be at least 2s (etcd's lease granularity is 1s), found {found:?}"),
            ),
            Err(failover::agent::TimingError::SlowerThanGrace { sum, grace, .. }) => {
                problems.field(
                    "agents.leaseTtl",
                    format!(
                        "agents.leaseTtl + agents.clockSkewMargin + agents.stopWithin = {sum:?} must be below failover.siteGrace ({grace:?}): \
                         otherwise the controller may relaunch a cut-off site's jobs before its agent has stopped them"
                    ),
                )
            }
        }
    }
    if interval * 2 > timing.lease_ttl {
        problems.field(
            "agents.interval",
            format!(
                "{interval:?} must be at most half of agents.leaseTtl ({:?}): an agent looks at its lease once per interval",
                timing.lease_ttl
            ),
        );
    }
    Some(AgentsConfig {
        sites,
        timing,
        interval,
    })
}
