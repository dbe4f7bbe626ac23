//! Policy YAML: the shipped files parse; every documented mistake is reported with the file
//! and the field path.

use scheduler::input::policy::LaunchMode;
use scheduler::input::{Policy, parse_policy};
use scheduler::model::{LendBasis, Priority, SiteId};

const MINIMAL: &str = include_str!("../../policies/minimal.yaml");
const TWO_SITES: &str = include_str!("../../policies/example-two-sites.yaml");
const DAYTIME: &str = include_str!("../../policies/example-daytime-lending.yaml");

fn error_of(yaml: &str) -> String {
    parse_policy("policy.yaml", yaml).unwrap_err().to_string()
}

#[test]
fn every_shipped_policy_parses() {
    for (name, text) in [
        ("minimal.yaml", MINIMAL),
        ("example-two-sites.yaml", TWO_SITES),
        ("example-daytime-lending.yaml", DAYTIME),
    ] {
        let policy = parse_policy(name, text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            policy.site_ids(),
            vec![SiteId("dc-a".into()), SiteId("dc-b".into())]
        );
    }
}

#[test]
fn the_minimal_policy_is_the_default_policy() {
    assert_eq!(
        parse_policy("minimal.yaml", MINIMAL).unwrap(),
        Policy::default_two_sites()
    );
}

