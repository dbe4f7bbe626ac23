//! Fuzzing the API's request bodies: real requests from `tests/fixtures/api-corpus/`, mutated
//! byte by byte (proptest drives the mutations and shrinks a failure to a small one), sent
//! through the real router to a real controller on an embedded store. No request may panic,
//! hang, answer 5xx, or grow resident memory by more than 64 MiB; nothing half-written may
//! reach the store, nor `<redacted>` where a GET would show it.
//!
//! Bounded for CI: [`DEFAULT_CASES`] cases (about 10 s in a debug build on two cores).
//! `TWINSITE_FUZZ_CASES=20000 cargo test --release --test api_fuzz` runs longer.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use scheduler::input::Policy;
use scheduler::model::{SiteId, SiteSnapshot};
use support::fixtures::node;
use tower::ServiceExt;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::{Controller, stream_job_of};
use twinsite::redact::Redactor;
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, StateStore};

/// Resident memory of this process, from `/proc/self/status`: the current size and the peak
/// since the last [`reset_peak`], in bytes. A request that allocates without bound shows as a
/// peak far above where it started (the workspace forbids `unsafe`, so no counting
/// allocator: the kernel counts instead).
fn memory() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident size to the current one (Linux `clear_refs`, value 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

const DEFAULT_CASES: u32 = 1500;
const TOKEN: &str = "fuzz-admin-token-0123456789";
const MAX_BODY: usize = 64 * 1024;
/// Most extra memory one request may hold at once: generous for a 64 KiB body (the parsers
/// keep a few copies and trees of it), far below what an expansion attack would need.
const MAX_REQUEST_MEMORY: usize = 64 << 20;
/// A request that takes longer has hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The job every case starts with, so edits and deletes reach an existing record.
const STORED_JOB: &str = r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  args: ["--password", "pw"]
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders"}
  flinkConfiguration: {s3.secret-key: hunter2, s3.endpoint: "http://minio:9000"}
"#;

struct Seed {
    name: String,
    method: &'static str,
    uri: &'static str,
    body: Vec<u8>,
}

fn corpus() -> Vec<Seed> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/api-corpus");
    let mut seeds: Vec<Seed> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (method, uri) = match name.split_once("--").map(|(prefix, _)| prefix) {
                Some("create") => ("POST", "/api/v1/jobs"),
                Some("replace") => ("PUT", "/api/v1/jobs/shop/orders"),
                Some("delete") => ("DELETE", "/api/v1/jobs/shop/orders"),
                Some("failover") => ("POST", "/api/v1/failover"),
                Some("fault") => ("POST", "/api/v1/sim/dc-a/faults"),
                _ => panic!("{name}: unknown corpus prefix (see the corpus README)"),
            };
            Seed {
                body: std::fs::read(&path).unwrap(),
                name,
                method,
                uri,
            }
        })
        .collect();
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(seeds.len() >= 8, "corpus in {} is missing", dir.display());
    seeds
}

struct Api {
    app: axum::Router,
    store: Arc<EmbeddedStateStore>,
    /// The stored job's revision, for `@REVISION@` in corpus bodies.
    revision: i64,
    _dir: tempfile::TempDir,
}

/// Where each case's store lives: memory when the machine has a tmpfs (this target tests
/// the API, not durability, and thousands of fsyncs would be most of its time).
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

