//! Planned elasticity (policy `scaleProfiles`): a profile scales exactly the jobs it covers,
//! only inside its window, within Flink's bounds; every mistake in the section names its
//! field.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use scheduler::input::{StreamJob, parse_policy, parse_stream_jobs};

const TWO_SITES: &str = include_str!("../../policies/example-two-sites.yaml");

const SALE_DAY: &str = "
scaleProfiles:
  - name: double-11
    from: 2026-11-11T00:00:00+08:00
    until: 2026-11-12T02:00:00+08:00
    parallelismFactor: 2.5
    tenants: [trade]
  - name: double-11-search
    from: 2026-11-10T20:00:00+08:00
    until: 2026-11-12T00:00:00+08:00
    parallelismFactor: 3
    jobs: [growth/search-rank]
  - name: warm-up-week
    from: 2026-11-04T00:00:00+08:00
    until: 2026-11-11T00:00:00+08:00
    parallelismFactor: 1.5
";

fn job(
    namespace: &str,
    name: &str,
    parallelism: u32,
    max: Option<u32>,
    vertices: &str,
) -> StreamJob {
    let max = max
        .map(|m| format!("  maxParallelism: {m}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/x.jar
  parallelism: {parallelism}
{max}{vertices}  jobManager: {{resources: {{cpu: '1', memory: 2Gi}}}}
  taskManager: {{resources: {{cpu: '2', memory: 4Gi}}, slots: 2}}
  checkpoints: {{dir: hdfs:///flink/checkpoints/{name}}}
"
    );
    parse_stream_jobs("jobs.yaml", &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn policy() -> scheduler::input::Policy {
    parse_policy("policy.yaml", &format!("{TWO_SITES}{SALE_DAY}")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_tenants_jobs_run_scaled_only_inside_the_window() {
    let policy = policy();
    let profiles = policy.scale_profiles();
    let orders = job("trade", "orders", 4, None, "");
    let (before, none) = profiles.effective(&orders, at("2026-11-03T23:59:59+08:00"));
    assert!(none.is_none());
    assert_eq!(before.spec.parallelism, 4);
    let (during, profile) = profiles.effective(&orders, at("2026-11-11T12:00:00+08:00"));
    assert_eq!(profile.map(|p| p.name.as_str()), Some("double-11"));
    assert_eq!(during.spec.parallelism, 10, "4 × 2.5");
    assert_eq!(
        during.demand().unwrap().task_managers,
        5,
        "10 slots at 2 a TaskManager"
    );
    let (after, none) = profiles.effective(&orders, at("2026-11-12T02:00:00+08:00"));
    assert!(none.is_none(), "until is exclusive");
    assert_eq!(after, orders, "the job is back to its own spec");
}

#[test]
fn of_overlapping_profiles_the_largest_factor_holds() {
    let profiles = policy();
    let profiles = profiles.scale_profiles();
    let orders = job("trade", "orders", 4, None, "");
    // Warm-up week (1.5, every job) and the sale day (2.5, trade) do not overlap at 23:00 on
    // the 10th: warm-up holds.
    let (_, p) = profiles.effective(&orders, at("2026-11-10T23:00:00+08:00"));
    assert_eq!(p.unwrap().name, "warm-up-week");
    let search = job("growth", "search-rank", 3, None, "");
    let (scaled, p) = profiles.effective(&search, at("2026-11-10T23:00:00+08:00"));
    assert_eq!(
        p.unwrap().name,
        "double-11-search",
        "3 beats the warm-up's 1.5"
    );
    assert_eq!(scaled.spec.parallelism, 9);
    let other = job("growth", "feeds", 3, None, "");
    let (scaled, p) = profiles.effective(&other, at("2026-11-11T12:00:00+08:00"));
    assert!(
        p.is_none(),
        "neither its tenant nor its name is covered then"
    );
    assert_eq!(scaled.spec.parallelism, 3);
}

#[test]
fn scaling_stops_at_max_parallelism_and_scales_each_vertex() {
    let profiles = policy();
    let vertices = "  vertexParallelism: {0a448493b4782967b150582570326227: 6, ea632d67b7d595e5b851708ae9ad79d6: 2}\n";
    let orders = job("trade", "orders", 4, Some(12), vertices);
    let (scaled, _) = profiles
        .scale_profiles()
        .effective(&orders, at("2026-11-11T12:00:00+08:00"));
    assert_eq!(scaled.spec.parallelism, 10);
    let v: Vec<u32> = scaled.spec.vertex_parallelism.values().copied().collect();
    assert_eq!(
        v,
        vec![12, 5],
        "6 × 2.5 = 15 stops at maxParallelism 12; 2 × 2.5 = 5"
    );
}

#[test]
fn every_mistake_in_a_profile_names_its_field() {
    let cases = [
        (
            "parallelismFactor: 2.5",
            "parallelismFactor: 0",
            "scaleProfiles[0].parallelismFactor: must be above 0",
        ),
        (
            "parallelismFactor: 2.5",
            "parallelismFactor: 40",
            "at most 16",
        ),
        (
            "until: 2026-11-12T02:00:00+08:00",
            "until: 2026-11-10T02:00:00+08:00",
            "scaleProfiles[0].until: must be after from",
        ),
        (
            "until: 2026-11-12T02:00:00+08:00",
            "until: 2027-01-12T02:00:00+08:00",
            "scaleProfiles[0].until: the window is",
        ),
        (
            "from: 2026-11-11T00:00:00+08:00",
            "from: 11 November",
            "scaleProfiles[0].from: expected an RFC 3339 instant",
        ),
        (
            "jobs: [growth/search-rank]",
            "jobs: [search-rank]",
            "scaleProfiles[1].jobs[0]: expected namespace/name",
        ),
        (
            "name: warm-up-week",
            "name: double-11",
            "scaleProfiles[2].name: \"double-11\" is used twice",
        ),
        (
            "tenants: [trade]",
            "tenants: [trade]\n    colour: red",
            "colour",
        ),
    ];
    for (from, to, expected) in cases {
        let text = format!("{TWO_SITES}{}", SALE_DAY.replace(from, to));
        let error = parse_policy("policy.yaml", &text).unwrap_err().to_string();
        assert!(error.contains(expected), "{to}: {error}");
    }
}

proptest! {
    #[test]
    fn a_scaled_job_stays_within_flinks_bounds_and_never_shrinks_under_a_factor_above_one(
        parallelism in 1u32..=4096,
        max in proptest::option::of(1u32..=32768),
        factor_tenths in 1u32..=160,
    ) {
        let max = max.map(|m| m.max(parallelism));
        let factor = f64::from(factor_tenths) / 10.0;
        let text = format!(
            "{TWO_SITES}\nscaleProfiles:\n  - {{name: p, from: '2026-11-11T00:00:00Z', until: '2026-11-12T00:00:00Z', parallelismFactor: {factor}}}\n"
        );
        let policy = parse_policy("policy.yaml", &text).unwrap();
        let original = job("trade", "orders", parallelism, max, "");
        let (scaled, _) = policy.scale_profiles().effective(&original, at("2026-11-11T12:00:00Z"));
        // Two slots a TaskManager, at most 4096 TaskManagers a job.
        let bound = max.unwrap_or(32768).min(2 * 4096);
        prop_assert!(scaled.spec.parallelism >= 1 && scaled.spec.parallelism <= bound);
        if factor >= 1.0 {
            prop_assert!(scaled.spec.parallelism >= parallelism);
        } else {
            prop_assert!(scaled.spec.parallelism <= parallelism);
        }
        prop_assert!(f64::from(scaled.spec.parallelism) >= (f64::from(parallelism) * factor).min(f64::from(bound)));
        prop_assert!(scaled.demand().is_ok(), "the scaled job is still a valid job");
    }
}

mod report_what_if {
    use std::collections::{BTreeMap, BTreeSet};

    use scheduler::model::{JobDemand, Node, Resources, SiteId, SiteSnapshot};
    use scheduler::report::elasticity::scale_profile_what_ifs;
    use scheduler::report::{DEFAULT_TOP_JOBS, ReportInputs, build_report};

    use super::*;

    const GI: i64 = 1 << 30;

    fn site(name: &str, nodes: usize) -> SiteSnapshot {
        SiteSnapshot {
            id: SiteId(name.into()),
            nodes: (0..nodes)
                .map(|i| Node {
                    name: format!("{name}-n{i}"),
                    labels: BTreeMap::new(),
                    taints: vec![],
                    unschedulable: false,
                    ready: true,
                    allocatable: Resources::new(16_000, 64 * GI, 110),
                    owner_usage: None,
                })
                .collect(),
            running_pods: vec![],
        }
    }

    #[test]
    fn the_sale_day_what_if_plans_the_scaled_fleet_and_its_site_loss() {
        let policy = policy();
        let stream_jobs = vec![
            job("trade", "orders", 4, None, ""),
            job("trade", "payments", 4, None, ""),
            job("trade", "refunds", 4, None, ""),
            job("growth", "feeds", 4, None, ""),
        ];
        let demands: Vec<JobDemand> = stream_jobs.iter().map(|j| j.demand().unwrap()).collect();
        let sites = vec![site("dc-a", 2), site("dc-b", 1)];
        let placement = policy.placement_policy();
        let no_failover = BTreeSet::new();
        let inputs = ReportInputs {
            sites: &sites,
            jobs: &demands,
            policy: &placement,
            running: &[],
            no_failover: &no_failover,
            at: at("2026-11-01T12:00:00+08:00"),
            rightsizing: None,
            top_jobs: DEFAULT_TOP_JOBS,
        };
        let baseline = build_report(&inputs);
        assert_eq!(baseline.placed, 4, "the fleet fits on an ordinary day");

        let what_ifs = scale_profile_what_ifs(&inputs, &stream_jobs, policy.scale_profiles());
        assert_eq!(what_ifs.len(), 3, "one per profile");
        let sale = &what_ifs[0];
        assert_eq!(sale.profile, "double-11");
        assert_eq!(sale.jobs_scaled, 3, "the three trade jobs");
        // Each trade job goes from 4 to 10 slots: 2 to 5 TaskManagers of 2 cpu / 4 GiB.
        let expected_added = stream_jobs[..3]
            .iter()
            .map(|j| {
                let scaled = policy.scale_profiles().0[0].scale(j).demand().unwrap();
                scaled.total().saturating_sub(&j.demand().unwrap().total())
            })
            .fold(Resources::ZERO, |a, b| a + b);
        assert_eq!(sale.added, expected_added);
        assert_eq!(sale.added.cpu_milli, 3 * 3 * 2_000);
        assert_eq!(sale.placed + sale.unplaced.len(), sale.jobs);
        assert_eq!(sale.jobs, 4);
        // The night window (01:00-07:00 Asia/Shanghai) is closed at the sale's start,
        // midnight: the what-if leans on no borrowed capacity.
        assert_eq!(sale.judged_at, sale.from);
        assert!(!sale.lending_open);
        // The scaled trade jobs (3 × 11 cpu, plus 5 for feeds) do not survive losing dc-a's
        // 32 cpu into dc-b's 16.
        let lose_a = sale
            .failover
            .iter()
            .find(|s| s.lost.0 == "dc-a")
            .expect("dc-a lost");
        assert!(lose_a.missing.cpu_milli > 0, "{lose_a:?}");
        let ordinary = baseline
            .failover
            .iter()
            .find(|s| s.lost.0 == "dc-a")
            .unwrap();
        assert!(
            lose_a.missing.cpu_milli > ordinary.missing.cpu_milli,
            "the sale day must cost more than an ordinary day on site loss"
        );
    }
}
