//! Per-site overrides of a StreamJob (`spec.siteOverrides`): what a launch in one site runs
//! with, checked at admission like every other field, and the template syntax their values
//! use, as properties.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use scheduler::input::template::{self, TemplateError};
use scheduler::input::{Policy, StreamJob, TemplateValues, parse_stream_jobs};

fn job_yaml(overrides: &str) -> String {
    format!(
        "apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: orders-enrich, namespace: trade}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  args: [--topic, orders]
  parallelism: 4
  jobManager: {{resources: {{cpu: '1', memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: '2', memory: 4Gi}}, slots: 2}}
  checkpoints: {{dir: hdfs:///flink/checkpoints/orders}}
  flinkConfiguration: {{state.backend.type: rocksdb, pipeline.name: orders}}
{overrides}"
    )
}

const KAFKA_PER_SITE: &str = "  siteOverrides:
    dc-a:
      args: [--brokers, kafka-a:9092, --start, '${restore.completedAt:-earliest}']
      flinkConfiguration: {pipeline.name: 'orders in ${site}', rest.port: 8081}
      env: {KAFKA_BOOTSTRAP: 'kafka-${site}:9092', START_MS: '${restore.completedAtEpochMillis}'}
    dc-b:
      env: {KAFKA_BOOTSTRAP: 'kafka-b:9092'}
";

fn job(overrides: &str) -> StreamJob {
    parse_stream_jobs("jobs.yaml", &job_yaml(overrides))
        .unwrap()
        .remove(0)
}

fn error_of(overrides: &str) -> String {
    parse_stream_jobs("jobs.yaml", &job_yaml(overrides))
        .unwrap_err()
        .to_string()
}

fn restored_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 31, 2).unwrap()
}

fn values(site: &str, restore: Option<DateTime<Utc>>) -> TemplateValues {
    TemplateValues {
        site: site.into(),
        restore_completed_at: restore,
    }
}

#[test]
fn a_site_override_replaces_args_merges_flink_options_and_sets_env_in_that_site_only() {
    let job = job(KAFKA_PER_SITE);
    let in_a = job
        .spec
        .settings_in(&values("dc-a", Some(restored_at())))
        .unwrap();
    assert_eq!(
        in_a.args,
        [
            "--brokers",
            "kafka-a:9092",
            "--start",
            "2026-12-05T10:31:02.000Z"
        ]
    );
    assert_eq!(in_a.flink_configuration["pipeline.name"], "orders in dc-a");
    assert_eq!(in_a.flink_configuration["rest.port"], "8081");
    assert_eq!(
        in_a.flink_configuration["state.backend.type"], "rocksdb",
        "the job's own options stay"
    );
    assert_eq!(in_a.env["KAFKA_BOOTSTRAP"], "kafka-dc-a:9092");
    assert_eq!(
        in_a.env["START_MS"],
        restored_at().timestamp_millis().to_string()
    );

    let in_b = job.spec.settings_in(&values("dc-b", None)).unwrap();
    assert_eq!(in_b.args, ["--topic", "orders"], "no args override in dc-b");
    assert_eq!(in_b.flink_configuration["pipeline.name"], "orders");
    assert_eq!(in_b.env.len(), 1);

    let elsewhere = job.spec.settings_in(&values("dc-c", None)).unwrap();
    assert_eq!(elsewhere.args, ["--topic", "orders"]);
    assert!(elsewhere.env.is_empty());
}

#[test]
fn a_fresh_start_expands_the_restore_time_to_its_default() {
    let job = job(KAFKA_PER_SITE);
    let fresh = job.spec.settings_in(&values("dc-a", None)).unwrap();
    assert_eq!(fresh.args[3], "earliest");
    assert_eq!(fresh.env["START_MS"], "", "no default: nothing");
}

#[test]
fn an_empty_args_override_runs_without_arguments() {
    let job = job("  siteOverrides: {dc-a: {args: []}}\n");
    assert!(
        job.spec
            .settings_in(&values("dc-a", None))
            .unwrap()
            .args
            .is_empty()
    );
}

#[test]
fn an_unknown_template_variable_is_refused_naming_the_field_and_the_known_ones() {
    let error = error_of("  siteOverrides: {dc-a: {args: ['--from=${restore.time}']}}\n");
    assert!(
        error.contains("spec.siteOverrides.dc-a.args[0]")
            && error.contains("unknown variable \"restore.time\"")
            && error.contains("${restore.completedAt}"),
        "{error}"
    );
    let error = error_of("  siteOverrides: {dc-b: {env: {X: 'kafka-${site'}}}\n");
    assert!(
        error.contains("spec.siteOverrides.dc-b.env[\"X\"]") && error.contains("no closing"),
        "{error}"
    );
    let error = error_of("  siteOverrides: {dc-b: {flinkConfiguration: {a.b: '${}'}}}\n");
    assert!(
        error.contains("spec.siteOverrides.dc-b.flinkConfiguration[\"a.b\"]"),
        "{error}"
    );
}

