//! Real Apache Flink for the local-Flink tests: the PyFlink venv and what the keyed counter
//! (`tests/flink/keyed_counter.py`) printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The keyed counter, as a StreamJob's `jarURI`.
pub fn keyed_counter_uri() -> String {
    format!(
        "file://{}",
        repo_root().join("tests/flink/keyed_counter.py").display()
    )
}

/// The keyed counter as a StreamJob `shop/counter` preferring dc-a, checkpointing every
/// second into `hdfs:///flink/checkpoints/shop/counter`.
pub fn keyed_counter_job_yaml() -> String {
    format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: counter, namespace: shop}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: {}
  parallelism: 1
  jobManager: {{resources: {{cpu: "1", memory: 1Gi}}}}
  taskManager: {{resources: {{cpu: "1", memory: 1Gi}}}}
  placement: {{sites: {{preferred: dc-a}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/counter", interval: 1s, incremental: true, retained: 3}}
"#,
        keyed_counter_uri()
    )
}

/// Python of the PyFlink venv (installed on first use by `tests/flink/setup-venv.sh`).
pub fn flink_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/flink/setup-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/flink/setup-venv.sh");
    assert!(out.status.success(), "PyFlink venv setup failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One line the counter's print sink wrote: `COUNT> +U[3, 17]` is `("+U", 3, 17)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub kind: String,
    pub key: i64,
    pub count: i64,
}

/// Every count a keyed_counter run printed, in order.
pub fn counts(log: &Path) -> Vec<Count> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (kind, body) = line.trim().strip_prefix("COUNT> ")?.split_once('[')?;
            let (k, n) = body.trim_end_matches(']').split_once(", ")?;
            Some(Count {
                kind: kind.to_string(),
                key: k.trim().parse().ok()?,
                count: n.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The highest count printed per key.
pub fn max_counts(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for c in counts(log) {
        let e = out.entry(c.key).or_insert(c.count);
        *e = (*e).max(c.count);
    }
    out
}

/// Per key, the count the run started from: its first update retracts it (`-U[k, n]`: n),
/// or, without a retraction, adds one to it (`+I[k, 1]` after no state: 0).
pub fn started_from(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for c in counts(log) {
        out.entry(c.key)
            .or_insert(if c.kind == "-U" { c.count } else { c.count - 1 });
    }
    out
}

/// The lowest count printed per key.
pub fn min_counts(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for c in counts(log) {
        let e = out.entry(c.key).or_insert(c.count);
        *e = (*e).min(c.count);
    }
    out
}

/// Whether `state` (per key) is what gen 1 had counted at some point of its output: the
/// aggregation and the print sink are one task at parallelism 1, so a checkpoint's state is
/// the running counts after some prefix of the printed updates (keys not yet seen: 0).
pub fn is_a_cut_of(output: &[Count], state: &BTreeMap<i64, i64>) -> bool {
    let mut running: BTreeMap<i64, i64> = BTreeMap::new();
    let matches = |running: &BTreeMap<i64, i64>| {
        state
            .iter()
            .all(|(k, n)| running.get(k).copied().unwrap_or(0) == *n)
    };
    if matches(&running) {
        return true;
    }
    for c in output.iter().filter(|c| c.kind != "-U") {
        running.insert(c.key, c.count);
        if matches(&running) {
            return true;
        }
    }
    false
}
