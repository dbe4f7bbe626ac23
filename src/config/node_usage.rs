//! The `nodeUsage` section against the policy: which site's Prometheus, which queries, timing.
//! Must never: query Prometheus; `crate::node_usage` measures, this only checks the settings.

use std::collections::BTreeMap;
use std::time::Duration;

use scheduler::input::{Policy, Problems};

use super::file::NodeUsageSpec;
use super::resolve::duration;
use super::resolved::{NodeUsageConfig, NodeUsageQueries};

/// Longest query text accepted; PromQL this long is a mistake, not a query.
const MAX_USAGE_QUERY_BYTES: usize = 4096;
const DEFAULT_USAGE_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_USAGE_MAX_AGE: Duration = Duration::from_secs(300);
/// A measurement older than this says nothing about a node's workload now.
const MAX_USAGE_AGE: Duration = Duration::from_secs(3600);

/// The `nodeUsage` section against the policy: present exactly when a pool lends by usage,
/// a URL for every site such a pool covers, and no other site.
pub(super) fn resolve_node_usage(
    spec: Option<&NodeUsageSpec>,
    policy: Option<&Policy>,
    problems: &mut Problems,
) -> Option<Option<NodeUsageConfig>> {
    use scheduler::model::{LendBasis, SiteId};
    let policy = policy?;
    let sites = policy.site_ids();
    let placement = policy.placement_policy();
    let mut needing: Vec<(&str, SiteId)> = Vec::new();
    for pool in &placement.pools {
        if pool
            .offline
            .as_ref()
            .is_some_and(|l| l.lend_by == LendBasis::Usage)
        {
            match &pool.site {
                Some(site) => needing.push((&pool.name, site.clone())),
                None => needing.extend(sites.iter().map(|s| (pool.name.as_str(), s.clone()))),
            }
        }
    }
    let Some(spec) = spec else {
        if let Some((pool, _)) = needing.first() {
            problems.field(
                "nodeUsage",
                format!(
                    "pool {pool:?} lends by usage (policy offline.lendBy: usage), so the \
                     configuration needs a nodeUsage section naming each site's Prometheus"
                ),
            );
            return None;
        }
        return Some(None);
    };
    let before = problems.len();
    if needing.is_empty() {
        problems.field(
            "nodeUsage",
            "no policy pool lends by usage (offline.lendBy: usage); remove the section or set \
             lendBy in the policy",
        );
    }
    let mut prometheus = BTreeMap::new();
    for (site, url) in &spec.prometheus {
        let field = format!("nodeUsage.prometheus.{site}");
        let id = SiteId(site.clone());
        if !sites.contains(&id) {
            problems.field(&field, format!("the policy has no site {site:?}"));
            continue;
        }
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                prometheus.insert(id, url.clone());
            }
            Ok(parsed) => problems.field(
                &field,
                format!(
                    "expected an http(s) URL, found scheme {:?}",
                    parsed.scheme()
                ),
            ),
            Err(e) => problems.field(&field, format!("not a URL ({e}): {url:?}")),
        }
    }
    for (pool, site) in &needing {
        if !spec.prometheus.contains_key(&site.0) {
            problems.field(
                format!("nodeUsage.prometheus.{site}"),
                format!("missing: pool {pool:?} lends by usage in site {site}"),
            );
        }
    }
    let mut query = |field: &str, given: &Option<String>, default: &str| -> String {
        match given {
            None => default.to_string(),
            Some(q) if q.trim().is_empty() => {
                problems.field(format!("nodeUsage.{field}"), "must not be empty");
                String::new()
            }
            Some(q) if q.len() > MAX_USAGE_QUERY_BYTES => {
                problems.field(
                    format!("nodeUsage.{field}"),
                    format!(
                        "{} bytes is over the bound of {MAX_USAGE_QUERY_BYTES}",
                        q.len()
                    ),
                );
                String::new()
            }
            Some(q) => q.clone(),
        }
    };
    let queries = NodeUsageQueries {
        node_cpu: query(
            "nodeCpuQuery",
            &spec.node_cpu_query,
            NodeUsageQueries::DEFAULT_NODE_CPU,
        ),
        node_memory: query(
            "nodeMemoryQuery",
            &spec.node_memory_query,
            NodeUsageQueries::DEFAULT_NODE_MEMORY,
        ),
        pods_cpu: query(
            "podsCpuQuery",
            &spec.pods_cpu_query,
            NodeUsageQueries::DEFAULT_PODS_CPU,
        ),
        pods_memory: query(
            "podsMemoryQuery",
            &spec.pods_memory_query,
            NodeUsageQueries::DEFAULT_PODS_MEMORY,
        ),
    };
    for site in prometheus.keys() {
        let namespace = policy
            .site(site)
            .and_then(|s| s.kubernetes.as_ref())
            .and_then(|k| k.namespace.as_deref());
        let named = [&queries.pods_cpu, &queries.pods_memory]
            .iter()
            .any(|q| q.contains(NodeUsageQueries::NAMESPACE));
        if named && namespace.is_none() {
            problems.field(
                format!("nodeUsage.prometheus.{site}"),
                format!(
                    "the pods queries name {{namespace}} but site {site} has no \
                     kubernetes.namespace in the policy: set it, or give podsCpuQuery and \
                     podsMemoryQuery selecting our pods another way"
                ),
            );
        }
    }
    let node_label = spec
        .node_label
        .clone()
        .unwrap_or_else(|| "node".to_string());
    if !is_prometheus_label(&node_label) {
        problems.field(
            "nodeUsage.nodeLabel",
            format!("{node_label:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        );
    }
    let refresh = match &spec.refresh {
        None => Some(DEFAULT_USAGE_REFRESH),
        Some(text) => duration(problems, "nodeUsage.refresh", text),
    };
    let max_age = match &spec.max_age {
        None => Some(DEFAULT_USAGE_MAX_AGE),
        Some(text) => duration(problems, "nodeUsage.maxAge", text),
    };
    if let (Some(refresh), Some(max_age)) = (refresh, max_age) {
        if max_age < refresh {
            problems.field(
                "nodeUsage.maxAge",
                format!(
                    "{} is shorter than nodeUsage.refresh ({}): every measurement would be too old",
                    humantime::format_duration(max_age),
                    humantime::format_duration(refresh)
                ),
            );
        }
        if max_age > MAX_USAGE_AGE {
            problems.field(
                "nodeUsage.maxAge",
                format!(
                    "at most {}: an older measurement says nothing about the node now",
                    humantime::format_duration(MAX_USAGE_AGE)
                ),
            );
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Some(NodeUsageConfig {
        prometheus,
        queries,
        node_label,
        refresh: refresh?,
        max_age: max_age?,
    }))
}

fn is_prometheus_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
