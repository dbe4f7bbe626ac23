//! The checks of a StreamJob field by field: names, image, jar and checkpoint locations,
//! parallelism, Flink options, placement. Every problem names its field; none is fatal alone.

use super::demand::demand;
use super::site_overrides::validate_site_overrides;
use super::spec::{FailoverTrigger, PlacementSpec, StreamJob, StreamJobSpec};
use super::{
    CHECKPOINT_SCHEMES, FLINK_MAX_PARALLELISM, JAR_SCHEMES, MAX_VERTEX_OVERRIDES,
    PARALLELISM_OVERRIDES_OPTION, RESERVED_NAMESPACE_PREFIX,
};
use crate::input::common::{
    check_contained_path, check_labels, check_name, check_uri, positive_duration,
};
use crate::input::error::Problems;
use crate::k8s::names::qualified_name_errors;
use crate::limits::{
    MAX_RETAINED_CHECKPOINTS, MAX_SLOTS_PER_TASK_MANAGER, MIN_CHECKPOINT_INTERVAL,
};

/// Flink options that the spec sets itself; writing them in `flinkConfiguration` as well
/// would let the two disagree, so each is refused with the field to use instead.
const OPTIONS_OWNED_BY_SPEC: [(&str, &str); 12] = [
    ("taskmanager.numberOfTaskSlots", "spec.taskManager.slots"),
    ("parallelism.default", "spec.parallelism"),
    (PARALLELISM_OVERRIDES_OPTION, "spec.vertexParallelism"),
    ("pipeline.max-parallelism", "spec.maxParallelism"),
    ("state.checkpoints.dir", "spec.checkpoints.dir"),
    ("execution.checkpointing.dir", "spec.checkpoints.dir"),
    (
        "execution.checkpointing.interval",
        "spec.checkpoints.interval",
    ),
    (
        "state.checkpoints.num-retained",
        "spec.checkpoints.retained",
    ),
    (
        "execution.checkpointing.num-retained",
        "spec.checkpoints.retained",
    ),
    ("state.backend.incremental", "spec.checkpoints.incremental"),
    (
        "execution.checkpointing.incremental",
        "spec.checkpoints.incremental",
    ),
    (
        "kubernetes.jobmanager.tolerations",
        "spec.placement.tolerations",
    ),
];

pub(super) fn validate(job: &StreamJob, problems: &mut Problems) {
    let meta = &job.metadata;
    check_name(problems, "metadata.name", &meta.name);
    check_name(problems, "metadata.namespace", &meta.namespace);
    if meta.namespace.starts_with(RESERVED_NAMESPACE_PREFIX) {
        problems.field(
            "metadata.namespace",
            format!(
                "{:?}: namespaces starting with {RESERVED_NAMESPACE_PREFIX:?} are reserved for Kubernetes' own system components",
                meta.namespace
            ),
        );
    }
    check_labels(problems, "metadata.labels", &meta.labels, true);
    check_labels(problems, "metadata.annotations", &meta.annotations, false);

    let spec = &job.spec;
    if let Some(tenant) = &spec.tenant {
        check_name(problems, "spec.tenant", tenant);
    }
    if spec.image.trim().is_empty() || spec.image.chars().any(char::is_whitespace) {
        problems.field(
            "spec.image",
            format!("{:?} is not a container image reference", spec.image),
        );
    }
    if !is_flink_version(&spec.flink_version) {
        problems.field(
            "spec.flinkVersion",
            format!(
                "{:?} is not a Flink version name: expected v<major>_<minor>, e.g. \"v1_20\" or \"v2_0\"",
                spec.flink_version
            ),
        );
    }
    if check_uri(
        problems,
        "spec.jarURI",
        &spec.jar_uri,
        &JAR_SCHEMES,
        "the jar must be in the image or on storage twinsite replicates",
        true,
    )
    .is_some()
    {
        check_contained_path(problems, "spec.jarURI", &spec.jar_uri);
    }
    if let Some(class) = &spec.entry_class
        && !is_java_class_name(class)
    {
        problems.field(
            "spec.entryClass",
            format!("{class:?} is not a Java class name (e.g. \"com.example.OrdersEnrich\")"),
        );
    }
    if spec.parallelism == 0 {
        problems.field("spec.parallelism", "must be at least 1, found 0");
    } else if spec.parallelism > FLINK_MAX_PARALLELISM {
        problems.field(
            "spec.parallelism",
            format!(
                "must be at most {FLINK_MAX_PARALLELISM} (Flink's bound), found {}",
                spec.parallelism
            ),
        );
    }
    if let Some(max) = spec.max_parallelism
        && (max < spec.parallelism || max > FLINK_MAX_PARALLELISM)
    {
        problems.field(
            "spec.maxParallelism",
            format!(
                "must be between parallelism ({}) and {FLINK_MAX_PARALLELISM}, found {max}",
                spec.parallelism
            ),
        );
    }
    if spec.task_manager.slots == 0 {
        problems.field("spec.taskManager.slots", "must be at least 1, found 0");
    } else if spec.task_manager.slots > MAX_SLOTS_PER_TASK_MANAGER {
        problems.field(
            "spec.taskManager.slots",
            format!(
                "must be at most {MAX_SLOTS_PER_TASK_MANAGER}, found {}",
                spec.task_manager.slots
            ),
        );
    }
    validate_placement(&spec.placement, problems);
    match &spec.checkpoints {
        Some(checkpoints) => {
            if check_uri(
                problems,
                "spec.checkpoints.dir",
                &checkpoints.dir,
                &CHECKPOINT_SCHEMES,
                "twinsite replicates checkpoints between the sites' storage",
                true,
            )
            .is_some()
            {
                check_contained_path(problems, "spec.checkpoints.dir", &checkpoints.dir);
            }
            if let Some(interval) =
                positive_duration(problems, "spec.checkpoints.interval", &checkpoints.interval)
                && interval < MIN_CHECKPOINT_INTERVAL
            {
                problems.field(
                    "spec.checkpoints.interval",
                    format!(
                        "must be at least {}ms (Flink's shortest checkpoint interval), found {:?}",
                        MIN_CHECKPOINT_INTERVAL.as_millis(),
                        checkpoints.interval
                    ),
                );
            }
            if checkpoints.retained == 0 {
                problems.field("spec.checkpoints.retained", "must be at least 1, found 0");
            } else if checkpoints.retained > MAX_RETAINED_CHECKPOINTS {
                problems.field(
                    "spec.checkpoints.retained",
                    format!(
                        "must be at most {MAX_RETAINED_CHECKPOINTS}, found {}",
                        checkpoints.retained
                    ),
                );
            }
        }
        None if spec.failover.mode != FailoverTrigger::None => problems.field(
            "spec.checkpoints",
            "required unless spec.failover.mode is none: a relaunch restores from the latest checkpoint",
        ),
        None => {}
    }
    for key in spec.flink_configuration.keys() {
        check_flink_option(problems, "spec.flinkConfiguration", key);
    }
    validate_vertex_parallelism(spec, problems);
    validate_site_overrides(spec, problems);
    // Resources, plan and the TaskManager count, exactly as `demand()` computes them.
    let _ = demand(job, problems);
}

