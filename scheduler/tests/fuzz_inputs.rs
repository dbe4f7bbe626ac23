//! Fuzz targets for the inputs users hand the scheduler crate (issue #13): StreamJob YAML,
//! `kubectl get nodes/pods -o json`, and the policy YAML. Each target parses a mutated real
//! input and, when it parses, drives what the input feeds (demands, placement on the parsed
//! nodes, the policy's checks and its YAML round trip); none may panic, hang or allocate
//! without bound (see `fuzz_support`). The checked-in corpus (`tests/fuzz-corpus/<target>/`)
//! holds the cases: `refused-*` files must be refused, `accepted-*` ones accepted.
//!
//! `TWINSITE_FUZZ_CASES=20000 cargo test -p twinsite-scheduler --release --test fuzz_inputs`
//! runs longer.

mod fuzz_support;
mod placement_fixtures;

use std::path::{Path, PathBuf};

use fuzz_support::{ALLOCATION_LIMIT, Seed, cases, fuzz, seeds};
use placement_fixtures::{JobBuilder, NodeBuilder, request, site};
use scheduler::input::kube_objects::{parse_node_list, parse_pod_list};
use scheduler::input::{parse_policy, parse_stream_jobs};
use scheduler::model::{JobDemand, PlacementPolicy, SiteId, SiteSnapshot};
use scheduler::placement::{IncrementalPlacer, plan, validate_plan};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> =
    cap::Cap::new(std::alloc::System, ALLOCATION_LIMIT);

/// Cases per target in a plain `cargo test` (debug), each target well under 20 s: YAML
/// targets parse, place and write back every case; most mutations of kubectl's JSON fail
/// early, so those targets run more.
const YAML_CASES: u32 = 6_000;
const JSON_CASES: u32 = 16_000;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn report(target: &str, (cases, slowest): (u32, std::time::Duration)) {
    println!(
        "fuzz {target}: {cases} mutated cases, slowest case {slowest:?}, peak heap {} KiB",
        ALLOCATOR.max_allocated() / 1024
    );
}

/// Two small sites to place whatever parsed.
fn cluster() -> Vec<SiteSnapshot> {
    vec![
        site(
            "dc-a",
            (1..=3)
                .map(|i| NodeBuilder::new(&format!("a{i}")).obj())
                .collect(),
        ),
        site(
            "dc-b",
            (1..=3)
                .map(|i| NodeBuilder::new(&format!("b{i}")).obj())
                .collect(),
        ),
    ]
}

/// Plans `jobs` on `sites` with the heuristic, checks the plan, and places them once more
/// one at a time: every path that sizes work by a job's pods.
fn place(sites: &[SiteSnapshot], jobs: &[JobDemand], policy: &PlacementPolicy) {
    let req = request(sites, jobs, policy, &[]);
    let result = plan(&req);
    let _ = validate_plan(&req, &result);
    // Placed again with the plan as what runs: pinned, resized and moved paths.
    let running = result.placements.clone();
    let again = plan(&request(sites, jobs, policy, &running));
    let _ = validate_plan(&req, &again);
    let mut placer = IncrementalPlacer::new(&req, &[]);
    for job in jobs {
        let _ = placer.place_one(job);
    }
}

fn stream_job_target(text: &str) {
    let Ok(jobs) = parse_stream_jobs("fuzz.yaml", text) else {
        return;
    };
    let demands: Vec<JobDemand> = jobs.iter().filter_map(|j| j.demand().ok()).collect();
    assert_eq!(demands.len(), jobs.len(), "a parsed job always resolves");
    for job in &jobs {
        job.validate()
            .expect("a parsed job passes its own validation");
    }
    place(&cluster(), &demands, &PlacementPolicy::default());
    // What a file says survives being written back: the controller stores jobs this way.
    let yaml = scheduler::input::streamjob::stream_jobs_to_yaml(&jobs).expect("serialises");
    let back = parse_stream_jobs("written.yaml", &yaml)
        .unwrap_or_else(|e| panic!("written back, the jobs do not parse: {e}\n{yaml}"));
    assert_eq!(back, jobs);
}

