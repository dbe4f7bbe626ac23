//! The operator page at `/`: behind the same read authentication as the API (a bearer token,
//! or the session cookie a CSRF-safe sign-in form sets), HTML that escapes what it shows, and
//! a real headless Chromium that signs in against `twinsite run`, sees the 20 sample jobs,
//! and after a simulated site loss sees the operation and the recoveries.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use scheduler::input::{Policy, parse_stream_jobs};
use scheduler::model::{SiteId, SiteSnapshot};
use support::chromium::Browser;
use support::controller::ControllerProcess;
use support::fixtures::node;
use tower::ServiceExt;
use twinsite::api::auth::Access;
use twinsite::api::{ApiState, router};
use twinsite::controller::{Controller, JobStatus, new_record};
use twinsite::site::simulated::{SimulatedSite, SimulatedSiteConfig};
use twinsite::site::{ManualClock, Site};
use twinsite::state::{EmbeddedStateStore, Expected, KvBackend, StateStore};

const ADMIN: &str = "page-admin-token-0123456789";
const READ: &str = "page-read-token-9876543210";

const JOB: &str = r#"apiVersion: twinsite.io/v1alpha1
kind: StreamJob
metadata: {name: orders, namespace: shop}
spec:
  priority: high
  image: flink:2.0.0
  flinkVersion: v2_0
  jarURI: hdfs:///jars/orders.jar
  parallelism: 2
  jobManager: {resources: {cpu: "1", memory: 2Gi}}
  taskManager: {resources: {cpu: "2", memory: 4Gi}}
  checkpoints: {dir: "hdfs:///flink/checkpoints/shop/orders"}
"#;

struct Page {
    app: axum::Router,
    store: Arc<EmbeddedStateStore>,
    controller: Arc<Controller>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// `name=value` of the cookie `name` this answer sets.
    fn cookie(&self, name: &str) -> String {
        self.cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.cookies()))
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    /// The hidden `csrf` value of the form on the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..at + 32].to_string()
    }
}

async fn page() -> Page {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc::now());
    let mut sites: BTreeMap<SiteId, Arc<dyn Site>> = BTreeMap::new();
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
        sites.insert(SiteId(site.into()), Arc::new(sim));
    }
    let store = Arc::new(EmbeddedStateStore::open(&dir.path().join("state")).unwrap());
    let controller = Arc::new(Controller::new(
        sites,
        store.clone() as Arc<dyn StateStore>,
        Policy::default_two_sites(),
    ));
    controller.set_leading(true);
    let mut record = new_record(&parse_stream_jobs("job.yaml", JOB).unwrap().remove(0));
    // A status message echoing hostile text: the page must show it, not run it.
    record.status = JobStatus::pending("<script>alert('x')</script> & \"quoted\"");
    store.put_job(&record, Expected::Absent).await.unwrap();
    let state = Arc::new(ApiState {
        controller,
        access: Access {
            admin_token: ADMIN.into(),
            read_token: Some(READ.into()),
            open_metrics: false,
        },
        refusals: Default::default(),
        simulated: BTreeMap::new(),
        wake: Arc::new(tokio::sync::Notify::new()),
        metrics: None,
    });
    Page {
        controller: state.controller.clone(),
        app: router(state, 1 << 20),
        store,
        _dir: dir,
    }
}

impl Page {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::get(uri).header(header::HOST, "127.0.0.1:8080");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, uri: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::post(uri)
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn audits(&self) -> Vec<(String, String, String)> {
        self.store
            .list_audit(1, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.entry.action, r.entry.target, r.entry.result))
            .collect()
    }

    /// Signs in through the form; returns the session cookie (`name=value`).
    async fn sign_in(&self) -> String {
        let form = self.get("/", &[]).await;
        let csrf_cookie = form.cookie("twinsite_login_csrf");
        let signed_in = self
            .post_form(
                "/login",
                &format!("token={READ}&csrf={}", form.csrf()),
                &[
                    ("cookie", &csrf_cookie),
                    ("origin", "http://127.0.0.1:8080"),
                ],
            )
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        signed_in.cookie("twinsite_session")
    }
}

