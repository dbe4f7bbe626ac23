//! The cluster as placement sees it: nodes indexed per site and grouped into equivalence
//! classes (site, pool, schedulability, taints, the labels any job or pool looks at), so
//! filters run once per class and job; and the mutable room left on every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::PlacementRequest;
use super::compat::{
    count_intolerable_prefer_no_schedule, find_untolerated_blocking_taint,
    preferred_affinity_score, required_node_affinity_matches,
};
use crate::k8s::{NodeAffinity, Taint};
use crate::model::{JobDemand, Node, Resources, SiteId};

/// Score lost per PreferNoSchedule taint the job does not tolerate: more than the largest
/// single preferred-affinity weight (100), so avoiding such a node wins over one preference.
pub(crate) const PREFER_NO_SCHEDULE_PENALTY: i64 = 100;

pub(crate) fn min_res(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_milli: a.cpu_milli.min(b.cpu_milli),
        memory_bytes: a.memory_bytes.min(b.memory_bytes),
        pods: a.pods.min(b.pods),
    }
}

pub(crate) struct NodeInfo<'a> {
    pub node: &'a Node,
    pub site: usize,
    pub class: usize,
    /// In an offline pool: only borrowed pods of ours, capped by `borrow_cap`.
    pub offline: bool,
    pub lending_open: bool,
    pub borrow_cap: Resources,
    /// Allocatable minus the foreign pods running there.
    pub free_of_foreign: Resources,
}

pub(crate) struct NodeClass<'a> {
    /// Any member: every member has the same labels (as far as anyone looks), taints,
    /// pool and schedulability.
    pub representative: &'a Node,
    pub offline: bool,
    pub lending_open: bool,
    pub accepts_new_pods: bool,
}

pub(crate) struct SiteInfo<'a> {
    pub id: &'a SiteId,
    /// Global node indices, sorted by node name.
    pub nodes: Vec<usize>,
    pub node_by_name: HashMap<&'a str, usize>,
}

/// Why a class of nodes cannot take a pod of a job, cheapest check first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filtered {
    NotAccepting,
    OfflineNotAllowed,
    OfflineClosed,
    Taint(Taint),
    Affinity,
}

/// Site, pool, accepts new pods, sorted taints, the labels anyone selects on.
type ClassKey<'n> = (
    usize,
    Option<usize>,
    bool,
    Vec<Taint>,
    Vec<(&'n str, &'n str)>,
);

pub(crate) struct Cluster<'a> {
    pub sites: Vec<SiteInfo<'a>>,
    pub nodes: Vec<NodeInfo<'a>>,
    pub classes: Vec<NodeClass<'a>>,
    pub site_index: BTreeMap<&'a SiteId, usize>,
    /// Largest allocatable per dimension over all nodes (for size normalisation).
    pub largest: Resources,
}

fn referenced_label_keys(req: &PlacementRequest) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for job in req.jobs {
        keys.extend(job.node_selector.keys().cloned());
        if let Some(aff) = &job.node_affinity {
            add_affinity_keys(aff, &mut keys);
        }
    }
    keys
}

fn add_affinity_keys(aff: &NodeAffinity, keys: &mut BTreeSet<String>) {
    if let Some(req) = &aff.required_during_scheduling_ignored_during_execution {
        for term in &req.node_selector_terms {
            keys.extend(term.match_expressions.iter().map(|r| r.key.clone()));
        }
    }
    for pref in &aff.preferred_during_scheduling_ignored_during_execution {
        keys.extend(
            pref.preference
                .match_expressions
                .iter()
                .map(|r| r.key.clone()),
        );
    }
}

/// Jobs that select on `metadata.name` cannot be judged per class.
pub(crate) fn uses_match_fields(job: &JobDemand) -> bool {
    job.node_affinity.as_ref().is_some_and(|aff| {
        aff.required_during_scheduling_ignored_during_execution
            .as_ref()
            .is_some_and(|r| {
                r.node_selector_terms
                    .iter()
                    .any(|t| !t.match_fields.is_empty())
            })
            || aff
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .any(|p| !p.preference.match_fields.is_empty())
    })
}

