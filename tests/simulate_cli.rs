//! `twinsite simulate` run as users run it: on every shipped example scenario (each must run
//! clean and name all of its jobs), as JSON, and on malformed files whose error must say
//! where the mistake is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn twinsite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinsite"))
        .args(args)
        .env("TWINSITE_LOG", "warn")
        .output()
        .expect("run twinsite")
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("failover/scenarios")
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("failover/scenarios exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The job ids a scenario file declares, read from its text.
fn job_ids(yaml: &str) -> Vec<String> {
    let id = regex::Regex::new(r"\bid:\s*([a-z0-9-]+/[a-z0-9-]+)").unwrap();
    id.captures_iter(yaml).map(|c| c[1].to_string()).collect()
}

#[test]
fn every_shipped_scenario_runs_clean_and_its_output_names_each_job() {
    let files = shipped();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let jobs = job_ids(&std::fs::read_to_string(&file).unwrap());
        assert!(!jobs.is_empty(), "{}", file.display());
        let out = twinsite(&["simulate", "--scenario", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}\n{stdout}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for job in &jobs {
            assert!(
                stdout.contains(job.as_str()),
                "{}: {job} missing",
                file.display()
            );
        }
        assert!(stdout.contains("TIMELINE"), "{stdout}");
        assert!(stdout.contains("RECOVERIES"), "{stdout}");
        assert!(
            stdout.contains("INVARIANTS: all held after every step"),
            "{stdout}"
        );
    }
}

#[test]
fn the_json_output_has_each_relaunch_with_its_rto_and_rpo() {
    let file = scenarios_dir().join("site-loss-20-jobs.yaml");
    let out = twinsite(&[
        "simulate",
        "--scenario",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(20));
    let recoveries = v["recoveries"].as_array().unwrap();
    let cross_site: Vec<&serde_json::Value> = recoveries
        .iter()
        .filter(|r| r["from"] == "a" && r["to"] == "b")
        .collect();
    assert!(cross_site.len() >= 5, "{recoveries:?}");
    for r in cross_site {
        assert!(r["rto_from_detection"].is_f64(), "{r}");
        assert!(
            r["rto_from_last_heartbeat"].as_f64().unwrap() >= 30.0,
            "{r}"
        );
        assert!(r["rpo"].is_f64() || r["restore_from"].is_null(), "{r}");
    }
    assert!(!v["not_relaunched"].as_array().unwrap().is_empty());
    assert_eq!(v["violations"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_malformed_scenario_exits_1_with_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "duration: 2m\nsites:\n  a: {nodes: 2}\n  b: {nodes: 2}\njobs:\n  - {id: shop/orders, site: a}\nevents:\n  - at: 30s\n    site-lots: a\n",
    )
    .unwrap();
    let out = twinsite(&["simulate", "--scenario", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&format!("{}:9:", file.display())),
        "names the file and line: {stderr}"
    );
    assert!(
        stderr.contains("events[0].site-lots"),
        "names the field: {stderr}"
    );

    std::fs::write(
        &file,
        "duration: 2m\nsites:\n  a: {nodes: 2}\n  b: {nodes: 2}\njobs:\n  - {id: shop/orders, site: c}\n",
    )
    .unwrap();
    let out = twinsite(&["simulate", "--scenario", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("typo.yaml:6:"), "{stderr}");
    assert!(stderr.contains("jobs[0].site"), "{stderr}");
    assert!(stderr.contains("unknown site \"c\""), "{stderr}");

    let missing = dir.path().join("missing.yaml");
    let out = twinsite(&["simulate", "--scenario", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}
