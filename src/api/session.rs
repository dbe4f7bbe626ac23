//! Browser sessions of the operator page (`/`): a person signs in with the read-only (or
//! admin) token once, through a small form, and gets a session cookie; programs send the
//! token as a bearer header as they do for the API.
//!
//! - The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//!   makes the browser send it), scoped to `/`, valid [`SESSION_TTL`], and `Secure` when the
//!   request came through TLS (`X-Forwarded-Proto: https`). It authorises the page only,
//!   never an `/api/…` call: the page reads, and the API keeps its bearer tokens.
//! - Stateless: `v1.<expiry>.<nonce>.<mac>`, the MAC an HMAC-SHA256 keyed by both API tokens,
//!   so every replica accepts it and changing a token ends every session.
//! - The login form is CSRF-safe: a random value in a hidden field must equal the
//!   `HttpOnly`, `SameSite=Strict` cookie set with the form (double submit), and a request
//!   whose `Origin` is not this host, or whose `Sec-Fetch-Site` is `cross-site` or
//!   `same-site`, is refused. Another site can thus neither sign a browser in (login CSRF)
//!   nor out.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{Access, generate_token};

pub const SESSION_COOKIE: &str = "twinsite_session";
pub const CSRF_COOKIE: &str = "twinsite_login_csrf";
/// How long a session lasts; then the person signs in again.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a login form may wait to be submitted.
pub const CSRF_TTL: Duration = Duration::from_secs(600);

type HmacSha256 = Hmac<Sha256>;

/// The MAC key: both tokens, so that rotating either ends every session.
fn key(access: &Access) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"twinsite-session-key\0");
    hash.update(access.admin_token.as_bytes());
    hash.update(b"\0");
    hash.update(access.read_token.as_deref().unwrap_or("").as_bytes());
    hash.finalize().into()
}

