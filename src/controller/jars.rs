//! Jars on both sites: before any launch of a spec, its jar is published content-addressed
//! (hdfs-sync's [`hdfs_sync::jars`]) into the storage of every site the job may run in, and
//! each launch uses its own site's copy. A site the jar is not verified in is refused as a
//! launch or move target, with the reason.
//!
//! - **Source.** The `jarURI` as the spec gives it, resolved in a site's storage the way
//!   checkpoint paths are ([`in_site_storage`]: `hdfs:///jars/x.jar` under `hdfs://ns-a/`, a
//!   `file://` path under a local site's directory): the job's preferred site first, then
//!   the other allowed sites in order; the first that holds a file there is read. Nothing
//!   outside a site's storage root is ever read. A `local://` jar is in the image: nothing
//!   to publish, the launch uses it as is. So does a site without a storage root (no storage
//!   twinsite may write; such sites share one namespace, as for checkpoints).
//! - **Where.** `<site storage root>/twinsite/jars/<sha256>/<file name>` ([`JAR_ROOT`]).
//! - **When.** Each reconcile pass brings the job's [`JarStatus`] up to date and starts a
//!   background publication when a site lacks a verified copy (one task per job, a few at
//!   once): a slow jar never holds the pass. A launch of a spec waits until every target site
//!   was tried once, then goes only to sites where the copy verified. A source that cannot be
//!   read leaves the job pending with the reason naming the URI. Failures are retried with
//!   a doubling backoff (2 s up to 5 min).
//! - **Which content.** One publication per spec (`JarStatus::spec`, the spec hash): a spec
//!   change publishes again (a new jar at the same URI is picked up then); relaunches and
//!   failovers of one spec use the bytes it was published with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdfs_sync::jars::{JarCopy, JarRef};
use hdfs_sync::{Storage, StorageUrl};
use scheduler::input::StreamJob;
use scheduler::model::{JobId, SiteId};

use super::Controller;
use super::launch::in_site_storage;
use super::status::JobStatus;
pub use crate::state::{JarSiteStatus, JarState, JarStatus};

/// Where published jars live, relative to a site's storage root.
pub const JAR_ROOT: &str = "twinsite/jars";

/// Publications running at once (each streams one jar to each site).
const CONCURRENT_PUBLICATIONS: usize = 4;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// What the jar allows a new launch of the job's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JarGate {
    /// Nothing to publish (a `local://` jar, or no site with a storage root).
    NotNeeded,
    /// Launch only in these sites: the jar is verified there (others were tried).
    Ready(BTreeSet<SiteId>),
    /// Not launched yet; the reason, for the status.
    Waiting(String),
}

/// What one background publication found.
enum Outcome {
    SourceUnreadable(String),
    Published {
        jar: JarRef,
        sites: BTreeMap<String, Result<(), String>>,
    },
}

#[derive(Default)]
struct Slot {
    spec: String,
    running: bool,
    outcome: Option<Outcome>,
    retry_at: Option<Instant>,
}

/// Background jar publications, one slot per job; their outcomes wait here until a pass
/// writes them into the job's status (the store is the truth; this is its outbox).
pub struct JarPublisher {
    slots: Arc<Mutex<BTreeMap<JobId, Slot>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Notified when a publication ends: the reconcile loop runs a pass.
    pub finished: Arc<tokio::sync::Notify>,
}

impl Default for JarPublisher {
    fn default() -> Self {
        JarPublisher {
            slots: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PUBLICATIONS)),
            finished: Arc::default(),
        }
    }
}

impl JarPublisher {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobId, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any publication is running (tests wait for none).
    pub fn busy(&self) -> bool {
        self.lock().values().any(|s| s.running)
    }

    /// Forgets jobs not in `present` (deleted).
    fn retain(&self, present: &BTreeSet<JobId>) {
        self.lock()
            .retain(|job, slot| slot.running || present.contains(job));
    }
}

fn is_in_image(uri: &str) -> bool {
    uri.starts_with("local:")
}

fn jar_root(storage_root: &str) -> Result<StorageUrl, String> {
    StorageUrl::parse(storage_root)
        .and_then(|root| root.join(JAR_ROOT))
        .map_err(|e| format!("site storage root {storage_root:?}: {e}"))
}

impl Controller {
    /// The sites `job`'s jar is published to, preferred site first: those it may run in
    /// that have a storage root.
    fn jar_targets(&self, job: &StreamJob) -> Vec<(SiteId, String)> {
        jar_targets_of(job, &self.storage_roots)
    }

