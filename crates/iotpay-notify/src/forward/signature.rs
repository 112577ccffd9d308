//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A Standard Webhooks signing secret (`whsec_` + base64). Never printed.
#[derive(Clone)]
pub struct ForwardSecret(Vec<u8>);

impl ForwardSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64 = s.trim().strip_prefix("whsec_").ok_or("must start with whsec_")?;
        let key =
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "the part after whsec_ is not base64")?;
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        Ok(Self(key))
    }

    /// The decoded key bytes, for HMAC only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ForwardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardSecret(<redacted>)")
    }
}

/// Largest clock difference accepted when verifying (the Standard Webhooks default).
pub const TOLERANCE_SECS: i64 = 5 * 60;

fn mac(secret: &ForwardSecret, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value for one attempt.
pub fn sign(secret: &ForwardSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
}

/// Why a received webhook does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The timestamp is too far from `now`.
    #[error("timestamp outside the tolerance window")]
    Stale,
    /// No `v1` signature in the header matches.
    #[error("no matching v1 signature")]
    Mismatch,
}

/// Verifies a `webhook-signature` header (space-separated `v1,<sig>` entries) at time `now`.
pub fn verify(
    secret: &ForwardSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let matches = header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|sig| engine.decode(sig).ok())
        .any(|sig| mac(secret, id, timestamp, body).verify_slice(&sig).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn forward_secret_decodes() {
        let s = ForwardSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(s.expose().len(), 24);
        assert!(!format!("{s:?}").contains("MfKQ"));
    }

    #[test]
    fn reference_vector() {
        let secret = ForwardSecret::parse(SECRET).unwrap();
        assert_eq!(sign(&secret, ID, TS, BODY), EXPECTED);
    }

    #[test]
    fn verify_accepts_the_vector_and_rejects_tampering() {
        let secret = ForwardSecret::parse(SECRET).unwrap();
        assert_eq!(verify(&secret, ID, TS, BODY, EXPECTED, TS + 10), Ok(()));
        assert_eq!(verify(&secret, ID, TS, BODY, &format!("v1,bogus {EXPECTED}"), TS), Ok(()));
        assert_eq!(verify(&secret, ID, TS, b"{}", EXPECTED, TS), Err(VerifyError::Mismatch));
        assert_eq!(verify(&secret, "msg_other", TS, BODY, EXPECTED, TS), Err(VerifyError::Mismatch));
        assert_eq!(verify(&secret, ID, TS, BODY, EXPECTED, TS + TOLERANCE_SECS + 1), Err(VerifyError::Stale));
    }
}
