//! Usage-based lending reads node usage from a real Prometheus (Debian's package): the default
//! queries over node_exporter and cAdvisor history give each node's own workload with our
//! pods taken out, and a site wrapped for usage carries the live measurement in its snapshot,
//! follows the workload as it moves, and drops it once it is older than `nodeUsage.maxAge`.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use scheduler::model::{Node, Resources, SiteId, SiteSnapshot};
use scheduler::report::assemble::RawSeries;
use scheduler::rightsize::Sample;
use support::prometheus::PrometheusServer;
use twinsite::config::{NodeUsageConfig, NodeUsageQueries};
use twinsite::node_usage::{NodeUsageProbe, UsageMeasuredSite};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};

const GI: f64 = (1u64 << 30) as f64;
const STEP_MS: i64 = 15_000;

/// The end of the history: the last full hour before now, within the server's retention.
fn end_ms() -> i64 {
    let now = Utc::now().timestamp_millis();
    now - now.rem_euclid(3_600_000) - 3_600_000
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Half an hour of a counter growing by `per_second`, or of a gauge at `value` (per_second 0).
fn series(metric: &str, pairs: &[(&str, &str)], start: f64, per_second: f64) -> RawSeries {
    let end = end_ms();
    let samples = (0..=120)
        .map(|i| {
            let at_ms = end - 1_800_000 + i * STEP_MS;
            Sample {
                at_ms,
                value: start + per_second * (i * STEP_MS) as f64 / 1000.0,
            }
        })
        .collect();
    RawSeries {
        metric: metric.to_string(),
        labels: labels(pairs),
        samples,
    }
}

fn config(queries: NodeUsageQueries, refresh: Duration, max_age: Duration) -> NodeUsageConfig {
    NodeUsageConfig {
        prometheus: BTreeMap::new(),
        queries,
        node_label: "node".to_string(),
        refresh,
        max_age,
    }
}

fn default_queries() -> NodeUsageQueries {
    NodeUsageQueries {
        node_cpu: NodeUsageQueries::DEFAULT_NODE_CPU.to_string(),
        node_memory: NodeUsageQueries::DEFAULT_NODE_MEMORY.to_string(),
        pods_cpu: NodeUsageQueries::DEFAULT_PODS_CPU.to_string(),
        pods_memory: NodeUsageQueries::DEFAULT_PODS_MEMORY.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_queries_give_each_nodes_own_workload_without_our_pods() {
    let mut history = Vec::new();
    // hdfs-1: 8 CPUs, each 0.6 busy (user 0.45, system 0.15) → 4.8 cores; 24 GiB used.
    for cpu in 0..8 {
        let cpu = cpu.to_string();
        for (mode, rate) in [("user", 0.45), ("system", 0.15), ("idle", 0.4)] {
            history.push(series(
                "node_cpu_seconds_total",
                &[("node", "hdfs-1"), ("cpu", &cpu), ("mode", mode)],
                1000.0,
                rate,
            ));
        }
    }
    history.push(series(
        "node_memory_MemTotal_bytes",
        &[("node", "hdfs-1")],
        64.0 * GI,
        0.0,
    ));
    history.push(series(
        "node_memory_MemAvailable_bytes",
        &[("node", "hdfs-1")],
        40.0 * GI,
        0.0,
    ));
    // Our two TaskManagers on hdfs-1 use 1.2 cores and 6 GiB; the batch pod beside them, in
    // its own namespace, is the node's workload and stays counted.
    for (pod, namespace, cores, gib) in [
        ("tm-1", "flink-jobs", 0.7, 4.0),
        ("tm-2", "flink-jobs", 0.5, 2.0),
        ("spark-exec", "batch", 2.0, 10.0),
    ] {
        let pairs = [
            ("node", "hdfs-1"),
            ("namespace", namespace),
            ("pod", pod),
            ("container", "main"),
        ];
        history.push(series(
            "container_cpu_usage_seconds_total",
            &pairs,
            50.0,
            cores,
        ));
        history.push(series(
            "container_memory_working_set_bytes",
            &pairs,
            gib * GI,
            0.0,
        ));
    }
    // hdfs-2: 4 CPUs all idle but one at 0.5; 8 GiB used; none of our pods.
    for (cpu, busy) in [("0", 0.5), ("1", 0.0), ("2", 0.0), ("3", 0.0)] {
        history.push(series(
            "node_cpu_seconds_total",
            &[("node", "hdfs-2"), ("cpu", cpu), ("mode", "user")],
            10.0,
            busy,
        ));
    }
    history.push(series(
        "node_memory_MemTotal_bytes",
        &[("node", "hdfs-2")],
        32.0 * GI,
        0.0,
    ));
    history.push(series(
        "node_memory_MemAvailable_bytes",
        &[("node", "hdfs-2")],
        24.0 * GI,
        0.0,
    ));
    // hdfs-3: CPU only (its node_exporter lacks the meminfo collector): no measurement.
    history.push(series(
        "node_cpu_seconds_total",
        &[("node", "hdfs-3"), ("cpu", "0"), ("mode", "user")],
        10.0,
        0.2,
    ));
    let prometheus = PrometheusServer::start_with(&history).await;

    let probe = NodeUsageProbe::new(
        SiteId("dc-a".into()),
        prometheus.url(),
        &config(
            default_queries(),
            Duration::from_secs(60),
            Duration::from_secs(300),
        ),
        Some("flink-jobs"),
    )
    .unwrap();
    let at = Utc.timestamp_millis_opt(end_ms()).unwrap();
    let usage = probe
        .measure(at)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log()));

    let near = |got: i64, want: i64| (got - want).abs() <= 1;
    let hdfs1 = usage["hdfs-1"];
    assert!(near(hdfs1.cpu_milli, 3_600), "4.8 − 1.2 cores, got {hdfs1}");
    assert_eq!(hdfs1.memory_bytes, (18.0 * GI) as i64, "24 − 6 GiB");
    let hdfs2 = usage["hdfs-2"];
    assert!(near(hdfs2.cpu_milli, 500), "{hdfs2}");
    assert_eq!(hdfs2.memory_bytes, (8.0 * GI) as i64);
    assert!(
        !usage.contains_key("hdfs-3"),
        "no memory figure, no measurement: {usage:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_prometheus_refuses_is_named_with_the_site_and_the_field() {
    let prometheus =
        PrometheusServer::start_with(&[series("up", &[("node", "n")], 1.0, 0.0)]).await;
    let mut queries = default_queries();
    queries.node_memory = "sum by (node) (".to_string();
    let probe = NodeUsageProbe::new(
        SiteId("dc-b".into()),
        prometheus.url(),
        &config(queries, Duration::from_secs(60), Duration::from_secs(300)),
        Some("flink-jobs"),
    )
    .unwrap();
    let error = probe.measure(Utc::now()).await.unwrap_err().to_string();
    assert!(error.starts_with("site dc-b: nodeMemoryQuery:"), "{error}");
}

/// Serves `batch_cpu_cores{node="hdfs-1"}` and `batch_memory_bytes{…}` as they are set, for
/// Prometheus to scrape every second.
async fn serve_batch_gauges(cores: Arc<Mutex<f64>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let cores = *cores.lock().unwrap();
            async move {
                format!(
                    "# TYPE batch_cpu_cores gauge\nbatch_cpu_cores{{node=\"hdfs-1\"}} {cores}\n\
                     # TYPE batch_memory_bytes gauge\nbatch_memory_bytes{{node=\"hdfs-1\"}} 1073741824\n"
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn hdfs_node() -> Node {
    Node {
        name: "hdfs-1".into(),
        labels: BTreeMap::from([("pool".to_string(), "hdfs".to_string())]),
        taints: vec![],
        unschedulable: false,
        ready: true,
        allocatable: Resources::new(16_000, 64 << 30, 110),
        owner_usage: None,
    }
}

async fn owner_usage_of(site: &dyn Site) -> Option<Resources> {
    site.snapshot().await.unwrap().nodes[0].owner_usage
}

/// Polls until `check` holds for the node's usage, or fails naming what was seen.
async fn until(site: &dyn Site, what: &str, check: impl Fn(Option<Resources>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = owner_usage_of(site).await;
        if check(seen) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the snapshot still says {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_measured_for_usage_follows_the_workload_and_forgets_a_stale_measurement() {
    let cores = Arc::new(Mutex::new(2.0));
    let target = serve_batch_gauges(Arc::clone(&cores)).await;
    let scrape = format!(
        "  - job_name: batch\n    scrape_interval: 1s\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
    );
    let prometheus = PrometheusServer::start_scraping(&scrape, &[]).await;

    let storage = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    let inner = SimulatedSite::new(
        SiteSnapshot {
            id: SiteId("dc-a".into()),
            nodes: vec![hdfs_node()],
            running_pods: vec![],
        },
        storage.path(),
        Arc::new(clock),
        SimulatedSiteConfig::default(),
    );
    let queries = NodeUsageQueries {
        node_cpu: "sum by (node) (batch_cpu_cores)".into(),
        node_memory: "sum by (node) (batch_memory_bytes)".into(),
        // No pods of ours: an empty vector, as Prometheus answers for an absent series.
        pods_cpu: "sum by (node) (absent_series_of_ours)".into(),
        pods_memory: "sum by (node) (absent_series_of_ours)".into(),
    };
    let max_age = Duration::from_secs(3);
    let probe = NodeUsageProbe::new(
        SiteId("dc-a".into()),
        prometheus.url(),
        &config(queries.clone(), Duration::from_millis(500), max_age),
        None,
    )
    .unwrap();
    let site = UsageMeasuredSite::start(
        Arc::new(inner),
        probe,
        &config(queries, Duration::from_millis(500), max_age),
    );

    until(&site, "the first measurement", |u| {
        u.is_some_and(|u| u.cpu_milli == 2_000 && u.memory_bytes == 1 << 30)
    })
    .await;
    // The batch workload grows: the snapshot follows it (and the node lends less).
    *cores.lock().unwrap() = 10.0;
    until(&site, "the grown workload", |u| {
        u.is_some_and(|u| u.cpu_milli == 10_000)
    })
    .await;

    // Prometheus goes away: the last measurement serves until it is maxAge old, then none.
    let gone = Instant::now();
    drop(prometheus);
    assert_eq!(
        owner_usage_of(&site).await.map(|u| u.cpu_milli),
        Some(10_000)
    );
    until(&site, "the stale measurement dropped", |u| u.is_none()).await;
    assert!(
        gone.elapsed() + Duration::from_millis(600) >= max_age,
        "dropped after {:?}, before maxAge {max_age:?}",
        gone.elapsed()
    );
}
