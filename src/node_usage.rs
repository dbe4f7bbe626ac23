//! Measured node usage for offline pools that lend by usage (policy `offline.lendBy: usage`):
//! what each node's own (HDFS/batch) workload uses, read from the site's Prometheus in the
//! background and attached to the site's snapshot as `Node::owner_usage`.
//!
//! May use `site`, `metrics::prometheus`, `config` and the crates. Never blocks a snapshot on
//! Prometheus, and never invents a measurement: a node missing from the answer, or a site
//! whose last good measurement is older than `nodeUsage.maxAge`, has no usage, and such a
//! node lends nothing (the scheduler's rule). A failed round keeps the last good measurement
//! until it ages out, so a short Prometheus outage moves nobody.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::model::{JobId, Resources, SiteId, SiteSnapshot};
use tokio::sync::watch;

use crate::config::{NodeUsageConfig, NodeUsageQueries};
use crate::job_metrics::prometheus::{PrometheusSource, VectorEntry};
use crate::site::{JobObservation, LaunchSpec, Site, SiteError, SiteHealth};

/// Most series one usage query may answer with: far above the nodes of one site (~2000),
/// low enough that a runaway query cannot fill memory.
pub const MAX_USAGE_SERIES: usize = 50_000;
/// Largest value taken as a measurement (cores or bytes); above it the series is broken.
const MAX_USAGE_VALUE: f64 = 1e15;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("site {site}: {query}: {source}")]
    Query {
        site: SiteId,
        query: &'static str,
        #[source]
        source: crate::job_metrics::MetricsError,
    },
    #[error("site {site}: {query}: {problem}")]
    Answer {
        site: SiteId,
        query: &'static str,
        problem: String,
    },
}

/// One site's four usage queries, with its namespace filled in.
pub struct NodeUsageProbe {
    site: SiteId,
    source: PrometheusSource,
    queries: NodeUsageQueries,
    node_label: String,
}

impl NodeUsageProbe {
    pub fn new(
        site: SiteId,
        url: &str,
        config: &NodeUsageConfig,
        namespace: Option<&str>,
    ) -> Result<NodeUsageProbe, crate::job_metrics::MetricsError> {
        let quoted = namespace
            .map(crate::job_metrics::prometheus::quote)
            .unwrap_or_default();
        let fill = |q: &str| q.replace(NodeUsageQueries::NAMESPACE, &quoted);
        Ok(NodeUsageProbe {
            site,
            source: PrometheusSource::new(url)?,
            queries: NodeUsageQueries {
                node_cpu: fill(&config.queries.node_cpu),
                node_memory: fill(&config.queries.node_memory),
                pods_cpu: fill(&config.queries.pods_cpu),
                pods_memory: fill(&config.queries.pods_memory),
            },
            node_label: config.node_label.clone(),
        })
    }

    /// What each node's own workload uses at `at`: the node's usage minus our pods' on it,
    /// never below zero. Nodes without both a CPU and a memory figure are left out.
    pub async fn measure(
        &self,
        at: DateTime<Utc>,
    ) -> Result<BTreeMap<String, Resources>, UsageError> {
        let at_ms = at.timestamp_millis();
        let node_cpu = self
            .per_node("nodeCpuQuery", &self.queries.node_cpu, at_ms)
            .await?;
        let node_memory = self
            .per_node("nodeMemoryQuery", &self.queries.node_memory, at_ms)
            .await?;
        let pods_cpu = self
            .per_node("podsCpuQuery", &self.queries.pods_cpu, at_ms)
            .await?;
        let pods_memory = self
            .per_node("podsMemoryQuery", &self.queries.pods_memory, at_ms)
            .await?;
        Ok(owner_usage(
            &node_cpu,
            &node_memory,
            &pods_cpu,
            &pods_memory,
        ))
    }

    async fn per_node(
        &self,
        query: &'static str,
        text: &str,
        at_ms: i64,
    ) -> Result<BTreeMap<String, f64>, UsageError> {
        let entries =
            self.source
                .instant(text, at_ms)
                .await
                .map_err(|source| UsageError::Query {
                    site: self.site.clone(),
                    query,
                    source,
                })?;
        by_node(&entries, &self.node_label).map_err(|problem| UsageError::Answer {
            site: self.site.clone(),
            query,
            problem,
        })
    }
}

