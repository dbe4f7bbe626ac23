//! Chaos: a controller and two site agents on a real etcd (Debian's, on loopback ports),
//! each agent reaching etcd through its own TCP proxy the test can cut.
//!
//! The sites are simulated sites on the wall clock, in this process: the agents hold them
//! directly (an agent runs *in* its site), while the controller reaches each through a
//! [`Cuttable`] wrapper, so the test can cut the controller off a site while that site's
//! agent still sees it, and cut an agent off etcd while its site runs on. The two sites' own
//! job lists (not the controller's view) are sampled every 20 ms for a job running in both.
//! The controller is the production `Controller` with its etcd leadership session as its
//! quorum and the agents' leases (read from etcd) as its peer view; the agents run the
//! production loop of `twinsite agent` (`twinsite::agent::run`).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use failover::agent::AgentTiming;
use scheduler::input::{Policy, StreamJob, parse_stream_jobs};
use scheduler::model::{JobId, SiteId, SiteSnapshot};
use support::etcd::EtcdServer;
use support::fixtures::node;
use support::proxy::Proxy;
use tokio_util::sync::CancellationToken;
use twinsite::agent::lease::{AgentLeases, HeldLease};
use twinsite::controller::guard::{Agents, Quorum};
use twinsite::controller::{Controller, new_record};
use twinsite::leader::{LeaderElector, Leadership};
use twinsite::replication::ReplicationDriver;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig, spawn_ticker};
use twinsite::site::{
    JobObservation, JobState, LaunchSpec, Site, SiteError, SiteHealth, SystemClock,
};
use twinsite::state::{
    CheckpointKind, EtcdConfig, EtcdStateStore, Expected, KeyLayout, StateStore, connect_etcd,
};

const SITES: [&str; 2] = ["dc-a", "dc-b"];
const SITE_GRACE: Duration = Duration::from_secs(8);
/// 2 s + 1 s + 3 s < 8 s: the timing the configuration would accept with this grace.
const TIMING: AgentTiming = AgentTiming {
    lease_ttl: Duration::from_secs(2),
    clock_skew_margin: Duration::from_secs(1),
    stop_within: Duration::from_secs(3),
};
const AGENT_INTERVAL: Duration = Duration::from_millis(300);

fn job(name: &str, site: &str) -> StreamJob {
    let yaml = format!(
        r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: shop}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/{name}.jar
  parallelism: 1
  jobManager: {{resources: {{cpu: "1", memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: "1", memory: 2Gi}}, slots: 1}}
  placement: {{sites: {{preferred: {site}}}}}
  checkpoints: {{dir: "hdfs:///flink/checkpoints/shop/{name}", interval: 1s, retained: 2}}
"#
    );
    parse_stream_jobs("test", &yaml).unwrap().remove(0)
}

/// The controller's road to a site, which the test can cut (the site itself runs on).
struct Cuttable {
    inner: SimulatedSite,
    cut: AtomicBool,
}

