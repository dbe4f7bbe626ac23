//! Why a job did not fit, in words a person can act on: per allowed site the dominant
//! reason (quota, reserve, the filter most nodes failed, or the resource that ran out).

use std::collections::BTreeMap;

use super::heuristic::{Packer, fmt_resources};
use super::state::Filtered;
use crate::model::{PodRole, Resources};

fn filter_text(f: &Filtered) -> String {
    match f {
        Filtered::NotAccepting => "every candidate node is cordoned or NotReady".to_string(),
        Filtered::OfflineNotAllowed => {
            "only offline-pool nodes match and the job does not allow offline".to_string()
        }
        Filtered::OfflineClosed => "offline lending window closed".to_string(),
        Filtered::Taint(t) => {
            let effect = match t.effect {
                crate::k8s::TaintEffect::NoSchedule => "NoSchedule",
                crate::k8s::TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                crate::k8s::TaintEffect::NoExecute => "NoExecute",
            };
            if t.value.is_empty() {
                format!("no node tolerates taint {}:{effect}", t.key)
            } else {
                format!("no node tolerates taint {}={}:{effect}", t.key, t.value)
            }
        }
        Filtered::Affinity => "no node matches the nodeSelector/required node affinity".to_string(),
    }
}

fn cpu(milli: i64) -> String {
    let v = milli as f64 / 1000.0;
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn gib(bytes: i64) -> String {
    let v = bytes as f64 / super::GIB;
    let s = format!("{v:.1}");
    format!("{} GiB", s.trim_end_matches('0').trim_end_matches('.'))
}

fn insufficient(rooms: &[Resources], pod: Resources, what: &str) -> String {
    let largest = rooms
        .iter()
        .fold(Resources::new(i64::MIN, i64::MIN, i64::MIN), |a, r| {
            Resources::new(
                a.cpu_milli.max(r.cpu_milli),
                a.memory_bytes.max(r.memory_bytes),
                a.pods.max(r.pods),
            )
        });
    if largest.memory_bytes < pod.memory_bytes {
        format!(
            "insufficient memory: largest free {}, {what} needs {}",
            gib(largest.memory_bytes.max(0)),
            gib(pod.memory_bytes)
        )
    } else if largest.cpu_milli < pod.cpu_milli {
        format!(
            "insufficient cpu: largest free {} cpu, {what} needs {} cpu",
            cpu(largest.cpu_milli.max(0)),
            cpu(pod.cpu_milli)
        )
    } else if largest.pods < pod.pods {
        format!("insufficient pods: every matching node is at its pod limit ({what})")
    } else {
        format!(
            "fragmented: no single node has {} free for the {what}",
            fmt_resources(&pod)
        )
    }
}

impl Packer<'_, '_> {
    /// One reason per tried site, `site: reason; site: reason`.
    pub(crate) fn diagnose(&mut self, j: usize, sites: &[usize]) -> String {
        let parts: Vec<String> = sites
            .iter()
            .map(|&s| {
                let reason = self.diagnose_site(j, s);
                format!("{}: {reason}", self.cluster.sites[s].id)
            })
            .collect();
        parts.join("; ")
    }

    fn diagnose_site(&mut self, j: usize, s: usize) -> String {
        let job = self.jobs[j];
        let site_id = self.cluster.sites[s].id.clone();
        if let Some(missing) = self.quota_shortfall(j, s) {
            let mut what = Vec::new();
            if missing.cpu_milli > 0 {
                what.push(format!("{} cpu", cpu(missing.cpu_milli)));
            }
            if missing.memory_bytes > 0 {
                what.push(format!("{} memory", gib(missing.memory_bytes)));
            }
            if missing.pods > 0 {
                what.push(format!("{} pods", missing.pods));
            }
            return format!(
                "quota: tenant {} in {site_id} needs {} more",
                job.tenant,
                what.join(", ")
            );
        }
        let need: Vec<(PodRole, u32)> = std::iter::once((PodRole::Jobmanager, 0))
            .chain((0..job.task_managers).map(|i| (PodRole::Taskmanager, i)))
            .collect();
        if self.has_shadow_in(s) {
            let cap = self.capacity_without_shadow();
            if self.pack(&cap, j, s, &[], &need).is_some() {
                let scopes: Vec<String> = self
                    .req
                    .policy
                    .reserves
                    .iter()
                    .filter(|r| r.site == site_id && job.priority < r.min_priority)
                    .map(|r| format!("{} {}", r.protects, r.min_priority))
                    .collect();
                return format!("reserve in {site_id} for {} jobs", scopes.join(", "));
            }
        }
        let nodes = self.cluster.sites[s].nodes.clone();
        if nodes.is_empty() {
            return "the site has no nodes".to_string();
        }
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible = Vec::new();
        for n in nodes {
            match self.verdict(j, n) {
                Ok(_) => feasible.push(n),
                Err(f) => *failed.entry(filter_text(&f)).or_default() += 1,
            }
        }
        if feasible.is_empty() {
            let dominant = failed
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(t, _)| t.clone());
            return dominant.unwrap_or_else(|| "no node matches".to_string());
        }
        let rooms = |e: &Self, only_online: bool| -> Vec<Resources> {
            feasible
                .iter()
                .filter(|&&n| !only_online || !e.cluster.nodes[n].offline)
                .map(|&n| e.cap.room(&e.cluster, n))
                .collect()
        };
        let jm_rooms = rooms(self, true);
        if jm_rooms.is_empty() {
            return "only borrowed offline nodes match and a JobManager never runs on one"
                .to_string();
        }
        if !jm_rooms.iter().any(|r| job.job_manager.fits_in(r)) {
            return insufficient(&jm_rooms, job.job_manager, "JobManager");
        }
        if job.task_managers > 0 {
            let tm = job.task_manager;
            let tm_rooms = rooms(self, false);
            if !tm_rooms.iter().any(|r| tm.fits_in(r)) {
                return insufficient(&tm_rooms, tm, "TaskManager");
            }
            let per = |free: i64, need: i64| {
                if need <= 0 {
                    i64::MAX
                } else {
                    free.max(0) / need
                }
            };
            let slots: i64 = tm_rooms
                .iter()
                .map(|r| {
                    per(r.cpu_milli, tm.cpu_milli)
                        .min(per(r.memory_bytes, tm.memory_bytes))
                        .min(per(r.pods, tm.pods))
                        .min(i64::from(job.task_managers))
                })
                .fold(0i64, |a, b| a.saturating_add(b));
            if slots < i64::from(job.task_managers) {
                return format!(
                    "insufficient capacity: room for {slots} of {} TaskManagers ({} each)",
                    job.task_managers,
                    fmt_resources(&tm)
                );
            }
        }
        "no node combination fits the whole gang (JobManager plus TaskManagers)".to_string()
    }
}
