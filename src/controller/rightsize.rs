//! Applying right-sizing to a stored job: the recommendation from a metrics source becomes a
//! JSON merge patch (RFC 7386) on the StreamJob, validated like any edit, written with a
//! compare-and-set and audited. Only on explicit request, or periodically for jobs that opt
//! in with the annotation `twinsite.io/rightsize: auto`.

use scheduler::report::assemble::JobFacts;
use scheduler::rightsize::{Recommendation, RightsizeConfig};
use serde_json::Value;

use super::{Controller, stream_job_of};
use crate::job_metrics::{MetricsSource, recommend_all};
use crate::state::{Expected, StateError};

/// Right-sizing as the controller runs it: the model's defaults, read at one-minute
/// resolution (a day of per-subtask series at 15 s is four times the data for no better
/// answer, and every source resamples: Prometheus by its step, files by bucketing).
pub fn controller_config() -> RightsizeConfig {
    RightsizeConfig {
        scrape_interval_ms: 60_000,
        ..RightsizeConfig::default()
    }
}

/// The annotation by which a job opts in to automatic right-sizing.
pub const AUTO_ANNOTATION: &str = "twinsite.io/rightsize";

#[derive(Debug, thiserror::Error)]
pub enum RightsizeError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {job}: metrics: {reason}")]
    Metrics { job: String, reason: String },
    #[error("job {job}: the patched spec is not valid: {reason}")]
    Invalid { job: String, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What `rightsize` found and did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RightsizeOutcome {
    pub recommendation: Recommendation,
    /// The merge patch applied (or that would be), `{"spec": {...}}`; `null` when none.
    pub patch: Value,
    pub applied: bool,
    pub message: String,
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl Controller {
    /// Right-sizes one job from `source`; with `apply`, writes the patched spec (the loop then
    /// relaunches the job with it from a savepoint) and audits it as `actor`.
    pub async fn rightsize(
        &self,
        source: &dyn MetricsSource,
        namespace: &str,
        name: &str,
        apply: bool,
        actor: &str,
    ) -> Result<RightsizeOutcome, RightsizeError> {
        let target = format!("{namespace}/{name}");
        let record = self
            .store
            .get_job(namespace, name)
            .await?
            .ok_or_else(|| RightsizeError::NotFound(target.clone()))?;
        let invalid = |reason: String| RightsizeError::Invalid {
            job: target.clone(),
            reason,
        };
        let job = stream_job_of(&record.value).map_err(invalid)?;
        let demand = job.demand().map_err(|e| invalid(e.to_string()))?;
        let facts = JobFacts::of(&job, &demand);
        let (mut recommendations, failures) = recommend_all(
            source,
            std::slice::from_ref(&facts),
            chrono::Utc::now().timestamp_millis(),
            &controller_config(),
        )
        .await
        .map_err(|e| RightsizeError::Metrics {
            job: target.clone(),
            reason: e.to_string(),
        })?;
        if let Some((_, reason)) = failures.into_iter().next() {
            return Err(RightsizeError::Metrics {
                job: target,
                reason,
            });
        }
        let Some(recommendation) = recommendations.pop() else {
            return Err(RightsizeError::Metrics {
                job: target,
                reason: "the source returned no recommendation".into(),
            });
        };
        if recommendation.patch.is_empty() {
            return Ok(RightsizeOutcome {
                recommendation,
                patch: Value::Null,
                applied: false,
                message: "no change recommended".into(),
            });
        }
        let patch = recommendation.patch.to_merge_patch();
        if !apply {
            return Ok(RightsizeOutcome {
                recommendation,
                patch,
                applied: false,
                message: "dry run: nothing changed".into(),
            });
        }
        if let Some(owner) = self.watch_owner(&record.value) {
            // The object is the job's truth: a store edit would be undone by the next sync.
            return Ok(RightsizeOutcome {
                message: format!(
                    "not applied: the job is owned by {owner}; apply the patch there: kubectl -n {namespace} patch streamjob {name} --type merge -p '{patch}'"
                ),
                recommendation,
                patch,
                applied: false,
            });
        }
        let mut spec = record
            .value
            .spec
            .to_json()
            .map_err(|e| invalid(e.to_string()))?;
        merge_patch(&mut spec, &patch);
        let patched: scheduler::input::StreamJob =
            serde_json::from_value(spec).map_err(|e| invalid(e.to_string()))?;
        // Every admission rule and bound, as for an API edit (a recommendation past Flink's
        // parallelism bound is refused here, not stored to be refused by the next pass).
        patched.validate().map_err(|e| invalid(e.to_string()))?;
        self.policy
            .check_jobs("right-sized spec", std::slice::from_ref(&patched))
            .map_err(|e| invalid(e.to_string()))?;
        let mut updated = record.value.clone();
        updated.spec = patched.into();
        let result = self
            .store
            .put_job(&updated, Expected::Revision(record.revision))
            .await;
        let outcome = match &result {
            Ok(_) => format!("ok: {patch}"),
            Err(error) => format!("failed: {error}"),
        };
        self.audit_as(actor, "rightsize", &target, &outcome).await;
        result?;
        Ok(RightsizeOutcome {
            recommendation,
            patch,
            applied: true,
            message: "applied; the job is relaunched with the new spec from a savepoint".into(),
        })
    }

    /// Applies right-sizing to every job annotated `twinsite.io/rightsize: auto`; returns how
    /// many were changed. A job that cannot be right-sized is logged and skipped.
    pub async fn auto_rightsize(&self, source: &dyn MetricsSource) -> Result<usize, StateError> {
        let mut changed = 0;
        for record in self.store.list_jobs().await? {
            let opted_in = record.value.spec.annotation(AUTO_ANNOTATION) == Some("auto");
            if !opted_in {
                continue;
            }
            let (ns, name) = (&record.value.namespace, &record.value.name);
            match self
                .rightsize(source, ns, name, true, "controller (auto-rightsize)")
                .await
            {
                Ok(outcome) if outcome.applied => changed += 1,
                Ok(_) => {}
                Err(RightsizeError::State(
                    error @ (StateError::NotLeader { .. } | StateError::Fenced { .. }),
                )) => return Err(error),
                Err(error) => {
                    tracing::warn!(job = %format!("{ns}/{name}"), %error, "auto right-sizing skipped")
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_replaces_merges_and_deletes_as_rfc_7386_says() {
        let mut doc = json!({"spec": {"parallelism": 2, "taskManager": {"resources": {"cpu": "2", "memory": "4Gi"}, "slots": 1}}, "x": 1});
        merge_patch(
            &mut doc,
            &json!({"spec": {"parallelism": 4, "taskManager": {"resources": {"memory": "3Gi"}}}, "x": null}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"parallelism": 4, "taskManager": {"resources": {"cpu": "2", "memory": "3Gi"}, "slots": 1}}})
        );
    }
}
