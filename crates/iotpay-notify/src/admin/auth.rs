//! Who may use the admin listener: bearer tokens from `ADMIN_TOKENS`, compared in constant time,
//! and the console's session cookie and CSRF token derived from them.
//!
//! Sessions are stateless: the cookie is `<expiry>.<mac>` where the MAC is an HMAC-SHA256 keyed by
//! the token that signed in. Any replica with the same `ADMIN_TOKENS` accepts it, and removing a
//! token from `ADMIN_TOKENS` ends every session it opened.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AdminState;

/// Shortest accepted token: 32 random characters leave nothing to guess.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The accepted admin tokens (several during rotation). Never printed.
#[derive(Clone)]
pub struct AdminTokens {
    /// SHA-256 of each token: comparing fixed-length digests leaks neither content nor length.
    digests: Vec<[u8; 32]>,
    /// The tokens themselves, as keys of the session MACs.
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens(<{} redacted>)", self.keys.len())
    }
}

impl AdminTokens {
    /// Parses `ADMIN_TOKENS`: comma-separated, each at least [`MIN_TOKEN_CHARS`] visible ASCII
    /// characters. The error names the entry by position, never its value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, t) in s.split(',').map(str::trim).enumerate() {
            if t.is_empty() {
                continue;
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("entry {} has characters other than visible ASCII", i + 1));
            }
            if t.len() < MIN_TOKEN_CHARS {
                return Err(format!("entry {} is shorter than {MIN_TOKEN_CHARS} characters", i + 1));
            }
            keys.push(t.as_bytes().to_vec());
        }
        if keys.is_empty() {
            return Err("no tokens".into());
        }
        let digests = keys.iter().map(|k| Sha256::digest(k).into()).collect();
        Ok(Self { digests, keys })
    }

    /// The index of the token equal to `presented`; every token is compared, in constant time.
    fn find(&self, presented: &[u8]) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for (i, d) in self.digests.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found
    }

    /// True when `presented` is one of the tokens.
    pub fn accepts(&self, presented: &str) -> bool {
        self.find(presented.as_bytes()).is_some()
    }

    /// A session cookie value for a sign-in with `token`, valid until `expires` (unix seconds);
    /// `None` when the token is not accepted.
    pub fn open_session(&self, token: &str, expires: i64) -> Option<String> {
        let i = self.find(token.as_bytes())?;
        Some(format!("{expires}.{}", mac(&self.keys[i], &format!("session:{expires}"))))
    }

    /// True when `cookie` is a session opened by a current token that has not expired at `now`.
    pub fn session_valid(&self, cookie: &str, now: i64) -> bool {
        let Some((expires, tag)) = cookie.split_once('.') else { return false };
        let Ok(at) = expires.parse::<i64>() else { return false };
        if at <= now {
            return false;
        }
        let mut ok = false;
        for key in &self.keys {
            let want = mac(key, &format!("session:{at}"));
            ok |= bool::from(want.as_bytes().ct_eq(tag.as_bytes()));
        }
        ok
    }

    /// The CSRF token of a session: forms carry it, state-changing requests must present it.
    /// Bound to the session, so a token leaked from one session is useless in another.
    pub fn csrf_for(&self, cookie: &str) -> String {
        // Keyed by every token's digest at once: only this deployment can compute it.
        let key: Vec<u8> = self.digests.iter().flatten().copied().collect();
        mac(&key, &format!("csrf:{cookie}"))
    }

    /// True when `presented` is the CSRF token of `cookie`.
    pub fn csrf_valid(&self, cookie: &str, presented: &str) -> bool {
        bool::from(self.csrf_for(cookie).as_bytes().ct_eq(presented.as_bytes()))
    }
}

fn mac(key: &[u8], msg: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 7235 §2.1: `bearer`, `BEARER` are the same scheme); spaces around the token are ignored.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware of `/api/...`: a request without `Authorization: Bearer <one of ADMIN_TOKENS>` gets
/// `401` with a JSON error, before any handler or body reading.
pub async fn require_bearer(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
    match presented {
        Some(t) if state.tokens.accepts(t) => next.run(request).await,
        Some(_) => {
            metrics::counter!("iotpay_admin_auth_failures_total", "reason" => "wrong_token").increment(1);
            axum::response::IntoResponse::into_response(ApiError::Unauthorized)
        }
        None => {
            metrics::counter!("iotpay_admin_auth_failures_total", "reason" => "missing").increment(1);
            axum::response::IntoResponse::into_response(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parses_and_refuses_short_or_odd_tokens_without_echoing_them() {
        let t = AdminTokens::parse(&format!(" {A} , {B} ,")).unwrap();
        assert!(t.accepts(A) && t.accepts(B));
        assert!(!t.accepts(&A[1..]) && !t.accepts(&format!("{A}x")) && !t.accepts(""));
        let short = AdminTokens::parse("short-secret-token").unwrap_err();
        assert!(short.contains("entry 1") && !short.contains("short-secret"), "{short}");
        let spaced = AdminTokens::parse(&format!("{A},has space inside but long enough 1234567")).unwrap_err();
        assert!(spaced.contains("entry 2") && !spaced.contains("space inside"), "{spaced}");
        assert!(AdminTokens::parse(" , ").is_err());
        assert!(!format!("{t:?}").contains("aaaa"), "Debug never shows a token");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in [format!("Bearer {A}"), format!("bearer {A}"), format!("BEARER {A}"), format!("bEaReR  {A} ")] {
            assert_eq!(bearer_credentials(&v), Some(A), "{v}");
        }
        for v in [format!("Basic {A}"), format!("Bearer{A}"), format!("Bearerx {A}"), A.to_owned()] {
            assert_ne!(bearer_credentials(&v), Some(A), "{v}");
        }
    }

    #[test]
    fn sessions_expire_and_end_with_their_token() {
        let both = AdminTokens::parse(&format!("{A},{B}")).unwrap();
        let cookie = both.open_session(B, 1_000).unwrap();
        assert!(both.open_session("nope-nope-nope-nope-nope-nope-nope", 1_000).is_none());
        assert!(both.session_valid(&cookie, 999));
        assert!(!both.session_valid(&cookie, 1_000), "expired");
        let forged_expiry = cookie.replacen("1000", "9999", 1);
        assert!(!both.session_valid(&forged_expiry, 999), "the expiry is signed");
        let rotated = AdminTokens::parse(A).unwrap();
        assert!(!rotated.session_valid(&cookie, 999), "removing the token ends its sessions");
        assert!(!both.session_valid("garbage", 0) && !both.session_valid("5.", 0));
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let t = AdminTokens::parse(A).unwrap();
        let s1 = t.open_session(A, 100).unwrap();
        let s2 = t.open_session(A, 200).unwrap();
        assert!(t.csrf_valid(&s1, &t.csrf_for(&s1)));
        assert!(!t.csrf_valid(&s2, &t.csrf_for(&s1)));
        assert!(!t.csrf_valid(&s1, ""));
    }
}
