//! `twinsite report capacity` run as users run it: on `twinsite generate` output with a
//! metrics file of synthetic Flink history, in every format, and with bad inputs that must
//! be named in the error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scheduler::input::parse_stream_jobs;
use scheduler::report::CapacityReport;
use scheduler::report::assemble::JobFacts;
use twinsite::job_metrics::JobKey;
use twinsite::job_metrics::synthetic::{Shape, history, shape_of, write_json_lines};

/// 2026-11-18T20:00:00Z, a Wednesday evening (lending windows closed).
const END_MS: i64 = 1_795_032_000_000;
const AT: &str = "2026-11-18T20:00:00Z";
const SEED: u64 = 5;

fn twinsite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinsite"))
        .args(args)
        .env("TWINSITE_LOG", "warn")
        .output()
        .expect("run twinsite")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "twinsite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A generated cluster of 2 × 40 nodes and 60 jobs, with 2 days of metrics every 5 min.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        ok(twinsite(&[
            "generate",
            "--nodes-per-site",
            "40",
            "--jobs",
            "60",
            "--seed",
            "3",
            "--out",
            out,
        ]));
        let yaml = std::fs::read_to_string(dir.path().join("jobs.yaml")).unwrap();
        let jobs = parse_stream_jobs("jobs.yaml", &yaml).unwrap();
        let mut file = std::fs::File::create(dir.path().join("metrics.jsonl")).unwrap();
        for job in &jobs {
            let facts = JobFacts::of(job, &job.demand().unwrap());
            write_json_lines(&mut file, &history(&facts, SEED, END_MS, 2, 300_000)).unwrap();
        }
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args<'a>(&self, owned: &'a mut Vec<String>, extra: &[&str]) -> Vec<&'a str> {
        let p = |n: &str| self.path(n).display().to_string();
        *owned = vec![
            "report".into(),
            "capacity".into(),
            "--site".into(),
            format!("dc-a={}", p("nodes-dc-a.json")),
            "--site".into(),
            format!("dc-b={}", p("nodes-dc-b.json")),
            "--jobs".into(),
            p("jobs.yaml"),
            "--policy".into(),
            p("policy.yaml"),
            "--at".into(),
            AT.into(),
            "--lookback".into(),
            "2d".into(),
            "--step".into(),
            "5m".into(),
        ];
        owned.extend(extra.iter().map(|s| s.to_string()));
        owned.iter().map(String::as_str).collect()
    }
}

fn job_keys(dir: &Path) -> Vec<JobKey> {
    let yaml = std::fs::read_to_string(dir.join("jobs.yaml")).unwrap();
    parse_stream_jobs("jobs.yaml", &yaml)
        .unwrap()
        .iter()
        .map(|j| JobKey::of(&j.id()))
        .collect()
}

#[test]
fn a_report_with_metrics_covers_every_job_and_refuses_those_without_data() {
    let f = Fixture::new();
    let metrics = f.path("metrics.jsonl").display().to_string();
    let out = f.path("report.json");
    let out_arg = out.display().to_string();
    let mut owned = Vec::new();
    let stdout = ok(twinsite(&f.args(
        &mut owned,
        &["--metrics", &metrics, "--format", "json", "--out", &out_arg],
    )));
    assert!(stdout.is_empty(), "--out writes nothing to stdout");
    assert!(
        !f.path("report.json.tmp").exists(),
        "the temporary file was renamed"
    );
    let report: CapacityReport =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report.jobs, 60);
    assert_eq!(report.sites.len(), 2);
    assert_eq!(report.failover.len(), 2);
    let z = report.rightsizing.expect("metrics were given");
    assert_eq!(z.jobs, 60);
    assert_eq!(z.source, metrics);
    // Every job the fixture left silent or gave a gap is refused, naming why.
    for key in job_keys(f.dir.path()) {
        let id = format!("{}/{}", key.namespace, key.name);
        let refusal = z.refused.iter().find(|r| r.job.0 == id);
        match shape_of(&key, SEED) {
            Shape::Silent => {
                let r = refusal.unwrap_or_else(|| panic!("{id} has no metrics but is not refused"));
                assert!(r.reasons.iter().any(|x| x.contains("no samples")), "{r:?}");
            }
            Shape::Gap => {
                let r = refusal.unwrap_or_else(|| panic!("{id} has a gap but is not refused"));
                assert!(r.reasons.iter().any(|x| x.contains("gap")), "{r:?}");
            }
            Shape::Healthy | Shape::NanSamples => {}
        }
    }
    assert!(z.jobs_fully_assessed > 40, "{}", z.jobs_fully_assessed);
    assert!(z.reclaimable_cpu_milli > 0 || z.lacking_cpu_milli > 0);
    // Used is measured where metrics exist: some pods, never more pods than were placed.
    let used = &report.sites[0].total.used_cpu_milli;
    assert!(used.pods_measured > 0 && used.value > 0.0, "{used:?}");
}

