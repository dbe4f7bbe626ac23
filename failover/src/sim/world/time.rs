//! Cluster time: heartbeats, Flink restarts and checkpoints, replication, eviction, leases.
//! It must never act for the controller: only the driver's commands start or fence a generation.

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::model::{JobId, PodRole, Resources, SiteId};

use crate::agent::{LeaseView, RunningGeneration, StoreView};
use crate::engine::Event;
use crate::sim::report::{CheckpointRecord, EntryKind};
use crate::types::{
    CheckpointPointer, JobObserved, NodeHeartbeat, ObservedCheckpoint, RestorePointKind, RunState,
    SiteObservation, Timestamp,
};

use super::*;

impl World {
    /// Advances the clock by `dt`: nodes heart-beat, Flink restarts and checkpoints, answers
    /// and replicas that are due arrive, then the controller runs one pass.
    pub fn advance(&mut self, dt: Duration) {
        self.st().evolve(dt);
        self.pass();
    }
}

impl State {
    /// The controller stops what runs in a site it reaches whose agent has held no lease
    /// for as long as it takes an agent to fence its site: the agent is dead
    /// (`Controller::stop_unguarded`).
    pub(super) fn stop_unguarded(&mut self) {
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for id in ids {
            let long_gone = self
                .sites
                .get(&id)
                .and_then(|w| w.agent.last_renewal)
                .is_none_or(|at| crate::agent::site_fenced_by(&self.config.agent, at, self.now));
            if !self.reachable(&id) || self.lease_alive(&id) || !long_gone {
                continue;
            }
            let stopped: Vec<(JobId, u64)> = match self.sites.get_mut(&id) {
                Some(w) => std::mem::take(&mut w.instances).into_keys().collect(),
                None => continue,
            };
            for (job, generation) in stopped {
                let secs = self.elapsed().as_secs();
                self.trace_line(format!(
                    "t={secs} controller stops {job} gen {generation} in {id}: its agent holds no lease"
                ));
            }
        }
    }

    /// Each site's agent, once per step: restart after a crash, renew the lease while it
    /// reaches the quorum, then look at its site with the production decision
    /// (`crate::agent::decide`) and stop what it says.
    pub(super) fn run_agents(&mut self) {
        let now = self.now;
        let timing = self.config.agent;
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for id in ids {
            let renews = {
                let Some(w) = self.sites.get_mut(&id) else {
                    continue;
                };
                if w.agent.down_until.is_some_and(|t| now >= t) {
                    w.agent.down_until = None;
                    w.agent.valid_until = None;
                }
                if !w.up || w.agent.down_until.is_some() {
                    continue;
                }
                !w.isolated() && !w.agent.cut
            };
            let agent_now =
                now - chrono::Duration::from_std(self.sites[&id].agent.skew).unwrap_or_default();
            if renews && let Some(w) = self.sites.get_mut(&id) {
                w.agent.last_renewal = Some(now);
                w.agent.valid_until = Some(plus(agent_now, timing.lease_ttl));
            }
            let w = &self.sites[&id];
            let lease = match w.agent.valid_until {
                Some(valid_until) => LeaseView::Held { valid_until },
                None => LeaseView::NeverHeld,
            };
            // The store is read through the quorum: only an agent that reaches it.
            let store = renews.then(|| StoreView {
                site_epoch: 0,
                placed: self.stored.clone(),
            });
            let running: Vec<RunningGeneration> = w
                .instances
                .keys()
                .map(|(job, generation)| RunningGeneration {
                    job: job.clone(),
                    generation: *generation,
                    epoch: None,
                })
                .collect();
            let decision = crate::agent::decide(&id, agent_now, &lease, store.as_ref(), &running);
            for stop in decision.stops {
                if let Some(w) = self.sites.get_mut(&id) {
                    w.instances.remove(&(stop.job.clone(), stop.generation));
                }
                let secs = self.elapsed().as_secs();
                self.trace_line(format!(
                    "t={secs} agent of {id} stops {} gen {}: {}",
                    stop.job, stop.generation, stop.reason
                ));
                self.log(
                    EntryKind::Action,
                    Some(&stop.job),
                    Some(&id),
                    format!(
                        "agent of {id} stops {} generation {}: {}",
                        stop.job, stop.generation, stop.reason
                    ),
                );
            }
        }
    }

    pub(super) fn refresh_visibility(&mut self) {
        let now = self.now;
        let ids: Vec<SiteId> = self.sites.keys().cloned().collect();
        for s in ids {
            let visible = self.observable(&s) || self.peer_hears(&s);
            if let Some(w) = self.sites.get_mut(&s) {
                match (visible, w.visible_since) {
                    (true, None) => w.visible_since = Some(now),
                    (false, Some(_)) => w.visible_since = None,
                    _ => {}
                }
            }
        }
    }