/// The most a vertex may run with: `spec.maxParallelism`, or Flink's default rule for
/// `spec.parallelism` (`KeyGroupRangeAssignment.computeDefaultMaxParallelism`), which is
/// what a job restored from its checkpoints keeps when none was set.
pub fn effective_max_parallelism(spec: &StreamJobSpec) -> u32 {
    spec.max_parallelism
        .unwrap_or_else(|| crate::report::assemble::default_max_parallelism(spec.parallelism))
}

fn validate_vertex_parallelism(spec: &StreamJobSpec, problems: &mut Problems) {
    let overrides = &spec.vertex_parallelism;
    if overrides.len() > MAX_VERTEX_OVERRIDES {
        problems.field(
            "spec.vertexParallelism",
            format!(
                "{} vertices, more than the {MAX_VERTEX_OVERRIDES} a job may list",
                overrides.len()
            ),
        );
        return;
    }
    let max = effective_max_parallelism(spec);
    for (id, parallelism) in overrides {
        let at = format!("spec.vertexParallelism[{id:?}]");
        // Flink looks overrides up by `JobVertexID.toHexString()`: any other spelling would
        // be silently ignored.
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            problems.field(
                at,
                "not a Flink job vertex id: 32 lowercase hex digits, as the REST API prints it",
            );
        } else if *parallelism == 0 || *parallelism > max {
            problems.field(
                at,
                format!(
                    "must be between 1 and the job's max parallelism {max}, found {parallelism}"
                ),
            );
        }
    }
}

pub(super) fn check_flink_option(problems: &mut Problems, map: &str, key: &str) {
    let at = format!("{map}[{key:?}]");
    if key.trim().is_empty() {
        problems.field(at, "empty option name");
    } else if let Some((_, field)) = OPTIONS_OWNED_BY_SPEC.iter().find(|(k, _)| *k == key) {
        problems.field(
            at,
            format!("set by twinsite from {field}; write it there instead"),
        );
    }
}

fn validate_placement(placement: &PlacementSpec, problems: &mut Problems) {
    let sites = &placement.sites;
    for (i, site) in sites.allowed.iter().enumerate() {
        check_name(
            problems,
            &format!("spec.placement.sites.allowed[{i}]"),
            site,
        );
        if sites.allowed[..i].contains(site) {
            problems.field(
                format!("spec.placement.sites.allowed[{i}]"),
                format!("site {site:?} is listed twice"),
            );
        }
    }
    if let Some(preferred) = &sites.preferred {
        check_name(problems, "spec.placement.sites.preferred", preferred);
        if !sites.allowed.is_empty() && !sites.allowed.contains(preferred) {
            problems.field(
                "spec.placement.sites.preferred",
                format!("site {preferred:?} is not in spec.placement.sites.allowed"),
            );
        }
    }
    check_labels(
        problems,
        "spec.placement.nodeSelector",
        &placement.node_selector,
        true,
    );
    if let Some(affinity) = placement
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        && let Err(error) = affinity.validate()
    {
        problems.field(
            format!("spec.placement.affinity.nodeAffinity.{}", error.field),
            error.message,
        );
    }
    for (i, toleration) in placement.tolerations.iter().enumerate() {
        let at = format!("spec.placement.tolerations[{i}]");
        if !toleration.key.is_empty() {
            for error in qualified_name_errors(&toleration.key) {
                problems.field(
                    format!("{at}.key"),
                    format!("{:?}: {error}", toleration.key),
                );
            }
        }
        if let Err(error) = toleration.validate() {
            problems.field(format!("{at}.{}", error.field), error.message);
        }
    }
}

fn is_flink_version(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = rest.split_once('_') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

fn is_java_class_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}
