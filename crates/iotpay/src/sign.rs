//! IOTPay's MD5 `sign`: canonical string over every non-empty parameter, sorted by name.
//!
//! Two sort orders exist. IOTPay's guide says "lexicographic, case-sensitive" (byte order), but
//! its own PHP code sorts with `ksort(SORT_NATURAL | SORT_FLAG_CASE)`: case-insensitive, digit
//! runs compared as numbers. They agree for every field IOTPay documents today and differ for
//! names such as `payment`/`payOrderId` or `param2`/`param10`. A received sign is accepted in
//! either order (same fields, same values: nothing is weakened); outgoing requests are signed in
//! the order IOTPay's code uses.

use std::cmp::Ordering;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::params::Params;
use crate::domain::MerchantKey;

/// The parameter that carries the signature; it never signs itself.
pub const SIGN_FIELD: &str = "sign";

/// How names are sorted before signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOrder {
    /// Byte (ASCII) order, case-sensitive: what IOTPay's guide documents.
    Byte,
    /// PHP's `ksort(SORT_NATURAL | SORT_FLAG_CASE)`: what IOTPay's own code does.
    Natural,
}

/// Builds `a=1&b=2` from name/value pairs: drops `sign` and empty values, sorts by name in byte order.
pub fn canonical<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    canonical_in(SignOrder::Byte, pairs)
}

/// Builds the canonical string with names sorted in `order`.
pub fn canonical_in<'a>(order: SignOrder, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut kept: Vec<(&str, &str)> = pairs.into_iter().filter(|(k, v)| *k != SIGN_FIELD && !v.is_empty()).collect();
    match order {
        SignOrder::Byte => kept.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes())),
        // Stable: names equal but for case keep their received order, as PHP 8's stable sort does.
        SignOrder::Natural => kept.sort_by(|a, b| natural_cmp(a.0, b.0)),
    }
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

/// PHP's `strnatcasecmp` (ext/standard/strnatcmp.c) on parameter names: ASCII letters compared
/// upper-cased (so `_` sorts after letters), digit runs compared as numbers — by length then
/// digits — unless one starts with `0`, when they are compared digit by digit.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(&x), Some(&y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let end_a = i + a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let end_b = j + b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
                let (run_a, run_b) = (&a[i..end_a], &b[j..end_b]);
                let ord = if x == b'0' || y == b'0' {
                    run_a.cmp(run_b)
                } else {
                    run_a.len().cmp(&run_b.len()).then_with(|| run_a.cmp(run_b))
                };
                if ord != Ordering::Equal {
                    return ord;
                }
                (i, j) = (end_a, end_b);
            }
            (Some(&x), Some(&y)) => {
                let ord = x.to_ascii_uppercase().cmp(&y.to_ascii_uppercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                (i, j) = (i + 1, j + 1);
            }
        }
    }
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

/// Signs name/value pairs as IOTPay's code does, in [`SignOrder::Natural`] (outgoing requests, the sandbox).
pub fn sign_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, key: &MerchantKey) -> String {
    sign_canonical(&canonical_in(SignOrder::Natural, pairs), key)
}

/// Signs parameters as IOTPay's code does, whatever fields they carry.
pub fn sign_params(params: &Params, key: &MerchantKey) -> String {
    sign_pairs(params.sign_pairs(), key)
}

/// Adds `sign` to a JSON object's fields (replacing any), signed as IOTPay's code signs: each
/// value signs as the text a receiver reads from the serialized object (a string as itself,
/// `null` as nothing, a number or boolean as its JSON). What the sandbox and the load
/// generators send, and what tests build their notifications with.
pub fn sign_object(fields: &mut serde_json::Map<String, serde_json::Value>, key: &MerchantKey) {
    use serde_json::Value;
    let texts: Vec<(&str, std::borrow::Cow<'_, str>)> = fields
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.as_str().into(),
                Value::Null => "".into(),
                other => other.to_string().into(),
            };
            (name.as_str(), text)
        })
        .collect();
    let sign = sign_pairs(texts.iter().map(|(name, text)| (*name, text.as_ref())), key);
    fields.insert(SIGN_FIELD.into(), Value::String(sign));
}

