//! Synthetic clusters, jobs and policies in the real input formats (`twinsite generate`):
//! `kubectl get nodes -o json` per site, StreamJob YAML and a policy file, deterministic for
//! a seed. At 2 sites × 1000 nodes and 1000 jobs the jobs request roughly half of the online
//! capacity, with one tenant's quota binding.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::input::API_VERSION;
use crate::input::policy::{
    DetectionSpec, MarginSpec, OfflineSpec, POLICY_KIND, PolicyFile, PoolSpec, PrioritiesSpec,
    QuotaSpec, ReplicationSpec, ReserveSpec, SiteSpec, WindowSpec,
};
use crate::input::streamjob::{
    AffinitySpec, CheckpointSpec, FailoverMode, FailoverSpec, JobManagerSpec, ObjectMeta,
    PlacementSpec, ResourceSpec, STREAM_JOB_KIND, SitesSpec, StreamJob, StreamJobSpec,
    TaskManagerSpec, stream_jobs_to_yaml,
};
use crate::k8s::{
    NodeAffinity, NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    Quantity, TaintEffect, Toleration, TolerationOperator,
};
use crate::model::{Priority, SiteId};

/// Label of every generated node naming its pool.
pub const POOL_LABEL: &str = "twinsite.io/pool";
pub const RACK_LABEL: &str = "twinsite.io/rack";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Taint key of offline HDFS nodes (`twinsite.io/offline=hdfs:NoSchedule`).
pub const OFFLINE_TAINT_KEY: &str = "twinsite.io/offline";
pub const ONLINE_POOL: &str = "online";
pub const OFFLINE_POOL: &str = "offline-hdfs";

const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// Node shapes (cores, GiB) and how often each occurs, in percent.
const SHAPES: [(i64, i64, u32); 4] = [(32, 128, 30), (48, 192, 35), (64, 256, 25), (96, 384, 10)];

const TENANTS: [&str; 8] = [
    "trade",
    "growth",
    "risk",
    "search",
    "ads",
    "logistics",
    "finance",
    "membership",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateParams {
    pub sites: u32,
    pub nodes_per_site: u32,
    pub jobs: u32,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Per site, a `kubectl get nodes -o json` `v1` `List`.
    pub nodes_json: BTreeMap<SiteId, String>,
    /// Multi-document StreamJob YAML.
    pub jobs_yaml: String,
    pub policy_yaml: String,
}

/// Site names `dc-a`, `dc-b`, …, `dc-z`, `dc-aa`, ….
pub fn site_name(index: u32) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    letters.reverse();
    format!("dc-{}", letters.into_iter().collect::<String>())
}

/// Same parameters, same output, byte for byte.
pub fn generate(params: &GenerateParams) -> Result<Generated, serde_saphyr::SerializeError> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let sites: Vec<String> = (0..params.sites.max(1)).map(site_name).collect();
    let mut nodes_json = BTreeMap::new();
    for site in &sites {
        let list = node_list(site, params.nodes_per_site, &mut rng);
        nodes_json.insert(
            SiteId(site.clone()),
            serde_json::to_string_pretty(&list).unwrap_or_default(),
        );
    }
    let tenant_count = rng.random_range(5..=8usize);
    let tenants = tenant_names(tenant_count, params.jobs);
    let tenants: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let jobs: Vec<StreamJob> = (0..params.jobs)
        .map(|i| job(i, &tenants, &sites, &mut rng))
        .collect();
    let policy = policy(&sites, &tenants, &jobs);
    Ok(Generated {
        nodes_json,
        jobs_yaml: stream_jobs_to_yaml(&jobs)?,
        policy_yaml: serde_saphyr::to_string(&policy)?,
    })
}

/// Jobs per tenant the generator aims at when a fleet outgrows its named tenants: half of
/// `MAX_JOBS_PER_TENANT`, so that jobs drawn at random never reach the bound.
const JOBS_PER_EXTRA_TENANT: u32 = 500;

/// `count` of the named tenants, and as many more (`tenant09`, …) as keep each near
/// `JOBS_PER_EXTRA_TENANT` jobs: a fleet of thousands spans teams, and one tenant may hold
/// at most `MAX_JOBS_PER_TENANT`. Fleets up to ~2500 jobs keep exactly the named tenants (and
/// so the same output as before).
fn tenant_names(count: usize, jobs: u32) -> Vec<String> {
    let needed = jobs.div_ceil(JOBS_PER_EXTRA_TENANT) as usize;
    (0..count.max(needed))
        .map(|i| match TENANTS.get(i).filter(|_| i < count) {
            Some(name) => (*name).to_string(),
            None => format!("tenant{:02}", i + 1),
        })
        .collect()
}

