//! Co-location: what each offline (HDFS/batch) pool can lend to our jobs, in which weekly
//! windows, and what the plan borrows at the report's instant.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ReportInputs;
use super::capacity::{pod_request, pool_of};
use crate::model::{JobDemand, JobId, LendingWindow, Node, OfflineLending, Resources, SiteId};
use crate::placement::PlacementPlan;

/// A lending window as a person reads it: `Mon-Fri 01:00-07:00 Asia/Shanghai`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowText {
    pub days: String,
    pub from: String,
    pub to: String,
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolLending {
    pub site: SiteId,
    pub pool: String,
    /// Nodes of the pool that take new pods.
    pub nodes: usize,
    pub allocatable: Resources,
    pub requested_by_other_pods: Resources,
    /// While a window is open: per node `min(fraction × allocatable − margin, free)`, summed.
    pub lendable: Resources,
    /// What the plan's pods request on the pool's nodes at the report's instant.
    pub borrowed_by_jobs: Resources,
    pub open_at_report_time: bool,
    pub windows: Vec<WindowText>,
    /// Hours the pool lends in the week (Monday 00:00 UTC on) that holds the report's instant.
    pub open_hours_per_week: f64,
    pub max_borrow_fraction: f64,
    pub safety_margin: Resources,
}

pub(super) fn lending(inputs: &ReportInputs, plan: &PlacementPlan) -> Vec<PoolLending> {
    let jobs: HashMap<&JobId, &JobDemand> = inputs.jobs.iter().map(|j| (&j.id, j)).collect();
    let mut out = Vec::new();
    for snap in inputs.sites {
        for (index, pool) in inputs.policy.pools.iter().enumerate() {
            let Some(lending) = &pool.offline else {
                continue;
            };
            let mut seen = HashSet::new();
            let members: HashSet<&str> = snap
                .nodes
                .iter()
                .filter(|n| seen.insert(n.name.as_str()))
                .filter(|n| n.accepts_new_pods() && pool_of(inputs, &snap.id, n) == Some(index))
                .map(|n| n.name.as_str())
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut other: HashMap<&str, Resources> = HashMap::new();
            for pod in &snap.running_pods {
                if members.contains(pod.node.as_str()) {
                    *other.entry(pod.node.as_str()).or_default() += pod.request;
                }
            }
            let mut entry = PoolLending {
                site: snap.id.clone(),
                pool: pool.name.clone(),
                nodes: members.len(),
                allocatable: Resources::ZERO,
                requested_by_other_pods: Resources::ZERO,
                lendable: Resources::ZERO,
                borrowed_by_jobs: Resources::ZERO,
                open_at_report_time: lending.is_open_at(inputs.at),
                windows: lending.windows.iter().map(window_text).collect(),
                open_hours_per_week: open_hours_in_week(lending, inputs.at),
                max_borrow_fraction: lending.max_borrow_fraction,
                safety_margin: lending.safety_margin,
            };
            let mut counted = HashSet::new();
            for node in &snap.nodes {
                if !members.contains(node.name.as_str()) || !counted.insert(node.name.as_str()) {
                    continue;
                }
                let used = other.get(node.name.as_str()).copied().unwrap_or_default();
                entry.allocatable += node.allocatable;
                entry.requested_by_other_pods += used;
                entry.lendable += lendable_on(lending, node, &used);
            }
            for placement in plan.placements.iter().filter(|p| p.site == snap.id) {
                let Some(job) = jobs.get(&placement.job) else {
                    continue;
                };
                for pod in &placement.pods {
                    if members.contains(pod.node.as_str()) {
                        entry.borrowed_by_jobs += pod_request(job, pod.role);
                    }
                }
            }
            out.push(entry);
        }
    }
    out
}

/// What one node lends while a window is open: the policy's cap, never more than is free
/// (and never below zero), per dimension.
pub(crate) fn lendable_on(lending: &OfflineLending, node: &Node, other: &Resources) -> Resources {
    let cap = lending.borrowable_on(node);
    let free = node.allocatable.saturating_sub(other);
    let dim = |c: i64, f: i64| c.min(f).max(0);
    Resources {
        cpu_milli: dim(cap.cpu_milli, free.cpu_milli),
        memory_bytes: dim(cap.memory_bytes, free.memory_bytes),
        pods: dim(cap.pods, free.pods),
    }
}

