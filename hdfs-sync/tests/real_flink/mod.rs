//! Real Apache Flink for hdfs-sync's end-to-end tests: the PyFlink venv, the keyed counter
//! (`tests/flink/keyed_counter.py`) in its own process group, and the counts it printed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Python of the PyFlink venv (installed on first use by `tests/flink/setup-venv.sh`).
pub fn flink_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/flink/setup-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run setup-venv.sh");
    assert!(out.status.success(), "PyFlink venv setup failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Starts the keyed counter checkpointing into `checkpoint_dir`, restoring from `restore`,
/// with `flags` (`--claim`, `--fifo`, …), its output in `log`.
pub fn start_job(
    python: &Path,
    checkpoint_dir: &Path,
    restore: Option<&str>,
    flags: &[String],
    log: &Path,
) -> Child {
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/flink/keyed_counter.py"))
        .arg(format!("file://{}", checkpoint_dir.display()));
    if let Some(path) = restore {
        cmd.arg(path);
    }
    cmd.args(flags);
    let out = std::fs::File::create(log).unwrap();
    // Own process group, so the JVM PyFlink starts dies with it.
    cmd.stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start PyFlink job")
}

pub fn kill_group(child: &mut Child) {
    // `--` so procps kill reads `-<pgid>` as a process group, not a signal.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", child.id()))
        .stderr(Stdio::null()) // a group that already exited is not worth a line
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills the job's process group when dropped, so a failing assertion leaves no JVM behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// Polls `done` every 200 ms until it holds; panics with `what` and the log after `limit`.
pub fn wait_for(limit: Duration, what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; log {}:\n{}",
            log.display(),
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One line the counter's print sink wrote: `COUNT> +U[3, 17]` is `("+U", 3, 17)`.
pub fn counts(log: &Path) -> Vec<(String, i64, i64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("COUNT> ")?;
            let (kind, body) = rest.split_once('[')?;
            let (k, n) = body.trim_end_matches(']').split_once(", ")?;
            Some((
                kind.to_string(),
                k.trim().parse().ok()?,
                n.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The highest count printed per key.
pub fn max_counts(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for (_, k, n) in counts(log) {
        let e = out.entry(k).or_insert(n);
        *e = (*e).max(n);
    }
    out
}

/// Per key, the count the run started from: its first update retracts it (`-U[k, n]`: n),
/// or, without a retraction, adds one to it (`+I[k, 1]` after no state: 0).
pub fn started_from(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for (kind, k, n) in counts(log) {
        out.entry(k).or_insert(if kind == "-U" { n } else { n - 1 });
    }
    out
}

/// Complete checkpoints (`chk-N/_metadata` present) of every job under `root`, oldest first.
pub fn complete_checkpoints(root: &Path) -> Vec<PathBuf> {
    let Ok(jobs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = jobs
        .flatten()
        .filter_map(|j| std::fs::read_dir(j.path()).ok())
        .flat_map(|e| e.flatten())
        .filter_map(|e| {
            let id = e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()?;
            e.path().join("_metadata").is_file().then(|| (id, e.path()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}