fn pick_weighted<T: Copy>(rng: &mut ChaCha8Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for &(choice, weight) in choices {
        if roll < weight {
            return choice;
        }
        roll -= weight;
    }
    choices[choices.len() - 1].0
}

fn node_list(site: &str, count: u32, rng: &mut ChaCha8Rng) -> Value {
    let items: Vec<Value> = (0..count).map(|i| node(site, i, rng)).collect();
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    })
}

fn node(site: &str, index: u32, rng: &mut ChaCha8Rng) -> Value {
    let name = format!("{site}-node-{index:04}");
    let shape = pick_weighted(
        rng,
        &SHAPES.map(|(cores, gib, weight)| ((cores, gib), weight)),
    );
    let (cores, gib) = shape;
    let offline = rng.random_bool(0.2);
    let pool = if offline { OFFLINE_POOL } else { ONLINE_POOL };
    let zone = format!("zone-{}", index % 3 + 1);
    let rack = format!("rack-{:03}", index / 20);
    // Capacity as the kubelet reports it (memory in Ki, a little under the nominal size);
    // allocatable after system and kube reservations and the eviction threshold.
    let capacity_ki = gib * GIB / 1024 - 1_048_576 + i64::from(rng.random_range(0..65_536u32));
    let reserved_cpu_milli = 500 + cores * 10;
    let allocatable_ki = capacity_ki - (2 * GIB + 100 * MIB) / 1024;
    let not_ready = rng.random_bool(0.004);
    let cordoned = rng.random_bool(0.004);
    let mut spec = serde_json::Map::new();
    spec.insert(
        "podCIDR".to_string(),
        json!(format!("10.{}.{}.0/24", index / 250, index % 250)),
    );
    let mut taints = Vec::new();
    if offline {
        taints.push(json!({"key": OFFLINE_TAINT_KEY, "value": "hdfs", "effect": "NoSchedule"}));
    }
    if cordoned {
        spec.insert("unschedulable".to_string(), json!(true));
        taints.push(json!({
            "key": "node.kubernetes.io/unschedulable",
            "effect": "NoSchedule",
            "timeAdded": "2026-01-05T03:12:40Z",
        }));
    }
    if not_ready {
        taints.push(json!({
            "key": "node.kubernetes.io/unreachable",
            "effect": "NoSchedule",
            "timeAdded": "2026-01-05T03:20:11Z",
        }));
    }
    if !taints.is_empty() {
        spec.insert("taints".to_string(), Value::Array(taints));
    }
    let ready = if not_ready {
        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
               "message": "Kubelet stopped posting node status.",
               "lastHeartbeatTime": "2026-01-05T03:19:31Z", "lastTransitionTime": "2026-01-05T03:20:11Z"})
    } else {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "kubelet is posting ready status",
               "lastHeartbeatTime": "2026-01-05T08:00:00Z", "lastTransitionTime": "2025-11-02T10:00:00Z"})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": format!("c{cores}m{gib}"),
                ZONE_LABEL: zone,
                RACK_LABEL: rack,
                POOL_LABEL: pool,
            },
            "creationTimestamp": "2025-11-02T09:58:12Z",
        },
        "spec": Value::Object(spec),
        "status": {
            "capacity": {
                "cpu": cores.to_string(),
                "memory": format!("{capacity_ki}Ki"),
                "pods": "110",
                "ephemeral-storage": "959786032Ki",
            },
            "allocatable": {
                "cpu": format!("{}m", cores * 1000 - reserved_cpu_milli),
                "memory": format!("{allocatable_ki}Ki"),
                "pods": "110",
                "ephemeral-storage": "884538375599",
            },
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
                ready,
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.4", "osImage": "Debian GNU/Linux 12 (bookworm)"},
        },
    })
}