#[test]
fn the_two_site_example_resolves_pools_quotas_and_reserves() {
    let policy = parse_policy("example-two-sites.yaml", TWO_SITES).unwrap();
    let placement = policy.placement_policy();
    assert_eq!(placement.pools.len(), 3);
    let offline = placement.pools[2].offline.as_ref().unwrap();
    assert_eq!(offline.windows.len(), 2);
    assert_eq!(offline.windows[0].start_minute, 60);
    assert_eq!(offline.windows[0].end_minute, 7 * 60);
    assert_eq!(offline.windows[0].timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(offline.safety_margin.cpu_milli, 2000);
    assert_eq!(offline.safety_margin.memory_bytes, 8 << 30);
    assert_eq!(placement.quotas[0].limit.cpu_milli, 400_000);
    assert_eq!(
        placement.quotas[2].limit.pods,
        i64::MAX,
        "no pod limit given"
    );
    assert_eq!(placement.reserves[1].min_priority, Priority::High);
    assert_eq!(placement.pools[1].site, Some(SiteId("dc-a".into())));
    assert_eq!(
        policy.file().sites[1]
            .kubernetes
            .as_ref()
            .unwrap()
            .launch_mode,
        LaunchMode::Standalone
    );
    assert_eq!(
        policy.replication().bandwidth_bytes_per_second,
        Some(200 << 20)
    );
    assert_eq!(policy.detection().pod_eviction_timeout.as_secs(), 20);
    assert!(policy.tier(Priority::Critical).preempts);
    assert!(!policy.tier(Priority::BestEffort).preempts);
}

#[test]
fn a_policy_written_back_parses_to_the_same_policy() {
    let policy = parse_policy("example-two-sites.yaml", TWO_SITES).unwrap();
    let again = parse_policy("again.yaml", &policy.to_yaml().unwrap()).unwrap();
    assert_eq!(again, policy);
}

#[test]
fn a_misspelt_timezone_names_the_window() {
    let message = error_of(&TWO_SITES.replace(
        "timezone: Asia/Shanghai}\n        - {days: [Sat",
        "timezone: Asia/Shangai}\n        - {days: [Sat",
    ));
    assert!(
        message.contains(
            "policy.yaml: pools[2].offline.windows[0].timezone: unknown timezone \"Asia/Shangai\""
        ),
        "{message}"
    );
}

#[test]
fn a_bad_window_names_day_and_time_fields() {
    let message = error_of(&TWO_SITES.replace(
        "[Mon, Tue, Wed, Thu, Fri], start: \"01:00\"",
        "[Mon, Tuesday, Fry], start: \"25:00\"",
    ));
    assert!(
        message.contains("pools[2].offline.windows[0].days[2]: unknown day \"Fry\""),
        "{message}"
    );
    assert!(
        message.contains("pools[2].offline.windows[0].start: \"25:00\" is not a time of day"),
        "{message}"
    );
    assert!(
        !message.contains("days[1]"),
        "full day names are accepted: {message}"
    );
}

#[test]
fn an_empty_window_is_refused() {
    let message = error_of(&TWO_SITES.replace("end: \"07:00\"", "end: \"01:00\""));
    assert!(
        message.contains("pools[2].offline.windows[0].end: the window 01:00–01:00 is empty"),
        "{message}"
    );
}

#[test]
fn the_daytime_example_lends_by_usage_in_working_hours_only() {
    let policy = parse_policy("example-daytime-lending.yaml", DAYTIME).unwrap();
    let placement = policy.placement_policy();
    let lending = placement.pools[1]
        .offline
        .as_ref()
        .expect("an offline pool");
    assert_eq!(lending.lend_by, LendBasis::Usage);
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // Asia/Shanghai is UTC+8: Tuesday 10:00 local is 02:00 UTC; 23:00 local is 15:00 UTC.
    assert!(lending.is_open_at(at("2026-12-01T02:00:00Z")));
    assert!(
        !lending.is_open_at(at("2026-12-01T15:00:00Z")),
        "the batch owns the night"
    );
    assert!(
        !lending.is_open_at(at("2026-12-05T02:00:00Z")),
        "nor is Saturday lent"
    );
    let night = parse_policy("example-two-sites.yaml", TWO_SITES).unwrap();
    let night = night.placement_policy();
    assert_eq!(
        night.pools[2].offline.as_ref().unwrap().lend_by,
        LendBasis::Requests,
        "lending by requests stays the default"
    );
}

#[test]
fn a_lend_basis_other_than_requests_or_usage_is_refused_naming_the_field() {
    let message = error_of(&DAYTIME.replace("lendBy: usage", "lendBy: measured"));
    assert!(
        message.contains("pools[1].offline.lendBy") && message.contains("measured"),
        "{message}"
    );
}

#[test]
fn a_borrow_fraction_above_one_is_refused() {
    let message = error_of(&TWO_SITES.replace("maxBorrowFraction: 0.5", "maxBorrowFraction: 1.5"));
    assert!(
        message.contains(
            "policy.yaml: pools[2].offline.maxBorrowFraction: must be between 0 and 1, found 1.5"
        ),
        "{message}"
    );
}

#[test]
fn a_quota_for_an_unknown_site_names_the_quota() {
    let message =
        error_of(&TWO_SITES.replace("{tenant: growth, site: dc-b", "{tenant: growth, site: dc-c"));
    assert!(
        message.contains(
            "policy.yaml: quotas[3].site: unknown site \"dc-c\"; sites are \"dc-a\", \"dc-b\""
        ),
        "{message}"
    );
}

#[test]
fn a_quota_with_a_bad_quantity_names_the_quota_field() {
    let message = error_of(&TWO_SITES.replace(
        "memory: 800Gi}\n  - {tenant: growth, site: dc-b",
        "memory: lots}\n  - {tenant: growth, site: dc-b",
    ));
    assert!(
        message.contains("policy.yaml: quotas[2].memory: quantities must match"),
        "{message}"
    );
}

#[test]
fn an_unknown_field_is_refused_with_its_path() {
    let message = error_of(&TWO_SITES.replace(
        "maxBorrowFraction: 0.5",
        "maxBorrowFraction: 0.5\n      maxBorowFraction: 0.5",
    ));
    assert!(
        message.contains(
            "policy.yaml: pools[2].offline.maxBorowFraction: unknown field `maxBorowFraction`"
        ),
        "{message}"
    );
}

#[test]
fn an_unknown_priority_tier_is_refused() {
    let message = error_of(&TWO_SITES.replace(
        "  normal: {preemptible: true}",
        "  urgent: {preemptible: true}",
    ));
    assert!(
        message.contains("priorities.urgent: unknown field `urgent`"),
        "{message}"
    );
}

#[test]
fn duplicate_sites_and_self_reserves_are_refused() {
    let yaml = "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}, {name: dc-a}]\nfailoverReserve: [{site: dc-a, protects: dc-a}]\n";
    let message = error_of(yaml);
    assert!(
        message.contains("policy.yaml: sites[1].name: site \"dc-a\" is defined twice"),
        "{message}"
    );
    assert!(message.contains("policy.yaml: failoverReserve[0].protects: a site cannot keep a reserve for its own loss"), "{message}");
}

#[test]
fn hdfs_storage_must_name_its_nameservice() {
    let message = error_of(&TWO_SITES.replace("hdfs://nameservice-a/", "hdfs:///"));
    assert!(
        message.contains("sites[0].storage: \"hdfs:///\" names no NameNode or nameservice"),
        "{message}"
    );
}

/// Issue #18: one source of truth for failure detection. The controller judges nodes and
/// sites by its configuration's `failover.*`; the policy's old detection fields, never
/// read, are refused, naming the field that does the work.
#[test]
fn detection_thresholds_in_the_policy_are_refused_naming_the_controller_field_that_is_read() {
    for (written, field, instead) in [
        (
            "nodeGrace: 40s",
            "detection.nodeGrace",
            "failover.nodeGrace",
        ),
        (
            "siteGrace: 30s",
            "detection.siteGrace",
            "failover.siteGrace",
        ),
        (
            "flinkRecoveryGrace: 2m",
            "detection.flinkRecoveryGrace",
            "failover.taskManagerRecoveryBound",
        ),
        (
            "probeInterval: 5s",
            "detection.probeInterval",
            "reconcile.interval",
        ),
    ] {
        let message =
            error_of(&TWO_SITES.replace("detection:\n", &format!("detection:\n  {written}\n")));
        assert!(
            message.contains(&format!("{field}: "))
                && message.contains(&format!("set {instead} in the controller configuration")),
            "{written}: {message}"
        );
    }
}

#[test]
fn the_pod_eviction_timeout_defaults_to_thirty_seconds() {
    let policy = parse_policy("minimal.yaml", MINIMAL).unwrap();
    assert_eq!(
        policy.detection().pod_eviction_timeout,
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn a_pod_eviction_timeout_must_be_whole_seconds_up_to_kubernetes_own_five_minutes() {
    for (value, expected) in [
        (
            "1500ms",
            "detection.podEvictionTimeout: \"1500ms\" must be whole seconds",
        ),
        (
            "6m",
            "detection.podEvictionTimeout: \"6m\" is longer than Kubernetes' own default of 5m",
        ),
        ("0s", "detection.podEvictionTimeout"),
        ("soon", "detection.podEvictionTimeout"),
    ] {
        let message = error_of(&TWO_SITES.replace(
            "podEvictionTimeout: 20s",
            &format!("podEvictionTimeout: {value}"),
        ));
        assert!(message.contains(expected), "{value}: {message}");
    }
    let policy = parse_policy(
        "policy.yaml",
        &TWO_SITES.replace("podEvictionTimeout: 20s", "podEvictionTimeout: 5m"),
    )
    .unwrap();
    assert_eq!(policy.detection().pod_eviction_timeout.as_secs(), 300);
}

#[test]
fn a_job_file_given_as_policy_is_named_by_kind() {
    let message =
        error_of("apiVersion: twinsite.io/v1alpha1\nkind: StreamJob\nmetadata: {name: x}\n");
    assert_eq!(
        message,
        "policy.yaml: kind: expected \"Policy\", found \"StreamJob\""
    );
}

#[test]
fn a_job_naming_a_site_the_policy_lacks_is_reported_against_the_job_file() {
    let jobs =
        scheduler::input::parse_stream_jobs("jobs.yaml", include_str!("fixtures/input/jobs.yaml"))
            .unwrap();
    let policy = Policy::default_two_sites();
    assert!(policy.check_jobs("jobs.yaml", &jobs).is_ok());
    let mut moved = jobs.clone();
    moved[0].spec.placement.sites.allowed[1] = "dc-c".to_string();
    let message = policy
        .check_jobs("jobs.yaml", &moved)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "jobs.yaml: trade/orders-enrich: spec.placement.sites.allowed[1]: unknown site \"dc-c\"; the policy's sites are \"dc-a\", \"dc-b\""
    );
}

#[test]
fn redaction_patterns_are_kept_and_bad_ones_are_named() {
    let policy = parse_policy("example-two-sites.yaml", TWO_SITES).unwrap();
    assert_eq!(
        policy.redaction_keys(),
        ["fs.oss.accessKeyId", "*.credentials.*"]
    );
    let message = error_of(&TWO_SITES.replace(
        "keys: [fs.oss.accessKeyId, \"*.credentials.*\"]",
        "keys: [\"has space\", \"\", ok]",
    ));
    assert!(
        message.contains("policy.yaml: redaction.keys[0]: ' ' is not allowed"),
        "{message}"
    );
    assert!(
        message.contains("policy.yaml: redaction.keys[1]: must be 1 to 253 characters, found 0"),
        "{message}"
    );
    let many = (0..65)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = error_of(&TWO_SITES.replace(
        "keys: [fs.oss.accessKeyId, \"*.credentials.*\"]",
        &format!("keys: [{many}]"),
    ));
    assert!(
        message.contains("redaction.keys: at most 64 patterns, found 65"),
        "{message}"
    );
}

#[test]
fn diagnosis_thresholds_default_and_are_read_from_the_policy() {
    assert_eq!(
        Policy::default_two_sites().diagnosis(),
        scheduler::diagnosis::Thresholds::default()
    );
    let policy = parse_policy(
        "policy.yaml",
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}]\n\
         diagnosis: {window: 30m, backpressureMsPerSecond: 300, restarts: 2}\n",
    )
    .unwrap();
    let thresholds = policy.diagnosis();
    assert_eq!(thresholds.window.as_secs(), 1800);
    assert_eq!(thresholds.backpressure_ms_per_second, 300.0);
    assert_eq!(thresholds.restarts, 2);
    assert_eq!(
        thresholds.busy_ms_per_second, 900.0,
        "others keep their default"
    );
    let again = parse_policy("again.yaml", &policy.to_yaml().unwrap()).unwrap();
    assert_eq!(again, policy);
}