    pub(super) fn complete_checkpoint(
        &mut self,
        site: &SiteId,
        job: &JobId,
        generation: u64,
        completed_at: Timestamp,
    ) -> CheckpointPointer {
        let id = self.next_checkpoint_id.entry(job.clone()).or_insert(0);
        *id += 1;
        let c = CheckpointPointer {
            site: site.clone(),
            generation,
            id: *id,
            path: format!("hdfs://{site}/checkpoints/{}/g{generation}/chk-{id}", job.0),
            completed_at,
            kind: RestorePointKind::Checkpoint,
        };
        self.readable
            .insert((job.clone(), site.clone(), generation, c.id));
        self.checkpoints.push(CheckpointRecord {
            pointer: c.clone(),
            job: job.clone(),
            replicated: Vec::new(),
        });
        if let Some(i) = self
            .sites
            .get_mut(site)
            .and_then(|w| w.instances.get_mut(&(job.clone(), generation)))
        {
            i.latest_checkpoint = Some(ObservedCheckpoint {
                id: c.id,
                path: c.path.clone(),
                completed_at,
            });
        }
        c
    }

    /// Copies of `c` to every other site that is up, after the replication delay.
    pub(super) fn schedule_replication(&mut self, job: &JobId, c: &CheckpointPointer) {
        let targets: Vec<SiteId> = self
            .sites
            .iter()
            .filter(|(o, w)| **o != c.site && w.up)
            .map(|(o, _)| o.clone())
            .collect();
        for to in targets {
            if self.config.replication_delay.is_zero() {
                self.replicate_checkpoint(job.clone(), c.clone(), to);
            } else {
                self.seq += 1;
                let at = plus(self.now, self.config.replication_delay);
                self.due.insert(
                    (at, self.seq),
                    Due::Replica {
                        job: job.clone(),
                        checkpoint: c.clone(),
                        to,
                    },
                );
            }
        }
    }

    /// The copy is verified in `to` now, if both sites are still up; the controller's
    /// replication driver tells the engine when it reaches `to`.
    pub(super) fn replicate_checkpoint(
        &mut self,
        job: JobId,
        checkpoint: CheckpointPointer,
        to: SiteId,
    ) {
        if !(self.site_is_up(&checkpoint.site) && self.site_is_up(&to)) {
            return;
        }
        let replica = replica_of(&checkpoint, &to);
        self.readable
            .insert((job.clone(), to.clone(), replica.generation, replica.id));
        let now = self.now;
        if let Some(r) = self
            .checkpoints
            .iter_mut()
            .rev()
            .find(|r| r.pointer == checkpoint)
        {
            r.replicated.push((to.clone(), now));
        }
        if self.reachable(&to) {
            self.inbox
                .push(Event::CheckpointReplicated { job, replica });
        }
    }

