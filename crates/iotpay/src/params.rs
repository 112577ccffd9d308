//! The flat name/value parameters of an IOTPay message, parsed from JSON or a form body.
//!
//! Kept generic (not a struct of known fields) because the sign covers every field received,
//! including fields IOTPay adds later.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Longest parameter name accepted.
const MAX_NAME_LEN: usize = 64;
/// Most parameters accepted in one message.
const MAX_PARAMS: usize = 100;

/// One parameter value as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// A JSON string or a form value.
    Text(String),
    /// A JSON number, as its exact source text.
    Number(String),
    /// A JSON boolean.
    Bool(bool),
    /// JSON `null`.
    Null,
}

impl ParamValue {
    /// The text this value contributes to the sign (empty for null).
    pub fn as_text(&self) -> &str {
        match self {
            ParamValue::Text(s) | ParamValue::Number(s) => s,
            ParamValue::Bool(true) => "true",
            ParamValue::Bool(false) => "false",
            ParamValue::Null => "",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Text(s) => serde_json::Value::String(s.clone()),
            ParamValue::Number(n) => serde_json::from_str(n).unwrap_or_else(|_| serde_json::Value::String(n.clone())),
            ParamValue::Bool(b) => serde_json::Value::Bool(*b),
            ParamValue::Null => serde_json::Value::Null,
        }
    }
}

/// Why a body could not be read as IOTPay parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    /// The body is empty.
    #[error("empty body")]
    Empty,
    /// Not valid JSON, or not a JSON object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A value is an array or object; IOTPay messages are flat.
    #[error("field `{0}` is not a flat value")]
    Nested(String),
    /// The same name appears twice: which one was signed is ambiguous.
    #[error("field `{0}` appears more than once")]
    Duplicate(String),
    /// A form field is not valid percent-encoded UTF-8.
    #[error("form body is not valid UTF-8")]
    Encoding,
    /// A field name is empty, too long, or has a character outside `[A-Za-z0-9_]` (IOTPay's
    /// names never do, and a name holding `=` or `&` could re-cut the signed string).
    #[error("invalid field name")]
    Name,
    /// Too many fields.
    #[error("more than {MAX_PARAMS} fields")]
    TooMany,
    /// A value contains a NUL character, which no database text column can hold.
    #[error("field `{0}` contains a NUL character")]
    Nul(String),
    /// The query string and the body give one field different values: which was signed is ambiguous.
    #[error("field `{0}` differs between the query string and the body")]
    Conflict(String),
}

/// Parameters of one message, unique by name, in the order received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    fields: Vec<(String, ParamValue)>,
    form: bool,
}

