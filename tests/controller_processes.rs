//! Whole `twinsite run` processes against a real etcd (Debian's etcd-server, started here):
//! three replicas elect one leader; kill -9 it and another takes over within the lease TTL
//! plus 2 s without launching anything again; a leader frozen with SIGSTOP past its lease is
//! deposed and, once resumed, steps down instead of acting.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::etcd::EtcdServer;

const LEASE_TTL: Duration = Duration::from_secs(3);
const TOKEN: &str = "process-test-token-0123456789";
const JOBS: usize = 10;

struct Replica {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The admin token file, readable by its owner only (the controller refuses anything else).
fn write_token(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn write_config(dir: &Path, etcd: &str) -> PathBuf {
    write_token(dir);
    let config = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: ControllerConfig
dataDir: data
state:
  etcd:
    endpoints: ["{etcd}"]
    leaseTtl: {ttl}s
api:
  tokenFile: token
simulation:
  generate: {{nodesPerSite: 20, sampleJobs: {JOBS}, seed: 3}}
reconcile:
  interval: 1s
"#,
        ttl = LEASE_TTL.as_secs()
    );
    let path = dir.join("twinsite.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(dir: &Path, config: &Path, name: &str) -> Replica {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_twinsite"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("TWINSITE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Replica {
        name: name.into(),
        child,
        port,
        log,
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    // Reads need a token too; the admin token reads.
    let response = client.get(url).bearer_auth(TOKEN).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn is_ready_leader(client: &reqwest::Client, replica: &Replica) -> bool {
    matches!(get(client, &replica.url("/readyz")).await, Some((200, body)) if body.contains("leader"))
}

async fn metric(client: &reqwest::Client, replica: &Replica, name: &str) -> Option<f64> {
    let (_, text) = get(client, &replica.url("/metrics")).await?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until exactly one of `replicas` is the ready leader; returns its index.
async fn wait_for_leader(
    client: &reqwest::Client,
    replicas: &[&Replica],
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = vec![];
        for (i, r) in replicas.iter().enumerate() {
            if is_ready_leader(client, r).await {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two ready leaders at once: {leaders:?}");
        if let [one] = leaders.as_slice() {
            return *one;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {within:?}; logs:\n{}",
            replicas
                .iter()
                .map(|r| format!("--- {}\n{}", r.name, r.log()))
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (namespace/name, generation, phase) of every job, as the given replica serves them.
async fn jobs(client: &reqwest::Client, replica: &Replica) -> Vec<(String, u64, String)> {
    let (_, body) = get(client, &replica.url("/api/v1/jobs")).await.unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    list.iter()
        .map(|j| {
            (
                format!(
                    "{}/{}",
                    j["namespace"].as_str().unwrap(),
                    j["name"].as_str().unwrap()
                ),
                j["generation"].as_u64().unwrap(),
                j["status"]["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn wait_all_running(
    client: &reqwest::Client,
    replica: &Replica,
) -> Vec<(String, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = jobs(client, replica).await;
        if jobs.len() == JOBS && jobs.iter().all(|(_, _, phase)| phase == "running") {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never all ran: {jobs:?}\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_over_within_the_lease_ttl_without_a_second_launch() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), etcd.endpoint());
    let client = reqwest::Client::new();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| start(dir.path(), &config, &format!("c{i}")))
        .collect();

    let leader = wait_for_leader(
        &client,
        &replicas.iter().collect::<Vec<_>>(),
        Duration::from_secs(60),
    )
    .await;
    let before = wait_all_running(&client, &replicas[leader]).await;
    assert!(
        before.iter().all(|(_, generation, _)| *generation == 1),
        "{before:?}"
    );
    assert_eq!(
        metric(&client, &replicas[leader], "twinsite_launches_total").await,
        Some(JOBS as f64)
    );

    let killed_at = Instant::now();
    replicas[leader].child.kill().unwrap(); // SIGKILL: no resign, the lease must expire
    let _ = replicas[leader].child.wait();
    let dead = replicas.remove(leader);

    let survivors: Vec<&Replica> = replicas.iter().collect();
    let new_leader =
        wait_for_leader(&client, &survivors, LEASE_TTL + Duration::from_secs(10)).await;
    let takeover = killed_at.elapsed();
    println!("FIGURE takeover after kill -9: {takeover:?} (lease TTL {LEASE_TTL:?})");
    assert!(
        takeover <= LEASE_TTL + Duration::from_secs(2),
        "takeover took {takeover:?}; logs:\n{}",
        survivors[new_leader].log()
    );

    // A few passes later: same generations, everything running, nothing launched again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = wait_all_running(&client, survivors[new_leader]).await;
    assert_eq!(after, before);
    assert_eq!(
        metric(&client, survivors[new_leader], "twinsite_launches_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "the new leader launched something:\n{}",
        survivors[new_leader].log()
    );
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_deposed_and_steps_down_when_it_resumes() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), etcd.endpoint());
    let client = reqwest::Client::new();
    let replicas: Vec<Replica> = (0..2)
        .map(|i| start(dir.path(), &config, &format!("p{i}")))
        .collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    let first = wait_for_leader(&client, &all, Duration::from_secs(60)).await;
    let before = wait_all_running(&client, &replicas[first]).await;
    let other = 1 - first;

    replicas[first].signal("-STOP");
    // The frozen process cannot answer, so only the other can become the ready leader.
    let deadline = Instant::now() + LEASE_TTL + Duration::from_secs(10);
    while !is_ready_leader(&client, &replicas[other]).await {
        assert!(
            Instant::now() < deadline,
            "no takeover:\n{}",
            replicas[other].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replicas[first].signal("-CONT");

    // Resumed, the old leader finds its lease gone or its writes fenced, and steps down.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leading = metric(&client, &replicas[first], "twinsite_leader").await;
        if leading == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader still leads:\n{}",
            replicas[first].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = replicas[first].log();
    assert!(log.contains("stepped down"), "{log}");
    assert!(is_ready_leader(&client, &replicas[other]).await);
    let after = wait_all_running(&client, &replicas[other]).await;
    assert_eq!(after, before, "a generation changed across the hand-over");
}

const CHAOS_JOBS: usize = 8;

/// Three replicas on etcd with short graces, a 2 s replication interval and eight jobs in
/// dc-a (half of them critical), checkpointing every 2 s.
fn write_chaos_config(dir: &Path, etcd: &str) -> PathBuf {
    write_token(dir);
    std::fs::write(
        dir.join("policy.yaml"),
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites:\n  - name: dc-a\n  - name: dc-b\nreplication:\n  interval: 2s\n",
    )
    .unwrap();
    let jobs: Vec<String> = (0..CHAOS_JOBS)
        .map(|i| {
            format!(
                r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: job-{i}, namespace: shop}}
spec:
  priority: {priority}
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/job-{i}.jar
  parallelism: 2
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "1", memory: 2Gi}}, slots: 1}}
  placement: {{sites: {{preferred: dc-a}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/job-{i}", interval: 2s}}
"#,
                priority = if i % 2 == 0 { "critical" } else { "high" }
            )
        })
        .collect();
    std::fs::write(dir.join("jobs.yaml"), jobs.join("---\n")).unwrap();
    // Their jars, uploaded to dc-a's storage: the controller publishes them to both sites.
    for i in 0..CHAOS_JOBS {
        let jar = dir.join(format!("data/dc-a/jars/job-{i}.jar"));
        std::fs::create_dir_all(jar.parent().unwrap()).unwrap();
        std::fs::write(jar, format!("PK job-{i}")).unwrap();
    }
    let config = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: ControllerConfig
dataDir: data
policy: policy.yaml
jobs: jobs.yaml
state:
  etcd:
    endpoints: ["{etcd}"]
    leaseTtl: {ttl}s
api:
  tokenFile: token
simulation:
  generate: {{nodesPerSite: 20, sampleJobs: 0, seed: 3}}
reconcile:
  interval: 1s
failover:
  nodeGrace: 2s
  siteGrace: 3s
  maxInFlight: 2
"#,
        ttl = LEASE_TTL.as_secs()
    );
    let path = dir.join("twinsite.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> Option<(u16, String)> {
    let response = client
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// (job, site, generation, phase) as the replica serves them.
async fn placed(client: &reqwest::Client, replica: &Replica) -> Vec<(String, String, u64, String)> {
    let Some((200, body)) = get(client, &replica.url("/api/v1/jobs")).await else {
        return vec![];
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    list.iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or("?").to_string(),
                j["site"].as_str().unwrap_or("-").to_string(),
                j["generation"].as_u64().unwrap_or(0),
                j["status"]["phase"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_loss_survives_killing_the_leader_mid_failover_and_every_job_ends_running_once_in_the_survivor()
 {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_chaos_config(dir.path(), etcd.endpoint());
    let client = reqwest::Client::new();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| start(dir.path(), &config, &format!("x{i}")))
        .collect();
    let leader = wait_for_leader(
        &client,
        &replicas.iter().collect::<Vec<_>>(),
        Duration::from_secs(60),
    )
    .await;

    // Every job runs in dc-a and has a checkpoint replicated to dc-b.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = post(
            &client,
            &replicas[leader].url("/api/v1/failover"),
            r#"{"from":"dc-a","mode":"forced","dryRun":true}"#,
        )
        .await
        .unwrap_or((0, String::new()));
        let plan: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let moves = plan["plan"]["moves"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if status == 200
            && moves.len() == CHAOS_JOBS
            && moves.iter().all(|m| !m["restore_from"].is_null())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints never all replicated to dc-b: {body}\n{}",
            replicas[leader].log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (status, body) = post(
        &client,
        &replicas[leader].url("/api/v1/sim/dc-a/faults"),
        r#"{"kind":"site-down"}"#,
    )
    .await
    .unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    let site_down_at = Instant::now();

    // Kill the leader as soon as its failover of dc-a has started.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = get(&client, &replicas[leader].url("/api/v1/failover")).await
            && body.contains("site-loss")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dc-a was never judged lost:\n{}",
            replicas[leader].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detected = site_down_at.elapsed();
    let mid_failover = placed(&client, &replicas[leader]).await;
    replicas[leader].child.kill().unwrap();
    let _ = replicas[leader].child.wait();
    let dead = replicas.remove(leader);

    let survivors: Vec<&Replica> = replicas.iter().collect();
    let new_leader =
        wait_for_leader(&client, &survivors, LEASE_TTL + Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let jobs = placed(&client, survivors[new_leader]).await;
        if jobs.len() == CHAOS_JOBS
            && jobs
                .iter()
                .all(|(_, site, _, phase)| site == "dc-b" && phase == "running")
        {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never all ran in dc-b: {jobs:?}\nmid-failover: {mid_failover:?}\n{}",
            survivors[new_leader].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "FIGURE site loss with leader kill: dc-a down -> judged lost {detected:?}; -> all {CHAOS_JOBS} running in dc-b {:?}",
        site_down_at.elapsed()
    );

    // Exactly one generation of each job in dc-b's cluster: the one the store names.
    let cluster: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/simulated-clusters/dc-b.json")).unwrap(),
    )
    .unwrap();
    let deployed: Vec<(String, u64)> = cluster["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["spec"]["job"].as_str().unwrap().to_string(),
                j["spec"]["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    for (name, _, generation, _) in &end {
        let copies: Vec<_> = deployed
            .iter()
            .filter(|(job, _)| job == &format!("shop/{name}"))
            .collect();
        assert_eq!(
            copies,
            [&(format!("shop/{name}"), *generation)],
            "{deployed:?}"
        );
    }
    drop(dead);
}
