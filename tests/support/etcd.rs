//! A real etcd server for a test: free loopback ports, a temporary data directory, killed and
//! removed on drop. Missing etcd is a test failure that says how to install it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

/// How long a fresh etcd may take to answer (it usually needs well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct EtcdServer {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    // Dropped after the process is killed (fields drop after Drop::drop runs).
    _dir: tempfile::TempDir,
}

fn etcd_binary() -> PathBuf {
    let installed = PathBuf::from("/usr/bin/etcd");
    if installed.exists() {
        return installed;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("etcd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "etcd is not installed (looked for /usr/bin/etcd and etcd on PATH); \
         run tests/setup.sh to install Debian's etcd-server"
    );
}

/// `n` distinct ports nobody listens on right now (every listener is held until all are
/// chosen, or the kernel may hand out one port twice). Another process could take one
/// before etcd binds it: `EtcdServer::start` then tries again on fresh ports.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Starts on fresh ports this many times when a port was taken between its choice and
/// etcd's bind.
const START_ATTEMPTS: usize = 5;

impl EtcdServer {
    /// Starts a single-member etcd and waits until it answers.
    pub async fn start() -> EtcdServer {
        let mut attempt = 1;
        loop {
            match Self::start_once().await {
                Ok(server) => return server,
                Err(log) if log.contains("address already in use") && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                Err(log) => panic!("etcd did not start; log:\n{log}"),
            }
        }
    }

    /// One start on fresh ports; `Err` is etcd's log when it exited or did not answer.
    async fn start_once() -> Result<EtcdServer, String> {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let ports = free_ports(2);
        let (client_port, peer_port) = (ports[0], ports[1]);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("etcd log file");
        let child = Command::new(&binary)
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run tests/setup.sh",
                    binary.display()
                )
            });
        let mut server = EtcdServer {
            child,
            endpoint: client_url,
            log_path,
            _dir: dir,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// `Err`: etcd exited, or did not answer in time (then it is stopped); with its log.
    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited early with {status}:\n{}", self.log()));
            }
            if let Ok(mut client) = self.try_client().await
                && client.status().await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_client(&self) -> Result<Client, etcd_client::Error> {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        Client::connect([self.endpoint.as_str()], Some(options)).await
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A fresh client (its own connection) to this server.
    pub async fn client(&self) -> Client {
        self.try_client().await.expect("connect to test etcd")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A multi-member etcd cluster on loopback (for quorum and witness tests). Members can be
/// killed one by one; all are killed on drop.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members with fast raft timings and waits until every one answers.
    pub async fn start(size: usize) -> EtcdCluster {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let names: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
        let ports = free_ports(2 * size);
        let url = |port: &u16| format!("http://127.0.0.1:{port}");
        let client_urls: Vec<String> = ports[..size].iter().map(url).collect();
        let peer_urls: Vec<String> = ports[size..].iter().map(url).collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_urls)
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for i in 0..size {
            let log = std::fs::File::create(dir.path().join(format!("{}.log", names[i])))
                .expect("etcd log file");
            let child = Command::new(&binary)
                .arg(format!("--name={}", names[i]))
                .arg(format!(
                    "--data-dir={}",
                    dir.path().join(&names[i]).display()
                ))
                .arg(format!("--listen-client-urls={}", client_urls[i]))
                .arg(format!("--advertise-client-urls={}", client_urls[i]))
                .arg(format!("--listen-peer-urls={}", peer_urls[i]))
                .arg(format!("--initial-advertise-peer-urls={}", peer_urls[i]))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .arg("--initial-cluster-state=new")
                .arg("--heartbeat-interval=50")
                .arg("--election-timeout=500")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); run tests/setup.sh",
                        binary.display()
                    )
                });
            members.push(Some(child));
        }
        let cluster = EtcdCluster {
            members,
            endpoints: client_urls,
            _dir: dir,
        };
        let started = Instant::now();
        for endpoint in &cluster.endpoints {
            loop {
                let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
                if let Ok(mut client) = Client::connect([endpoint.as_str()], Some(options)).await
                    && client.status().await.is_ok_and(|s| s.leader() != 0)
                {
                    break;
                }
                assert!(
                    started.elapsed() < READY_TIMEOUT,
                    "etcd member {endpoint} not ready after {READY_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Kills member `index` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