impl Params {
    /// Parses a JSON object body; rejects nested values and duplicate names.
    pub fn from_json(body: &[u8]) -> Result<Self, ParamsError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ParamsError::Empty);
        }
        let text = std::str::from_utf8(body).map_err(|_| ParamsError::Json("body is not UTF-8".into()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let members = de.deserialize_map(RawMembers).map_err(|e| ParamsError::Json(e.to_string()))?;
        de.end().map_err(|e| ParamsError::Json(e.to_string()))?;
        let mut params = Params::default();
        for (name, raw) in members {
            // The name is checked before anything quotes it (errors name the field).
            check_name(&name)?;
            let value = classify(&name, raw.get())?;
            params.push(name, value)?;
        }
        Ok(params)
    }

    /// Parses an `application/x-www-form-urlencoded` body; rejects duplicate names and bad UTF-8.
    pub fn from_form(body: &[u8]) -> Result<Self, ParamsError> {
        let mut params = Params { form: true, ..Params::default() };
        for segment in body.split(|b| *b == b'&').filter(|s| !s.is_empty()) {
            let (name, value) = match segment.iter().position(|b| *b == b'=') {
                Some(i) => (&segment[..i], &segment[i + 1..]),
                None => (segment, &b""[..]),
            };
            let name = form_decode(name)?;
            let value = form_decode(value)?;
            params.push(name, ParamValue::Text(value))?;
        }
        if params.fields.is_empty() {
            return Err(ParamsError::Empty);
        }
        Ok(params)
    }

    /// Builds parameters from name/text pairs (for messages this service creates).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ParamsError> {
        let mut params = Params { form: true, ..Params::default() };
        for (k, v) in pairs {
            params.push(k.to_owned(), ParamValue::Text(v.to_owned()))?;
        }
        Ok(params)
    }

    /// Parses a form body and the URL's query string together, as IOTPay's v1 platform sends the
    /// same pairs in both. Either may be empty; a field in both must have the same value.
    pub fn from_form_and_query(body: &[u8], query: &[u8]) -> Result<Self, ParamsError> {
        let blank = |b: &[u8]| b.iter().all(u8::is_ascii_whitespace);
        match (blank(body), blank(query)) {
            (_, true) => Self::from_form(body),
            (true, false) => Self::from_form(query),
            (false, false) => {
                let mut params = Self::from_form(body)?;
                for (name, value) in Self::from_form(query)?.fields {
                    match params.get(&name) {
                        Some(v) if *v == value => {}
                        Some(_) => return Err(ParamsError::Conflict(name)),
                        None => params.push(name, value)?,
                    }
                }
                Ok(params)
            }
        }
    }

    fn push(&mut self, name: String, value: ParamValue) -> Result<(), ParamsError> {
        check_name(&name)?;
        if self.fields.len() >= MAX_PARAMS {
            return Err(ParamsError::TooMany);
        }
        if self.get(&name).is_some() {
            return Err(ParamsError::Duplicate(name));
        }
        // Postgres text and jsonb cannot store U+0000: refusing it here turns what would be a
        // permanent 503 (and endless re-sends) into a clear 400.
        if value.as_text().contains('\0') {
            return Err(ParamsError::Nul(name));
        }
        self.fields.push((name, value));
        Ok(())
    }

    /// True when parsed from a form body, where every value is text (numbers included).
    pub fn is_form(&self) -> bool {
        self.form
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The text of `name` when present and non-empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(ParamValue::as_text).filter(|s| !s.is_empty())
    }

    /// True when `name` is present, even with an empty value.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Name/text pairs for signing.
    pub fn sign_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_text()))
    }

    /// All fields, in received order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Replaces the text of `name` (used to mask card numbers before storage).
    pub fn replace_text(&mut self, name: &str, text: String) {
        if let Some((_, v)) = self.fields.iter_mut().find(|(k, _)| k == name) {
            *v = ParamValue::Text(text);
        }
    }

    /// A JSON object of the fields, numbers kept as numbers.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

/// One signed string must mean one set of fields: the sign joins `name=value` with `&`, so a
/// name may hold neither; restricting names to `[A-Za-z0-9_]` (all IOTPay uses) also keeps
/// newlines and other log-forging text out of every message that quotes a name.
fn check_name(name: &str) -> Result<(), ParamsError> {
    let valid =
        !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ParamsError::Name)
    }
}

fn form_decode(raw: &[u8]) -> Result<String, ParamsError> {
    let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(decoded).map_err(|_| ParamsError::Encoding)
}

/// Collects a JSON object's members as raw text, in order, duplicates included.
struct RawMembers;

impl<'de> Visitor<'de> for RawMembers {
    type Value = Vec<(String, Box<RawValue>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.len() >= MAX_PARAMS {
                return Err(de::Error::custom(ParamsError::TooMany));
            }
            members.push((name, map.next_value()?));
        }
        Ok(members)
    }
}