fn mac(access: &Access, payload: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(&key(access)).unwrap_or_else(|_| unreachable!());
    mac.update(payload.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new session value, valid until `now + SESSION_TTL`.
pub fn new_session(access: &Access, now_unix: u64) -> String {
    let nonce = &generate_token()[..32];
    let payload = format!("v1.{}.{nonce}", now_unix + SESSION_TTL.as_secs());
    let mac = mac(access, &payload);
    format!("{payload}.{mac}")
}

/// Whether `value` is a session this server issued and that has not expired.
pub fn valid_session(access: &Access, value: &str, now_unix: u64) -> bool {
    // Bounded before anything is computed: a cookie is small.
    if value.len() > 256 {
        return false;
    }
    let Some((payload, presented)) = value.rsplit_once('.') else {
        return false;
    };
    let mut parts = payload.split('.');
    let (Some("v1"), Some(expiry), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return false;
    };
    if nonce.is_empty() || expiry <= now_unix || expiry > now_unix + SESSION_TTL.as_secs() {
        return false;
    }
    bool::from(mac(access, payload).as_bytes().ct_eq(presented.as_bytes()))
}

/// The value of cookie `name` in the request, if sent once.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name (one perhaps planted by a sibling domain):
                    // trust neither.
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for `name=value` with every attribute this module promises.
pub fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure(headers) { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes `name`.
pub fn clear_cookie(headers: &HeaderMap, name: &str, path: &str) -> String {
    set_cookie(headers, name, "", path, Duration::ZERO)
}

/// A fresh CSRF value for a login form.
pub fn new_csrf() -> String {
    generate_token()[..32].to_string()
}

/// The hidden value of the page's sign-out form: bound to the session, so another site
/// cannot forge it.
pub fn logout_token(access: &Access, session: &str) -> String {
    mac(access, &format!("logout.{session}"))[..32].to_string()
}

/// Refuses a request sent by another site's page (`Sec-Fetch-Site`, `Origin`).
pub fn check_origin_only(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err("the form was not sent from this page (Sec-Fetch-Site)");
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let same = origin == format!("http://{host}") || origin == format!("https://{host}");
        if !same {
            return Err("the form was not sent from this page (Origin)");
        }
    }
    Ok(())
}

/// Why a sign-in form post is refused, or `Ok` when it comes from this server's own form.
pub fn check_form_origin(headers: &HeaderMap, field: &str) -> Result<(), &'static str> {
    check_origin_only(headers)?;
    let Some(expected) = cookie(headers, CSRF_COOKIE) else {
        return Err("the login form expired or cookies are off; load the page again");
    };
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(field.as_bytes())) {
        return Err("the login form expired or was not this page's; load the page again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            admin_token: "admin-token-0123456789abcdef".into(),
            read_token: Some("read-token-0123456789abcdef".into()),
            open_metrics: false,
        }
    }

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_with_these_tokens() {
        let a = access();
        let s = new_session(&a, 1000);
        assert!(valid_session(&a, &s, 1000));
        assert!(valid_session(&a, &s, 1000 + SESSION_TTL.as_secs() - 1));
        assert!(!valid_session(&a, &s, 1000 + SESSION_TTL.as_secs()));
        let rotated = Access {
            read_token: Some("another-read-token-0123456789".into()),
            ..a.clone()
        };
        assert!(!valid_session(&rotated, &s, 1000));
    }

    #[test]
    fn a_tampered_or_malformed_session_is_refused() {
        let a = access();
        let s = new_session(&a, 1000);
        // A later expiry with the old MAC.
        let (payload, mac) = s.rsplit_once('.').unwrap();
        let mut parts: Vec<&str> = payload.split('.').collect();
        let later = (1000 + SESSION_TTL.as_secs() + 1).to_string();
        parts[1] = &later;
        assert!(!valid_session(
            &a,
            &format!("{}.{mac}", parts.join(".")),
            2000
        ));
        for bad in [
            "",
            "v1",
            "v1.x.y.z",
            "v2.9999999999.n.m",
            &"a".repeat(300),
            &s[..s.len() - 1],
        ] {
            assert!(!valid_session(&a, bad, 1000), "{bad}");
        }
    }

    #[test]
    fn cookies_carry_every_promised_attribute() {
        let mut h = HeaderMap::new();
        let c = set_cookie(&h, SESSION_COOKIE, "v", "/", SESSION_TTL);
        assert_eq!(
            c,
            "twinsite_session=v; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict"
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(set_cookie(&h, SESSION_COOKIE, "v", "/", SESSION_TTL).ends_with("; Secure"));
        assert!(clear_cookie(&h, CSRF_COOKIE, "/login").contains("Max-Age=0"));
    }

    #[test]
    fn a_form_post_needs_the_matching_cookie_and_this_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_form_origin(&h, "abc").is_err(), "no cookie");
        h.insert(
            header::COOKIE,
            format!("{CSRF_COOKIE}=abc").parse().unwrap(),
        );
        assert!(check_form_origin(&h, "abd").is_err(), "wrong value");
        assert!(check_form_origin(&h, "abc").is_ok());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_form_origin(&h, "abc").is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_form_origin(&h, "abc").is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(check_form_origin(&h, "abc").is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends as a session, only what this server issued opens the
        /// page: every one-character change of a valid session, and any other text, is
        /// refused (and nothing panics).
        #[test]
        fn only_an_issued_session_is_valid(
            at in 0usize..200,
            replacement in proptest::char::any(),
            other in ".{0,300}",
        ) {
            let a = access();
            let s = new_session(&a, 1000);
            let at = at % s.len();
            let mut altered: String = s.chars().take(at).collect();
            altered.push(replacement);
            altered.extend(s.chars().skip(at + 1));
            proptest::prop_assert_eq!(valid_session(&a, &altered, 1000), altered == s);
            proptest::prop_assert_eq!(valid_session(&a, &other, 1000), other == s);
        }
    }

    #[test]
    fn a_cookie_sent_twice_is_trusted_neither_time() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; twinsite_session=x".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("x"));
        h.append(header::COOKIE, "twinsite_session=y".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), None);
    }
}
