//! Diagnosis end to end: `GET /api/v1/diagnosis` over a live controller (Flink findings from
//! its metrics source, twinsite's own from its state), and `twinsite diagnose` offline over a
//! generated fleet and live against `twinsite run`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use scheduler::diagnosis::FindingKind;
use scheduler::input::{StreamJob, parse_policy, parse_stream_jobs};
use scheduler::model::{JobId, Resources, SiteId, SiteSnapshot};
use scheduler::report::assemble::JobFacts;
use support::controller::ControllerProcess;
use support::fixtures::node;
use tower::ServiceExt;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::{Controller, new_record};
use twinsite::diagnosis::Diagnosis;
use twinsite::job_metrics::JobKey;
use twinsite::job_metrics::file::FileSource;
use twinsite::job_metrics::synthetic::{
    Shape, Trouble, history, shape_of, trouble_of, write_json_lines,
};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

const ADMIN: &str = "diagnosis-admin-token-0123456789";
const READ: &str = "diagnosis-read-token-9876543210";
const SEED: u64 = 11;

fn job_yaml(namespace: &str, name: &str, extra_placement: &str, tm_cpu: &str) -> String {
    format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/{name}.jar
  parallelism: 4
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "{tm_cpu}", memory: 4Gi}}, slots: 2}}
  placement: {{sites: {{preferred: dc-a{extra_placement}}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/{namespace}/{name}", interval: 60s}}
"#
    )
}

fn parse(yaml: &str) -> StreamJob {
    parse_stream_jobs("job.yaml", yaml).unwrap().remove(0)
}

/// The first generated name whose synthetic history is healthy in shape and has `trouble`.
fn name_with(trouble: Trouble) -> String {
    (0..)
        .map(|i| format!("job-{i}"))
        .find(|name| {
            let key = JobKey::of(&JobId::new("shop", name));
            shape_of(&key, SEED) == Shape::Healthy && trouble_of(&key, SEED) == trouble
        })
        .unwrap()
}

struct World {
    app: axum::Router,
    store: Arc<EmbeddedStateStore>,
    controller: Arc<Controller>,
    _dir: tempfile::TempDir,
}

/// dc-a has big nodes, dc-b small ones: a job needing 12 cores per TaskManager runs in dc-a
/// and fits nowhere in dc-b. The metrics file holds a day of synthetic history of `jobs`.
async fn world(jobs: &[StreamJob]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc::now());
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut roots = BTreeMap::new();
    for (site, cores) in [("dc-a", 32_000), ("dc-b", 8_000)] {
        let root = dir.path().join(site);
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(site.into()),
                nodes: (1..=4)
                    .map(|i| {
                        let mut n = node(&format!("{site}-n{i}"));
                        n.allocatable = Resources::new(cores, 128 << 30, 110);
                        n
                    })
                    .collect(),
                running_pods: vec![],
            },
            &root,
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        roots.insert(SiteId(site.into()), format!("file://{}", root.display()));
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    // No failover reserves: dc-a's room is what it has.
    let policy = parse_policy(
        "policy.yaml",
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}, {name: dc-b}]\n",
    )
    .unwrap();
    let controller = Arc::new(
        Controller::new(sites, store.clone() as Arc<dyn StateStore>, policy)
            .with_storage_roots(roots.clone()),
    );
    controller.set_leading(true);
    let metrics_path = dir.path().join("metrics.jsonl");
    let mut file = std::fs::File::create(&metrics_path).unwrap();
    for job in jobs {
        store
            .put_job(&new_record(job), Expected::Absent)
            .await
            .unwrap();
        let facts = JobFacts::of(job, &job.demand().unwrap());
        write_json_lines(
            &mut file,
            &history(&facts, SEED, Utc::now().timestamp_millis(), 1, 60_000),
        )
        .unwrap();
    }
    drop(file);
    upload_jars(&roots, jobs);
    // One pass publishes the jars to both sites; the next launches the jobs.
    controller.reconcile_once().await.unwrap();
    assert!(
        controller
            .jar_publications_settled(std::time::Duration::from_secs(30))
            .await
    );
    controller.reconcile_once().await.unwrap();
    controller.monitor_exposure().await.unwrap();
    let state = Arc::new(ApiState {
        controller: Arc::clone(&controller),
        access: Access {
            admin_token: ADMIN.into(),
            read_token: Some(READ.into()),
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated: BTreeMap::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: Some(Arc::new(FileSource::open(&metrics_path).unwrap())),
    });
    World {
        app: router(state, 1 << 20),
        store,
        controller,
        _dir: dir,
    }
}