fn sample_demands() -> Vec<JobDemand> {
    vec![
        JobBuilder::new("shop/a").tms(2).obj(),
        JobBuilder::new("shop/b").tms(4).tm(500, 1).obj(),
    ]
}

fn nodes_target(text: &str) {
    let Ok(nodes) = parse_node_list("nodes.json", text) else {
        return;
    };
    let sites = vec![
        SiteSnapshot {
            id: SiteId("dc-a".into()),
            nodes,
            running_pods: Vec::new(),
        },
        site("dc-b", Vec::new()),
    ];
    place(&sites, &sample_demands(), &PlacementPolicy::default());
}

fn pods_target(text: &str) {
    let Ok(pods) = parse_pod_list("pods.json", text) else {
        return;
    };
    let mut sites = cluster();
    sites[0].running_pods = pods;
    place(&sites, &sample_demands(), &PlacementPolicy::default());
}

fn policy_target(text: &str) {
    let Ok(policy) = parse_policy("policy.yaml", text) else {
        return;
    };
    let jobs = parse_stream_jobs("jobs.yaml", include_str!("fixtures/input/jobs.yaml"))
        .expect("the fixture parses");
    let _ = policy.check_jobs("jobs.yaml", &jobs);
    let demands: Vec<JobDemand> = jobs.iter().filter_map(|j| j.demand().ok()).collect();
    place(&cluster(), &demands, &policy.placement_policy());
    let yaml = policy.to_yaml().expect("serialises");
    let back = parse_policy("written.yaml", &yaml)
        .unwrap_or_else(|e| panic!("written back, the policy does not parse: {e}\n{yaml}"));
    assert_eq!(back, policy);
}

/// `refused-*` seeds must be refused, `accepted-*` ones accepted, by `parses`.
fn check_corpus(seeds: &[Seed], parses: impl Fn(&str) -> Result<(), String>) {
    for seed in seeds {
        let file = Path::new(&seed.name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let outcome = parses(&String::from_utf8_lossy(&seed.bytes));
        if file.starts_with("refused-") {
            assert!(outcome.is_err(), "{file} was accepted");
            println!(
                "{file}: {}",
                outcome.unwrap_err().lines().next().unwrap_or("")
            );
        } else if file.starts_with("accepted-") {
            assert!(outcome.is_ok(), "{file}: {}", outcome.unwrap_err());
        }
    }
}

#[test]
fn fuzz_stream_job_yaml() {
    let seeds = seeds(
        &corpus("streamjob"),
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/input/jobs.yaml")],
    );
    check_corpus(&seeds, |text| {
        parse_stream_jobs("corpus.yaml", text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    report(
        "StreamJob YAML",
        fuzz(
            "StreamJob YAML",
            &seeds,
            cases(YAML_CASES),
            stream_job_target,
        ),
    );
}

#[test]
fn fuzz_kubectl_node_json() {
    let seeds = seeds(
        &corpus("nodes"),
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nodes-dc-a.json")],
    );
    check_corpus(&seeds, |text| {
        parse_node_list("corpus.json", text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    report(
        "Node JSON",
        fuzz("Node JSON", &seeds, cases(JSON_CASES), nodes_target),
    );
}

#[test]
fn fuzz_kubectl_pod_json() {
    let seeds = seeds(
        &corpus("pods"),
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pods-dc-a.json")],
    );
    check_corpus(&seeds, |text| {
        parse_pod_list("corpus.json", text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    report(
        "Pod JSON",
        fuzz("Pod JSON", &seeds, cases(JSON_CASES), pods_target),
    );
}

#[test]
fn fuzz_policy_yaml() {
    let seeds = seeds(
        &corpus("policy"),
        &[
            repo_file("policies/minimal.yaml"),
            repo_file("policies/example-two-sites.yaml"),
        ],
    );
    check_corpus(&seeds, |text| {
        parse_policy("corpus.yaml", text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    report(
        "policy YAML",
        fuzz("policy YAML", &seeds, cases(YAML_CASES), policy_target),
    );
}