    /// Kubernetes' side of a dead node: once its last heartbeat is `task_manager_eviction`
    /// old, a TaskManager pod on it is evicted and scheduled on another live node of the
    /// site with room for it (its JobManager's node alive; a job whose JobManager died is
    /// the engine's to relaunch). Flink then restarts the job at once.
    pub(super) fn reschedule_task_managers(&mut self) {
        let now = self.now;
        let eviction = self.config.task_manager_eviction;
        let jobs = &self.jobs;
        let demand = |job: &JobId, role: PodRole| {
            jobs.get(job).map_or(Resources::ZERO, |j| match role {
                PodRole::Jobmanager => j.spec.demand.job_manager,
                _ => j.spec.demand.task_manager,
            })
        };
        for w in self.sites.values_mut() {
            if !w.up {
                continue;
            }
            let evicted = |node: &str| {
                w.nodes.get(node).is_some_and(|n| {
                    !n.alive && crate::types::elapsed(n.last_heartbeat, now) >= eviction
                })
            };
            let mut moves: Vec<((JobId, u64), usize)> = Vec::new();
            for (k, i) in &w.instances {
                let jm_alive = i
                    .job_manager_node()
                    .is_some_and(|n| w.nodes.get(n).is_some_and(|n| n.alive));
                if i.held || !jm_alive {
                    continue;
                }
                for (index, p) in i.placement.pods.iter().enumerate() {
                    if p.role == PodRole::Taskmanager && evicted(&p.node) {
                        moves.push((k.clone(), index));
                    }
                }
            }
            for (key, index) in moves {
                let mut used: BTreeMap<String, Resources> = BTreeMap::new();
                for ((job, _), i) in &w.instances {
                    for p in &i.placement.pods {
                        *used.entry(p.node.clone()).or_insert(Resources::ZERO) +=
                            demand(job, p.role);
                    }
                }
                let need = demand(&key.0, PodRole::Taskmanager);
                let Some(node) = w
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.alive)
                    .find(|(name, n)| {
                        (used.get(*name).copied().unwrap_or(Resources::ZERO) + need)
                            .fits_in(&n.allocatable)
                    })
                    .map(|(name, _)| name.clone())
                else {
                    continue;
                };
                if let Some(i) = w.instances.get_mut(&key) {
                    i.placement.pods[index].node = node;
                    i.next_restart_at = now;
                }
            }
        }
    }

    /// Time passes: nodes heart-beat, Flink restarts and checkpoints, answers and replicas
    /// that are due arrive (for the next pass).
    pub(super) fn evolve(&mut self, dt: Duration) {
        self.now = plus(self.now, dt);
        self.stats.steps += 1;
        let now = self.now;
        self.run_agents();
        self.refresh_visibility();
        self.reschedule_task_managers();
        let (recover, max_delay) = (self.flink_recovers, self.config.max_restart_delay);
        let mut checkpoints: Vec<(SiteId, JobId, u64, Timestamp)> = Vec::new();
        let jobs = &self.jobs;
        let interval_of = |job: &JobId| {
            jobs.get(job)
                .and_then(|j| j.checkpoint_interval)
                .unwrap_or(Duration::from_secs(60))
        };
        for (id, w) in &mut self.sites {
            if !w.up {
                continue;
            }
            for n in w.nodes.values_mut() {
                if n.alive {
                    n.last_heartbeat = now;
                }
            }
            let nodes_ok: BTreeMap<(JobId, u64), bool> = w
                .instances
                .iter()
                .map(|(k, i)| (k.clone(), w.all_alive(i)))
                .collect();
            for (k, i) in &mut w.instances {
                if i.held {
                    continue;
                }
                let alive = nodes_ok.get(k).copied().unwrap_or(false);
                let attempt_due = i.restart_delay.is_zero() || now >= i.next_restart_at;
                let back_off = |i: &mut Instance| {
                    i.restarts += 1;
                    i.next_restart_at = plus(now, i.restart_delay);
                    i.restart_delay = (i.restart_delay * 2).min(max_delay);
                };
                match i.state {
                    InstanceState::Starting if now >= i.ready_at => {
                        i.state = InstanceState::Running;
                    }
                    InstanceState::Running if !alive => {
                        i.state = InstanceState::Restarting;
                        back_off(i);
                    }
                    // Zombies and restarting jobs come up again on their own: that is the
                    // hazard fencing must beat.
                    InstanceState::Restarting if attempt_due && alive && recover => {
                        i.state = InstanceState::Running;
                    }
                    InstanceState::Restarting if attempt_due => back_off(i),
                    _ => {}
                }
                if i.state == InstanceState::Running
                    && let Some(at) = i.next_checkpoint_at
                    && at <= now
                {
                    let interval = interval_of(&k.0);
                    let mut next = at;
                    let mut last = at;
                    while next <= now {
                        last = next;
                        next = plus(next, interval);
                    }
                    i.next_checkpoint_at = Some(next);
                    checkpoints.push((id.clone(), k.0.clone(), k.1, last));
                } else if i.state != InstanceState::Running
                    && let Some(at) = i.next_checkpoint_at
                    && at <= now
                {
                    // No checkpoint while not running: the next one comes an interval after.
                    i.next_checkpoint_at = Some(plus(now, interval_of(&k.0)));
                }
            }
        }
        for (site, job, generation, at) in checkpoints {
            let replicate = self.jobs.get(&job).is_some_and(|j| j.replicate);
            let c = self.complete_checkpoint(&site, &job, generation, at);
            if replicate {
                self.schedule_replication(&job, &c);
            }
        }
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Answer(e) => {
                    if let Event::LaunchSucceeded {
                        job,
                        generation,
                        site,
                    } = &e
                    {
                        self.launch_confirmed(job, *generation, site);
                    }
                    self.inbox.push(e);
                }
                Due::Replica {
                    job,
                    checkpoint,
                    to,
                } => self.replicate_checkpoint(job, checkpoint, to),
            }
        }
    }

    pub(super) fn observe(&self, s: &SiteId) -> Option<SiteObservation> {
        let w = self.sites.get(s)?;
        Some(SiteObservation {
            site: s.clone(),
            observed_at: self.now,
            nodes: w
                .nodes
                .iter()
                .map(|(n, state)| NodeHeartbeat {
                    name: n.clone(),
                    last_heartbeat: Some(state.last_heartbeat),
                })
                .collect(),
            jobs: w
                .instances
                .iter()
                .map(|((j, g), i)| JobObserved {
                    job: j.clone(),
                    generation: *g,
                    state: match i.state {
                        InstanceState::Running => RunState::Running,
                        InstanceState::Starting | InstanceState::Restarting => RunState::Restarting,
                        InstanceState::Failed => RunState::Failed,
                        InstanceState::Stopped => RunState::Finished,
                    },
                    restarts: i.restarts,
                    job_manager_node: i.job_manager_node().map(str::to_string),
                    task_manager_nodes: i.task_manager_nodes(),
                    latest_checkpoint: i.latest_checkpoint.clone(),
                })
                .collect(),
        })
    }
}