impl World {
    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let response = self
            .app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("authorization", format!("Bearer {READ}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 26)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn diagnosis(&self, query: &str) -> Diagnosis {
        let (status, body) = self.get(&format!("/api/v1/diagnosis{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

fn kinds(d: &Diagnosis, job: &str) -> BTreeSet<FindingKind> {
    d.jobs
        .iter()
        .find(|j| j.job.0 == job)
        .unwrap_or_else(|| panic!("{job} not in the diagnosis"))
        .findings
        .iter()
        .map(|f| f.kind)
        .collect()
}

/// Each job's trouble in its Flink metrics is found, worst first, with evidence; twinsite's
/// own findings (not allowed at the peer, no room there, no checkpoint there) come from the
/// controller's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_names_each_jobs_trouble_with_evidence_and_an_action() {
    let backpressured = name_with(Trouble::Backpressure);
    let restarting = name_with(Trouble::Restarts);
    let lagging = name_with(Trouble::LagGrowing);
    let pinned = name_with(Trouble::None);
    let jobs = vec![
        parse(&job_yaml("shop", &backpressured, "", "2")),
        parse(&job_yaml("shop", &restarting, "", "2")),
        parse(&job_yaml("shop", &lagging, "", "2")),
        parse(&job_yaml("shop", &pinned, ", allowed: [dc-a]", "2")),
        parse(&job_yaml("shop", "huge", "", "12")),
    ];
    let w = world(&jobs).await;
    let d = w.diagnosis("").await;
    assert_eq!(d.summary.jobs, 5);
    assert!(
        d.metrics_source
            .as_deref()
            .is_some_and(|s| s.ends_with("metrics.jsonl"))
    );

    assert!(kinds(&d, &format!("shop/{backpressured}")).contains(&FindingKind::Backpressure));
    assert!(kinds(&d, &format!("shop/{restarting}")).contains(&FindingKind::Restarts));
    assert!(kinds(&d, &format!("shop/{lagging}")).contains(&FindingKind::ConsumerLagGrowing));
    assert!(kinds(&d, &format!("shop/{pinned}")).contains(&FindingKind::NotAllowedAtPeer));
    let huge = kinds(&d, "shop/huge");
    assert!(huge.contains(&FindingKind::DoesNotFitAtPeer), "{huge:?}");
    for job in &d.jobs {
        assert!(
            job.findings
                .contains_kind(FindingKind::NoReplicatedCheckpoint),
            "{}: nothing is replicated yet",
            job.job
        );
        for f in &job.findings {
            assert!(!f.evidence.is_empty() && !f.action.is_empty(), "{f:?}");
        }
        assert!(
            job.findings
                .windows(2)
                .all(|w| w[0].severity >= w[1].severity),
            "worst first: {:?}",
            job.findings
        );
    }
    let restarts = d
        .jobs
        .iter()
        .flat_map(|j| &j.findings)
        .find(|f| f.kind == FindingKind::Restarts)
        .unwrap();
    assert_eq!(
        restarts.evidence[0].source,
        "flink_jobmanager_job_numRestarts"
    );

    // One job, twinsite's findings only, and as a table.
    let one = w
        .diagnosis(&format!("?job=shop/{backpressured}&metrics=false"))
        .await;
    assert_eq!(one.jobs.len(), 1);
    assert_eq!(one.metrics_source, None);
    assert!(!kinds(&one, &format!("shop/{backpressured}")).contains(&FindingKind::Backpressure));
    let (status, table) = w.get("/api/v1/diagnosis?format=table").await;
    assert_eq!(status, StatusCode::OK);
    assert!(table.contains("5 jobs, 5 with findings"), "{table}");
    assert!(table.contains("does-not-fit-at-peer"), "{table}");

    // Bad requests name what is wrong.
    let (status, body) = w.get("/api/v1/diagnosis?job=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("job") && body.contains("namespace/name"),
        "{body}"
    );
    let (status, body) = w.get("/api/v1/diagnosis?job=shop/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = w.get("/api/v1/diagnosis?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("format"), "{body}");
    drop(w.store);
}

trait ContainsKind {
    fn contains_kind(&self, kind: FindingKind) -> bool;
}

impl ContainsKind for Vec<scheduler::diagnosis::Finding> {
    fn contains_kind(&self, kind: FindingKind) -> bool {
        self.iter().any(|f| f.kind == kind)
    }
}

/// A job whose peer copy is older than `replication.maxLag` is diagnosed as replication
/// behind, with the exposure the leader judged as evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_behind_is_diagnosed_from_the_leaders_exposure() {
    let job = parse(&job_yaml("shop", "orders", "", "2"));
    let w = world(std::slice::from_ref(&job)).await;
    // A replicated pointer from ten minutes ago (default maxLag 5m).
    w.store
        .put_checkpoint(
            "shop",
            "orders",
            twinsite::state::CheckpointKind::Replicated,
            "dc-b",
            &twinsite::state::CheckpointPointer {
                checkpoint_id: 3,
                uri: "file:///x/chk-3".into(),
                recorded_at_unix_ms: Utc::now().timestamp_millis() - 600_000,
            },
        )
        .await
        .unwrap();
    w.controller.monitor_exposure().await.unwrap();
    let d = w.diagnosis("?metrics=false").await;
    let finding = d.jobs[0]
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::ReplicationBehind)
        .unwrap_or_else(|| panic!("{:?}", d.jobs[0]));
    assert!(
        finding.summary.contains("would lose 10m"),
        "{}",
        finding.summary
    );
    assert!(
        finding.evidence[0].observed.contains("chk-3"),
        "{:?}",
        finding.evidence
    );
    // Its jar was published to dc-b before it launched: no jar finding, no jar note.
    assert!(
        !d.jobs[0].notes.iter().any(|n| n.contains("jar at dc-b")),
        "{:?}",
        d.jobs[0].notes
    );
    assert!(
        !d.jobs[0]
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::JarMissingAtPeer),
        "{:?}",
        d.jobs[0].findings
    );
}

fn twinsite(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_twinsite"))
        .args(args)
        .env("TWINSITE_LOG", "warn")
        .output()
        .unwrap()
}

/// Offline over a generated fleet with metrics: every job is judged, the troubles the
/// generator planted are found, and bad arguments name the flag.
#[test]
fn the_cli_diagnoses_a_generated_fleet_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let ok = twinsite(&[
        "generate",
        "--nodes-per-site",
        "20",
        "--jobs",
        "60",
        "--seed",
        "5",
        "--out",
        out,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let jobs = parse_stream_jobs(
        "jobs.yaml",
        &std::fs::read_to_string(dir.path().join("jobs.yaml")).unwrap(),
    )
    .unwrap();
    let end_ms = 1_795_032_000_000;
    let mut file = std::fs::File::create(dir.path().join("metrics.jsonl")).unwrap();
    let mut planted = BTreeMap::new();
    for job in &jobs {
        let facts = JobFacts::of(job, &job.demand().unwrap());
        write_json_lines(&mut file, &history(&facts, SEED, end_ms, 1, 300_000)).unwrap();
        let key = JobKey::of(&job.id());
        if shape_of(&key, SEED) == Shape::Healthy {
            planted.insert(job.id().0, trouble_of(&key, SEED));
        }
    }
    drop(file);
    let p = |n: &str| dir.path().join(n).display().to_string();
    let output = twinsite(&[
        "diagnose",
        "--jobs",
        &p("jobs.yaml"),
        "--metrics",
        &p("metrics.jsonl"),
        "--at",
        "2026-11-18T20:00:00Z",
        "--step",
        "5m",
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let d: Diagnosis = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(d.summary.jobs, jobs.len());
    assert!(
        d.notes.iter().any(|n| n.contains("offline")),
        "{:?}",
        d.notes
    );
    let expected = [
        (Trouble::Backpressure, FindingKind::Backpressure),
        (Trouble::Restarts, FindingKind::Restarts),
        (Trouble::CheckpointFailures, FindingKind::CheckpointFailures),
        (Trouble::GcPressure, FindingKind::GcTime),
        (Trouble::LagGrowing, FindingKind::ConsumerLagGrowing),
    ];
    let mut checked = 0;
    for (job, trouble) in &planted {
        for (planted_trouble, kind) in expected {
            if *trouble == planted_trouble {
                assert!(
                    kinds(&d, job).contains(&kind),
                    "{job}: {trouble:?} not found as {kind:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 0,
        "the generator planted none of the checked troubles"
    );
    // A job planted no trouble is never flagged for one of these.
    for (job, trouble) in &planted {
        if *trouble == Trouble::None {
            let found = kinds(&d, job);
            for (_, kind) in expected {
                assert!(!found.contains(&kind), "{job}: {kind:?} without trouble");
            }
        }
    }

    let first = jobs[0].id().0;
    let one = twinsite(&[
        "diagnose",
        &first,
        "--jobs",
        &p("jobs.yaml"),
        "--metrics",
        &p("metrics.jsonl"),
        "--at",
        "2026-11-18T20:00:00Z",
    ]);
    assert!(one.status.success());
    let table = String::from_utf8_lossy(&one.stdout);
    assert!(table.starts_with("1 jobs"), "{table}");

    let bad = twinsite(&[
        "diagnose",
        "not-a-job",
        "--jobs",
        &p("jobs.yaml"),
        "--metrics",
        &p("metrics.jsonl"),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NS/NAME \"not-a-job\""));
    let missing = twinsite(&[
        "diagnose",
        "--jobs",
        &p("jobs.yaml"),
        "--metrics",
        &p("nope.jsonl"),
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--metrics"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Live against `twinsite run`: the controller's own diagnosis, and the same jobs judged
/// from a metrics file given on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_a_running_controller() {
    let controller = ControllerProcess::start("", &[]).await;
    controller
        .wait_for(
            "/api/v1/jobs",
            Duration::from_secs(60),
            "sample jobs placed",
            |body| {
                serde_json::from_str::<Vec<serde_json::Value>>(body).is_ok_and(|jobs| {
                    jobs.len() == 20 && jobs.iter().all(|j| j["site"].is_string())
                })
            },
        )
        .await;
    let server = controller.url("");
    let token = controller.data_dir().join("api-read-token");
    let token = token.to_str().unwrap();
    let output = twinsite(&[
        "diagnose",
        "--server",
        &server,
        "--token-file",
        token,
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let d: Diagnosis = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(d.summary.jobs, 20);
    assert!(
        d.metrics_source
            .as_deref()
            .is_some_and(|s| s.contains("simulated")),
        "{d:?}"
    );
    let first = d.jobs.last().unwrap().job.0.clone();

    // The same controller, one job, its Flink metrics from a file written here.
    let views: Vec<serde_json::Value> =
        serde_json::from_str(&controller.read("/api/v1/jobs").await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    let mut file = std::fs::File::create(&metrics).unwrap();
    for view in &views {
        let job: StreamJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "twinsite.io/v1alpha1", "kind": "StreamJob",
            "metadata": view["metadata"], "spec": view["spec"],
        }))
        .unwrap();
        let facts = JobFacts::of(&job, &job.demand().unwrap());
        write_json_lines(
            &mut file,
            &history(&facts, SEED, Utc::now().timestamp_millis(), 1, 60_000),
        )
        .unwrap();
    }
    drop(file);
    let output = twinsite(&[
        "diagnose",
        &first,
        "--server",
        &server,
        "--token-file",
        token,
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("1 jobs"), "{table}");
    assert!(table.contains("metrics.jsonl"), "{table}");

    let refused = twinsite(&[
        "diagnose",
        "--server",
        &server,
        "--token-file",
        "/nonexistent",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token-file /nonexistent"));
}

/// Puts each job's jar where its `jarURI` points in every site's storage: jobs launch once
/// the controller has published their jar.
fn upload_jars(roots: &BTreeMap<SiteId, String>, jobs: &[StreamJob]) {
    for root in roots.values() {
        for job in jobs {
            support::fixtures::upload_jar(
                std::path::Path::new(root.trim_start_matches("file://")),
                job,
            );
        }
    }
}
