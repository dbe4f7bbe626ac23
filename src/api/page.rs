//! The operator page at `/`, for the people who press the failover button: sites with their
//! health and epoch, jobs by phase and site with their RPO exposure, the current and past
//! failover operations with each job's step, recent recoveries, and the failover engine's
//! planned or forced dry-run plan for a site. Server-rendered HTML, no script (the CSP allows
//! none); it reloads itself every 10 s. It changes nothing: a failover is still started with
//! `twinsite failover` (admin token).
//!
//! Access as every API read: the read-only or admin token as a bearer header, or a session
//! cookie from the sign-in form (`session.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use failover::{MoveMode, MoveStep, Operation};
use scheduler::diagnosis::human_duration;
use scheduler::model::SiteId;
use serde::Deserialize;

use super::session::{self, CSRF_COOKIE, SESSION_COOKIE};
use super::{ApiError, ApiState, auth};
use crate::controller::JobPhase;
use crate::controller::health::op_kind;

/// Recoveries listed, newest first.
const RECOVERIES_SHOWN: usize = 100;

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn now_unix() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

/// Headers every page and form carries: no script, no framing, no caching, no referrer to
/// other sites. (`no-referrer` would make browsers send `Origin: null` with the sign-in
/// form, which `session::check_origin_only` refuses.)
fn html(status: StatusCode, body: String, cookies: &[String]) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em}\
th{background:#f3f3f3}.bad{background:#fde2e2}.warn{background:#fff4d6}.ok{background:#e6f6e6}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}form.inline{display:inline}small{color:#666}";

fn head(title: &str, refresh: bool) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>{}<style>{STYLE}</style></head><body>",
        esc(title),
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"10\">"
        } else {
            ""
        }
    )
}

/// The sign-in form: the token goes in a password field, the CSRF value in a hidden one.
fn login_form(message: Option<&str>, status: StatusCode, headers: &HeaderMap) -> Response {
    let csrf = session::new_csrf();
    let mut body = head("twinsite: sign in", false);
    body.push_str(
        "<h1>twinsite</h1><p>Sign in with the read-only API token (the admin token works too).</p>",
    );
    if let Some(message) = message {
        let _ = write!(body, "<p class=\"bad\" id=\"error\">{}</p>", esc(message));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\" id=\"login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus required></label> \
         <button type=\"submit\">Sign in</button></form></body></html>"
    );
    html(
        status,
        body,
        &[session::set_cookie(
            headers,
            CSRF_COOKIE,
            &csrf,
            "/login",
            session::CSRF_TTL,
        )],
    )
}

#[derive(Deserialize)]
pub struct PageQuery {
    /// A site to show the dry-run failover plan of.
    plan: Option<String>,
    /// `planned` (default) or `forced`.
    mode: Option<String>,
}