fn job(index: u32, tenants: &[&str], sites: &[String], rng: &mut ChaCha8Rng) -> StreamJob {
    let tenant = tenants[rng.random_range(0..tenants.len())];
    let name = format!("{tenant}-job-{index:04}");
    let priority = pick_weighted(
        rng,
        &[
            (Priority::Critical, 10),
            (Priority::High, 25),
            (Priority::Normal, 45),
            (Priority::BestEffort, 20),
        ],
    );
    // Skewed small: most jobs have a few TaskManagers, a few have dozens.
    let u: f64 = rng.random();
    let task_managers = 1 + (63.0 * u * u * u).round() as u32;
    let slots = rng.random_range(1..=4u32);
    let slot_need = task_managers * slots;
    let with_plan = slot_need >= 4 && rng.random_bool(0.12);
    let (parallelism, plan) = if with_plan {
        // The sink runs in its own slot sharing group, so the plan needs more slots than
        // the configured parallelism.
        let sink = (slot_need / 4).max(1);
        let source = slot_need - sink;
        let parallelism = (source / 2).max(1);
        (parallelism, Some(plan_json(source, parallelism, sink)))
    } else {
        // Any parallelism that still needs exactly `task_managers` TaskManagers.
        (slot_need - rng.random_range(0..slots), None)
    };
    let tm_cores = pick_weighted(rng, &[(1i64, 25), (2, 50), (4, 25)]);
    let tm_gib_per_core = pick_weighted(rng, &[(2i64, 40), (4, 60)]);
    let jm_gib = pick_weighted(rng, &[(2i64, 60), (4, 40)]);

    let mut placement = PlacementSpec::default();
    let preferred = sites[rng.random_range(0..sites.len())].clone();
    placement.sites = SitesSpec {
        allowed: if rng.random_bool(0.15) {
            vec![preferred.clone()]
        } else {
            Vec::new()
        },
        preferred: Some(preferred),
    };
    if rng.random_bool(0.15) {
        placement.allow_offline = true;
        placement.tolerations.push(Toleration {
            key: OFFLINE_TAINT_KEY.to_string(),
            operator: TolerationOperator::Equal,
            value: "hdfs".to_string(),
            effect: Some(TaintEffect::NoSchedule),
            toleration_seconds: None,
        });
    } else if rng.random_bool(0.1) {
        placement
            .node_selector
            .insert(POOL_LABEL.to_string(), ONLINE_POOL.to_string());
    }
    if rng.random_bool(0.08) {
        placement.affinity = Some(AffinitySpec {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: vec![NodeSelectorRequirement {
                            key: ZONE_LABEL.to_string(),
                            operator: NodeSelectorOperator::In,
                            values: vec!["zone-1".to_string(), "zone-2".to_string()],
                        }],
                        match_fields: Vec::new(),
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: Vec::new(),
            }),
        });
    }
    let mode = match priority {
        Priority::BestEffort if rng.random_bool(0.3) => FailoverMode::None,
        _ if rng.random_bool(0.05) => FailoverMode::Manual,
        _ => FailoverMode::Auto,
    };
    let mut flink_configuration = BTreeMap::new();
    flink_configuration.insert("state.backend.type".to_string(), "rocksdb".to_string());
    StreamJob {
        api_version: API_VERSION.to_string(),
        kind: STREAM_JOB_KIND.to_string(),
        metadata: ObjectMeta {
            name,
            namespace: tenant.to_string(),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "twinsite".to_string(),
            )]),
            ..ObjectMeta::default()
        },
        spec: StreamJobSpec {
            tenant: None,
            priority,
            image: "flink:2.0.0".to_string(),
            flink_version: "v2_0".to_string(),
            jar_uri: format!("hdfs:///jars/{tenant}/job-{index:04}-1.{}.jar", index % 7),
            entry_class: Some(format!("com.example.{tenant}.Job{index:04}")),
            args: Vec::new(),
            parallelism,
            max_parallelism: Some(parallelism.max(slot_need).next_power_of_two().max(128)),
            vertex_parallelism: BTreeMap::new(),
            plan,
            job_manager: JobManagerSpec {
                resources: ResourceSpec {
                    cpu: Quantity("1".to_string()),
                    memory: Quantity(format!("{jm_gib}Gi")),
                },
            },
            task_manager: TaskManagerSpec {
                resources: ResourceSpec {
                    cpu: Quantity(tm_cores.to_string()),
                    memory: Quantity(format!("{}Gi", tm_cores * tm_gib_per_core)),
                },
                slots,
            },
            placement,
            checkpoints: Some(CheckpointSpec {
                dir: format!("hdfs:///flink/checkpoints/{tenant}/job-{index:04}"),
                interval: pick_weighted(rng, &[("30s", 30), ("60s", 50), ("5m", 20)]).to_string(),
                incremental: rng.random_bool(0.6),
                retained: 2,
            }),
            failover: FailoverSpec {
                mode,
                ..FailoverSpec::default()
            },
            flink_configuration,
            site_overrides: Default::default(),
        },
    }
}

fn plan_json(source: u32, map: u32, sink: u32) -> Value {
    json!({
        "nodes": [
            {"id": 1, "type": "Source: Kafka", "pact": "Data Source", "contents": "Source: Kafka", "parallelism": source},
            {"id": 2, "type": "Map", "pact": "Operator", "contents": "Map", "parallelism": map,
             "predecessors": [{"id": 1, "ship_strategy": "REBALANCE", "side": "second"}]},
            {"id": 3, "type": "Sink: Kafka", "pact": "Data Sink", "contents": "Sink: Kafka", "parallelism": sink,
             "slotSharingGroup": "sink",
             "predecessors": [{"id": 2, "ship_strategy": "FORWARD", "side": "second"}]},
        ]
    })
}