#[test]
fn a_bad_diagnosis_threshold_is_named_by_its_field() {
    let error = error_of(
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}]\n\
         diagnosis: {window: 0s, busyMsPerSecond: 1200, restarts: 0, skewRatio: 0.5}\n",
    );
    for field in [
        "diagnosis.window",
        "diagnosis.busyMsPerSecond",
        "diagnosis.restarts",
        "diagnosis.skewRatio",
    ] {
        assert!(error.contains(field), "{field} missing from: {error}");
    }
    let error = error_of(
        "apiVersion: twinsite.io/v1alpha1\nkind: Policy\nsites: [{name: dc-a}]\n\
         diagnosis: {windw: 1h}\n",
    );
    assert!(error.contains("diagnosis.windw"), "{error}");
}

#[test]
fn the_rebalance_lead_time_and_budget_default_and_are_read_from_the_policy() {
    let minimal = parse_policy("minimal.yaml", MINIMAL).unwrap();
    assert_eq!(
        minimal.rebalance(),
        scheduler::model::RebalancePolicy {
            lead_time: std::time::Duration::from_secs(600),
            moves_per_hour: 360,
        }
    );
    let example = parse_policy("example-two-sites.yaml", TWO_SITES).unwrap();
    assert_eq!(example.rebalance().lead_time.as_secs(), 15 * 60);
    assert_eq!(example.rebalance().moves_per_hour, 240);
}