fn classify(name: &str, raw: &str) -> Result<ParamValue, ParamsError> {
    let raw = raw.trim();
    match raw.as_bytes().first() {
        Some(b'"') => {
            serde_json::from_str::<String>(raw).map(ParamValue::Text).map_err(|e| ParamsError::Json(e.to_string()))
        }
        Some(b't') => Ok(ParamValue::Bool(true)),
        Some(b'f') => Ok(ParamValue::Bool(false)),
        Some(b'n') => Ok(ParamValue::Null),
        Some(b'[') | Some(b'{') => Err(ParamsError::Nested(name.to_owned())),
        _ => Ok(ParamValue::Number(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_keeps_raw_number_text() {
        let p = Params::from_json(br#"{"amount": 1500, "x": 1e3, "s": "a\u00e9"}"#).unwrap();
        assert_eq!(p.get("amount"), Some(&ParamValue::Number("1500".into())));
        assert_eq!(p.text("x"), Some("1e3"));
        assert_eq!(p.text("s"), Some("aé"));
    }

    #[test]
    fn json_rejections() {
        assert_eq!(Params::from_json(b""), Err(ParamsError::Empty));
        assert!(matches!(Params::from_json(b"[1,2]"), Err(ParamsError::Json(_))));
        assert!(matches!(Params::from_json(b"\"text\""), Err(ParamsError::Json(_))));
        assert!(matches!(Params::from_json(b"{\"a\":1"), Err(ParamsError::Json(_))));
        assert!(matches!(Params::from_json(b"{\"a\":1} trailing"), Err(ParamsError::Json(_))));
        assert!(matches!(Params::from_json(b"\xff\xfe"), Err(ParamsError::Json(_))));
        assert_eq!(Params::from_json(br#"{"a":{"b":1}}"#), Err(ParamsError::Nested("a".into())));
        assert_eq!(Params::from_json(br#"{"a":[1]}"#), Err(ParamsError::Nested("a".into())));
        assert_eq!(Params::from_json(br#"{"a":1,"a":2}"#), Err(ParamsError::Duplicate("a".into())));
        assert_eq!(Params::from_json(br#"{"":1}"#), Err(ParamsError::Name));
        assert_eq!(Params::from_json(br#"{"a":"x\u0000y"}"#), Err(ParamsError::Nul("a".into())));
    }

    #[test]
    fn form_body_decodes_plus_and_percent() {
        let p = Params::from_form(b"a=x+y&b=%26%3D&c=&d").unwrap();
        assert_eq!(p.text("a"), Some("x y"));
        assert_eq!(p.text("b"), Some("&="));
        assert!(p.has("c") && p.text("c").is_none());
        assert!(p.has("d"));
    }

    #[test]
    fn form_rejections() {
        assert_eq!(Params::from_form(b""), Err(ParamsError::Empty));
        assert_eq!(Params::from_form(b"a=1&a=2"), Err(ParamsError::Duplicate("a".into())));
        assert_eq!(Params::from_form(b"a=%ff"), Err(ParamsError::Encoding));
        assert_eq!(Params::from_form(b"=1"), Err(ParamsError::Name));
        for bad in [&b"a%3Db=1"[..], b"a%26b=1", b"a%0Ab=1", b"a-b=1", b"a.b=1", b"a%20b=1", b"%C3%A9=1"] {
            assert_eq!(Params::from_form(bad), Err(ParamsError::Name), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Params::from_json(br#"{"a\nINFO b":{"x":1}}"#), Err(ParamsError::Name), "name checked first");
        assert_eq!(Params::from_form(b"a=x%00"), Err(ParamsError::Nul("a".into())));
    }

    #[test]
    fn form_and_query_string_merge_and_must_agree() {
        let both = Params::from_form_and_query(b"a=1&b=x+y", b"b=x%20y&a=1").unwrap();
        assert_eq!((both.text("a"), both.text("b"), both.iter().count()), (Some("1"), Some("x y"), 2));
        let query_only = Params::from_form_and_query(b"", b"a=1&c=").unwrap();
        assert_eq!((query_only.text("a"), query_only.has("c")), (Some("1"), true));
        assert_eq!(Params::from_form_and_query(b"a=1", b"").unwrap().text("a"), Some("1"));
        let union = Params::from_form_and_query(b"a=1", b"b=2").unwrap();
        assert_eq!((union.text("a"), union.text("b")), (Some("1"), Some("2")));
        assert_eq!(Params::from_form_and_query(b"a=1", b"a=2"), Err(ParamsError::Conflict("a".into())));
        // An empty value is a value: `device=` in one and `device=x` in the other conflict.
        assert_eq!(Params::from_form_and_query(b"d=", b"d=x"), Err(ParamsError::Conflict("d".into())));
        assert_eq!(Params::from_form_and_query(b"", b""), Err(ParamsError::Empty));
        assert_eq!(Params::from_form_and_query(b"a=1", b"b=1&b=2"), Err(ParamsError::Duplicate("b".into())));
        assert_eq!(Params::from_form_and_query(b"a=1", b"b=%ff"), Err(ParamsError::Encoding));
    }

    #[test]
    fn too_many_fields_rejected() {
        let body: String = (0..=MAX_PARAMS).map(|i| format!("f{i}=1&")).collect();
        assert_eq!(Params::from_form(body.as_bytes()), Err(ParamsError::TooMany));
    }
}