impl<'a> Cluster<'a> {
    pub fn new(req: &PlacementRequest<'a>) -> Self {
        let keys = referenced_label_keys(req);
        let mut sites = Vec::new();
        let mut nodes = Vec::new();
        let mut classes: Vec<NodeClass<'a>> = Vec::new();
        let mut class_index: HashMap<ClassKey, usize> = HashMap::new();
        let mut site_index = BTreeMap::new();
        let mut largest = Resources::ZERO;
        for (si, snap) in req.sites.iter().enumerate() {
            if site_index.contains_key(&snap.id) {
                // A repeated site id: the first snapshot wins; keep indices aligned.
                sites.push(SiteInfo {
                    id: &snap.id,
                    nodes: Vec::new(),
                    node_by_name: HashMap::new(),
                });
                continue;
            }
            site_index.insert(&snap.id, si);
            let mut foreign: HashMap<&str, Resources> = HashMap::new();
            for pod in &snap.running_pods {
                *foreign.entry(pod.node.as_str()).or_default() += pod.request;
            }
            let mut order: Vec<&Node> = snap.nodes.iter().collect();
            order.sort_by(|a, b| a.name.cmp(&b.name));
            order.dedup_by(|a, b| a.name == b.name);
            let mut site = SiteInfo {
                id: &snap.id,
                nodes: Vec::new(),
                node_by_name: HashMap::new(),
            };
            for node in order {
                let pool = req
                    .policy
                    .pools
                    .iter()
                    .position(|p| p.matches(&snap.id, node));
                let lending = pool.and_then(|p| req.policy.pools[p].offline.as_ref());
                let offline = lending.is_some();
                let lending_open = lending.is_some_and(|l| l.is_open_at(req.at));
                let borrow_cap = lending.map_or(Resources::ZERO, |l| l.borrowable_on(node));
                let mut taints = node.taints.clone();
                taints.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
                let labels: Vec<(&str, &str)> = node
                    .labels
                    .iter()
                    .filter(|(k, _)| keys.contains(*k))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let accepts = node.accepts_new_pods();
                let key = (si, pool, accepts, taints, labels);
                let class = *class_index.entry(key).or_insert_with(|| {
                    classes.push(NodeClass {
                        representative: node,
                        offline,
                        lending_open,
                        accepts_new_pods: accepts,
                    });
                    classes.len() - 1
                });
                let used = foreign.get(node.name.as_str()).copied().unwrap_or_default();
                largest = Resources {
                    cpu_milli: largest.cpu_milli.max(node.allocatable.cpu_milli),
                    memory_bytes: largest.memory_bytes.max(node.allocatable.memory_bytes),
                    pods: largest.pods.max(node.allocatable.pods),
                };
                let gi = nodes.len();
                nodes.push(NodeInfo {
                    node,
                    site: si,
                    class,
                    offline,
                    lending_open,
                    borrow_cap,
                    free_of_foreign: node.allocatable - used,
                });
                site.nodes.push(gi);
                site.node_by_name.insert(node.name.as_str(), gi);
            }
            sites.push(site);
        }
        Cluster {
            sites,
            nodes,
            classes,
            site_index,
            largest,
        }
    }

    /// The filter chain for one pod of `job` on nodes of `class`, cheapest check first.
    /// `Ok(score)` is the class's preference score for the job.
    pub fn judge_class(&self, job: &JobDemand, class: usize) -> Result<i64, Filtered> {
        let c = &self.classes[class];
        self.judge(
            job,
            c.representative,
            c.accepts_new_pods,
            c.offline,
            c.lending_open,
        )
    }

    /// As `judge_class`, for one node (jobs that select on the node's name).
    pub fn judge_node(&self, job: &JobDemand, node: usize) -> Result<i64, Filtered> {
        let n = &self.nodes[node];
        let c = &self.classes[n.class];
        self.judge(job, n.node, c.accepts_new_pods, n.offline, n.lending_open)
    }

    fn judge(
        &self,
        job: &JobDemand,
        node: &Node,
        accepts: bool,
        offline: bool,
        lending_open: bool,
    ) -> Result<i64, Filtered> {
        if !accepts {
            return Err(Filtered::NotAccepting);
        }
        if offline && !job.allow_offline {
            return Err(Filtered::OfflineNotAllowed);
        }
        if offline && !lending_open {
            return Err(Filtered::OfflineClosed);
        }
        if let Some(t) = find_untolerated_blocking_taint(&node.taints, &job.tolerations) {
            return Err(Filtered::Taint(t.clone()));
        }
        if !required_node_affinity_matches(&job.node_selector, job.node_affinity.as_ref(), node) {
            return Err(Filtered::Affinity);
        }
        let pns = count_intolerable_prefer_no_schedule(&node.taints, &job.tolerations) as i64;
        Ok(preferred_affinity_score(job.node_affinity.as_ref(), node)
            - PREFER_NO_SCHEDULE_PENALTY * pns)
    }
}

/// Room left on every node, and how much of it we borrowed from offline nodes.
#[derive(Clone)]
pub(crate) struct Capacity {
    pub free: Vec<Resources>,
    pub borrowed: Vec<Resources>,
}

impl Capacity {
    pub fn new(cluster: &Cluster) -> Self {
        Capacity {
            free: cluster.nodes.iter().map(|n| n.free_of_foreign).collect(),
            borrowed: vec![Resources::ZERO; cluster.nodes.len()],
        }
    }

    /// What one more pod of ours may use on `node`.
    #[inline]
    pub fn room(&self, cluster: &Cluster, node: usize) -> Resources {
        let info = &cluster.nodes[node];
        if info.offline {
            if info.lending_open {
                min_res(self.free[node], info.borrow_cap - self.borrowed[node])
            } else {
                Resources::ZERO
            }
        } else {
            self.free[node]
        }
    }

    pub fn take(&mut self, cluster: &Cluster, node: usize, r: Resources) {
        self.free[node] = sub_signed(self.free[node], r);
        if cluster.nodes[node].offline {
            self.borrowed[node] += r;
        }
    }

    pub fn give_back(&mut self, cluster: &Cluster, node: usize, r: Resources) {
        self.free[node] += r;
        if cluster.nodes[node].offline {
            self.borrowed[node] -= r;
        }
    }
}

/// Subtraction that may go negative (an over-committed node stays visibly over-committed).
pub(crate) fn sub_signed(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_milli: a.cpu_milli - b.cpu_milli,
        memory_bytes: a.memory_bytes - b.memory_bytes,
        pods: a.pods - b.pods,
    }
}
