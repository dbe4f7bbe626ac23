//! What the driver's commands do in the world: records, site marks, launches, fences, savepoints.
//! It must never let a command succeed that a real site would refuse (epoch, room, cut off).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use scheduler::model::{JobId, JobPlacement, Node, SiteId, SiteSnapshot};

use crate::driver::{Launch, Report};
use crate::engine::{Command, Event, FailoverAudit};
use crate::placer::SchedulerPlacer;
use crate::sim::report::{CheckpointRecord, EntryKind, NotRelaunched, Recovery};
use crate::types::{
    CheckpointPointer, PlacedJob, PlacementOutcome, Placer, RelaunchReason, RestorePointKind,
    StoredJob,
};

use super::*;

impl State {
    pub(super) fn stored_jobs(&self) -> Vec<StoredJob> {
        self.jobs
            .iter()
            .map(|(id, job)| StoredJob {
                id: id.clone(),
                placed: self.stored.get(id).map(|(site, generation)| PlacedJob {
                    spec: job.spec.clone(),
                    site: site.clone(),
                    generation: *generation,
                }),
            })
            .collect()
    }

    /// The scheduler over the world's current nodes and running generations.
    pub(super) fn place(
        &self,
        site: &SiteId,
        jobs: &[scheduler::model::JobDemand],
        avoid: &BTreeSet<String>,
    ) -> PlacementOutcome {
        let Some(s) = self.sites.get(site) else {
            return PlacementOutcome::default();
        };
        let snapshot = SiteSnapshot {
            id: site.clone(),
            nodes: s
                .nodes
                .iter()
                .map(|(name, n)| Node {
                    name: name.clone(),
                    labels: BTreeMap::new(),
                    taints: Vec::new(),
                    unschedulable: false,
                    ready: n.alive,
                    allocatable: n.allocatable,
                    owner_usage: None,
                })
                .collect(),
            running_pods: Vec::new(),
        };
        let running: Vec<JobPlacement> =
            s.instances.values().map(|i| i.placement.clone()).collect();
        let demands = self.jobs.values().map(|j| j.spec.demand.clone()).collect();
        SchedulerPlacer::new(vec![snapshot], running, demands, &self.policy, self.now)
            .place(site, jobs, avoid)
    }

    pub(super) fn priority(&self, job: &JobId) -> scheduler::model::Priority {
        self.jobs
            .get(job)
            .map_or(scheduler::model::Priority::Normal, |j| {
                j.spec.demand.priority
            })
    }

    pub(super) fn answer(&mut self, after: Duration, event: Event) -> Option<Event> {
        if after.is_zero() {
            return Some(event);
        }
        self.seq += 1;
        self.due
            .insert((plus(self.now, after), self.seq), Due::Answer(event));
        None
    }

    /// An engine audit entry on the timeline; the registration of every job, and the
    /// relaunch and the report of a job not relaunched (logged as actions), would only
    /// repeat themselves.
    pub(super) fn audit(&mut self, a: FailoverAudit) {
        self.trace_line(format!("    -> Audit({})", a.message));
        if a.message.starts_with("registered at generation")
            || a.message.starts_with("relaunching as generation")
            || a.message.starts_with("not relaunched:")
        {
            return;
        }
        let text = match &a.job {
            Some(j) => format!("{j}: {}", a.message),
            None => match &a.site {
                Some(s) => format!("site {s}: {}", a.message),
                None => a.message.clone(),
            },
        };
        self.log(EntryKind::Engine, a.job.as_ref(), a.site.as_ref(), text);
    }

