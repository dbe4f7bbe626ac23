//! Faults as the cluster lives them: injecting and clearing them, and Kubernetes' eviction
//! of TaskManagers from a node that stays down.

use super::*;

impl Inner {
    /// Kubernetes' eviction: a TaskManager pod on a node down for `task_manager_eviction`
    /// goes to the first ready node (by name) with room for it, counting every pod of the
    /// site; its JobManager's node must be up (a job whose JobManager died is the
    /// controller's to relaunch). True when a pod moved.
    pub(super) fn reschedule_task_managers(
        &self,
        state: &mut SimState,
        now: DateTime<Utc>,
    ) -> bool {
        let eviction = to_chrono(self.config.task_manager_eviction);
        let evicted: BTreeSet<String> = state
            .faults
            .down_since
            .iter()
            .filter(|(_, since)| now - **since >= eviction)
            .map(|(node, _)| node.clone())
            .collect();
        if evicted.is_empty() {
            return false;
        }
        let mut moved = false;
        let ids: Vec<JobId> = state.jobs.keys().cloned().collect();
        for id in ids {
            while let Some(job) = state.jobs.get(&id) {
                if job
                    .spec
                    .job_manager_node()
                    .is_some_and(|n| state.faults.nodes_down.contains(n))
                {
                    break;
                }
                let Some(index) = job
                    .spec
                    .placement
                    .pods
                    .iter()
                    .position(|p| p.role == PodRole::Taskmanager && evicted.contains(&p.node))
                else {
                    break;
                };
                let need = job.spec.task_manager;
                let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
                for p in &state.foreign_pods {
                    *used.entry(p.node.as_str()).or_insert(Resources::ZERO) += p.request;
                }
                for j in state.jobs.values() {
                    for p in &j.spec.placement.pods {
                        let r = match p.role {
                            PodRole::Jobmanager => j.spec.job_manager,
                            _ => j.spec.task_manager,
                        };
                        *used.entry(p.node.as_str()).or_insert(Resources::ZERO) += r;
                    }
                }
                let target = state
                    .nodes
                    .iter()
                    .filter(|n| n.ready && !n.unschedulable)
                    .filter(|n| !state.faults.nodes_down.contains(&n.name))
                    .find(|n| {
                        (used
                            .get(n.name.as_str())
                            .copied()
                            .unwrap_or(Resources::ZERO)
                            + need)
                            .fits_in(&n.allocatable)
                    })
                    .map(|n| n.name.clone());
                let Some(target) = target else {
                    break;
                };
                if let Some(job) = state.jobs.get_mut(&id) {
                    let from =
                        std::mem::replace(&mut job.spec.placement.pods[index].node, target.clone());
                    tracing::info!(site = %self.id, job = %id, %from, to = %target, "TaskManager evicted from a lost node and scheduled on another");
                    moved = true;
                }
            }
        }
        moved
    }

    pub(super) fn set_fault(&self, fault: Fault, active: bool) -> Result<(), SiteError> {
        let now = self.clock.now();
        let mut state = self.lock();
        match &fault {
            Fault::NodeDown { node } => {
                if !state.nodes.iter().any(|n| &n.name == node) {
                    return Err(self.invalid(format!("fault {fault:?}"), "no such node"));
                }
                if active {
                    state.faults.nodes_down.insert(node.clone());
                    state.faults.down_since.entry(node.clone()).or_insert(now);
                } else {
                    state.faults.nodes_down.remove(node);
                    state.faults.down_since.remove(node);
                }
            }
            Fault::SiteDown => state.faults.site_down = active,
            Fault::Partition => state.faults.partition = active,
            Fault::SlowStorage { delay_ms } => {
                state.faults.slow_storage = active.then(|| Duration::from_millis(*delay_ms));
            }
        }
        tracing::info!(site = %self.id, ?fault, active, "simulated fault changed");
        let faults = state.faults.clone();
        for job in state.jobs.values_mut() {
            job.update_state(&faults, now);
        }
        self.bump(&mut state);
        if matches!(fault, Fault::SiteDown) {
            self.save_locked(&state);
        }
        Ok(())
    }
}
