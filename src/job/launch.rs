//! From a StreamJob and its placement to the `LaunchSpec` a site runs.

use scheduler::input::{StreamJob, TemplateValues};
use scheduler::model::JobPlacement;
use sha2::{Digest, Sha256};

use crate::site::LaunchSpec;
pub use crate::state::Restore;

/// Checkpoint interval of a job whose spec has no `checkpoints` (failover mode `none`).
const FALLBACK_CHECKPOINT_INTERVAL_MS: u64 = 60_000;

/// Why a job cannot be turned into a launch; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: {field}: {message}")]
pub struct LaunchError {
    pub job: String,
    pub field: String,
    pub message: String,
}

/// The launch of `generation` of `job` on `placement`, restoring from `restore`. With
/// `site_storage` (the site's storage root, e.g. `hdfs://nameservice-a/`), the job's
/// checkpoint directory is placed under it: a StreamJob names a path, each site's HDFS
/// supplies the cluster. `site_epoch` is the placement site's current epoch
/// (the controller's `site_epoch`). The job's override for the
/// placement's site (`spec.siteOverrides`) applies, its templates expanded for this launch.
pub fn launch_spec(
    job: &StreamJob,
    generation: u64,
    placement: &JobPlacement,
    restore: Option<Restore>,
    site_storage: Option<&str>,
    site_epoch: u64,
) -> Result<LaunchSpec, LaunchError> {
    let id = job.id();
    let fail = |field: &str, message: String| LaunchError {
        job: id.to_string(),
        field: field.to_string(),
        message,
    };
    let demand = job.demand().map_err(|e| fail("spec", e.to_string()))?;
    let spec = &job.spec;
    let (checkpoint_dir, checkpoint_interval_ms) = match &spec.checkpoints {
        Some(checkpoints) => {
            let interval = scheduler::input::parse_duration(&checkpoints.interval)
                .map_err(|m| fail("spec.checkpoints.interval", m))?;
            (
                checkpoints.dir.clone(),
                u64::try_from(interval.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
        }
        None => (
            super::default_checkpoint_dir(&job.metadata.namespace, &job.metadata.name),
            FALLBACK_CHECKPOINT_INTERVAL_MS,
        ),
    };
    let checkpoint_dir = match site_storage {
        Some(root) => {
            in_site_storage(root, &checkpoint_dir).map_err(|m| fail("spec.checkpoints.dir", m))?
        }
        None => checkpoint_dir,
    };
    let settings = spec
        .settings_in(&TemplateValues {
            site: placement.site.0.clone(),
            restore_completed_at: restore.as_ref().and_then(|r| r.completed_at),
        })
        .map_err(|(field, message)| fail(&field, message))?;
    let mut flink_configuration = settings.flink_configuration;
    // Admission refuses the key in `flinkConfiguration`, so the spec's field is its only
    // writer.
    if let Some(overrides) = spec.parallelism_overrides() {
        flink_configuration.insert(
            scheduler::input::streamjob::PARALLELISM_OVERRIDES_OPTION.into(),
            overrides,
        );
    }
    if let Some(checkpoints) = &spec.checkpoints {
        flink_configuration
            .entry("state.checkpoints.num-retained".into())
            .or_insert_with(|| checkpoints.retained.to_string());
        flink_configuration
            .entry("execution.checkpointing.incremental".into())
            .or_insert_with(|| checkpoints.incremental.to_string());
    }
    Ok(LaunchSpec {
        job: id,
        generation,
        epoch: site_epoch,
        placement: placement.clone(),
        image: spec.image.clone(),
        flink_version: spec.flink_version.clone(),
        jar_uri: spec.jar_uri.clone(),
        entry_class: spec.entry_class.clone(),
        args: settings.args,
        env: settings.env,
        parallelism: spec.parallelism,
        task_slots: spec.task_manager.slots,
        job_manager: demand.job_manager,
        task_manager: demand.task_manager,
        tolerations: spec.placement.tolerations.clone(),
        flink_configuration,
        checkpoint_dir,
        checkpoint_interval_ms,
        restore_from: restore.map(|r| r.path),
    })
}

/// `uri`'s path under the site storage `root`: `hdfs:///flink/x` under `file:///data/dc-a`
/// is `file:///data/dc-a/flink/x`. A URI already under `root` (in any spelling Flink writes,
/// `file:/x` too) is kept. `Err` (the reason) when the path has a `..` segment, which could
/// climb out of the root (admission refuses those; this is the second line, for anything that
/// reaches here otherwise), or when `root` is not a storage URL.
pub fn in_site_storage(root: &str, uri: &str) -> Result<String, String> {
    let root_url = hdfs_sync::StorageUrl::parse(root)
        .map_err(|e| format!("site storage root {root:?}: {e}"))?;
    let path = match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => uri.split_once(':').map_or(uri, |(_, path)| path),
    };
    if path.split('/').any(|segment| segment == "..") {
        return Err(format!(
            "{uri:?} has a \"..\" segment: it could climb out of the site's storage {root:?}"
        ));
    }
    if let Ok(url) = hdfs_sync::StorageUrl::parse(uri)
        && url.starts_with(&root_url)
    {
        return Ok(url.to_string());
    }
    root_url
        .join(path.trim_start_matches('/'))
        .map(|url| url.to_string())
        .map_err(|e| format!("{uri:?} under the site's storage {root:?}: {e}"))
}

/// A stable hash of a job's spec: a change of spec means a relaunch with the new one.
/// `Err` (the reason) for a spec that cannot be encoded: never hashed as if it were empty,
/// which would make every such spec look the same.
pub fn spec_hash(job: &StreamJob) -> Result<String, String> {
    // serde_json writes struct fields in declaration order and maps sorted (BTreeMap), so
    // equal specs give equal text.
    let text = serde_json::to_string(&job.spec)
        .map_err(|e| format!("its spec cannot be encoded to compare with the launched one: {e}"))?;
    let digest = Sha256::digest(text.as_bytes());
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use scheduler::model::{PodPlacement, PodRole, SiteId};

    const JOB: &str = r#"
apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 4
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}, slots: 2}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders", interval: 30s, retained: 3}
"#;

    pub(crate) fn job() -> StreamJob {
        scheduler::input::parse_stream_jobs("job.yaml", JOB)
            .unwrap()
            .remove(0)
    }

    pub(crate) fn placement() -> JobPlacement {
        JobPlacement {
            job: job().id(),
            site: SiteId("dc-a".into()),
            pods: vec![
                PodPlacement {
                    role: PodRole::Jobmanager,
                    index: 0,
                    node: "n1".into(),
                },
                PodPlacement {
                    role: PodRole::Taskmanager,
                    index: 0,
                    node: "n2".into(),
                },
                PodPlacement {
                    role: PodRole::Taskmanager,
                    index: 1,
                    node: "n3".into(),
                },
            ],
        }
    }

    #[test]
    fn a_launch_carries_the_specs_sizes_checkpointing_and_restore_path() {
        let spec = launch_spec(
            &job(),
            3,
            &placement(),
            Some(Restore {
                path: "hdfs:///x/chk-9".into(),
                completed_at: None,
            }),
            None,
            4,
        )
        .unwrap();
        assert_eq!(spec.generation, 3);
        assert_eq!(spec.epoch, 4);
        assert_eq!(spec.task_slots, 2);
        assert_eq!(spec.checkpoint_interval_ms, 30_000);
        assert_eq!(spec.task_manager.cpu_milli, 2000);
        assert_eq!(spec.job_manager.memory_bytes, 2 << 30);
        assert_eq!(
            spec.flink_configuration["state.checkpoints.num-retained"],
            "3"
        );
        assert_eq!(spec.restore_from.as_deref(), Some("hdfs:///x/chk-9"));
        spec.validate_for(&SiteId("dc-a".into())).unwrap();
    }

    #[test]
    fn vertex_parallelism_reaches_the_launched_flink_configuration_as_flinks_overrides() {
        let mut job = job();
        job.spec.vertex_parallelism = [
            ("cbc357ccb763df2852fee8c4fc7d55f2".to_string(), 2),
            ("90bea66de1c231edf33913ecd54406c1".to_string(), 6),
        ]
        .into();
        let spec = launch_spec(&job, 1, &placement(), None, None, 0).unwrap();
        let expected = "90bea66de1c231edf33913ecd54406c1:6,cbc357ccb763df2852fee8c4fc7d55f2:2";
        assert_eq!(
            spec.flink_configuration["pipeline.jobvertex-parallelism-overrides"],
            expected
        );
        // The widest vertex sizes the TaskManagers placement gives the job.
        assert_eq!(job.demand().unwrap().task_managers, 3);
        // And the Kubernetes objects (FlinkDeployment and standalone) carry it.
        for mode in [
            crate::site::LaunchMode::FlinkDeployment,
            crate::site::LaunchMode::Standalone,
        ] {
            let config = crate::site::kube::KubeSiteConfig::new(SiteId("dc-a".into()), mode);
            let conf = crate::site::kube::flink_configuration(&spec, &config);
            assert_eq!(conf["pipeline.jobvertex-parallelism-overrides"], expected);
        }
        // Without per-vertex parallelism the key is absent, not empty.
        let plain = launch_spec(&self::job(), 1, &placement(), None, None, 0).unwrap();
        assert!(
            !plain
                .flink_configuration
                .contains_key("pipeline.jobvertex-parallelism-overrides")
        );
    }

    #[test]
    fn a_launch_carries_the_override_of_its_site_with_the_restore_time_expanded() {
        let mut job = job();
        job.spec.args = vec!["--brokers".into(), "kafka-default:9092".into()];
        job.spec.site_overrides.insert(
            "dc-a".into(),
            scheduler::input::SiteOverride {
                args: Some(vec![
                    "--brokers".into(),
                    "kafka-${site}:9092".into(),
                    "--from=${restore.completedAtEpochMillis:-0}".into(),
                ]),
                flink_configuration: [("pipeline.name".to_owned(), "orders@${site}".to_owned())]
                    .into(),
                env: [("START".to_owned(), "${restore.completedAt}".to_owned())].into(),
            },
        );
        let at = chrono::DateTime::from_timestamp_millis(1_796_466_662_123).unwrap();
        let restore = Restore {
            path: "hdfs:///x/chk-9".into(),
            completed_at: Some(at),
        };
        let spec = launch_spec(&job, 2, &placement(), Some(restore), None, 0).unwrap();
        assert_eq!(
            spec.args,
            ["--brokers", "kafka-dc-a:9092", "--from=1796466662123"]
        );
        assert_eq!(spec.flink_configuration["pipeline.name"], "orders@dc-a");
        assert_eq!(spec.env["START"], "2026-12-05T10:31:02.123Z");
        assert_eq!(spec.restore_from.as_deref(), Some("hdfs:///x/chk-9"));

        let fresh = launch_spec(&job, 1, &placement(), None, None, 0).unwrap();
        assert_eq!(fresh.args[2], "--from=0", "a fresh start takes the default");
        assert_eq!(fresh.env["START"], "");

        // The same job placed in dc-b, which it does not override, runs with its own args.
        let mut in_b = placement();
        in_b.site = SiteId("dc-b".into());
        let spec = launch_spec(&job, 3, &in_b, None, None, 0).unwrap();
        assert_eq!(spec.args, ["--brokers", "kafka-default:9092"]);
        assert!(spec.env.is_empty());
    }

    #[test]
    fn an_override_template_that_slipped_past_admission_fails_the_launch_naming_the_field() {
        let mut job = job();
        job.spec.site_overrides.insert(
            "dc-a".into(),
            scheduler::input::SiteOverride {
                args: Some(vec!["${nope}".into()]),
                ..Default::default()
            },
        );
        let error = launch_spec(&job, 1, &placement(), None, None, 0).unwrap_err();
        assert_eq!(error.field, "spec.siteOverrides.dc-a.args[0]");
        assert!(error.message.contains("unknown variable"), "{error}");
    }

    #[test]
    fn a_checkpoint_path_is_placed_in_the_sites_storage() {
        assert_eq!(
            in_site_storage("file:///data/dc-a/", "hdfs:///flink/x").unwrap(),
            "file:///data/dc-a/flink/x"
        );
        assert_eq!(
            in_site_storage("hdfs://ns-b", "hdfs://ns-a/flink/x").unwrap(),
            "hdfs://ns-b/flink/x"
        );
        assert_eq!(
            in_site_storage("file:///data/dc-a", "file:///data/dc-a/flink/x").unwrap(),
            "file:///data/dc-a/flink/x"
        );
        assert_eq!(
            in_site_storage("file:///data/dc-a", "file:/data/dc-a/flink/x").unwrap(),
            "file:///data/dc-a/flink/x",
            "Flink's own spelling of a local path"
        );
        let spec = launch_spec(&job(), 1, &placement(), None, Some("hdfs://ns-a/"), 0).unwrap();
        assert_eq!(
            spec.checkpoint_dir,
            "hdfs://ns-a/flink/checkpoints/shop/orders"
        );
    }

    #[test]
    fn a_path_that_climbs_out_of_the_sites_storage_is_refused_not_placed() {
        for uri in [
            "hdfs:///../../../../tmp/x",
            "hdfs:///flink/../../tmp/x",
            "file:///data/dc-a/../dc-b/flink/x",
            "file:/data/dc-a/../../etc",
        ] {
            let error = in_site_storage("file:///data/dc-a", uri).unwrap_err();
            assert!(error.contains(".."), "{uri}: {error}");
        }
        // A sibling directory whose name starts like the root is not inside it.
        assert_eq!(
            in_site_storage("file:///data/dc-a", "file:///data/dc-a-evil/x").unwrap(),
            "file:///data/dc-a/data/dc-a-evil/x"
        );
        let mut escaping = job();
        if let Some(c) = escaping.spec.checkpoints.as_mut() {
            c.dir = "hdfs:///../../../../tmp/x".into();
        }
        let error = launch_spec(
            &escaping,
            1,
            &placement(),
            None,
            Some("file:///data/dc-a"),
            0,
        )
        .unwrap_err();
        assert_eq!(error.field, "spec.checkpoints.dir");
    }

    #[test]
    fn the_spec_hash_changes_with_the_spec_and_only_then() {
        let a = job();
        let mut b = job();
        assert_eq!(spec_hash(&a).unwrap(), spec_hash(&b).unwrap());
        b.spec.parallelism = 6;
        assert_ne!(spec_hash(&a).unwrap(), spec_hash(&b).unwrap());
    }
}
