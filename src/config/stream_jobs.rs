//! The `streamJobs` section: the Kubernetes site whose StreamJob objects are watched, how often.
//! Must never: reach the cluster; the watch itself is `crate::kube_jobs`.

use std::time::Duration;

use scheduler::input::{Policy, Problems};

use super::file::StreamJobsSpec;
use super::resolve::duration;

pub(super) fn resolve_stream_jobs(
    spec: &StreamJobsSpec,
    policy: Option<&Policy>,
    problems: &mut Problems,
) -> Option<crate::kube_jobs::StreamJobWatchConfig> {
    let mut ok = true;
    let site = scheduler::model::SiteId(spec.site.clone());
    match policy.map(|p| (p.site(&site), p)) {
        Some((None, policy)) => {
            problems.field(
                "streamJobs.site",
                format!(
                    "the policy has no site {:?} (it has {})",
                    spec.site,
                    policy
                        .site_ids()
                        .iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            ok = false;
        }
        Some((Some(found), _)) if found.kubernetes.is_none() => {
            problems.field(
                "streamJobs.site",
                format!(
                    "site {:?} has no sites[].kubernetes in the policy: StreamJob objects live in a Kubernetes cluster",
                    spec.site
                ),
            );
            ok = false;
        }
        _ => {}
    }
    if let Some(namespace) = &spec.namespace
        && let Some(error) = scheduler::input::dns1123_label_error(namespace)
    {
        problems.field("streamJobs.namespace", error);
        ok = false;
    }
    let status_interval = duration(problems, "streamJobs.statusInterval", &spec.status_interval)
        .and_then(|interval| {
            // A round reads every job and its checkpoint pointers: not a busy loop.
            if interval < Duration::from_secs(1) {
                problems.field(
                    "streamJobs.statusInterval",
                    format!("must be at least 1s, found {:?}", spec.status_interval),
                );
                return None;
            }
            Some(interval)
        });
    let checkpoint_status_interval = duration(
        problems,
        "streamJobs.checkpointStatusInterval",
        &spec.checkpoint_status_interval,
    );
    let mut config = crate::kube_jobs::StreamJobWatchConfig::new(site);
    config.scope.namespace = spec.namespace.clone();
    config.status_interval = status_interval?;
    config.checkpoint_status_interval = checkpoint_status_interval?;
    ok.then_some(config)
}
