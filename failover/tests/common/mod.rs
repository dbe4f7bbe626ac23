//! Fixtures shared by the engine tests and the simulation: time, jobs, a placer.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use failover::*;
use scheduler::model::{
    JobDemand, JobId, JobPlacement, PodPlacement, PodRole, Priority, Resources, SiteConstraint,
    SiteId, TenantId,
};

pub fn t(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
}

pub fn site(name: &str) -> SiteId {
    SiteId(name.to_string())
}

pub fn job(name: &str) -> JobId {
    JobId::new("ns", name)
}

pub fn spec(name: &str, priority: Priority, mode: FailoverMode, home: &str) -> JobSpec {
    JobSpec {
        demand: JobDemand {
            id: job(name),
            tenant: TenantId("t".into()),
            priority,
            job_manager: Resources::new(1000, 1 << 30, 1),
            task_manager: Resources::new(2000, 4 << 30, 1),
            task_managers: 1,
            sites: SiteConstraint {
                preferred: Some(site(home)),
                allowed: vec![],
            },
            node_selector: BTreeMap::new(),
            node_affinity: None,
            tolerations: vec![],
            allow_offline: false,
        },
        mode,
        site_moves: SiteMoves::Automatic,
        jar_missing: BTreeMap::new(),
    }
}

pub fn checkpoint(
    at_site: &str,
    generation: u64,
    id: u64,
    completed_at: Timestamp,
) -> CheckpointPointer {
    CheckpointPointer {
        site: site(at_site),
        generation,
        id,
        path: format!("hdfs://{at_site}/chk/g{generation}/chk-{id}"),
        completed_at,
        kind: RestorePointKind::Checkpoint,
    }
}

/// Places every job on the first node of its site's list not to be avoided; jobs named in
/// `refuse` never fit. Node lists per site: `<site>-1`, `<site>-2`, `<site>-3`.
#[derive(Debug, Default)]
pub struct TestPlacer {
    pub refuse: BTreeSet<JobId>,
    pub preempt: Vec<JobId>,
}

impl Placer for TestPlacer {
    fn place(
        &self,
        site: &SiteId,
        jobs: &[JobDemand],
        avoid: &BTreeSet<String>,
    ) -> PlacementOutcome {
        let node = (1..=3)
            .map(|i| format!("{site}-{i}"))
            .find(|n| !avoid.contains(n));
        let mut outcome = PlacementOutcome {
            preempt: self.preempt.clone(),
            ..PlacementOutcome::default()
        };
        for d in jobs {
            match (&node, self.refuse.contains(&d.id)) {
                (Some(node), false) => outcome.placed.push(placement(&d.id, site, node)),
                _ => outcome.not_fitting.push(NotFitting {
                    job: d.id.clone(),
                    reason: "not enough cpu".into(),
                    missing: Resources::new(3000, 0, 0),
                }),
            }
        }
        outcome
    }
}

pub fn placement(job: &JobId, site: &SiteId, node: &str) -> JobPlacement {
    JobPlacement {
        job: job.clone(),
        site: site.clone(),
        pods: vec![
            PodPlacement {
                role: PodRole::Jobmanager,
                index: 0,
                node: node.to_string(),
            },
            PodPlacement {
                role: PodRole::Taskmanager,
                index: 0,
                node: node.to_string(),
            },
        ],
    }
}

/// Commands that act on the world: everything but `Persist` and `Audit`.
pub fn actions(commands: &[Command]) -> Vec<Command> {
    commands
        .iter()
        .filter(|c| !matches!(c, Command::Persist(_) | Command::Audit(_)))
        .cloned()
        .collect()
}

/// True for commands that change something outside the engine.
pub fn is_mutating(c: &Command) -> bool {
    !matches!(c, Command::ReportPlan(_) | Command::Rejected { .. })
}