    pub(super) fn report(&mut self, report: Report<'_>) {
        match report {
            Report::Recovery(r) => self.report_recovery(r),
            Report::NotRelaunched {
                job,
                reason,
                missing,
            } => {
                self.trace_line(format!("    -> ReportNotRelaunched({job}: {reason})"));
                let priority = self.priority(job);
                self.log(
                    EntryKind::Action,
                    Some(job),
                    None,
                    format!("{job} not relaunched: {reason}"),
                );
                let at = self.elapsed();
                self.not_relaunched.push(NotRelaunched {
                    job: job.clone(),
                    priority,
                    at,
                    reason: reason.to_string(),
                    missing: *missing,
                });
            }
            Report::Plan(plan) => {
                let moves: Vec<String> = plan
                    .moves
                    .iter()
                    .map(|m| {
                        format!(
                            "{} (expected RPO {})",
                            m.job,
                            m.expected_rpo
                                .map_or("none".into(), crate::sim::report::fmt_duration)
                        )
                    })
                    .collect();
                let not: Vec<String> = plan
                    .not_fitting
                    .iter()
                    .map(|n| format!("{} ({})", n.job, n.reason))
                    .collect();
                let text = format!(
                    "dry run {} -> {} ({:?}): moves [{}]; does not move [{}]; preempts [{}]",
                    plan.from,
                    plan.to,
                    plan.mode,
                    moves.join(", "),
                    not.join(", "),
                    plan.preempt
                        .iter()
                        .map(|j| j.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.log(EntryKind::Action, None, Some(&plan.from), text);
            }
            Report::Rejected { request, error } => {
                self.log(
                    EntryKind::Action,
                    None,
                    None,
                    format!("request rejected: {error} ({request:?})"),
                );
            }
            Report::Accepted { .. } => {}
        }
    }

    /// Epoch admission: once a site is marked lost, every generation of its old epoch is
    /// held and never runs again. Idempotent (a new leader marks a lost site again).
    pub(super) fn mark_site_lost(&mut self, site: SiteId, epoch: u64) {
        self.trace_line(format!("    -> MarkSiteLost({site}, epoch {epoch})"));
        let Some(w) = self.sites.get_mut(&site) else {
            return;
        };
        if w.marked_epoch >= epoch {
            return;
        }
        w.marked_epoch = epoch;
        w.marked_lost = true;
        // Generations frozen with a dark site are held by its agent's epoch admission when
        // they come back. What still runs in a site that is up is not held by magic: its
        // agent stops it (self-fencing once its lease ran out, or placement and epoch
        // admission once it reads the store), and the timing argument says it has by now.
        for i in w.dormant.values_mut() {
            i.held = true;
            if i.counts_as_running() {
                i.state = InstanceState::Restarting;
            }
        }
        self.stats.site_losses += 1;
        self.log(
            EntryKind::Action,
            None,
            Some(&site),
            format!("mark site {site} lost (epoch {epoch}): its old generations are held"),
        );
    }

    /// Idempotent: a new leader marks a recovered site again.
    pub(super) fn mark_site_recovered(&mut self, site: SiteId, epoch: u64) {
        self.trace_line(format!("    -> MarkSiteRecovered({site}, epoch {epoch})"));
        let Some(w) = self.sites.get_mut(&site) else {
            return;
        };
        if !w.marked_lost {
            return;
        }
        w.marked_lost = false;
        self.stats.site_recoveries += 1;
        self.log(
            EntryKind::Action,
            None,
            Some(&site),
            format!("mark site {site} recovered (epoch {epoch})"),
        );
    }

    /// The controller writes the job's new generation and placement, then asks the site to
    /// launch it; checks that the launch restores from something readable there and that
    /// generations never go back.
    pub(super) fn relaunch(&mut self, launch: Launch) -> Option<Event> {
        let Launch {
            job,
            generation,
            site,
            placement,
            restore_from,
            reason,
        } = launch;
        self.trace_line(format!(
            "    -> Relaunch({job} gen {generation} in {site} from {:?})",
            restore_from.as_ref().map(|r| (&r.site, r.generation, r.id))
        ));
        let previous = self.issued.get(&job).cloned();
        let mut nodes: Vec<String> = placement.pods.iter().map(|p| p.node.clone()).collect();
        nodes.dedup();
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "relaunch {job} as generation {generation} in {site} on {} {}: {reason}",
                if nodes.is_empty() {
                    "(nodes of its own choosing)".to_string()
                } else {
                    nodes.join(",")
                },
                describe_pointer(&restore_from)
            ),
        );
        // A new generation gets its recovery row (or fills in the one its report made);
        // the engine's report fills in the RTO. A re-issued launch keeps its generation.
        let new_generation = previous.as_ref().is_none_or(|(g, _)| generation > *g);
        if new_generation {
            let at = self.elapsed();
            let rpo = restore_from.as_ref().map(|p| match p.kind {
                RestorePointKind::Savepoint => Duration::ZERO,
                RestorePointKind::Checkpoint => crate::types::elapsed(p.completed_at, self.now),
            });
            let from = previous.as_ref().map_or(site.clone(), |(_, s)| s.clone());
            let priority = self.priority(&job);
            match self
                .recoveries
                .iter_mut()
                .rev()
                .find(|r| r.job == job && r.generation == generation && r.to == site)
            {
                Some(row) => {
                    row.from = from;
                    row.nodes = nodes;
                    if row.reported && row.restore_from != restore_from {
                        let message = format!(
                            "{job} generation {generation} in {site}: the recovery report named restore point {} but the launch restores {}",
                            describe_pointer(&row.restore_from),
                            describe_pointer(&restore_from)
                        );
                        self.violation(message);
                    }
                }
                None => self.recoveries.push(Recovery {
                    job: job.clone(),
                    priority,
                    reason: reason.to_string(),
                    op: None,
                    from,
                    to: site.clone(),
                    nodes,
                    generation,
                    relaunched_at: at,
                    running_at: None,
                    reported: false,
                    rto_from_detection: None,
                    rto_from_last_heartbeat: None,
                    rpo,
                    restore_from: restore_from.clone(),
                }),
            }
        }
        if let Some(p) = &restore_from {
            if p.site != site {
                self.violation(format!(
                    "{job} generation {generation} in {site} restores from a pointer in {}",
                    p.site
                ));
            } else if !self
                .readable
                .contains(&(job.clone(), site.clone(), p.generation, p.id))
            {
                self.violation(format!(
                    "{job} generation {generation} in {site} restores from {}, not readable there",
                    p.path
                ));
            }
        }
        if new_generation
            && matches!(
                reason,
                RelaunchReason::Revived { .. } | RelaunchReason::SiteReturned { .. }
            )
        {
            self.stats.revivals += 1;
        }
        match &restore_from {
            _ if !new_generation => {}
            None => self.stats.fresh_starts += 1,
            Some(_) if previous.as_ref().is_some_and(|(_, s)| s == &site) => {
                self.stats.in_site_relaunches += 1
            }
            Some(_) => self.stats.cross_site_relaunches += 1,
        }
        let operator_only = self
            .jobs
            .get(&job)
            .is_some_and(|j| j.spec.site_moves == crate::types::SiteMoves::OperatorOnly);
        if operator_only
            && new_generation
            && previous.as_ref().is_some_and(|(_, s)| {
                s != &site && !self.operator_moves.contains(&(s.clone(), site.clone()))
            })
            && !matches!(reason, RelaunchReason::Operation { .. })
        {
            self.violation(format!(
                "{job} (failover mode manual) moved to {site} without an operator: {reason}"
            ));
        }
        let (max, max_site) = previous.unwrap_or((0, site.clone()));
        if generation < max || (generation == max && max_site != site) {
            self.violation(format!(
                "{job}: generation {generation} in {site} issued after {max} in {max_site}"
            ));
        }
        if generation >= max {
            self.issued.insert(job.clone(), (generation, site.clone()));
        }
        // The controller's job record first: the generation it launches is the stored one.
        let stored_generation = self.stored.get(&job).map_or(0, |(_, g)| *g);
        if generation >= stored_generation {
            self.stored.insert(job.clone(), (site.clone(), generation));
        }
        // As in production, a site the controller reaches takes a launch even while its
        // agent holds no lease; the agent (or the controller's next pass) stops it again.
        let reachable = self.reachable(&site);
        let now = self.now;
        let config = self.config;
        let interval = self.jobs.get(&job).and_then(|j| j.checkpoint_interval);
        let Some(s) = self.sites.get_mut(&site) else {
            self.violation(format!("{job} relaunched in unknown site {site}"));
            return None;
        };
        let conflict = s
            .instances
            .keys()
            .any(|(j, g)| j == &job && *g != generation);
        let key = (job.clone(), generation);
        let result = if !reachable {
            Err("site unreachable".to_string())
        } else if s.refuses_launches {
            Err("admission refused the launch".to_string())
        } else if let Some(existing) = s.instances.get(&key) {
            // Idempotent: launching a running generation starts nothing new.
            Ok(existing.ready_at.max(now))
        } else if conflict {
            Err("another generation still runs here".to_string())
        } else {
            let ready_at = plus(now, config.launch_time);
            s.instances.insert(
                key,
                Instance {
                    state: if config.launch_time.is_zero() {
                        InstanceState::Running
                    } else {
                        InstanceState::Starting
                    },
                    placement,
                    restarts: 0,
                    ready_at,
                    next_restart_at: ready_at,
                    restart_delay: config.restart_delay,
                    next_checkpoint_at: interval.map(|i| plus(ready_at, i)),
                    latest_checkpoint: None,
                    savepoint: None,
                    held: false,
                },
            );
            Ok(ready_at)
        };
        match result {
            Ok(ready_at) => {
                let after = crate::types::elapsed(now, ready_at);
                if after.is_zero() {
                    self.launch_confirmed(&job, generation, &site);
                }
                self.answer(
                    after,
                    Event::LaunchSucceeded {
                        job,
                        generation,
                        site,
                    },
                )
            }
            Err(reason) => Some(Event::LaunchFailed {
                job,
                generation,
                site,
                reason,
            }),
        }
    }