impl Cuttable {
    fn check(&self) -> Result<(), SiteError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(SiteError::Unreachable {
                site: self.inner.id(),
                reason: "the test cut the controller off this site".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Site for Cuttable {
    fn id(&self) -> SiteId {
        Site::id(&self.inner)
    }
    async fn snapshot(&self) -> Result<SiteSnapshot, SiteError> {
        self.check()?;
        Site::snapshot(&self.inner).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        Site::changes(&self.inner)
    }
    async fn launch(&self, spec: &LaunchSpec) -> Result<(), SiteError> {
        self.check()?;
        Site::launch(&self.inner, spec).await
    }
    async fn stop(&self, job: &JobId, generation: u64) -> Result<(), SiteError> {
        self.check()?;
        Site::stop(&self.inner, job, generation).await
    }
    async fn stop_with_savepoint(
        &self,
        job: &JobId,
        generation: u64,
        target_dir: &str,
    ) -> Result<String, SiteError> {
        self.check()?;
        Site::stop_with_savepoint(&self.inner, job, generation, target_dir).await
    }
    async fn jobs(&self) -> Result<Vec<JobObservation>, SiteError> {
        self.check()?;
        Site::jobs(&self.inner).await
    }
    async fn health(&self) -> SiteHealth {
        let mut health = Site::health(&self.inner).await;
        if self.cut.load(Ordering::SeqCst) {
            health.api_reachable = false;
        }
        health
    }
    async fn peer_last_contact(&self) -> Option<DateTime<Utc>> {
        // Guarded sites: the controller reads the agent's lease instead.
        None
    }
}

/// Starts the agent of `site` (the production loop of `twinsite agent`), reaching etcd
/// through `proxy`; it runs until `stop`.
async fn start_agent(
    proxy: &Proxy,
    site: &SimulatedSite,
    incarnation: &str,
    stop: CancellationToken,
) -> CancellationToken {
    let mut config = EtcdConfig::new(vec![proxy.endpoint()]);
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_millis(800);
    let client = connect_etcd(&config).await.unwrap();
    let store = EtcdStateStore::on_etcd(client.clone(), "/twinsite/v1").unwrap();
    let id = Site::id(site);
    let lease = HeldLease::start(
        client,
        &KeyLayout::new("/twinsite/v1").unwrap(),
        &id,
        &format!("agent-{id}-{incarnation}"),
        TIMING.lease_ttl,
        stop.clone(),
    )
    .unwrap();
    let (site, agent_stop) = (site.clone(), stop.clone());
    tokio::spawn(async move {
        twinsite::agent::run(&site, &store, &lease, AGENT_INTERVAL, agent_stop).await;
    });
    stop
}

struct Chaos {
    etcd: EtcdServer,
    sims: BTreeMap<String, SimulatedSite>,
    roads: BTreeMap<String, Arc<Cuttable>>,
    proxies: BTreeMap<String, Proxy>,
    /// Each site's running agent: cancel to stop it (it resigns its lease).
    agents: Mutex<BTreeMap<String, CancellationToken>>,
    controller: Arc<Controller>,
    store: Arc<EtcdStateStore>,
    /// Every instant the sampler saw a job running in both sites.
    doubles: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    _leadership: Leadership,
    dir: tempfile::TempDir,
}

impl Chaos {
    async fn start() -> Chaos {
        let etcd = EtcdServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let prefix = "/twinsite/v1";
        let layout = KeyLayout::new(prefix).unwrap();
        let mut sims = BTreeMap::new();
        let mut roads = BTreeMap::new();
        for name in SITES {
            let sim = SimulatedSite::new(
                SiteSnapshot {
                    id: SiteId(name.into()),
                    nodes: (1..=3).map(|i| node(&format!("{name}-n{i}"))).collect(),
                    running_pods: vec![],
                },
                dir.path().join(name),
                Arc::new(SystemClock),
                SimulatedSiteConfig::default(),
            );
            spawn_ticker(sim.clone(), Duration::from_millis(100));
            roads.insert(
                name.to_string(),
                Arc::new(Cuttable {
                    inner: sim.clone(),
                    cut: AtomicBool::new(false),
                }),
            );
            sims.insert(name.to_string(), sim);
        }

        // The controller: elected on etcd, its session the engine's quorum.
        let client = etcd.client().await;
        let store = Arc::new(EtcdStateStore::on_etcd(client.clone(), prefix).unwrap());
        let elector = LeaderElector::new(
            client.clone(),
            layout.election("controller").unwrap(),
            "controller-1",
            Duration::from_secs(3),
        );
        let leadership = elector.campaign().await.unwrap();
        store.set_leader(Some(leadership.leader_key.clone()));
        let sites: BTreeMap<SiteId, Arc<dyn Site>> = roads
            .iter()
            .map(|(id, road)| (SiteId(id.clone()), Arc::clone(road) as Arc<dyn Site>))
            .collect();
        let mut config = failover::EngineConfig::new(sites.keys().cloned().collect());
        config.site.grace = SITE_GRACE;
        config.site.suspect_after = SITE_GRACE / 3;
        config.fence_retry = Duration::from_millis(500);
        config.down_retry = Duration::from_secs(2);
        assert!(TIMING.check(SITE_GRACE).is_ok());
        let site_ids: Vec<SiteId> = sites.keys().cloned().collect();
        let controller = Controller::new(
            sites,
            Arc::clone(&store) as Arc<dyn StateStore>,
            Policy::default_two_sites(),
        )
        .with_storage_roots(
            SITES
                .iter()
                .map(|s| {
                    (
                        SiteId(s.to_string()),
                        format!("file://{}", dir.path().join(s).display()),
                    )
                })
                .collect(),
        )
        .with_failover(config, true)
        .with_quorum(Quorum::Session {
            automatic: true,
            session: Mutex::new(Some(leadership.session())),
        })
        .with_agents(Agents::new(
            AgentLeases::new(client.clone(), &layout, &site_ids).unwrap(),
            TIMING,
        ));
        controller.set_leading(true);
        let controller = Arc::new(controller);

        // One agent per site, each reaching etcd through its own proxy.
        let mut proxies = BTreeMap::new();
        let mut agents = BTreeMap::new();
        for name in SITES {
            let upstream = etcd
                .endpoint()
                .trim_start_matches("http://")
                .parse()
                .unwrap();
            let proxy = Proxy::start(upstream).await;
            let agent = start_agent(&proxy, &sims[name], "1", stop.child_token()).await;
            agents.insert(name.to_string(), agent);
            proxies.insert(name.to_string(), proxy);
        }

        // The sites' own records, sampled: never one job running in both.
        let doubles = Arc::new(Mutex::new(Vec::new()));
        {
            let (sims, doubles, stop) = (sims.clone(), Arc::clone(&doubles), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let mut running: BTreeMap<JobId, Vec<String>> = BTreeMap::new();
                    for (name, sim) in &sims {
                        for o in Site::jobs(sim).await.unwrap_or_default() {
                            if matches!(o.state, JobState::Running | JobState::Restarting) {
                                running
                                    .entry(o.job)
                                    .or_default()
                                    .push(format!("{name}/g{}", o.generation));
                            }
                        }
                    }
                    for (job, copies) in running {
                        if copies.len() > 1 {
                            doubles
                                .lock()
                                .unwrap()
                                .push(format!("{} {job} runs in {copies:?}", Utc::now()));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        // Checkpoints are replicated to the other site: what a site failover restores from.
        let replication = ReplicationDriver::open(
            Arc::clone(&controller),
            dir.path().join("replication"),
            None,
            4,
        )
        .await
        .unwrap();
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = replication.run(Duration::from_millis(500), stop).await;
            });
        }
        {
            let (controller, stop) = (Arc::clone(&controller), stop.clone());
            tokio::spawn(async move {
                let wake = Arc::new(tokio::sync::Notify::new());
                let _ = controller
                    .reconcile_loop(Duration::from_millis(300), wake, stop)
                    .await;
            });
        }
        // Jobs go only to sites whose agent holds its lease: wait for both.
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        let leases = controller.agents.as_ref().unwrap();
        while !SITES
            .iter()
            .all(|s| leases.lease_alive(&SiteId(s.to_string())))
        {
            assert!(
                tokio::time::Instant::now() < until,
                "the agents hold no lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Chaos {
            etcd,
            sims,
            roads,
            proxies,
            agents: Mutex::new(agents),
            controller,
            store,
            doubles,
            stop,
            _leadership: leadership,
            dir,
        }
    }

    /// Stores `job` with its jar uploaded to its preferred site's storage: the controller
    /// publishes it to both sites before it launches the job.
    async fn add(&self, job: &StreamJob) {
        let site = job.spec.placement.sites.preferred.clone().unwrap();
        support::fixtures::upload_jar(&self.dir.path().join(site), job);
        self.store
            .put_job(&new_record(job), Expected::Absent)
            .await
            .unwrap();
    }

    /// Where each job runs, from the sites' own lists: job name -> (site, generation).
    async fn running(&self) -> BTreeMap<String, (String, u64)> {
        let mut out = BTreeMap::new();
        for (name, sim) in &self.sims {
            for o in Site::jobs(sim).await.unwrap_or_default() {
                if o.state == JobState::Running {
                    let job = o.job.0.rsplit('/').next().unwrap_or_default().to_string();
                    if let Some(other) = out.insert(job.clone(), (name.clone(), o.generation)) {
                        self.doubles.lock().unwrap().push(format!(
                            "{} {job} runs in {other:?} and {name}/g{}",
                            Utc::now(),
                            o.generation
                        ));
                    }
                }
            }
        }
        out
    }

    /// Waits until `done` holds for what runs, or panics after `within` naming `what`.
    async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&BTreeMap<String, (String, u64)>) -> bool,
    ) -> BTreeMap<String, (String, u64)> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let running = self.running().await;
            if done(&running) {
                return running;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{what}: not within {within:?}; running: {running:?}\n{}",
                self.etcd
                    .log()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every job's checkpoints are replicated to the other site.
    async fn wait_replicated(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut missing = Vec::new();
            for (name, home) in JOBS {
                let other = if home == "dc-a" { "dc-b" } else { "dc-a" };
                let pointer = self
                    .store
                    .get_checkpoint("shop", name, CheckpointKind::Replicated, other)
                    .await
                    .unwrap();
                if pointer.is_none() {
                    missing.push(name);
                }
            }
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "not replicated within 60 s: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn assert_never_twice(&self) {
        let doubles = self.doubles.lock().unwrap();
        assert!(
            doubles.is_empty(),
            "a job ran in both sites at once: {:?}",
            &doubles[..doubles.len().min(5)]
        );
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const JOBS: [(&str, &str); 4] = [
    ("orders", "dc-a"),
    ("clicks", "dc-a"),
    ("payments", "dc-b"),
    ("audit", "dc-b"),
];

/// The split brain an SRE is paged for: dc-a is cut off from etcd *and* from the controller
/// while it keeps running. Nobody can stop its jobs but its own agent, which fences the
/// site once its lease has run out; only after the site grace does the controller relaunch
/// them in dc-b. At no sampled instant does a job run in both sites.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_cut_off_etcd_fences_its_site_before_the_controller_moves_its_jobs() {
    let chaos = Chaos::start().await;
    for (name, site) in JOBS {
        chaos.add(&job(name, site)).await;
    }
    let before = chaos
        .wait_for("every job running at home", Duration::from_secs(30), |r| {
            JOBS.iter()
                .all(|(name, site)| r.get(*name).is_some_and(|(s, _)| s == site))
        })
        .await;
    chaos.wait_replicated().await;
    tracing::info!("--- dc-a is cut off etcd and from the controller; it keeps running");
    chaos.proxies["dc-a"].cut();
    chaos.roads["dc-a"].cut.store(true, Ordering::SeqCst);
    let cut_at = tokio::time::Instant::now();

    // Its agent stops dc-a's jobs by itself, within its lease + margin + stop bound.
    let fenced = chaos
        .wait_for(
            "dc-a fenced by its agent",
            TIMING.fenced_within() + Duration::from_secs(2),
            |r| !r.values().any(|(s, _)| s == "dc-a"),
        )
        .await;
    let fenced_after = cut_at.elapsed();
    assert!(
        fenced_after >= TIMING.lease_ttl - Duration::from_millis(700),
        "dc-a's jobs stopped {fenced_after:?} after the cut, before its lease could run out"
    );
    assert!(!fenced.contains_key("orders"));

    // The controller moves them to dc-b after the site grace, not before.
    let moved = chaos
        .wait_for(
            "dc-a's jobs running in dc-b",
            Duration::from_secs(40),
            |r| {
                JOBS.iter()
                    .all(|(name, _)| r.get(*name).is_some_and(|(s, _)| s == "dc-b"))
            },
        )
        .await;
    let moved_after = cut_at.elapsed();
    assert!(
        moved_after >= SITE_GRACE - Duration::from_secs(1),
        "moved {moved_after:?} after the cut, before the site grace"
    );
    println!(
        "dc-a fenced by its agent {fenced_after:?} after the cut (lease TTL {:?}); its jobs running in dc-b {moved_after:?} after (site grace {SITE_GRACE:?})",
        TIMING.lease_ttl
    );
    for (name, home) in JOBS {
        if home == "dc-a" {
            assert!(moved[name].1 > before[name].1, "{name}: {moved:?}");
        } else {
            assert_eq!(moved[name], before[name], "{name} in dc-b must not move");
        }
    }
    chaos.assert_never_twice();
}

/// A partition that cuts only the controller off dc-b, while dc-b's agent still renews its
/// lease through the quorum: dc-b is alive by its peer view, so nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_cut_off_the_controller_whose_agent_still_renews_keeps_its_jobs() {
    let chaos = Chaos::start().await;
    for (name, site) in JOBS {
        chaos.add(&job(name, site)).await;
    }
    let before = chaos
        .wait_for("every job running at home", Duration::from_secs(30), |r| {
            JOBS.iter()
                .all(|(name, site)| r.get(*name).is_some_and(|(s, _)| s == site))
        })
        .await;
    tracing::info!("--- the controller is cut off dc-b; dc-b's agent still renews");
    chaos.roads["dc-b"].cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(SITE_GRACE * 3).await;
    let after = chaos.running().await;
    assert_eq!(after, before, "nothing may move");
    let site = chaos.store.get_site("dc-b").await.unwrap();
    assert!(
        site.as_ref()
            .is_none_or(|s| s.value.state != twinsite::state::SiteState::Lost),
        "dc-b must not be judged lost: {site:?}"
    );
    assert!(chaos.controller.is_leading());
    chaos.assert_never_twice();
}

/// A rollout of an agent: the old one stops and resigns its lease, a new one starts and
/// finds the lease free. Neither the new agent (it waits to win the lease) nor the
/// controller (a lease missing for a moment is not a dead agent) stops anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_an_agent_stops_nothing() {
    let chaos = Chaos::start().await;
    for (name, site) in JOBS {
        chaos.add(&job(name, site)).await;
    }
    let before = chaos
        .wait_for("every job running at home", Duration::from_secs(30), |r| {
            JOBS.iter()
                .all(|(name, site)| r.get(*name).is_some_and(|(s, _)| s == site))
        })
        .await;
    tracing::info!("--- dc-a's agent is replaced");
    let old = chaos.agents.lock().unwrap().remove("dc-a").unwrap();
    old.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = start_agent(
        &chaos.proxies["dc-a"],
        &chaos.sims["dc-a"],
        "2",
        chaos.stop.child_token(),
    )
    .await;
    chaos.agents.lock().unwrap().insert("dc-a".into(), new);
    tokio::time::sleep(TIMING.fenced_within() * 2).await;
    assert_eq!(chaos.running().await, before, "nothing may stop or move");
    chaos.assert_never_twice();
}
