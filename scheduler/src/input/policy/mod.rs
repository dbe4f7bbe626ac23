//! The policy file (`kind: Policy`, schema in `policies/README.md`): sites, node pools and
//! offline lending windows, tenant quotas, priority tiers, failover reserves, detection and
//! replication settings. Parsed strictly, then resolved into [`PlacementPolicy`] and the
//! typed settings later stages use.
//!
//! Layout: `file` holds the serde shapes ([`PolicyFile`]); `sites` checks sites, pools and
//! lending windows; `tenants` quotas, reserves and tiers; `settings` detection, replication,
//! rebalance and redaction. `resolve` here runs them in file order.

mod file;
mod settings;
mod sites;
mod tenants;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::common::{self, check_type_meta, decode};
use super::diagnosis_policy::{self, DiagnosisSpec};
use super::error::{InputError, Problems};
use super::scale_profile::{self, ScaleProfiles};
use super::streamjob::StreamJob;
use crate::model::{FailoverReserve, PlacementPolicy, Priority, RebalancePolicy, SiteId};

pub use file::{
    DetectionSpec, KubernetesSpec, LaunchMode, MarginSpec, OfflineSpec, PolicyFile, PoolSpec,
    PrioritiesSpec, QuotaSpec, RebalanceSpec, RedactionSpec, ReplicationSpec, ReserveSpec,
    SiteSpec, TierSpec, WindowSpec,
};
pub use settings::{
    DETECTION_FIELDS_MOVED, Detection, MAX_POD_EVICTION_TIMEOUT, MAX_REBALANCE_LEAD_TIME,
    MAX_REBALANCE_MOVES_PER_HOUR, MAX_REDACTION_KEY_LEN, MAX_REDACTION_KEYS, Replication,
};
pub use tenants::TierRules;

pub const POLICY_KIND: &str = "Policy";

/// Storage schemes a site's HDFS (or its local stand-in) may use.
pub const STORAGE_SCHEMES: [&str; 2] = ["hdfs", "file"];

/// A validated policy: the file as written plus everything resolved from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    file: PolicyFile,
    placement: PlacementPolicy,
    tiers: BTreeMap<Priority, TierRules>,
    detection: Detection,
    replication: Replication,
    diagnosis: crate::diagnosis::Thresholds,
    rebalance: RebalancePolicy,
    scale_profiles: ScaleProfiles,
}

/// Reads and validates a policy file; every problem names `source` and the field path.
pub fn parse_policy(source: &str, yaml: &str) -> Result<Policy, InputError> {
    let mut documents = common::yaml_documents(source, yaml)?;
    let mut problems = Problems::new(source);
    if documents.len() != 1 {
        problems.whole(format!(
            "expected exactly one policy document, found {}",
            documents.len()
        ));
        return problems.finish(Policy::default_two_sites());
    }
    let document = documents.remove(0);
    if !document.is_object() {
        problems.whole("expected a Policy (a YAML mapping)");
        return problems.finish(Policy::default_two_sites());
    }
    if !check_type_meta(&document, POLICY_KIND, &mut problems) {
        return problems.finish(Policy::default_two_sites());
    }
    let Some(file) = decode::<PolicyFile>(document, &mut problems) else {
        return Err(problems.into_error("not a valid policy"));
    };
    match resolve(file, &mut problems) {
        Some(policy) => problems.finish(policy),
        None => Err(problems.into_error("not a valid policy")),
    }
}

impl Policy {
    /// The policy used when no file is given: two simulated sites `dc-a` and `dc-b` with
    /// local storage, no pools (every node online), no quotas, default tiers, detection and
    /// replication, and each site keeping room for the other's critical jobs. It is what
    /// `policies/minimal.yaml` spells out.
    pub fn default_two_sites() -> Policy {
        let site = |name: &str| SiteSpec {
            name: name.to_string(),
            kubernetes: None,
            storage: None,
        };
        let reserve = |site: &str, protects: &str| ReserveSpec {
            site: site.to_string(),
            protects: protects.to_string(),
            min_priority: Priority::Critical,
        };
        let file = PolicyFile {
            api_version: common::API_VERSION.to_string(),
            kind: POLICY_KIND.to_string(),
            sites: vec![site("dc-a"), site("dc-b")],
            pools: Vec::new(),
            quotas: Vec::new(),
            priorities: PrioritiesSpec::default(),
            failover_reserve: vec![reserve("dc-a", "dc-b"), reserve("dc-b", "dc-a")],
            detection: DetectionSpec::default(),
            replication: ReplicationSpec::default(),
            diagnosis: DiagnosisSpec::default(),
            redaction: RedactionSpec::default(),
            rebalance: RebalanceSpec::default(),
            scale_profiles: Vec::new(),
        };
        let placement = PlacementPolicy {
            pools: Vec::new(),
            quotas: Vec::new(),
            reserves: file
                .failover_reserve
                .iter()
                .map(|r| FailoverReserve {
                    site: SiteId(r.site.clone()),
                    protects: SiteId(r.protects.clone()),
                    min_priority: r.min_priority,
                })
                .collect(),
        };
        Policy {
            file,
            placement,
            tiers: Priority::ALL
                .iter()
                .map(|&p| (p, TierRules::default_for(p)))
                .collect(),
            detection: Detection {
                pod_eviction_timeout: Duration::from_secs(30),
            },
            replication: Replication {
                interval: Duration::from_secs(30),
                bandwidth_bytes_per_second: None,
                parallel_copies: 4,
                max_lag: Duration::from_secs(300),
            },
            diagnosis: crate::diagnosis::Thresholds::default(),
            rebalance: RebalancePolicy::default(),
            scale_profiles: Default::default(),
        }
    }

