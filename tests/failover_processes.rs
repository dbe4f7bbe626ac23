//! Issue #14, part 1, as a new user sees it: a real `twinsite run` process on its embedded
//! simulated sites (no etcd), dc-a goes down and comes back through the fault API. Jobs that
//! could go nowhere while dc-a was lost (nothing replicated to dc-b yet, or not allowed
//! there) must say so while it is down, and run again once dc-a is back: every job running
//! exactly once, its status true, nothing left `unknown` or `pending`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "failover-process-test-token-0123";
const JOBS: usize = 12;

struct Controller {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn start(dir: &Path) -> Controller {
        // Readable by its owner only: the controller refuses anything else.
        let token = dir.join("token");
        std::fs::write(&token, TOKEN).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Short graces so the test takes seconds; the sample jobs' checkpoint intervals are
        // far longer than the time before the loss, so most have nothing replicated yet.
        let config = format!(
            r#"apiVersion: twinsite.io/v1alpha1
kind: ControllerConfig
dataDir: data
api:
  tokenFile: token
simulation:
  generate: {{nodesPerSite: 12, sampleJobs: {JOBS}, seed: 1}}
reconcile:
  interval: 1s
failover:
  nodeGrace: 5s
  siteGrace: 3s
"#
        );
        let path = dir.join("twinsite.yaml");
        std::fs::write(&path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("twinsite.log");
        let child = Command::new(env!("CARGO_BIN_EXE_twinsite"))
            .args(["run", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TWINSITE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Controller { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> Option<serde_json::Value> {
        let response = client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn fault(&self, client: &reqwest::Client, site: &str, inject: bool) {
        let url = self.url(&format!("/api/v1/sim/{site}/faults"));
        let request = if inject {
            client.post(url)
        } else {
            client.delete(url)
        };
        let response = request
            .bearer_auth(TOKEN)
            .body(r#"{"kind":"site-down"}"#)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "fault {site} inject={inject}: {}",
            response.status()
        );
    }

    /// (namespace/name, site, phase, message) of every job the API serves.
    async fn jobs(&self, client: &reqwest::Client) -> Vec<Job> {
        let Some(serde_json::Value::Array(list)) = self.get(client, "/api/v1/jobs").await else {
            return Vec::new();
        };
        list.iter()
            .map(|j| Job {
                id: format!(
                    "{}/{}",
                    j["namespace"].as_str().unwrap_or_default(),
                    j["name"].as_str().unwrap_or_default()
                ),
                phase: j["status"]["phase"].as_str().unwrap_or_default().into(),
                message: j["status"]["message"].as_str().unwrap_or_default().into(),
            })
            .collect()
    }

    /// Generations the simulated sites report, summed over the sites: one per job when
    /// every job runs exactly once.
    async fn generations_in_sites(&self, client: &reqwest::Client) -> u64 {
        let Some(serde_json::Value::Array(sites)) = self.get(client, "/api/v1/sites").await else {
            return 0;
        };
        sites.iter().filter_map(|s| s["jobs"].as_u64()).sum()
    }

    async fn site_state(&self, client: &reqwest::Client, site: &str) -> Option<String> {
        let Some(serde_json::Value::Array(sites)) = self.get(client, "/api/v1/sites").await else {
            return None;
        };
        sites
            .iter()
            .find(|s| s["site"] == site)
            .and_then(|s| s["state"]["state"].as_str().map(str::to_string))
    }

    async fn wait<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    phase: String,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_could_go_nowhere_during_a_site_loss_run_again_once_the_site_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path());
    let client = reqwest::Client::new();

    controller
        .wait("every job running", Duration::from_secs(90), async || {
            let jobs = controller.jobs(&client).await;
            (jobs.len() == JOBS && jobs.iter().all(|j| j.phase == "running")).then_some(())
        })
        .await;

    controller.fault(&client, "dc-a", true).await;
    controller
        .wait("dc-a judged lost", Duration::from_secs(60), async || {
            (controller.site_state(&client, "dc-a").await.as_deref() == Some("lost")).then_some(())
        })
        .await;
    // Jobs with nothing to restore from in dc-b stay down, and say so: not `unknown` about
    // a site that might still run them.
    let down = controller
        .wait(
            "the jobs that could not move reported down",
            Duration::from_secs(30),
            async || {
                let jobs = controller.jobs(&client).await;
                let down: Vec<Job> = jobs
                    .iter()
                    .filter(|j| j.phase == "pending" && j.message.starts_with("runs nowhere"))
                    .cloned()
                    .collect();
                // Jobs that opted out of failover (`failover.mode: none`) stay `unknown`.
                let settled = jobs.iter().all(|j| j.phase != "launching");
                (settled && !down.is_empty()).then_some(down)
            },
        )
        .await;
    println!("down while dc-a was lost: {down:?}");
    assert!(
        down.iter().all(|j| !j.message.contains("unreachable")),
        "{down:?}"
    );

    controller.fault(&client, "dc-a", false).await;
    let returned_at = Instant::now();
    let jobs = controller
        .wait(
            "every job running again, once",
            Duration::from_secs(90),
            async || {
                let jobs = controller.jobs(&client).await;
                let all_running = jobs.len() == JOBS
                    && jobs
                        .iter()
                        .all(|j| j.phase == "running" && j.message.is_empty());
                let once = controller.generations_in_sites(&client).await == JOBS as u64;
                (all_running && once).then_some(jobs)
            },
        )
        .await;
    println!(
        "FIGURE every job running once {:?} after dc-a came back ({} had been down)",
        returned_at.elapsed(),
        down.len()
    );
    for d in &down {
        assert!(jobs.iter().any(|j| j.id == d.id && j.phase == "running"));
    }
    assert_eq!(
        controller.site_state(&client, "dc-a").await.as_deref(),
        Some("active")
    );
    let metrics = client
        .get(controller.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for phase in ["unknown", "pending"] {
        let line = format!("twinsite_jobs{{phase=\"{phase}\"}} ");
        let value = metrics
            .lines()
            .find(|l| l.starts_with(&line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert_eq!(value, 0.0, "{phase} jobs left:\n{metrics}");
    }
}