/// Minutes in which some window is open, counted over the week starting Monday 00:00 UTC
/// before `at` (timezones and DST are the windows' own), in hours.
pub(crate) fn open_hours_in_week(lending: &OfflineLending, at: chrono::DateTime<Utc>) -> f64 {
    let day = at.date_naive() - Duration::days(i64::from(at.weekday().num_days_from_monday()));
    let Some(start) = day
        .and_hms_opt(0, 0, 0)
        .and_then(|t| Utc.from_local_datetime(&t).single())
    else {
        return 0.0;
    };
    let open = (0..7 * 24 * 60)
        .filter(|m| lending.is_open_at(start + Duration::minutes(*m)))
        .count();
    open as f64 / 60.0
}

fn window_text(w: &LendingWindow) -> WindowText {
    let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    WindowText {
        days: days_text(&w.days),
        from: hm(w.start_minute),
        to: hm(w.end_minute),
        timezone: w.timezone.name().to_string(),
    }
}

/// `Mon-Fri`, `Sat,Sun`, `every day`: runs of consecutive days are joined with a dash.
fn days_text(days: &[chrono::Weekday]) -> String {
    let mut idx: Vec<u32> = days.iter().map(|d| d.num_days_from_monday()).collect();
    idx.sort_unstable();
    idx.dedup();
    if idx.len() == 7 {
        return "every day".to_string();
    }
    let name = |i: u32| {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
            .get(i as usize)
            .copied()
            .unwrap_or("?")
    };
    let mut parts = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && idx[j + 1] == idx[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => name(idx[i]).to_string(),
            1 => format!("{},{}", name(idx[i]), name(idx[j])),
            _ => format!("{}-{}", name(idx[i]), name(idx[j])),
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LendBasis;
    use chrono::Weekday::*;

    #[test]
    fn runs_of_days_are_joined_with_a_dash() {
        assert_eq!(days_text(&[Mon, Tue, Wed, Thu, Fri]), "Mon-Fri");
        assert_eq!(days_text(&[Sat, Sun]), "Sat,Sun");
        assert_eq!(days_text(&[Sun, Mon, Wed]), "Mon,Wed,Sun");
        assert_eq!(days_text(&[Mon, Tue, Wed, Thu, Fri, Sat, Sun]), "every day");
    }

    fn node(allocatable: Resources, owner_usage: Option<Resources>) -> Node {
        Node {
            name: "hdfs-1".into(),
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            ready: true,
            allocatable,
            owner_usage,
        }
    }

    fn lending(lend_by: LendBasis) -> OfflineLending {
        OfflineLending {
            windows: Vec::new(),
            max_borrow_fraction: 0.5,
            safety_margin: Resources::new(1000, 0, 0),
            lend_by,
        }
    }

    #[test]
    fn a_node_lends_no_more_than_it_has_free() {
        let lending = lending(LendBasis::Requests);
        let node = node(Resources::new(16_000, 64, 100), None);
        // Cap is 8000 − 1000 = 7000 m, but others already take 12000 m of 16000 m.
        let lent = lendable_on(&lending, &node, &Resources::new(12_000, 0, 0));
        assert_eq!(lent.cpu_milli, 4_000);
        assert_eq!(lent.memory_bytes, 32);
        let over = lendable_on(&lending, &node, &Resources::new(20_000, 0, 0));
        assert_eq!(over.cpu_milli, 0, "an over-committed node lends nothing");
    }

    #[test]
    fn a_node_lending_by_usage_lends_what_its_own_workload_leaves_up_to_the_share() {
        let lending = lending(LendBasis::Usage);
        let idle = node(
            Resources::new(16_000, 64, 100),
            Some(Resources::new(2_000, 8, 0)),
        );
        // Reclaimable 14000 − 1000 margin is more than the share (8000 − 1000): the share wins.
        assert_eq!(
            lendable_on(&lending, &idle, &Resources::ZERO).cpu_milli,
            7_000
        );
        let busy = node(
            Resources::new(16_000, 64, 100),
            Some(Resources::new(12_000, 60, 0)),
        );
        // The batch workload uses 12000 m: 4000 − 1000 margin are left to lend.
        let lent = lendable_on(&lending, &busy, &Resources::ZERO);
        assert_eq!(lent.cpu_milli, 3_000);
        assert_eq!(lent.memory_bytes, 4);
        let unmeasured = node(Resources::new(16_000, 64, 100), None);
        assert_eq!(
            lendable_on(&lending, &unmeasured, &Resources::ZERO),
            Resources::ZERO,
            "a node with no usage measurement lends nothing"
        );
    }
}