#[test]
fn an_override_may_not_set_what_the_spec_owns_nor_reserved_or_malformed_env_names() {
    let error = error_of(
        "  siteOverrides: {dc-a: {flinkConfiguration: {state.checkpoints.dir: 'hdfs:///x'}}}\n",
    );
    assert!(
        error.contains("spec.siteOverrides.dc-a.flinkConfiguration[\"state.checkpoints.dir\"]")
            && error.contains("spec.checkpoints.dir"),
        "{error}"
    );
    for name in [
        "FLINK_PROPERTIES",
        "TWINSITE_FLINK_JOB_ID",
        "FLINK_CONF_DIR",
    ] {
        let error = error_of(&format!(
            "  siteOverrides: {{dc-a: {{env: {{{name}: x}}}}}}\n"
        ));
        assert!(
            error.contains(&format!("spec.siteOverrides.dc-a.env[\"{name}\"]"))
                && error.contains("set by twinsite"),
            "{name}: {error}"
        );
    }
    for name in ["1ABC", "A=B", "A B", "\"\""] {
        let error = error_of(&format!(
            "  siteOverrides: {{dc-a: {{env: {{'{name}': x}}}}}}\n"
        ));
        assert!(
            error.contains("not an environment variable name"),
            "{name}: {error}"
        );
    }
    // Kubernetes' rule allows dots and dashes.
    job("  siteOverrides: {dc-a: {env: {kafka.bootstrap-servers: x, _X1: y}}}\n");
}

#[test]
fn an_override_for_a_site_name_that_is_not_a_name_or_too_many_sites_is_refused() {
    let error = error_of("  siteOverrides: {DC_A: {args: []}}\n");
    assert!(error.contains("spec.siteOverrides[\"DC_A\"]"), "{error}");
    let many: String = (0..17)
        .map(|i| format!("    site-{i}: {{args: []}}\n"))
        .collect();
    let error = error_of(&format!("  siteOverrides:\n{many}"));
    assert!(
        error.contains("spec.siteOverrides") && error.contains("more than the 16"),
        "{error}"
    );
}

#[test]
fn an_override_for_a_site_the_policy_does_not_have_is_refused_by_the_policy_check() {
    let policy = Policy::default_two_sites();
    let ok = job(KAFKA_PER_SITE);
    policy.check_jobs("jobs.yaml", &[ok]).unwrap();
    let stray = job("  siteOverrides: {dc-z: {args: []}}\n");
    let error = policy
        .check_jobs("jobs.yaml", &[stray])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("spec.siteOverrides[\"dc-z\"]") && error.contains("unknown site \"dc-z\""),
        "{error}"
    );
}

#[test]
fn overrides_survive_a_round_trip_through_yaml() {
    let jobs = vec![job(KAFKA_PER_SITE)];
    let yaml = scheduler::input::streamjob::stream_jobs_to_yaml(&jobs).unwrap();
    assert_eq!(parse_stream_jobs("again.yaml", &yaml).unwrap(), jobs);
}

// --- the template syntax, as properties ----------------------------------------------------

fn any_values() -> impl Strategy<Value = TemplateValues> {
    (
        "[a-z][a-z0-9-]{0,20}",
        proptest::option::of(0i64..4_102_444_800_000),
    )
        .prop_map(|(site, millis)| TemplateValues {
            site,
            restore_completed_at: millis.and_then(DateTime::from_timestamp_millis),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Text without a `$` is never changed: ordinary values need no escaping.
    #[test]
    fn text_without_a_dollar_expands_to_itself(text in "[^$]*", values in any_values()) {
        prop_assert_eq!(template::expand(&text, &values).unwrap(), text);
    }

    /// `escape` makes any text literal, whatever `$`, `{` or `}` it holds.
    #[test]
    fn escaped_text_expands_to_itself(text in ".*", values in any_values()) {
        prop_assert_eq!(template::expand(&template::escape(&text), &values).unwrap(), text);
    }

    /// Variables placed between literal pieces expand to their values, in place.
    #[test]
    fn each_variable_expands_in_place(
        pieces in proptest::collection::vec((".*", 0usize..4), 0..6),
        values in any_values(),
    ) {
        let mut template = String::new();
        let mut expected = String::new();
        for (text, which) in &pieces {
            template.push_str(&template::escape(text));
            expected.push_str(text);
            let (name, value) = match which {
                0 => ("site", Some(values.site.clone())),
                1 => ("restore.completedAt", values.restore_completed_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
                2 => ("restore.completedAtEpochMillis", values.restore_completed_at.map(|t| t.timestamp_millis().to_string())),
                _ => continue,
            };
            template.push_str(&format!("${{{name}:-fresh}}"));
            expected.push_str(&value.unwrap_or_else(|| "fresh".into()));
        }
        prop_assert_eq!(template::expand(&template, &values).unwrap(), expected);
    }

    /// Checking and expanding agree: whatever admission accepts, a launch can expand, and
    /// nothing panics on arbitrary input.
    #[test]
    fn check_and_expand_agree_on_any_text(text in "([^$]|\\$|\\$\\{|\\}|site|restore\\.completedAt|:-)*", values in any_values()) {
        let checked = template::check(&text);
        let expanded = template::expand(&text, &values);
        prop_assert_eq!(checked.is_ok(), expanded.is_ok());
        if let Err(error) = checked {
            let at = match error {
                TemplateError::Unterminated { at } | TemplateError::Empty { at } | TemplateError::Unknown { at, .. } => at,
            };
            prop_assert_eq!(text.as_bytes()[at], b'$', "the error points at a `$`");
        }
    }

    /// The restore time is RFC 3339 and reads back as the same instant (to the millisecond).
    #[test]
    fn the_restore_time_reads_back_as_the_same_instant(millis in 0i64..4_102_444_800_000) {
        let at = DateTime::from_timestamp_millis(millis).unwrap();
        let values = TemplateValues { site: "dc-a".into(), restore_completed_at: Some(at) };
        let text = template::expand("${restore.completedAt}", &values).unwrap();
        prop_assert_eq!(DateTime::parse_from_rfc3339(&text).unwrap().with_timezone(&Utc), at);
        let millis_text = template::expand("${restore.completedAtEpochMillis}", &values).unwrap();
        prop_assert_eq!(millis_text.parse::<i64>().unwrap(), millis);
    }
}