#[tokio::test]
async fn a_browser_without_a_session_gets_the_sign_in_form_and_its_csrf_cookie() {
    let p = page().await;
    let answer = p.get("/", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer
            .body
            .contains("<form method=\"post\" action=\"/login\""),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("type=\"password\" name=\"token\""));
    assert!(
        !answer.body.contains("shop/orders"),
        "nothing is shown before signing in"
    );
    let csrf = answer
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("twinsite_login_csrf="))
        .unwrap();
    assert!(
        csrf.contains("HttpOnly")
            && csrf.contains("SameSite=Strict")
            && csrf.contains("Path=/login"),
        "{csrf}"
    );
    assert_eq!(
        answer.cookie("twinsite_login_csrf"),
        format!("twinsite_login_csrf={}", answer.csrf())
    );
    let csp = answer.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}

#[tokio::test]
async fn the_read_token_as_a_bearer_header_gets_the_page_and_a_wrong_one_is_refused_and_audited() {
    let p = page().await;
    let answer = p
        .get("/", &[("authorization", &format!("Bearer {READ}"))])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("shop/orders"));
    assert!(answer.body.contains("id=\"sites\""));
    // Hostile text is shown escaped, never as markup.
    assert!(!answer.body.contains("<script>alert"), "unescaped");
    assert!(
        answer
            .body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;")
    );

    let refused = p
        .get("/", &[("authorization", "Bearer not-a-token-at-all")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        p.audits()
            .await
            .iter()
            .any(|(action, target, _)| action == "authorize" && target == "GET /"),
        "{:?}",
        p.audits().await
    );
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_session_that_opens_the_page_and_nothing_else() {
    let p = page().await;
    let form = p.get("/", &[]).await;
    let csrf_cookie = form.cookie("twinsite_login_csrf");
    let answer = p
        .post_form(
            "/login",
            &format!("token={READ}&csrf={}", form.csrf()),
            &[
                ("cookie", &csrf_cookie),
                ("origin", "http://127.0.0.1:8080"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.headers[header::LOCATION], "/");
    let session = answer
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("twinsite_session="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(
            session.contains(attribute),
            "{attribute} missing: {session}"
        );
    }
    assert!(
        answer
            .cookies()
            .iter()
            .any(|c| c.starts_with("twinsite_login_csrf=;") && c.contains("Max-Age=0")),
        "the form's cookie is spent: {:?}",
        answer.cookies()
    );
    assert!(
        p.audits()
            .await
            .iter()
            .any(|(a, _, r)| a == "login" && r == "ok")
    );

    let cookie = answer.cookie("twinsite_session");
    let shown = p.get("/", &[("cookie", &cookie)]).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.body.contains("shop/orders") && shown.body.contains("Sign out"));
    // The session opens the page only: the API still wants its token.
    let api = p.get("/api/v1/jobs", &[("cookie", &cookie)]).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    // A forged or altered cookie is a stranger.
    // (Its last character changed: to '1' if it was '0', since an unchanged cookie is valid.)
    let last = if cookie.ends_with('0') { '1' } else { '0' };
    let altered = format!("{}{last}", &cookie[..cookie.len() - 1]);
    assert_ne!(altered, cookie);
    let forged = p.get("/", &[("cookie", &altered)]).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.body.contains("action=\"/login\""));

    // Signing out needs the page's own form.
    let refused = p
        .post_form(
            "/logout",
            "csrf=00000000000000000000000000000000",
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let csrf = shown.csrf();
    let out = p
        .post_form("/logout", &format!("csrf={csrf}"), &[("cookie", &cookie)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.cookies()
            .iter()
            .any(|c| c.starts_with("twinsite_session=;") && c.contains("Max-Age=0"))
    );
}

#[tokio::test]
async fn a_sign_in_from_another_site_or_without_the_forms_cookie_is_refused() {
    let p = page().await;
    let form = p.get("/", &[]).await;
    let csrf = form.csrf();
    let csrf_cookie = form.cookie("twinsite_login_csrf");
    let body = format!("token={READ}&csrf={csrf}");
    // No cookie: the form was not this browser's.
    let no_cookie = p.post_form("/login", &body, &[]).await;
    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    assert!(
        no_cookie
            .cookies()
            .iter()
            .all(|c| !c.starts_with("twinsite_session="))
    );
    // The browser's cookie, but a form value the attacker chose (it cannot read the cookie).
    let guessed = p
        .post_form(
            "/login",
            &format!("token={READ}&csrf=0123456789abcdef0123456789abcdef"),
            &[("cookie", &csrf_cookie)],
        )
        .await;
    assert_eq!(guessed.status, StatusCode::FORBIDDEN, "{}", guessed.body);
    assert!(
        guessed
            .cookies()
            .iter()
            .all(|c| !c.starts_with("twinsite_session="))
    );
    // Another site's page posting with the victim's cookie (a login CSRF).
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let forged = p
            .post_form(
                "/login",
                &body,
                &[("cookie", &csrf_cookie), (header, value)],
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{header}");
        assert!(
            forged
                .cookies()
                .iter()
                .all(|c| !c.starts_with("twinsite_session="))
        );
    }
    // A wrong token: refused, audited, and the form again.
    let wrong = p
        .post_form(
            "/login",
            &format!("token=not-the-token-0123456789&csrf={csrf}"),
            &[("cookie", &csrf_cookie)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("not valid"), "{}", wrong.body);
    assert!(
        p.audits()
            .await
            .iter()
            .any(|(a, t, _)| a == "authorize" && t == "POST /login")
    );
}

#[tokio::test]
async fn the_dry_run_plan_of_a_site_is_shown_on_request() {
    let p = page().await;
    let cookie = p.sign_in().await;
    let planned = p
        .get("/?plan=dc-a&mode=forced", &[("cookie", &cookie)])
        .await;
    assert_eq!(planned.status, StatusCode::OK, "{}", planned.body);
    assert!(
        planned.body.contains("Forced failover dc-a → dc-b"),
        "{}",
        planned.body
    );
    let bad = p.get("/?plan=dc-z", &[("cookie", &cookie)]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("dc-z"));
}

/// Hostile stored records (a job, a site and a checkpoint pointer that do not decode) never
/// stop the page: it renders, lists each of them with its key and why, and shows the rest.
#[tokio::test]
async fn stored_records_that_do_not_decode_are_listed_and_the_page_still_renders() {
    let p = page().await;
    let prefix = "/twinsite/v1";
    for (key, bytes) in [
        (
            format!("{prefix}/jobs/shop/legacy"),
            br#"{"namespace": 5}"#.to_vec(),
        ),
        (format!("{prefix}/sites/dc-b"), b"not json".to_vec()),
        (
            format!("{prefix}/checkpoints/shop/orders/replicated/dc-b"),
            b"{}".to_vec(),
        ),
    ] {
        p.store
            .backend()
            .put(&key, bytes, Expected::Any)
            .await
            .unwrap();
    }
    // A pass of the exposure monitor reads every pointer, as the leader does every 5 s.
    p.controller.monitor_exposure().await.unwrap();
    let answer = p
        .get("/", &[("authorization", &format!("Bearer {READ}"))])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.body.contains("shop/orders"),
        "the readable job is shown"
    );
    assert!(
        answer.body.contains("id=\"site-dc-b\""),
        "dc-b is shown without its record"
    );
    let listed = &answer.body[answer
        .body
        .find("id=\"unreadable\"")
        .unwrap_or_else(|| panic!("no unreadable records listed: {}", answer.body))..];
    for key in [
        "/twinsite/v1/jobs/shop/legacy",
        "/twinsite/v1/sites/dc-b",
        "/twinsite/v1/checkpoints/shop/orders/replicated/dc-b",
    ] {
        assert!(listed.contains(key), "{key} not listed: {listed}");
    }
}

/// The `<tr>` of `job` in the page's job list.
fn job_row(page: &str, job: &str) -> String {
    let list = &page[page.find("id=\"job-list\"").expect("the job list")..];
    let cell = format!("<td>{job}</td>");
    let at = list
        .find(&cell)
        .unwrap_or_else(|| panic!("{job} not in the job list"));
    let start = list[..at].rfind("<tr").unwrap();
    let end = at + list[at..].find("</tr>").unwrap();
    list[start..end].to_string()
}

/// The page in a real browser, against `twinsite run` on its embedded default: the sign-in
/// form (typed into and submitted like a person does), the 20 sample jobs, the session
/// cookie as the browser stores it, and after dc-a is lost (simulated), the site-loss
/// operation with its jobs and the recoveries. Prints the page's load time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_page_shows_the_sample_jobs_then_a_site_loss_and_its_recoveries() {
    let controller = ControllerProcess::start("", &[]).await;
    let jobs: Vec<serde_json::Value> = serde_json::from_str(
        &controller
            .wait_for(
                "/api/v1/jobs",
                Duration::from_secs(60),
                "20 sample jobs placed",
                |body| {
                    serde_json::from_str::<Vec<serde_json::Value>>(body)
                        .is_ok_and(|j| j.len() == 20 && j.iter().all(|j| j["site"].is_string()))
                },
            )
            .await,
    )
    .unwrap();
    let mut browser = Browser::launch().await;
    let tab = browser.new_tab().await;
    let home = controller.url("/");

    tracing::info!("--- the sign-in form, typed into and submitted");
    browser.navigate(&tab, &home).await;
    let form = browser.html(&tab).await;
    assert!(form.contains("action=\"/login\""), "{form}");
    browser
        .type_into(&tab, "input[name=token]", &controller.read_token)
        .await;
    browser.press_enter(&tab).await;
    let page = browser.html(&tab).await;
    for job in &jobs {
        let name = format!(
            "{}/{}",
            job["namespace"].as_str().unwrap(),
            job["name"].as_str().unwrap()
        );
        assert!(
            page.contains(&name),
            "{name} missing from the page:\n{page}"
        );
    }
    assert!(page.contains("Jobs (20)"), "{page}");
    let cookies = browser.cookies(&tab, &home).await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "twinsite_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(browser.screenshot(&tab).await.len() > 1000);

    tracing::info!("--- page load time against the embedded default");
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(browser.navigate(&tab, &home).await);
    }
    times.sort();
    println!(
        "page load in Chromium (embedded default, 20 jobs, 2 sites): median {:?}, min {:?}, max {:?}",
        times[2], times[0], times[4]
    );

    tracing::info!(
        "--- some of dc-a's jobs have a checkpoint at dc-b, so a site loss can restore them"
    );
    // Replication rounds run every 30 s (the built-in policy); a job whose first checkpoint
    // is not yet at dc-b stays in the operation's "not fitting" list, which the page shows too.
    let deadline = Instant::now() + Duration::from_secs(150);
    let restorable = loop {
        let (status, body) = controller
            .admin(
                reqwest::Method::POST,
                "/api/v1/failover",
                r#"{"from":"dc-a","mode":"forced","dryRun":true}"#,
            )
            .await;
        let plan: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let moves = plan["plan"]["moves"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if status == 200 && !moves.is_empty() && moves.iter().all(|m| !m["restore_from"].is_null())
        {
            break moves[0]["job"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of dc-a's jobs reached dc-b: {status} {body}\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The page shows that job's RPO exposure as the age of its checkpoint at dc-b (the leader
    // judges exposure every few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.navigate(&tab, &home).await;
        let page = browser.html(&tab).await;
        let row = job_row(&page, &restorable);
        if row.contains("dc-b: ") && !row.contains("all state") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{restorable}'s exposure at dc-b never shown as a checkpoint's age: {row}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    tracing::info!("--- dc-a is lost");
    let (status, body) = controller
        .admin(
            reqwest::Method::POST,
            "/api/v1/sim/dc-a/faults",
            r#"{"kind":"site-down"}"#,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let started = Instant::now();
    controller
        .wait_for(
            "/api/v1/failover",
            Duration::from_secs(180),
            "a site-loss operation that moved jobs",
            |body| {
                serde_json::from_str::<Vec<serde_json::Value>>(body).is_ok_and(|ops| {
                    ops.iter().any(|op| {
                        op["kind"]["kind"] == "site-loss"
                            && op["progress"]["done"].as_u64().unwrap_or(0) > 0
                    })
                })
            },
        )
        .await;
    println!("site loss failed over in {:?}", started.elapsed());
    let recoveries: serde_json::Value =
        serde_json::from_str(&controller.read("/api/v1/recoveries").await).unwrap();
    let relaunched: Vec<String> = recoveries["relaunched"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"]["kind"] == "site-lost")
        .map(|r| r["job"].as_str().unwrap().to_string())
        .collect();
    assert!(!relaunched.is_empty(), "{recoveries}");

    // The operation's progress is stored as it happens, while the sites table is the engine's
    // view exported at the end of the leader's pass: the page agrees within a pass or two.
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        browser.navigate(&tab, &home).await;
        let page = browser.html(&tab).await;
        let site_lost = page.contains("id=\"site-dc-a\"") && page.contains("<td>lost</td>");
        if (page.contains("site-loss dc-a → dc-b") && site_lost) || Instant::now() >= deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(page.contains("site-loss dc-a → dc-b"), "{page}");
    assert!(
        page.contains("id=\"site-dc-a\"") && page.contains("<td>lost</td>"),
        "{page}"
    );
    let recoveries_at = page.find("id=\"recoveries\"").unwrap();
    for job in &relaunched {
        assert!(
            page[recoveries_at..].contains(job.as_str()),
            "{job} not among the recoveries"
        );
    }
    assert!(page[recoveries_at..].contains("site-lost"));
}
