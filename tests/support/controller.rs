//! A whole `twinsite run` process for a test: the embedded default (two simulated sites,
//! generated nodes and sample jobs) on a free loopback port, in a temporary directory, with
//! the tokens it generates; killed on drop, its log kept for failure messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ControllerProcess {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    pub admin_token: String,
    pub read_token: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

impl ControllerProcess {
    /// Starts `twinsite run --config` with `config_extra` (YAML lines) appended to a
    /// configuration of a data directory and a 1 s reconcile interval, and waits until it
    /// is ready and leads. `files` are written beside the configuration first.
    pub async fn start(config_extra: &str, files: &[(&str, &str)]) -> ControllerProcess {
        let dir = tempfile::tempdir().expect("temporary directory");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)
                .expect("write a file for the controller");
        }
        let config = dir.path().join("twinsite.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: twinsite.io/v1alpha1\nkind: ControllerConfig\ndataDir: data\nreconcile: {{interval: 1s}}\n{config_extra}"
            ),
        )
        .expect("write the configuration");
        let port = free_port();
        let log = dir.path().join("twinsite.log");
        let child = Command::new(env!("CARGO_BIN_EXE_twinsite"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TWINSITE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start twinsite run");
        let mut process = ControllerProcess {
            child,
            port,
            log,
            admin_token: String::new(),
            read_token: String::new(),
            dir,
        };
        process.wait_until_ready().await;
        process
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("twinsite run exited with {status}; log:\n{}", self.log());
            }
            let ready = client
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = ready
                && response.status().is_success()
                && response.text().await.is_ok_and(|t| t.contains("leader"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "twinsite run not ready in 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let data = self.dir.path().join("data");
        self.admin_token = read_token(&data.join("api-token"));
        self.read_token = read_token(&data.join("api-read-token"));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET with the read-only token; the body, or a panic naming the status and the log.
    pub async fn read(&self, path: &str) -> String {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.read_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status}: {body}");
        body
    }

    /// A request with the admin token; the status and the body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Polls `check` on `path` (read token) until it holds, for at most `within`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let body = self.read(path).await;
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last {path}:\n{}\nlog:\n{}",
                &body[..body.len().min(4000)],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
