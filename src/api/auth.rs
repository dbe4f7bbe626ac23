//! Bearer tokens and their roles. Every request needs a token except `/healthz`, `/readyz`
//! and, when configured open, `/metrics`: the **read-only** token may GET (and HEAD), the
//! **admin** token may do everything. 401 without a usable token, 403 with a wrong one or
//! with the read-only token on a change. Tokens are compared in constant time and never
//! logged, echoed or audited.
//!
//! Refused requests are audited, at most [`REFUSALS_AUDITED_PER_WINDOW`] per
//! [`REFUSAL_WINDOW`]: each entry costs a durable write, and an unauthenticated flood must
//! not turn into unbounded store growth. The rest of a window is counted and audited as one
//! summary entry when the next refusal opens a new window.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET and HEAD.
    Read,
    /// Everything.
    Admin,
}

/// The API's access rules.
#[derive(Clone)]
pub struct Access {
    pub admin_token: String,
    /// `None`: only the admin token reads.
    pub read_token: Option<String>,
    /// `/metrics` answers without a token.
    pub open_metrics: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("admin_token", &"<redacted>")
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "<redacted>"),
            )
            .field("open_metrics", &self.open_metrics)
            .finish()
    }
}

/// Who made a request, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: String,
    pub role: Role,
}

/// Why a request was refused: the status, a message safe to return, and who to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// `anonymous`, `unknown-token`, or the read-only caller that tried to change state.
    pub actor: String,
}

/// The name a caller gives itself (`X-Twinsite-Actor`), bounded; it is only a label.
fn claimed_name(headers: &HeaderMap, role_name: &str) -> String {
    headers
        .get("x-twinsite-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(|v| format!("{role_name}:{v}"))
        .unwrap_or_else(|| role_name.to_owned())
}

/// Checks the bearer token of `headers` against `access` for a request that needs `needed`.
pub fn authorize(headers: &HeaderMap, access: &Access, needed: Role) -> Result<Caller, Refusal> {
    let refuse = |status, message: &str, actor: &str| Refusal {
        status,
        message: message.to_owned(),
        actor: actor.to_owned(),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "this request needs a token: send Authorization: Bearer <token> (the read-only token for reads, the admin token for changes)",
            "anonymous",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <token>`",
            "anonymous",
        ));
    };
    // `ct_eq` on slices of different lengths returns false without comparing contents, so
    // only the length leaks, which fixed-size generated tokens make worthless. Both tokens
    // are always compared, so the time does not tell which one nearly matched.
    let is_admin = bool::from(presented.as_bytes().ct_eq(access.admin_token.as_bytes()));
    let is_reader = access
        .read_token
        .as_ref()
        .is_some_and(|read| bool::from(presented.as_bytes().ct_eq(read.as_bytes())));
    let role = match (is_admin, is_reader) {
        (true, _) => Role::Admin,
        (false, true) => Role::Read,
        (false, false) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "the bearer token is not valid",
                "unknown-token",
            ));
        }
    };
    let actor = claimed_name(
        headers,
        match role {
            Role::Admin => "token",
            Role::Read => "read-token",
        },
    );
    if role < needed {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: "the read-only token may only read (GET); changes need the admin token"
                .to_owned(),
            actor,
        });
    }
    Ok(Caller { actor, role })
}

/// A fresh random token (256 bits, hex) for when none is configured.
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many refused requests get an audit entry each per window.
pub const REFUSALS_AUDITED_PER_WINDOW: u32 = 60;
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Rate limit of refusal audit entries (see the module documentation).
#[derive(Debug, Default)]
pub struct RefusalLog {
    window: Mutex<RefusalWindow>,
}

#[derive(Debug, Default)]
struct RefusalWindow {
    started: Option<Instant>,
    audited: u32,
    suppressed: u64,
}

/// What to audit for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalAudit {
    /// This refusal gets its own entry.
    pub audit_this: bool,
    /// Refusals of the previous window that got none: audit one summary entry for them.
    pub suppressed_before: u64,
}

impl RefusalLog {
    /// Counts one refusal at `now`.
    pub fn admit(&self, now: Instant) -> RefusalAudit {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let mut suppressed_before = 0;
        let expired = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= REFUSAL_WINDOW);
        if expired {
            suppressed_before = std::mem::take(&mut window.suppressed);
            window.started = Some(now);
            window.audited = 0;
        }
        let audit_this = window.audited < REFUSALS_AUDITED_PER_WINDOW;
        if audit_this {
            window.audited += 1;
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
        }
        RefusalAudit {
            audit_this,
            suppressed_before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const READ: &str = "fedcba9876543210fedcba9876543210";

    fn access() -> Access {
        Access {
            admin_token: TOKEN.into(),
            read_token: Some(READ.into()),
            open_metrics: false,
        }
    }

    #[test]
    fn no_token_is_401_and_a_wrong_one_403() {
        let access = access();
        for needed in [Role::Read, Role::Admin] {
            assert_eq!(
                authorize(&headers(None), &access, needed)
                    .unwrap_err()
                    .status,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                authorize(&headers(Some("Basic abc")), &access, needed)
                    .unwrap_err()
                    .status,
                StatusCode::UNAUTHORIZED
            );
            let refusal = authorize(&headers(Some("Bearer nope")), &access, needed).unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN);
            assert!(!refusal.message.contains(TOKEN) && !refusal.message.contains("nope"));
            assert!(!refusal.actor.contains("nope"));
        }
    }

    #[test]
    fn the_admin_token_does_everything_and_names_the_caller() {
        let access = access();
        let mut h = headers(Some(&format!("Bearer {TOKEN}")));
        assert_eq!(
            authorize(&h, &access, Role::Admin).unwrap(),
            Caller {
                actor: "token".into(),
                role: Role::Admin
            }
        );
        assert_eq!(
            authorize(&h, &access, Role::Read).unwrap().role,
            Role::Admin
        );
        h.insert("x-twinsite-actor", "alice".parse().unwrap());
        assert_eq!(
            authorize(&h, &access, Role::Admin).unwrap().actor,
            "token:alice"
        );
    }

    #[test]
    fn the_read_token_reads_and_is_refused_changes_with_403() {
        let access = access();
        let h = headers(Some(&format!("Bearer {READ}")));
        assert_eq!(
            authorize(&h, &access, Role::Read).unwrap(),
            Caller {
                actor: "read-token".into(),
                role: Role::Read
            }
        );
        let refusal = authorize(&h, &access, Role::Admin).unwrap_err();
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        assert!(refusal.message.contains("read-only"), "{}", refusal.message);
        assert_eq!(refusal.actor, "read-token");
        let without_reader = Access {
            read_token: None,
            ..access
        };
        assert_eq!(
            authorize(&h, &without_reader, Role::Read)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn refusals_are_audited_one_by_one_up_to_the_limit_then_summed_up() {
        let log = RefusalLog::default();
        let start = Instant::now();
        for _ in 0..REFUSALS_AUDITED_PER_WINDOW {
            assert_eq!(
                log.admit(start),
                RefusalAudit {
                    audit_this: true,
                    suppressed_before: 0
                }
            );
        }
        for _ in 0..5 {
            assert!(!log.admit(start + Duration::from_secs(30)).audit_this);
        }
        assert_eq!(
            log.admit(start + REFUSAL_WINDOW),
            RefusalAudit {
                audit_this: true,
                suppressed_before: 5
            }
        );
        assert_eq!(
            log.admit(start + REFUSAL_WINDOW * 3).suppressed_before,
            0,
            "a summary is written once"
        );
    }

    #[test]
    fn generated_tokens_are_long_and_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