    /// The file as written, e.g. to print or store it.
    pub fn file(&self) -> &PolicyFile {
        &self.file
    }

    pub fn placement_policy(&self) -> PlacementPolicy {
        self.placement.clone()
    }

    /// Site names in file order.
    pub fn site_ids(&self) -> Vec<SiteId> {
        self.file
            .sites
            .iter()
            .map(|s| SiteId(s.name.clone()))
            .collect()
    }

    pub fn site(&self, id: &SiteId) -> Option<&SiteSpec> {
        self.file.sites.iter().find(|s| s.name == id.0)
    }

    pub fn tier(&self, priority: Priority) -> TierRules {
        self.tiers
            .get(&priority)
            .copied()
            .unwrap_or_else(|| TierRules::default_for(priority))
    }

    pub fn detection(&self) -> Detection {
        self.detection
    }

    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Lead time and budget of moves off borrowed capacity (`rebalance`).
    pub fn rebalance(&self) -> RebalancePolicy {
        self.rebalance
    }

    /// Planned elasticity (`scaleProfiles`).
    pub fn scale_profiles(&self) -> &ScaleProfiles {
        &self.scale_profiles
    }

    /// The thresholds diagnosis judges jobs by (`diagnosis`).
    pub fn diagnosis(&self) -> crate::diagnosis::Thresholds {
        self.diagnosis
    }

    /// The policy's extra redaction patterns (`redaction.keys`), validated.
    pub fn redaction_keys(&self) -> &[String] {
        &self.file.redaction.keys
    }

    /// The tenants the policy knows: those its quotas name. Empty when it sets no quota.
    pub fn tenants(&self) -> BTreeSet<&str> {
        self.file.quotas.iter().map(|q| q.tenant.as_str()).collect()
    }

    /// Checks what a job file can only be checked against the policy: every site a job
    /// prefers or allows is one of the policy's sites, and, when the policy names tenants
    /// (its quotas do), the job's tenant is one of them. `source` names the job file.
    pub fn check_jobs(&self, source: &str, jobs: &[StreamJob]) -> Result<(), InputError> {
        let sites: BTreeSet<&str> = self.file.sites.iter().map(|s| s.name.as_str()).collect();
        let tenants = self.tenants();
        let mut problems = Problems::new(source);
        for job in jobs {
            problems.set_object(Some(job.id().to_string()));
            let tenant = job.tenant();
            if !tenants.is_empty() && !tenants.contains(tenant.0.as_str()) {
                problems.field(
                    job.tenant_field(),
                    format!(
                        "tenant {:?} is not in the policy, whose quotas name the tenants it admits: {}",
                        tenant.0,
                        tenants
                            .iter()
                            .map(|t| format!("{t:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            let wanted = &job.spec.placement.sites;
            let named = wanted
                .preferred
                .iter()
                .map(|s| ("spec.placement.sites.preferred".to_string(), s))
                .chain(
                    wanted
                        .allowed
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (format!("spec.placement.sites.allowed[{i}]"), s)),
                )
                .chain(
                    job.spec
                        .site_overrides
                        .keys()
                        .map(|s| (format!("spec.siteOverrides[{s:?}]"), s)),
                );
            for (field, site) in named {
                if !sites.contains(site.as_str()) {
                    problems.field(
                        field,
                        format!(
                            "unknown site {site:?}; the policy's sites are {}",
                            sites
                                .iter()
                                .map(|s| format!("{s:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        problems.finish(())
    }

    /// The policy as YAML that [`parse_policy`] reads back.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(&self.file)
    }
}

/// Every section checked in file order, so problems are reported in the order they are read.
fn resolve(file: PolicyFile, problems: &mut Problems) -> Option<Policy> {
    let before = problems.len();
    let site_names = sites::check_sites(&file.sites, problems);
    let pools = sites::resolve_pools(&file.pools, &site_names, problems);
    let quotas = tenants::resolve_quotas(&file.quotas, &site_names, problems);
    let reserves = tenants::resolve_reserves(&file.failover_reserve, &site_names, problems);
    let tiers = tenants::resolve_tiers(&file.priorities);
    let detection = settings::resolve_detection(&file.detection, problems);
    let replication = settings::resolve_replication(&file.replication, problems);
    settings::check_redaction(&file.redaction, problems);
    let rebalance = settings::resolve_rebalance(&file.rebalance, problems);
    let scale_profiles = scale_profile::resolve(&file.scale_profiles, problems);
    let diagnosis = diagnosis_policy::resolve(&file.diagnosis, problems);

    if problems.len() > before {
        return None;
    }
    Some(Policy {
        placement: PlacementPolicy {
            pools,
            quotas,
            reserves,
        },
        tiers,
        detection: detection?,
        replication: replication?,
        diagnosis: diagnosis?,
        rebalance: rebalance?,
        scale_profiles: scale_profiles?,
        file,
    })
}
