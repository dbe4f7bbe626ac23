//! Bearer-token check for mutating requests: constant-time, 401 without a token, 403 with a
//! wrong one. The token is never logged or echoed.

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

/// Who made a request, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: String,
}

/// Checks `headers` against `token`; the error is the status and a message safe to return.
pub fn authorize(headers: &HeaderMap, token: &str) -> Result<Caller, (StatusCode, String)> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "this request changes state: send Authorization: Bearer <token>".into(),
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <token>`".into(),
        ));
    };
    // `ct_eq` on slices of different lengths returns false without comparing contents, so
    // only the length leaks, which a fixed-size generated token makes worthless.
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        let actor = headers
            .get("x-twinsite-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(|v| format!("token:{v}"))
            .unwrap_or_else(|| "token".into());
        Ok(Caller { actor })
    } else {
        Err((
            StatusCode::FORBIDDEN,
            "the bearer token is not valid".into(),
        ))
    }
}

/// A fresh random token (256 bits, hex) for when none is configured.
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn no_token_is_401_and_a_wrong_one_403() {
        assert_eq!(
            authorize(&headers(None), TOKEN).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&headers(Some("Basic abc")), TOKEN).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&headers(Some("Bearer nope")), TOKEN)
                .unwrap_err()
                .0,
            StatusCode::FORBIDDEN
        );
        let (_, message) = authorize(&headers(Some("Bearer nope")), TOKEN).unwrap_err();
        assert!(!message.contains(TOKEN) && !message.contains("nope"));
    }

    #[test]
    fn the_right_token_passes_and_names_the_caller() {
        let mut h = headers(Some(&format!("Bearer {TOKEN}")));
        assert_eq!(authorize(&h, TOKEN).unwrap().actor, "token");
        h.insert("x-twinsite-actor", "alice".parse().unwrap());
        assert_eq!(authorize(&h, TOKEN).unwrap().actor, "token:alice");
    }

    #[test]
    fn generated_tokens_are_long_and_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