/// What the generator knows a job requests, without the parser: (cpu milli, memory bytes).
fn requested(job: &StreamJob) -> (i64, i64) {
    let spec = &job.spec;
    let tm_cores: i64 = spec.task_manager.resources.cpu.0.parse().unwrap_or(0);
    let gib = |q: &Quantity| q.0.trim_end_matches("Gi").parse::<i64>().unwrap_or(0);
    let plan_need = spec.plan.as_ref().map_or(0, |plan| {
        plan["nodes"].as_array().map_or(0, |nodes| {
            let source = nodes
                .first()
                .and_then(|n| n["parallelism"].as_i64())
                .unwrap_or(0);
            let sink = nodes
                .last()
                .and_then(|n| n["parallelism"].as_i64())
                .unwrap_or(0);
            source.max(i64::from(spec.parallelism)) + sink
        })
    });
    let slots = i64::from(spec.task_manager.slots.max(1));
    let need = plan_need.max(i64::from(spec.parallelism));
    let tms = (need + slots - 1) / slots;
    (
        1000 + tms * tm_cores * 1000,
        (gib(&spec.job_manager.resources.memory) + tms * gib(&spec.task_manager.resources.memory))
            * GIB,
    )
}

fn policy(sites: &[String], tenants: &[&str], jobs: &[StreamJob]) -> PolicyFile {
    let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for job in jobs {
        let (cpu, memory) = requested(job);
        let entry = totals.entry(job.metadata.namespace.as_str()).or_default();
        entry.0 += cpu;
        entry.1 += memory;
    }
    let mut quotas = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let (cpu, memory) = totals.get(tenant).copied().unwrap_or((1000, GIB));
        // Generous: a tenant's whole load fits in any one site, except for the first
        // tenant, whose quotas together cover only 80 % of its load.
        let share = if i == 0 {
            0.8 / sites.len() as f64
        } else {
            1.2
        };
        let cpu = ((cpu as f64 * share).ceil() as i64).max(1000);
        let memory = ((memory as f64 * share / MIB as f64).ceil() as i64).max(1024);
        for site in sites {
            quotas.push(QuotaSpec {
                tenant: tenant.to_string(),
                site: site.clone(),
                cpu: Quantity(format!("{cpu}m")),
                memory: Quantity(format!("{memory}Mi")),
                pods: None,
            });
        }
    }
    let failover_reserve = if sites.len() >= 2 {
        (0..sites.len())
            .map(|i| ReserveSpec {
                site: sites[(i + 1) % sites.len()].clone(),
                protects: sites[i].clone(),
                min_priority: Priority::Critical,
            })
            .collect()
    } else {
        Vec::new()
    };
    PolicyFile {
        api_version: API_VERSION.to_string(),
        kind: POLICY_KIND.to_string(),
        sites: sites
            .iter()
            .map(|site| SiteSpec {
                name: site.clone(),
                kubernetes: None,
                storage: Some(format!(
                    "hdfs://nameservice-{}/",
                    site.trim_start_matches("dc-")
                )),
            })
            .collect(),
        pools: vec![
            PoolSpec {
                name: "online-general".to_string(),
                site: None,
                selector: BTreeMap::from([(POOL_LABEL.to_string(), ONLINE_POOL.to_string())]),
                offline: None,
            },
            PoolSpec {
                name: "hdfs-offline".to_string(),
                site: None,
                selector: BTreeMap::from([(POOL_LABEL.to_string(), OFFLINE_POOL.to_string())]),
                offline: Some(OfflineSpec {
                    windows: vec![
                        WindowSpec {
                            days: Some(
                                ["Mon", "Tue", "Wed", "Thu", "Fri"]
                                    .map(String::from)
                                    .to_vec(),
                            ),
                            start: "01:00".to_string(),
                            end: "07:00".to_string(),
                            timezone: "Asia/Shanghai".to_string(),
                        },
                        WindowSpec {
                            days: Some(["Sat", "Sun"].map(String::from).to_vec()),
                            start: "00:00".to_string(),
                            end: "24:00".to_string(),
                            timezone: "Asia/Shanghai".to_string(),
                        },
                    ],
                    max_borrow_fraction: 0.5,
                    safety_margin: Some(MarginSpec {
                        cpu: Some(Quantity("2".to_string())),
                        memory: Some(Quantity("8Gi".to_string())),
                        pods: None,
                    }),
                    lend_by: None,
                }),
            },
        ],
        quotas,
        priorities: PrioritiesSpec::default(),
        failover_reserve,
        detection: DetectionSpec::default(),
        replication: ReplicationSpec::default(),
        diagnosis: Default::default(),
        redaction: Default::default(),
        rebalance: Default::default(),
        scale_profiles: Vec::new(),
    }
}