/// One value per node from an instant vector; a node named twice is summed (a query without
/// `sum by` may answer per CPU or per container).
fn by_node(entries: &[VectorEntry], label: &str) -> Result<BTreeMap<String, f64>, String> {
    if entries.len() > MAX_USAGE_SERIES {
        return Err(format!(
            "{} series is over the bound of {MAX_USAGE_SERIES}; aggregate by {label}",
            entries.len()
        ));
    }
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for entry in entries {
        let Some(node) = entry.metric.get(label) else {
            return Err(format!(
                "a series has no {label:?} label ({:?}); aggregate by {label} or set nodeUsage.nodeLabel",
                entry.metric
            ));
        };
        let value: f64 = entry
            .value
            .1
            .parse()
            .map_err(|_| format!("node {node}: {:?} is not a number", entry.value.1))?;
        if value.is_nan() {
            // No samples in the rate window yet: no figure for this node.
            continue;
        }
        if !(0.0..=MAX_USAGE_VALUE).contains(&value) {
            return Err(format!("node {node}: {value} is not a usage"));
        }
        *out.entry(node.clone()).or_default() += value;
    }
    Ok(out)
}

/// The node's usage minus our pods' usage, per node that has both CPU and memory figures.
fn owner_usage(
    node_cpu: &BTreeMap<String, f64>,
    node_memory: &BTreeMap<String, f64>,
    pods_cpu: &BTreeMap<String, f64>,
    pods_memory: &BTreeMap<String, f64>,
) -> BTreeMap<String, Resources> {
    let mut out = BTreeMap::new();
    for (node, cores) in node_cpu {
        let Some(bytes) = node_memory.get(node) else {
            continue;
        };
        let own_cores = (cores - pods_cpu.get(node).copied().unwrap_or(0.0)).max(0.0);
        let own_bytes = (bytes - pods_memory.get(node).copied().unwrap_or(0.0)).max(0.0);
        // Rounded up: a lender's usage is never understated.
        out.insert(
            node.clone(),
            Resources::new(
                (own_cores * 1000.0).ceil() as i64,
                own_bytes.ceil() as i64,
                0,
            ),
        );
    }
    out
}

struct Measurement {
    taken: Instant,
    by_node: BTreeMap<String, Resources>,
}

