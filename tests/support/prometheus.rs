//! A real Prometheus server for a test, loaded with history: the series are written as
//! OpenMetrics text, turned into TSDB blocks by `promtool tsdb create-blocks-from
//! openmetrics`, and served on a free loopback port from a temporary directory; killed and
//! removed on drop. Missing Prometheus is a test failure that says how to install it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scheduler::report::assemble::RawSeries;
use twinsite::job_metrics::synthetic::{prometheus_value, seconds_text};

/// Prometheus usually answers in about a second once its blocks are loaded.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct PrometheusServer {
    child: Child,
    url: String,
    log_path: PathBuf,
    // Dropped after the process is killed (fields drop after Drop::drop runs).
    _dir: tempfile::TempDir,
}

pub fn binary(name: &str) -> PathBuf {
    let installed = PathBuf::from("/usr/bin").join(name);
    if installed.exists() {
        return installed;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{name} is not installed (looked in /usr/bin and on PATH); run tests/setup.sh to \
         install Debian's prometheus package"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// OpenMetrics text of `series`: one family per metric name (families must not interleave),
/// every family a gauge, timestamps in seconds, closed by `# EOF`.
pub fn openmetrics(series: &[RawSeries]) -> String {
    let mut families: BTreeMap<&str, Vec<&RawSeries>> = BTreeMap::new();
    for s in series {
        families.entry(s.metric.as_str()).or_default().push(s);
    }
    let mut out = String::new();
    for (name, members) in families {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in members {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n")
                    )
                })
                .collect();
            for sample in &s.samples {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {} {}",
                    labels.join(","),
                    prometheus_value(sample.value),
                    seconds_text(sample.at_ms)
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

impl PrometheusServer {
    /// Imports `series` with promtool, starts Prometheus on them and waits until it is ready.
    pub async fn start_with(series: &[RawSeries]) -> PrometheusServer {
        let promtool = binary("promtool");
        let dir = tempfile::tempdir().expect("temporary directory for prometheus");
        let data = dir.path().join("data");
        let history = dir.path().join("history.om");
        std::fs::write(&history, openmetrics(series)).expect("write OpenMetrics history");
        let import = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&history)
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run tests/setup.sh",
                    promtool.display()
                )
            });
        assert!(
            import.status.success(),
            "promtool could not import the history: {}{}",
            String::from_utf8_lossy(&import.stdout),
            String::from_utf8_lossy(&import.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        // No scrape targets: the test's history is all the server holds.
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("write config");
        PrometheusServer::spawn(dir, &config, &data).await
    }

    /// Starts Prometheus scraping every second with `scrape_configs` (YAML, the list under
    /// that key); `files` (name, contents) are written beside its config first, mode 0600
    /// (e.g. a bearer token for `authorization.credentials_file`), and `{dir}` in the
    /// scrape configs stands for that directory.
    pub async fn start_scraping(scrape_configs: &str, files: &[(&str, &str)]) -> PrometheusServer {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temporary directory for prometheus");
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write a file for prometheus");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
        }
        let config = dir.path().join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}",
            scrape_configs.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&config, text).expect("write config");
        let data = dir.path().join("data");
        PrometheusServer::spawn(dir, &config, &data).await
    }

    async fn spawn(dir: tempfile::TempDir, config: &Path, data: &Path) -> PrometheusServer {
        let prometheus = binary("prometheus");
        let url = format!("http://127.0.0.1:{}", free_port());
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("prometheus log file");
        let child = Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!(
                "--web.listen-address={}",
                url.trim_start_matches("http://")
            ))
            // Imported blocks may be older than the default 15 days of a long test run.
            .arg("--storage.tsdb.retention.time=3650d")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run tests/setup.sh",
                    prometheus.display()
                )
            });
        let mut server = PrometheusServer {
            child,
            url,
            log_path,
            _dir: dir,
        };
        server.wait_until_ready().await;
        server
    }

    async fn wait_until_ready(&mut self) {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "prometheus not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