    /// Brings `status.jar` up to date for `job` at spec hash `spec` (a finished publication
    /// is written in, a new one started when a site lacks the jar and its backoff passed),
    /// and says what that allows a new launch.
    pub(crate) fn jar_pass(&self, job: &StreamJob, spec: &str, status: &mut JobStatus) -> JarGate {
        let uri = &job.spec.jar_uri;
        let targets = self.jar_targets(job);
        if is_in_image(uri) || targets.is_empty() {
            status.jar = None;
            return JarGate::NotNeeded;
        }
        let jar = status
            .jar
            .take()
            .filter(|j| &j.source == uri && j.spec == spec);
        let mut jar = jar.unwrap_or_else(|| JarStatus {
            source: uri.clone(),
            spec: spec.to_string(),
            jar: None,
            error: None,
            sites: BTreeMap::new(),
            attempts: 0,
        });
        // The targets follow the policy and the job's allowed sites.
        jar.sites
            .retain(|site, _| targets.iter().any(|(t, _)| &t.0 == site));
        for (site, _) in &targets {
            jar.sites.entry(site.0.clone()).or_insert(JarSiteStatus {
                state: JarState::Publishing,
                reason: None,
            });
        }

        let id = job.id();
        let start = {
            let mut slots = self.jars.lock();
            let slot = slots.entry(id.clone()).or_default();
            if slot.spec != spec && !slot.running {
                *slot = Slot {
                    spec: spec.to_string(),
                    ..Slot::default()
                };
            }
            if slot.spec == spec
                && let Some(outcome) = slot.outcome.take()
            {
                apply_outcome(&mut jar, outcome);
                let all_verified = jar.sites.values().all(|s| s.state == JarState::Verified);
                if all_verified {
                    jar.attempts = 0;
                    slot.retry_at = None;
                } else {
                    jar.attempts = jar.attempts.saturating_add(1);
                    let backoff = FIRST_RETRY
                        .saturating_mul(1 << jar.attempts.saturating_sub(1).min(8))
                        .min(LONGEST_RETRY);
                    slot.retry_at = Some(Instant::now() + backoff);
                }
            }
            let wanted = jar.sites.values().any(|s| s.state != JarState::Verified);
            let due = slot.retry_at.is_none_or(|at| Instant::now() >= at);
            let start = wanted && due && !slot.running;
            if start {
                slot.spec = spec.to_string();
                slot.running = true;
            }
            start
        };
        if start {
            let missing: BTreeSet<String> = jar
                .sites
                .iter()
                .filter(|(_, s)| s.state != JarState::Verified)
                .map(|(site, _)| site.clone())
                .collect();
            self.start_publication(id, spec.to_string(), uri.clone(), targets, missing);
        }
        let gate = gate_of(&jar);
        status.jar = Some(jar);
        gate
    }

