//! Reading API input strictly: query strings and JSON bodies with known fields only, and the
//! ids, times and cursors inside them. Every refusal names the field; nothing is half-applied
//! because handlers act only after all input has been read.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::admin::error::ApiError;
use crate::store::admin::Cursor;

/// The query string as `name → value`, refusing unknown, repeated and empty parameters.
pub fn query(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::bad("the query string is not URL-encoded"))?;
    let mut out = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::field(clip(&k), "unknown query parameter"));
        }
        if v.is_empty() {
            return Err(ApiError::field(k, "must not be empty"));
        }
        if out.contains_key(&k) {
            return Err(ApiError::field(k, "given more than once"));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// A JSON object body with known fields only. An empty body is `{}` when `empty_ok`.
pub fn json_object(
    headers: &HeaderMap,
    body: &[u8],
    allowed: &[&str],
    empty_ok: bool,
) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() && empty_ok {
        return Ok(Map::new());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("the body must be a JSON object"));
    }
    // serde_json keeps the last of duplicate keys; which one the sender meant is ambiguous.
    let StrictObject(map) =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the body is refused: {e}")))?;
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::field(clip(unknown), "unknown field"));
    }
    Ok(map)
}

/// A JSON object whose top-level keys are all distinct.
struct StrictObject(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{}`", clip(&k))));
                    }
                    map.insert(k, v);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

/// Shortens an attacker-chosen name before it is echoed back.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An event id: `evt_` and 32 lowercase hex digits.
pub fn event_id(field: &str, s: &str) -> Result<String, ApiError> {
    let ok = s.len() == 36
        && s.starts_with("evt_")
        && s[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(ApiError::field(field, "expected an event id: evt_ followed by 32 lowercase hex digits"))
    }
}

/// An RFC 3339 time.
pub fn time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| ApiError::field(field, "expected an RFC 3339 time, e.g. 2026-11-22T04:59:42Z"))
}

/// A short printable identifier (merchant ids, order numbers, types): at most 128 characters.
pub fn text(field: &str, s: &str) -> Result<String, ApiError> {
    if s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(ApiError::field(field, "expected at most 128 printable characters"));
    }
    Ok(s.to_owned())
}

/// A whole number in `min..=max`.
pub fn number(field: &str, s: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::field(field, format!("expected a whole number from {min} to {max}"))),
    }
}

/// Encodes the position after `created_at`/`event_id` as an opaque cursor.
pub fn encode_cursor(c: &Cursor) -> String {
    let raw = format!("{}:{}", c.created_at.timestamp_micros(), c.event_id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Reads a cursor made by [`encode_cursor`].
pub fn decode_cursor(field: &str, s: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::field(field, "malformed cursor: pass next_cursor of the previous page unchanged");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let created_at = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    let event_id = event_id(field, id).map_err(|_| bad())?;
    Ok(Cursor { created_at, event_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_refuse_unknown_repeated_and_empty_parameters() {
        assert_eq!(query(Some("a=1&b=x%20y"), &["a", "b"]).unwrap()["b"], "x y");
        let field_of = |e: ApiError| match e {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(query(Some("a=1&zz=2"), &["a"]).unwrap_err()).as_deref(), Some("zz"));
        assert_eq!(field_of(query(Some("a=1&a=2"), &["a"]).unwrap_err()).as_deref(), Some("a"));
        assert_eq!(field_of(query(Some("a="), &["a"]).unwrap_err()).as_deref(), Some("a"));
        assert!(query(None, &[]).unwrap().is_empty());
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            event_id: format!("evt_{}", "ab".repeat(16)),
        };
        assert_eq!(decode_cursor("cursor", &encode_cursor(&c)).unwrap(), c);
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1:evt_x")] {
            assert!(decode_cursor("cursor", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_ids_are_checked() {
        assert!(event_id("e", &format!("evt_{}", "0f".repeat(16))).is_ok());
        for bad in ["evt_", "evt_XYZ", &format!("evt_{}", "0F".repeat(16)), &format!("xxx_{}", "0f".repeat(16))] {
            assert!(event_id("e", bad).is_err(), "{bad}");
        }
    }
}