async fn api() -> Api {
    let dir = scratch_dir();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
    let mut simulated = BTreeMap::new();
    for site in ["dc-a", "dc-b"] {
        let sim = SimulatedSite::new(
            SiteSnapshot {
                id: SiteId(site.into()),
                nodes: (1..=3).map(|i| node(&format!("{site}-n{i}"))).collect(),
                running_pods: vec![],
            },
            dir.path().join(site),
            Arc::new(clock.clone()),
            SimulatedSiteConfig::default(),
        );
        simulated.insert(SiteId(site.into()), sim.handle());
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Arc::new(Controller::new(
        sites,
        Arc::clone(&store) as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    ));
    controller.set_leading(true);
    // The failover engine answers once the leader has done a pass.
    controller.reconcile_once().await.unwrap();
    let job = scheduler::input::parse_stream_jobs("stored job", STORED_JOB)
        .unwrap()
        .remove(0);
    let revision = store
        .put_job(&twinsite::controller::new_record(&job), Expected::Absent)
        .await
        .unwrap();
    let state = Arc::new(ApiState {
        controller,
        access: Access {
            admin_token: TOKEN.into(),
            read_token: None,
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated,
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: None,
    });
    Api {
        app: router(state, MAX_BODY),
        store,
        revision,
        _dir: dir,
    }
}

/// Byte strings mutations splice in: YAML and JSON syntax, aliases, tags, numbers at and past
/// the limits, deep nesting, long runs, the redaction placeholder.
fn dictionary() -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = [
        "&a ",
        "*a",
        "<<: *a\n",
        "!!binary ",
        "!!map ",
        "? ",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        ": ",
        ",",
        "\n",
        "\n  ",
        "- ",
        "---\n",
        "...\n",
        "~",
        "null",
        "true",
        "0x7f",
        "-1",
        "1e999",
        "NaN",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967296",
        "0.0000001",
        "999999999Ei",
        "1.5Gi",
        "<redacted>",
        "\u{feff}",
        "\\u0000",
        "\u{202e}",
        "%TAG ! tag:x:\n",
        "resourceVersion: \"9223372036854775807\"",
        "flinkConfiguration: {a.password: <redacted>}\n",
        "parallelism: 4294967295\n",
        "args: [--token]\n",
    ]
    .iter()
    .map(|w| w.as_bytes().to_vec())
    .collect();
    words.push("[".repeat(300).into_bytes());
    words.push("{a: ".repeat(200).into_bytes());
    words.push("- ".repeat(200).into_bytes());
    words.push(b"A".repeat(4000));
    words.push(b"a: &a [*a, *a, *a, *a, *a, *a, *a, *a]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n".to_vec());
    words
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, Index, usize),
    Splice(Index, Index, Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, w)| Mutation::Insert(i, w)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..256)
            .prop_map(|(from, to, n)| Mutation::Duplicate(from, to, n)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..512)
            .prop_map(|(seed, from, to, n)| Mutation::Splice(seed, from, to, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(body: &mut Vec<u8>, mutation: &Mutation, words: &[Vec<u8>], seeds: &[Seed]) {
    let at = |index: &Index, len: usize| if len == 0 { 0 } else { index.index(len + 1) };
    match mutation {
        Mutation::FlipBit(i, bit) if !body.is_empty() => {
            let i = i.index(body.len());
            body[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, byte) if !body.is_empty() => {
            let i = i.index(body.len());
            body[i] = *byte;
        }
        Mutation::Insert(i, word) => {
            let i = at(i, body.len());
            let word = &words[word.index(words.len())];
            body.splice(i..i, word.iter().copied());
        }
        Mutation::Delete(i, n) if !body.is_empty() => {
            let i = i.index(body.len());
            let end = (i + n).min(body.len());
            body.drain(i..end);
        }
        Mutation::Duplicate(from, to, n) if !body.is_empty() => {
            let from = from.index(body.len());
            let chunk = body[from..(from + n).min(body.len())].to_vec();
            let to = at(to, body.len());
            body.splice(to..to, chunk);
        }
        Mutation::Splice(seed, from, to, n) => {
            let other = &seeds[seed.index(seeds.len())].body;
            if !other.is_empty() {
                let from = from.index(other.len());
                let chunk = &other[from..(from + n).min(other.len())];
                let to = at(to, body.len());
                body.splice(to..to, chunk.iter().copied());
            }
        }
        Mutation::Truncate(i) => {
            let len = at(i, body.len());
            body.truncate(len);
        }
        _ => {}
    }
}

/// Sends one request; fails on a hang, a 5xx, or heap growth beyond the bound.
async fn send(
    api: &Api,
    method: &str,
    uri: &str,
    if_match: Option<&str>,
    body: Vec<u8>,
) -> Result<(StatusCode, String), TestCaseError> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(value) = if_match {
        request = request.header("if-match", value);
    }
    let body = with_revision(&body, api.revision);
    let request = request
        .body(Body::from(body))
        .map_err(|e| TestCaseError::fail(format!("request: {e}")))?;
    let measured = reset_peak();
    let (base, _) = memory();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = api.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
    .await
    .map_err(|_| {
        TestCaseError::fail(format!("{method} {uri}: no answer in {REQUEST_TIMEOUT:?}"))
    })?;
    let grew = memory().1.saturating_sub(base);
    prop_assert!(
        !measured || grew <= MAX_REQUEST_MEMORY,
        "{method} {uri}: resident memory grew by {grew} bytes while answering"
    );
    prop_assert!(
        !answer.0.is_server_error(),
        "{method} {uri}: {} {}",
        answer.0,
        answer.1
    );
    Ok(answer)
}

/// `body` with every `@REVISION@` replaced by `revision`.
fn with_revision(body: &[u8], revision: i64) -> Vec<u8> {
    const MARK: &[u8] = b"@REVISION@";
    let revision = revision.to_string();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(revision.as_bytes());
        rest = &rest[at + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Nothing the API stored is half-written or a placeholder.
async fn check_store(api: &Api) -> Result<(), TestCaseError> {
    for record in api.store.list_jobs().await.unwrap() {
        let job = stream_job_of(&record.value);
        prop_assert!(job.is_ok(), "a stored job does not decode: {:?}", job.err());
        // Where a GET shows `<redacted>`, the store must hold a real value (elsewhere the
        // text is only an odd value of the client's, like any other).
        let spec = record.value.spec.to_json().unwrap();
        let placeholders = Redactor::placeholders(&spec);
        prop_assert!(
            placeholders.is_empty(),
            "a placeholder was stored in {placeholders:?}: {spec}"
        );
    }
    Ok(())
}

/// The corpus is what real clients send: unmutated, every request is accepted, so the
/// mutations start from bodies that reach the handlers' deepest paths.
#[tokio::test]
async fn every_corpus_request_is_accepted_as_it_stands() {
    for seed in corpus() {
        let api = api().await;
        let (status, body) = send(&api, seed.method, seed.uri, None, seed.body.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", seed.name));
        assert!(status.is_success(), "{}: {status} {body}", seed.name);
        check_store(&api).await.unwrap();
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("TWINSITE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn if_match() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some("\"1\"".to_owned())),
        1 => Just(Some("*".to_owned())),
        1 => "[ -~]{0,24}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// The fuzz target: mutated corpus requests, with `If-Match` values, through the router.
    #[test]
    fn mutated_requests_never_panic_hang_answer_5xx_or_store_garbage(
        seed in any::<Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
        if_match in if_match(),
    ) {
        let seeds = corpus_once();
        let seed = &seeds[seed.index(seeds.len())];
        let mut body = seed.body.clone();
        for mutation in &mutations {
            apply(&mut body, mutation, dictionary_once(), seeds);
        }
        let shown = String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(async {
                let api = api().await;
                send(&api, seed.method, seed.uri, if_match.as_deref(), body).await?;
                check_store(&api).await
            })
            .map_err(|e| TestCaseError::fail(format!("{e}\n{} {} body:\n{shown}", seed.method, seed.uri)))?;
    }
}

fn corpus_once() -> &'static [Seed] {
    static CORPUS: std::sync::OnceLock<Vec<Seed>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(corpus)
}

fn dictionary_once() -> &'static [Vec<u8>] {
    static WORDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    WORDS.get_or_init(dictionary)
}
