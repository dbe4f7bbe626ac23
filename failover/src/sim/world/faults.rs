//! Faults scenarios and seeds inject: nodes, sites, partitions, agents, refusals, quorum, jobs.
//! It must never check or run the controller: a fault changes the world, the next step judges.

use std::time::Duration;

use scheduler::model::{JobId, SiteId};

use crate::engine::Event;
use crate::types::{CheckpointPointer, Timestamp};

use super::*;

impl World {
    /// The node stops heart-beating; what runs on it stops.
    pub fn node_lost(&mut self, site: &SiteId, node: &str) {
        if let Some(n) = self
            .st()
            .sites
            .get_mut(site)
            .and_then(|w| w.nodes.get_mut(node))
        {
            n.alive = false;
        }
    }

    pub fn node_returns(&mut self, site: &SiteId, node: &str) {
        if let Some(n) = self
            .st()
            .sites
            .get_mut(site)
            .and_then(|w| w.nodes.get_mut(node))
        {
            n.alive = true;
        }
    }

    /// The whole site goes dark: its API, nodes and storage. What ran there is frozen and
    /// comes back with the site.
    pub fn site_lost(&mut self, site: &SiteId) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site)
            && w.up
        {
            w.up = false;
            w.cut = None;
            let frozen = std::mem::take(&mut w.instances);
            w.dormant.extend(frozen);
        }
        s.refresh_visibility();
    }

    /// The site comes back, every node with it; its frozen generations come back restarting
    /// (zombies), held if the site was marked lost meanwhile.
    pub fn site_returns(&mut self, site: &SiteId) {
        let s = self.st();
        let now = s.now;
        if let Some(w) = s.sites.get_mut(site)
            && !w.up
        {
            w.up = true;
            w.cut = None;
            // Its agent starts again with the site, holding no lease until it renews.
            w.agent.valid_until = None;
            w.agent.down_until = None;
            for n in w.nodes.values_mut() {
                n.alive = true;
                n.last_heartbeat = now;
            }
            let marked_lost = w.marked_lost;
            let zombies = std::mem::take(&mut w.dormant);
            for (k, mut i) in zombies {
                if i.counts_as_running() {
                    i.state = InstanceState::Restarting;
                }
                i.next_restart_at = now;
                i.held = i.held || marked_lost;
                w.instances.insert(k, i);
            }
        }
        s.refresh_visibility();
    }

    /// The controller can no longer reach `site`'s API; `peer_sees`: the other site (through
    /// the quorum) still hears it.
    pub fn partition(&mut self, site: &SiteId, peer_sees: bool) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site)
            && w.up
        {
            w.cut = Some(peer_sees);
        }
        s.refresh_visibility();
    }

    /// The agent of `site` is cut from the quorum (`true`) while its site runs on, or
    /// reaches it again (`false`).
    pub fn agent_cut(&mut self, site: &SiteId, cut: bool) {
        let s = self.st();
        if let Some(w) = s.sites.get_mut(site) {
            w.agent.cut = cut;
        }
        s.refresh_visibility();
    }

    /// Whether the agent of `site` is cut from the quorum.
    pub fn agent_is_cut(&self, site: &SiteId) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .is_some_and(|w| w.agent.cut)
    }

    /// The agent of `site` crashes; its Deployment starts it again `restart_after` later,
    /// holding no lease.
    pub fn agent_crash(&mut self, site: &SiteId, restart_after: Duration) {
        let s = self.st();
        let now = s.now;
        if let Some(w) = s.sites.get_mut(site) {
            w.agent.down_until = Some(plus(now, restart_after));
            w.agent.valid_until = None;
        }
        s.refresh_visibility();
    }

    /// The agent of `site`'s clock runs `skew` behind the world's from now on.
    pub fn set_agent_skew(&mut self, site: &SiteId, skew: Duration) {
        if let Some(w) = self.st().sites.get_mut(site) {
            w.agent.skew = skew;
        }
    }

    /// `site` refuses every launch (`true`) while it answers everything else, or takes
    /// launches again (`false`).
    pub fn refuse_launches(&mut self, site: &SiteId, refuse: bool) {
        if let Some(w) = self.st().sites.get_mut(site) {
            w.refuses_launches = refuse;
        }
    }

    /// Whether `site` refuses every launch.
    pub fn refuses_launches(&self, site: &SiteId) -> bool {
        self.state
            .borrow()
            .sites
            .get(site)
            .is_some_and(|w| w.refuses_launches)
    }

    /// Ends the partition of `site` (every site: `None`).
    pub fn heal(&mut self, site: Option<&SiteId>) {
        let s = self.st();
        for (id, w) in &mut s.sites {
            if site.is_none_or(|x| x == id) {
                w.cut = None;
            }
        }
        s.refresh_visibility();
    }

    pub fn quorum(&self) -> bool {
        self.state.borrow().quorum
    }

    /// The controller gains or loses quorum with the witness (and tells the engine).
    pub fn set_quorum(&mut self, quorum: bool) {
        self.st().quorum = quorum;
        self.deliver(Event::QuorumChanged(quorum));
    }

    /// Flink gives up on `job`: its generations in `site` (every site: `None`) fail. With a
    /// site given, only the first generation found there, whatever its state.
    pub fn job_fails(&mut self, job: &JobId, site: Option<&SiteId>) {
        for (id, w) in &mut self.st().sites {
            if let Some(s) = site {
                if s != id {
                    continue;
                }
                if let Some(i) = w
                    .instances
                    .iter_mut()
                    .find(|((j, _), _)| j == job)
                    .map(|(_, i)| i)
                {
                    i.state = InstanceState::Failed;
                }
            } else {
                for ((j, _), i) in &mut w.instances {
                    if j == job && i.counts_as_running() && !i.held {
                        i.state = InstanceState::Failed;
                    }
                }
            }
        }
    }

    /// `generation` of `job` completes a checkpoint in `site` now; its site reports it from
    /// then on (the engine learns it from the next observation). With `replicate`, its copy
    /// is verified in the other sites that are up after the replication delay.
    pub fn complete_checkpoint(
        &mut self,
        site: &SiteId,
        job: &JobId,
        generation: u64,
        completed_at: Timestamp,
        replicate: bool,
    ) -> CheckpointPointer {
        let s = self.st();
        let c = s.complete_checkpoint(site, job, generation, completed_at);
        if replicate {
            s.schedule_replication(job, &c);
        }
        c
    }

    /// The copy of `checkpoint` is verified in `to` now, if both sites are still up.
    pub fn replicate_checkpoint(&mut self, job: JobId, checkpoint: CheckpointPointer, to: SiteId) {
        self.st().replicate_checkpoint(job, checkpoint, to);
    }
}