    fn start_publication(
        &self,
        job: JobId,
        spec: String,
        uri: String,
        targets: Vec<(SiteId, String)>,
        missing: BTreeSet<String>,
    ) {
        let slots = Arc::clone(&self.jars.slots);
        let permits = Arc::clone(&self.jars.permits);
        let finished = Arc::clone(&self.jars.finished);
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let (outcome, bytes) = publish(&uri, &targets, &missing).await;
            let elapsed = started.elapsed();
            if bytes > 0 {
                metrics.jar_published_bytes.inc_by(bytes);
                tracing::info!(%job, jar = %uri, bytes, elapsed_ms = elapsed.as_millis() as u64,
                    mib_per_s = bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9),
                    "jar published");
            }
            if let Outcome::SourceUnreadable(reason) = &outcome {
                tracing::warn!(%job, %reason, "jar not published");
            }
            {
                let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
                let slot = slots.entry(job).or_default();
                slot.running = false;
                if slot.spec == spec {
                    slot.outcome = Some(outcome);
                }
            }
            finished.notify_one();
        });
    }

    /// The `jarURI` a launch of `job` in `site` uses: its copy in the site's storage. `Err`
    /// (the reason) when the jar is not verified there for the job's current spec.
    pub fn site_jar_uri(
        &self,
        job: &StreamJob,
        status: &JobStatus,
        site: &SiteId,
    ) -> Result<String, String> {
        let uri = &job.spec.jar_uri;
        let Some(root) = self.storage_roots.get(site) else {
            return Ok(uri.clone());
        };
        if is_in_image(uri) {
            return Ok(uri.clone());
        }
        let spec = super::launch::spec_hash(job)?;
        let verified = status.jar.as_ref().and_then(|jar| {
            let ok = jar.source == *uri
                && jar.spec == spec
                && jar
                    .sites
                    .get(&site.0)
                    .is_some_and(|s| s.state == JarState::Verified);
            ok.then_some(jar.jar.as_ref()).flatten()
        });
        let Some(jar_ref) = verified else {
            let reason = status
                .jar
                .as_ref()
                .and_then(|jar| jar.missing(uri, &spec).remove(site))
                .unwrap_or_else(|| format!("the job's jar {uri} is not published to {site} yet"));
            return Err(reason);
        };
        site_jar_url(root, jar_ref)
    }

    /// Sets the jar gauges from the statuses of a pass, and forgets publications of deleted
    /// jobs.
    pub(crate) fn record_jar_states(&self, statuses: &BTreeMap<JobId, Option<JarStatus>>) {
        let mut counts: BTreeMap<(String, JarState), i64> = BTreeMap::new();
        for jar in statuses.values().flatten() {
            for (site, s) in &jar.sites {
                *counts.entry((site.clone(), s.state)).or_insert(0) += 1;
            }
        }
        for site in self.storage_roots.keys() {
            for state in JarState::ALL {
                let count = counts.get(&(site.0.clone(), state)).copied().unwrap_or(0);
                self.metrics.set_jar_sites(&site.0, state.as_str(), count);
            }
        }
        self.jars.retain(&statuses.keys().cloned().collect());
    }

    /// Waits until no jar publication runs (tests; a bounded wait).
    pub async fn jar_publications_settled(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.jars.busy() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

fn apply_outcome(jar: &mut JarStatus, outcome: Outcome) {
    match outcome {
        Outcome::SourceUnreadable(reason) => {
            jar.error = Some(reason.clone());
            for s in jar.sites.values_mut() {
                if s.state != JarState::Verified {
                    s.state = JarState::Failed;
                    s.reason = Some(reason.clone());
                }
            }
        }
        Outcome::Published {
            jar: jar_ref,
            sites,
        } => {
            jar.error = None;
            if jar.jar.as_ref().is_some_and(|j| *j != jar_ref) {
                // The source changed under the same spec: what was verified was other bytes.
                for s in jar.sites.values_mut() {
                    s.state = JarState::Publishing;
                    s.reason = None;
                }
            }
            jar.jar = Some(jar_ref);
            for (site, result) in sites {
                if let Some(s) = jar.sites.get_mut(&site) {
                    *s = match result {
                        Ok(()) => JarSiteStatus {
                            state: JarState::Verified,
                            reason: None,
                        },
                        Err(reason) => JarSiteStatus {
                            state: JarState::Failed,
                            reason: Some(reason),
                        },
                    };
                }
            }
        }
    }
}

fn gate_of(jar: &JarStatus) -> JarGate {
    if let Some(error) = &jar.error {
        return JarGate::Waiting(format!(
            "waiting for its jar: {error}; retried (attempt {})",
            jar.attempts
        ));
    }
    let publishing: Vec<&str> = jar
        .sites
        .iter()
        .filter(|(_, s)| s.state == JarState::Publishing)
        .map(|(site, _)| site.as_str())
        .collect();
    if !publishing.is_empty() {
        return JarGate::Waiting(format!(
            "publishing its jar {} to {}",
            jar.source,
            publishing.join(", ")
        ));
    }
    let verified: BTreeSet<SiteId> = jar
        .sites
        .iter()
        .filter(|(_, s)| s.state == JarState::Verified)
        .map(|(site, _)| SiteId(site.clone()))
        .collect();
    if verified.is_empty() || jar.jar.is_none() {
        let reasons: Vec<String> = jar
            .sites
            .iter()
            .map(|(site, s)| format!("{site}: {}", s.reason.as_deref().unwrap_or("not verified")))
            .collect();
        return JarGate::Waiting(format!(
            "its jar {} could not be published to any site ({}); retried",
            jar.source,
            reasons.join("; ")
        ));
    }
    JarGate::Ready(verified)
}

/// Each target site's storage opened: `(site, storage, root url, root text)`, and why the
/// others could not be.
type OpenedStorages = (
    Vec<(SiteId, Arc<dyn Storage>, StorageUrl, String)>,
    BTreeMap<String, String>,
);

fn open_storages(targets: &[(SiteId, String)]) -> OpenedStorages {
    let mut storages: Vec<(SiteId, Arc<dyn Storage>, StorageUrl, String)> = Vec::new();
    let mut open_errors: BTreeMap<String, String> = BTreeMap::new();
    for (site, root) in targets {
        let opened = StorageUrl::parse(root)
            .map_err(|e| e.to_string())
            .and_then(|url| {
                let storage = hdfs_sync::storage_for(&url).map_err(|e| e.to_string())?;
                Ok((storage, url))
            });
        match opened {
            Ok((storage, url)) => storages.push((site.clone(), storage, url, root.clone())),
            Err(reason) => {
                open_errors.insert(site.0.clone(), format!("site storage {root}: {reason}"));
            }
        }
    }
    (storages, open_errors)
}

/// The source of a publication: the first site's storage holding a regular file at the
/// jarURI's path. `Err`: why none does, naming the URI and every place looked at.
async fn find_source(
    uri: &str,
    (storages, open_errors): &OpenedStorages,
) -> Result<(Arc<dyn Storage>, StorageUrl), String> {
    let mut looked = Vec::new();
    for (site, storage, _, root) in storages {
        let url = match in_site_storage(root, uri)
            .and_then(|u| StorageUrl::parse(&u).map_err(|e| e.to_string()))
        {
            Ok(url) => url,
            Err(reason) => {
                looked.push(format!("{site}: {reason}"));
                continue;
            }
        };
        match storage.stat(&url).await {
            Ok(Some(meta)) if !meta.is_dir => return Ok((Arc::clone(storage), url)),
            Ok(Some(_)) => looked.push(format!("{url} is a directory")),
            Ok(None) => looked.push(format!("{url} not found")),
            Err(error) => looked.push(error.to_string()),
        }
    }
    looked.extend(open_errors.values().cloned());
    Err(format!(
        "jarURI {uri} cannot be read in any site's storage ({})",
        looked.join("; ")
    ))
}

/// The sites `job`'s jar is published to, preferred site first: those it may run in that
/// have a storage root in `roots`.
pub fn jar_targets_of(job: &StreamJob, roots: &BTreeMap<SiteId, String>) -> Vec<(SiteId, String)> {
    let Ok(demand) = job.demand() else {
        return Vec::new();
    };
    let mut targets: Vec<(SiteId, String)> = roots
        .iter()
        .filter(|(site, _)| demand.sites.allows(site))
        .map(|(site, root)| (site.clone(), root.clone()))
        .collect();
    if let Some(preferred) = &demand.sites.preferred {
        targets.sort_by_key(|(site, _)| site != preferred);
    }
    targets
}

/// The `jarURI` a launch in `site` uses for `job`, computed as a publication would: the
/// source read from the job's target sites' storages (preferred first), hashed, and the
/// site's content-addressed copy named. `Ok(None)` when a launch uses the URI as written
/// (a jar in the image, or a site without a storage root); `Err` naming the URI when the
/// jar cannot be read. For `twinsite render`, which shows what a launch would use.
pub async fn launch_jar_uri(
    job: &StreamJob,
    site: &SiteId,
    roots: &BTreeMap<SiteId, String>,
) -> Result<Option<String>, String> {
    let uri = &job.spec.jar_uri;
    let Some(root) = roots.get(site) else {
        return Ok(None);
    };
    if is_in_image(uri) {
        return Ok(None);
    }
    let opened = open_storages(&jar_targets_of(job, roots));
    let (source, source_url) = find_source(uri, &opened).await?;
    let (jar_ref, _) = hdfs_sync::jars::identify_jar(&*source, &source_url)
        .await
        .map_err(|error| format!("jarURI {uri} ({source_url}): {error}"))?;
    site_jar_url(root, &jar_ref).map(Some)
}

/// Where a site whose storage root is `root` holds the jar `jar_ref`.
fn site_jar_url(root: &str, jar_ref: &JarRef) -> Result<String, String> {
    jar_root(root)?
        .join(&jar_ref.relative_path())
        .map(|url| url.to_string())
        .map_err(|e| e.to_string())
}

/// One publication: finds the source in the first target site's storage that holds it,
/// then copies it to each site in `missing`. Returns the outcome and the bytes copied.
async fn publish(
    uri: &str,
    targets: &[(SiteId, String)],
    missing: &BTreeSet<String>,
) -> (Outcome, u64) {
    let opened = open_storages(targets);
    let (source, source_url) = match find_source(uri, &opened).await {
        Ok(found) => found,
        Err(reason) => return (Outcome::SourceUnreadable(reason), 0),
    };
    let (storages, open_errors) = opened;
    let (jar_ref, len) = match hdfs_sync::jars::identify_jar(&*source, &source_url).await {
        Ok(identified) => identified,
        Err(error) => {
            return (
                Outcome::SourceUnreadable(format!("jarURI {uri} ({source_url}): {error}")),
                0,
            );
        }
    };
    let mut sites = BTreeMap::new();
    let mut bytes = 0;
    for (site, reason) in open_errors {
        if missing.contains(&site) {
            sites.insert(site, Err(reason));
        }
    }
    for (site, storage, root, _) in &storages {
        if !missing.contains(&site.0) {
            continue;
        }
        let result = match root.join(JAR_ROOT) {
            Ok(jar_root) => {
                hdfs_sync::jars::copy_jar(&*source, &source_url, &jar_ref, &**storage, &jar_root)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if matches!(result, Ok(JarCopy::Copied)) {
            bytes += len;
        }
        sites.insert(site.0.clone(), result.map(|_| ()));
    }
    (
        Outcome::Published {
            jar: jar_ref,
            sites,
        },
        bytes,
    )
}