    /// When a recovery's generation is confirmed running (its `LaunchSucceeded` answered).
    pub(super) fn launch_confirmed(&mut self, job: &JobId, generation: u64, site: &SiteId) {
        let at = self.elapsed();
        if let Some(r) = self
            .recoveries
            .iter_mut()
            .rev()
            .find(|r| &r.job == job && r.generation == generation && &r.to == site)
        {
            r.running_at.get_or_insert(at);
        }
    }

    pub(super) fn fence(&mut self, job: JobId, generation: u64, site: SiteId) -> Option<Event> {
        let reachable = self.reachable(&site);
        self.trace_line(format!("    -> Fence({job} gen {generation} in {site})"));
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "fence {job} generation {generation} in {site}{}",
                if reachable {
                    ""
                } else {
                    " (site unreachable: not done)"
                }
            ),
        );
        if !reachable {
            return None;
        }
        self.stats.fences += 1;
        if let Some(s) = self.sites.get_mut(&site) {
            s.instances.remove(&(job.clone(), generation));
            s.dormant.remove(&(job.clone(), generation));
        }
        let after = self.config.fence_time;
        self.answer(
            after,
            Event::Fenced {
                job,
                generation,
                site,
            },
        )
    }

    pub(super) fn trigger_savepoint(
        &mut self,
        op: u64,
        job: JobId,
        generation: u64,
        site: SiteId,
    ) -> Option<Event> {
        self.trace_line(format!(
            "    -> TriggerSavepoint({job} gen {generation} in {site}, op {op})"
        ));
        self.log(
            EntryKind::Action,
            Some(&job),
            Some(&site),
            format!(
                "stop {job} generation {generation} in {site} with a savepoint (operation {op})"
            ),
        );
        let reachable = self.reachable(&site);
        let id = self.next_checkpoint_id.entry(job.clone()).or_insert(0);
        *id += 1;
        let id = *id;
        let now = self.now;
        let instance = self
            .sites
            .get_mut(&site)
            .and_then(|s| s.instances.get_mut(&(job.clone(), generation)));
        let taken = match instance {
            Some(i)
                if reachable && (i.state == InstanceState::Running || i.savepoint.is_some()) =>
            {
                let sp = i.savepoint.get_or_insert_with(|| CheckpointPointer {
                    site: site.clone(),
                    generation,
                    id,
                    path: format!("hdfs://{site}/savepoints/{}/sp-{id}", job.0),
                    completed_at: now,
                    kind: RestorePointKind::Savepoint,
                });
                i.state = InstanceState::Stopped;
                Some(sp.clone())
            }
            _ => None,
        };
        let after = self.config.savepoint_time;
        match taken {
            Some(sp) => {
                if self
                    .readable
                    .insert((job.clone(), site.clone(), sp.generation, sp.id))
                {
                    self.checkpoints.push(CheckpointRecord {
                        pointer: sp.clone(),
                        job: job.clone(),
                        replicated: Vec::new(),
                    });
                }
                self.stats.savepoints += 1;
                self.answer(
                    after,
                    Event::SavepointCompleted {
                        op,
                        job,
                        savepoint: sp,
                    },
                )
            }
            None => self.answer(
                after,
                Event::SavepointFailed {
                    op,
                    job,
                    reason: "not running".into(),
                },
            ),
        }
    }

    pub(super) fn replicate_savepoint(
        &mut self,
        op: u64,
        job: JobId,
        savepoint: CheckpointPointer,
        to: SiteId,
    ) -> Option<Event> {
        self.trace_line(format!(
            "    -> ReplicateSavepoint({job} {} to {to}, op {op})",
            savepoint.path
        ));
        let both_up = self.site_is_up(&savepoint.site) && self.site_is_up(&to);
        if !both_up {
            // The driver retries replication until it succeeds.
            self.deferred.push(Command::ReplicateSavepoint {
                op,
                job,
                savepoint,
                to,
            });
            return None;
        }
        let replica = replica_of(&savepoint, &to);
        self.readable
            .insert((job.clone(), to, replica.generation, replica.id));
        let after = self.config.replication_delay;
        self.answer(after, Event::ReplicationCompleted { op, job, replica })
    }
}