/// `GET /`: the page, or the sign-in form.
pub async fn page(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let session = session::cookie(&headers, SESSION_COOKIE)
        .filter(|s| session::valid_session(&state.access, s, now_unix()))
        .map(str::to_string);
    if headers.contains_key(header::AUTHORIZATION) {
        if let Err(refusal) = auth::authorize(&headers, &state.access, auth::Role::Read) {
            state.audit_refusal(&Method::GET, "/", &refusal).await;
            return ApiError::new(refusal.status, refusal.message).into_response();
        }
    } else if session.is_none() {
        return login_form(None, StatusCode::UNAUTHORIZED, &headers);
    }
    match render(&state, &query, session.as_deref()).await {
        Ok(body) => html(StatusCode::OK, body, &[]),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
}

/// `POST /login`: checks the form came from this page, then the token; on success a session
/// cookie and back to the page. Failures are audited like refused API requests.
pub async fn login(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(reason) = session::check_form_origin(&headers, &form.csrf) {
        let refusal = auth::Refusal {
            status: StatusCode::FORBIDDEN,
            message: reason.to_string(),
            actor: "anonymous".into(),
        };
        state.audit_refusal(&Method::POST, "/login", &refusal).await;
        return login_form(Some(reason), StatusCode::FORBIDDEN, &headers);
    }
    let mut bearer = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", form.token.trim())) {
        bearer.insert(header::AUTHORIZATION, value);
    }
    match auth::authorize(&bearer, &state.access, auth::Role::Read) {
        Ok(caller) => {
            state
                .controller
                .audit_as(&caller.actor, "login", "operator page", "ok")
                .await;
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            for cookie in [
                session::set_cookie(
                    &headers,
                    SESSION_COOKIE,
                    &session::new_session(&state.access, now_unix()),
                    "/",
                    session::SESSION_TTL,
                ),
                session::clear_cookie(&headers, CSRF_COOKIE, "/login"),
            ] {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(refusal) => {
            state.audit_refusal(&Method::POST, "/login", &refusal).await;
            login_form(
                Some("that token is not valid"),
                StatusCode::UNAUTHORIZED,
                &headers,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: ends the browser's session (its cookie), from this page only.
pub async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let expected =
        session::cookie(&headers, SESSION_COOKIE).map(|s| session::logout_token(&state.access, s));
    let same_origin = session::check_origin_only(&headers).is_ok();
    if !same_origin || expected.as_deref() != Some(form.csrf.as_str()) {
        return html(
            StatusCode::FORBIDDEN,
            format!(
                "{}<p class=\"bad\">Sign-out refused: it was not sent from this page.</p></body></html>",
                head("twinsite", false)
            ),
            &[],
        );
    }
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(&headers, SESSION_COOKIE, "/"))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_string(), human_duration)
}

fn step_text(step: &MoveStep) -> String {
    match step {
        MoveStep::Pending => "pending".into(),
        MoveStep::Savepointing => "savepointing".into(),
        MoveStep::Fencing { generation, site } => format!("fencing gen {generation} in {site}"),
        MoveStep::Replicating => "copying savepoint".into(),
        MoveStep::Launching {
            generation, site, ..
        } => format!("launching gen {generation} in {site}"),
        MoveStep::Done { generation, site } => format!("done: gen {generation} runs in {site}"),
        MoveStep::Left { reason } => format!("left: {reason}"),
        MoveStep::Failed { reason, running } => format!(
            "failed: {reason}{}",
            if *running { " (still running)" } else { "" }
        ),
    }
}

fn operation_html(out: &mut String, op: &Operation) {
    let p = op.progress();
    let _ = write!(
        out,
        "<details{} id=\"op-{}\"><summary><b>operation {}</b>: {} {} → {} ({:?}, {}), requested {} — total {}, done {}, in flight {}, pending {}, left {}, failed {}, not fitting {}</summary>",
        if op.is_active() { " open" } else { "" },
        op.id,
        op.id,
        op_kind(op),
        esc(&op.from.0),
        esc(&op.to.0),
        op.mode,
        if op.is_active() {
            "running"
        } else {
            "finished"
        },
        op.requested_at.format("%Y-%m-%d %H:%M:%S UTC"),
        p.total,
        p.done,
        p.in_flight,
        p.pending,
        p.left,
        p.failed,
        p.not_fitting
    );
    out.push_str("<table><tr><th>job</th><th>step</th><th>from generation</th></tr>");
    for j in &op.jobs {
        let class = match j.step {
            MoveStep::Done { .. } => "ok",
            MoveStep::Failed { .. } => "bad",
            _ => "warn",
        };
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.job.0),
            esc(&step_text(&j.step)),
            j.from_generation
        );
    }
    for nf in &op.not_fitting {
        let _ = write!(
            out,
            "<tr class=\"bad\"><td>{}</td><td>not fitting: {}</td><td></td></tr>",
            esc(&nf.job.0),
            esc(&nf.reason)
        );
    }
    out.push_str("</table></details>");
}

/// The page's HTML.
async fn render(
    state: &ApiState,
    query: &PageQuery,
    session: Option<&str>,
) -> Result<String, ApiError> {
    let controller = &state.controller;
    let mut out = head("twinsite", query.plan.is_none());
    let _ = write!(
        out,
        "<h1>twinsite</h1><div><small>{} · this replica {} · reloads every 10 s</small>",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        if controller.is_leading() {
            "leads"
        } else {
            "follows (sites' health, exposure and operations are the leader's to judge)"
        }
    );
    if let Some(session) = session {
        let _ = write!(
            out,
            " <form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            session::logout_token(&state.access, session)
        );
    }
    out.push_str("</div>");

    // Sites.
    let health = controller.site_health();
    out.push_str("<h2 id=\"sites\">Sites</h2><table><tr><th>site</th><th>health</th><th>epoch</th><th>API</th><th>nodes ready</th><th>jobs placed</th></tr>");
    let records = controller.store.list_jobs().await?;
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        if let Some(p) = &r.value.placement {
            *placed.entry(p.site.clone()).or_default() += 1;
        }
    }
    for (id, site) in &controller.sites {
        let h = health.iter().find(|h| h.site == id.0);
        // An unreadable site record is shown as none (the page lists it with the others).
        let stored = match controller.store.get_site(&id.0).await {
            Err(crate::state::StateError::Corrupt { .. }) => None,
            record => record?.map(|v| v.value),
        };
        let status = h.map_or("unknown", |h| h.status);
        let epoch = h
            .map(|h| h.epoch)
            .or(stored.as_ref().map(|s| s.epoch))
            .unwrap_or(0);
        let reachable = site.health().await.api_reachable;
        let (ready, nodes) = match site.snapshot().await {
            Ok(s) => (s.nodes.iter().filter(|n| n.ready).count(), s.nodes.len()),
            Err(_) => (0, 0),
        };
        let class = match status {
            "up" => "ok",
            "suspect" | "returning" => "warn",
            _ => "bad",
        };
        let _ = write!(
            out,
            "<tr class=\"{class}\" id=\"site-{0}\"><td>{0}</td><td>{1}</td><td>{epoch}</td><td>{2}</td><td>{ready}/{nodes}</td><td>{3}</td></tr>",
            esc(&id.0),
            esc(status),
            if reachable {
                "reachable"
            } else {
                "unreachable"
            },
            placed.get(&id.0).copied().unwrap_or(0)
        );
    }
    out.push_str("</table>");

    // Jobs by phase and site.
    let mut counts: BTreeMap<(JobPhase, String), usize> = BTreeMap::new();
    let mut rows = Vec::new();
    let exposures = controller.exposure.judged();
    for r in &records {
        let status = r.value.status.clone();
        let site = r
            .value
            .placement
            .as_ref()
            .map_or_else(|| "—".to_string(), |p| p.site.clone());
        *counts.entry((status.phase, site.clone())).or_default() += 1;
        let id = scheduler::model::JobId::new(&r.value.namespace, &r.value.name);
        let exposure = exposures.get(&id).cloned().unwrap_or_default();
        rows.push((id, site, status, r.value.generation, exposure));
    }
    let sites: Vec<String> = controller
        .sites
        .keys()
        .map(|s| s.0.clone())
        .chain(std::iter::once("—".to_string()))
        .collect();
    let _ = write!(
        out,
        "<h2 id=\"jobs\">Jobs ({})</h2><table id=\"phases\"><tr><th>phase</th>",
        records.len()
    );
    for s in &sites {
        let _ = write!(out, "<th>{}</th>", esc(s));
    }
    out.push_str("</tr>");
    for phase in JobPhase::ALL {
        if !counts.keys().any(|(p, _)| *p == phase) {
            continue;
        }
        let _ = write!(out, "<tr><td>{}</td>", phase.as_str());
        for s in &sites {
            let _ = write!(
                out,
                "<td>{}</td>",
                counts.get(&(phase, s.clone())).copied().unwrap_or(0)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    // Most exposed first: breached, then by RPO (none replicated counts as the most).
    rows.sort_by(|a, b| {
        let worst = |e: &Vec<crate::controller::exposure::PeerExposure>| {
            e.iter()
                .map(|p| (p.exposure.breached, p.exposure.rpo_or_infinity()))
                .fold((false, 0.0f64), |acc, x| (acc.0 || x.0, acc.1.max(x.1)))
        };
        let (wa, wb) = (worst(&a.4), worst(&b.4));
        wb.0.cmp(&wa.0)
            .then(wb.1.total_cmp(&wa.1))
            .then(a.0.cmp(&b.0))
    });
    out.push_str("<table id=\"job-list\"><tr><th>job</th><th>site</th><th>phase</th><th>generation</th><th>RPO exposure (a loss of its site now)</th><th>message</th></tr>");
    for (id, site, status, generation, exposure) in &rows {
        let breached = exposure.iter().any(|e| e.exposure.breached);
        let exposure_text = if exposure.is_empty() {
            "not tracked".to_string()
        } else {
            exposure
                .iter()
                .map(|e| {
                    let rpo = match e.exposure.rpo_seconds {
                        Some(s) => human_duration(Duration::from_secs_f64(s)),
                        None => "all state (nothing at the peer)".to_string(),
                    };
                    let backlog = if e.exposure.backlog_files > 0 {
                        format!(", {} files to copy", e.exposure.backlog_files)
                    } else {
                        String::new()
                    };
                    format!("{}: {rpo}{backlog}", e.peer)
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let class = match status.phase {
            JobPhase::Failed => "bad",
            _ if breached => "bad",
            JobPhase::Running => "",
            _ => "warn",
        };
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{generation}</td><td>{}</td><td>{}</td></tr>",
            esc(&id.0),
            esc(site),
            status.phase.as_str(),
            esc(&exposure_text),
            esc(status.message.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    let unreadable = controller.store.unreadable_records();
    if !unreadable.is_empty() {
        let _ = write!(
            out,
            "<h2 id=\"unreadable\">Stored records twinsite cannot use ({})</h2><p><small>Left out and never acted on; rewrite or delete them.</small></p><table><tr><th>key</th><th>kind</th><th>revision</th><th>why</th></tr>",
            unreadable.len()
        );
        for u in &unreadable {
            let _ = write!(
                out,
                "<tr class=\"bad\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.key),
                u.kind.as_str(),
                u.revision,
                esc(&u.reason)
            );
        }
        out.push_str("</table>");
    }

    // Operations: active first, then the past ones, newest first.
    let mut ops = controller.failover_operations().await?;
    ops.sort_by_key(|o| (!o.is_active(), std::cmp::Reverse(o.id)));
    out.push_str("<h2 id=\"operations\">Failover operations</h2>");
    if ops.is_empty() {
        out.push_str("<p>None.</p>");
    }
    for op in &ops {
        operation_html(&mut out, op);
    }

    // Recoveries.
    let mut reports = controller.failover.reports();
    reports.reverse();
    let _ = write!(
        out,
        "<h2 id=\"recoveries\">Recoveries ({} relaunches{})</h2>",
        reports.len(),
        if reports.len() > RECOVERIES_SHOWN {
            format!(", newest {RECOVERIES_SHOWN} shown")
        } else {
            String::new()
        }
    );
    out.push_str("<table><tr><th>job</th><th>generation</th><th>site</th><th>reason</th><th>operation</th><th>RTO from detection</th><th>RPO</th></tr>");
    for r in reports.iter().take(RECOVERIES_SHOWN) {
        let reason = serde_json::to_value(&r.reason)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.job.0),
            r.generation,
            esc(&r.site.0),
            esc(&reason),
            r.op.map_or_else(String::new, |o| o.to_string()),
            human_duration(r.rto_from_detection),
            seconds(r.rpo)
        );
    }
    out.push_str("</table>");
    let not_relaunched = controller.failover.not_relaunched();
    if !not_relaunched.is_empty() {
        let _ = write!(
            out,
            "<h2 id=\"not-relaunched\">Not relaunched ({})</h2><table><tr><th>job</th><th>why</th></tr>",
            not_relaunched.len()
        );
        for n in not_relaunched.iter().rev().take(RECOVERIES_SHOWN) {
            let _ = write!(
                out,
                "<tr class=\"bad\"><td>{}</td><td>{}</td></tr>",
                esc(&n.job.0),
                esc(&n.reason)
            );
        }
        out.push_str("</table>");
    }

    // Dry-run plan.
    out.push_str("<h2 id=\"plan\">Dry run: fail a site over</h2><form method=\"get\" action=\"/\"><label>Site <select name=\"plan\">");
    for id in controller.sites.keys() {
        let _ = write!(
            out,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(&id.0),
            if query.plan.as_deref() == Some(&id.0) {
                " selected"
            } else {
                ""
            }
        );
    }
    let forced = query.mode.as_deref() == Some("forced");
    let _ = write!(
        out,
        "</select></label> <label><input type=\"radio\" name=\"mode\" value=\"planned\"{}> planned</label> \
         <label><input type=\"radio\" name=\"mode\" value=\"forced\"{}> forced</label> <button type=\"submit\">Show plan</button></form>\
         <p><small>Nothing changes. To run it: <code>twinsite failover --from SITE --planned|--forced</code> (admin token).</small></p>",
        if forced { "" } else { " checked" },
        if forced { " checked" } else { "" }
    );
    if let Some(from) = &query.plan {
        let from = SiteId(from.clone());
        if !controller.sites.contains_key(&from) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("query parameter plan: no site {:?}", from.0),
            ));
        }
        let mode = match query.mode.as_deref() {
            None | Some("planned") => MoveMode::Planned,
            Some("forced") => MoveMode::Forced,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter mode: {other:?} is not planned or forced"),
                ));
            }
        };
        let others: Vec<&SiteId> = controller.sites.keys().filter(|s| **s != from).collect();
        for to in others {
            let plan = match crate::failover_plan::dry_run(controller, &from, to, mode).await? {
                Ok(plan) => plan,
                Err(refused) => {
                    let _ = write!(
                        out,
                        "<h3 id=\"plan-result\">{:?} failover {} → {}: refused</h3><p class=\"bad\">{}</p>",
                        mode,
                        esc(&from.0),
                        esc(&to.0),
                        esc(&refused.to_string())
                    );
                    continue;
                }
            };
            let _ = write!(
                out,
                "<h3 id=\"plan-result\">{:?} failover {} → {}: {} move, {} do not fit, {} preempted</h3>",
                mode,
                esc(&from.0),
                esc(&to.0),
                plan.moves.len(),
                plan.not_fitting.len(),
                plan.preempt.len()
            );
            out.push_str("<table><tr><th>job</th><th>to</th><th>expected RPO</th><th>restores from</th></tr>");
            for m in &plan.moves {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.job.0),
                    esc(&m.to.0),
                    match (mode, m.expected_rpo) {
                        (MoveMode::Planned, _) => "0 (savepoint)".to_string(),
                        (_, rpo) => seconds(rpo),
                    },
                    esc(m
                        .restore_from
                        .as_ref()
                        .map_or("a savepoint taken then", |c| c.path.as_str()))
                );
            }
            for nf in &plan.not_fitting {
                let _ = write!(
                    out,
                    "<tr class=\"bad\"><td>{}</td><td>—</td><td colspan=\"2\">does not fit: {}</td></tr>",
                    esc(&nf.job.0),
                    esc(&nf.reason)
                );
            }
            for job in &plan.preempt {
                let _ = write!(
                    out,
                    "<tr class=\"warn\"><td>{}</td><td>{}</td><td colspan=\"2\">preempted to make room</td></tr>",
                    esc(&job.0),
                    esc(&to.0)
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a job's name or message holds, the page shows it as text: no markup
        /// character survives escaping, and unescaping gives the text back.
        #[test]
        fn escaped_text_holds_no_markup_and_loses_nothing(text in ".{0,200}") {
            let escaped = esc(&text);
            proptest::prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
            let back = escaped
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            proptest::prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn every_character_html_gives_meaning_to_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }
}