/// A `sign` as received: exactly 32 hex digits (either case; no spaces), held upper-case, as
/// [`sign_canonical`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSign(String);

impl ReceivedSign {
    /// Reads `text` as a sign; `None` when it is not 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(text.to_ascii_uppercase()))
    }

    /// Reads the `sign` field of `params`; `None` when it is absent or not 32 hex digits.
    pub fn from_params(params: &Params) -> Option<Self> {
        params.text(SIGN_FIELD).and_then(Self::parse)
    }

    /// True when this sign matches `params` under any of `keys`, in byte order or, only when
    /// that fails and the order differs, in natural order; compared in constant time.
    pub fn verifies(&self, params: &Params, keys: &[MerchantKey]) -> bool {
        let byte = canonical_in(SignOrder::Byte, params.sign_pairs());
        if matches_any_key(&byte, &self.0, keys) {
            return true;
        }
        let natural = canonical_in(SignOrder::Natural, params.sign_pairs());
        natural != byte && matches_any_key(&natural, &self.0, keys)
    }
}

/// True when `received` is a well-formed sign ([`ReceivedSign::parse`]) that
/// [verifies](ReceivedSign::verifies) `params` under one of `keys`.
pub fn verify(params: &Params, received: &str, keys: &[MerchantKey]) -> bool {
    ReceivedSign::parse(received).is_some_and(|sign| sign.verifies(params, keys))
}