/// A site whose snapshots carry the latest fresh usage measurement of its nodes.
pub struct UsageMeasuredSite {
    inner: Arc<dyn Site>,
    latest: Arc<RwLock<Option<Measurement>>>,
    max_age: Duration,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for UsageMeasuredSite {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl UsageMeasuredSite {
    /// Wraps `inner` and starts measuring every `config.refresh` on the current runtime.
    pub fn start(
        inner: Arc<dyn Site>,
        probe: NodeUsageProbe,
        config: &NodeUsageConfig,
    ) -> UsageMeasuredSite {
        let latest: Arc<RwLock<Option<Measurement>>> = Arc::new(RwLock::new(None));
        let refresh = config.refresh;
        let slot = Arc::clone(&latest);
        let refresher = tokio::spawn(async move {
            let mut failing = false;
            loop {
                match probe.measure(Utc::now()).await {
                    Ok(by_node) => {
                        if failing {
                            tracing::info!(site = %probe.site, nodes = by_node.len(), "node usage measured again");
                        }
                        failing = false;
                        let measurement = Measurement {
                            taken: Instant::now(),
                            by_node,
                        };
                        *slot.write().unwrap_or_else(|p| p.into_inner()) = Some(measurement);
                    }
                    Err(error) => {
                        // Once per outage: the last good measurement serves until maxAge.
                        if !failing {
                            tracing::warn!(%error, "cannot measure node usage; lending by usage keeps the last measurement until nodeUsage.maxAge");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(refresh).await;
            }
        });
        UsageMeasuredSite {
            inner,
            latest,
            max_age: config.max_age,
            refresher,
        }
    }

    /// Fills `owner_usage` of the snapshot's nodes from a measurement no older than maxAge.
    fn attach(&self, snapshot: &mut SiteSnapshot) {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let fresh = latest
            .as_ref()
            .filter(|m| m.taken.elapsed() <= self.max_age);
        for node in &mut snapshot.nodes {
            node.owner_usage = fresh.and_then(|m| m.by_node.get(&node.name).copied());
        }
    }
}

#[async_trait]
impl Site for UsageMeasuredSite {
    fn id(&self) -> SiteId {
        self.inner.id()
    }

    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        let mut snapshot = self.inner.snapshot().await?;
        self.attach(&mut snapshot);
        Ok(snapshot)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        self.inner.launch(spec).await
    }

    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        self.inner.stop(job, generation).await
    }

    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        self.inner
            .stop_with_savepoint(job, generation, target_dir)
            .await
    }

    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        self.inner.jobs().await
    }

    async fn health(&self) -> SiteHealth {
        self.inner.health().await
    }

    async fn peer_last_contact(&self) -> Option<DateTime<Utc>> {
        self.inner.peer_last_contact().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, value: &str) -> VectorEntry {
        VectorEntry {
            metric: [("node".to_string(), node.to_string())].into(),
            value: (0.0, value.to_string()),
        }
    }

    #[test]
    fn our_own_pods_are_not_counted_as_the_nodes_workload() {
        let cpu = by_node(&[entry("n1", "10.5"), entry("n2", "2")], "node").unwrap();
        let memory = by_node(&[entry("n1", "1000"), entry("n2", "500")], "node").unwrap();
        let ours_cpu = by_node(&[entry("n1", "4")], "node").unwrap();
        let ours_memory = by_node(&[entry("n1", "1200")], "node").unwrap();
        let usage = owner_usage(&cpu, &memory, &ours_cpu, &ours_memory);
        assert_eq!(usage["n1"], Resources::new(6_500, 0, 0), "never below zero");
        assert_eq!(usage["n2"], Resources::new(2_000, 500, 0));
    }

    #[test]
    fn a_node_without_a_memory_figure_has_no_measurement() {
        let cpu = by_node(&[entry("n1", "1"), entry("n2", "1")], "node").unwrap();
        let memory = by_node(&[entry("n1", "1")], "node").unwrap();
        let usage = owner_usage(&cpu, &memory, &BTreeMap::new(), &BTreeMap::new());
        assert!(usage.contains_key("n1") && !usage.contains_key("n2"));
    }

    #[test]
    fn a_series_without_the_node_label_or_with_a_broken_value_is_refused_by_name() {
        let unlabelled = VectorEntry {
            metric: [("instance".to_string(), "10.0.0.1:9100".to_string())].into(),
            value: (0.0, "1".to_string()),
        };
        let error = by_node(&[unlabelled], "node").unwrap_err();
        assert!(error.contains("no \"node\" label"), "{error}");
        let error = by_node(&[entry("n1", "-3")], "node").unwrap_err();
        assert!(error.contains("node n1: -3 is not a usage"), "{error}");
        let error = by_node(&[entry("n1", "lots")], "node").unwrap_err();
        assert!(error.contains("node n1"), "{error}");
        assert!(by_node(&[entry("n1", "NaN")], "node").unwrap().is_empty());
    }

    #[test]
    fn the_namespace_is_filled_in_as_a_quoted_promql_string() {
        let config = NodeUsageConfig {
            prometheus: BTreeMap::new(),
            queries: NodeUsageQueries {
                node_cpu: "a".into(),
                node_memory: "b".into(),
                pods_cpu: "x{namespace={namespace}}".into(),
                pods_memory: "y".into(),
            },
            node_label: "node".into(),
            refresh: Duration::from_secs(60),
            max_age: Duration::from_secs(300),
        };
        let probe = NodeUsageProbe::new(
            SiteId("dc-a".into()),
            "http://127.0.0.1:9",
            &config,
            Some(r#"a"b"#),
        )
        .unwrap();
        assert_eq!(probe.queries.pods_cpu, r#"x{namespace="a\"b"}"#);
        assert_eq!(
            probe.queries.node_cpu, "a",
            "a query without it is kept as written"
        );
    }
}
