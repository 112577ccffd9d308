//! IOTPay's MD5 `sign`: canonical string over every non-empty parameter, sorted by name.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::params::Params;
use crate::domain::MerchantKey;

/// The parameter that carries the signature; it never signs itself.
pub const SIGN_FIELD: &str = "sign";

/// Builds `a=1&b=2` from name/value pairs: drops `sign` and empty values, sorts by name in byte order.
pub fn canonical<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut kept: Vec<(&str, &str)> = pairs.into_iter().filter(|(k, v)| *k != SIGN_FIELD && !v.is_empty()).collect();
    kept.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(kept.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Signs a canonical string: upper-case hex MD5 of `canonical&key=KEY`.
pub fn sign_canonical(canonical: &str, key: &MerchantKey) -> String {
    let mut md5 = Md5::new();
    md5.update(canonical.as_bytes());
    if !canonical.is_empty() {
        md5.update(b"&");
    }
    md5.update(b"key=");
    md5.update(key.expose().as_bytes());
    hex::encode_upper(md5.finalize())
}

/// Signs name/value pairs as IOTPay does (used for outgoing requests and by the sandbox).
pub fn sign_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, key: &MerchantKey) -> String {
    sign_canonical(&canonical(pairs), key)
}

/// Signs received parameters, whatever fields they carry.
pub fn sign_params(params: &Params, key: &MerchantKey) -> String {
    sign_pairs(params.sign_pairs(), key)
}

/// True when `received` (hex, any case) matches the sign under any of `keys`; compared in constant time.
pub fn verify(params: &Params, received: &str, keys: &[MerchantKey]) -> bool {
    let received = received.trim().to_ascii_uppercase();
    let canonical = canonical(params.sign_pairs());
    // Every key is tried, so timing does not reveal which key (if any) matched.
    keys.iter().fold(false, |matched, key| {
        let expected = sign_canonical(&canonical, key);
        let eq: bool = expected.as_bytes().ct_eq(received.as_bytes()).into();
        matched | eq
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    const VECTORS: &str = include_str!("../tests/data/sign-vectors.json");

    fn vectors() -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        doc["vectors"].as_array().unwrap().clone()
    }

    #[test]
    fn every_published_vector_matches() {
        let vectors = vectors();
        assert!(vectors.len() >= 8, "vector file lost entries");
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let key = MerchantKey::new(v["key"].as_str().unwrap());
            let body = serde_json::to_vec(&v["fields"]).unwrap();
            let params = Params::from_json(&body).unwrap();
            assert_eq!(
                canonical(params.sign_pairs()),
                v["canonical_without_key"].as_str().unwrap(),
                "canonical string of vector {name}"
            );
            let expected = v["sign"].as_str().unwrap();
            assert_eq!(sign_params(&params, &key), expected, "sign of vector {name}");
            assert!(verify(&params, expected, std::slice::from_ref(&key)), "verify {name}");
            assert!(
                verify(&params, &expected.to_ascii_lowercase(), std::slice::from_ref(&key)),
                "lower-case hex accepted for {name}"
            );
            assert!(!verify(&params, expected, &[MerchantKey::new("other")]), "wrong key rejected for {name}");
        }
    }

    #[test]
    fn canonical_edge_cases() {
        assert_eq!(canonical([]), "");
        assert_eq!(canonical([("sign", "X"), ("a", "")]), "");
        // Values are raw: `&` and `=` inside a value are not escaped.
        assert_eq!(canonical([("b", "x=1&y=2"), ("a", "1")]), "a=1&b=x=1&y=2");
        // Byte order: upper case before lower case, `_` between them.
        assert_eq!(canonical([("b", "1"), ("_", "2"), ("B", "3")]), "B=3&_=2&b=1");
        // `0` is a value.
        assert_eq!(canonical([("refundable", "0")]), "refundable=0");
    }

    #[test]
    fn json_null_and_empty_string_are_dropped_but_zero_is_kept() {
        let p = Params::from_json(br#"{"a":null,"b":"","c":0,"d":false}"#).unwrap();
        assert_eq!(canonical(p.sign_pairs()), "c=0&d=false");
    }

    #[test]
    fn json_numbers_sign_as_sent() {
        let p = Params::from_json(br#"{"amount": 1500, "rate": 1.50}"#).unwrap();
        assert_eq!(canonical(p.sign_pairs()), "amount=1500&rate=1.50");
    }

    #[test]
    fn tampered_field_fails_verification() {
        let key = MerchantKey::new("k1");
        let p = Params::from_json(br#"{"mchId":"1","amount":100}"#).unwrap();
        let s = sign_params(&p, &key);
        let tampered = Params::from_json(br#"{"mchId":"1","amount":101}"#).unwrap();
        assert!(!verify(&tampered, &s, std::slice::from_ref(&key)));
        let added = Params::from_json(br#"{"mchId":"1","amount":100,"extra":"x"}"#).unwrap();
        assert!(!verify(&added, &s, &[key]));
    }

    #[test]
    fn any_configured_key_verifies_for_rotation() {
        let old = MerchantKey::new("old");
        let new = MerchantKey::new("new");
        let p = Params::from_json(br#"{"mchId":"1","amount":100}"#).unwrap();
        let s = sign_params(&p, &new);
        assert!(verify(&p, &s, &[old.clone(), new]));
        assert!(!verify(&p, &s, &[old]));
        assert!(!verify(&p, "", &[MerchantKey::new("x")]));
    }
}