fn matches_any_key(canonical: &str, received: &str, keys: &[MerchantKey]) -> bool {
    // Every key is tried, so timing does not reveal which key (if any) matched.
    keys.iter().fold(false, |matched, key| {
        let expected = sign_canonical(canonical, key);
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
            let params = match v["form"].as_str() {
                Some(form) => Params::from_form(form.as_bytes()).unwrap(),
                None => Params::from_json(&serde_json::to_vec(&v["fields"]).unwrap()).unwrap(),
            };
            assert_eq!(
                canonical(params.sign_pairs()),
                v["canonical_without_key"].as_str().unwrap(),
                "canonical string of vector {name}"
            );
            if let Some(natural) = v["natural_canonical_without_key"].as_str() {
                assert_eq!(canonical_in(SignOrder::Natural, params.sign_pairs()), natural, "natural order of {name}");
            }
            let expected = v["sign"].as_str().unwrap();
            let signed_in = match v["sign_order"].as_str() {
                Some("natural") => v["natural_canonical_without_key"].as_str().unwrap(),
                _ => v["canonical_without_key"].as_str().unwrap(),
            };
            assert_eq!(sign_canonical(signed_in, &key), expected, "sign of vector {name}");
            assert!(verify(&params, expected, std::slice::from_ref(&key)), "verify {name}");
            assert!(
                verify(&params, &expected.to_ascii_lowercase(), std::slice::from_ref(&key)),
                "lower-case hex accepted for {name}"
            );
            assert!(!verify(&params, expected, &[MerchantKey::new("other")]), "wrong key rejected for {name}");
        }
    }

    #[test]
    fn a_received_sign_is_32_hex_digits_in_either_case() {
        let upper = "0123456789ABCDEF0123456789ABCDEF";
        assert_eq!(ReceivedSign::parse(upper), ReceivedSign::parse(&upper.to_ascii_lowercase()));
        assert!(ReceivedSign::parse(upper).is_some());
        for bad in
            ["", &upper[1..], &format!("{upper}0"), &format!(" {}", &upper[1..]), "0123456789ABCDEF0123456789ABCDEG"]
        {
            assert_eq!(ReceivedSign::parse(bad), None, "{bad:?}");
        }
        let p = Params::from_form(b"a=1&sign=0123456789ABCDEF0123456789ABCDEF").unwrap();
        assert!(ReceivedSign::from_params(&p).is_some());
        assert_eq!(ReceivedSign::from_params(&Params::from_form(b"a=1").unwrap()), None);
    }

    #[test]
    fn signed_objects_verify_with_the_receivers_code() {
        let key = MerchantKey::new("k");
        let mut fields = match serde_json::json!({"a": 1, "b": "", "c": "x", "d": null, "e": true, "f": 1e3}) {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        fields.insert(SIGN_FIELD.into(), "stale".into());
        sign_object(&mut fields, &key);
        let params = Params::from_json(serde_json::Value::Object(fields.clone()).to_string().as_bytes()).unwrap();
        assert!(verify(&params, fields["sign"].as_str().unwrap(), std::slice::from_ref(&key)));
        assert!(!verify(&params, fields["sign"].as_str().unwrap(), &[MerchantKey::new("other")]));
        assert_eq!(fields["sign"], sign_params(&params, &key), "the sign the sandbox's own code computed");
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

    #[test]
    fn natural_order_is_phps_case_insensitive_natural_sort() {
        use std::cmp::Ordering::*;
        let cases = [
            ("param2", "param10", Less),
            ("payment", "payOrderId", Less),
            ("ab", "a_b", Less),
            ("x9", "x10", Less),
            ("x01", "x1", Less),
            ("x007", "x07", Less),
            ("amount", "Amount", Equal),
            ("mchId", "mchOrderNo", Less),
            ("sign", "signType", Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(natural_cmp(a, b), expected, "{a} vs {b}");
            assert_eq!(natural_cmp(b, a), expected.reverse(), "{b} vs {a}");
        }
        // Where the two orders disagree: the test below relies on it.
        assert_eq!(canonical([("payment", "1"), ("payOrderId", "2")]), "payOrderId=2&payment=1");
        assert_eq!(canonical_in(SignOrder::Natural, [("payOrderId", "2"), ("payment", "1")]), "payment=1&payOrderId=2");
        assert_eq!(canonical([("param2", "b"), ("param10", "a")]), "param10=a&param2=b");
        assert_eq!(canonical_in(SignOrder::Natural, [("param10", "a"), ("param2", "b")]), "param2=b&param10=a");
    }

    #[test]
    fn a_sign_in_either_order_verifies_and_nothing_else_does() {
        let key = MerchantKey::new("k-orders");
        let p = Params::from_form(b"payment=1&payOrderId=P1&param10=a&param2=b&mchId=7").unwrap();
        let byte = canonical_in(SignOrder::Byte, p.sign_pairs());
        let natural = canonical_in(SignOrder::Natural, p.sign_pairs());
        assert_ne!(byte, natural, "the case must be one where the orders differ");
        let by_byte = sign_canonical(&byte, &key);
        let by_natural = sign_canonical(&natural, &key);
        assert!(verify(&p, &by_byte, std::slice::from_ref(&key)), "byte order (the guide)");
        assert!(verify(&p, &by_natural, std::slice::from_ref(&key)), "natural order (IOTPay's PHP)");
        assert_eq!(sign_params(&p, &key), by_natural, "outgoing signs use IOTPay's order");
        // Any other order of the same pairs is not a valid sign.
        let mut reversed: Vec<&str> = byte.split('&').collect();
        reversed.reverse();
        assert!(!verify(&p, &sign_canonical(&reversed.join("&"), &key), std::slice::from_ref(&key)));
        // Tampering fails in both orders.
        let tampered = Params::from_form(b"payment=1&payOrderId=P1&param10=a&param2=c&mchId=7").unwrap();
        assert!(!verify(&tampered, &by_byte, std::slice::from_ref(&key)));
        assert!(!verify(&tampered, &by_natural, std::slice::from_ref(&key)));
        assert!(!verify(&p, &by_natural, &[MerchantKey::new("other")]));
    }
}
