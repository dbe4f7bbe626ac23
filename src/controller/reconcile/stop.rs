//! Stopping what must not run: every generation a site runs that the store does not place
//! there, and whatever a guarded site whose agent is dead still runs. It must never stop a
//! generation of a job whose record does not decode (its placement is unknown).

use std::collections::BTreeMap;

use scheduler::model::{JobId, SiteId};

use super::super::Controller;
use super::{PassReport, SiteView};
use crate::site::JobObservation;
use crate::state::{JobRecord, Versioned};

impl Controller {
    /// A guarded site whose agent has held no lease for longer than it needs to fence the
    /// site, while this controller reaches its API: its agent is dead (a cut-off one has
    /// stopped these itself). Nothing may run there once the site can be judged lost, so
    /// the controller stops them.
    pub(super) async fn stop_unguarded(
        &self,
        id: &SiteId,
        site: &dyn crate::site::Site,
        jobs: &[JobObservation],
    ) {
        for job in jobs {
            match site.stop(&job.job, job.generation).await {
                Ok(()) => tracing::warn!(site = %id, job = %job.job, generation = job.generation,
                    "stopped: the site's agent holds no lease"),
                Err(error) => {
                    tracing::warn!(site = %id, job = %job.job, generation = job.generation,
                    %error, "cannot stop a generation of a site whose agent holds no lease")
                }
            }
        }
    }

    /// Stops every generation a site runs that the store does not place there: deleted jobs,
    /// superseded generations, and a job the store places in the other site (never two).
    /// A job whose record does not decode is not deleted: its generation and site are
    /// unknown, so none of its generations is stopped anywhere.
    pub(super) async fn stop_unwanted(
        &self,
        records: &[Versioned<JobRecord>],
        views: &BTreeMap<SiteId, SiteView>,
        report: &mut PassReport,
    ) {
        let unreadable: std::collections::BTreeSet<JobId> = report
            .unreadable
            .iter()
            .filter_map(|u| u.job.as_ref())
            .map(|(namespace, name)| JobId::new(namespace, name))
            .collect();
        let wanted: BTreeMap<JobId, (Option<&str>, u64)> = records
            .iter()
            .map(|r| {
                (
                    JobId::new(&r.value.namespace, &r.value.name),
                    (
                        r.value.placement.as_ref().map(|p| p.site.as_str()),
                        r.value.generation,
                    ),
                )
            })
            .collect();
        for (site_id, view) in views {
            for observation in &view.jobs {
                if unreadable.contains(&observation.job) {
                    continue;
                }
                let reason = match wanted.get(&observation.job) {
                    None => "the job was deleted".to_string(),
                    Some((Some(site), generation))
                        if *site == site_id.0 && *generation == observation.generation =>
                    {
                        continue;
                    }
                    Some((None, _)) => "the job is being relaunched".to_string(),
                    Some((Some(site), generation)) if *site != site_id.0 => {
                        format!("the job runs in {site} (generation {generation})")
                    }
                    Some((_, generation)) => {
                        format!("generation {generation} superseded it")
                    }
                };
                match view
                    .site
                    .stop(&observation.job, observation.generation)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(site = %site_id, job = %observation.job, generation = observation.generation, %reason, "stopped");
                        self.metrics
                            .stops
                            .get_or_create(&super::super::metrics::SiteLabel {
                                site: site_id.0.clone(),
                            })
                            .inc();
                        self.audit(
                            "stop",
                            &format!("{}@{}#{}", observation.job, site_id, observation.generation),
                            &format!("ok: {reason}"),
                        )
                        .await;
                        report.stopped.push((
                            site_id.clone(),
                            observation.job.clone(),
                            observation.generation,
                        ));
                    }
                    Err(error) => {
                        self.count_site_error(site_id, &error);
                        tracing::warn!(site = %site_id, job = %observation.job, %error, "stop failed; retried next pass");
                    }
                }
            }
        }
    }
}