#[test]
fn every_format_prints_to_stdout_and_html_is_a_page() {
    let f = Fixture::new();
    let mut owned = Vec::new();
    let html = ok(twinsite(&f.args(&mut owned, &["--format", "html"])));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg "));
    let mut owned = Vec::new();
    let md = ok(twinsite(&f.args(&mut owned, &["--format", "md"])));
    assert!(md.starts_with("# Capacity report"));
    let mut owned = Vec::new();
    let table = ok(twinsite(&f.args(&mut owned, &[])));
    assert!(table.contains("FAILOVER SURVIVABILITY"));
    assert!(table.contains("No metrics were given"));
}

#[test]
fn a_missing_metrics_file_and_an_unreachable_prometheus_are_named_in_the_error() {
    let f = Fixture::new();
    let missing = f.path("nope.jsonl").display().to_string();
    let mut owned = Vec::new();
    let out = twinsite(&f.args(&mut owned, &["--metrics", &missing]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics") && err.contains(&missing), "{err}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut owned = Vec::new();
    let out = twinsite(&f.args(&mut owned, &["--metrics", &url]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
}

#[test]
fn a_bad_lookback_names_the_flag_and_the_value() {
    let f = Fixture::new();
    let mut owned = Vec::new();
    let mut args = f.args(&mut owned, &[]);
    let at = args.iter().position(|a| *a == "2d").unwrap();
    args[at] = "two days";
    let out = twinsite(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lookback") && err.contains("two days"),
        "{err}"
    );
}

#[test]
fn a_policy_with_a_sale_day_profile_gets_its_what_if_in_the_report() {
    let f = Fixture::new();
    let policy = std::fs::read_to_string(f.path("policy.yaml")).unwrap();
    std::fs::write(
        f.path("policy.yaml"),
        format!(
            "{policy}\nscaleProfiles:\n  - {{name: sale-day, from: '2026-11-11T00:00:00+08:00', until: '2026-11-12T00:00:00+08:00', parallelismFactor: 3}}\n"
        ),
    )
    .unwrap();
    let mut owned = Vec::new();
    let json = ok(twinsite(&f.args(&mut owned, &["--format", "json"])));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let what_if = &report["scale_profiles"][0];
    assert_eq!(
        what_if["profile"], "sale-day",
        "{}",
        report["scale_profiles"]
    );
    assert_eq!(
        what_if["jobsScaled"], 60,
        "no tenant or job named: every job"
    );
    assert!(what_if["added"]["cpu_milli"].as_i64().unwrap() > 0);
    let placed = what_if["placed"].as_u64().unwrap();
    let unplaced = what_if["unplaced"].as_array().unwrap().len() as u64;
    assert_eq!(placed + unplaced, 60);
    assert!(
        placed < report["placed"].as_u64().unwrap(),
        "tripling 60 jobs on 2 × 40 nodes cannot place as many as the ordinary day"
    );
    assert_eq!(what_if["failover"].as_array().unwrap().len(), 2);
    let mut owned = Vec::new();
    let table = ok(twinsite(&f.args(&mut owned, &[])));
    assert!(table.contains("SCALE PROFILES (WHAT-IF)"), "{table}");
    assert!(
        table.contains("During sale-day: If dc-a is lost"),
        "{table}"
    );
}
