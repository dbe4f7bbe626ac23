//! Builder fixtures for placement tests, in the style of Kubernetes' `MakePod().Name(..).Obj()`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use scheduler::k8s::{Taint, TaintEffect, Toleration, TolerationOperator};
use scheduler::model::{
    FailoverReserve, JobDemand, JobId, JobPlacement, LendingWindow, Node, NodePool, OfflineLending,
    PlacementPolicy, Priority, Resources, RunningPod, SiteConstraint, SiteId, SiteSnapshot,
    TenantId, TenantQuota,
};
use scheduler::placement::{PlacementOptions, PlacementRequest};

pub const GI: i64 = 1024 * 1024 * 1024;

pub struct NodeBuilder(Node);

impl NodeBuilder {
    pub fn new(name: &str) -> Self {
        NodeBuilder(Node {
            owner_usage: None,
            name: name.to_string(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
            ready: true,
            allocatable: Resources::new(16_000, 64 * GI, 110),
        })
    }
    pub fn cpu(mut self, milli: i64) -> Self {
        self.0.allocatable.cpu_milli = milli;
        self
    }
    pub fn mem_gi(mut self, gi: i64) -> Self {
        self.0.allocatable.memory_bytes = gi * GI;
        self
    }
    pub fn pods(mut self, pods: i64) -> Self {
        self.0.allocatable.pods = pods;
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.labels.insert(k.to_string(), v.to_string());
        self
    }
    pub fn taint(mut self, k: &str, v: &str, effect: TaintEffect) -> Self {
        self.0.taints.push(Taint {
            key: k.to_string(),
            value: v.to_string(),
            effect,
        });
        self
    }
    /// What the node's own workload uses now (the measurement usage-based lending reads).
    pub fn owner_usage(mut self, cpu_milli: i64, mem_gi: i64) -> Self {
        self.0.owner_usage = Some(Resources::new(cpu_milli, mem_gi * GI, 0));
        self
    }
    pub fn cordoned(mut self) -> Self {
        self.0.unschedulable = true;
        self
    }
    pub fn not_ready(mut self) -> Self {
        self.0.ready = false;
        self
    }
    pub fn obj(self) -> Node {
        self.0
    }
}

pub struct JobBuilder(JobDemand);

impl JobBuilder {
    /// `id` is `namespace/name`.
    pub fn new(id: &str) -> Self {
        JobBuilder(JobDemand {
            id: JobId(id.to_string()),
            tenant: TenantId("trade".to_string()),
            priority: Priority::Normal,
            job_manager: Resources::new(1_000, 2 * GI, 1),
            task_manager: Resources::new(2_000, 4 * GI, 1),
            task_managers: 2,
            sites: SiteConstraint::default(),
            node_selector: BTreeMap::new(),
            node_affinity: None,
            tolerations: Vec::new(),
            allow_offline: false,
        })
    }
    pub fn tenant(mut self, t: &str) -> Self {
        self.0.tenant = TenantId(t.to_string());
        self
    }
    pub fn priority(mut self, p: Priority) -> Self {
        self.0.priority = p;
        self
    }
    pub fn jm(mut self, cpu_milli: i64, mem_gi: i64) -> Self {
        self.0.job_manager = Resources::new(cpu_milli, mem_gi * GI, 1);
        self
    }
    pub fn tm(mut self, cpu_milli: i64, mem_gi: i64) -> Self {
        self.0.task_manager = Resources::new(cpu_milli, mem_gi * GI, 1);
        self
    }
    pub fn tms(mut self, n: u32) -> Self {
        self.0.task_managers = n;
        self
    }
    pub fn preferred(mut self, site: &str) -> Self {
        self.0.sites.preferred = Some(SiteId(site.to_string()));
        self
    }
    pub fn allowed(mut self, sites: &[&str]) -> Self {
        self.0.sites.allowed = sites.iter().map(|s| SiteId(s.to_string())).collect();
        self
    }
    pub fn selector(mut self, k: &str, v: &str) -> Self {
        self.0.node_selector.insert(k.to_string(), v.to_string());
        self
    }
    pub fn tolerate(mut self, k: &str, v: &str, effect: TaintEffect) -> Self {
        self.0.tolerations.push(Toleration {
            key: k.to_string(),
            operator: TolerationOperator::Equal,
            value: v.to_string(),
            effect: Some(effect),
            toleration_seconds: None,
        });
        self
    }
    pub fn allow_offline(mut self) -> Self {
        self.0.allow_offline = true;
        self
    }
    pub fn obj(self) -> JobDemand {
        self.0
    }
}

pub fn site(name: &str, nodes: Vec<Node>) -> SiteSnapshot {
    SiteSnapshot {
        id: SiteId(name.to_string()),
        nodes,
        running_pods: Vec::new(),
    }
}

pub fn foreign_pod(node: &str, cpu_milli: i64, mem_gi: i64) -> RunningPod {
    RunningPod {
        namespace: "other".to_string(),
        name: format!("pod-on-{node}"),
        node: node.to_string(),
        request: Resources::new(cpu_milli, mem_gi * GI, 1),
    }
}

/// A Wednesday, 12:00 UTC.
pub fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0)
        .single()
        .unwrap()
}

/// A Wednesday, 03:00 UTC (inside `night_window`).
pub fn night() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 3, 0, 0)
        .single()
        .unwrap()
}

/// Every day 01:00–07:00 UTC.
pub fn night_window() -> LendingWindow {
    LendingWindow {
        days: vec![
            chrono::Weekday::Mon,
            chrono::Weekday::Tue,
            chrono::Weekday::Wed,
            chrono::Weekday::Thu,
            chrono::Weekday::Fri,
            chrono::Weekday::Sat,
            chrono::Weekday::Sun,
        ],
        start_minute: 60,
        end_minute: 420,
        timezone: chrono_tz::UTC,
    }
}

/// Nodes labelled `pool=hdfs` lend at night, half their capacity minus 1 cpu / 2 GiB.
pub fn offline_pool() -> NodePool {
    NodePool {
        name: "hdfs".to_string(),
        site: None,
        selector: [("pool".to_string(), "hdfs".to_string())].into(),
        offline: Some(OfflineLending {
            windows: vec![night_window()],
            max_borrow_fraction: 0.5,
            safety_margin: Resources::new(1_000, 2 * GI, 0),
            lend_by: Default::default(),
        }),
    }
}

pub fn quota(tenant: &str, site: &str, cpu_milli: i64, mem_gi: i64) -> TenantQuota {
    TenantQuota {
        tenant: TenantId(tenant.to_string()),
        site: SiteId(site.to_string()),
        limit: Resources::new(cpu_milli, mem_gi * GI, i64::MAX),
    }
}

pub fn reserve(site: &str, protects: &str, min: Priority) -> FailoverReserve {
    FailoverReserve {
        site: SiteId(site.to_string()),
        protects: SiteId(protects.to_string()),
        min_priority: min,
    }
}

pub fn request<'a>(
    sites: &'a [SiteSnapshot],
    jobs: &'a [JobDemand],
    policy: &'a PlacementPolicy,
    running: &'a [JobPlacement],
) -> PlacementRequest<'a> {
    PlacementRequest {
        sites,
        jobs,
        policy,
        running,
        at: noon(),
        options: PlacementOptions::default(),
    }
}