#[test]
fn a_bad_rebalance_lead_time_or_budget_is_named_by_its_field() {
    for (from, to, expected) in [
        (
            "leadTime: 15m",
            "leadTime: 13h",
            "rebalance.leadTime: \"13h\" is longer than 12h",
        ),
        ("leadTime: 15m", "leadTime: 0s", "rebalance.leadTime"),
        ("leadTime: 15m", "leadTime: soon", "rebalance.leadTime"),
        (
            "movesPerHour: 240",
            "movesPerHour: 0",
            "rebalance.movesPerHour: must be 1 to 3600, found 0",
        ),
        (
            "movesPerHour: 240",
            "movesPerHour: 3601",
            "rebalance.movesPerHour: must be 1 to 3600, found 3601",
        ),
        (
            "movesPerHour: 240",
            "movesPerHour: -1",
            "rebalance.movesPerHour",
        ),
        ("movesPerHour: 240", "movesPerHuor: 2", "movesPerHuor"),
    ] {
        let message = error_of(&TWO_SITES.replace(from, to));
        assert!(message.contains(expected), "{to}: {message}");
    }
}

#[test]
fn problems_in_several_sections_are_reported_in_the_order_the_file_lists_the_sections() {
    let message = error_of(
        "apiVersion: twinsite.io/v1alpha1
kind: Policy
sites:
  - {name: dc-a}
  - {name: dc-a}
pools:
  - {name: night, site: dc-z, selector: {pool: night}}
quotas:
  - {tenant: trade, site: dc-y, cpu: '10', memory: 10Gi}
failoverReserve:
  - {site: dc-a, protects: dc-a}
detection:
  nodeGrace: 40s
replication:
  parallelCopies: 0
redaction:
  keys: ['has space']
rebalance:
  movesPerHour: 0
",
    );
    let fields = [
        "sites[1].name",
        "pools[0].site",
        "quotas[0].site",
        "failoverReserve[0].protects",
        "detection.nodeGrace",
        "replication.parallelCopies",
        "redaction.keys[0]",
        "rebalance.movesPerHour",
    ];
    let positions: Vec<usize> = fields
        .iter()
        .map(|field| {
            message
                .find(&format!("policy.yaml: {field}: "))
                .unwrap_or_else(|| panic!("{field} is not reported: {message}"))
        })
        .collect();
    assert!(
        positions.is_sorted(),
        "sections reported out of file order: {message}"
    );
}
